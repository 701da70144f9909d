//! How a Rust value maps to an Arrow column, for [`super::Row`]'s derived schema.

use std::sync::Arc;

use arrow_array::builder::{Int32Builder, ListBuilder, StringBuilder};
use arrow_array::{Array, ArrayRef, BooleanArray, Float32Array, Int32Array, Int64Array, ListArray, StringArray};
use arrow_schema::{DataType, Field};

/// A type that is stored as one Arrow column.
pub trait Column: Sized {
    /// Whether the column may hold nulls (only `Option`s do).
    const NULLABLE: bool = false;

    /// The column's Arrow type.
    fn data_type() -> DataType;

    /// The column for these values, in order.
    fn array<'a>(values: impl Iterator<Item = &'a Self>) -> ArrayRef
    where
        Self: 'a;

    /// The values back; an error message when the column has another type or nulls.
    fn values(array: &dyn Array) -> Result<Vec<Self>, String>;
}

fn downcast<T: Array + 'static>(array: &dyn Array, nullable: bool) -> Result<&T, String> {
    let typed = array.as_any().downcast_ref::<T>().ok_or_else(|| format!("has type {}", array.data_type()))?;
    if !nullable && array.null_count() > 0 {
        return Err("has nulls".into());
    }
    Ok(typed)
}

macro_rules! primitive_column {
    ($ty:ty, $array:ty, $data_type:expr) => {
        impl Column for $ty {
            fn data_type() -> DataType {
                $data_type
            }
            fn array<'a>(values: impl Iterator<Item = &'a Self>) -> ArrayRef {
                Arc::new(<$array>::from_iter_values(values.copied()))
            }
            fn values(array: &dyn Array) -> Result<Vec<Self>, String> {
                Ok(downcast::<$array>(array, false)?.values().to_vec())
            }
        }
    };
}

primitive_column!(i64, Int64Array, DataType::Int64);
primitive_column!(i32, Int32Array, DataType::Int32);
primitive_column!(f32, Float32Array, DataType::Float32);

impl Column for bool {
    fn data_type() -> DataType {
        DataType::Boolean
    }
    fn array<'a>(values: impl Iterator<Item = &'a Self>) -> ArrayRef {
        Arc::new(values.map(|v| Some(*v)).collect::<BooleanArray>())
    }
    fn values(array: &dyn Array) -> Result<Vec<Self>, String> {
        Ok(downcast::<BooleanArray>(array, false)?.iter().map(|v| v.unwrap_or_default()).collect())
    }
}

impl Column for String {
    fn data_type() -> DataType {
        DataType::Utf8
    }
    fn array<'a>(values: impl Iterator<Item = &'a Self>) -> ArrayRef {
        Arc::new(values.map(|v| Some(v.as_str())).collect::<StringArray>())
    }
    fn values(array: &dyn Array) -> Result<Vec<Self>, String> {
        Ok(downcast::<StringArray>(array, false)?.iter().map(|v| v.unwrap_or_default().to_string()).collect())
    }
}

/// A nullable `Int32`: "not applicable" (the sublayer knockout's no-intervention row).
impl Column for Option<i32> {
    const NULLABLE: bool = true;
    fn data_type() -> DataType {
        DataType::Int32
    }
    fn array<'a>(values: impl Iterator<Item = &'a Self>) -> ArrayRef {
        Arc::new(values.copied().collect::<Int32Array>())
    }
    fn values(array: &dyn Array) -> Result<Vec<Self>, String> {
        Ok(downcast::<Int32Array>(array, true)?.iter().collect())
    }
}

fn list_of(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", item, true)))
}

fn list_items(array: &dyn Array) -> Result<Vec<ArrayRef>, String> {
    let list = downcast::<ListArray>(array, false)?;
    Ok((0..list.len()).map(|i| list.value(i)).collect())
}

impl Column for Vec<i32> {
    fn data_type() -> DataType {
        list_of(DataType::Int32)
    }
    fn array<'a>(values: impl Iterator<Item = &'a Self>) -> ArrayRef {
        let mut b = ListBuilder::new(Int32Builder::new());
        for v in values {
            b.values().append_slice(v);
            b.append(true);
        }
        Arc::new(b.finish())
    }
    fn values(array: &dyn Array) -> Result<Vec<Self>, String> {
        list_items(array)?.iter().map(|item| <i32 as Column>::values(item.as_ref()).map_err(|e| format!("item {e}"))).collect()
    }
}

impl Column for Vec<String> {
    fn data_type() -> DataType {
        list_of(DataType::Utf8)
    }
    fn array<'a>(values: impl Iterator<Item = &'a Self>) -> ArrayRef {
        let mut b = ListBuilder::new(StringBuilder::new());
        for v in values {
            for s in v {
                b.values().append_value(s);
            }
            b.append(true);
        }
        Arc::new(b.finish())
    }
    fn values(array: &dyn Array) -> Result<Vec<Self>, String> {
        list_items(array)?.iter().map(|item| <String as Column>::values(item.as_ref()).map_err(|e| format!("item {e}"))).collect()
    }
}
