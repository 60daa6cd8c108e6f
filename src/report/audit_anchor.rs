//! Anchors: the audit log's head, pinned outside the log's volume.
//!
//! Every `audit.anchor_seconds` each replica writes the newest durable record of its log
//! (seq + SHA-256 of its line, and an HMAC when the log is keyed) under its log id in the
//! ConfigMap [`AUDIT_ANCHOR_CONFIG_MAP`] of the plan namespace. `antibody audit verify --anchor NS`
//! then fails when the log was truncated (it ends before the anchored seq), replaced, or
//! rewritten (the anchored record's hash differs) — damage the chain alone cannot show, since
//! whoever rewrites the end of a chain can make it consistent again.
//!
//! An anchor only moves forward. A log that starts up behind its anchor (the volume was lost or
//! restored from an older copy) records a `chain_break` (`anchor_ahead`) naming what the
//! anchor pinned before it anchors the new head, so the loss stays in the record.
//!
//! What this defends against: someone who can write the log's volume (node access, a restored
//! backup, a lost PVC) but not the API. Someone holding the pod's own identity can do what
//! Antibody can; for that, the API server's audit log records every write to this ConfigMap.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::audit::{self, AuditLog, Head, Problem, Verification};

use crate::names::AUDIT_ANCHOR_CONFIG_MAP;

/// The head of one log as it was pinned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    pub log_id: String,
    pub seq: u64,
    /// SHA-256 of record `seq`'s line.
    pub head: String,
    pub time: String,
    /// HMAC of [`Anchor::signed_text`] under the audit key, when the log is keyed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

impl Anchor {
    pub fn new(log_id: &str, head: &Head, time: String, key: Option<&[u8]>) -> Self {
        let mut anchor = Self { log_id: log_id.into(), seq: head.seq, head: head.hash.clone(), time, mac: None };
        anchor.mac = key.map(|key| audit::mac_hex(key, anchor.signed_text().as_bytes()));
        anchor
    }

    fn signed_text(&self) -> String {
        format!("antibody-audit-anchor-v1|{}|{}|{}|{}", self.log_id, self.seq, self.head, self.time)
    }
}

/// Whether the log's current head may replace `anchored` (pure). `Err`: the log is behind its
/// anchor, with what the `chain_break` record says.
pub fn moves_forward(anchored: &Anchor, head: Option<&Head>) -> Result<(), String> {
    let what = match head {
        Some(head) if head.seq > anchored.seq || (head.seq == anchored.seq && head.hash == anchored.head) => {
            return Ok(());
        }
        Some(head) if head.seq < anchored.seq => format!("this log ends at seq {}", head.seq),
        Some(head) => format!("its record seq {} has hash {} here", head.seq, head.hash),
        None => "this log is empty".to_string(),
    };
    Err(format!(
        "the anchor of log {} (ConfigMap {AUDIT_ANCHOR_CONFIG_MAP}, written {}) pinned seq {} with hash {}, but {what}: \
         the earlier log was lost, truncated or replaced (volume lost or restored?); records up to seq {} are not \
         in this log",
        anchored.log_id, anchored.time, anchored.seq, anchored.head, anchored.seq
    ))
}

