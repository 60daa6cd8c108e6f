//! Signed plans: ed25519 over a canonical form of (namespace, name, spec, expiry, nonce,
//! requested-by).
//!
//! The signature travels in the annotation `antibody.vael.io/signature` as
//! `v2:ed25519:<key name>:<expires, unix seconds>:<nonce, 32 hex>:<base64 signature>`.
//! Binding namespace and name stops a signature being moved onto another plan; the expiry and
//! nonce let the reconciler remember every executed signature until it expires and refuse a
//! re-applied copy (`SignatureReplayed`, see `reconcile::replay`). The requested-by annotation
//! is covered too, so the audit can attribute a plan to a REST token only when Antibody signed
//! it. Signatures in the old v1 form (no expiry, no nonce) are refused. Keys are raw 32-byte
//! ed25519 keys in base64 (one line).

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::names::REQUESTED_BY_ANNOTATION;
use crate::plan::{PatchPlan, PatchPlanSpec};

use crate::names::SIGNATURE_ANNOTATION;
const DOMAIN: &[u8] = b"antibody.vael.io/PatchPlan/v2\n";
const PREFIX: &str = "v2:ed25519:";
/// Validity of a signature made by `antibody sign` (default) and by Antibody for its own plans.
pub const DEFAULT_TTL_SECONDS: u64 = 3600;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Payload<'a> {
    namespace: &'a str,
    name: &'a str,
    spec: &'a PatchPlanSpec,
    expires: i64,
    nonce: &'a str,
    requested_by: Option<&'a str>,
}

/// Why a plan could not be signed or a key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The plan lacks what a signature binds (namespace, name) or cannot be serialised.
    #[error("{0}")]
    Unsignable(String),
    #[error("key name {0:?} must be non-empty and hold no ':'")]
    KeyName(String),
    #[error("ttl too large")]
    Ttl,
    #[error("no randomness: {0}")]
    Randomness(String),
    /// A key that is not base64 of a raw 32-byte ed25519 key, or not readable.
    #[error("{0}")]
    BadKey(String),
}

/// The exact bytes signed: a domain tag, then compact JSON of the typed payload. Typed
/// serialisation makes it canonical: field order is the struct's, defaults are omitted the
/// same way the API server stores them.
pub fn canonical_bytes(plan: &PatchPlan, expires: i64, nonce: &str) -> Result<Vec<u8>, KeyError> {
    let unsignable = |message: &str| KeyError::Unsignable(message.to_string());
    let namespace = plan
        .metadata
        .namespace
        .as_deref()
        .ok_or_else(|| unsignable("the plan has no metadata.namespace: signatures bind it"))?;
    let name = plan.metadata.name.as_deref().ok_or_else(|| unsignable("the plan has no metadata.name"))?;
    let requested_by = plan.metadata.annotations.as_ref().and_then(|a| a.get(REQUESTED_BY_ANNOTATION));
    let payload =
        Payload { namespace, name, spec: &plan.spec, expires, nonce, requested_by: requested_by.map(String::as_str) };
    let mut bytes = DOMAIN.to_vec();
    serde_json::to_writer(&mut bytes, &payload).map_err(|e| KeyError::Unsignable(e.to_string()))?;
    Ok(bytes)
}

/// Sign `plan` in place (sets the signature annotation), valid until `now + ttl_seconds`, with
/// a fresh nonce. Sign after every other change: spec, name, namespace and requested-by count.
pub fn sign(plan: &mut PatchPlan, key_name: &str, key: &SigningKey, ttl_seconds: u64) -> Result<(), KeyError> {
    if key_name.is_empty() || key_name.contains(':') {
        return Err(KeyError::KeyName(key_name.to_string()));
    }
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw).map_err(|e| KeyError::Randomness(e.to_string()))?;
    let nonce = hex::encode(raw);
    let ttl = i64::try_from(ttl_seconds).map_err(|_| KeyError::Ttl)?;
    let expires = jiff::Timestamp::now().as_second().saturating_add(ttl);
    let bytes = canonical_bytes(plan, expires, &nonce)?;
    let signature = key.sign(&bytes);
    let value = format!("{PREFIX}{key_name}:{expires}:{nonce}:{}", B64.encode(signature.to_bytes()));
    plan.metadata.annotations.get_or_insert_with(BTreeMap::new).insert(SIGNATURE_ANNOTATION.into(), value);
    Ok(())
}

