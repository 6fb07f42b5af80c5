//! Float32 `.npy` files (NumPy format 1.0) for captured tensors: written by pv's engines and
//! read back from other engines' dumps (only the 2-D little-endian f32 arrays written here).

use std::path::Path;

/// Encodes a `rows x cols` float32 array as `.npy` bytes.
pub fn npy_bytes(data: &[f32], rows: usize, cols: usize) -> Vec<u8> {
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Magic (6) + version (2) + length (2) + header + '\n' must be a multiple of 64.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat(total.div_ceil(64) * 64 - total));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Writes a `.npy` file atomically.
pub fn write_npy(path: &Path, data: &[f32], rows: usize, cols: usize) -> std::io::Result<()> {
    crate::fsutil::atomic_write(path, &npy_bytes(data, rows, cols))
}

/// Reads a 2-D float32 `.npy` file of at most `max_bytes`: `(values, rows, cols)`. Anything
/// else (another dtype or order, a shape that does not match the bytes) is an error saying
/// what.
pub fn read_npy(path: &Path, max_bytes: u64) -> std::io::Result<(Vec<f32>, usize, usize)> {
    let bad = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string());
    let b = crate::fsutil::read_bounded(path, max_bytes)?;
    if b.len() < 10 || &b[..8] != b"\x93NUMPY\x01\x00" {
        return Err(bad("not a version 1.0 .npy file"));
    }
    let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
    let header = b
        .get(10..10 + hlen)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| bad("header runs past the file or is not text"))?;
    if !header.contains("'descr': '<f4'") || !header.contains("'fortran_order': False") {
        return Err(bad("not a C-order little-endian float32 array"));
    }
    let shape = header
        .split_once("'shape': (")
        .and_then(|(_, r)| r.split_once(')'))
        .map(|(s, _)| s)
        .ok_or_else(|| bad("no shape"))?;
    let dims: Vec<usize> = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| bad("shape is not integers")))
        .collect::<Result<_, _>>()?;
    let [rows, cols] = dims[..] else {
        return Err(bad("not a 2-D array"));
    };
    let body = &b[10 + hlen..];
    if rows.checked_mul(cols).and_then(|n| n.checked_mul(4)) != Some(body.len()) {
        return Err(bad("the shape does not match the data"));
    }
    let values = body
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    Ok((values, rows, cols))
}

#[cfg(test)]
mod tests {
    #[test]
    fn what_is_written_reads_back_and_other_files_are_refused() {
        let dir = tempfile_dir();
        let p = dir.join("a.npy");
        super::write_npy(&p, &[1.0, -2.5, 3.0, 4.0, 5.0, 6.0], 3, 2).unwrap();
        let (v, r, c) = super::read_npy(&p, 1 << 20).unwrap();
        assert_eq!((v, r, c), (vec![1.0, -2.5, 3.0, 4.0, 5.0, 6.0], 3, 2));
        let mut b = std::fs::read(&p).unwrap();
        b.pop();
        std::fs::write(&p, &b).unwrap();
        assert!(
            super::read_npy(&p, 1 << 20)
                .unwrap_err()
                .to_string()
                .contains("shape")
        );
        assert!(super::read_npy(&p, 16).is_err(), "bounded");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("pv-npy-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn header_is_aligned_and_shape_is_stated() {
        let b = super::npy_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3);
        let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0);
        let header = std::str::from_utf8(&b[10..10 + hlen]).unwrap();
        assert!(header.contains("'shape': (2, 3)") && header.ends_with('\n'));
        assert_eq!(b.len(), 10 + hlen + 24);
        assert_eq!(&b[10 + hlen..10 + hlen + 4], &1f32.to_le_bytes());
    }
}
