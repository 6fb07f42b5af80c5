//! GGUF metadata values: every scalar type, strings, and (nested) arrays.

use std::fmt;

/// A metadata value as stored in a GGUF file.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    /// An array, with the element type it was stored with (so that empty arrays round-trip).
    Array(Array),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// The GGUF type id of a metadata value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    /// The type for a stored id, if valid.
    pub fn from_id(id: u32) -> Option<Self> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// The fewest bytes one value of this type can take in a file (used to bound array
    /// counts before allocating).
    pub fn min_encoded_bytes(self) -> usize {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 12,
        }
    }
}

/// A metadata array, kept compact: numbers and booleans as the file's little-endian bytes
/// (one byte per `u8`, not one enum per element), strings in one buffer. A hostile file's
/// array then costs about what its bytes do, never tens of times more.
#[derive(Clone, Debug, PartialEq)]
pub enum Array {
    /// Fixed-width elements of type `ty`, `width(ty)` bytes each, little-endian.
    Scalars {
        /// The element type.
        ty: ValueType,
        /// The elements' bytes.
        bytes: Vec<u8>,
    },
    /// Strings, concatenated, with each one's end offset in `text`.
    Strings {
        /// The strings, back to back.
        text: String,
        /// Where each ends.
        ends: Vec<usize>,
    },
    /// Arrays of arrays.
    Nested(Vec<Array>),
}

impl ValueType {
    /// Bytes of one element of a fixed-width type (`None` for strings and arrays).
    pub fn width(self) -> Option<usize> {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => Some(1),
            U16 | I16 => Some(2),
            U32 | I32 | F32 => Some(4),
            U64 | I64 | F64 => Some(8),
            String | Array => None,
        }
    }
}

