-- Argo CD health check for antibody.vael.io/PatchPlan.
-- Install: argocd-cm `resource.customizations.health.antibody.vael.io_PatchPlan: |` + this file.
-- Healthy once Ready=True (applied, or proven in a dry run); Degraded once Stalled=True;
-- Progressing otherwise. Conditions are kstatus-compatible, so Flux and `kubectl wait` agree.
local hs = { status = "Progressing", message = "Waiting for the controller" }
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
if obj.status.observedGeneration ~= nil and obj.metadata.generation ~= nil
    and obj.status.observedGeneration < obj.metadata.generation then
  hs.message = "Waiting for the controller to observe the latest spec"
  return hs
end
for _, condition in ipairs(obj.status.conditions) do
  if condition.type == "Stalled" and condition.status == "True" then
    hs.status = "Degraded"
    hs.message = condition.reason .. ": " .. (condition.message or "")
    return hs
  end
end
for _, condition in ipairs(obj.status.conditions) do
  if condition.type == "Ready" and condition.status == "True" then
    hs.status = "Healthy"
    hs.message = condition.reason .. ": " .. (condition.message or "")
    return hs
  end
  if condition.type == "Reconciling" and condition.status == "True" then
    hs.message = condition.reason .. ": " .. (condition.message or "")
  end
end
return hs
