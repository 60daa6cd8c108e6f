//! A small in-memory Kubernetes API for the step-machine tests: objects by path, JSON merge
//! patches (server-side apply is approximated by a merge), `resourceVersion` preconditions
//! (409), `generation` bumps on spec changes, `dryRun=All`, label-selector lists, evictions,
//! injected failures, and a log of every request. It runs no controllers: a test plays the
//! Deployment controller by editing status between reconciles. Test-only; the real API server
//! is what the integration tests in `tests/` run against.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};

/// Where an object lives: `api/v1` or `apis/<group>/<version>`, namespace ("" when cluster
/// scoped), resource plural, name.
type Key = (String, String, String, String);

#[derive(Default)]
struct State {
    objects: BTreeMap<Key, Value>,
    version: u64,
    log: Vec<String>,
    failures: Vec<Failure>,
}

struct Failure {
    method: Method,
    path_contains: String,
    code: u16,
    remaining: usize,
}

#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

struct Parsed {
    prefix: String,
    namespace: String,
    resource: String,
    name: Option<String>,
    sub: Option<String>,
}

fn parse_path(path: &str) -> Option<Parsed> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (prefix, rest) = match *segments.first()? {
        "api" => (segments.get(..2)?.join("/"), segments.get(2..)?),
        "apis" => (segments.get(..3)?.join("/"), segments.get(3..)?),
        _ => return None,
    };
    let owned = |s: Option<&&str>| s.map(|s| s.to_string());
    if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
        Some(Parsed {
            prefix,
            namespace: rest[1].into(),
            resource: rest[2].into(),
            name: owned(rest.get(3)),
            sub: owned(rest.get(4)),
        })
    } else {
        Some(Parsed {
            prefix,
            namespace: String::new(),
            resource: (*rest.first()?).into(),
            name: owned(rest.get(1)),
            sub: owned(rest.get(2)),
        })
    }
}

/// RFC 7386.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Value::Object(map) = target {
        for (key, value) in patch {
            if value.is_null() {
                map.remove(key);
            } else {
                merge(map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "message": message, "code": code}),
    )
}

fn query_param(query: &str, name: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    pairs.into_iter().find_map(|(k, v)| (k == name).then_some(v))
}

/// `k=v,k2=v2` (the only form Antibody sends).
fn labels_match(object: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| match term.split_once('=') {
        Some((key, value)) => object["metadata"]["labels"][key].as_str() == Some(value.trim_start_matches('=')),
        None => !object["metadata"]["labels"][term].is_null(),
    })
}

impl State {
    fn next_version(&mut self) -> String {
        self.version += 1;
        self.version.to_string()
    }

