//! Who may read plans, and how much of them: the plans API (`GET /api/antibody/plans`), the
//! Socket.IO broadcast and (when it asks for a token) `/metrics` need a token with scope `read`;
//! values are shown only to a token with `reveal`.
//!
//! Redaction is of the summary ([`super::summary::plan_summary`]), pure and in one place, so the
//! API and the broadcast hide the same things. What a `read` caller does not see:
//! - `actions[].val`: the value an `editEnv` sets (secrets end up in env),
//! - every free-text message (`actions[].message`, the Ready `message`): they quote the old
//!   value an edit replaced (`was "…"`), exec output of reload commands and probes, and diffs.
//!
//! Hidden fields become `null` and are named in a `redacted` list (per action, and at the top
//! for the plan's message), so a UI can say "hidden" and tell it apart from "no value". Never a
//! digest or a length: an env value is often low-entropy (`true`, a port), a bare hash of it
//! is the value. The structured fields stay: id, targets, keys, states, reasons, times, who
//! asked.
//!
//! Tokens are read from the live token store on every request and connect, so a token file
//! reload applies at once to new requests; a connected Socket.IO client is checked again by its
//! token's name before the next event after a reload ([`visibility_by_name`]): dropped when
//! the name lost `read`, moved when its visibility changed.

use serde_json::Value;

use crate::tokens::{Denied, Scope, Tokens};

/// How much of a plan a caller may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// `read`: values and free-text messages hidden.
    Redacted,
    /// `reveal`: everything.
    Revealed,
}

/// The Socket.IO room of each visibility: every event is emitted once per room.
pub const REDACTED_ROOM: &str = "plans-redacted";
pub const REVEALED_ROOM: &str = "plans-revealed";

impl Visibility {
    pub fn room(self) -> &'static str {
        match self {
            Visibility::Redacted => REDACTED_ROOM,
            Visibility::Revealed => REVEALED_ROOM,
        }
    }

    /// `summary` as this caller may see it.
    pub fn apply(self, summary: &Value) -> Value {
        match self {
            Visibility::Revealed => summary.clone(),
            Visibility::Redacted => redact(summary),
        }
    }
}

/// The token named `name` (already checked for `read`): may it see values?
fn visibility_of(tokens: &Tokens, name: &str) -> Visibility {
    if tokens.has_scope(name, Scope::Reveal) { Visibility::Revealed } else { Visibility::Redacted }
}

/// What the token named `name` may see now, if anything (a connected socket after a reload).
pub fn visibility_by_name(tokens: &Tokens, name: &str) -> Option<Visibility> {
    tokens.has_scope(name, Scope::Read).then(|| visibility_of(tokens, name))
}

/// An HTTP `Authorization` header → what its token may see, or why it may see nothing.
pub fn authorize_read(tokens: &Tokens, authorization: Option<&str>) -> Result<Visibility, Denied> {
    let name = tokens.authorize(authorization, Scope::Read)?;
    Ok(visibility_of(tokens, name))
}

/// A Socket.IO connect: the token from the `auth` payload (`{"token": "…"}`, as
/// `sio.connect(url, auth={"token": …})` and JS `io(url, {auth: {token}})` send it), else from
/// the handshake's `Authorization: Bearer` header. Other keys of the payload (a replay cursor
/// such as `last_seq`) are left alone. Returns the token's name with what it may see.
pub fn authorize_socket(
    tokens: &Tokens,
    auth: Option<&Value>,
    authorization: Option<&str>,
) -> Result<(String, Visibility), Denied> {
    let name = match auth.and_then(|a| a.get("token")) {
        Some(Value::String(token)) => tokens.authorize_token(token.trim(), Scope::Read)?,
        Some(_) => return Err(Denied::Unauthenticated("auth.token must be a string")),
        None if authorization.is_some() => tokens.authorize(authorization, Scope::Read)?,
        None => {
            return Err(Denied::Unauthenticated(
                "missing token: connect with auth {\"token\": \"<token>\"} or an Authorization: Bearer header",
            ));
        }
    };
    Ok((name.to_string(), visibility_of(tokens, name)))
}

