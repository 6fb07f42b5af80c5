//! `head.json`: a signed checkpoint naming a test's latest record (its sequence and the
//! sha256 of its file), so that removing the latest record, or rolling the chain back,
//! needs a trusted key. It is a DSSE envelope like a record, of its own payload type.

use serde::{Deserialize, Serialize};

use super::dsse::{self, Envelope, HEAD_PAYLOAD_TYPE};
use super::keys::TrustedKey;
use crate::fsutil::{is_sha256_hex, short};

/// The `_type` of a head's body.
pub const HEAD_TYPE: &str = "https://pv.dev/ledger-head/v1";

/// What a head says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Always [`HEAD_TYPE`].
    #[serde(rename = "_type")]
    pub type_: String,
    /// The contract.
    pub contract_id: String,
    /// The test.
    pub test_id: String,
    /// The latest record's sequence number.
    pub sequence: u64,
    /// sha256 of the latest record's file.
    pub record_sha256: String,
    /// Who signed the head (a key name).
    pub signer: String,
}

/// The unsigned head earlier versions of pv wrote.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyHead {
    sequence: u64,
    sha256: String,
}

/// A head as found on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeadState {
    /// No `head.json`.
    Missing,
    /// A signed checkpoint by a trusted key.
    Signed(Checkpoint),
    /// The unsigned `{sequence, sha256}` of earlier versions: names a record, proves nothing.
    Unsigned {
        /// Its sequence.
        sequence: u64,
        /// Its sha256.
        sha256: String,
    },
    /// Unreadable, malformed, untrusted or badly signed: why.
    Bad(String),
}

/// Signs a checkpoint for record `sequence` (file sha256 `record_sha256`).
pub fn sign(
    contract_id: &str,
    test_id: &str,
    sequence: u64,
    record_sha256: &str,
    signer: &str,
    key: &ed25519_dalek::SigningKey,
) -> Vec<u8> {
    let body = Checkpoint {
        type_: HEAD_TYPE.into(),
        contract_id: contract_id.into(),
        test_id: test_id.into(),
        sequence,
        record_sha256: record_sha256.into(),
        signer: signer.into(),
    };
    let env = dsse::sign_typed(
        HEAD_PAYLOAD_TYPE,
        &serde_json::to_vec(&body).expect("a checkpoint serialises"),
        key,
    );
    (serde_json::to_string_pretty(&env).expect("an envelope serialises") + "\n").into_bytes()
}

/// Reads a head's bytes: checks the signature against `trusted`, the names against the
/// directory it was found in, and the digest's form. Any bytes give a state, never a panic.
pub fn parse(bytes: &[u8], contract_id: &str, test_id: &str, trusted: &[TrustedKey]) -> HeadState {
    let Ok(env) = serde_json::from_slice::<Envelope>(bytes) else {
        return match serde_json::from_slice::<LegacyHead>(bytes) {
            Ok(h) if is_sha256_hex(&h.sha256) => HeadState::Unsigned {
                sequence: h.sequence,
                sha256: h.sha256,
            },
            Ok(h) => HeadState::Bad(format!(
                "head.json's sha256 {:?} is not a lower-case hex sha256",
                short(&h.sha256, 80)
            )),
            Err(e) => HeadState::Bad(format!(
                "head.json is neither a signed head nor a legacy one (line {} column {}): {e}",
                e.line(),
                e.column()
            )),
        };
    };
    let (body, keyid) =
        match dsse::verify_typed(&env, HEAD_PAYLOAD_TYPE, trusted.iter().map(|k| &k.key)) {
            Ok(v) => v,
            Err(e) => return HeadState::Bad(format!("head.json: {e}")),
        };
    let c: Checkpoint = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return HeadState::Bad(format!("head.json's signed body is not a checkpoint: {e}"));
        }
    };
    let signer = trusted
        .iter()
        .find(|k| k.id == keyid)
        .map(|k| k.name.as_str());
    if c.type_ != HEAD_TYPE
        || c.contract_id != contract_id
        || c.test_id != test_id
        || !is_sha256_hex(&c.record_sha256)
        || signer != Some(c.signer.as_str())
    {
        return HeadState::Bad(format!(
            "head.json is a checkpoint of {}/{} signed as {:?} (by key {:?}), not a valid head of {contract_id}/{test_id}",
            short(&c.contract_id, 80),
            short(&c.test_id, 80),
            short(&c.signer, 64),
            signer
        ));
    }
    HeadState::Signed(c)
}
