//! Input validation shared by config, alerts, hints and admission. Pure; each check returns a
//! message that says what is wrong, never the offending bytes unescaped.

/// A configuration problem, naming the field (antibody.yml and its sections).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

/// A value that fails a check; the message says which rule and what was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// The message, for callers that only report it.
impl std::ops::Deref for Invalid {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Invalid {
    fn from(message: &str) -> Self {
        Invalid(message.to_string())
    }
}

impl From<String> for Invalid {
    fn from(message: String) -> Self {
        Invalid(message)
    }
}

/// Callers that report a message (config fields, CLI output) take it as text.
impl From<Invalid> for String {
    fn from(invalid: Invalid) -> String {
        invalid.0
    }
}

/// Logical target names as antibody.yml spells them: `VAEL_Core`, `Sentinel`.
pub fn logical_name(name: &str) -> Result<(), Invalid> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    if !first_ok || name.len() > 63 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(format!(
            "invalid target name {name:?}: 1-63 characters, a letter first, then letters, digits, '_' or '-'"
        )
        .into());
    }
    Ok(())
}

/// RFC 1123 label (namespaces, container names): `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, ≤ 63.
pub fn dns1123_label(name: &str) -> Result<(), Invalid> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!("invalid name {name:?}: must be a DNS-1123 label (lowercase letters, digits, '-', ≤ 63)").into())
    }
}

/// RFC 1123 subdomain (Deployments, ConfigMaps): labels joined by '.', ≤ 253.
pub fn dns1123_subdomain(name: &str) -> Result<(), Invalid> {
    let ok = !name.is_empty() && name.len() <= 253 && name.split('.').all(|label| dns1123_label(label).is_ok());
    if ok {
        Ok(())
    } else {
        Err(format!("invalid name {name:?}: must be a DNS-1123 subdomain (lowercase letters, digits, '-', '.')").into())
    }
}

/// Environment variable / ConfigMap key for env use: `[A-Za-z_][A-Za-z0-9_]*`, ≤ 253.
pub fn env_key(key: &str) -> Result<(), Invalid> {
    let mut chars = key.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first_ok && key.len() <= 253 && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err(format!("invalid env key {key:?}: must match [A-Za-z_][A-Za-z0-9_]*").into())
    }
}

pub const MAX_ENV_VALUE: usize = 4096;

/// An env value: one line, no control characters, bounded.
pub fn env_value(value: &str) -> Result<(), Invalid> {
    if value.len() > MAX_ENV_VALUE {
        return Err(format!("env value too long: {} bytes (max {MAX_ENV_VALUE})", value.len()).into());
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(format!("env value holds control character {c:?}: one line of printable text only").into());
    }
    // Bidi overrides and zero-width characters make a value read differently than it acts.
    if let Some(c) = value.chars().find(|&c| is_invisible_or_bidi(c)) {
        return Err(format!("env value holds invisible or bidirectional-override character {c:?}").into());
    }
    Ok(())
}

/// Env keys that change how a program is loaded or interpreted (dynamic loader, Python, Node,
/// Perl, Ruby, Java, shell start-up). An env edit may set one only when the target's `env_keys`
/// lists it by name: a hint arriving over a feed must not be able to inject code at restart.
pub fn dangerous_env_key(key: &str) -> bool {
    const PREFIXES: &[&str] = &["LD_", "DYLD_", "PYTHON", "PERL5", "PERL_", "RUBY", "NODE_", "JAVA_", "_JAVA_", "JDK_"];
    const EXACT: &[&str] = &[
        "NODE_OPTIONS",
        "BASH_ENV",
        "ENV",
        "PATH",
        "IFS",
        "SHELLOPTS",
        "PS4",
        "GCONV_PATH",
        "GEM_PATH",
        "GEM_HOME",
        "CLASSPATH",
        "GUNICORN_CMD_ARGS",
        "PYTHONSTARTUP",
        "HOME",
        "TMPDIR",
    ];
    let upper = key.to_ascii_uppercase();
    EXACT.contains(&upper.as_str()) || PREFIXES.iter().any(|p| upper.starts_with(p))
}

/// Parse JSON, refusing a key that appears twice in one object: `{"severity":"info",
/// "severity":"critical"}` means different things to readers taking the first or the last value,
/// so it is ambiguous and no intake acts on it. The error names the key and where it is
/// (`$.alerts[0]`). serde_json's recursion limit still applies.
pub fn json_strict(bytes: &[u8]) -> Result<serde_json::Value, Invalid> {
    use serde::de::DeserializeSeed;
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = StrictValue { path: "$".into() }.deserialize(&mut deserializer).map_err(|e| {
        let text = e.to_string();
        Invalid(if text.starts_with("duplicate key") { text } else { format!("malformed JSON: {text}") })
    })?;
    deserializer.end().map_err(|e| Invalid(format!("malformed JSON: {e}")))?;
    Ok(value)
}

