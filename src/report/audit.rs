//! The audit log: append-only JSONL, one record per plan transition and per alert decision,
//! hash-chained so that `antibody audit verify` can prove nothing was changed or removed.
//!
//! Each line is one JSON record ending in `\n`. `prev` is the SHA-256 (hex) of the previous
//! record's exact line bytes (without the newline); the first record ever points at the hash of
//! [`GENESIS`]. `seq` counts records from 0 without gaps. Rotation by size renames
//! `audit.jsonl` → `audit.jsonl.1` → … and the chain simply continues into the new file.
//!
//! Writing: the hook only queues the record (the reconciler calls it synchronously); one writer
//! thread seals records (seq, prev), writes each with a single `write_all` of line + `\n` (so a
//! process crash loses at most what is still queued, never half a line), and `fdatasync`s once
//! per batch (so a power loss loses at most the last batch). [`AuditLog::close`] drains the queue.
//!
//! Keyed (`audit.key_file`): each record also carries `prev_mac`, the HMAC-SHA256 of the
//! previous record's line under a key the log's volume does not hold (a mounted Secret), so
//! whoever can write the volume but not read the key cannot rewrite history and recompute the
//! chain. The head is anchored outside the volume (`audit_anchor`), which catches truncation.
//!
//! Damage is never papered over: a torn or invalid last line found at startup (or a failed
//! write) moves the damaged file aside, untouched, and the new file starts with an explicit
//! `chain_break` record that names it; `verify` still reports the torn bytes.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tracing::{error, info, warn};

use super::summary::{self, Requester};
use super::{AlertOutcome, AlertRecord, Hook, PlanTransition, TransitionKind};
use crate::plan::{ActionType, Phase, StepState};

/// The file being written; rotated files are `audit.jsonl.1` (newest) … `audit.jsonl.N`.
pub const ACTIVE_FILE: &str = "audit.jsonl";
/// Held (flock) by the one process writing the directory.
pub const LOCK_FILE: &str = "audit.lock";
/// The first record's `prev` is the SHA-256 of this marker.
pub const GENESIS: &str = "antibody-audit-genesis-v1";
/// Records written per `fdatasync`, at most.
const MAX_BATCH: usize = 512;
/// The log's identity for anchors, created beside the log unless `--audit-log-id` names one.
pub const LOG_ID_FILE: &str = "log-id";
/// Shortest accepted `audit.key_file` content.
pub const MIN_KEY_BYTES: usize = 16;

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// HMAC-SHA256 (hex) of `bytes` under `key`.
pub fn mac_hex(key: &[u8], bytes: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    mac.update(bytes);
    hex::encode(mac.finalize().into_bytes())
}

/// The `audit.key_file` key: its bytes without trailing whitespace, at least [`MIN_KEY_BYTES`].
pub fn read_key(path: &Path) -> Result<Vec<u8>, String> {
    let mut key = std::fs::read(path).map_err(|e| format!("audit key {}: {e}", path.display()))?;
    while key.last().is_some_and(|b| b.is_ascii_whitespace()) {
        key.pop();
    }
    if key.len() < MIN_KEY_BYTES {
        return Err(format!(
            "audit key {}: {} byte(s); at least {MIN_KEY_BYTES} are needed (e.g. `head -c 32 /dev/urandom | base64`)",
            path.display(),
            key.len()
        ));
    }
    Ok(key)
}

pub fn genesis_hash() -> String {
    sha256_hex(GENESIS.as_bytes())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// A PatchPlan transition.
    Plan,
    /// An alert decision (plan created, deduplicated, cooled down, ignored, refused).
    Alert,
    /// The chain could not continue cleanly (torn tail, failed write): says what and where.
    ChainBreak,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionRecord {
    #[serde(rename = "type")]
    pub action: ActionType,
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<StepState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One line of the audit log. `seq` and `prev` are filled in by the writer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    pub time: String,
    pub kind: RecordKind,
    /// Transition (`started`, `action_succeeded`, `patch_applied`, `dry_run`, `patch_failed`),
    /// alert outcome (`plan_created`, `deduplicated`, …) or break (`torn_tail`, `write_failed`).
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_source: Option<String>,
    /// The alert a decision was about (`kind: alert`), for `antibody replay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<crate::alert::ThreatAlert>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feed: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<Requester>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<ActionRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub detail: Value,
    pub prev: String,
    /// HMAC-SHA256 of the previous record's line (of [`GENESIS`] for the first) when keyed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_mac: Option<String>,
}

impl AuditRecord {
    fn new(kind: RecordKind, event: &str) -> Self {
        Self {
            seq: 0,
            time: jiff::Timestamp::now().to_string(),
            kind,
            event: event.into(),
            plan: None,
            alert_id: None,
            alert_source: None,
            alert: None,
            feed: None,
            requester: None,
            actions: Vec::new(),
            phase: None,
            reason: None,
            message: None,
            detail: Value::Null,
            prev: String::new(),
            prev_mac: None,
        }
    }
}

/// A `chain_break` record (written by the log itself: damage, lost records, a lost log).
pub fn chain_break_record(event: &str, message: String, detail: Value) -> AuditRecord {
    let mut record = AuditRecord::new(RecordKind::ChainBreak, event);
    record.message = Some(message);
    record.detail = detail;
    record
}

/// The record for a plan transition (pure).
pub fn plan_record(transition: &PlanTransition<'_>) -> AuditRecord {
    let plan = transition.plan;
    let status = plan.status.as_ref();
    let mut record = AuditRecord::new(RecordKind::Plan, transition.kind.name());
    record.plan = Some(PlanRef {
        namespace: plan.metadata.namespace.clone(),
        name: plan.metadata.name.clone().unwrap_or_default(),
        uid: plan.metadata.uid.clone(),
    });
    record.alert_id = plan.spec.alert.as_ref().map(|a| a.id.clone());
    record.alert_source = plan.spec.alert.as_ref().map(|a| a.source.clone());
    record.requester = Some(summary::requester(plan));
    record.actions = plan
        .spec
        .actions
        .iter()
        .enumerate()
        .map(|(index, action)| {
            let progress = status.and_then(|s| s.actions.get(index));
            ActionRecord {
                action: action.action,
                target: action.target.clone(),
                key: action.key.clone(),
                value: action.value.clone(),
                state: progress.map(|p| p.state),
                message: progress.map(|p| p.message.clone()).filter(|m| !m.is_empty()),
            }
        })
        .collect();
    record.phase = Some(plan.phase());
    record.reason = Some(transition.reason.to_string());
    record.message = Some(transition.message.to_string());
    if let TransitionKind::ActionSucceeded { index } = transition.kind {
        record.detail = json!({ "action_index": index });
    }
    record
}

/// The record for an alert decision (pure).
pub fn alert_record(decision: &AlertRecord) -> AuditRecord {
    let mut record = AuditRecord::new(RecordKind::Alert, decision.outcome.name());
    record.alert_id = Some(decision.alert_id.clone());
    record.alert = decision.alert.clone();
    record.feed = Some(decision.feed.clone());
    record.requester = Some(Requester { via: decision.feed.clone(), name: decision.requester.clone(), claimed: None });
    let plan = |name: &str| Some(PlanRef { namespace: None, name: name.to_string(), uid: None });
    match &decision.outcome {
        AlertOutcome::PlanCreated { plan: name } | AlertOutcome::Deduplicated { plan: name } => {
            record.plan = plan(name);
        }
        AlertOutcome::CooledDown { target, plan: name } => {
            record.plan = plan(name);
            record.detail = json!({ "target": target });
        }
        AlertOutcome::Ignored { rule } => record.detail = json!({ "rule": rule }),
        AlertOutcome::Refused { reason, message } => {
            record.reason = Some(reason.clone());
            record.message = Some(message.clone());
        }
        AlertOutcome::Resolved { plan: name, result } => {
            record.plan = plan(name);
            record.detail = json!({ "result": result });
        }
        AlertOutcome::Escalated { plan: name, step, from } => {
            record.plan = plan(name);
            record.detail = json!({ "step": step, "escalated_from": from });
        }
        AlertOutcome::Paged { rule, target } => record.detail = json!({ "rule": rule, "target": target }),
    }
    record
}

/// Where and how the log is kept (from antibody.yml: `log_path`, `audit_max_bytes`, `audit_keep`,
/// `audit.key_file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    pub dir: PathBuf,
    /// Rotate before a record would take the active file past this size; 0 never rotates.
    pub max_bytes: u64,
    /// Rotated files kept (at least 1, so damaged bytes moved aside stay visible).
    pub keep: usize,
    /// HMAC key: records carry `prev_mac` when set.
    pub key: Option<Vec<u8>>,
    /// The log's identity in anchors; `None`: the `log-id` file beside the log (created once).
    pub log_id: Option<String>,
}

