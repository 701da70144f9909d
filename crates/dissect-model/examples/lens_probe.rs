//! Top tokens of the residual stream at one position, every layer, in both projection
//! conventions: `cargo run -p dissect-model --example lens_probe -- "<prompt>" <position>`.
#![allow(clippy::print_stdout)] // an example prints its result
use dissect_model::backend::Cpu;
use dissect_model::predict::top_k;
use dissect_model::project::{project, Projection};
use dissect_model::source::load;
use dissect_model::RecordAll;

fn main() {
    let prompt = std::env::args().nth(1).unwrap_or_else(|| "The Eiffel Tower is located in the city of".into());
    let pos: usize = std::env::args().nth(2).map_or(3, |p| p.parse().unwrap());
    let l = load::<Cpu>("gemma3-270m", &Default::default()).unwrap();
    let ids = l.tokenizer.encode(&prompt).unwrap().ids;
    println!("position {pos}: {:?}", l.tokenizer.decode_token(ids[pos]));
    let mut rec = RecordAll::default();
    l.model.forward(l.model.ids_tensor(std::slice::from_ref(&ids)).unwrap(), &mut rec);
    let d = l.model.config.hidden;
    for (layer, h) in rec.residual.iter().enumerate() {
        let v = h.clone().slice([0..1, pos..pos + 1]).reshape([1, d]);
        for how in [Projection::Notebook, Projection::LogitLens] {
            let logits = project(&l.model, v.clone(), how).into_data().into_vec::<f32>().unwrap();
            let top: Vec<String> = top_k(&logits, 8).into_iter().map(|i| l.tokenizer.decode_token(i as u32)).collect();
            println!("{layer:>2} {how:?}: {top:?}");
        }
    }
}
