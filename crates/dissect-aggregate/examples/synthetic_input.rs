//! Writes the tests' synthetic experiment tables (with BOS sets) to a directory, to try
//! `dissect aggregate` without a model run:
//!
//!     cargo run -p dissect-aggregate --example synthetic_input -- /tmp/synth [n] [layers] [shards]
//!     dissect aggregate --input /tmp/synth --out /tmp/synth-agg

#[path = "../tests/common/mod.rs"]
mod common;

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| {
        eprintln!("usage: synthetic_input DIR [N] [LAYERS] [SHARDS]");
        std::process::exit(2)
    });
    let mut synth = common::Synth { with_bos_sets: true, ..common::Synth::default() };
    if let Some(n) = args.next() {
        synth.n = n.parse().expect("N is a number");
    }
    if let Some(l) = args.next() {
        synth.layers = l.parse().expect("LAYERS is a number");
    }
    if let Some(s) = args.next() {
        synth.shards = s.parse().expect("SHARDS is a number");
    }
    synth.write(std::path::Path::new(&dir));
    eprintln!("wrote synthetic tables for {} records, {} layers, {} shard(s) to {dir}", synth.n, synth.layers, synth.shards);
}