/// Replace `object[field]` with null and note it in `hidden`, if it held anything.
fn hide(object: &mut serde_json::Map<String, Value>, field: &str, hidden: &mut Vec<Value>) {
    if let Some(value) = object.get_mut(field)
        && !value.is_null()
    {
        *value = Value::Null;
        hidden.push(Value::String(field.to_string()));
    }
}

/// The summary a `read` caller sees (see the module note). A summary that is not an object is
/// replaced whole: nothing unknown passes.
pub fn redact(summary: &Value) -> Value {
    let Some(object) = summary.as_object() else { return Value::Null };
    let mut object = object.clone();
    let mut hidden = Vec::new();
    hide(&mut object, "message", &mut hidden);
    if let Some(Value::Array(actions)) = object.get_mut("actions") {
        for action in actions.iter_mut() {
            let Some(action) = action.as_object_mut() else {
                *action = Value::Null;
                continue;
            };
            let mut hidden_here = Vec::new();
            hide(action, "val", &mut hidden_here);
            hide(action, "message", &mut hidden_here);
            if !hidden_here.is_empty() {
                action.insert("redacted".into(), Value::Array(hidden_here));
            }
        }
    }
    if !hidden.is_empty() {
        object.insert("redacted".into(), Value::Array(hidden));
    }
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FILE: &str = "bridge: bridge-token-0123456789
ui: ui-token-0123456789abcd scopes=read
oncall: oncall-token-0123456789 scopes=reveal
";

    fn summary() -> Value {
        json!({
            "id": "p1",
            "message": "set DB_PASSWORD in ConfigMap vael/core-env (was \"hunter2\")",
            "reason": "Applied",
            "requester": {"via": "token", "name": "ci"},
            "actions": [
                {"type": "edit_env", "target": "VAEL_Core", "key": "DB_PASSWORD", "val": "s3cret",
                 "state": "Succeeded", "message": "set DB_PASSWORD (was \"hunter2\")"},
                {"type": "reload_flask", "target": "VAEL_UI", "key": null, "val": null,
                 "state": "Succeeded", "message": "ui-1: reloaded generation 7"},
                {"type": "restart", "target": "VAEL_Core", "key": null, "val": null,
                 "state": "Pending", "message": null},
            ],
        })
    }

    #[test]
    fn redaction_hides_values_and_messages_and_names_them() {
        let redacted = redact(&summary());
        let text = redacted.to_string();
        for secret in ["s3cret", "hunter2", "generation 7"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert_eq!(redacted["message"], Value::Null);
        assert_eq!(redacted["redacted"], json!(["message"]));
        let cases = [
            (0, json!(["val", "message"])),
            (1, json!(["message"])),
            // Nothing to hide: no marker, so `redacted` never claims a value that was not there.
            (2, Value::Null),
        ];
        for (index, want) in cases {
            assert_eq!(redacted["actions"][index]["redacted"], want, "action {index}");
            assert_eq!(redacted["actions"][index]["val"], Value::Null);
            assert_eq!(redacted["actions"][index]["message"], Value::Null);
        }
        // What stays: who, what, where, how it ended.
        for field in ["id", "reason", "requester"] {
            assert_eq!(redacted[field], summary()[field], "{field}");
        }
        assert_eq!(redacted["actions"][0]["key"], "DB_PASSWORD");
        assert_eq!(redacted["actions"][0]["state"], "Succeeded");
        assert_eq!(Visibility::Revealed.apply(&summary()), summary());
        assert_eq!(Visibility::Redacted.apply(&summary()), redacted);
        assert_eq!(redact(&json!("not an object")), Value::Null, "unknown shapes pass nothing");
        let odd = redact(&json!({"actions": ["edit_env:K=secret"]}));
        assert_eq!(odd["actions"], json!([null]), "a non-object action passes nothing");
    }

    #[test]
    fn read_needs_read_and_values_need_reveal() {
        let tokens = Tokens::parse(FILE).expect("valid");
        let cases: &[(Option<&str>, Result<Visibility, &str>)] = &[
            (Some("Bearer ui-token-0123456789abcd"), Ok(Visibility::Redacted)),
            (Some("Bearer oncall-token-0123456789"), Ok(Visibility::Revealed)),
            (Some("Bearer bridge-token-0123456789"), Err("403")),
            (Some("Bearer wrong-token-0123456789"), Err("401")),
            (None, Err("401")),
        ];
        for (header, want) in cases {
            let got = authorize_read(&tokens, *header);
            match (got, want) {
                (Ok(v), Ok(w)) => assert_eq!(v, *w, "{header:?}"),
                (Err(Denied::MissingScope { scope, .. }), Err("403")) => assert_eq!(scope, Scope::Read),
                (Err(Denied::Unauthenticated(_)), Err("401")) => {}
                (got, want) => panic!("{header:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn socket_token_from_auth_payload_or_header() {
        let tokens = Tokens::parse(FILE).expect("valid");
        let bearer = Some("Bearer oncall-token-0123456789");
        // (auth payload, Authorization header, what the connect gets)
        type Case<'a> = (Option<Value>, Option<&'a str>, Result<Visibility, &'a str>);
        let cases: &[Case] = &[
            (Some(json!({"token": "ui-token-0123456789abcd"})), None, Ok(Visibility::Redacted)),
            // A replay cursor beside the token is fine.
            (Some(json!({"token": "oncall-token-0123456789", "last_seq": 41})), None, Ok(Visibility::Revealed)),
            (None, bearer, Ok(Visibility::Revealed)),
            (Some(json!({"last_seq": 41})), bearer, Ok(Visibility::Revealed)),
            // The payload's token wins over the header: the client said which one it means.
            (Some(json!({"token": "ui-token-0123456789abcd"})), bearer, Ok(Visibility::Redacted)),
            (Some(json!({"token": "bridge-token-0123456789"})), None, Err("lacks scope \"read\"")),
            (Some(json!({"token": "nope-nope-nope-nope"})), None, Err("invalid token")),
            (Some(json!({"token": 42})), None, Err("auth.token must be a string")),
            (None, None, Err("missing token: connect with auth")),
            (Some(json!({})), None, Err("missing token: connect with auth")),
            (Some(json!("ui-token-0123456789abcd")), None, Err("missing token")),
        ];
        for (auth, header, want) in cases {
            match (authorize_socket(&tokens, auth.as_ref(), *header).map(|(_, v)| v), want) {
                (Ok(v), Ok(w)) => assert_eq!(v, *w, "{auth:?} {header:?}"),
                (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{auth:?}: {e}"),
                (got, want) => panic!("{auth:?} {header:?}: got {got:?}, want {want:?}"),
            }
        }
        let (name, _) =
            authorize_socket(&tokens, Some(&json!({"token": "ui-token-0123456789abcd"})), None).expect("read token");
        assert_eq!(name, "ui");
        // After a reload, by name: kept, moved, or dropped.
        let reloaded =
            Tokens::parse("ui: ui-token-0123456789abcd scopes=reveal\noncall: oncall-token-0123456789 scopes=ingest\n")
                .expect("valid");
        assert_eq!(visibility_by_name(&reloaded, "ui"), Some(Visibility::Revealed));
        assert_eq!(visibility_by_name(&reloaded, "oncall"), None, "lost read");
        assert_eq!(visibility_by_name(&reloaded, "bridge"), None, "gone");
        assert_eq!(visibility_by_name(&tokens, "ui"), Some(Visibility::Redacted));
        let none = Tokens::default();
        let error = authorize_socket(&none, Some(&json!({"token": "ui-token-0123456789abcd"})), None)
            .expect_err("no tokens configured");
        assert!(error.to_string().contains("--token-file"), "{error}");
    }
}
