//! Bearer tokens for every endpoint that reveals or changes anything, from a file (a mounted
//! Secret): one `name:token [scopes=a,b]` per line, `#` comments and blank lines ignored. The
//! token's *name* is the requester recorded in the audit trail; the token itself is kept only as a
//! SHA-256 digest and compared in constant time (digests have a fixed length, so not even the
//! length leaks).
//!
//! A token may do only what its scopes allow ([`Scope`]); a line without `scopes=` gets
//! `ingest`, which is all a token could do before scopes existed, so old files keep working and
//! no intake token can read plans or approve them unless someone says so.

use std::sync::{Arc, RwLock};

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const MIN_TOKEN_LEN: usize = 16;
const MAX_TOKEN_LEN: usize = 512;
const MAX_NAME_LEN: usize = 64;

/// What a token may do. Separate scopes so the NEXUS bridge cannot read plan values and the UI
/// cannot create plans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Submit alerts and manual plans (REST, gRPC `AlertIntake`, Alertmanager).
    Ingest,
    /// Read plans: `GET /api/antibody/plans`, the Socket.IO broadcast, `/metrics` when it needs a
    /// token. Environment values are redacted.
    Read,
    /// Read as `read`, with environment values shown.
    Reveal,
    /// Approve or deny plans that wait for approval.
    Approve,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Ingest, Scope::Read, Scope::Reveal, Scope::Approve];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
            Scope::Reveal => "reveal",
            Scope::Approve => "approve",
        }
    }

    /// `reveal` includes `read`.
    fn granted_by(self, held: Scope) -> bool {
        held == self || (self == Scope::Read && held == Scope::Reveal)
    }
}

impl std::str::FromStr for Scope {
    type Err = crate::validate::Invalid;
    fn from_str(s: &str) -> Result<Self, crate::validate::Invalid> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == s).ok_or_else(|| {
            let known: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
            format!("unknown scope {s:?} (known: {})", known.join(", ")).into()
        })
    }
}

/// Why a request was turned away: no valid token (HTTP 401 / gRPC UNAUTHENTICATED), or a valid
/// token without the scope (403 / PERMISSION_DENIED).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    Unauthenticated(&'static str),
    MissingScope { name: String, scope: Scope },
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Denied::Unauthenticated(why) => f.write_str(why),
            Denied::MissingScope { name, scope } => {
                write!(f, "token {name:?} lacks scope {:?} (add scopes={} to its line)", scope.as_str(), scope.as_str())
            }
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
struct Entry {
    name: String,
    digest: [u8; 32],
    scopes: Vec<Scope>,
}

#[derive(Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    entries: Vec<Entry>,
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
    pub fn parse(text: &str) -> Result<Self, crate::validate::Invalid> {
        let mut entries: Vec<Entry> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, rest) = line.split_once(':').ok_or_else(|| format!("line {line_no}: expected NAME:TOKEN"))?;
            let name = name.trim();
            // Tokens hold no spaces, so whatever follows the first space is options.
            let rest = rest.trim();
            let (token, options) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            let scopes = parse_scopes(options.trim()).map_err(|e| format!("line {line_no} ({name}): {e}"))?;
            let name_ok = !name.is_empty()
                && name.len() <= MAX_NAME_LEN
                && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
            if !name_ok {
                return Err(format!(
                    "line {line_no}: token name {name:?} must be 1-{MAX_NAME_LEN} of letters, digits, '-', '_', '.', '@'"
                ).into());
            }
            if token.len() < MIN_TOKEN_LEN || token.len() > MAX_TOKEN_LEN {
                return Err(format!(
                    "line {line_no} ({name}): token must be {MIN_TOKEN_LEN}-{MAX_TOKEN_LEN} characters, is {}",
                    token.len()
                )
                .into());
            }
            if !token.chars().all(|c| c.is_ascii_graphic()) {
                return Err(format!("line {line_no} ({name}): token must be printable ASCII without spaces").into());
            }
            if entries.iter().any(|e| e.name == name) {
                return Err(format!("line {line_no}: token name {name:?} appears twice").into());
            }
            let d = digest(token);
            if entries.iter().any(|e| bool::from(e.digest.ct_eq(&d))) {
                return Err(format!("line {line_no} ({name}): the same token is given to two names").into());
            }
            entries.push(Entry { name: name.to_string(), digest: d, scopes });
        }
        Ok(Self { entries })
    }

    pub fn load(path: &std::path::Path) -> Result<Self, crate::validate::Invalid> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("token file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("token file {}: {e}", path.display()).into())
    }

    fn entry(&self, presented: &str) -> Option<&Entry> {
        let d = digest(presented);
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.digest.ct_eq(&d)) {
                found = Some(entry);
            }
        }
        found
    }

    /// The name of the token presented, if it is one of ours. Every entry is compared.
    pub fn check(&self, presented: &str) -> Option<&str> {
        self.entry(presented).map(|e| e.name.as_str())
    }

    /// `Authorization` header value (`Bearer <token>`) → the token's name, if it holds `scope`.
    pub fn authorize(&self, header: Option<&str>, scope: Scope) -> Result<&str, Denied> {
        let header = header.ok_or(Denied::Unauthenticated("missing bearer token (Authorization: Bearer <token>)"))?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or(Denied::Unauthenticated("the Authorization header must be 'Bearer <token>'"))?;
        self.authorize_token(token.trim(), scope)
    }

    /// A bare token (as a Socket.IO client sends it in its `auth` payload) → its name, if it
    /// holds `scope`.
    pub fn authorize_token(&self, token: &str, scope: Scope) -> Result<&str, Denied> {
        if self.entries.is_empty() {
            return Err(Denied::Unauthenticated("no tokens are configured (start antibody with --token-file)"));
        }
        let entry = self.entry(token).ok_or(Denied::Unauthenticated("invalid token"))?;
        if entry.scopes.iter().any(|held| scope.granted_by(*held)) {
            Ok(entry.name.as_str())
        } else {
            Err(Denied::MissingScope { name: entry.name.clone(), scope })
        }
    }

    /// Whether the named token holds `scope` (e.g. `reveal`, to show env values).
    pub fn has_scope(&self, name: &str, scope: Scope) -> bool {
        self.entries.iter().any(|e| e.name == name && e.scopes.iter().any(|held| scope.granted_by(*held)))
    }

    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.name.as_str()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// `""` → `[ingest]`; `scopes=read,approve` → those. Anything else is refused, so a typo never