/// Check a verified log against its anchor (pure): problems go into `verification`.
/// `verification` must have been made with `anchor.seq` among `VerifyOptions::remember`.
pub fn check(anchor: &Anchor, key: Option<&[u8]>, verification: &mut Verification) {
    let at = |why: String| Problem { file: format!("anchor {}", anchor.log_id), line: 0, seq: Some(anchor.seq), why };
    if let Some(key) = key {
        match &anchor.mac {
            Some(mac) if *mac == audit::mac_hex(key, anchor.signed_text().as_bytes()) => {}
            Some(_) => verification.problems.push(at("the anchor's MAC does not match this key: it was not \
                                                       written by Antibody with this key"
                .into())),
            None => verification.problems.push(at("the anchor carries no MAC although a key was given".into())),
        }
    }
    match (verification.first_seq, verification.last_seq) {
        (_, None) => verification.problems.push(at(format!(
            "the log is empty but was anchored at seq {} ({}): every record was removed",
            anchor.seq, anchor.time
        ))),
        (_, Some(last)) if last < anchor.seq => verification.problems.push(at(format!(
            "the log ends at seq {last} but was anchored at seq {} ({}): records {}..{} were removed",
            anchor.seq,
            anchor.time,
            last + 1,
            anchor.seq
        ))),
        (Some(first), _) if first > anchor.seq => verification.notes.push(format!(
            "the anchor (seq {}, {}) is older than the files given (from seq {first}): not checked",
            anchor.seq, anchor.time
        )),
        _ => match verification.remembered.get(&anchor.seq) {
            Some(hash) if *hash == anchor.head => verification.notes.push(format!(
                "matches the anchor of log {} (seq {}, written {})",
                anchor.log_id, anchor.seq, anchor.time
            )),
            Some(hash) => verification.problems.push(at(format!(
                "record seq {} has hash {hash} but was anchored with {} ({}): it was changed after it was anchored",
                anchor.seq, anchor.head, anchor.time
            ))),
            None => verification
                .problems
                .push(at(format!("record seq {} (anchored {}) is not in the files given", anchor.seq, anchor.time))),
        },
    }
}

/// The anchors in `namespace`, by log id.
pub async fn load(client: &Client, namespace: &str) -> Result<Vec<Anchor>, String> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let map = api
        .get_opt(AUDIT_ANCHOR_CONFIG_MAP)
        .await
        .map_err(|e| format!("cannot read ConfigMap {namespace}/{AUDIT_ANCHOR_CONFIG_MAP}: {e}"))?;
    let mut anchors = Vec::new();
    for (key, value) in map.and_then(|m| m.data).unwrap_or_default() {
        let anchor: Anchor = serde_json::from_str(&value)
            .map_err(|e| format!("ConfigMap {namespace}/{AUDIT_ANCHOR_CONFIG_MAP} key {key}: not an anchor: {e}"))?;
        anchors.push(anchor);
    }
    Ok(anchors)
}

/// The stored anchor must not be ahead of this log (checked once per process, before its first
/// anchor): if it is, the loss goes into the log as an `anchor_ahead` chain break.
pub async fn check_behind(log: &AuditLog, client: &Client, namespace: &str) -> Result<(), String> {
    let head = log.head();
    let stored = load(client, namespace).await?;
    if let Some(anchored) = stored.iter().find(|a| a.log_id == log.log_id())
        && let Err(message) = moves_forward(anchored, head.as_ref())
    {
        error!(log_id = log.log_id(), %message, "audit log is behind its anchor");
        log.record(audit::chain_break_record(
            "anchor_ahead",
            message,
            json!({
                "anchor": anchored,
                "log_seq": head.as_ref().map(|h| h.seq),
                "log_head": head.as_ref().map(|h| h.hash.clone()),
            }),
        ));
    }
    Ok(())
}