    fn handle(&mut self, method: &Method, path: &str, query: &str, body: Option<Value>) -> (u16, Value) {
        self.log.push(format!("{method} {path}{}", if query.is_empty() { String::new() } else { format!("?{query}") }));
        if let Some(failure) =
            self.failures.iter_mut().find(|f| f.remaining > 0 && f.method == *method && path.contains(&f.path_contains))
        {
            failure.remaining -= 1;
            return status(failure.code, "Injected", "injected failure");
        }
        let Some(parsed) = parse_path(path) else { return status(404, "NotFound", "no such path") };
        let dry_run = query_param(query, "dryRun").is_some();
        let key = |name: &str| -> Key {
            (parsed.prefix.clone(), parsed.namespace.clone(), parsed.resource.clone(), name.to_string())
        };
        match (method.clone(), &parsed.name, parsed.sub.as_deref()) {
            (Method::GET, None, _) => {
                let selector = query_param(query, "labelSelector").unwrap_or_default();
                let items: Vec<Value> = self
                    .objects
                    .iter()
                    .filter(|((prefix, ns, resource, _), _)| {
                        *prefix == parsed.prefix
                            && *resource == parsed.resource
                            && (parsed.namespace.is_empty() || *ns == parsed.namespace)
                    })
                    .map(|(_, object)| object.clone())
                    .filter(|object| labels_match(object, &selector))
                    .collect();
                (200, json!({"metadata": {"resourceVersion": self.version.to_string()}, "items": items}))
            }
            (Method::GET, Some(name), _) => match self.objects.get(&key(name)) {
                Some(object) => (200, object.clone()),
                None => status(404, "NotFound", &format!("{} {name} not found", parsed.resource)),
            },
            (Method::POST, Some(name), Some("eviction")) => {
                // Graceful deletion: the pod stays (terminating) until its kubelet is done; a
                // test removes it when it wants the pod gone.
                let version = self.next_version();
                let pod = (parsed.prefix.clone(), parsed.namespace.clone(), "pods".to_string(), name.clone());
                let Some(pod) = self.objects.get_mut(&pod) else { return status(404, "NotFound", "pod not found") };
                pod["metadata"]["deletionTimestamp"] = json!(jiff::Timestamp::now().to_string());
                pod["metadata"]["resourceVersion"] = json!(version);
                (201, json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 201}))
            }
            (Method::POST, None, _) => {
                let Some(mut object) = body else { return status(400, "BadRequest", "no body") };
                let name = match object["metadata"]["name"].as_str() {
                    Some(name) => name.to_string(),
                    None => {
                        format!("{}{}", object["metadata"]["generateName"].as_str().unwrap_or("obj-"), self.version + 1)
                    }
                };
                if self.objects.contains_key(&key(&name)) {
                    return status(409, "AlreadyExists", &format!("{} {name} already exists", parsed.resource));
                }
                let version = self.next_version();
                let metadata = &mut object["metadata"];
                metadata["name"] = json!(name);
                if !parsed.namespace.is_empty() {
                    metadata["namespace"] = json!(parsed.namespace);
                }
                metadata["uid"] = json!(format!("uid-{name}-{version}"));
                metadata["resourceVersion"] = json!(version);
                metadata["generation"] = json!(1);
                metadata["creationTimestamp"] = json!(jiff::Timestamp::now().to_string());
                if !dry_run {
                    self.objects.insert(key(&name), object.clone());
                }
                (201, object)
            }
            (Method::PATCH | Method::PUT, Some(name), sub) => {
                let Some(current) = self.objects.get(&key(name)).cloned() else {
                    return status(404, "NotFound", &format!("{} {name} not found", parsed.resource));
                };
                let patch = body.unwrap_or(Value::Null);
                if let Some(wanted) = patch["metadata"]["resourceVersion"].as_str()
                    && current["metadata"]["resourceVersion"].as_str() != Some(wanted)
                {
                    return status(
                        409,
                        "Conflict",
                        "the object has been modified; please apply your changes to the latest version",
                    );
                }
                let mut updated = current.clone();
                if sub == Some("status") {
                    merge(&mut updated["status"], &patch["status"]);
                } else {
                    let mut patch = patch.clone();
                    if let Value::Object(map) = &mut patch {
                        map.remove("status");
                    }
                    merge(&mut updated, &patch);
                    if updated["spec"] != current["spec"] {
                        let generation = current["metadata"]["generation"].as_i64().unwrap_or(1);
                        updated["metadata"]["generation"] = json!(generation + 1);
                    }
                }
                if updated == current {
                    return (200, current);
                }
                if !dry_run {
                    updated["metadata"]["resourceVersion"] = json!(self.next_version());
                    self.objects.insert(key(name), updated.clone());
                }
                (200, updated)
            }
            (Method::DELETE, Some(name), _) => match self.objects.get(&key(name)).cloned() {
                Some(object) => {
                    if !dry_run {
                        self.objects.remove(&key(name));
                    }
                    (200, object)
                }
                None => status(404, "NotFound", &format!("{} {name} not found", parsed.resource)),
            },
            _ => status(405, "MethodNotAllowed", "not supported by the fake"),
        }
    }
}

