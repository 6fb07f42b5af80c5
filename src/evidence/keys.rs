//! Signing keys. Private keys live outside the repository (PKCS#8 PEM, mode 0600); public
//! keys live in `keys/NAME.pub` as PEM SubjectPublicKeyInfo, the form OpenSSL, cosign and
//! securesystemslib read (an OpenSSH `ssh-ed25519 AAAA… comment` line is accepted too).
//! The trusted signers are the keys of one tree: the working tree's `keys/`, or the base
//! branch's, read from git (`pv gate --base`).

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};

use super::EvidenceError;

/// The header of the private-key files pv wrote before it used PKCS#8 (still read).
const LEGACY_PRIVATE_HEADER: &str = "pv-ed25519-private-key v1";

/// Largest key file read, in bytes.
const MAX_KEY_BYTES: u64 = 16 << 10;

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

/// The public half of `key` as PEM SubjectPublicKeyInfo.
pub fn public_pem(key: &VerifyingKey) -> String {
    key.to_public_key_pem(LineEnding::LF)
        .expect("an Ed25519 key encodes as SPKI")
}

/// A fresh random signing key.
pub fn random_key() -> Result<SigningKey, EvidenceError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| EvidenceError::Usage(format!("random: {e}")))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Writes `key`'s public half to `keys_dir/NAME.pub` (PEM), never over an existing file.
pub fn publish(name: &str, key: &VerifyingKey, keys_dir: &Path) -> Result<PathBuf, EvidenceError> {
    let public = keys_dir.join(format!("{name}.pub"));
    if std::fs::symlink_metadata(&public).is_ok() {
        return Err(EvidenceError::Usage(format!(
            "{} exists; choose another --name",
            public.display()
        )));
    }
    std::fs::create_dir_all(keys_dir).map_err(|e| EvidenceError::io(keys_dir, e))?;
    crate::fsutil::atomic_write(&public, public_pem(key).as_bytes())
        .map_err(|e| EvidenceError::io(&public, e))?;
    Ok(public)
}

/// Makes a key pair: the private key at `private` (PKCS#8 PEM, created, never overwritten,
/// mode 0600) and the public key at `keys_dir/NAME.pub` (PEM SPKI).
pub fn keygen(name: &str, private: &Path, keys_dir: &Path) -> Result<PathBuf, EvidenceError> {
    if !is_valid_name(name) {
        return Err(EvidenceError::Usage(format!(
            "key name {name:?}: use letters, digits, '-', '_' or '.'"
        )));
    }
    if std::fs::symlink_metadata(keys_dir.join(format!("{name}.pub"))).is_ok() {
        return Err(EvidenceError::Usage(format!(
            "{} exists; choose another --name",
            keys_dir.join(format!("{name}.pub")).display()
        )));
    }
    let key = random_key()?;
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
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| EvidenceError::Usage(format!("encoding the private key: {e}")))?;
    f.write_all(pem.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| EvidenceError::io(private, e))?;
    publish(name, &key.verifying_key(), keys_dir)
}

fn read_text(path: &Path) -> Result<String, EvidenceError> {
    let bytes =
        crate::fsutil::read_bounded(path, MAX_KEY_BYTES).map_err(|e| EvidenceError::io(path, e))?;
    String::from_utf8(bytes).map_err(|e| EvidenceError::Malformed {
        file: path.display().to_string(),
        at: format!("byte {}", e.utf8_error().valid_up_to()),
        reason: "not UTF-8 text".into(),
    })
}

/// Reads a private key file: PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), or the format
/// earlier versions of pv wrote.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, EvidenceError> {
    let text = read_text(path)?;
    let bad = |at: &str, why: &str| EvidenceError::Malformed {
        file: path.display().to_string(),
        at: at.into(),
        reason: why.into(),
    };
    if text.trim_start().starts_with("-----BEGIN PRIVATE KEY-----") {
        return SigningKey::from_pkcs8_pem(&text)
            .map_err(|e| bad("line 1", &format!("not an Ed25519 PKCS#8 private key: {e}")));
    }
    let mut lines = text.lines();
    if lines.next() != Some(LEGACY_PRIVATE_HEADER) {
        return Err(bad(
            "line 1",
            "not a private key (expected PKCS#8 PEM: -----BEGIN PRIVATE KEY-----)",
        ));
    }
    let seed: [u8; 32] = lines
        .next()
        .and_then(|l| STANDARD.decode(l.trim()).ok())
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("line 2", "expected base64 of 32 bytes"))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// A trusted public key and where it came from.
#[derive(Clone, Debug)]
pub struct TrustedKey {
    /// The key's name (file stem).
    pub name: String,
    /// The key.
    pub key: VerifyingKey,
    /// Its id (hex sha256 of the raw 32-byte key).
    pub id: String,
}

/// Parses a public key file's text: PEM SubjectPublicKeyInfo, or one OpenSSH
/// `ssh-ed25519 <base64> [comment]` line. `file` names it in errors.
pub fn parse_public(text: &str, file: &str) -> Result<VerifyingKey, EvidenceError> {
    let bad = |at: &str, why: String| EvidenceError::Malformed {
        file: file.to_string(),
        at: at.into(),
        reason: why,
    };
    let trimmed = text.trim_start();
    if trimmed.starts_with("-----BEGIN PUBLIC KEY-----") {
        return VerifyingKey::from_public_key_pem(text).map_err(|e| {
            bad(
                "line 1",
                format!("not an Ed25519 SubjectPublicKeyInfo PEM: {e}"),
            )
        });
    }
    if trimmed.starts_with("ssh-ed25519") {
        return parse_openssh(trimmed.lines().next().unwrap_or(""))
            .map_err(|why| bad("line 1", why));
    }
    Err(bad(
        "line 1",
        "expected a PEM public key (-----BEGIN PUBLIC KEY-----) or an `ssh-ed25519 AAAA…` line"
            .into(),
    ))
}

