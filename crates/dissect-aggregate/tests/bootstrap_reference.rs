//! The bootstrap against numpy: `fixtures/make_bootstrap_reference.py` reimplements the
//! resampling scheme and computes the intervals with numpy; both sides draw the same indices,
//! so they must agree to rounding.

use std::path::Path;

use arrow_array::Float64Array;
use dissect_aggregate::bootstrap::{bootstrap, stream_seed, SplitMix64, Statistic};
use dissect_aggregate::{aggregate, AggregateConfig};
use dissect_data::parquet_io::{read_parquet, write_parquet_atomic};
use dissect_data::table::{KnockoutRow, Row};
use serde_json::Value;

fn reference() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bootstrap_reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * (1.0 + b.abs())
}

#[test]
fn splitmix64_agrees_with_the_reference() {
    let r = reference();
    let mut g = SplitMix64::new(1234567);
    for v in r["splitmix64_seed_1234567"].as_array().unwrap() {
        assert_eq!(g.next_u64().to_string(), v.as_str().unwrap());
    }
}

#[test]
fn intervals_equal_numpys_on_the_same_resamples() {
    let r = reference();
    let resamples = r["resamples"].as_u64().unwrap() as usize;
    let level = r["level"].as_f64().unwrap();
    let cases = r["cases"].as_array().unwrap();
    assert!(cases.len() >= 6);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let key = c["key"].as_str().unwrap();
        let seed = c["seed"].as_u64().unwrap();
        let sseed = stream_seed(seed, key);
        assert_eq!(sseed.to_string(), c["stream_seed"].as_str().unwrap(), "{name}: stream seed");
        let values: Vec<f64> = c["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let stat = match c["statistic"].as_str().unwrap() {
            "mean" => Statistic::Mean,
            _ => Statistic::Median,
        };
        let got = bootstrap(&values, stat, resamples, level, sseed);
        let want = &c["expected"];
        for (field, g) in [("value", got.value), ("ci_low", got.ci_low), ("ci_high", got.ci_high)] {
            let w = want[field].as_f64().unwrap();
            assert!(close(g, w), "{name}: {field} = {g}, numpy {w}");
        }
        assert!(got.ci_low <= got.value && got.value <= got.ci_high, "{name}: {got:?}");
    }
}

/// The same reference through the whole stage: a knockout cell written as Parquet comes out
/// of `aggregate` with numpy's interval (so the tables use the documented stream keys).
#[test]
fn a_table_cell_reproduces_the_reference() {
    let r = reference();
    let case = r["cases"].as_array().unwrap().iter().find(|c| c["name"] == "knockout_cell").unwrap();
    let values: Vec<f32> = case["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    let n = values.len();
    // Ids in scrambled order across two shards: the stage must sort them.
    let ids: Vec<u64> = (0..n as u64).map(|i| (i * 17) % n as u64).collect();
    for shard in 0..2u64 {
        let rows: Vec<usize> = (0..n).filter(|&i| ids[i] % 2 == shard).collect();
        // Record k carries the reference's k-th value, so in id order they are its list.
        let knockout: Vec<KnockoutRow> = rows
            .iter()
            .map(|&i| KnockoutRow {
                id: ids[i] as i64,
                layer: 3,
                positions: "subject".into(),
                window: 9,
                target_id: 1,
                p_base: 0.5,
                p_new: 0.5,
                pct_change: values[ids[i] as usize],
            })
            .collect();
        let batch = KnockoutRow::to_batch(&knockout);
        write_parquet_atomic(&input.join(format!("knockout/shard={shard:05}/part-0.parquet")), &[batch], &[]).unwrap();
    }
    let out = dir.path().join("out");
    aggregate(&input, &out, &AggregateConfig::default()).unwrap();
    let b = &read_parquet(&out.join("tables/knockout.parquet")).unwrap()[0];
    let col = |n: &str| b.column_by_name(n).unwrap().as_any().downcast_ref::<Float64Array>().unwrap().value(0);
    let want = &case["expected"];
    for field in ["ci_low", "ci_high"] {
        assert!(close(col(field), want[field].as_f64().unwrap()), "{field}: {} vs {}", col(field), want[field]);
    }
    assert!(close(col("mean"), want["value"].as_f64().unwrap()));
}
