//! GGUF metadata arrays, stored as the file stores them: one typed vector per element type, and strings as one
//! buffer plus end offsets.
//!
//! Invariant: an array of `n` elements of a fixed-size type costs `n ×` that size in memory (a 45 MB `u8`
//! array costs 45 MB, not a general value per element), and a string array costs its bytes plus one offset
//! per element (the 8-byte length prefix the file spends on each). Elements are handed out as
//! [`GgufValue`]s made on demand.

use super::{GgufValue, GgufValueType};

/// Strings stored back to back in one buffer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StringArray {
    text: String,
    /// End offset of each string in `text`.
    ends: Vec<usize>,
}

impl StringArray {
    /// An empty array with room for `n` strings of `bytes` bytes in all.
    pub fn with_capacity(n: usize, bytes: usize) -> StringArray {
        StringArray { text: String::with_capacity(bytes), ends: Vec::with_capacity(n) }
    }

    /// Append `s`.
    pub fn push(&mut self, s: &str) {
        self.text.push_str(s);
        self.ends.push(self.text.len());
    }

    /// Number of strings.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// String `i`.
    pub fn get(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(&self.text[start..end])
    }

    /// The strings in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        (0..self.len()).map(|i| self.get(i).unwrap_or_default())
    }
}

impl<S: AsRef<str>> FromIterator<S> for StringArray {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> StringArray {
        let mut a = StringArray::default();
        for s in iter {
            a.push(s.as_ref());
        }
        a
    }
}

/// The elements of an array value; every element has the same type, and arrays do not nest.
#[derive(Clone, Debug, PartialEq)]
pub enum GgufArray {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    String(StringArray),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

/// Apply `$body` to the vector of any fixed-size variant, or `$strings` to a string array.
macro_rules! each {
    ($a:expr, $v:ident => $body:expr, $s:ident => $strings:expr) => {
        match $a {
            GgufArray::U8($v) => $body,
            GgufArray::I8($v) => $body,
            GgufArray::U16($v) => $body,
            GgufArray::I16($v) => $body,
            GgufArray::U32($v) => $body,
            GgufArray::I32($v) => $body,
            GgufArray::F32($v) => $body,
            GgufArray::Bool($v) => $body,
            GgufArray::U64($v) => $body,
            GgufArray::I64($v) => $body,
            GgufArray::F64($v) => $body,
            GgufArray::String($s) => $strings,
        }
    };
}

impl GgufArray {
    /// An empty array of `elem_type`; `None` for [`GgufValueType::Array`] (arrays do not nest).
    pub fn empty(elem_type: GgufValueType) -> Option<GgufArray> {
        use GgufValueType as T;
        Some(match elem_type {
            T::U8 => GgufArray::U8(Vec::new()),
            T::I8 => GgufArray::I8(Vec::new()),
            T::U16 => GgufArray::U16(Vec::new()),
            T::I16 => GgufArray::I16(Vec::new()),
            T::U32 => GgufArray::U32(Vec::new()),
            T::I32 => GgufArray::I32(Vec::new()),
            T::F32 => GgufArray::F32(Vec::new()),
            T::Bool => GgufArray::Bool(Vec::new()),
            T::String => GgufArray::String(StringArray::default()),
            T::U64 => GgufArray::U64(Vec::new()),
            T::I64 => GgufArray::I64(Vec::new()),
            T::F64 => GgufArray::F64(Vec::new()),
            T::Array => return None,
        })
    }

    /// An array of `elem_type` holding `values`; `None` when a value has another type (or is an array).
    pub fn from_values(elem_type: GgufValueType, values: &[GgufValue]) -> Option<GgufArray> {
        let mut a = GgufArray::empty(elem_type)?;
        for v in values {
            match (&mut a, v) {
                (GgufArray::U8(x), GgufValue::U8(v)) => x.push(*v),
                (GgufArray::I8(x), GgufValue::I8(v)) => x.push(*v),
                (GgufArray::U16(x), GgufValue::U16(v)) => x.push(*v),
                (GgufArray::I16(x), GgufValue::I16(v)) => x.push(*v),
                (GgufArray::U32(x), GgufValue::U32(v)) => x.push(*v),
                (GgufArray::I32(x), GgufValue::I32(v)) => x.push(*v),
                (GgufArray::F32(x), GgufValue::F32(v)) => x.push(*v),
                (GgufArray::Bool(x), GgufValue::Bool(v)) => x.push(*v),
                (GgufArray::String(x), GgufValue::String(v)) => x.push(v),
                (GgufArray::U64(x), GgufValue::U64(v)) => x.push(*v),
                (GgufArray::I64(x), GgufValue::I64(v)) => x.push(*v),
                (GgufArray::F64(x), GgufValue::F64(v)) => x.push(*v),
                _ => return None,
            }
        }
        Some(a)
    }

