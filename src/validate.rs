//! Input validation shared by config, alerts, hints and admission. Pure; each check returns a
//! message that says what is wrong, never the offending bytes unescaped.

/// Logical target names as antibody.yml spells them: `VAEL_Core`, `Sentinel`.
pub fn logical_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    if !first_ok || name.len() > 63 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(format!(
            "invalid target name {name:?}: 1-63 characters, a letter first, then letters, digits, '_' or '-'"
        ));
    }
    Ok(())
}

/// RFC 1123 label (namespaces, container names): `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, ≤ 63.
pub fn dns1123_label(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!("invalid name {name:?}: must be a DNS-1123 label (lowercase letters, digits, '-', ≤ 63)"))
    }
}

/// RFC 1123 subdomain (Deployments, ConfigMaps): labels joined by '.', ≤ 253.
pub fn dns1123_subdomain(name: &str) -> Result<(), String> {
    let ok = !name.is_empty() && name.len() <= 253 && name.split('.').all(|label| dns1123_label(label).is_ok());
    if ok {
        Ok(())
    } else {
        Err(format!("invalid name {name:?}: must be a DNS-1123 subdomain (lowercase letters, digits, '-', '.')"))
    }
}

/// Environment variable / ConfigMap key for env use: `[A-Za-z_][A-Za-z0-9_]*`, ≤ 253.
pub fn env_key(key: &str) -> Result<(), String> {
    let mut chars = key.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first_ok && key.len() <= 253 && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err(format!("invalid env key {key:?}: must match [A-Za-z_][A-Za-z0-9_]*"))
    }
}

pub const MAX_ENV_VALUE: usize = 4096;

/// An env value: one line, no control characters, bounded.
pub fn env_value(value: &str) -> Result<(), String> {
    if value.len() > MAX_ENV_VALUE {
        return Err(format!("env value too long: {} bytes (max {MAX_ENV_VALUE})", value.len()));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(format!("env value holds control character {c:?}: one line of printable text only"));
    }
    // Bidi overrides and zero-width characters make a value read differently than it acts.
    if let Some(c) = value.chars().find(|&c| is_invisible_or_bidi(c)) {
        return Err(format!("env value holds invisible or bidirectional-override character {c:?}"));
    }
    Ok(())
}

fn is_invisible_or_bidi(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        type Check = fn(&str) -> Result<(), String>;
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
}
