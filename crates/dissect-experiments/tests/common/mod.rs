//! What the Hugging Face reference tests share: reading the fixtures and collecting every
//! comparison per category (reported together, not stopped at the first failure).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dissect_experiments::enrichment::AttributesConfig;
use dissect_model::backend::Cpu;
use dissect_model::source::{load, Loaded};
use serde_json::Value;

pub type B = Cpu;

pub fn refs(file: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(file);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

pub fn model_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dissect-model/tests/fixtures").join(name)
}

pub fn load_tiny(name: &str) -> Loaded<B> {
    load::<B>(model_dir(name).to_str().unwrap(), &Default::default()).unwrap()
}

pub fn u(v: &Value) -> usize {
    v.as_u64().unwrap_or_else(|| panic!("not an integer: {v}")) as usize
}
pub fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}
pub fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}
pub fn arr(v: &Value) -> &Vec<Value> {
    v.as_array().unwrap_or_else(|| panic!("not an array: {v}"))
}
pub fn strings(v: &Value) -> Vec<String> {
    arr(v).iter().map(|x| s(x).to_string()).collect()
}

/// Collects every comparison; panics at the end with the failures of each category.
#[derive(Default)]
pub struct Check {
    pub counts: BTreeMap<String, usize>,
    failures: BTreeMap<String, Vec<String>>,
    near_ties: BTreeMap<String, usize>,
}

impl Check {
    pub fn ok(&mut self, cat: &str, cond: bool, msg: impl FnOnce() -> String) {
        *self.counts.entry(cat.to_string()).or_default() += 1;
        if !cond {
            self.failures.entry(cat.to_string()).or_default().push(msg());
        }
    }

    pub fn prob(&mut self, cat: &str, ours: f32, theirs: f64, what: impl FnOnce() -> String) {
        let d = (ours as f64 - theirs).abs();
        self.ok(cat, d <= 1e-4 * theirs.abs() || d <= 1e-5, || format!("{}: ours {ours} vs HF {theirs}", what()));
    }

    /// A rank / top-1 against a reference row with its near-tie band.
    pub fn rank(&mut self, cat: &str, rank: usize, top1: Option<u32>, r: &Value, what: impl Fn() -> String) {
        let (lo, hi, exact) = (u(&r["rank_lo"]), u(&r["rank_hi"]), u(&r["target_rank"]));
        if lo != hi {
            *self.near_ties.entry(cat.to_string()).or_default() += 1;
        }
        self.ok(cat, (lo..=hi).contains(&rank), || format!("{}: rank ours {rank} vs HF {exact} (band {lo}..={hi})", what()));
        if let Some(t) = top1 {
            let alts: Vec<u32> = arr(&r["top1_alts"]).iter().map(|x| u(x) as u32).collect();
            if alts.len() > 1 {
                *self.near_ties.entry(cat.to_string()).or_default() += 1;
            }
            self.ok(cat, alts.contains(&t), || format!("{}: top1 ours {t} vs HF {} (alts {alts:?})", what(), u(&r["top1"])));
        }
    }

    /// An attributes rate against a reference row (exact unless the cut-off is a near-tie).
    pub fn rate(&mut self, cat: &str, ours: f32, r: &Value, what: impl FnOnce() -> String) {
        // A null margin: no order change inside the band can alter the kept set.
        if r["margin"].as_f64().is_some_and(|m| m <= f(&r["eps"])) {
            *self.near_ties.entry(cat.to_string()).or_default() += 1;
            *self.counts.entry(cat.to_string()).or_default() += 1;
            return;
        }
        let theirs = f(&r["rate"]);
        self.ok(cat, (ours as f64 - theirs).abs() <= 1e-4, || format!("{}: rate ours {ours} vs HF {theirs} (HF kept {})", what(), r["kept"]));
    }

    pub fn finish(self) {
        for (cat, n) in &self.counts {
            let ties = self.near_ties.get(cat).copied().unwrap_or(0);
            let bad = self.failures.get(cat).map_or(0, Vec::len);
            eprintln!("{cat:<40} {n:>6} compared, {bad:>4} failed, {ties:>3} near-ties");
        }
        if !self.failures.is_empty() {
            let mut msg = String::new();
            for (cat, fails) in &self.failures {
                msg += &format!("\n{cat}: {} failures, e.g.\n", fails.len());
                for m in fails.iter().take(4) {
                    msg += &format!("    {m}\n");
                }
            }
            panic!("experiments differ from the Hugging Face reference:{msg}");
        }
    }
}

/// The attributes-rate constants of a reference (`{"top", "keep", "min_len_exclusive"}`).
pub fn attributes(a: &Value) -> AttributesConfig {
    AttributesConfig { top: u(&a["top"]), keep: u(&a["keep"]), min_len_exclusive: u(&a["min_len_exclusive"]) }
}
