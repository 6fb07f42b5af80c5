use pv::model::{Flavor, Observer, OwnedQuantizedModel, Slot};
struct P;
impl Observer for P {
    fn observe(&mut self, layer: Option<usize>, slot: Slot, data: &[f32], _w: usize) {
        let s: f64 = data.iter().map(|&x| x as f64).sum();
        println!("{:?} {} {:.6}", layer, slot.name(), s);
    }
}
fn main() {
    let mut model = OwnedQuantizedModel::open(std::path::Path::new(
        "models/SmolLM2-135M-Instruct.Q4_1.gguf",
    ))
    .unwrap();
    model.flavor = Flavor::Avx2;
    let toks: Vec<u32> = std::env::args()
        .skip(1)
        .map(|t| t.parse().unwrap())
        .collect();
    model.forward_observed(&toks, &mut P).unwrap();
}