impl AuditSettings {
    /// From antibody.yml; reads `audit.key_file`.
    pub fn from_config(config: &crate::config::Config) -> Result<Self, String> {
        let key = config.audit.key_file.as_deref().map(|path| read_key(Path::new(path))).transpose()?;
        Ok(Self {
            dir: PathBuf::from(&config.log_path),
            max_bytes: config.audit_max_bytes,
            keep: config.audit_keep,
            key,
            log_id: None,
        })
    }
}

/// A ConfigMap data key: `[-._a-zA-Z0-9]`, other characters become `-`.
pub fn sanitize_log_id(id: &str) -> String {
    let id: String =
        id.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') { c } else { '-' }).collect();
    id.chars().take(200).collect()
}

/// The `log-id` beside the log, created (hostname + random suffix) the first time.
fn log_id_of(dir: &Path) -> std::io::Result<String> {
    let path = dir.join(LOG_ID_FILE);
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = sanitize_log_id(id.trim());
        if !id.is_empty() {
            return Ok(id);
        }
    }
    let host = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "antibody".into());
    // Unique enough for one name per log directory; it is kept, not regenerated.
    let suffix = (jiff::Timestamp::now().as_nanosecond() as u64) ^ u64::from(std::process::id()).rotate_left(40);
    let id = sanitize_log_id(&format!("{host}-{:08x}", suffix & 0xffff_ffff));
    std::fs::write(&path, format!("{id}\n"))?;
    Ok(id)
}

/// The newest durable record: what an anchor pins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    /// SHA-256 of its line.
    pub hash: String,
}

pub fn rotated_name(index: usize) -> String {
    if index == 0 { ACTIVE_FILE.to_string() } else { format!("{ACTIVE_FILE}.{index}") }
}

// --- Reading the end of an existing file -------------------------------------------------------

/// The chain fields every record carries; all `verify` and recovery need.
#[derive(Debug, Deserialize)]
struct ChainFields {
    seq: u64,
    prev: String,
    #[serde(default)]
    prev_mac: Option<String>,
    #[serde(default)]
    kind: Option<RecordKind>,
    #[serde(default)]
    detail: Value,
}

fn chain_fields(line: &[u8]) -> Result<ChainFields, String> {
    serde_json::from_slice::<ChainFields>(line).map_err(|e| {
        if serde_json::from_slice::<Value>(line).is_ok() {
            format!("valid JSON but not an audit record: {e}")
        } else {
            format!("not valid JSON: {e}")
        }
    })
}

/// The last intact record of a file, and what follows it that is not one.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tail {
    /// `(seq, sha256 of its line)` of the last valid record, if any.
    last_valid: Option<(u64, String)>,
    /// That record's line (its MAC continues a keyed chain).
    last_line: Option<Vec<u8>>,
    /// Bytes after the last valid record: a torn line and/or invalid lines.
    damage: Option<Damage>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Damage {
    bytes: Vec<u8>,
    why: String,
}

/// Analyse the end of a file. `buf` is its last bytes; `from_start` says whether `buf` starts
/// at offset 0 (else its first piece may be a partial line). `None`: read more.
fn analyse_tail(buf: &[u8], from_start: bool) -> Option<Tail> {
    let mut pieces: Vec<&[u8]> = buf.split(|b| *b == b'\n').collect();
    // After the last newline: empty for a clean file, else a torn line.
    let torn = pieces.pop().unwrap_or_default();
    let first_complete = usize::from(!from_start);
    let mut damage_start = None;
    let mut why = if torn.is_empty() {
        None
    } else {
        Some(format!("the last line ({} bytes) has no trailing newline: a write was cut short", torn.len()))
    };
    for index in (first_complete..pieces.len()).rev() {
        let line = pieces[index];
        match chain_fields(line) {
            Ok(fields) => {
                let offset: usize = pieces[..=index].iter().map(|p| p.len() + 1).sum();
                let damage = (offset < buf.len()).then(|| Damage {
                    bytes: buf[offset..].to_vec(),
                    why: why.take().unwrap_or_else(|| "invalid records at the end".into()),
                });
                return Some(Tail {
                    last_valid: Some((fields.seq, sha256_hex(line))),
                    last_line: Some(line.to_vec()),
                    damage,
                });
            }
            Err(e) => {
                damage_start = Some(index);
                if why.is_none() {
                    why = Some(format!("the last record is invalid ({e})"));
                }
            }
        }
    }
    if !from_start {
        return None;
    }
    let start = damage_start.map(|i| pieces[..i].iter().map(|p| p.len() + 1).sum()).unwrap_or(0);
    let damage = (start < buf.len())
        .then(|| Damage { bytes: buf[start..].to_vec(), why: why.unwrap_or_else(|| "no valid record".into()) });
    Some(Tail { last_valid: None, last_line: None, damage })
}

fn read_tail(path: &Path) -> std::io::Result<Tail> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut chunk: u64 = 64 * 1024;
    loop {
        let start = len.saturating_sub(chunk);
        file.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::with_capacity((len - start) as usize);
        Read::by_ref(&mut file).take(len - start).read_to_end(&mut buf)?;
        if let Some(tail) = analyse_tail(&buf, start == 0) {
            return Ok(tail);
        }
        chunk = chunk.saturating_mul(2);
    }
}

// --- Writing ----------------------------------------------------------------------------------

