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

//!
//! Split by job: [`record`] (the model and chain primitives), [`writer`] (the writer thread and
//! the hook), [`verify`] (checking a log).

mod record;
mod verify;
mod writer;

pub use record::*;
pub use verify::*;
pub use writer::*;

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

#[cfg(test)]
mod tests {
    use crate::reason::Reason;
    use std::io::Write;
    use std::path::{Path, PathBuf};

    use serde_json::{Value, json};

    use super::writer::{ChainWriter, Tail, analyse_tail, open_append};
    use super::*;
    use crate::report::summary::Requester;
    use crate::report::{AlertOutcome, AlertRecord, PlanTransition, TransitionKind};

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
            reason: Reason::ActionSucceeded,
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
                AlertOutcome::Refused { reason: Reason::NotAllowed, message: "no".into() },
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
        assert!(matches!(error, AuditUnavailable::Write(_)), "{error}");
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
