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

/// Creates an empty temporary file beside `path`, for a writer that fsyncs it when done.
pub fn create_temp(path: &Path) -> std::io::Result<(TempFile, File)> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("path has no file name"))?;
    let tmp = parent_dir(path).join(temp_name(name));
    let t = TempFile {
        tmp,
        dest: path.to_path_buf(),
        persisted: false,
    };
    let f = File::create(&t.tmp)?;
    Ok((t, f))
}

/// Writes `bytes` to a temporary file beside `path` and fsyncs it.
pub fn write_temp(path: &Path, bytes: &[u8]) -> std::io::Result<TempFile> {
    let (t, mut f) = create_temp(path)?;
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

/// A file laid out as a head, then sections of sizes known up front, each starting at a
/// multiple of `align` (zero padding between): the shape of GGUF and APR files. It is
/// written as it is produced, so no more than one piece of a section is ever held, into
/// `W` (a `Vec<u8>` in memory, or a file through [`SectionFile`]).
pub struct SectionWriter<W: Write> {
    out: W,
    sizes: Vec<u64>,
    align: u64,
    /// The section being written, and the bytes it has.
    index: usize,
    filled: u64,
    /// Bytes written so far.
    pos: u64,
}

impl<W: Write> SectionWriter<W> {
    /// Writes `head` and prepares for the sections.
    pub fn new(mut out: W, head: &[u8], sizes: Vec<u64>, align: u64) -> std::io::Result<Self> {
        out.write_all(head)?;
        Ok(SectionWriter {
            out,
            sizes,
            align: align.max(1),
            index: 0,
            filled: 0,
            pos: head.len() as u64,
        })
    }

    fn pad_to_alignment(&mut self) -> std::io::Result<()> {
        const ZEROS: [u8; 4096] = [0; 4096];
        let to = self.pos.div_ceil(self.align) * self.align;
        while self.pos < to {
            let n = (to - self.pos).min(ZEROS.len() as u64) as usize;
            self.out.write_all(&ZEROS[..n])?;
            self.pos += n as u64;
        }
        Ok(())
    }

    /// Moves past empty sections (each still aligned, as a writer of the whole would).
    fn skip_empty(&mut self) -> std::io::Result<()> {
        while self.filled == 0 && self.sizes.get(self.index) == Some(&0) {
            self.pad_to_alignment()?;
            self.index += 1;
        }
        Ok(())
    }

    /// Appends the next bytes of the current section; a section that becomes full moves the
    /// writer on. Bytes beyond the current section are an error.
    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.skip_empty()?;
        let Some(&size) = self.sizes.get(self.index) else {
            return Err(std::io::Error::other(format!(
                "{} bytes past the last section",
                bytes.len()
            )));
        };
        if self.filled + bytes.len() as u64 > size {
            return Err(std::io::Error::other(format!(
                "section {} is {size} bytes; this write would overflow it by {}",
                self.index,
                self.filled + bytes.len() as u64 - size
            )));
        }
        if self.filled == 0 {
            self.pad_to_alignment()?;
        }
        self.out.write_all(bytes)?;
        self.filled += bytes.len() as u64;
        self.pos += bytes.len() as u64;
        if self.filled == size {
            self.index += 1;
            self.filled = 0;
        }
        Ok(())
    }

    /// Checks every section is complete, pads the end to `align` if `pad_end`, flushes and
    /// returns the output.
    pub fn finish(mut self, pad_end: bool) -> std::io::Result<W> {
        self.skip_empty()?;
        if let Some(&size) = self.sizes.get(self.index) {
            return Err(std::io::Error::other(format!(
                "section {} lacks {} of its {size} bytes",
                self.index,
                size - self.filled
            )));
        }
        if pad_end {
            self.pad_to_alignment()?;
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

/// A writer that keeps the CRC32 (IEEE) of every byte written through it, for formats that
/// end with one (APR's footer).
pub struct CrcWriter<W: Write> {
    inner: W,
    hasher: crc32fast::Hasher,
}

impl<W: Write> CrcWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        CrcWriter {
            inner,
            hasher: crc32fast::Hasher::new(),
        }
    }

    /// Appends the CRC32 of everything written so far (little-endian, not itself hashed)
    /// and returns the inner writer.
    pub fn append_crc(self) -> std::io::Result<W> {
        let CrcWriter { mut inner, hasher } = self;
        inner.write_all(&hasher.finalize().to_le_bytes())?;
        Ok(inner)
    }

    /// The inner writer, without a CRC.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A [`SectionWriter`] streaming into a temporary file beside its destination:
/// [`finish`](Self::finish) fsyncs it and renames it into place; an error or a drop before
/// that removes it, so a reader never sees half a file.
pub struct SectionFile {
    writer: SectionWriter<CrcWriter<std::io::BufWriter<File>>>,
    temp: TempFile,
    crc_footer: bool,
}

impl SectionFile {
    /// Starts the file with `head`; see [`SectionWriter::new`].
    pub fn create(path: &Path, head: &[u8], sizes: Vec<u64>, align: u64) -> std::io::Result<Self> {
        Self::create_with(path, head, sizes, align, false)
    }

    /// As [`create`](Self::create), ending the file with the CRC32 of every byte before it
    /// (APR's footer).
    pub fn create_with_crc_footer(
        path: &Path,
        head: &[u8],
        sizes: Vec<u64>,
        align: u64,
    ) -> std::io::Result<Self> {
        Self::create_with(path, head, sizes, align, true)
    }

    fn create_with(
        path: &Path,
        head: &[u8],
        sizes: Vec<u64>,
        align: u64,
        crc_footer: bool,
    ) -> std::io::Result<Self> {
        let (temp, f) = create_temp(path)?;
        let out = CrcWriter::new(std::io::BufWriter::with_capacity(1 << 20, f));
        Ok(SectionFile {
            writer: SectionWriter::new(out, head, sizes, align)?,
            temp,
            crc_footer,
        })
    }

    /// See [`SectionWriter::write`].
    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write(bytes)
    }

    /// Completes the file (see [`SectionWriter::finish`]; then the footer, if any), fsyncs
    /// it and moves it into place.
    pub fn finish(self, pad_end: bool) -> std::io::Result<()> {
        let crc = self.writer.finish(pad_end)?;
        let buffered = if self.crc_footer {
            crc.append_crc()?
        } else {
            crc.into_inner()
        };
        let f = buffered.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        self.temp.persist()
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
    fn sections_are_aligned_padded_and_checked() {
        let mut w = SectionWriter::new(Vec::new(), b"HEAD", vec![3, 0, 5], 8).unwrap();
        w.write(b"ab").unwrap();
        w.write(b"c").unwrap();
        // The empty section is skipped; the third starts at the next multiple of 8.
        let err = w.write(b"123456").unwrap_err().to_string();
        assert!(err.contains("overflow it by 1"), "{err}");
        w.write(b"12345").unwrap();
        assert!(
            w.write(b"x")
                .unwrap_err()
                .to_string()
                .contains("past the last section")
        );
        let out = w.finish(true).unwrap();
        assert_eq!(
            out,
            [&b"HEAD\0\0\0\0abc\0\0\0\0\0"[..], b"12345\0\0\0"].concat()
        );
        let w = SectionWriter::new(Vec::new(), b"", vec![4, 2], 4).unwrap();
        let err = w.finish(false).unwrap_err().to_string();
        assert!(err.contains("section 0 lacks 4 of its 4 bytes"), "{err}");
    }

    #[test]
    fn a_section_file_appears_only_when_complete() {
        let dir = scratch("sections");
        let dest = dir.join("out.bin");
        let mut f = SectionFile::create(&dest, b"H", vec![2], 4).unwrap();
        f.write(b"x").unwrap();
        drop(f);
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "nothing left behind"
        );
        let mut f = SectionFile::create(&dest, b"H", vec![2], 4).unwrap();
        f.write(b"x").unwrap();
        assert!(f.finish(false).is_err());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        let mut f = SectionFile::create(&dest, b"H", vec![2], 4).unwrap();
        f.write(b"xy").unwrap();
        f.finish(false).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"H\0\0\0xy");
        let _ = std::fs::remove_dir_all(&dir);
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