/// Pin the log's durable head once (if it moved). Returns the anchor written, if any.
pub async fn anchor_once(
    log: &AuditLog,
    client: &Client,
    namespace: &str,
    key: Option<&[u8]>,
    last: Option<&Anchor>,
) -> Result<Option<Anchor>, String> {
    let Some(head) = log.head() else { return Ok(None) };
    if last.is_some_and(|a| a.seq == head.seq && a.head == head.hash) {
        return Ok(None);
    }
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let anchor = Anchor::new(log.log_id(), &head, jiff::Timestamp::now().to_string(), key);
    let value = serde_json::to_string(&anchor).map_err(|e| e.to_string())?;
    let patch = json!({ "data": { log.log_id(): value } });
    match api.patch(AUDIT_ANCHOR_CONFIG_MAP, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.is_not_found() => {
            let map = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(AUDIT_ANCHOR_CONFIG_MAP.into()),
                    labels: Some(crate::names::managed_labels()),
                    ..Default::default()
                },
                data: Some([(log.log_id().to_string(), value.clone())].into()),
                ..Default::default()
            };
            match api.create(&PostParams::default(), &map).await {
                Ok(_) => {}
                // Another replica created it first: our key goes in by patch.
                Err(kube::Error::Api(status)) if status.is_already_exists() => {
                    api.patch(AUDIT_ANCHOR_CONFIG_MAP, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Err(e) => return Err(e.to_string()),
    }
    debug!(log_id = log.log_id(), seq = anchor.seq, "audit head anchored");
    Ok(Some(anchor))
}

/// Anchor the head every `every` until `shutdown`, then once more (after the log drained).
pub async fn run(
    log: Arc<AuditLog>,
    client: Client,
    namespace: String,
    every: Duration,
    key: Option<Vec<u8>>,
    shutdown: CancellationToken,
) -> Option<Anchor> {
    info!(log_id = log.log_id(), %namespace, every_s = every.as_secs(), "anchoring the audit head");
    let mut last: Option<Anchor> = None;
    let mut checked = false;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return last,
        }
        if !checked {
            match check_behind(&log, &client, &namespace).await {
                Ok(()) => checked = true,
                Err(e) => {
                    warn!(error = %e, "audit anchor not read (retried next tick)");
                    continue;
                }
            }
            // The break record (if any) must be durable before the head moves past it.
            if let Err(e) = log.flush().await {
                warn!(error = %e, "audit log not flushed before anchoring");
            }
        }
        match anchor_once(&log, &client, &namespace, key.as_deref(), last.as_ref()).await {
            Ok(Some(anchor)) => last = Some(anchor),
            Ok(None) => {}
            Err(e) => warn!(error = %e, "audit anchor not written (retried next tick)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(seq: u64, hash: &str) -> Head {
        Head { seq, hash: hash.into() }
    }

    #[test]
    fn an_anchor_only_moves_forward() {
        let anchored = Anchor::new("a-0", &head(10, "h10"), "t".into(), None);
        let cases: [(Option<Head>, bool); 6] = [
            (Some(head(11, "x")), true),
            (Some(head(10, "h10")), true),
            (Some(head(10, "other")), false),
            (Some(head(3, "h3")), false),
            (Some(head(0, "h0")), false),
            (None, false),
        ];
        for (head, forward) in cases {
            let result = moves_forward(&anchored, head.as_ref());
            assert_eq!(result.is_ok(), forward, "{head:?}: {result:?}");
            if let Err(message) = result {
                assert!(message.contains("pinned seq 10") && message.contains("lost"), "{message}");
            }
        }
    }

    fn verified(first: Option<u64>, last: Option<u64>, remembered: &[(u64, &str)]) -> Verification {
        Verification {
            first_seq: first,
            last_seq: last,
            remembered: remembered.iter().map(|(s, h)| (*s, h.to_string())).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_log_is_checked_against_its_anchor() {
        let key = b"0123456789abcdef0123".as_slice();
        let anchor = Anchor::new("a-0", &head(5, "h5"), "2026-12-04T00:00:00Z".into(), Some(key));
        // (verification, key, expect ok, expected text)
        let cases: Vec<(Verification, Option<&[u8]>, bool, &str)> = vec![
            (verified(Some(0), Some(9), &[(5, "h5")]), Some(key), true, "matches the anchor"),
            (verified(Some(0), Some(5), &[(5, "h5")]), None, true, "matches the anchor"),
            (verified(Some(0), Some(3), &[]), Some(key), false, "records 4..5 were removed"),
            (verified(None, None, &[]), None, false, "every record was removed"),
            (verified(Some(0), Some(9), &[(5, "changed")]), None, false, "changed after it was anchored"),
            (verified(Some(7), Some(9), &[]), None, true, "older than the files given"),
            (verified(Some(0), Some(9), &[(5, "h5")]), Some(b"another key of 16+ bytes".as_slice()), false, "MAC"),
        ];
        for (mut verification, key, ok, text) in cases {
            check(&anchor, key, &mut verification);
            let report = verification.report();
            assert_eq!(verification.ok(), ok, "{report}");
            assert!(report.contains(text), "{text:?} not in: {report}");
        }
        let unsigned = Anchor { mac: None, ..anchor };
        let mut verification = verified(Some(0), Some(9), &[(5, "h5")]);
        check(&unsigned, Some(key), &mut verification);
        assert!(!verification.ok() && verification.report().contains("no MAC"), "{}", verification.report());
    }
}
