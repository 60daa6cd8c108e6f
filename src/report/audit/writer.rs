//! Writing the chain: where the log is kept, its id, reading the end of an existing log, the
//! writer thread (seal, write, fdatasync, recover) and the [`AuditLog`] hook.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde_json::json;
use tracing::{error, info, warn};

use super::record::{
    AuditRecord, RecordKind, alert_record, chain_fields, genesis_hash, mac_hex, plan_record, read_key, sha256_hex,
};
use super::{ACTIVE_FILE, GENESIS, LOCK_FILE, LOG_ID_FILE, MAX_BATCH};
use crate::report::{AlertRecord, Hook, PlanTransition};

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

/// The last intact record of a file, and what follows it that is not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Tail {
    /// `(seq, sha256 of its line)` of the last valid record, if any.
    pub(super) last_valid: Option<(u64, String)>,
    /// That record's line (its MAC continues a keyed chain).
    pub(super) last_line: Option<Vec<u8>>,
    /// Bytes after the last valid record: a torn line and/or invalid lines.
    pub(super) damage: Option<Damage>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Damage {
    pub(super) bytes: Vec<u8>,
    pub(super) why: String,
}

/// Analyse the end of a file. `buf` is its last bytes; `from_start` says whether `buf` starts
/// at offset 0 (else its first piece may be a partial line). `None`: read more.
pub(super) fn analyse_tail(buf: &[u8], from_start: bool) -> Option<Tail> {
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

pub(super) struct ChainWriter {
    dir: PathBuf,
    max_bytes: u64,
    keep: usize,
    file: File,
    /// Bytes of the active file known to hold complete records.
    size: u64,
    next_seq: u64,
    prev: String,
    /// Records that could not be written since the last good write.
    pub(super) lost: u64,
    pub(super) last_error: Option<String>,
    key: Option<Vec<u8>>,
    /// MAC of the last record's line (of the genesis marker before the first), when keyed.
    prev_mac: Option<String>,
    /// The last record written, and the last one made durable (shared with anchors).
    written: Option<Head>,
    durable: Arc<Mutex<Option<Head>>>,
    _lock: File,
}

pub(super) fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn sync_dir(dir: &Path) {
    // Makes renames and new files durable; not every filesystem allows it, and it is only that.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

impl ChainWriter {
    pub(super) fn open(settings: &AuditSettings) -> crate::Result<Self> {
        let dir = settings.dir.clone();
        let config_error = |message: String| crate::Error::Audit { dir: dir.display().to_string(), message };
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

    pub(super) fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync_data()?;
        *self.durable.lock().unwrap_or_else(|p| p.into_inner()) = self.written.clone();
        Ok(())
    }

    /// Everything written so far is on disk and nothing is lost: `Ok`. After lost records,
    /// first try to recover (which records the loss).
    fn flush(&mut self) -> Result<(), AuditUnavailable> {
        if self.lost > 0 {
            self.recover().map_err(|e| AuditUnavailable::Write(e.to_string()))?;
        }
        self.sync().map_err(|e| AuditUnavailable::Sync(e.to_string()))
    }

    /// Write `record`; on failure keep going and account for it (never block the caller).
    pub(super) fn append(&mut self, record: AuditRecord) {
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

/// Why the records reported so far are not known to be on disk (`audit.fail_closed` holds
/// plans while this is the answer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditUnavailable {
    #[error("audit log cannot be written: {0}")]
    Write(String),
    #[error("audit log cannot be synced: {0}")]
    Sync(String),
    #[error("audit log is closed")]
    Closed,
    #[error("audit writer stopped")]
    WriterStopped,
    #[error("audit writer did not confirm within {0}s")]
    Timeout(u64),
}

enum Message {
    Record(Box<AuditRecord>),
    /// Reply once everything queued before it is durable (or why not).
    Flush(tokio::sync::oneshot::Sender<Result<(), AuditUnavailable>>),
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
    pub async fn flush(&self) -> Result<(), AuditUnavailable> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        {
            let sender = self.sender.lock().unwrap_or_else(|p| p.into_inner());
            match sender.as_ref() {
                Some(sender) if sender.send(Message::Flush(reply)).is_ok() => {}
                _ => return Err(AuditUnavailable::Closed),
            }
        }
        match tokio::time::timeout(FLUSH_TIMEOUT, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(AuditUnavailable::WriterStopped),
            Err(_) => Err(AuditUnavailable::Timeout(FLUSH_TIMEOUT.as_secs())),
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
