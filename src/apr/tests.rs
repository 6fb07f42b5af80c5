use super::*;
use crate::quant::GgmlType;
use proptest::prelude::*;

const F32: DType = DType::Ggml(GgmlType::F32);
const Q4_K: DType = DType::Ggml(GgmlType::Q4_K);

fn sample() -> AprWriter {
    let mut w = AprWriter::new(&serde_json::json!({"architecture": "llama", "n": 1})).unwrap();
    let f32s: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
    w.tensor("z.weight", F32, &[2, 3], f32s).unwrap();
    w.tensor("a.weight", Q4_K, &[1, 256], vec![0; 144]).unwrap();
    w
}

fn bytes() -> Vec<u8> {
    sample().to_bytes().unwrap()
}

/// Recomputes the header CRC after an edit, so the edited field is what a reader sees.
fn rehead(b: &mut [u8]) {
    let crc = header_crc(&b[..64]);
    b[40..44].copy_from_slice(&crc.to_le_bytes());
}

/// Recomputes the footer CRC after an edit.
fn refoot(b: &mut [u8]) {
    let at = b.len() - 4;
    let crc = crc32fast::hash(&b[..at]);
    b[at..].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn round_trip_sorted_aligned_flagged_and_checksummed() {
    let b = bytes();
    let f = AprFile::from_bytes(b.clone()).unwrap();
    assert_eq!(f.metadata["architecture"], "llama");
    assert_eq!(f.dialect, Dialect::Aprender);
    assert_eq!(f.flags, flags::ROW_MAJOR, "what AprV2Writer::new sets");
    assert_eq!(
        f.footer,
        Footer::Verified(crc32fast::hash(&b[..b.len() - 4]))
    );
    assert_eq!(
        f.tensors
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>(),
        ["a.weight", "z.weight"]
    );
    let z = f.tensor("z.weight").unwrap();
    assert_eq!(
        (z.dims.clone(), z.dtype, z.offset % 64),
        (vec![2, 3], F32, 0)
    );
    assert_eq!(f.tensor_data(z)[20..24], 5f32.to_le_bytes());
    // aprender's ids: Q4_K is 12 in both tables, F32 0.
    let index = u64::from_le_bytes(b[24..32].try_into().unwrap()) as usize;
    assert_eq!(b[index + 2 + 8], 12);
}

fn err(b: Vec<u8>) -> String {
    AprFile::from_bytes(b)
        .err()
        .expect("malformed file parsed")
        .to_string()
}

#[test]
fn each_header_field_is_checked_by_name() {
    let good = bytes();
    let mut b = good.clone();
    b[0] = b'X';
    assert!(err(b).contains("`magic`"));
    let mut b = good.clone();
    b[4] = 3;
    assert!(
        err(b).contains("`crc32`"),
        "a changed header byte breaks the checksum first"
    );
    let mut b = good.clone();
    b[50] = 1;
    assert!(err(b).contains("`crc32`"));
    // Fix the CRC after changing the version: now the version check speaks.
    let mut b = good.clone();
    b[4] = 3;
    rehead(&mut b);
    assert!(err(b).contains("`version` at byte offset 4"));
    let mut b = good.clone();
    b[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    rehead(&mut b);
    assert!(err(b).contains("`tensor_count`"));
    assert!(err(good[..40].to_vec()).contains("`header`"));
}

#[test]
fn flags_are_acted_on() {
    let good = bytes();
    for (bits, says) in [
        (flags::COLUMN_MAJOR | flags::ROW_MAJOR, "column-major"),
        (flags::LZ4_COMPRESSED, "LZ4"),
        (flags::ZSTD_COMPRESSED, "Zstd"),
        (flags::ENCRYPTED, "encrypted"),
        (flags::SHARDED, "shard"),
        (0x4000, "no flag aprender defines"),
    ] {
        let mut b = good.clone();
        b[6..8].copy_from_slice(&bits.to_le_bytes());
        rehead(&mut b);
        let e = err(b);
        assert!(
            e.contains("`flags` at byte offset 6") && e.contains(says),
            "{e}"
        );
    }
    // Informational flags, and none at all (files from before aprender's LAYOUT-002), read.
    for bits in [
        0,
        flags::SIGNED | flags::QUANTIZED | flags::HAS_VOCAB | flags::ROW_MAJOR,
    ] {
        let mut b = good.clone();
        b[6..8].copy_from_slice(&bits.to_le_bytes());
        rehead(&mut b);
        refoot(&mut b);
        assert_eq!(AprFile::from_bytes(b).unwrap().flags, bits);
    }
    assert_eq!(
        flags::names(flags::ROW_MAJOR | flags::SIGNED),
        ["signed", "row-major"]
    );
}

#[test]
fn the_footer_is_verified_when_present_and_optional() {
    let good = bytes();
    let mut b = good.clone();
    let last = b.len() - 10;
    b[last] ^= 1;
    let e = err(b);
    assert!(e.contains("`footer_crc32`"), "a changed data byte: {e}");
    let mut b = good.clone();
    let n = b.len();
    b[n - 1] ^= 1;
    assert!(err(b).contains("`footer_crc32`"));
    // Without the footer: a file as aprender wrote them before it, or pv's first dialect.
    let cut = good[..good.len() - 4].to_vec();
    assert_eq!(AprFile::from_bytes(cut).unwrap().footer, Footer::Absent);
    // Any other length is neither.
    let mut b = good.clone();
    b.push(0);
    assert!(err(b).contains("`footer`"));
    let e = err(good[..good.len() - 70].to_vec());
    assert!(e.contains("offset") || e.contains("`footer`"), "{e}");
}

#[test]
fn index_entries_are_checked() {
    let good = bytes();
    let index = u64::from_le_bytes(good[24..32].try_into().unwrap()) as usize;
    // First entry: name_len 8, "a.weight", dtype at +10.
    let mut b = good.clone();
    b[index + 10] = 200;
    assert!(err(b).contains("tensor_index[0].dtype"));
    // GGML's Q8_0 id in an aprender file names the mix-up.
    let mut b = good.clone();
    b[index + 10] = 2;
    let e = err(b);
    assert!(
        e.contains("GGML's id for Q4_0") && e.contains("aprender's type table"),
        "{e}"
    );
    // Its size field (after dims [1, 256] and offset): claim one byte more.
    let mut b = good.clone();
    let size_at = index + 2 + 8 + 2 + 16 + 8;
    b[size_at] += 1;
    assert!(err(b).contains("tensor_index[0].size"));
    // ndim 9.
    let mut b = good.clone();
    b[index + 11] = 9;
    assert!(err(b).contains("tensor_index[0].ndim"));
    // Swap the names' order by renaming the first to sort after the second.
    let mut b = good.clone();
    b[index + 2] = b'z';
    b[index + 3] = b'z';
    assert!(err(b).contains("sorted and unique"));
}

/// A file with `meta` and one tensor whose index entry says GGML id 8 (Q8_0) with 32 values
/// in 34 bytes, without a footer (the edit would break it).
fn one_entry_of_id_8(meta: serde_json::Value) -> Vec<u8> {
    let mut w = AprWriter::new(&meta).unwrap();
    w.tensor("a", F32, &[8], vec![0; 32]).unwrap();
    let mut b = w.to_bytes().unwrap();
    let index = u64::from_le_bytes(b[24..32].try_into().unwrap()) as usize;
    b[index + 3] = 8;
    b[index + 5..index + 13].copy_from_slice(&32u64.to_le_bytes());
    b[index + 21..index + 29].copy_from_slice(&34u64.to_le_bytes());
    b.truncate(b.len() - 4);
    b
}

#[test]
fn a_legacy_id_is_read_in_its_own_dialect() {
    // pv's first dialect: GGML ids, told by its nested metadata.
    let pv = serde_json::json!({"format": "apr/2.0", "hyperparameters": {}});
    let f = AprFile::from_bytes(one_entry_of_id_8(pv)).unwrap();
    assert_eq!(f.dialect, Dialect::Pv);
    assert_eq!(f.tensors[0].dtype, DType::Ggml(GgmlType::Q8_0));
    // The same entry under aprender's metadata: id 8 is aprender's legacy APR_Q4, whose 32
    // values take one 18-byte block, so the 34-byte size does not fit it.
    let e = err(one_entry_of_id_8(serde_json::json!({})));
    assert!(e.contains("APR_Q4 with dims [32] takes 18"), "{e}");
}

#[test]
fn the_writer_holds_only_what_aprender_reads_as_itself() {
    for t in [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q8_0,
        GgmlType::Q5_K,
    ] {
        let e = AprEntry::new("blk.0.attn_q.weight", DType::Ggml(t), &[1, 256])
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("blk.0.attn_q.weight") && e.contains(t.name()) && e.contains("aprender"),
            "{e}"
        );
    }
    assert!(AprEntry::new(&"x".repeat(257), F32, &[1]).is_err());
    assert!(AprEntry::new("x", F32, &[1; 9]).is_err());
    assert!(AprEntry::new("x", Q4_K, &[]).is_err());
    assert!(AprEntry::new("x", F32, &[1; 8]).is_ok());
    // aprender pads K-quant rows to whole super-blocks; so does pv's entry.
    assert_eq!(AprEntry::new("x", Q4_K, &[2, 300]).unwrap().size(), 576);
    assert_eq!(
        AprEntry::new("x", DType::AprQ8, &[3, 5]).unwrap().size(),
        19
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn corrupt_files_never_panic(cut in 0usize..900, at in 0usize..900, byte: u8, foot: bool) {
        let mut b = bytes();
        if at < b.len() { b[at] = byte; }
        if foot { rehead(&mut b); refoot(&mut b); }
        b.truncate(cut.min(b.len()));
        let _ = AprFile::from_bytes(b);
    }
}

#[test]
fn a_streamed_file_equals_the_in_memory_one() {
    let dir = std::env::temp_dir().join(format!("pv-apr-stream-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s.apr");
    let meta = serde_json::json!({"architecture": "llama", "n": 1});
    let entries = vec![
        AprEntry::new("z.weight", F32, &[2, 3]).unwrap(),
        AprEntry::new("a.weight", Q4_K, &[1, 256]).unwrap(),
    ];
    let mut s = AprStream::create(&path, &meta, entries).unwrap();
    let order: Vec<&str> = s.entries().iter().map(|e| e.name.as_str()).collect();
    assert_eq!(order, ["a.weight", "z.weight"]);
    s.write(&[0; 100]).unwrap();
    s.write(&[0; 44]).unwrap();
    let f32s: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
    for piece in f32s.chunks(5) {
        s.write(piece).unwrap();
    }
    s.finish().unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes());
    // A stream missing bytes never appears; duplicates and bad shapes are refused up front.
    let mut s = AprStream::create(
        &dir.join("short.apr"),
        &meta,
        vec![AprEntry::new("a", F32, &[4]).unwrap()],
    )
    .unwrap();
    s.write(&[0; 8]).unwrap();
    assert!(s.finish().unwrap_err().to_string().contains("lacks 8"));
    assert!(!dir.join("short.apr").exists());
    let twice = vec![
        AprEntry::new("a", F32, &[4]).unwrap(),
        AprEntry::new("a", F32, &[2]).unwrap(),
    ];
    assert!(AprStream::create(&dir.join("d.apr"), &meta, twice).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}
