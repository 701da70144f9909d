//! The on-disk form of the cache: one row per (record, layer, position kind, site), the vector
//! as a `FixedSizeList` of the hidden size, and the host-side record it is built from.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, FixedSizeListArray, Float16Array, Float32Array, RecordBatch, StringArray, UInt32Array, UInt64Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use dissect_data::PositionKind;
use half::f16;
use serde::{Deserialize, Serialize};

use crate::error::CacheError;

/// A recorded site. The names are part of the on-disk format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Site {
    /// The residual stream: `hidden_states[layer]`, the input of block `layer`, and at
    /// `layer = n_layers` the final residual before the final norm.
    Residual,
    /// What the MHSA sublayer of block `layer` adds to the residual stream (after the output
    /// projection and any post-attention norm).
    AttnOut,
    /// What the MLP sublayer of block `layer` adds to the residual stream.
    MlpOut,
}

impl Site {
    /// Every site, in the order a part lists them for a record.
    pub const ALL: [Site; 3] = [Site::Residual, Site::AttnOut, Site::MlpOut];

    /// The value of the `site` column: `residual`, `attn_out` or `mlp_out`.
    pub fn name(self) -> &'static str {
        match self {
            Site::Residual => "residual",
            Site::AttnOut => "attn_out",
            Site::MlpOut => "mlp_out",
        }
    }
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Site {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Site::ALL.into_iter().find(|x| x.name() == s).ok_or_else(|| format!("unknown site `{s}`\nhint: one of residual, attn_out, mlp_out"))
    }
}

/// How vectors are stored. The model always computes in f32; f16 halves the files at the
/// cost of about three significant digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreDtype {
    /// 4 bytes a value, exactly what the model computed; the default.
    #[default]
    F32,
    /// 2 bytes a value (IEEE half); a finite value beyond f16's range (about ±65504) is refused, not stored as infinity.
    F16,
}

impl StoreDtype {
    /// `f32` or `f16`, as `--dtype` takes it and the `dissect.cache.vector_dtype` footer entry records it.
    pub fn name(self) -> &'static str {
        match self {
            StoreDtype::F32 => "f32",
            StoreDtype::F16 => "f16",
        }
    }

    fn arrow(self) -> DataType {
        match self {
            StoreDtype::F32 => DataType::Float32,
            StoreDtype::F16 => DataType::Float16,
        }
    }
}

impl FromStr for StoreDtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(StoreDtype::F32),
            "f16" => Ok(StoreDtype::F16),
            other => Err(format!("unknown cache dtype `{other}`\nhint: f32 or f16")),
        }
    }
}

impl fmt::Display for StoreDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The residual stream of one record at one position kind, every layer.
#[derive(Debug, Clone, PartialEq)]
pub struct KindResidual {
    /// The position's index in the input ids (BOS included).
    pub token_index: usize,
    /// `[n_layers + 1, hidden]`, row-major: `hidden_states[0..=n_layers]`.
    pub values: Vec<f32>,
}

/// Everything the cache holds about one record, on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordActivations {
    /// The record's `known_id`.
    pub id: u64,
    /// Number of transformer blocks (HF `num_hidden_layers` / `n_layer`); the residual has `n_layers + 1` rows.
    pub n_layers: usize,
    /// Width of every vector (HF `hidden_size` / `n_embd`).
    pub hidden: usize,
    /// Every position kind the prompt has ([`PositionKind::AfterSubject`] is absent when the
    /// subject ends the prompt). Kinds may share a token index.
    pub residual: BTreeMap<PositionKind, KindResidual>,
    /// `[n_layers, hidden]` at the last position, row `l` what block `l`'s MHSA added ([`Site::AttnOut`]).
    pub attn_out: Vec<f32>,
    /// `[n_layers, hidden]` at the last position, row `l` what block `l`'s MLP added ([`Site::MlpOut`]).
    pub mlp_out: Vec<f32>,
}

impl RecordActivations {
    /// The token index of the last position, where `attn_out` and `mlp_out` were read.
    pub fn last(&self) -> usize {
        self.residual[&PositionKind::Last].token_index
    }

    fn rows(&self) -> usize {
        self.residual.len() * (self.n_layers + 1) + 2 * self.n_layers
    }
}

/// The columns of every cache part: `id`, `layer`, `position` ([`PositionKind::name`]),
/// `site` ([`Site::name`]), `token_index` (the position's index in the input ids, BOS
/// included, so a reader can check it against the filter stage's spans) and `vector`.
pub fn cache_schema(hidden: usize, dtype: StoreDtype) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::UInt64, false),
        Field::new("layer", DataType::UInt32, false),
        Field::new("position", DataType::Utf8, false),
        Field::new("site", DataType::Utf8, false),
        Field::new("token_index", DataType::UInt32, false),
        Field::new("vector", vector_type(hidden, dtype), false),
    ]))
}

fn vector_type(hidden: usize, dtype: StoreDtype) -> DataType {
    DataType::FixedSizeList(Arc::new(Field::new("item", dtype.arrow(), false)), to_i32(hidden))
}