/// Builds a `serde_json::Value` like its own `Deserialize`, checking keys per object.
struct StrictValue {
    path: String,
}

impl<'de> serde::de::DeserializeSeed<'de> for StrictValue {
    type Value = serde_json::Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for StrictValue {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, serde_json::Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        serde::de::DeserializeSeed::deserialize(self, d)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(StrictValue { path: format!("{}[{}]", self.path, items.len()) })? {
            items.push(item);
        }
        Ok(serde_json::Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "duplicate key {key:?} in {}: ambiguous JSON is refused",
                    self.path
                )));
            }
            let path = format!("{}.{key}", self.path);
            let value = map.next_value_seed(StrictValue { path })?;
            object.insert(key, value);
        }
        Ok(serde_json::Value::Object(object))
    }
}

fn is_invisible_or_bidi(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        type Check = fn(&str) -> Result<(), Invalid>;
        let cases: &[(Check, &str, bool)] = &[
            (logical_name, "VAEL_Core", true),
            (logical_name, "Sentinel", true),
            (logical_name, "../x", false),
            (logical_name, "_x", false),
            (logical_name, "", false),
            (logical_name, "a b", false),
            (logical_name, "VAEL_Cöre", false),
            (dns1123_label, "vael", true),
            (dns1123_label, "vael-core", true),
            (dns1123_label, "Vael", false),
            (dns1123_label, "-vael", false),
            (dns1123_label, "vael_core", false),
            (dns1123_label, &"a".repeat(64), false),
            (dns1123_subdomain, "vael-core.env", true),
            (dns1123_subdomain, "vael..core", false),
            (dns1123_subdomain, "../etc", false),
            (env_key, "LOG_LEVEL", true),
            (env_key, "_X1", true),
            (env_key, "1X", false),
            (env_key, "A-B", false),
            (env_key, "A=B", false),
            (env_key, "", false),
            (env_value, "debug", true),
            (env_value, "", true),
            (env_value, "a b=c;$(x)", true),
            (env_value, "V\nX=Y", false),
            (env_value, "V\rX", false),
            (env_value, "nul\0", false),
            (env_value, "\u{202E}gubed", false),
            (env_value, "de\u{200D}bug", false),
            (env_value, "\u{FEFF}x", false),
            (env_value, "café ünïcode", true),
            (env_value, &"x".repeat(MAX_ENV_VALUE + 1), false),
        ];
        for (check, input, ok) in cases {
            assert_eq!(check(input).is_ok(), *ok, "{input:?}");
        }
    }

    #[test]
    fn duplicate_json_keys_are_refused_with_their_name() {
        let cases: &[(&str, Result<(), &str>)] = &[
            (r#"{"id":"a","severity":"info"}"#, Ok(())),
            (r#"[{"k":1},{"k":2}]"#, Ok(())),
            (r#"{"a":{"k":1},"b":{"k":2}}"#, Ok(())),
            (r#"{"severity":"info","id":"a","severity":"critical"}"#, Err(r#"duplicate key "severity" in $"#)),
            (r#"{"alerts":[{"x":1},{"labels":{"s":1,"s":2}}]}"#, Err(r#"duplicate key "s" in $.alerts[1].labels"#)),
            (r#"{"a":1} x"#, Err("malformed JSON: trailing characters")),
            (r#"{"a":"#, Err("malformed JSON")),
        ];
        for (json, want) in cases {
            match (json_strict(json.as_bytes()), want) {
                (Ok(value), Ok(())) => {
                    assert_eq!(value, serde_json::from_str::<serde_json::Value>(json).expect("valid"), "{json}")
                }
                (Err(e), Err(want)) => assert!(e.0.starts_with(want), "{json}: {e}"),
                (got, want) => panic!("{json}: got {got:?}, want {want:?}"),
            }
        }
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(json_strict(deep.as_bytes()).is_err(), "recursion limit still applies");
    }

    #[test]
    fn loader_and_interpreter_variables_are_dangerous() {
        for key in [
            "LD_PRELOAD",
            "ld_library_path",
            "PYTHONPATH",
            "PYTHONSTARTUP",
            "NODE_OPTIONS",
            "BASH_ENV",
            "PATH",
            "DYLD_INSERT_LIBRARIES",
            "JAVA_TOOL_OPTIONS",
            "PERL5OPT",
            "RUBYOPT",
        ] {
            assert!(dangerous_env_key(key), "{key}");
        }
        for key in ["LOG_LEVEL", "FLASK_DEBUG", "MODE", "PATHFINDER_MODE"] {
            assert!(!dangerous_env_key(key), "{key}");
        }
    }
}
