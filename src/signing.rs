//! Signed plans: ed25519 over a canonical form of (namespace, name, spec).
//!
//! The signature travels in the annotation `antibody.vael.io/signature` as
//! `ed25519:<key name>:<base64 signature>`. The spec is immutable, so a valid signature stays
//! valid for the life of the plan; binding namespace and name stops a signature being replayed
//! onto another plan. Keys are raw 32-byte ed25519 keys in base64 (one line).

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::Serialize;

use crate::plan::{PatchPlan, PatchPlanSpec};

pub const SIGNATURE_ANNOTATION: &str = "antibody.vael.io/signature";
const DOMAIN: &[u8] = b"antibody.vael.io/PatchPlan/v1\n";

#[derive(Serialize)]
struct Payload<'a> {
    namespace: &'a str,
    name: &'a str,
    spec: &'a PatchPlanSpec,
}

/// The exact bytes signed: a domain tag, then compact JSON of the typed (namespace, name, spec).
/// Typed serialisation makes it canonical: field order is the struct's, defaults are omitted
/// the same way the API server stores them.
pub fn canonical_bytes(namespace: &str, name: &str, spec: &PatchPlanSpec) -> Result<Vec<u8>, String> {
    let mut bytes = DOMAIN.to_vec();
    serde_json::to_writer(&mut bytes, &Payload { namespace, name, spec }).map_err(|e| e.to_string())?;
    Ok(bytes)
}

fn plan_identity(plan: &PatchPlan) -> Result<(&str, &str), String> {
    let namespace =
        plan.metadata.namespace.as_deref().ok_or("the plan has no metadata.namespace: signatures bind it")?;
    let name = plan.metadata.name.as_deref().ok_or("the plan has no metadata.name")?;
    Ok((namespace, name))
}

/// Sign `plan` in place (sets the signature annotation).
pub fn sign(plan: &mut PatchPlan, key_name: &str, key: &SigningKey) -> Result<(), String> {
    if key_name.is_empty() || key_name.contains(':') {
        return Err(format!("key name {key_name:?} must be non-empty and hold no ':'"));
    }
    let (namespace, name) = plan_identity(plan)?;
    let bytes = canonical_bytes(namespace, name, &plan.spec)?;
    let signature = key.sign(&bytes);
    let value = format!("ed25519:{key_name}:{}", B64.encode(signature.to_bytes()));
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
    #[error("signed by unknown key {0:?}: not in safety.trusted_keys")]
    UnknownKey(String),
    #[error("signature by key {0:?} does not match this plan's namespace, name and spec (changed after signing?)")]
    Mismatch(String),
}

/// Check the plan's signature against the trusted keys (name → key).
pub fn verify(plan: &PatchPlan, trusted: &BTreeMap<String, VerifyingKey>) -> Result<String, SignatureError> {
    let value =
        plan.metadata.annotations.as_ref().and_then(|a| a.get(SIGNATURE_ANNOTATION)).ok_or(SignatureError::Unsigned)?;
    let mut parts = value.splitn(3, ':');
    let (Some("ed25519"), Some(key_name), Some(encoded)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(SignatureError::Malformed("expected ed25519:<key name>:<base64>".into()));
    };
    let raw = B64.decode(encoded.trim()).map_err(|e| SignatureError::Malformed(format!("base64: {e}")))?;
    let signature =
        Signature::from_slice(&raw).map_err(|_| SignatureError::Malformed("not a 64-byte signature".into()))?;
    let key = trusted.get(key_name).ok_or_else(|| SignatureError::UnknownKey(key_name.to_string()))?;
    let (namespace, name) = plan_identity(plan).map_err(SignatureError::Malformed)?;
    let bytes = canonical_bytes(namespace, name, &plan.spec).map_err(SignatureError::Malformed)?;
    key.verify(&bytes, &signature).map_err(|_| SignatureError::Mismatch(key_name.to_string()))?;
    Ok(key_name.to_string())
}

/// A new key pair: (private key base64, public key base64).
pub fn generate() -> Result<(String, String), String> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| format!("no randomness: {e}"))?;
    let key = SigningKey::from_bytes(&seed);
    Ok((B64.encode(key.to_bytes()), B64.encode(key.verifying_key().to_bytes())))
}