/// The key of an OpenSSH public key line. Its base64 blob is the SSH wire encoding
/// (RFC 4253 §6.6, RFC 8709): a length-prefixed `ssh-ed25519`, then the length-prefixed
/// 32-byte key; both lengths are checked against what remains, and nothing may follow.
fn parse_openssh(line: &str) -> Result<VerifyingKey, String> {
    let mut parts = line.split_whitespace();
    let (Some("ssh-ed25519"), Some(b64)) = (parts.next(), parts.next()) else {
        return Err("expected `ssh-ed25519 <base64> [comment]`".into());
    };
    let blob = STANDARD
        .decode(b64)
        .map_err(|_| "the key blob is not base64".to_string())?;
    let mut rest = blob.as_slice();
    let mut field = || -> Result<&[u8], String> {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or("the key blob ends inside a length")?;
        let len = u32::from_be_bytes(*len) as usize;
        if len > tail.len() {
            return Err("a length in the key blob runs past its end".into());
        }
        let (value, after) = tail.split_at(len);
        rest = after;
        Ok(value)
    };
    if field()? != b"ssh-ed25519" {
        return Err("the key blob is not an ssh-ed25519 key".into());
    }
    let key: [u8; 32] = field()?
        .try_into()
        .map_err(|_| "an ssh-ed25519 key is 32 bytes".to_string())?;
    if !rest.is_empty() {
        return Err("bytes follow the key in the blob".into());
    }
    VerifyingKey::from_bytes(&key).map_err(|_| "not an Ed25519 point".into())
}

fn trusted(name: &str, text: &str, file: &str) -> Result<TrustedKey, EvidenceError> {
    let key = parse_public(text, file)?;
    Ok(TrustedKey {
        name: name.to_string(),
        id: super::dsse::key_id(&key),
        key,
    })
}

/// Every `*.pub` in `keys_dir` (none if the directory does not exist). Anything named
/// `*.pub` that is not a regular file is an error, found without opening it.
pub fn trusted_keys(keys_dir: &Path) -> Result<Vec<TrustedKey>, EvidenceError> {
    let Ok(entries) = std::fs::read_dir(keys_dir) else {
        return Ok(Vec::new());
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pub"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let name = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            trusted(&name, &read_text(p)?, &p.display().to_string())
        })
        .collect()
}

/// The `keys/*.pub` files of a commit (see [`crate::gitrepo::snapshot`]), as trusted keys.
pub fn trusted_keys_at(snap: &crate::gitrepo::Snapshot) -> Result<Vec<TrustedKey>, EvidenceError> {
    snap.under("keys")
        .filter(|(p, _)| p.ends_with(".pub") && !p["keys/".len()..].contains('/'))
        .map(|(p, bytes)| {
            let file = format!("{p} (at {})", snap.rev);
            let text = std::str::from_utf8(bytes).map_err(|_| EvidenceError::Malformed {
                file: file.clone(),
                at: "byte 0".into(),
                reason: "not UTF-8 text".into(),
            })?;
            let name = &p["keys/".len()..p.len() - ".pub".len()];
            trusted(name, text, &file)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pv-keys-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_malformed_public_key_names_its_file() {
        let dir = scratch("bad");
        for text in [
            "ed25519 not-base64 bad\n",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIP8= x\n",
            "ssh-ed25519 ////\n",
        ] {
            std::fs::write(dir.join("bad.pub"), text).unwrap();
            let e = trusted_keys(&dir).unwrap_err().to_string();
            assert!(e.contains("bad.pub") && e.contains("line 1"), "{text}: {e}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn keygen_never_overwrites_and_round_trips_through_pem() {
        let dir = scratch("keygen");
        let private = dir.join("private/k.key");
        let public = keygen("k", &private, &dir.join("keys")).unwrap();
        let key = load_signing_key(&private).unwrap();
        assert!(
            std::fs::read_to_string(&private)
                .unwrap()
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
        assert!(
            std::fs::read_to_string(&public)
                .unwrap()
                .starts_with("-----BEGIN PUBLIC KEY-----")
        );
        let trusted = trusted_keys(&dir.join("keys")).unwrap();
        assert_eq!(trusted[0].key, key.verifying_key());
        assert_eq!(trusted[0].name, "k");
        assert!(public.ends_with("keys/k.pub"));
        assert!(keygen("k", &private, &dir.join("keys")).is_err());
        assert!(keygen("../evil", &dir.join("e.key"), &dir.join("keys")).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn an_openssh_line_is_the_same_key() {
        let key = SigningKey::from_bytes(&[9u8; 32]).verifying_key();
        let mut blob = Vec::new();
        for field in [b"ssh-ed25519".as_slice(), key.as_bytes()] {
            blob.extend_from_slice(&(field.len() as u32).to_be_bytes());
            blob.extend_from_slice(field);
        }
        let line = format!("ssh-ed25519 {} someone@host\n", STANDARD.encode(&blob));
        assert_eq!(parse_public(&line, "x").unwrap(), key);
        assert_eq!(parse_public(&public_pem(&key), "x").unwrap(), key);
        blob.push(0);
        let line = format!("ssh-ed25519 {}\n", STANDARD.encode(&blob));
        assert!(parse_public(&line, "x").is_err());
    }
}
