//! Checking the chain across files: order, hashes, damage the log itself recorded and, with the
//! key, every MAC. Pure, except for reading the files.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::record::{RecordKind, chain_fields, genesis_hash, mac_hex, sha256_hex};
use super::{ACTIVE_FILE, GENESIS};

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