fn to_i32(n: usize) -> i32 {
    i32::try_from(n).expect("hidden size fits in i32")
}

/// The rows of `records` (all of one hidden size), per record: the residual at each position
/// kind over layers `0..=n_layers`, then `attn_out` and `mlp_out` over layers `0..n_layers`.
/// With [`StoreDtype::F16`] a finite value beyond f16's range is an error, not an infinity.
pub fn to_batch(records: &[RecordActivations], hidden: usize, dtype: StoreDtype) -> Result<RecordBatch, CacheError> {
    let n_rows: usize = records.iter().map(RecordActivations::rows).sum();
    let mut id = Vec::with_capacity(n_rows);
    let mut layer = Vec::with_capacity(n_rows);
    let mut position = Vec::with_capacity(n_rows);
    let mut site = Vec::with_capacity(n_rows);
    let mut token = Vec::with_capacity(n_rows);
    let mut values: Vec<f32> = Vec::with_capacity(n_rows * hidden);
    for r in records {
        assert_eq!(r.hidden, hidden, "record {} has hidden size {}, the batch {hidden}", r.id, r.hidden);
        let mut push = |s: Site, kind: PositionKind, tok: usize, l: usize, v: &[f32]| {
            id.push(r.id);
            layer.push(l as u32);
            position.push(kind.name());
            site.push(s.name());
            token.push(tok as u32);
            values.extend_from_slice(v);
        };
        for (&kind, res) in &r.residual {
            for (l, v) in res.values.chunks_exact(hidden).enumerate() {
                push(Site::Residual, kind, res.token_index, l, v);
            }
        }
        let last = r.last();
        for (s, data) in [(Site::AttnOut, &r.attn_out), (Site::MlpOut, &r.mlp_out)] {
            for (l, v) in data.chunks_exact(hidden).enumerate() {
                push(s, PositionKind::Last, last, l, v);
            }
        }
    }
    let values: ArrayRef = match dtype {
        StoreDtype::F32 => Arc::new(Float32Array::from(values)),
        StoreDtype::F16 => {
            if let Some(i) = values.iter().position(|&x| x.is_finite() && f16::from_f32(x).is_infinite()) {
                let row = i / hidden;
                let site = Site::ALL.into_iter().find(|s| s.name() == site[row]).expect("own site name");
                let kind = PositionKind::ALL.into_iter().find(|k| k.name() == position[row]).expect("own kind name");
                return Err(CacheError::F16Overflow { id: id[row], site: site.name(), layer: layer[row] as usize, position: kind.name(), value: values[i] });
            }
            Arc::new(Float16Array::from_iter_values(values.iter().map(|&x| f16::from_f32(x))))
        }
    };
    let DataType::FixedSizeList(item, size) = vector_type(hidden, dtype) else { unreachable!("vector_type is a FixedSizeList") };
    let vector = FixedSizeListArray::try_new(item, size, values, None).expect("values are rows × hidden");
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from(id)),
        Arc::new(UInt32Array::from(layer)),
        Arc::new(StringArray::from(position)),
        Arc::new(StringArray::from(site)),
        Arc::new(UInt32Array::from(token)),
        Arc::new(vector),
    ];
    Ok(RecordBatch::try_new(cache_schema(hidden, dtype), columns).expect("columns match cache_schema"))
}

/// The hidden size and storage dtype of a cache table's `vector` column.
pub fn vector_layout(schema: &Schema, origin: &Path) -> Result<(usize, StoreDtype), CacheError> {
    let bad = |message: String| CacheError::Format { path: origin.to_path_buf(), message };
    let field = schema.field_with_name("vector").map_err(|_| bad("no `vector` column: not a cache part".into()))?;
    match field.data_type() {
        DataType::FixedSizeList(item, size) if *size > 0 => {
            let dtype = match item.data_type() {
                DataType::Float32 => StoreDtype::F32,
                DataType::Float16 => StoreDtype::F16,
                other => return Err(bad(format!("`vector` holds {other}, not f32 or f16"))),
            };
            Ok((*size as usize, dtype))
        }
        other => Err(bad(format!("`vector` has type {other}, not a FixedSizeList"))),
    }
}

/// One record's rows while a table is read.
#[derive(Default)]
struct Partial {
    residual: BTreeMap<PositionKind, (usize, BTreeMap<usize, Vec<f32>>)>,
    attn: BTreeMap<usize, Vec<f32>>,
    mlp: BTreeMap<usize, Vec<f32>>,
}