/// silently grants or drops a right.
fn parse_scopes(options: &str) -> Result<Vec<Scope>, String> {
    if options.is_empty() {
        return Ok(vec![Scope::Ingest]);
    }
    let list =
        options.strip_prefix("scopes=").ok_or("expected 'scopes=a,b' after the token (a token holds no spaces)")?;
    let mut scopes: Vec<Scope> = Vec::new();
    for item in list.split(',') {
        let scope: Scope = item.trim().parse()?;
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    Ok(scopes)
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

/// The HTTP answer to a refused token: 401 with `WWW-Authenticate` for a missing or unknown
/// token, 403 for a token without the scope (same JSON shape as every intake error).
pub fn denied_response(denied: &Denied) -> Response {
    let (status, code) = match denied {
        Denied::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "Unauthorized"),
        Denied::MissingScope { .. } => (StatusCode::FORBIDDEN, "Forbidden"),
    };
    let mut response = (status, Json(json!({ "error": code, "reason": denied.to_string() }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
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
            match (tokens.authorize(*header, Scope::Ingest), want) {
                (Ok(name), Ok(want)) => assert_eq!(name, *want),
                (Err(why), Err(want)) => assert!(why.to_string().contains(want), "{header:?}: {why}"),
                (got, want) => panic!("{header:?}: got {got:?}, want {want:?}"),
            }
        }
        let none = Tokens::default();
        let error = none.authorize(Some("Bearer s3cret-token-0123456789"), Scope::Ingest).expect_err("no tokens");
        assert!(error.to_string().contains("--token-file"));
    }

    #[test]
    fn scopes_limit_what_a_token_may_do() {
        let file = "bridge: bridge-token-0123456789
                    ui: ui-token-0123456789abcd scopes=read
                    oncall: oncall-token-0123456789 scopes=reveal,approve
                    ci: ci-token-0123456789abcd  scopes=ingest, read
";
        let tokens = Tokens::parse(file).expect("valid file");
        use Scope::*;
        let cases: &[(&str, Scope, Result<&str, ()>)] = &[
            // No scopes= means ingest only, as before scopes existed.
            ("bridge-token-0123456789", Ingest, Ok("bridge")),
            ("bridge-token-0123456789", Read, Err(())),
            ("bridge-token-0123456789", Approve, Err(())),
            ("ui-token-0123456789abcd", Read, Ok("ui")),
            ("ui-token-0123456789abcd", Reveal, Err(())),
            ("ui-token-0123456789abcd", Ingest, Err(())),
            // reveal includes read.
            ("oncall-token-0123456789", Read, Ok("oncall")),
            ("oncall-token-0123456789", Reveal, Ok("oncall")),
            ("oncall-token-0123456789", Approve, Ok("oncall")),
            ("oncall-token-0123456789", Ingest, Err(())),
            ("ci-token-0123456789abcd", Ingest, Ok("ci")),
            ("ci-token-0123456789abcd", Read, Ok("ci")),
        ];
        for (token, scope, want) in cases {
            match (tokens.authorize_token(token, *scope), want) {
                (Ok(name), Ok(want)) => assert_eq!(name, *want),
                (Err(Denied::MissingScope { scope: missing, .. }), Err(())) => assert_eq!(missing, *scope),
                (got, want) => panic!("{token} {scope:?}: got {got:?}, want {want:?}"),
            }
        }
        assert!(tokens.has_scope("oncall", Reveal));
        assert!(!tokens.has_scope("ui", Reveal));
        let denied = tokens.authorize_token("ui-token-0123456789abcd", Approve).expect_err("no approve");
        assert!(denied.to_string().contains("scopes=approve"), "{denied}");
        assert!(!denied.to_string().contains("ui-token"), "never echo the token: {denied}");
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
            ("a:0123456789 abcdef", "expected 'scopes=a,b'"),
            ("a:0123456789abcdef scopes=read,admin", "unknown scope \"admin\""),
            ("a:0123456789abcdef\tscope=read", "expected 'scopes=a,b'"),
        ];
        for (text, want) in cases {
            let error = Tokens::parse(text).expect_err(text);
            assert!(error.contains(want), "{text:?}: {error}");
            assert!(!error.contains("0123456789abcdef"), "errors never echo tokens: {error}");
        }
        assert!(Tokens::parse("# only comments\n\n").expect("empty is valid").is_empty());
    }
}