struct ChainWriter {
    dir: PathBuf,
    max_bytes: u64,
    keep: usize,
    file: File,
    /// Bytes of the active file known to hold complete records.
    size: u64,
    next_seq: u64,
    prev: String,
    /// Records that could not be written since the last good write.
    lost: u64,
    last_error: Option<String>,
    key: Option<Vec<u8>>,
    /// MAC of the last record's line (of the genesis marker before the first), when keyed.
    prev_mac: Option<String>,
    /// The last record written, and the last one made durable (shared with anchors).
    written: Option<Head>,
    durable: Arc<Mutex<Option<Head>>>,
    _lock: File,
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn sync_dir(dir: &Path) {
    // Makes renames and new files durable; not every filesystem allows it, and it is only that.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

impl ChainWriter {
    fn open(settings: &AuditSettings) -> crate::Result<Self> {
        let dir = settings.dir.clone();
        let config_error = |message: String| crate::Error::Config { path: dir.display().to_string(), message };
        std::fs::create_dir_all(&dir).map_err(|e| config_error(format!("cannot create the audit directory: {e}")))?;
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(LOCK_FILE))?;
        if let Err(e) = lock.try_lock() {
            return Err(config_error(format!(
                "audit log is in use by another process ({e}): one writer per directory"
            )));
        }
        let active = dir.join(ACTIVE_FILE);
        let active_len = std::fs::metadata(&active).map(|m| m.len()).unwrap_or(0);
        // The newest non-empty file holds the head (the active one may be empty just after a
        // rotation). Only its damage matters here; older files are history for `verify`.
        let non_empty: Vec<usize> = (0..=settings.keep.max(1) + 1)
            .filter(|&i| std::fs::metadata(dir.join(rotated_name(i))).is_ok_and(|m| m.len() > 0))
            .collect();
        let mut damage = None;
        let mut last_valid = None;
        let mut last_line = None;
        for (position, &index) in non_empty.iter().enumerate() {
            let tail = read_tail(&dir.join(rotated_name(index)))?;
            if position == 0 {
                damage = tail.damage.map(|d| (index, d));
            }
            // A damaged head with no intact record: the chain continues from an older file.
            if tail.last_valid.is_some() {
                last_valid = tail.last_valid;
                last_line = tail.last_line;
                break;
            }
        }
        let prev_mac = settings.key.as_ref().map(|key| match &last_line {
            Some(line) => mac_hex(key, line),
            None => mac_hex(key, GENESIS.as_bytes()),
        });
        let head = last_valid.as_ref().map(|(seq, hash)| Head { seq: *seq, hash: hash.clone() });
        let (next_seq, prev) = match &last_valid {
            Some((seq, hash)) => (seq + 1, hash.clone()),
            None => (0, genesis_hash()),
        };
        let file = open_append(&active)?;
        let mut writer = Self {
            dir: dir.clone(),
            max_bytes: settings.max_bytes,
            keep: settings.keep.max(1),
            file,
            size: active_len,
            next_seq,
            prev,
            lost: 0,
            last_error: None,
            key: settings.key.clone(),
            prev_mac,
            written: head.clone(),
            durable: Arc::new(Mutex::new(head)),
            _lock: lock,
        };
        if let Some((index, damage)) = damage {
            // Never append after damage: move the damaged file aside untouched, say so first.
            if index == 0 {
                writer.rotate()?;
            }
            let moved_to = rotated_name(index.max(1));
            let mut record = AuditRecord::new(RecordKind::ChainBreak, "torn_tail");
            record.message = Some(format!(
                "{}; the damaged file is kept as is (named {moved_to} when this was written, later rotations \
                 renumber it) and the chain continues here",
                damage.why
            ));
            record.detail = json!({
                "file": moved_to,
                "damaged_bytes": damage.bytes.len(),
                "damaged_sha256": sha256_hex(&damage.bytes),
                "last_valid_seq": last_valid.as_ref().map(|(seq, _)| seq),
            });
            error!(
                dir = %dir.display(),
                file = %moved_to,
                damaged_bytes = damage.bytes.len(),
                why = %damage.why,
                "audit log was damaged (crash mid-write?): kept the damaged file, wrote a chain_break record"
            );
            writer.write(record)?;
            writer.sync()?;
        }
        info!(dir = %dir.display(), next_seq = writer.next_seq, "audit log open");
        Ok(writer)
    }

    /// `audit.jsonl` → `.1` → … → `.keep` (the oldest drops off); a fresh active file.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.sync_all()?;
        for index in (1..=self.keep).rev() {
            let from = self.dir.join(rotated_name(index - 1));
            if from.exists() {
                std::fs::rename(&from, self.dir.join(rotated_name(index)))?;
            }
        }
        self.file = open_append(&self.dir.join(ACTIVE_FILE))?;
        self.size = 0;
        sync_dir(&self.dir);
        Ok(())
    }

    /// Seal (seq, prev, prev_mac) and write one record as a single `write_all` of line + `\n`.
    fn write(&mut self, mut record: AuditRecord) -> std::io::Result<()> {
        record.seq = self.next_seq;
        record.prev = self.prev.clone();
        record.prev_mac = self.prev_mac.clone();
        let mut line = serde_json::to_vec(&record)?;
        let hash = sha256_hex(&line);
        let mac = self.key.as_ref().map(|key| mac_hex(key, &line));
        line.push(b'\n');
        if self.max_bytes > 0 && self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.check_still_ours()?;
        self.file.write_all(&line)?;
        self.size += line.len() as u64;
        self.written = Some(Head { seq: record.seq, hash: hash.clone() });
        self.next_seq += 1;
        self.prev = hash;
        self.prev_mac = mac;
        Ok(())
    }

    /// Writing to a file that was deleted or replaced under us would lose every later record
    /// silently (they go to an unlinked inode): refuse, so the loss is counted and recovered.
    fn check_still_ours(&self) -> std::io::Result<()> {
        let path = self.dir.join(ACTIVE_FILE);
        let on_disk = std::fs::metadata(&path).map_err(|e| {
            std::io::Error::other(format!("{} is gone while open ({e}): it was deleted", path.display()))
        })?;
        let open = self.file.metadata()?;
        if (on_disk.dev(), on_disk.ino()) != (open.dev(), open.ino()) {
            return Err(std::io::Error::other(format!("{} was replaced while open", path.display())));
        }
        Ok(())
    }

    fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync_data()?;
        *self.durable.lock().unwrap_or_else(|p| p.into_inner()) = self.written.clone();
        Ok(())
    }

    /// Everything written so far is on disk and nothing is lost: `Ok`. After lost records,
    /// first try to recover (which records the loss).
    fn flush(&mut self) -> Result<(), String> {
        if self.lost > 0 {
            self.recover().map_err(|e| format!("audit log cannot be written: {e}"))?;
        }
        self.sync().map_err(|e| format!("audit log cannot be synced: {e}"))
    }

    /// Write `record`; on failure keep going and account for it (never block the caller).
    fn append(&mut self, record: AuditRecord) {
        if self.lost > 0
            && let Err(e) = self.recover()
        {
            self.lost += 1;
            error!(error = %e, lost = self.lost, event = %record.event, "audit log: still cannot write");
            return;
        }
        if let Err(e) = self.write(record.clone()) {
            self.lost += 1;
            self.last_error = Some(e.to_string());
            let line = serde_json::to_string(&record).unwrap_or_default();
            error!(error = %e, record = %line, "audit log: write failed; the record is logged here instead");
        }
    }

    /// After failed writes: move a possibly torn file aside and record the break.
    fn recover(&mut self) -> std::io::Result<()> {
        let len = self.file.metadata()?.len();
        let mut detail = json!({ "lost_records": self.lost, "error": self.last_error });
        if self.check_still_ours().is_err() {
            // Deleted or replaced: whatever holds the name now is kept aside (rotated), and a
            // fresh active file continues the chain.
            self.rotate()?;
        } else if len > self.size {
            let mut torn = Vec::new();
            let mut reader = File::open(self.dir.join(ACTIVE_FILE))?;
            reader.seek(SeekFrom::Start(self.size))?;
            reader.read_to_end(&mut torn)?;
            self.rotate()?;
            detail["file"] = json!(rotated_name(1));
            detail["damaged_bytes"] = json!(torn.len());
            detail["damaged_sha256"] = json!(sha256_hex(&torn));
        }
        let mut record = AuditRecord::new(RecordKind::ChainBreak, "write_failed");
        record.message = Some(format!("{} record(s) could not be written: {:?}", self.lost, self.last_error));
        record.detail = detail;
        self.write(record)?;
        self.lost = 0;
        self.last_error = None;
        Ok(())
    }
}

