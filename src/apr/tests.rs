use super::*;
use crate::gguf::GgmlType;
use proptest::prelude::*;

fn sample() -> AprWriter {
    let mut w = AprWriter::new(serde_json::json!({"architecture": "llama", "n": 1}));
    let f32s: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
    w.tensor("z.weight", GgmlType::F32, &[2, 3], f32s).unwrap();
    w.tensor("a.weight", GgmlType::Q8_0, &[1, 32], vec![0; 34])
        .unwrap();
    w
}

#[test]
fn round_trip_sorted_aligned_and_checksummed() {
    let f = AprFile::from_bytes(sample().to_bytes()).unwrap();
    assert_eq!(f.metadata["architecture"], "llama");
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
        (vec![2, 3], GgmlType::F32, 0)
    );
    assert_eq!(f.tensor_data(z)[20..24], 5f32.to_le_bytes());
}

fn err(b: Vec<u8>) -> String {
    AprFile::from_bytes(b)
        .err()
        .expect("malformed file parsed")
        .to_string()
}

#[test]
fn each_header_field_is_checked_by_name() {
    let good = sample().to_bytes();
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
    let crc = header_crc(&b[..64]);
    b[40..44].copy_from_slice(&crc.to_le_bytes());
    assert!(err(b).contains("`version` at byte offset 4"));
    let mut b = good.clone();
    b[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    let crc = header_crc(&b[..64]);
    b[40..44].copy_from_slice(&crc.to_le_bytes());
    assert!(err(b).contains("`tensor_count`"));
    assert!(err(good[..40].to_vec()).contains("`header`"));
}

#[test]
fn index_entries_are_checked() {
    let good = sample().to_bytes();
    let index = u64::from_le_bytes(good[24..32].try_into().unwrap()) as usize;
    // First entry: name_len 8, "a.weight", dtype at +10: make it unknown.
    let mut b = good.clone();
    b[index + 10] = 200;
    assert!(err(b).contains("tensor_index[0].dtype"));
    // Its size field (after dims [1, 32] and offset): claim one byte more.
    let mut b = good.clone();
    let size_at = index + 2 + 8 + 2 + 16 + 8;
    b[size_at] += 1;
    assert!(err(b).contains("tensor_index[0].size"));
    // Swap the names' order by renaming the first to sort after the second.
    let mut b = good.clone();
    b[index + 2] = b'z';
    b[index + 3] = b'z';
    assert!(err(b).contains("sorted and unique"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn corrupt_files_never_panic(cut in 0usize..700, at in 0usize..700, byte: u8) {
        let mut b = sample().to_bytes();
        if at < b.len() { b[at] = byte; }
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
        AprEntry::new("z.weight", GgmlType::F32, &[2, 3]).unwrap(),
        AprEntry::new("a.weight", GgmlType::Q8_0, &[1, 32]).unwrap(),
    ];
    let mut s = AprStream::create(&path, &meta, entries).unwrap();
    let order: Vec<&str> = s.entries().iter().map(|e| e.name.as_str()).collect();
    assert_eq!(order, ["a.weight", "z.weight"]);
    s.write(&[0; 20]).unwrap();
    s.write(&[0; 14]).unwrap();
    let f32s: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
    for piece in f32s.chunks(5) {
        s.write(piece).unwrap();
    }
    s.finish().unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), sample().to_bytes());
    // A stream missing bytes never appears; duplicates and bad shapes are refused up front.
    let mut s = AprStream::create(
        &dir.join("short.apr"),
        &meta,
        vec![AprEntry::new("a", GgmlType::F32, &[4]).unwrap()],
    )
    .unwrap();
    s.write(&[0; 8]).unwrap();
    assert!(s.finish().unwrap_err().to_string().contains("lacks 8"));
    assert!(!dir.join("short.apr").exists());
    let twice = vec![
        AprEntry::new("a", GgmlType::F32, &[4]).unwrap(),
        AprEntry::new("a", GgmlType::F32, &[2]).unwrap(),
    ];
    assert!(AprStream::create(&dir.join("d.apr"), &meta, twice).is_err());
    assert!(AprEntry::new("b", GgmlType::Q8_0, &[2, 31]).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}
