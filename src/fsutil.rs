//! File helpers shared across pv: reads that refuse special files and oversized files,
//! crash-safe writes, and content digests.
//!
//! Every file pv reads from a repository or a models directory may come from a stranger, so
//! reads check the file's type before opening it (a FIFO or device would block or never
//! end) and its size before allocating.

use std::fs::{File, FileType};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// What kind of file this is, for messages (`a FIFO`, `a directory`, ...).
pub fn kind_name(t: &FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_block_device() || t.is_char_device() {
            return "a device";
        }
    }
    if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

fn not_regular(t: &FileType) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("{}, not a regular file; refused", kind_name(t)),
    )
}

/// Reads a regular file as UTF-8 text (see [`open_regular`]).
pub fn read_to_string(path: &Path) -> std::io::Result<String> {
    let mut s = String::new();
    std::io::Read::read_to_string(&mut open_regular(path)?, &mut s)?;
    Ok(s)
}

/// Opens `path` for reading if, and only if, it is a regular file (symbolic links are
/// followed). The type is checked before the open, the open does not block (so a FIFO
/// swapped in after the check cannot hang it), and the type is checked again on the open
/// handle.
pub fn open_regular(path: &Path) -> std::io::Result<File> {
    let t = std::fs::metadata(path)?.file_type();
    if !t.is_file() {
        return Err(not_regular(&t));
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut opts, libc::O_NONBLOCK);
    let f = opts.open(path)?;
    let t = f.metadata()?.file_type();
    if !t.is_file() {
        return Err(not_regular(&t));
    }
    Ok(f)
}

/// A file written beside its destination, fsynced, not yet in place. [`TempFile::persist`]
/// renames it over the destination; dropping it unpersisted removes it.
pub struct TempFile {
    tmp: PathBuf,
    dest: PathBuf,
    persisted: bool,
}

/// The temporary name `atomic_write` uses for `name`: `.NAME.PID-N.tmp`, unique per process
/// and per call so concurrent writers never share one.
fn temp_name(name: &std::ffi::OsStr) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        ".{}.{}-{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// Whether `name` is a temporary file of [`write_temp`] for a destination named `dest`
/// (any destination when `None`): what an interrupted write leaves behind.
pub fn is_temp_for(name: &str, dest: Option<&str>) -> bool {
    let Some(rest) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) else {
        return false;
    };
    let Some((stem, id)) = rest.rsplit_once('.') else {
        return false;
    };
    let id_ok = id.split_once('-').is_some_and(|(p, n)| {
        !p.is_empty()
            && !n.is_empty()
            && p.bytes().all(|b| b.is_ascii_digit())
            && n.bytes().all(|b| b.is_ascii_digit())
    });
    id_ok && dest.is_none_or(|d| d == stem)
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes `bytes` to a temporary file beside `path` and fsyncs it.
pub fn write_temp(path: &Path, bytes: &[u8]) -> std::io::Result<TempFile> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("path has no file name"))?;
    let tmp = parent_dir(path).join(temp_name(name));
    let t = TempFile {
        tmp,
        dest: path.to_path_buf(),
        persisted: false,
    };
    let mut f = File::create(&t.tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(t)
}

impl TempFile {
    /// Moves the file into place (rename, then fsync of the directory).
    pub fn persist(mut self) -> std::io::Result<()> {
        std::fs::rename(&self.tmp, &self.dest)?;
        self.persisted = true;
        if let Ok(d) = File::open(parent_dir(&self.dest)) {
            // Directory fsync makes the rename durable; some filesystems refuse it, which is harmless.
            let _ = d.sync_all();
        }
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `bytes` to `path` so that a reader sees either the old file or the whole new one:
/// a temporary file in the same directory, fsync, rename, then fsync of the directory.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_temp(path, bytes)?.persist()
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Whether `s` is a lower-case hex sha256 (64 characters of `0-9a-f`).
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The first `n` characters of a digest or other untrusted text, for messages: cut on a
/// character boundary, so no input can make it panic.
pub fn short(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex(&Sha256::digest(bytes))
}

/// Lower-case hex sha256 of a regular file, read in 1 MiB blocks.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut f = open_regular(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// Reads a whole regular file of at most `max` bytes; a larger one is an error naming both
/// sizes, so no buffer is sized by a file nobody checked.
pub fn read_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let f = open_regular(path)?;
    let len = f.metadata()?.len();
    if len > max {
        return Err(std::io::Error::other(format!(
            "{len} bytes; the limit for this file is {max}"
        )));
    }
    let mut buf = Vec::with_capacity(len as usize);
    // `take` also bounds a file that grows while it is read.
    f.take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(std::io::Error::other(format!(
            "grew past the limit of {max} bytes while being read"
        )));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pv-fsutil-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn bounded_reads_refuse_larger_files() {
        let dir = scratch("bounded");
        let p = dir.join("f");
        atomic_write(&p, &[7u8; 100]).unwrap();
        assert_eq!(read_bounded(&p, 100).unwrap().len(), 100);
        let e = read_bounded(&p, 99).unwrap_err();
        assert!(e.to_string().contains("100 bytes"), "{e}");
        assert_eq!(
            sha256_file(&p).unwrap(),
            sha256_hex(&[7u8; 100]),
            "streamed and in-memory digests agree"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[cfg(unix)]
    #[test]
    fn special_files_are_refused_without_blocking() {
        let dir = scratch("special");
        let fifo = dir.join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo");
        let e = read_bounded(&fifo, 10).unwrap_err();
        assert!(e.to_string().contains("a FIFO"), "{e}");
        assert!(sha256_file(&fifo).is_err());
        std::os::unix::fs::symlink(&fifo, dir.join("link")).unwrap();
        assert!(read_bounded(&dir.join("link"), 10).is_err());
        let e = read_bounded(&dir, 10).unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
        assert!(read_bounded(Path::new("/dev/zero"), 10).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn an_unpersisted_temp_file_is_removed_and_names_are_recognised() {
        let dir = scratch("temp");
        let dest = dir.join("0001.dsse.json");
        let t = write_temp(&dest, b"x").unwrap();
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 1);
        assert!(is_temp_for(&names[0], Some("0001.dsse.json")), "{names:?}");
        assert!(is_temp_for(&names[0], None));
        assert!(!is_temp_for(&names[0], Some("head.json")));
        assert!(!is_temp_for(".x.tmp", None) && !is_temp_for("0001.dsse.json", None));
        drop(t);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        write_temp(&dest, b"y").unwrap().persist().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"y");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn short_never_splits_a_character() {
        assert_eq!(short("ééé", 2), "éé");
        assert_eq!(short("ab", 12), "ab");
        assert!(is_sha256_hex(&"a".repeat(64)) && !is_sha256_hex(&"é".repeat(32)));
    }
}