pub fn parse_public_key(text: &str) -> Result<VerifyingKey, String> {
    let raw = B64.decode(text.trim()).map_err(|e| format!("public key is not base64: {e}"))?;
    let bytes: [u8; 32] =
        raw.try_into().map_err(|_| "public key must be 32 bytes (base64 of a raw ed25519 key)".to_string())?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| format!("invalid ed25519 public key: {e}"))
}

pub fn parse_private_key(text: &str) -> Result<SigningKey, String> {
    let raw = B64.decode(text.trim()).map_err(|e| format!("private key is not base64: {e}"))?;
    let bytes: [u8; 32] = raw.try_into().map_err(|_| "private key must be 32 bytes (base64)".to_string())?;
    Ok(SigningKey::from_bytes(&bytes))
}

pub fn read_private_key(path: &Path) -> Result<SigningKey, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_private_key(&text).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{ActionType, PlanAction};

    fn plan() -> PatchPlan {
        let mut plan = PatchPlan::new(
            "restart-core",
            PatchPlanSpec { actions: vec![PlanAction::new(ActionType::Restart, "VAEL_Core")], ..Default::default() },
        );
        plan.metadata.namespace = Some("antibody".into());
        plan
    }

    #[test]
    fn sign_then_verify_and_every_way_to_fail() {
        let (private, public) = generate().expect("keygen");
        let key = parse_private_key(&private).expect("private key");
        let trusted = BTreeMap::from([("ci".to_string(), parse_public_key(&public).expect("public key"))]);
        let mut signed = plan();
        sign(&mut signed, "ci", &key).expect("sign");
        assert_eq!(verify(&signed, &trusted), Ok("ci".to_string()));

        assert_eq!(verify(&plan(), &trusted), Err(SignatureError::Unsigned));

        let mut tampered = signed.clone();
        tampered.spec.actions[0].target = "Sentinel".into();
        assert_eq!(verify(&tampered, &trusted), Err(SignatureError::Mismatch("ci".into())));

        let mut dry = signed.clone();
        dry.spec.dry_run = true;
        assert_eq!(verify(&dry, &trusted), Err(SignatureError::Mismatch("ci".into())), "any field counts");

        let mut replayed = signed.clone();
        replayed.metadata.name = Some("other-plan".into());
        assert_eq!(verify(&replayed, &trusted), Err(SignatureError::Mismatch("ci".into())), "bound to the name");
        let mut moved = signed.clone();
        moved.metadata.namespace = Some("elsewhere".into());
        assert_eq!(verify(&moved, &trusted), Err(SignatureError::Mismatch("ci".into())), "bound to the namespace");

        let (other_private, _) = generate().expect("keygen");
        let mut wrong_key = plan();
        sign(&mut wrong_key, "ci", &parse_private_key(&other_private).expect("key")).expect("sign");
        assert_eq!(verify(&wrong_key, &trusted), Err(SignatureError::Mismatch("ci".into())));

        let mut unknown = plan();
        sign(&mut unknown, "intruder", &key).expect("sign");
        assert_eq!(verify(&unknown, &trusted), Err(SignatureError::UnknownKey("intruder".into())));

        for bad in ["rsa:ci:AAAA", "ed25519:ci", "ed25519:ci:!!!", "ed25519:ci:AAAA"] {
            let mut malformed = plan();
            malformed.metadata.annotations = Some([(SIGNATURE_ANNOTATION.to_string(), bad.to_string())].into());
            assert!(matches!(verify(&malformed, &trusted), Err(SignatureError::Malformed(_))), "{bad}");
        }
    }

    #[test]
    fn canonical_form_ignores_how_the_yaml_was_written() {
        let a: PatchPlanSpec =
            serde_yaml::from_str("actions: [{type: restart, target: VAEL_Core}]\ndryRun: false").expect("yaml");
        let b: PatchPlanSpec =
            serde_yaml::from_str("{\"actions\": [{\"target\": \"VAEL_Core\", \"type\": \"restart\"}]}").expect("json");
        assert_eq!(canonical_bytes("ns", "n", &a), canonical_bytes("ns", "n", &b));
    }

    #[test]
    fn bad_keys_are_explained() {
        assert!(parse_public_key("not base64!").is_err());
        assert!(parse_public_key(&B64.encode([1u8; 31])).expect_err("short").contains("32 bytes"));
        assert!(parse_private_key("").is_err());
    }
}
