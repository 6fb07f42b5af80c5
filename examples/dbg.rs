use pv::model::{Flavor, OwnedQuantizedModel, top_k};
fn main() {
    let mut model = OwnedQuantizedModel::open(std::path::Path::new(
        "models/SmolLM2-135M-Instruct.Q4_1.gguf",
    ))
    .unwrap();
    for (flavor, json, prefix) in [
        (
            Flavor::Avx512,
            "llamacpp_smollm2.json",
            "llamacpp_smollm2_logits_p",
        ),
        (
            Flavor::Avx2,
            "llamacpp_avx2_smollm2.json",
            "llamacpp_avx2_smollm2_logits_p",
        ),
    ] {
        model.flavor = flavor;
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(format!("tests/fixtures/{json}")).unwrap())
                .unwrap();
        for (i, p) in v["prompts"].as_array().unwrap().iter().enumerate() {
            let toks: Vec<u32> = p["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_u64().unwrap() as u32)
                .collect();
            let l = model.forward(&toks).unwrap();
            let ours = l.last();
            let theirs: Vec<f32> = std::fs::read(format!("tests/fixtures/{prefix}{i}.f32"))
                .unwrap()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let mut d = 0f32;
            let mut same = 0;
            for (a, b) in ours.iter().zip(&theirs) {
                d = d.max((a - b).abs());
                if a.to_bits() == b.to_bits() {
                    same += 1;
                }
            }
            println!(
                "{flavor:?} {}: max diff {d} bit-identical {same}/49152 top {:?}",
                p["name"],
                top_k(ours, 4).iter().map(|x| x.0).collect::<Vec<_>>()
            );
        }
    }
}
