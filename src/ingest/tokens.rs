//! Bearer tokens for the REST and gRPC intake, from a file (a mounted Secret): one `name:token`
//! per line, `#` comments and blank lines ignored. The token's *name* is the requester recorded in
//! the audit trail; the token itself is kept only as a SHA-256 digest and compared in constant
//! time (digests have a fixed length, so not even the length leaks).

use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const MIN_TOKEN_LEN: usize = 16;
const MAX_TOKEN_LEN: usize = 512;
const MAX_NAME_LEN: usize = 64;

#[derive(Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    entries: Vec<(String, [u8; 32])>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print digests.
        f.debug_struct("Tokens").field("names", &self.names()).finish()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Tokens {
    /// Parse a token file; errors name the line, never the token.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut entries: Vec<(String, [u8; 32])> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, token) = line.split_once(':').ok_or_else(|| format!("line {line_no}: expected NAME:TOKEN"))?;
            let (name, token) = (name.trim(), token.trim());
            let name_ok = !name.is_empty()
                && name.len() <= MAX_NAME_LEN
                && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
            if !name_ok {
                return Err(format!(
                    "line {line_no}: token name {name:?} must be 1-{MAX_NAME_LEN} of letters, digits, '-', '_', '.', '@'"
                ));
            }
            if token.len() < MIN_TOKEN_LEN || token.len() > MAX_TOKEN_LEN {
                return Err(format!(
                    "line {line_no} ({name}): token must be {MIN_TOKEN_LEN}-{MAX_TOKEN_LEN} characters, is {}",
                    token.len()
                ));
            }
            if !token.chars().all(|c| c.is_ascii_graphic()) {
                return Err(format!("line {line_no} ({name}): token must be printable ASCII without spaces"));
            }
            if entries.iter().any(|(n, _)| n == name) {
                return Err(format!("line {line_no}: token name {name:?} appears twice"));
            }
            let d = digest(token);
            if entries.iter().any(|(_, other)| bool::from(other.ct_eq(&d))) {
                return Err(format!("line {line_no} ({name}): the same token is given to two names"));
            }
            entries.push((name.to_string(), d));
        }
        Ok(Self { entries })
    }

    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("token file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("token file {}: {e}", path.display()))
    }

    /// The name of the token presented, if it is one of ours. Every entry is compared.
    pub fn check(&self, presented: &str) -> Option<&str> {
        let d = digest(presented);
        let mut found = None;
        for (name, known) in &self.entries {
            if bool::from(known.ct_eq(&d)) {
                found = Some(name.as_str());
            }
        }
        found
    }

    /// `Authorization` header value → token name. `Err` holds why not (for the 401 body).
    pub fn authorize(&self, header: Option<&str>) -> Result<&str, &'static str> {
        if self.entries.is_empty() {
            return Err("no tokens are configured (start antibody with --token-file)");
        }
        let header = header.ok_or("missing bearer token (Authorization: Bearer <token>)")?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or("the Authorization header must be 'Bearer <token>'")?;
        self.check(token.trim()).ok_or("invalid token")
    }

    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|(n, _)| n.as_str()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The live token set, swapped whole when the file changes.
#[derive(Debug, Default)]
pub struct TokenStore(RwLock<Arc<Tokens>>);

impl TokenStore {
    pub fn new(tokens: Tokens) -> Self {
        Self(RwLock::new(Arc::new(tokens)))
    }

    pub fn get(&self) -> Arc<Tokens> {
        self.0.read().map(|t| t.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    pub fn set(&self, tokens: Tokens) {
        match self.0.write() {
            Ok(mut slot) => *slot = Arc::new(tokens),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(tokens),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str =
        "# who may call\nnexus-bridge: s3cret-token-0123456789\n\n  ops@vael : another-long-token-abcdef  \n";

    #[test]
    fn parses_names_and_checks_tokens() {
        let tokens = Tokens::parse(FILE).expect("valid file");
        assert_eq!(tokens.names(), ["nexus-bridge", "ops@vael"]);
        assert_eq!(tokens.check("s3cret-token-0123456789"), Some("nexus-bridge"));
        assert_eq!(tokens.check("another-long-token-abcdef"), Some("ops@vael"));
        assert_eq!(tokens.check("s3cret-token-012345678"), None, "a prefix is not the token");
        assert_eq!(tokens.check(""), None);
        assert!(!format!("{tokens:?}").contains("s3cret"), "Debug never shows tokens");
    }

    #[test]
    fn authorization_header() {
        let tokens = Tokens::parse(FILE).expect("valid file");
        let cases: &[(Option<&str>, Result<&str, &str>)] = &[
            (Some("Bearer s3cret-token-0123456789"), Ok("nexus-bridge")),
            (Some("bearer another-long-token-abcdef"), Ok("ops@vael")),
            (None, Err("missing bearer token")),
            (Some("Basic czNjcmV0"), Err("must be 'Bearer")),
            (Some("Bearer wrong-token-wrong-token"), Err("invalid token")),
            (Some("Bearer "), Err("invalid token")),
        ];
        for (header, want) in cases {
            match (tokens.authorize(*header), want) {
                (Ok(name), Ok(want)) => assert_eq!(name, *want),
                (Err(why), Err(want)) => assert!(why.contains(want), "{header:?}: {why}"),
                (got, want) => panic!("{header:?}: got {got:?}, want {want:?}"),
            }
        }
        let none = Tokens::default();
        assert!(none.authorize(Some("Bearer s3cret-token-0123456789")).unwrap_err().contains("--token-file"));
    }

    #[test]
    fn bad_files_name_the_line() {
        let cases: &[(&str, &str)] = &[
            ("just-a-token-without-name", "line 1: expected NAME:TOKEN"),
            ("a:short", "line 1 (a): token must be 16"),
            ("ok:0123456789abcdef\nbad name:0123456789abcdef", "line 2: token name \"bad name\""),
            (":0123456789abcdef", "line 1: token name \"\""),
            ("a:0123456789abcdef\na:fedcba9876543210", "line 2: token name \"a\" appears twice"),
            ("a:0123456789abcdef\nb:0123456789abcdef", "line 2 (b): the same token"),
            ("a:0123456789 abcdef", "printable ASCII"),
        ];
        for (text, want) in cases {
            let error = Tokens::parse(text).expect_err(text);
            assert!(error.contains(want), "{text:?}: {error}");
            assert!(!error.contains("0123456789abcdef"), "errors never echo tokens: {error}");
        }
        assert!(Tokens::parse("# only comments\n\n").expect("empty is valid").is_empty());
    }
}