/// Why a signature check failed; each case has its own message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the plan is unsigned and antibody.yml requires signatures (annotation {SIGNATURE_ANNOTATION})")]
    Unsigned,
    #[error("malformed signature annotation: {0}")]
    Malformed(String),
    #[error(
        "signature in the old v1 form (no expiry, no nonce: it could be replayed forever); re-sign with `antibody sign`"
    )]
    Legacy,
    #[error("signed by unknown key {0:?}: not in safety.trusted_keys")]
    UnknownKey(String),
    #[error(
        "signature by key {0:?} does not match this plan's namespace, name, spec and requested-by (changed after signing?)"
    )]
    Mismatch(String),
    #[error("signature expired at {0} (unix seconds); sign the plan again")]
    Expired(i64),
    #[error("signature claims validity until {0}, beyond safety.signature_max_ttl_seconds from now")]
    TooLong(i64),
}

/// A signature that checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub key_name: String,
    /// Unix seconds.
    pub expires: i64,
    /// Identifies this signature for the replay guard: sha256 of key name and nonce, hex.
    pub fingerprint: String,
}

struct Parsed<'a> {
    key_name: &'a str,
    expires: i64,
    nonce: &'a str,
    signature: Signature,
}

fn parse(plan: &PatchPlan) -> Result<Parsed<'_>, SignatureError> {
    let value =
        plan.metadata.annotations.as_ref().and_then(|a| a.get(SIGNATURE_ANNOTATION)).ok_or(SignatureError::Unsigned)?;
    let Some(rest) = value.strip_prefix(PREFIX) else {
        return Err(if is_v1(value) {
            SignatureError::Legacy
        } else {
            SignatureError::Malformed(format!("expected {PREFIX}<key name>:<expires>:<nonce>:<base64>"))
        });
    };
    let mut parts = rest.splitn(4, ':');
    let (Some(key_name), Some(expires), Some(nonce), Some(encoded)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SignatureError::Malformed(format!("expected {PREFIX}<key name>:<expires>:<nonce>:<base64>")));
    };
    let expires = expires.parse().map_err(|_| SignatureError::Malformed(format!("expiry {expires:?}")))?;
    if nonce.len() != 32 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(SignatureError::Malformed("the nonce must be 32 hex digits".into()));
    }
    let raw = B64.decode(encoded.trim()).map_err(|e| SignatureError::Malformed(format!("base64: {e}")))?;
    let signature =
        Signature::from_slice(&raw).map_err(|_| SignatureError::Malformed("not a 64-byte signature".into()))?;
    Ok(Parsed { key_name, expires, nonce, signature })
}

