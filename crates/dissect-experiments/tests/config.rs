//! The experiments configuration: what provenance records is what runs, and the notebook
//! settings file selects the notebook's arithmetic everywhere.

use dissect_experiments::knockout::BlockSet;
use dissect_experiments::stage::ExperimentsConfig;
use dissect_model::intervene::{EdgeBlocking, KnockoutMode};
use dissect_model::project::Projection;

#[test]
fn effective_configuration_carries_the_top_level_projection_and_the_resolved_constants() {
    let cfg = ExperimentsConfig { projection: Projection::LogitLens, ..ExperimentsConfig::default() };
    // Gemma 3 270M's depth: R = round(40 · 18 / 48) = 15, patching source 20 dropped.
    let e = cfg.effective(18);
    assert_eq!(e.extraction.projection, Projection::LogitLens);
    assert_eq!(e.patching.projection, Projection::LogitLens);
    assert_eq!(e.sublayer.projection, Projection::LogitLens);
    assert_eq!(e.sublayer.repr_layer, Some(15));
    assert_eq!(e.patching.sources, vec![0, 1, 5, 10]);
    let d = cfg.depth_scaling(18);
    assert_eq!(d["sublayer_repr_layer"], 15);
    assert_eq!(d["sublayer_read_hidden_state"], 16);
    assert_eq!(d["patching_sources_dropped"], serde_json::json!([20]));
    assert_eq!(d["projection"], "logit-lens");
    assert_eq!(d["extraction_blocking"], "pre_softmax");
    // The recorded JSON never shows a nested projection other than the one that ran.
    let json = serde_json::to_value(&e).unwrap();
    for key in ["extraction", "patching", "sublayer"] {
        assert_eq!(json[key]["projection"], "logit-lens", "{key}");
    }
}

#[test]
fn the_notebook_constants_apply_unscaled_on_48_layers() {
    let cfg = ExperimentsConfig::default();
    let e = cfg.effective(48);
    assert_eq!(e.sublayer.repr_layer, Some(40));
    assert_eq!(e.sublayer.read_layer(48), 41);
    assert_eq!(e.sublayer.span, 11);
    assert_eq!(e.knockout.window, 9);
    assert_eq!(e.patching.sources, vec![0, 1, 5, 10, 20]);
    // 12 layers (GPT-2 small): R = 10; never past the last block.
    assert_eq!(cfg.sublayer.repr_layer(12), 10);
    assert_eq!(cfg.sublayer.repr_layer(1), 0);
}

#[test]
fn notebook_settings_select_the_notebook_arithmetic() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipelines/notebook-settings.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let cfg: ExperimentsConfig = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(cfg.projection, Projection::Notebook);
    assert_eq!(cfg.extraction.blocking, EdgeBlocking::Notebook);
    assert!(cfg.extraction.blocked.contains(&BlockSet::NonSubjectAndLast));
    assert_eq!(cfg.knockout.sets, BlockSet::PAPER.to_vec());
    assert_eq!(cfg.sublayer.modes, vec![KnockoutMode::Notebook]);
    assert!(!cfg.enrichment.final_state);
    assert_eq!((cfg.attributes.top, cfg.attributes.keep), (500, 50));
}
