//! A reader for GGUF files (llama.cpp's weight format, versions 2 and 3).
//!
//! The file is memory-mapped; tensor data is only touched when a tensor is dequantized.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::ModelError;
use crate::quant::GgmlType;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// GGUF type 0.
    U8(u8),
    /// GGUF type 1.
    I8(i8),
    /// GGUF type 2.
    U16(u16),
    /// GGUF type 3.
    I16(i16),
    /// GGUF type 4.
    U32(u32),
    /// GGUF type 5.
    I32(i32),
    /// GGUF type 10.
    U64(u64),
    /// GGUF type 11.
    I64(i64),
    /// GGUF type 6.
    F32(f32),
    /// GGUF type 12.
    F64(f64),
    /// GGUF type 7, one byte, nonzero is true.
    Bool(bool),
    /// GGUF type 8, UTF-8 with a u64 length.
    String(String),
    /// GGUF type 9: elements of one type (e.g. `tokenizer.ggml.tokens`).
    Array(Vec<Value>),
}

impl Value {
    /// The value as an unsigned integer, whatever its stored width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float; integers convert too.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    /// The text of a `String`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The elements of an `Array`.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// Where one tensor lives in the file.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// llama.cpp's tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// ggml order: `dims[0]` is the fastest-varying (row length).
    pub dims: Vec<u64>,
    /// Storage format of the data.
    pub ty: GgmlType,
    /// Offset from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Number of values: the product of the dimensions.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Row-major shape (outermost first), as numpy / PyTorch see it.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// An open, memory-mapped GGUF file: its header parsed, its tensors' extents checked.
pub struct GgufFile {
    path: PathBuf,
    mmap: Mmap,
    /// GGUF format version, 2 or 3.
    pub version: u32,
    /// Every metadata key-value pair (`general.architecture`, `gemma3.block_count`, `tokenizer.ggml.*`, …).
    pub metadata: BTreeMap<String, Value>,
    /// Every tensor's location, by llama.cpp name.
    pub tensors: BTreeMap<String, TensorInfo>,
    data_start: usize,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile").field("path", &self.path).field("version", &self.version).field("tensors", &self.tensors.len()).finish()
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn err(&self, what: &str) -> ModelError {
        ModelError::Gguf { path: self.path.to_path_buf(), message: format!("{what} at byte {}", self.pos) }
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], ModelError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return Err(self.err("unexpected end of file"));
        };
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ModelError> {
        Ok(self.bytes(N)?.try_into().expect("length checked"))
    }

    fn u32(&mut self) -> Result<u32, ModelError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, ModelError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn len(&mut self) -> Result<usize, ModelError> {
        let n = self.u64()?;
        // A length longer than the file is corrupt; refuse before allocating.
        if n > self.buf.len() as u64 {
            return Err(self.err(&format!("implausible length {n}")));
        }
        Ok(n as usize)
    }

    fn string(&mut self) -> Result<String, ModelError> {
        let n = self.len()?;
        let b = self.bytes(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.err("string is not UTF-8"))
    }