    /// The type of every element.
    pub fn elem_type(&self) -> GgufValueType {
        use GgufValueType as T;
        match self {
            GgufArray::U8(_) => T::U8,
            GgufArray::I8(_) => T::I8,
            GgufArray::U16(_) => T::U16,
            GgufArray::I16(_) => T::I16,
            GgufArray::U32(_) => T::U32,
            GgufArray::I32(_) => T::I32,
            GgufArray::F32(_) => T::F32,
            GgufArray::Bool(_) => T::Bool,
            GgufArray::String(_) => T::String,
            GgufArray::U64(_) => T::U64,
            GgufArray::I64(_) => T::I64,
            GgufArray::F64(_) => T::F64,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        each!(self, v => v.len(), s => s.len())
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i`, as a value.
    pub fn get(&self, i: usize) -> Option<GgufValue> {
        Some(match self {
            GgufArray::U8(v) => GgufValue::U8(*v.get(i)?),
            GgufArray::I8(v) => GgufValue::I8(*v.get(i)?),
            GgufArray::U16(v) => GgufValue::U16(*v.get(i)?),
            GgufArray::I16(v) => GgufValue::I16(*v.get(i)?),
            GgufArray::U32(v) => GgufValue::U32(*v.get(i)?),
            GgufArray::I32(v) => GgufValue::I32(*v.get(i)?),
            GgufArray::F32(v) => GgufValue::F32(*v.get(i)?),
            GgufArray::Bool(v) => GgufValue::Bool(*v.get(i)?),
            GgufArray::String(v) => GgufValue::String(v.get(i)?.to_string()),
            GgufArray::U64(v) => GgufValue::U64(*v.get(i)?),
            GgufArray::I64(v) => GgufValue::I64(*v.get(i)?),
            GgufArray::F64(v) => GgufValue::F64(*v.get(i)?),
        })
    }

    /// The first element.
    pub fn first(&self) -> Option<GgufValue> {
        self.get(0)
    }

    /// The elements in order, each made into a value on demand (a string element is copied).
    pub fn iter(&self) -> ArrayIter<'_> {
        ArrayIter { array: self, next: 0 }
    }

    /// The strings, if this is a string array.
    pub fn strings(&self) -> Option<&StringArray> {
        match self {
            GgufArray::String(s) => Some(s),
            _ => None,
        }
    }

    /// Bytes the elements take in a GGUF file (strings with their 8-byte length prefixes).
    pub fn encoded_len(&self) -> u64 {
        each!(self, v => std::mem::size_of_val(v.as_slice()) as u64, s => s.text.len() as u64 + 8 * s.len() as u64)
    }

    /// Append the elements as GGUF stores them (little-endian; strings with their u64 length).
    pub fn write_elements(&self, out: &mut Vec<u8>) {
        match self {
            GgufArray::U8(v) => out.extend_from_slice(v),
            GgufArray::I8(v) => out.extend(v.iter().map(|x| *x as u8)),
            GgufArray::U16(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            GgufArray::I16(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            GgufArray::U32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            GgufArray::I32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            GgufArray::F32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            GgufArray::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
            GgufArray::U64(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            GgufArray::I64(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            GgufArray::F64(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            GgufArray::String(s) => {
                for x in s.iter() {
                    out.extend_from_slice(&(x.len() as u64).to_le_bytes());
                    out.extend_from_slice(x.as_bytes());
                }
            }
        }
    }
}

impl From<Vec<String>> for GgufArray {
    fn from(v: Vec<String>) -> GgufArray {
        GgufArray::String(v.iter().collect())
    }
}

impl From<Vec<f32>> for GgufArray {
    fn from(v: Vec<f32>) -> GgufArray {
        GgufArray::F32(v)
    }
}

impl From<Vec<i32>> for GgufArray {
    fn from(v: Vec<i32>) -> GgufArray {
        GgufArray::I32(v)
    }
}

impl From<Vec<u32>> for GgufArray {
    fn from(v: Vec<u32>) -> GgufArray {
        GgufArray::U32(v)
    }
}

/// The elements of a [`GgufArray`] as values.
pub struct ArrayIter<'a> {
    array: &'a GgufArray,
    next: usize,
}

impl Iterator for ArrayIter<'_> {
    type Item = GgufValue;

    fn next(&mut self) -> Option<GgufValue> {
        let v = self.array.get(self.next)?;
        self.next += 1;
        Some(v)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.array.len().saturating_sub(self.next);
        (n, Some(n))
    }
}

impl ExactSizeIterator for ArrayIter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_sizes_match_the_file() {
        let s = |x: &str| GgufValue::String(x.into());
        let a = GgufArray::from_values(GgufValueType::String, &[s("a"), s(""), s("xyz")]).unwrap();
        assert_eq!(a.len(), 3);
        assert_eq!(a.iter().collect::<Vec<_>>(), [s("a"), s(""), s("xyz")]);
        assert_eq!(a.encoded_len(), 4 + 3 * 8);
        let mut out = Vec::new();
        a.write_elements(&mut out);
        assert_eq!(out.len() as u64, a.encoded_len());
        assert_eq!(&out[..9], &[1, 0, 0, 0, 0, 0, 0, 0, b'a']);
        let b = GgufArray::from_values(GgufValueType::I16, &[GgufValue::I16(-2), GgufValue::I16(7)]).unwrap();
        assert_eq!(b.encoded_len(), 4);
        let mut out = Vec::new();
        b.write_elements(&mut out);
        assert_eq!(out, [0xfe, 0xff, 7, 0]);
        assert_eq!(b.first(), Some(GgufValue::I16(-2)));
        assert!(GgufArray::from_values(GgufValueType::U32, &[GgufValue::I32(1)]).is_none());
        assert!(GgufArray::empty(GgufValueType::Array).is_none());
    }

    #[test]
    fn a_large_byte_array_costs_its_bytes() {
        let a = GgufArray::U8(vec![7; 1 << 20]);
        assert_eq!(a.encoded_len(), 1 << 20);
        // One byte per element: the enum holds a Vec<u8>, not a value per element.
        assert!(std::mem::size_of::<GgufArray>() <= 56);
    }
}