/// Reads [`to_batch`]'s rows back, records in the order of their first row; `origin` names
/// the file in errors. Every record must be complete: each site and kind at every layer.
pub fn from_batches(batches: &[RecordBatch], origin: &Path) -> Result<Vec<RecordActivations>, CacheError> {
    let bad = |message: String| CacheError::Format { path: origin.to_path_buf(), message };
    let mut order: Vec<u64> = Vec::new();
    let mut partial: BTreeMap<u64, Partial> = BTreeMap::new();
    let mut hidden = None;
    for b in batches {
        let (d, _) = vector_layout(&b.schema(), origin)?;
        if *hidden.get_or_insert(d) != d {
            return Err(bad("batches of different hidden sizes".into()));
        }
        let col = |name: &str| b.column_by_name(name).ok_or_else(|| bad(format!("no `{name}` column: not a cache part")));
        let typed = |name: &str| -> Result<ArrayRef, CacheError> {
            let c = col(name)?;
            if c.null_count() > 0 {
                return Err(bad(format!("column `{name}` has nulls")));
            }
            Ok(c.clone())
        };
        let (id_c, layer_c, pos_c, site_c, tok_c, vec_c) =
            (typed("id")?, typed("layer")?, typed("position")?, typed("site")?, typed("token_index")?, typed("vector")?);
        let wrong = |name: &str| bad(format!("column `{name}` has the wrong type"));
        let ids = id_c.as_any().downcast_ref::<UInt64Array>().ok_or_else(|| wrong("id"))?;
        let layers = layer_c.as_any().downcast_ref::<UInt32Array>().ok_or_else(|| wrong("layer"))?;
        let positions = pos_c.as_any().downcast_ref::<StringArray>().ok_or_else(|| wrong("position"))?;
        let sites = site_c.as_any().downcast_ref::<StringArray>().ok_or_else(|| wrong("site"))?;
        let tokens = tok_c.as_any().downcast_ref::<UInt32Array>().ok_or_else(|| wrong("token_index"))?;
        let list = vec_c.as_any().downcast_ref::<FixedSizeListArray>().ok_or_else(|| wrong("vector"))?;
        let flat: Vec<f32> = if let Some(v) = list.values().as_any().downcast_ref::<Float32Array>() {
            v.values().to_vec()
        } else if let Some(v) = list.values().as_any().downcast_ref::<Float16Array>() {
            v.values().iter().map(|x| x.to_f32()).collect()
        } else {
            return Err(wrong("vector"));
        };
        for i in 0..b.num_rows() {
            let id = ids.value(i);
            let p = partial.entry(id).or_insert_with(|| {
                order.push(id);
                Partial::default()
            });
            let at = list.value_offset_at(i);
            let row = flat[at..at + d].to_vec();
            let layer = layers.value(i) as usize;
            let kind: PositionKind = positions.value(i).parse().map_err(|e| bad(format!("row {i}: {e}")))?;
            let site: Site = sites.value(i).parse().map_err(|e: String| bad(format!("row {i}: {e}")))?;
            let token = tokens.value(i) as usize;
            let duplicate = match site {
                Site::Residual => {
                    let (tok, layers) = p.residual.entry(kind).or_insert_with(|| (token, BTreeMap::new()));
                    if *tok != token {
                        return Err(bad(format!("record {id}: position {kind} at token {token} and at {tok}")));
                    }
                    layers.insert(layer, row).is_some()
                }
                Site::AttnOut | Site::MlpOut if kind != PositionKind::Last => {
                    return Err(bad(format!("record {id}: {site} at position {kind}; the cache holds it only at `last`")))
                }
                Site::AttnOut => p.attn.insert(layer, row).is_some(),
                Site::MlpOut => p.mlp.insert(layer, row).is_some(),
            };
            if duplicate {
                return Err(bad(format!("record {id}: two rows for {site} at layer {layer}, position {kind}")));
            }
        }
    }
    let hidden = hidden.unwrap_or(0);
    let mut out = Vec::with_capacity(order.len());
    for id in order {
        let p = partial.remove(&id).expect("every ordered id has rows");
        let n_layers = p.attn.len();
        let incomplete = |what: String| bad(format!("record {id}: {what}"));
        let contiguous = |m: &BTreeMap<usize, Vec<f32>>, n: usize| m.len() == n && m.keys().copied().eq(0..n);
        if !contiguous(&p.attn, n_layers) || !contiguous(&p.mlp, n_layers) {
            return Err(incomplete(format!(
                "attn_out at layers {:?} and mlp_out at {:?}, expected 0..{n_layers} each",
                p.attn.keys().collect::<Vec<_>>(),
                p.mlp.keys().collect::<Vec<_>>()
            )));
        }
        let mut residual = BTreeMap::new();
        for (kind, (token_index, layers)) in p.residual {
            if !contiguous(&layers, n_layers + 1) {
                return Err(incomplete(format!("residual at {kind} has layers {:?}, expected 0..={n_layers}", layers.keys().collect::<Vec<_>>())));
            }
            residual.insert(kind, KindResidual { token_index, values: layers.into_values().flatten().collect() });
        }
        if !residual.contains_key(&PositionKind::Last) {
            return Err(incomplete("no residual at the last position".into()));
        }
        out.push(RecordActivations {
            id,
            n_layers,
            hidden,
            residual,
            attn_out: p.attn.into_values().flatten().collect(),
            mlp_out: p.mlp.into_values().flatten().collect(),
        });
    }
    Ok(out)
}
