//! `describe` reads what `load` would report (architecture, files, depth) from metadata alone.

use std::path::Path;

use dissect_model::backend::Cpu;
use dissect_model::source::{describe, load, named_model_path};

fn same_as_load(spec: &str) {
    let header = describe(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
    let loaded = load::<Cpu>(spec, &Default::default()).unwrap();
    assert_eq!(header.n_layers, loaded.model.n_layers(), "{spec}");
    assert_eq!(header.info.architecture, loaded.info.architecture, "{spec}");
    assert_eq!(header.info.files, loaded.info.files, "{spec}");
    assert_eq!(header.info.revision, loaded.info.revision, "{spec}");
}

#[test]
fn every_fixture_model_is_described_as_it_loads() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut n = 0;
    for e in std::fs::read_dir(&fixtures).unwrap() {
        let p = e.unwrap().path();
        let is_model = (p.is_dir() && p.join("config.json").is_file()) || p.file_name().is_some_and(|f| f == "tiny-llama.gguf");
        if is_model {
            same_as_load(p.to_str().unwrap());
            n += 1;
        }
    }
    assert!(n >= 6, "expected the tiny models, found {n}");
}

#[test]
fn the_real_gemma_is_described_as_it_loads() {
    let path = named_model_path("gemma3-270m").unwrap();
    assert!(path.exists(), "the real model is missing at {}\nhint: run `cargo xtask fetch-model gemma3-270m`", path.display());
    same_as_load("gemma3-270m");
    assert_eq!(describe("gemma3-270m").unwrap().n_layers, 18);
}
