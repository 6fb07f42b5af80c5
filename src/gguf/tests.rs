use super::*;
use proptest::prelude::*;

fn sample() -> GgufWriter {
    let mut w = GgufWriter::new();
    w.meta("general.architecture", Value::String("llama".into()))
        .meta("general.alignment", Value::U32(64))
        .meta("u8", Value::U8(7))
        .meta("i8", Value::I8(-7))
        .meta("u16", Value::U16(700))
        .meta("i16", Value::I16(-700))
        .meta("i32", Value::I32(-70000))
        .meta("f32", Value::F32(1.5))
        .meta("bool", Value::Bool(true))
        .meta("u64", Value::U64(1 << 40))
        .meta("i64", Value::I64(-(1 << 40)))
        .meta("f64", Value::F64(2.25))
        .meta(
            "strings",
            Value::array(
                ValueType::String,
                vec![Value::String("a".into()), Value::String("βγ".into())],
            ),
        )
        .meta("empty", Value::array(ValueType::I32, vec![]))
        .meta(
            "nested",
            Value::array(
                ValueType::Array,
                vec![Value::array(
                    ValueType::U8,
                    vec![Value::U8(1), Value::U8(2)],
                )],
            ),
        );
    let f32s: Vec<u8> = (0..8).flat_map(|i| (i as f32).to_le_bytes()).collect();
    w.tensor("a", &[4, 2], GgmlType::F32, f32s).unwrap();
    w.tensor("b", &[32], GgmlType::Q8_0, vec![0; 34]).unwrap();
    w
}

#[test]
fn writer_output_reads_back_identically() {
    let w = sample();
    let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.alignment, 64);
    assert_eq!(f.metadata, w.metadata);
    assert_eq!(f.tensors.len(), 2);
    let a = f.tensor("a").unwrap();
    assert_eq!(a.dims, vec![4, 2]);
    assert_eq!(a.rows_cols(), (2, 4));
    assert_eq!(f.tensor_data(a)[4..8], 1f32.to_le_bytes());
    let b = f.tensor("b").unwrap();
    assert_eq!(b.offset % 64, 0);
    assert_eq!(f.tensor_data(b).len(), 34);
    assert_eq!(f.get_str("general.architecture").unwrap(), "llama");
}

#[test]
fn writer_rejects_wrong_data_size() {
    let mut w = GgufWriter::new();
    assert!(w.tensor("x", &[33], GgmlType::Q8_0, vec![0; 34]).is_err());
}

fn err_of(bytes: Vec<u8>) -> String {
    match GgufFile::from_bytes(bytes) {
        Ok(_) => panic!("malformed file parsed"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_magic_and_version_name_the_field() {
    let mut b = sample().to_bytes();
    b[0] = b'X';
    assert!(err_of(b).contains("`magic` at byte offset 0"));
    let mut b = sample().to_bytes();
    b[4] = 9;
    assert!(err_of(b).contains("`version` at byte offset 4"));
}

#[test]
fn huge_counts_are_refused_before_allocating() {
    let mut b = sample().to_bytes();
    b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(err_of(b).contains("`tensor_count` at byte offset 8"));
    let mut b = sample().to_bytes();
    b[16..24].copy_from_slice(&(1u64 << 60).to_le_bytes());
    assert!(err_of(b).contains("metadata_kv_count"));
    // The first key's length.
    let mut b = sample().to_bytes();
    b[24..32].copy_from_slice(&(1u64 << 62).to_le_bytes());
    assert!(err_of(b).contains("metadata[0].key` at byte offset 24"));
}

#[test]
fn tensor_past_end_of_file_is_an_error() {
    let b = sample().to_bytes();
    let cut = b.len() - 10;
    let e = err_of(b[..cut].to_vec());
    assert!(e.contains("tensor_info[1] (b).offset"), "{e}");
    assert!(e.contains("runs past the end"), "{e}");
}

#[test]
fn duplicate_keys_are_an_error() {
    let mut w = GgufWriter::new();
    w.meta("k", Value::U8(1));
    let full = w.to_bytes();
    // The entry is 8 (key length) + 1 (key) + 4 (type) + 1 (value) bytes; repeat it by hand.
    let mut b = full[..38].to_vec();
    b.extend_from_slice(&full[24..38]);
    b[16..24].copy_from_slice(&2u64.to_le_bytes());
    assert!(err_of(b).contains("duplicate key"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    /// Any truncation or single corrupted byte gives Ok or a typed error, never a panic.
    #[test]
    fn corrupt_files_never_panic(cut in 0usize..2000, at in 0usize..2000, byte: u8) {
        let mut b = sample().to_bytes();
        if at < b.len() { b[at] = byte; }
        b.truncate(cut.min(b.len()));
        let _ = GgufFile::from_bytes(b);
    }
}