/// A fixed-width value from its little-endian bytes (`b.len()` is the type's width).
fn scalar(ty: ValueType, b: &[u8]) -> Value {
    let a = |n: usize| -> [u8; 8] {
        let mut x = [0u8; 8];
        x[..n].copy_from_slice(&b[..n]);
        x
    };
    match ty {
        ValueType::U8 => Value::U8(b[0]),
        ValueType::I8 => Value::I8(b[0] as i8),
        ValueType::Bool => Value::Bool(b[0] != 0),
        ValueType::U16 => Value::U16(u16::from_le_bytes([b[0], b[1]])),
        ValueType::I16 => Value::I16(i16::from_le_bytes([b[0], b[1]])),
        ValueType::U32 => Value::U32(u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ValueType::I32 => Value::I32(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ValueType::F32 => Value::F32(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ValueType::U64 => Value::U64(u64::from_le_bytes(a(8))),
        ValueType::I64 => Value::I64(i64::from_le_bytes(a(8))),
        ValueType::F64 => Value::F64(f64::from_le_bytes(a(8))),
        ValueType::String | ValueType::Array => unreachable!("not a fixed-width type"),
    }
}

/// A fixed-width value's little-endian bytes.
pub(super) fn scalar_bytes(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::String(_) | Value::Array(_) => {}
    }
}

impl Array {
    /// An array of `items`, all of type `ty` (`None` when one is not).
    pub fn from_values(ty: ValueType, items: Vec<Value>) -> Option<Array> {
        if items.iter().any(|v| v.value_type() != ty) {
            return None;
        }
        Some(match ty {
            ValueType::String => {
                let mut text = String::new();
                let mut ends = Vec::with_capacity(items.len());
                for v in &items {
                    text.push_str(v.as_str().unwrap_or_default());
                    ends.push(text.len());
                }
                Array::Strings { text, ends }
            }
            ValueType::Array => Array::Nested(
                items
                    .into_iter()
                    .filter_map(|v| match v {
                        Value::Array(a) => Some(a),
                        _ => None,
                    })
                    .collect(),
            ),
            _ => {
                let mut bytes = Vec::new();
                for v in &items {
                    scalar_bytes(v, &mut bytes);
                }
                Array::Scalars { ty, bytes }
            }
        })
    }

    /// The element type.
    pub fn elem_type(&self) -> ValueType {
        match self {
            Array::Scalars { ty, .. } => *ty,
            Array::Strings { .. } => ValueType::String,
            Array::Nested(_) => ValueType::Array,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Array::Scalars { ty, bytes } => bytes.len() / ty.width().unwrap_or(1),
            Array::Strings { ends, .. } => ends.len(),
            Array::Nested(a) => a.len(),
        }
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// String element `i`, when this is an array of strings.
    pub fn str(&self, i: usize) -> Option<&str> {
        match self {
            Array::Strings { text, ends } => {
                let end = *ends.get(i)?;
                let start = if i == 0 { 0 } else { ends[i - 1] };
                text.get(start..end)
            }
            _ => None,
        }
    }

    /// Element `i` as a value (strings and nested arrays are copied).
    pub fn get(&self, i: usize) -> Option<Value> {
        match self {
            Array::Scalars { ty, bytes } => {
                let w = ty.width()?;
                let b = bytes.get(i * w..(i + 1) * w)?;
                Some(scalar(*ty, b))
            }
            Array::Strings { .. } => self.str(i).map(|s| Value::String(s.to_string())),
            Array::Nested(a) => a.get(i).cloned().map(Value::Array),
        }
    }

    /// The elements as values (strings and nested arrays are copied).
    pub fn iter(&self) -> impl Iterator<Item = Value> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

impl Value {
    /// An array of `items`, all of type `ty`.
    ///
    /// # Panics
    /// When an item is of another type (a programming error of the caller).
    pub fn array(ty: ValueType, items: Vec<Value>) -> Value {
        Value::Array(Array::from_values(ty, items).expect("every item of the array's type"))
    }

    /// This value's type id.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(..) => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }

    /// The value as an unsigned integer, when it is a non-negative integer of any width.
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

    /// The value as a signed integer, when it is an integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// The value as a float, when it is a float or an integer.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// The value as a string slice.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a bool.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The array, when the value is one.
    pub fn as_array(&self) -> Option<&Array> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// A short human-readable rendering; long arrays are summarised.
    pub fn summary(&self) -> String {
        match self {
            Value::String(s) if s.chars().count() > 60 => {
                format!("{:?}…", s.chars().take(60).collect::<String>())
            }
            Value::String(s) => format!("{s:?}"),
            Value::Array(a) if a.len() > 6 => {
                format!("[{:?} x {}]", a.elem_type(), a.len())
            }
            Value::Array(a) => {
                let parts: Vec<String> = a.iter().map(|v| v.summary()).collect();
                format!("[{}]", parts.join(", "))
            }
            other => other.to_string(),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::U8(v) => write!(f, "{v}"),
            Value::I8(v) => write!(f, "{v}"),
            Value::U16(v) => write!(f, "{v}"),
            Value::I16(v) => write!(f, "{v}"),
            Value::U32(v) => write!(f, "{v}"),
            Value::I32(v) => write!(f, "{v}"),
            Value::F32(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::String(v) => write!(f, "{v}"),
            Value::U64(v) => write!(f, "{v}"),
            Value::I64(v) => write!(f, "{v}"),
            Value::F64(v) => write!(f, "{v}"),
            Value::Array(..) => f.write_str(&self.summary()),
        }
    }
}

impl Value {
    /// JSON rendering for `--format json` reports; arrays longer than `max_items` are
    /// summarised as `{"type": ..., "len": ...}`.
    pub fn to_json(&self, max_items: usize) -> serde_json::Value {
        use serde_json::json;
        match self {
            Value::U8(v) => json!(v),
            Value::I8(v) => json!(v),
            Value::U16(v) => json!(v),
            Value::I16(v) => json!(v),
            Value::U32(v) => json!(v),
            Value::I32(v) => json!(v),
            Value::F32(v) => json!(v),
            Value::Bool(v) => json!(v),
            Value::String(v) => json!(v),
            Value::U64(v) => json!(v),
            Value::I64(v) => json!(v),
            Value::F64(v) => json!(v),
            Value::Array(a) if a.len() > max_items => {
                json!({"type": format!("{:?}", a.elem_type()), "len": a.len()})
            }
            Value::Array(a) => {
                serde_json::Value::Array(a.iter().map(|v| v.to_json(max_items)).collect())
            }
        }
    }
}