impl FakeApi {
    /// A kube client whose every request this fake answers.
    pub fn client(&self) -> kube::Client {
        let api = self.clone();
        let service = tower::service_fn(move |request: Request<kube::client::Body>| {
            let api = api.clone();
            async move {
                let (parts, body) = request.into_parts();
                let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                let body = if bytes.is_empty() { None } else { serde_json::from_slice(&bytes).ok() };
                let (code, value) = {
                    let mut state = api.state.lock().unwrap_or_else(|p| p.into_inner());
                    state.handle(&parts.method, parts.uri.path(), parts.uri.query().unwrap_or(""), body)
                };
                let response = Response::builder()
                    .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
                    .header("content-type", "application/json")
                    .body(kube::client::Body::from(serde_json::to_vec(&value).unwrap_or_default()))
                    .unwrap_or_else(|_| Response::new(kube::client::Body::from(Vec::new())));
                Ok::<_, Infallible>(response)
            }
        });
        kube::Client::new(service, "default")
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Store `object` (its apiVersion, kind, namespace and name say where).
    pub fn put(&self, object: Value) {
        let api_version = object["apiVersion"].as_str().unwrap_or("v1").to_string();
        let prefix =
            if api_version.contains('/') { format!("apis/{api_version}") } else { format!("api/{api_version}") };
        let kind = object["kind"].as_str().unwrap_or_default().to_lowercase();
        let resource = match kind.as_str() {
            "configmap" => "configmaps".to_string(),
            "patchplan" => "patchplans".to_string(),
            other => format!("{other}s"),
        };
        let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
        self.with(|state| {
            let mut object = object;
            let version = state.next_version();
            object["metadata"]["resourceVersion"] = json!(version);
            if object["metadata"]["uid"].is_null() {
                object["metadata"]["uid"] = json!(format!("uid-{name}"));
            }
            if object["metadata"]["generation"].is_null() {
                object["metadata"]["generation"] = json!(1);
            }
            state.objects.insert((prefix, namespace, resource, name), object);
        });
    }

    /// The stored object at `path` (e.g. `apis/apps/v1/namespaces/vael/deployments/vael-core`).
    pub fn get(&self, path: &str) -> Option<Value> {
        let parsed = parse_path(path)?;
        let key = (parsed.prefix, parsed.namespace, parsed.resource, parsed.name?);
        self.with(|state| state.objects.get(&key).cloned())
    }

    /// Change a stored object in place, as another actor would (bumps its resourceVersion).
    pub fn edit(&self, path: &str, change: impl FnOnce(&mut Value)) {
        let Some(parsed) = parse_path(path) else { return };
        let Some(name) = parsed.name else { return };
        let key = (parsed.prefix, parsed.namespace, parsed.resource, name);
        self.with(|state| {
            let version = state.next_version();
            if let Some(object) = state.objects.get_mut(&key) {
                change(object);
                object["metadata"]["resourceVersion"] = json!(version);
            }
        });
    }

    /// Delete a stored object, as another actor would.
    pub fn remove(&self, path: &str) {
        let Some(parsed) = parse_path(path) else { return };
        let Some(name) = parsed.name else { return };
        let key = (parsed.prefix, parsed.namespace, parsed.resource, name);
        self.with(|state| state.objects.remove(&key));
    }

    /// The next `times` requests of `method` whose path contains `path_contains` get `code`.
    pub fn fail(&self, method: Method, path_contains: &str, code: u16, times: usize) {
        self.with(|state| {
            state.failures.push(Failure { method, path_contains: path_contains.into(), code, remaining: times })
        });
    }

    /// Every request so far, as `METHOD path?query`.
    pub fn log(&self) -> Vec<String> {
        self.with(|state| state.log.clone())
    }

    /// Requests so far that changed something (not GETs, not Events), dry runs included.
    pub fn writes(&self) -> Vec<String> {
        self.log().into_iter().filter(|r| !r.starts_with("GET ") && !r.contains("/events")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse() {
        let p = parse_path("/apis/apps/v1/namespaces/vael/deployments/vael-core").expect("parses");
        assert_eq!(
            (p.prefix.as_str(), p.namespace.as_str(), p.resource.as_str()),
            ("apis/apps/v1", "vael", "deployments")
        );
        assert_eq!(p.name.as_deref(), Some("vael-core"));
        let p = parse_path("/api/v1/namespaces/vael").expect("parses");
        assert_eq!((p.namespace.as_str(), p.resource.as_str(), p.name.as_deref()), ("", "namespaces", Some("vael")));
        let p = parse_path("/apis/vael.io/v1/namespaces/plans/patchplans/p/status").expect("parses");
        assert_eq!(p.sub.as_deref(), Some("status"));
        assert_eq!(query_param("labelSelector=a%3Db%2Cc&dryRun=All", "labelSelector").as_deref(), Some("a=b,c"));
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut target = json!({"a": 1, "b": {"c": 2, "d": 3}});
        merge(&mut target, &json!({"a": null, "b": {"c": 5}, "e": [1]}));
        assert_eq!(target, json!({"b": {"c": 5, "d": 3}, "e": [1]}));
    }
}