/// A well-formed v1 signature `ed25519:<key name>:<base64 of 64 bytes>`.
fn is_v1(value: &str) -> bool {
    let mut parts = value.splitn(3, ':');
    let (Some("ed25519"), Some(name), Some(encoded)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    !name.is_empty() && B64.decode(encoded.trim()).is_ok_and(|raw| raw.len() == 64)
}

fn check(plan: &PatchPlan, parsed: &Parsed<'_>, key: &VerifyingKey) -> Result<(), SignatureError> {
    let bytes =
        canonical_bytes(plan, parsed.expires, parsed.nonce).map_err(|e| SignatureError::Malformed(e.to_string()))?;
    key.verify(&bytes, &parsed.signature).map_err(|_| SignatureError::Mismatch(parsed.key_name.to_string()))
}

/// Check the plan's signature against the trusted keys (name → key) at `now` (unix seconds):
/// not expired, and not claiming more than `max_ttl_seconds` of validity from now.
pub fn verify(
    plan: &PatchPlan,
    trusted: &BTreeMap<String, VerifyingKey>,
    now: i64,
    max_ttl_seconds: u64,
) -> Result<Verified, SignatureError> {
    let verified = verify_ignoring_expiry(plan, trusted)?;
    if verified.expires <= now {
        return Err(SignatureError::Expired(verified.expires));
    }
    if verified.expires.saturating_sub(now) > i64::try_from(max_ttl_seconds).unwrap_or(i64::MAX) {
        return Err(SignatureError::TooLong(verified.expires));
    }
    Ok(verified)
}

/// The signature check alone: for a plan already acting, whose signature may expire mid-run.
pub fn verify_ignoring_expiry(
    plan: &PatchPlan,
    trusted: &BTreeMap<String, VerifyingKey>,
) -> Result<Verified, SignatureError> {
    let parsed = parse(plan)?;
    let key = trusted.get(parsed.key_name).ok_or_else(|| SignatureError::UnknownKey(parsed.key_name.to_string()))?;
    check(plan, &parsed, key)?;
    let digest = Sha256::digest(format!("{}\n{}", parsed.key_name, parsed.nonce).as_bytes());
    Ok(Verified { key_name: parsed.key_name.to_string(), expires: parsed.expires, fingerprint: hex::encode(digest) })
}

/// Did `key` sign this plan as it stands (expiry ignored: attribution of past plans)?
pub fn signed_by(plan: &PatchPlan, key: &VerifyingKey) -> bool {
    parse(plan).is_ok_and(|parsed| check(plan, &parsed, key).is_ok())
}

/// A new key pair: (private key base64, public key base64).
pub fn generate() -> Result<(String, String), KeyError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| KeyError::Randomness(e.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    Ok((B64.encode(key.to_bytes()), B64.encode(key.verifying_key().to_bytes())))
}

pub fn parse_public_key(text: &str) -> Result<VerifyingKey, KeyError> {
    let bad = KeyError::BadKey;
    let raw = B64.decode(text.trim()).map_err(|e| bad(format!("public key is not base64: {e}")))?;
    let bytes: [u8; 32] =
        raw.try_into().map_err(|_| bad("public key must be 32 bytes (base64 of a raw ed25519 key)".into()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| bad(format!("invalid ed25519 public key: {e}")))
}

pub fn parse_private_key(text: &str) -> Result<SigningKey, KeyError> {
    let bad = KeyError::BadKey;
    let raw = B64.decode(text.trim()).map_err(|e| bad(format!("private key is not base64: {e}")))?;
    let bytes: [u8; 32] = raw.try_into().map_err(|_| bad("private key must be 32 bytes (base64)".into()))?;
    Ok(SigningKey::from_bytes(&bytes))
}

pub fn read_private_key(path: &Path) -> Result<SigningKey, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|e| KeyError::BadKey(format!("{}: {e}", path.display())))?;
    parse_private_key(&text).map_err(|e| KeyError::BadKey(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{ActionType, PlanAction};

    const NOW: i64 = 2_000_000_000;

    fn plan() -> PatchPlan {
        let mut plan = PatchPlan::new(
            "restart-core",
            PatchPlanSpec { actions: vec![PlanAction::new(ActionType::Restart, "VAEL_Core")], ..Default::default() },
        );
        plan.metadata.namespace = Some("antibody".into());
        plan
    }

    fn keys() -> (SigningKey, BTreeMap<String, VerifyingKey>) {
        let (private, public) = generate().expect("keygen");
        let key = parse_private_key(&private).expect("private key");
        (key, BTreeMap::from([("ci".to_string(), parse_public_key(&public).expect("public key"))]))
    }

    fn now() -> i64 {
        jiff::Timestamp::now().as_second()
    }

    #[test]
    fn sign_then_verify_and_every_way_to_fail() {
        let (key, trusted) = keys();
        let mut signed = plan();
        sign(&mut signed, "ci", &key, 600).expect("sign");
        let verified = verify(&signed, &trusted, now(), 3600).expect("valid");
        assert_eq!(verified.key_name, "ci");
        assert!((verified.expires - now() - 600).abs() <= 2);

        assert_eq!(verify(&plan(), &trusted, now(), 3600), Err(SignatureError::Unsigned));

        let mut tampered = signed.clone();
        tampered.spec.actions[0].target = "Sentinel".into();
        assert_eq!(verify(&tampered, &trusted, now(), 3600), Err(SignatureError::Mismatch("ci".into())));

        let mut dry = signed.clone();
        dry.spec.dry_run = true;
        assert_eq!(verify(&dry, &trusted, now(), 3600), Err(SignatureError::Mismatch("ci".into())), "any field");

        let mut renamed = signed.clone();
        renamed.metadata.name = Some("other-plan".into());
        assert_eq!(verify(&renamed, &trusted, now(), 3600), Err(SignatureError::Mismatch("ci".into())));
        let mut moved = signed.clone();
        moved.metadata.namespace = Some("elsewhere".into());
        assert_eq!(verify(&moved, &trusted, now(), 3600), Err(SignatureError::Mismatch("ci".into())));

        let mut attributed = signed.clone();
        attributed
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(REQUESTED_BY_ANNOTATION.into(), "ops".into());
        assert_eq!(
            verify(&attributed, &trusted, now(), 3600),
            Err(SignatureError::Mismatch("ci".into())),
            "requested-by is covered"
        );

        // The expiry and nonce are signed: editing either breaks the signature.
        let value = signed.metadata.annotations.as_ref().and_then(|a| a.get(SIGNATURE_ANNOTATION)).cloned();
        let value = value.expect("annotation");
        let parts: Vec<&str> = value.split(':').collect();
        let later = format!("v2:ed25519:ci:{}:{}:{}", NOW, parts[4], parts[5]);
        let renonced = format!("v2:ed25519:ci:{}:{}:{}", parts[3], "0".repeat(32), parts[5]);
        for forged in [later, renonced] {
            let mut copy = signed.clone();
            copy.metadata.annotations = Some([(SIGNATURE_ANNOTATION.to_string(), forged)].into());
            assert_eq!(verify(&copy, &trusted, now(), u64::MAX), Err(SignatureError::Mismatch("ci".into())));
        }

        let (other, _) = keys();
        let mut wrong_key = plan();
        sign(&mut wrong_key, "ci", &other, 600).expect("sign");
        assert_eq!(verify(&wrong_key, &trusted, now(), 3600), Err(SignatureError::Mismatch("ci".into())));

        let mut unknown = plan();
        sign(&mut unknown, "intruder", &key, 600).expect("sign");
        assert_eq!(verify(&unknown, &trusted, now(), 3600), Err(SignatureError::UnknownKey("intruder".into())));

        for bad in ["rsa:ci:AAAA", "v2:ed25519:ci", "v2:ed25519:ci:x:00:AAAA", "v2:ed25519:ci:1:short:AAAA"] {
            let mut malformed = plan();
            malformed.metadata.annotations = Some([(SIGNATURE_ANNOTATION.to_string(), bad.to_string())].into());
            assert!(matches!(verify(&malformed, &trusted, now(), 3600), Err(SignatureError::Malformed(_))), "{bad}");
        }
        let mut legacy = plan();
        let v1 = format!("ed25519:ci:{}", B64.encode([7u8; 64]));
        legacy.metadata.annotations = Some([(SIGNATURE_ANNOTATION.to_string(), v1)].into());
        assert_eq!(verify(&legacy, &trusted, now(), 3600), Err(SignatureError::Legacy));
    }

    #[test]
    fn expiry_and_ttl_cap() {
        let (key, trusted) = keys();
        let mut signed = plan();
        sign(&mut signed, "ci", &key, 600).expect("sign");
        let expires = verify(&signed, &trusted, now(), 3600).expect("valid").expires;
        assert_eq!(verify(&signed, &trusted, expires, 3600), Err(SignatureError::Expired(expires)));
        assert_eq!(verify(&signed, &trusted, expires - 700, 600), Err(SignatureError::TooLong(expires)));
        assert!(verify(&signed, &trusted, expires - 1, 3600).is_ok());
    }

    #[test]
    fn each_signature_has_its_own_fingerprint() {
        let (key, trusted) = keys();
        let (mut a, mut b) = (plan(), plan());
        sign(&mut a, "ci", &key, 600).expect("sign");
        sign(&mut b, "ci", &key, 600).expect("sign");
        let fa = verify(&a, &trusted, now(), 3600).expect("valid").fingerprint;
        let fb = verify(&b, &trusted, now(), 3600).expect("valid").fingerprint;
        assert_ne!(fa, fb, "a fresh nonce per signature");
        assert_eq!(fa.len(), 64);
    }

    #[test]
    fn signed_by_ignores_expiry_but_not_edits() {
        let (key, trusted) = keys();
        let mut signed = plan();
        sign(&mut signed, "ci", &key, 1).expect("sign");
        let public = trusted["ci"];
        assert!(signed_by(&signed, &public));
        signed
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(REQUESTED_BY_ANNOTATION.into(), "x".into());
        assert!(!signed_by(&signed, &public));
        assert!(!signed_by(&plan(), &public));
    }

    #[test]
    fn canonical_form_ignores_how_the_yaml_was_written() {
        let a: PatchPlanSpec =
            serde_yaml::from_str("actions: [{type: restart, target: VAEL_Core}]\ndryRun: false").expect("yaml");
        let b: PatchPlanSpec =
            serde_yaml::from_str("{\"actions\": [{\"target\": \"VAEL_Core\", \"type\": \"restart\"}]}").expect("json");
        let (mut pa, mut pb) = (plan(), plan());
        pa.spec = a;
        pb.spec = b;
        assert_eq!(canonical_bytes(&pa, 1, "n"), canonical_bytes(&pb, 1, "n"));
    }

    #[test]
    fn bad_keys_are_explained() {
        assert!(parse_public_key("not base64!").is_err());
        assert!(parse_public_key(&B64.encode([1u8; 31])).expect_err("short").to_string().contains("32 bytes"));
        assert!(parse_private_key("").is_err());
    }
}