enum Message {
    Record(Box<AuditRecord>),
    /// Reply once everything queued before it is durable (or why not).
    Flush(tokio::sync::oneshot::Sender<Result<(), String>>),
}

fn writer_loop(mut writer: ChainWriter, messages: Receiver<Message>) {
    let handle = |writer: &mut ChainWriter, message: Message| match message {
        Message::Record(record) => writer.append(*record),
        Message::Flush(reply) => {
            let _ = reply.send(writer.flush());
        }
    };
    while let Ok(first) = messages.recv() {
        handle(&mut writer, first);
        for message in messages.try_iter().take(MAX_BATCH - 1) {
            handle(&mut writer, message);
        }
        if let Err(e) = writer.sync() {
            warn!(error = %e, "audit log: fdatasync failed");
        }
    }
    let _ = writer.sync();
}

/// How long [`AuditLog::flush`] waits for the writer before it counts as failed.
const FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The audit log hook. Cheap to call: records are queued to the writer thread.
pub struct AuditLog {
    dir: PathBuf,
    log_id: String,
    keyed: bool,
    head: Arc<Mutex<Option<Head>>>,
    sender: Mutex<Option<Sender<Message>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl AuditLog {
    /// Open (or continue) the log in `settings.dir`; fails if another process holds it.
    pub fn open(settings: &AuditSettings) -> crate::Result<Self> {
        let writer = ChainWriter::open(settings)?;
        let log_id = match &settings.log_id {
            Some(id) => sanitize_log_id(id),
            None => log_id_of(&settings.dir)?,
        };
        let head = writer.durable.clone();
        let (sender, receiver) = std::sync::mpsc::channel();
        let worker =
            std::thread::Builder::new().name("audit-log".into()).spawn(move || writer_loop(writer, receiver))?;
        Ok(Self {
            dir: settings.dir.clone(),
            log_id,
            keyed: settings.key.is_some(),
            head,
            sender: Mutex::new(Some(sender)),
            worker: Mutex::new(Some(worker)),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// This log's name in anchors.
    pub fn log_id(&self) -> &str {
        &self.log_id
    }

    pub fn keyed(&self) -> bool {
        self.keyed
    }

    /// The newest record known to be on disk.
    pub fn head(&self) -> Option<Head> {
        self.head.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn record(&self, record: AuditRecord) {
        let sender = self.sender.lock().unwrap_or_else(|p| p.into_inner());
        let event = record.event.clone();
        match sender.as_ref() {
            Some(sender) if sender.send(Message::Record(Box::new(record))).is_ok() => {}
            _ => error!(%event, "audit log closed: record dropped"),
        }
    }

    /// Wait until every record queued so far is on disk: `Err` says why it is not (a write
    /// failed and could not be recovered, the disk is full, the writer is gone or stuck).
    /// `audit.fail_closed` acts only after this succeeded.
    pub async fn flush(&self) -> Result<(), String> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        {
            let sender = self.sender.lock().unwrap_or_else(|p| p.into_inner());
            match sender.as_ref() {
                Some(sender) if sender.send(Message::Flush(reply)).is_ok() => {}
                _ => return Err("audit log is closed".into()),
            }
        }
        match tokio::time::timeout(FLUSH_TIMEOUT, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("audit writer stopped".into()),
            Err(_) => Err(format!("audit writer did not confirm within {}s", FLUSH_TIMEOUT.as_secs())),
        }
    }

    /// Write everything queued, sync, stop the writer. Later records are refused (and logged).
    pub fn close(&self) {
        drop(self.sender.lock().unwrap_or_else(|p| p.into_inner()).take());
        let worker = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(worker) = worker
            && worker.join().is_err()
        {
            error!("audit log writer panicked");
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.close();
    }
}

impl Hook for AuditLog {
    fn on_plan(&self, transition: &PlanTransition<'_>) {
        self.record(plan_record(transition));
    }

    fn on_alert(&self, decision: &AlertRecord) {
        self.record(alert_record(decision));
    }
}

// --- Verifying --------------------------------------------------------------------------------

/// A broken record: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    pub seq: Option<u64>,
    pub why: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Line 0: not a line of a file (an anchor, the log as a whole).
        match (self.line, self.seq) {
            (0, Some(seq)) => write!(f, "{} (seq {seq}): {}", self.file, self.why),
            (0, None) => write!(f, "{}: {}", self.file, self.why),
            (line, Some(seq)) => write!(f, "{} line {line} (seq {seq}): {}", self.file, self.why),
            (line, None) => write!(f, "{} line {line}: {}", self.file, self.why),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verification {
    pub files: usize,
    /// Records that parsed (valid JSON with `seq` and `prev`), whether or not the chain holds.
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// The first record is seq 0 and points at the genesis hash.
    pub from_genesis: bool,
    /// SHA-256 of the last record's line: publish it elsewhere to pin the head.
    pub head: Option<String>,
    /// Chain breaks the log itself recorded, and the anchor when not from genesis.
    pub notes: Vec<String>,
    /// In file order; the first is the first broken record.
    pub problems: Vec<Problem>,
    /// SHA-256 of the records asked for in [`VerifyOptions::remember`] (anchors), by seq.
    pub remembered: std::collections::BTreeMap<u64, String>,
}

/// What `verify` checks beyond the SHA-256 chain.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Fail unless the chain starts at the genesis record.
    pub require_genesis: bool,
    /// The audit key: every record's `prev_mac` must match.
    pub key: Option<Vec<u8>>,
    /// Keep these records' hashes (to compare with anchors).
    pub remember: Vec<u64>,
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// What `antibody audit verify` prints.
    pub fn report(&self) -> String {
        let mut out = String::new();
        match self.problems.first() {
            None => {
                let range = match (self.first_seq, self.last_seq) {
                    (Some(first), Some(last)) => format!("seq {first}..{last}"),
                    _ => "empty".into(),
                };
                let origin = if self.from_genesis { "from genesis" } else { "anchored, not from genesis" };
                out.push_str(&format!(
                    "OK: {} records in {} file(s), {range}, chain {origin}, head {}\n",
                    self.records,
                    self.files,
                    self.head.as_deref().unwrap_or("-")
                ));
            }
            Some(first) => {
                out.push_str(&format!("BROKEN: {first}\n"));
                if self.problems.len() > 1 {
                    out.push_str(&format!("({} more problem(s) after it)\n", self.problems.len() - 1));
                }
                out.push_str(&format!("checked {} records in {} file(s)\n", self.records, self.files));
            }
        }
        for note in &self.notes {
            out.push_str(&format!("note: {note}\n"));
        }
        out
    }
}

struct Last {
    file: String,
    line: usize,
    seq: u64,
    hash: String,
    /// MAC of its line under the key, when verifying with one.
    mac: Option<String>,
}

/// Check the chain across `files` (name, bytes), in order. Pure.
pub fn verify(files: &[(String, Vec<u8>)], require_genesis: bool) -> Verification {
    verify_with(files, &VerifyOptions { require_genesis, ..Default::default() })
}

/// [`verify`], with a key (every `prev_mac` checked) and records to remember for anchors.
pub fn verify_with(files: &[(String, Vec<u8>)], options: &VerifyOptions) -> Verification {
    let require_genesis = options.require_genesis;
    let key = options.key.as_deref();
    let mut result = Verification { files: files.len(), ..Default::default() };
    let mut last: Option<Last> = None;
    // Keyed records seen; records without a MAC before the first keyed one.
    let mut keyed_seen = false;
    let mut unkeyed_before: u64 = 0;
    // sha256 of torn bytes → index of its problem, so a chain_break can be matched to it.
    let mut torn_problems: Vec<(String, usize)> = Vec::new();
    for (file, bytes) in files {
        let mut pieces: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
        let torn = pieces.pop().unwrap_or_default();
        for (index, line) in pieces.iter().enumerate() {
            let at = |seq: Option<u64>, why: String| Problem { file: file.clone(), line: index + 1, seq, why };
            let fields = match chain_fields(line) {
                Ok(fields) => fields,
                Err(e) => {
                    let why = if line.is_empty() { "empty line".to_string() } else { e };
                    result.problems.push(at(None, why));
                    continue;
                }
            };
            let seq = fields.seq;
            match &last {
                None => {
                    if seq == 0 && fields.prev == genesis_hash() {
                        result.from_genesis = true;
                    } else if require_genesis {
                        result.problems.push(at(
                            Some(seq),
                            "the chain does not start at genesis: earlier records are missing".into(),
                        ));
                    } else {
                        result.notes.push(format!(
                            "chain anchored at {file} line {} (seq {seq}, prev {}): its predecessor is not among \
                             the files given",
                            index + 1,
                            fields.prev
                        ));
                    }
                }
                Some(previous) if seq != previous.seq + 1 => {
                    let why = if seq > previous.seq + 1 {
                        format!(
                            "seq jumps from {} to {seq}: records {}..{} are missing",
                            previous.seq,
                            previous.seq + 1,
                            seq - 1
                        )
                    } else {
                        format!("seq {seq} does not follow {} (duplicated or reordered)", previous.seq)
                    };
                    result.problems.push(at(Some(seq), why));
                }
                Some(previous) if fields.prev != previous.hash => {
                    result.problems.push(Problem {
                        file: previous.file.clone(),
                        line: previous.line,
                        seq: Some(previous.seq),
                        why: format!(
                            "record changed after it was written: its SHA-256 is not the `prev` of the next record \
                             ({file} line {}, seq {seq})",
                            index + 1
                        ),
                    });
                }
                Some(_) => {}
            }
            if let Some(key) = key {
                // The MAC this record must carry: of its predecessor's line, or of genesis.
                let expected = match &last {
                    Some(previous) => previous.mac.clone(),
                    None if seq == 0 && fields.prev == genesis_hash() => Some(mac_hex(key, GENESIS.as_bytes())),
                    None => None,
                };
                match (&fields.prev_mac, expected) {
                    (None, _) if keyed_seen => result.problems.push(at(
                        Some(seq),
                        "no prev_mac although earlier records are keyed: written without the key, or its MAC was \
                         stripped"
                            .into(),
                    )),
                    (None, _) => unkeyed_before += 1,
                    (Some(got), Some(expected)) if *got != expected => {
                        keyed_seen = true;
                        let (file, line, previous_seq) = match &last {
                            Some(previous) => (previous.file.clone(), previous.line, Some(previous.seq)),
                            None => (file.clone(), index + 1, Some(seq)),
                        };
                        result.problems.push(Problem {
                            file,
                            line,
                            seq: previous_seq,
                            why: format!(
                                "MAC mismatch: changed after it was written, or written with another key (checked by \
                                 the prev_mac of seq {seq})"
                            ),
                        });
                    }
                    (Some(_), _) => keyed_seen = true,
                }
            }
            if fields.kind == Some(RecordKind::ChainBreak) {
                let damaged = fields.detail.get("damaged_sha256").and_then(Value::as_str).map(str::to_string);
                let acknowledged = damaged.and_then(|hash| torn_problems.iter().find(|(h, _)| *h == hash));
                if let Some((_, problem)) = acknowledged {
                    result.problems[*problem].why.push_str(&format!(
                        "; acknowledged by the chain_break record seq {seq} ({file} line {})",
                        index + 1
                    ));
                }
                let message = serde_json::from_slice::<Value>(line)
                    .ok()
                    .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
                    .unwrap_or_default();
                result.notes.push(format!("chain_break at {file} line {} (seq {seq}): {message}", index + 1));
            }
            result.records += 1;
            result.first_seq.get_or_insert(seq);
            result.last_seq = Some(seq);
            let hash = sha256_hex(line);
            result.head = Some(hash.clone());
            if options.remember.contains(&seq) {
                result.remembered.insert(seq, hash.clone());
            }
            let mac = key.map(|key| mac_hex(key, line));
            last = Some(Last { file: file.clone(), line: index + 1, seq, hash, mac });
        }
        if !torn.is_empty() {
            torn_problems.push((sha256_hex(torn), result.problems.len()));
            result.problems.push(Problem {
                file: file.clone(),
                line: pieces.len() + 1,
                seq: None,
                why: format!("torn record: {} bytes without a trailing newline (a write was cut short)", torn.len()),
            });
        }
    }
    if key.is_some() {
        if !keyed_seen && result.records > 0 {
            result.problems.push(Problem {
                file: "log".into(),
                line: 0,
                seq: None,
                why: "no record carries a MAC: the log was not written with this key, or every MAC was stripped".into(),
            });
        } else if unkeyed_before > 0 {
            result.notes.push(format!(
                "{unkeyed_before} record(s) before the first keyed one carry no MAC (written before audit.key_file \
                 was set)"
            ));
        }
    }
    result
}

/// Position of `path` in the rotation: `audit.jsonl` is 0, `audit.jsonl.N` is N.
fn rotation_index(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    if name == ACTIVE_FILE {
        return Some(0);
    }
    name.strip_prefix(ACTIVE_FILE)?.strip_prefix('.')?.parse().ok()
}

/// Read the files and verify them as one chain. A directory stands for its `audit.jsonl*`.
/// When every file is named `audit.jsonl[.N]` they are put in rotation order (oldest first);
/// otherwise they are checked in the order given.
pub fn verify_paths(paths: &[PathBuf], require_genesis: bool) -> std::io::Result<Verification> {
    verify_paths_with(paths, &VerifyOptions { require_genesis, ..Default::default() })
}

/// [`verify_paths`] with [`VerifyOptions`].
pub fn verify_paths_with(paths: &[PathBuf], options: &VerifyOptions) -> std::io::Result<Verification> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            for entry in std::fs::read_dir(path)? {
                let entry = entry?.path();
                if rotation_index(&entry).is_some() {
                    files.push(entry);
                }
            }
        } else {
            files.push(path.clone());
        }
    }
    let indexes: Option<Vec<u64>> = files.iter().map(|p| rotation_index(p)).collect();
    if let Some(indexes) = indexes {
        let mut ordered: Vec<(u64, PathBuf)> = indexes.into_iter().zip(files).collect();
        ordered.sort_by_key(|(index, _)| std::cmp::Reverse(*index));
        files = ordered.into_iter().map(|(_, path)| path).collect();
    }
    let mut loaded = Vec::with_capacity(files.len());
    for path in files {
        let bytes = std::fs::read(&path)?;
        loaded.push((path.display().to_string(), bytes));
    }
    Ok(verify_with(&loaded, options))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(event: &str) -> AuditRecord {
        let mut r = AuditRecord::new(RecordKind::Plan, event);
        r.time = "2025-01-01T00:00:00Z".into();
        r.plan = Some(PlanRef { namespace: Some("vael".into()), name: format!("plan-{event}"), uid: None });
        r
    }

    /// Build a chain the way the writer does, as lines (without newlines).
    fn chain(n: u64, start_seq: u64, start_prev: String) -> Vec<String> {
        let mut prev = start_prev;
        (0..n)
            .map(|i| {
                let mut r = record(&format!("e{i}"));
                r.seq = start_seq + i;
                r.prev = prev.clone();
                let line = serde_json::to_string(&r).expect("serialise");
                prev = sha256_hex(line.as_bytes());
                line
            })
            .collect()
    }

    fn file(name: &str, lines: &[String]) -> (String, Vec<u8>) {
        (name.to_string(), lines.iter().flat_map(|l| format!("{l}\n").into_bytes()).collect())
    }

    #[test]
    fn an_intact_chain_verifies_from_genesis() {
        let lines = chain(5, 0, genesis_hash());
        let v = verify(&[file("a", &lines)], true);
        assert!(v.ok(), "{}", v.report());
        assert_eq!((v.records, v.first_seq, v.last_seq, v.from_genesis), (5, Some(0), Some(4), true));
        assert_eq!(v.head.as_deref(), Some(sha256_hex(lines[4].as_bytes()).as_str()));
        assert!(v.report().starts_with("OK: 5 records in 1 file(s), seq 0..4, chain from genesis"));
        let empty = verify(&[("empty".into(), Vec::new())], false);
        assert!(empty.ok() && empty.records == 0);
    }

    #[test]
    fn the_chain_continues_across_files() {
        let lines = chain(7, 0, genesis_hash());
        let files = [file("a.2", &lines[..3]), file("a.1", &lines[3..5]), file("a", &lines[5..])];
        let v = verify(&files, true);
        assert!(v.ok(), "{}", v.report());
        assert_eq!(v.records, 7);
        // A later file alone is anchored, not from genesis.
        let alone = verify(&files[1..], false);
        assert!(alone.ok() && !alone.from_genesis && alone.notes[0].contains("anchored"), "{}", alone.report());
        let strict = verify(&files[1..], true);
        assert!(strict.problems[0].why.contains("genesis"));
        // Files out of order break the chain.
        let swapped = verify(&[files[1].clone(), files[0].clone(), files[2].clone()], false);
        assert!(!swapped.ok());
    }

    #[test]
    fn each_kind_of_damage_names_the_first_broken_record() {
        let lines = chain(6, 0, genesis_hash());
        struct Case {
            name: &'static str,
            /// Damages the lines; returns torn bytes to append after them, if any.
            damage: fn(&mut Vec<String>) -> Option<Vec<u8>>,
            line: usize,
            seq: Option<u64>,
            why: &'static str,
        }
        let cases = [
            Case {
                name: "a field changed",
                damage: |l| {
                    l[2] = l[2].replace("plan-e2", "plan-evil");
                    None
                },
                line: 3,
                seq: Some(2),
                why: "record changed after it was written",
            },
            Case {
                name: "a record removed",
                damage: |l| {
                    l.remove(3);
                    None
                },
                line: 4,
                seq: Some(4),
                why: "records 3..3 are missing",
            },
            Case {
                name: "two records swapped",
                damage: |l| {
                    l.swap(1, 2);
                    None
                },
                line: 2,
                seq: Some(2),
                why: "records 1..1 are missing",
            },
            Case {
                name: "invalid JSON",
                damage: |l| {
                    l[4] = l[4][..20].to_string();
                    None
                },
                line: 5,
                seq: None,
                why: "not valid JSON",
            },
            Case {
                name: "not an audit record",
                damage: |l| {
                    l[1] = "{\"hello\":1}".into();
                    None
                },
                line: 2,
                seq: None,
                why: "not an audit record",
            },
            Case {
                name: "truncated last line",
                damage: |l| {
                    let last = l.pop().expect("line");
                    Some(last.as_bytes()[..last.len() - 9].to_vec())
                },
                line: 6,
                seq: None,
                why: "torn record",
            },
        ];
        for case in cases {
            let mut damaged = lines.clone();
            let torn = (case.damage)(&mut damaged);
            let (name, mut bytes) = file("audit.jsonl", &damaged);
            bytes.extend(torn.unwrap_or_default());
            let v = verify(&[(name, bytes)], true);
            let first = v.problems.first().unwrap_or_else(|| panic!("{}: not detected", case.name));
            assert_eq!((first.line, first.seq), (case.line, case.seq), "{}: {first}", case.name);
            assert!(first.why.contains(case.why), "{}: {first}", case.name);
            assert!(v.report().starts_with("BROKEN: audit.jsonl line"), "{}", case.name);
        }
    }

    #[test]
    fn tail_analysis() {
        let lines = chain(3, 7, "x".into());
        let clean = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
        let hash2 = sha256_hex(lines[2].as_bytes());
        let hash1 = sha256_hex(lines[1].as_bytes());
        let tail = analyse_tail(clean.as_bytes(), true).expect("complete");
        assert_eq!(
            tail,
            Tail { last_valid: Some((9, hash2.clone())), last_line: Some(lines[2].as_bytes().to_vec()), damage: None }
        );

        let torn = format!("{clean}{{\"seq\":10,");
        let tail = analyse_tail(torn.as_bytes(), true).expect("complete");
        assert_eq!(tail.last_valid, Some((9, hash2)));
        let damage = tail.damage.expect("damage");
        assert_eq!(damage.bytes, b"{\"seq\":10,");
        assert!(damage.why.contains("no trailing newline"), "{}", damage.why);

        let invalid_last = format!("{}\n{}\ngarbage\n", lines[0], lines[1]);
        let tail = analyse_tail(invalid_last.as_bytes(), true).expect("complete");
        assert_eq!(tail.last_valid, Some((8, hash1)));
        assert_eq!(tail.damage.expect("damage").bytes, b"garbage\n");

        // A partial first piece (not at file start) is never trusted: read more.
        assert_eq!(analyse_tail(&lines[2].as_bytes()[5..], false), None);
        assert_eq!(analyse_tail(b"garbage\n", false), None);
        let all_bad = analyse_tail(b"garbage\nmore", true).expect("complete");
        assert_eq!(all_bad.last_valid, None);
        assert_eq!(all_bad.damage.expect("damage").bytes, b"garbage\nmore");
    }

    #[test]
    fn records_say_what_happened_and_who_asked() {
        use crate::plan::{AlertSummary, PatchPlan, PatchPlanSpec, PlanAction};
        let mut plan = PatchPlan::new(
            "hb-1",
            PatchPlanSpec {
                alert: Some(AlertSummary { id: "a1".into(), source: "NEXUS".into(), ..Default::default() }),
                actions: vec![PlanAction::edit_env("VAEL_Core", "LOG_LEVEL", "debug")],
                ..Default::default()
            },
        );
        plan.metadata.namespace = Some("vael".into());
        plan.metadata.uid = Some("u1".into());
        let transition = PlanTransition {
            plan: &plan,
            kind: TransitionKind::ActionSucceeded { index: 0 },
            reason: "ActionSucceeded",
            message: "set LOG_LEVEL",
        };
        let r = plan_record(&transition);
        assert_eq!((r.kind, r.event.as_str()), (RecordKind::Plan, "action_succeeded"));
        assert_eq!(
            r.plan,
            Some(PlanRef { namespace: Some("vael".into()), name: "hb-1".into(), uid: Some("u1".into()) })
        );
        assert_eq!((r.alert_id.as_deref(), r.alert_source.as_deref()), (Some("a1"), Some("NEXUS")));
        // Unsigned: the alert it cites is a claim, not proof of who asked.
        assert_eq!(r.requester.as_ref().map(|r| r.via.as_str()), Some("unknown"));
        assert_eq!((r.actions[0].key.as_deref(), r.actions[0].value.as_deref()), (Some("LOG_LEVEL"), Some("debug")));
        assert_eq!(r.detail, json!({"action_index": 0}));
        assert_eq!((r.reason.as_deref(), r.message.as_deref()), (Some("ActionSucceeded"), Some("set LOG_LEVEL")));

        let decision = |outcome| AlertRecord {
            alert_id: "a2".into(),
            alert: None,
            feed: "rest".into(),
            requester: "ci-token".into(),
            outcome,
        };
        let cases = [
            (AlertOutcome::PlanCreated { plan: "p".into() }, "plan_created", Some("p"), Value::Null, None),
            (AlertOutcome::Deduplicated { plan: "p".into() }, "deduplicated", Some("p"), Value::Null, None),
            (
                AlertOutcome::CooledDown { target: "VAEL_Core".into(), plan: "p".into() },
                "cooled_down",
                Some("p"),
                json!({"target": "VAEL_Core"}),
                None,
            ),
            (AlertOutcome::Ignored { rule: "info".into() }, "ignored", None, json!({"rule": "info"}), None),
            (
                AlertOutcome::Refused { reason: "NotAllowed".into(), message: "no".into() },
                "refused",
                None,
                Value::Null,
                Some("NotAllowed"),
            ),
        ];
        for (outcome, event, plan, detail, reason) in cases {
            let r = alert_record(&decision(outcome));
            assert_eq!((r.kind, r.event.as_str()), (RecordKind::Alert, event));
            assert_eq!(r.plan.map(|p| p.name), plan.map(String::from), "{event}");
            assert_eq!(r.detail, detail, "{event}");
            assert_eq!(r.reason.as_deref(), reason, "{event}");
            assert_eq!((r.alert_id.as_deref(), r.feed.as_deref()), (Some("a2"), Some("rest")));
            assert_eq!(r.requester, Some(Requester { via: "rest".into(), name: "ci-token".into(), claimed: None }));
        }
    }

    fn settings(dir: &Path, max_bytes: u64, keep: usize) -> AuditSettings {
        AuditSettings { dir: dir.to_path_buf(), max_bytes, keep, key: None, log_id: None }
    }

    fn write_records(settings: &AuditSettings, events: &[&str]) {
        let log = AuditLog::open(settings).expect("open audit log");
        for event in events {
            log.record(record(event));
        }
        log.close();
    }

    #[test]
    fn the_writer_continues_the_chain_across_restarts_and_rotations() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = settings(dir.path(), 400, 3);
        write_records(&s, &["a", "b", "c"]);
        write_records(&s, &["d", "e", "f", "g", "h"]);
        let v = verify_paths(&[dir.path().to_path_buf()], true).expect("read");
        assert!(v.ok(), "{}", v.report());
        assert_eq!((v.records, v.last_seq), (8, Some(7)));
        assert!(v.files > 1, "rotated: {} file(s)", v.files);
        for index in 0..v.files {
            let len = std::fs::metadata(dir.path().join(rotated_name(index))).expect("file").len();
            assert!(len <= 400, "{} is {len} bytes", rotated_name(index));
        }
        // Only `keep` rotated files survive; the remaining chain is anchored.
        write_records(&s, &["i", "j", "k", "l", "m", "n", "o", "p", "q", "r"]);
        assert!(!dir.path().join(rotated_name(4)).exists());
        let v = verify_paths(&[dir.path().to_path_buf()], false).expect("read");
        assert!(v.ok() && !v.from_genesis && v.last_seq == Some(17), "{}", v.report());
    }

    #[test]
    fn a_torn_tail_is_kept_aside_and_the_break_is_recorded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = settings(dir.path(), 0, 2);
        write_records(&s, &["a", "b", "c"]);
        let active = dir.path().join(ACTIVE_FILE);
        let mut bytes = std::fs::read(&active).expect("read");
        bytes.truncate(bytes.len() - 10);
        std::fs::write(&active, &bytes).expect("truncate");
        let v = verify_paths(std::slice::from_ref(&active), true).expect("read");
        assert_eq!((v.problems[0].line, v.problems[0].seq), (3, None));
        assert!(v.problems[0].why.contains("torn"), "{}", v.report());

        write_records(&s, &["d"]);
        // The damaged file is untouched, just renamed.
        assert_eq!(std::fs::read(dir.path().join(rotated_name(1))).expect("moved aside"), bytes);
        let v = verify_paths(&[dir.path().to_path_buf()], true).expect("read");
        assert_eq!(v.problems.len(), 1, "{}", v.report());
        assert!(v.problems[0].why.contains("acknowledged by the chain_break record seq 2"), "{}", v.report());
        assert!(v.notes.iter().any(|n| n.contains("chain_break")), "{}", v.report());
        // Records 0, 1 intact; the break continues from seq 1; then "d".
        assert_eq!((v.records, v.last_seq), (4, Some(3)));
        let new_file = std::fs::read_to_string(&active).expect("active");
        let first: Value = serde_json::from_str(new_file.lines().next().expect("line")).expect("json");
        assert_eq!(first["kind"], "chain_break");
        assert_eq!(first["detail"]["last_valid_seq"], 1);
    }

