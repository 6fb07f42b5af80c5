//! Signing keys: private keys live outside the repository (mode 0600), public keys in
//! `keys/NAME.pub`, and the keys in `keys/` are the only trusted signers.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{SigningKey, VerifyingKey};

use super::EvidenceError;

const PRIVATE_HEADER: &str = "pv-ed25519-private-key v1";

/// Where private keys are kept: `$PV_KEY_DIR`, else `$XDG_CONFIG_HOME/pv/keys`, else
/// `~/.config/pv/keys`.
pub fn private_key_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PV_KEY_DIR") {
        return PathBuf::from(d);
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    config.join("pv").join("keys")
}

/// The default key name: `$PV_KEY_NAME`, else `$USER`, else `pv`.
pub fn default_key_name() -> String {
    std::env::var("PV_KEY_NAME")
        .or_else(|_| std::env::var("USER"))
        .ok()
        .filter(|n| is_valid_name(n))
        .unwrap_or_else(|| "pv".into())
}

/// Key names are file names: letters, digits, `-`, `_`, `.` (not leading).
pub fn is_valid_name(n: &str) -> bool {
    !n.is_empty()
        && !n.starts_with('.')
        && n.len() <= 64
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// The private key file of key `name`.
pub fn private_key_path(name: &str) -> PathBuf {
    private_key_dir().join(format!("{name}.key"))
}

/// Makes a key pair: the private key at `private` (created, never overwritten, mode 0600)
/// and the public key at `keys_dir/NAME.pub`.
pub fn keygen(name: &str, private: &Path, keys_dir: &Path) -> Result<PathBuf, EvidenceError> {
    if !is_valid_name(name) {
        return Err(EvidenceError::Usage(format!(
            "key name {name:?}: use letters, digits, '-', '_' or '.'"
        )));
    }
    let public = keys_dir.join(format!("{name}.pub"));
    if public.exists() {
        return Err(EvidenceError::Usage(format!(
            "{} exists; choose another --name",
            public.display()
        )));
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| EvidenceError::Usage(format!("random: {e}")))?;
    let key = SigningKey::from_bytes(&seed);
    if let Some(dir) = private.parent() {
        std::fs::create_dir_all(dir).map_err(|e| EvidenceError::io(dir, e))?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(private)
        .map_err(|e| EvidenceError::io(private, e))?;
    f.write_all(format!("{PRIVATE_HEADER}\n{}\n", STANDARD.encode(seed)).as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| EvidenceError::io(private, e))?;
    std::fs::create_dir_all(keys_dir).map_err(|e| EvidenceError::io(keys_dir, e))?;
    let line = format!(
        "ed25519 {} {name}\n",
        STANDARD.encode(key.verifying_key().as_bytes())
    );
    crate::fsutil::atomic_write(&public, line.as_bytes())
        .map_err(|e| EvidenceError::io(&public, e))?;
    Ok(public)
}

/// Key files are one short line.
fn read_small(path: &Path) -> Result<String, EvidenceError> {
    let bytes = crate::fsutil::read_bounded(path, 4096).map_err(|e| EvidenceError::io(path, e))?;
    String::from_utf8(bytes).map_err(|_| EvidenceError::Malformed {
        file: path.display().to_string(),
        at: "line 1".into(),
        reason: "not UTF-8 text".into(),
    })
}

/// Reads a private key file.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, EvidenceError> {
    let text = read_small(path)?;
    let mut lines = text.lines();
    let bad = |line: usize, why: &str| EvidenceError::Malformed {
        file: path.display().to_string(),
        at: format!("line {line}"),
        reason: why.into(),
    };
    if lines.next() != Some(PRIVATE_HEADER) {
        return Err(bad(1, "not a pv private key (bad header)"));
    }
    let seed: [u8; 32] = lines
        .next()
        .and_then(|l| STANDARD.decode(l.trim()).ok())
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad(2, "expected base64 of 32 bytes"))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// A trusted public key and the file it came from.
#[derive(Clone, Debug)]
pub struct TrustedKey {
    /// The key's name (file stem).
    pub name: String,
    /// The key.
    pub key: VerifyingKey,
    /// Its id (hex sha256 of the raw key).
    pub id: String,
}

/// Every `*.pub` in `keys_dir` (none if the directory does not exist).
pub fn trusted_keys(keys_dir: &Path) -> Result<Vec<TrustedKey>, EvidenceError> {
    let Ok(entries) = std::fs::read_dir(keys_dir) else {
        return Ok(Vec::new());
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pub"))
        .collect();
    paths.sort();
    paths.iter().map(|p| read_public(p)).collect()
}

fn read_public(path: &Path) -> Result<TrustedKey, EvidenceError> {
    let text = read_small(path)?;
    let bad = |why: &str| EvidenceError::Malformed {
        file: path.display().to_string(),
        at: "line 1".into(),
        reason: why.into(),
    };
    let mut parts = text.lines().next().unwrap_or("").split_whitespace();
    if parts.next() != Some("ed25519") {
        return Err(bad("expected `ed25519 <base64 key> <name>`"));
    }
    let bytes: [u8; 32] = parts
        .next()
        .and_then(|b| STANDARD.decode(b).ok())
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("the key is not base64 of 32 bytes"))?;
    let key = VerifyingKey::from_bytes(&bytes).map_err(|_| bad("not an Ed25519 point"))?;
    Ok(TrustedKey {
        name: path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        id: super::dsse::key_id(&key),
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_public_key_names_its_file() {
        let dir = std::env::temp_dir().join(format!("pv-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("bad.pub"), "ed25519 not-base64 bad\n").unwrap();
        let e = trusted_keys(&dir).unwrap_err().to_string();
        assert!(e.contains("bad.pub") && e.contains("line 1"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn keygen_never_overwrites_and_round_trips() {
        let dir = std::env::temp_dir().join(format!("pv-keygen-{}", std::process::id()));
        let private = dir.join("private/k.key");
        let public = keygen("k", &private, &dir.join("keys")).unwrap();
        let key = load_signing_key(&private).unwrap();
        let trusted = trusted_keys(&dir.join("keys")).unwrap();
        assert_eq!(trusted[0].key, key.verifying_key());
        assert_eq!(trusted[0].name, "k");
        assert!(public.ends_with("keys/k.pub"));
        assert!(keygen("k", &private, &dir.join("keys")).is_err());
        assert!(keygen("../evil", &dir.join("e.key"), &dir.join("keys")).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
