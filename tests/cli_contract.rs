//! The `dissect` binary's contract with scripts and people: exit codes, data on stdout and
//! logs on stderr, `--json` on every stage, flags rejected with a message naming them, and a
//! stage whose outputs are current answering without loading the model.

use std::path::{Path, PathBuf};
use std::process::Output;

use dissect_tests::{dissect_command, scratch, workspace};

fn dissect_in(dir: &Path, args: &[&str]) -> Output {
    dissect_command().current_dir(dir).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "failed:\n{}", stderr(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}):\n{}", String::from_utf8_lossy(&o.stdout)))
}

/// A copy of the tiny random GPT-2 (config, weights, tokenizer): tests may take its tokenizer away.
fn tiny_model(dir: &Path) -> PathBuf {
    let src = workspace().join("crates/dissect-model/tests/fixtures/tiny-gpt2");
    let dst = dir.join("tiny-gpt2");
    std::fs::create_dir_all(&dst).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    dst
}

#[test]
fn counts_of_zero_are_rejected_with_the_flag_named() {
    let dir = scratch("zero");
    for args in [
        &["knockout", "--prompt", "The Eiffel Tower is in", "--subject", "Eiffel Tower", "--window", "0"][..],
        &["predict", "--prompt", "The Eiffel Tower is in", "--top-k", "0"][..],
        &["filter", "--dataset", "x.json", "--out", "o", "--limit", "0"][..],
        &["aggregate", "--input", "x", "--out", "o", "--resamples", "0"][..],
        &["experiments", "--input", "x", "--out", "o", "--chunk-size", "0"][..],
    ] {
        let o = dissect_in(&dir, args);
        assert_eq!(o.status.code(), Some(2), "{args:?} must be a usage error:\n{}", stderr(&o));
        let flag = args.iter().rev().nth(1).unwrap();
        assert!(stderr(&o).contains(flag) && stderr(&o).contains("at least 1"), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn an_unknown_configuration_name_is_a_usage_error_listing_the_names() {
    let dir = scratch("names");
    for (flag, allowed) in [("--projection", "logit-lens"), ("--screen", "top-k")] {
        let o = dissect_in(&dir, &["experiments", "--input", "x", "--out", "o", flag, "nonsense"]);
        assert_eq!(o.status.code(), Some(2), "{flag}: {}", stderr(&o));
        assert!(stderr(&o).contains(flag) && stderr(&o).contains(allowed), "{}", stderr(&o));
    }
}

#[test]
fn a_missing_input_names_its_flag_and_the_directory_it_was_resolved_from() {
    let dir = scratch("missing");
    let o = dissect_in(&dir, &["experiments", "--input", "nowhere/filtered.parquet", "--out", "out"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("nowhere/filtered.parquet does not exist (from --input)"), "{e}");
    assert!(e.contains("hint:") && e.contains(&dir.display().to_string()), "{e}");
    let o = dissect_in(&dir, &["filter", "--out", "out"]);
    assert!(stderr(&o).contains("--dataset is required without --pipeline"), "{}", stderr(&o));
}

#[test]
fn every_stage_prints_json_and_a_current_stage_does_not_load_the_model() {
    let dir = scratch("json");
    let model = tiny_model(&dir);
    let (m, data) = (model.to_str().unwrap(), workspace().join("data"));
    let dataset = data.join("known_1000.json");
    let filter = ["filter", "--model", m, "--dataset", dataset.to_str().unwrap(), "--out", "out", "--limit", "4", "--json"];
    let experiments = ["experiments", "knockout", "--model", m, "--input", "out/filtered", "--out", "out/experiments", "--json"];
    let cache = ["cache", "--model", m, "--input", "out/filtered", "--out", "out", "--json"];
    let run = |args: &[&str]| json(&dissect_in(&dir, args));

    let first: Vec<serde_json::Value> = [&filter[..], &experiments[..], &cache[..]].into_iter().map(run).collect();
    for (v, stage) in first.iter().zip(["filter", "experiments", "cache"]) {
        assert_eq!(v["stage"], stage, "{v}");
        // The tiny random model keeps no fact, so the cache has nothing to compute.
        assert_eq!(v["up_to_date"], stage == "cache" && v["records"] == 0, "{v}");
        assert!(v["outputs"].as_array().is_some_and(|o| !o.is_empty()), "{v}");
    }
    assert_eq!(first[0]["records"], 4);
    let agg = run(&["aggregate", "--input", "out/experiments", "--out", "out/report", "--json"]);
    assert!(agg.get("findings").is_some(), "{agg}");

    // Without its tokenizer the model cannot be loaded, but its header and weights can be
    // read: a current stage must answer from those alone.
    std::fs::rename(model.join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    for args in [&filter[..], &experiments[..], &cache[..]] {
        let o = dissect_in(&dir, args);
        let v = json(&o);
        assert_eq!(v["up_to_date"], true, "{args:?}: {v}");
        assert!(stderr(&o).contains("is up to date"), "{}", stderr(&o));
    }
    // --force recomputes, so it does load the model.
    let mut forced = experiments.to_vec();
    forced.push("--force");
    let o = dissect_in(&dir, &forced);
    assert_eq!(o.status.code(), Some(1), "--force must load the model:\n{}", stderr(&o));
    assert!(stderr(&o).contains("tokenizer.json"), "{}", stderr(&o));
}

#[test]
fn knockout_of_one_prompt_labels_layers_as_the_report_does() {
    let dir = scratch("knockout");
    let model = tiny_model(&dir);
    let args = ["knockout", "--model", model.to_str().unwrap(), "--prompt", "The Eiffel Tower is located in the city of", "--subject", "Eiffel Tower"];
    let o = dissect_in(&dir, &args);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[1].contains("1-based"), "{text}");
    let header: Vec<&str> = lines[2].split_whitespace().collect();
    // Without a pipeline: the report's sets that apply (GPT-2 prepends no BOS).
    assert_eq!(header, ["layer", "subject", "non_subject", "last", "non_subject_no_bos"], "{text}");
    assert_eq!(lines[3].split_whitespace().next(), Some("1"), "{text}");

    let mut with_json = args.to_vec();
    with_json.push("--json");
    let v = json(&dissect_in(&dir, &with_json));
    let rows = v["rows"].as_array().unwrap();
    assert!(rows.iter().all(|r| r["layer_1based"].as_u64() == r["layer"].as_u64().map(|l| l + 1)), "{v}");
    assert_eq!(rows.len(), 4 * v["layers"].as_u64().unwrap() as usize, "{v}");
}