    #[test]
    fn a_head_file_with_nothing_intact_continues_from_the_older_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = settings(dir.path(), 300, 5);
        write_records(&s, &["a", "b", "c"]);
        let active = dir.path().join(ACTIVE_FILE);
        let bytes = std::fs::read(&active).expect("read");
        assert_eq!(bytes.iter().filter(|b| **b == b'\n').count(), 1, "one record per file");
        std::fs::write(&active, &bytes[..bytes.len() / 2]).expect("truncate");
        write_records(&s, &["d"]);
        let v = verify_paths(&[dir.path().to_path_buf()], true).expect("read");
        assert_eq!(v.problems.len(), 1, "{}", v.report());
        assert!(v.problems[0].why.contains("acknowledged by the chain_break record seq 2"), "{}", v.report());
        assert_eq!((v.records, v.last_seq), (4, Some(3)), "a, b, break, d: {}", v.report());
        // Files given by name in any order are put in rotation order.
        let mut names: Vec<PathBuf> =
            (0..10).map(|i| dir.path().join(rotated_name(i))).filter(|p| p.exists()).collect();
        names.reverse();
        names.swap(0, 1);
        assert_eq!(verify_paths(&names, true).expect("read"), v);
    }

    #[test]
    fn a_failed_write_is_followed_by_a_break_record_not_by_appending_after_torn_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut writer = ChainWriter::open(&settings(dir.path(), 0, 2)).expect("open");
        writer.append(record("a"));
        writer.append(record("b"));
        // What a short write (ENOSPC) leaves behind: part of a line, and the writer told so.
        let mut file = open_append(&dir.path().join(ACTIVE_FILE)).expect("open");
        file.write_all(b"{\"seq\":2,\"ti").expect("write");
        writer.lost = 1;
        writer.last_error = Some("No space left on device".into());
        writer.append(record("c"));
        writer.sync().expect("sync");
        let v = verify_paths(&[dir.path().to_path_buf()], true).expect("read");
        assert_eq!(v.problems.len(), 1, "{}", v.report());
        assert!(v.problems[0].why.contains("torn record") && v.problems[0].why.contains("acknowledged"));
        assert_eq!((v.records, v.last_seq), (4, Some(3)), "a, b, the break, c");
        let active = std::fs::read_to_string(dir.path().join(ACTIVE_FILE)).expect("active");
        let first: Value = serde_json::from_str(active.lines().next().expect("line")).expect("json");
        assert_eq!((first["kind"].as_str(), first["event"].as_str()), (Some("chain_break"), Some("write_failed")));
        assert_eq!(first["detail"]["lost_records"], 1);
    }

    const KEY: &[u8] = b"audit-key-0123456789abcdef";

    fn keyed(dir: &Path) -> AuditSettings {
        AuditSettings { key: Some(KEY.to_vec()), ..settings(dir, 0, 2) }
    }

    fn verify_keyed(dir: &Path, key: &[u8]) -> Verification {
        let options = VerifyOptions { require_genesis: true, key: Some(key.to_vec()), remember: vec![] };
        verify_paths_with(&[dir.to_path_buf()], &options).expect("read")
    }

    /// Rewrite record `index` with `edit` and recompute the SHA-256 chain after it, as someone
    /// with the volume but not the key would.
    fn rewrite(dir: &Path, index: usize, edit: impl Fn(&mut Value)) {
        let path = dir.join(ACTIVE_FILE);
        let text = std::fs::read_to_string(&path).expect("read");
        let mut records: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
        edit(&mut records[index]);
        let mut prev = records[index]["prev"].as_str().expect("prev").to_string();
        let mut out = String::new();
        for record in records.iter_mut().skip(index) {
            record["prev"] = json!(prev);
            let line = serde_json::to_string(record).expect("json");
            prev = sha256_hex(line.as_bytes());
            out.push_str(&line);
            out.push('\n');
        }
        let kept: String = text.lines().take(index).map(|l| format!("{l}\n")).collect();
        std::fs::write(&path, format!("{kept}{out}")).expect("write");
    }

    #[test]
    fn a_keyed_chain_needs_the_key_to_rewrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_records(&keyed(dir.path()), &["a", "b"]);
        // A restart continues the keyed chain from the last line's MAC.
        write_records(&keyed(dir.path()), &["c", "d"]);
        let v = verify_keyed(dir.path(), KEY);
        assert!(v.ok() && v.records == 4, "{}", v.report());
        // Without the key the SHA-256 chain alone still verifies.
        assert!(verify_paths(&[dir.path().to_path_buf()], true).expect("read").ok());

        // (damage, what verify with the key says)
        type Tamper = fn(&Path);
        let cases: [(&str, Tamper, &str); 4] = [
            ("wrong key", |_| {}, "MAC mismatch"),
            ("record rewritten, chain recomputed", |d| rewrite(d, 1, |r| r["event"] = json!("forged")), "MAC mismatch"),
            (
                "a MAC stripped, chain recomputed",
                |d| {
                    rewrite(d, 2, |r| {
                        r.as_object_mut().expect("object").remove("prev_mac");
                    })
                },
                "no prev_mac",
            ),
            (
                "a record removed",
                |d| {
                    let path = d.join(ACTIVE_FILE);
                    let text = std::fs::read_to_string(&path).expect("read");
                    let kept: String =
                        text.lines().enumerate().filter(|(i, _)| *i != 2).map(|(_, l)| format!("{l}\n")).collect();
                    std::fs::write(&path, kept).expect("write");
                },
                "seq jumps",
            ),
        ];
        for (name, damage, expected) in cases {
            let copy = tempfile::tempdir().expect("tempdir");
            std::fs::copy(dir.path().join(ACTIVE_FILE), copy.path().join(ACTIVE_FILE)).expect("copy");
            damage(copy.path());
            let key: &[u8] = if name == "wrong key" { b"another-key-0123456789" } else { KEY };
            let v = verify_keyed(copy.path(), key);
            assert!(!v.ok() && v.report().contains(expected), "{name}: {}", v.report());
        }
        // Every MAC stripped: the log as a whole is refused under the key.
        let copy = tempfile::tempdir().expect("tempdir");
        std::fs::copy(dir.path().join(ACTIVE_FILE), copy.path().join(ACTIVE_FILE)).expect("copy");
        for index in 0..4 {
            rewrite(copy.path(), index, |r| {
                r.as_object_mut().expect("object").remove("prev_mac");
            });
        }
        let v = verify_keyed(copy.path(), KEY);
        assert!(!v.ok() && v.report().contains("no record carries a MAC"), "{}", v.report());
    }

    #[test]
    fn a_log_keyed_later_is_verified_from_its_first_keyed_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_records(&settings(dir.path(), 0, 2), &["a", "b"]);
        write_records(&keyed(dir.path()), &["c"]);
        let v = verify_keyed(dir.path(), KEY);
        assert!(v.ok(), "{}", v.report());
        assert!(v.notes.iter().any(|n| n.contains("2 record(s) before the first keyed one")), "{}", v.report());
    }

    #[tokio::test]
    async fn a_deleted_log_file_is_not_written_blindly_and_flush_says_so() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log_dir = dir.path().join("audit");
        let log = AuditLog::open(&settings(&log_dir, 0, 2)).expect("open");
        log.record(record("a"));
        assert_eq!(log.flush().await, Ok(()));
        assert_eq!(log.head().map(|h| h.seq), Some(0));
        // The whole directory goes away under the writer (volume unmounted, rm -rf).
        std::fs::remove_dir_all(&log_dir).expect("remove");
        log.record(record("b"));
        let error = log.flush().await.expect_err("nothing durable");
        assert!(error.contains("cannot be written"), "{error}");
        assert_eq!(log.head().map(|h| h.seq), Some(0), "the head does not move");
        // Back: the next flush recovers, recording the loss before anything else.
        std::fs::create_dir_all(&log_dir).expect("mkdir");
        assert_eq!(log.flush().await, Ok(()));
        log.record(record("c"));
        log.close();
        let v = verify_paths(std::slice::from_ref(&log_dir), false).expect("read");
        assert!(v.ok(), "{}", v.report());
        let text = std::fs::read_to_string(log_dir.join(ACTIVE_FILE)).expect("active");
        let records: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
        let events: Vec<&str> = records.iter().map(|r| r["event"].as_str().unwrap_or("")).collect();
        assert_eq!(events, ["write_failed", "c"]);
        assert_eq!(records[0]["detail"]["lost_records"], 1);
        assert!(records[0]["message"].as_str().unwrap_or("").contains("gone while open"), "{}", records[0]);
    }

    #[test]
    fn one_writer_per_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = settings(dir.path(), 0, 1);
        let first = AuditLog::open(&s).expect("first writer");
        let second = AuditLog::open(&s).err().expect("second writer refused");
        assert!(second.to_string().contains("in use by another process"), "{second}");
        first.close();
        first.record(record("late")); // refused and logged, not a panic
    }
}
