//! DSSE v1 envelopes signed with Ed25519: the standard wrapper, so any DSSE
//! implementation can check a pv record without pv.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The payload type of an in-toto statement.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// A DSSE envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Envelope {
    /// Base64 of the serialized body.
    pub payload: String,
    /// What the body is.
    pub payload_type: String,
    /// Signatures over the PAE of type and body.
    pub signatures: Vec<EnvelopeSignature>,
}

/// One signature in an envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeSignature {
    /// Which key signed (hex sha256 of the raw public key).
    pub keyid: String,
    /// Base64 of the Ed25519 signature.
    pub sig: String,
}

/// DSSE v1 pre-authentication encoding:
/// `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, lengths in ASCII decimal bytes.
pub fn pae(payload_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// The key id pv uses: hex sha256 of the 32-byte public key.
pub fn key_id(key: &VerifyingKey) -> String {
    super::sha256_hex(key.as_bytes())
}

/// The payload type of a signed ledger head (checkpoint).
pub const HEAD_PAYLOAD_TYPE: &str = "application/vnd.pv.ledger-head+json";

/// Wraps an in-toto statement `body` in an envelope signed by `key`.
pub fn sign(body: &[u8], key: &SigningKey) -> Envelope {
    sign_typed(PAYLOAD_TYPE, body, key)
}

/// Wraps `body` of type `payload_type` in an envelope signed by `key`.
pub fn sign_typed(payload_type: &str, body: &[u8], key: &SigningKey) -> Envelope {
    let sig = key.sign(&pae(payload_type, body));
    Envelope {
        payload: STANDARD.encode(body),
        payload_type: payload_type.into(),
        signatures: vec![EnvelopeSignature {
            keyid: key_id(&key.verifying_key()),
            sig: STANDARD.encode(sig.to_bytes()),
        }],
    }
}

/// Why an envelope did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DsseError {
    /// The payload type is not the one expected.
    #[error("payloadType is {0:?}, expected {1:?}")]
    PayloadType(String, String),
    /// Base64 that does not decode.
    #[error("{field} is not valid base64")]
    Base64 {
        /// Which field.
        field: &'static str,
    },
    /// A signature that decodes to the wrong number of bytes.
    #[error("sig decodes to {0} bytes; an Ed25519 signature is 64")]
    SignatureLength(usize),
    /// Not exactly one signature.
    #[error("expected exactly one signature, found {0}")]
    SignatureCount(usize),
    /// The signer is not among the trusted keys.
    #[error("signed by key {}, which is not a trusted key (untrusted)", crate::fsutil::short(.0, 64))]
    Untrusted(String),
    /// The signature does not check.
    #[error("signature does not verify against key {}", crate::fsutil::short(.0, 64))]
    BadSignature(String),
}

/// Checks an in-toto envelope's signature against the trusted keys and returns the body
/// and the signer's key id.
pub fn verify<'k>(
    env: &Envelope,
    trusted: impl IntoIterator<Item = &'k VerifyingKey>,
) -> Result<(Vec<u8>, String), DsseError> {
    verify_typed(env, PAYLOAD_TYPE, trusted)
}

/// Checks the envelope is of `payload_type` and signed by one of the trusted keys; returns
/// the body and the signer's key id.
pub fn verify_typed<'k>(
    env: &Envelope,
    payload_type: &str,
    trusted: impl IntoIterator<Item = &'k VerifyingKey>,
) -> Result<(Vec<u8>, String), DsseError> {
    if env.payload_type != payload_type {
        return Err(DsseError::PayloadType(
            env.payload_type.clone(),
            payload_type.into(),
        ));
    }
    let body = STANDARD
        .decode(&env.payload)
        .map_err(|_| DsseError::Base64 { field: "payload" })?;
    let [s] = env.signatures.as_slice() else {
        return Err(DsseError::SignatureCount(env.signatures.len()));
    };
    let key = trusted
        .into_iter()
        .find(|k| key_id(k) == s.keyid)
        .ok_or_else(|| DsseError::Untrusted(s.keyid.clone()))?;
    let sig = STANDARD
        .decode(&s.sig)
        .map_err(|_| DsseError::Base64 { field: "sig" })?;
    let sig: [u8; 64] = sig
        .as_slice()
        .try_into()
        .map_err(|_| DsseError::SignatureLength(sig.len()))?;
    key.verify_strict(&pae(&env.payload_type, &body), &Signature::from_bytes(&sig))
        .map_err(|_| DsseError::BadSignature(s.keyid.clone()))?;
    Ok((body, s.keyid.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_dsse_spec_example() {
        // The worked example of the DSSE v1 protocol description.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn sign_then_verify_and_reject_others() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let other = SigningKey::from_bytes(&[8u8; 32]).verifying_key();
        let env = sign(b"{\"a\":1}", &key);
        let (body, _) = verify(&env, [&key.verifying_key()]).unwrap();
        assert_eq!(body, b"{\"a\":1}");
        assert!(matches!(
            verify(&env, [&other]),
            Err(DsseError::Untrusted(_))
        ));
        let mut bad = env.clone();
        bad.payload = STANDARD.encode(b"{\"a\":2}");
        assert!(matches!(
            verify(&bad, [&key.verifying_key()]),
            Err(DsseError::BadSignature(_))
        ));
    }
}