    fn value(&mut self, ty: u32) -> Result<Value, ModelError> {
        Ok(match ty {
            0 => Value::U8(self.array::<1>()?[0]),
            1 => Value::I8(self.array::<1>()?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array()?)),
            3 => Value::I16(i16::from_le_bytes(self.array()?)),
            4 => Value::U32(self.u32()?),
            5 => Value::I32(i32::from_le_bytes(self.array()?)),
            6 => Value::F32(f32::from_le_bytes(self.array()?)),
            7 => Value::Bool(self.array::<1>()?[0] != 0),
            8 => Value::String(self.string()?),
            9 => {
                let elem = self.u32()?;
                let n = self.len()?;
                let mut v = Vec::with_capacity(n.min(1 << 20));
                for _ in 0..n {
                    v.push(self.value(elem)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(i64::from_le_bytes(self.array()?)),
            12 => Value::F64(f64::from_le_bytes(self.array()?)),
            other => return Err(self.err(&format!("unknown metadata value type {other}"))),
        })
    }
}

impl GgufFile {
    /// Maps the file and parses its header; fails on a bad magic, an unsupported version or
    /// tensor type, or a tensor whose data runs past the end of the file.
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        let file = File::open(path).map_err(|e| ModelError::io(path, e))?;
        // SAFETY: the map is read-only; a file truncated underneath us would fault, which is
        // the documented risk of every mmap-based model loader.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
        let mut c = Cursor { buf: &mmap, pos: 0, path };
        if c.bytes(4)? != b"GGUF" {
            return Err(c.err("not a GGUF file (bad magic)"));
        }
        let version = c.u32()?;
        if !(2..=3).contains(&version) {
            return Err(c.err(&format!("unsupported GGUF version {version}")));
        }
        let n_tensors = c.len()?;
        let n_kv = c.len()?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = c.string()?;
            let ty = c.u32()?;
            let value = c.value(ty)?;
            metadata.insert(key, value);
        }
        let mut tensors = BTreeMap::new();
        for _ in 0..n_tensors {
            let name = c.string()?;
            let n_dims = c.u32()? as usize;
            if n_dims > 4 {
                return Err(c.err(&format!("tensor {name} has {n_dims} dims")));
            }
            let dims = (0..n_dims).map(|_| c.u64()).collect::<Result<Vec<_>, _>>()?;
            let raw_ty = c.u32()?;
            let ty = GgmlType::from_id(raw_ty).ok_or_else(|| c.err(&format!("tensor {name} has unsupported ggml type {raw_ty}")))?;
            let offset = c.u64()?;
            tensors.insert(name.clone(), TensorInfo { name, dims, ty, offset });
        }
        let alignment = metadata.get("general.alignment").and_then(Value::as_u64).unwrap_or(32) as usize;
        let data_start = c.pos.div_ceil(alignment) * alignment;
        let out = GgufFile { path: path.to_path_buf(), mmap, version, metadata, tensors, data_start };
        for t in out.tensors.values() {
            out.raw(t)?;
        }
        Ok(out)
    }

    /// The path the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A metadata value, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// A metadata value that must be present.
    pub fn require(&self, key: &str) -> Result<&Value, ModelError> {
        self.get(key).ok_or_else(|| ModelError::MissingMetadata { path: self.path.clone(), key: key.to_string() })
    }

    /// A required integer metadata value, whatever its stored width.
    pub fn u64(&self, key: &str) -> Result<u64, ModelError> {
        self.require(key)?.as_u64().ok_or_else(|| self.bad(key))
    }

    /// A required numeric metadata value as f64.
    pub fn f64(&self, key: &str) -> Result<f64, ModelError> {
        self.require(key)?.as_f64().ok_or_else(|| self.bad(key))
    }

    /// A required array of strings (e.g. `tokenizer.ggml.tokens`).
    pub fn strings(&self, key: &str) -> Result<Vec<String>, ModelError> {
        let arr = self.require(key)?.as_array().ok_or_else(|| self.bad(key))?;
        arr.iter().map(|v| v.as_str().map(str::to_string).ok_or_else(|| self.bad(key))).collect()
    }

    fn bad(&self, key: &str) -> ModelError {
        ModelError::Gguf { path: self.path.clone(), message: format!("metadata {key} has the wrong type") }
    }

    /// The raw bytes of one tensor.
    pub fn raw(&self, t: &TensorInfo) -> Result<&[u8], ModelError> {
        let n = t.ty.byte_len(t.n_elements() as usize).ok_or_else(|| ModelError::Gguf {
            path: self.path.clone(),
            message: format!("tensor {} has {} values, not a whole number of {:?} blocks", t.name, t.n_elements(), t.ty),
        })?;
        let start = self.data_start + t.offset as usize;
        self.mmap
            .get(start..start + n)
            .ok_or_else(|| ModelError::Gguf { path: self.path.clone(), message: format!("tensor {} runs past the end of the file", t.name) })
    }

    /// A tensor dequantized to f32, row-major with [`TensorInfo::shape`].
    pub fn dequantize(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>), ModelError> {
        let t = self.tensors.get(name).ok_or_else(|| ModelError::MissingTensor { origin: self.path.display().to_string(), name: name.to_string() })?;
        let raw = self.raw(t)?;
        Ok((t.ty.dequantize(raw), t.shape()))
    }
}
