//! The frame header and attribute area of a slot (spec §3.5 and §3.6).
//!
//! Bytes in shared memory come from another process, so decoding treats them as
//! untrusted: every length is checked against its capacity and malformed input gives a
//! [`FrameError`], never a panic or an out-of-bounds read.

use super::layout::{
    frame_field as f, ATTR_CAPACITY, ATTR_OFFSET, FRAME_AREA_SIZE, FRAME_HEADER_OFFSET,
};
use std::fmt;

/// Pixel type of a frame's payload: the integer and float types areaDetector serves
/// (NDDataType), little-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    U8,
    U16,
    U32,
    F32,
    I8,
    I16,
    I32,
    I64,
    U64,
    F64,
}

impl Dtype {
    /// Every dtype, in code order.
    pub const ALL: [Dtype; 10] = [
        Dtype::U8,
        Dtype::U16,
        Dtype::U32,
        Dtype::F32,
        Dtype::I8,
        Dtype::I16,
        Dtype::I32,
        Dtype::I64,
        Dtype::U64,
        Dtype::F64,
    ];

    /// The code stored in the frame header (spec §3.5).
    pub fn code(self) -> u16 {
        match self {
            Dtype::U8 => 1,
            Dtype::U16 => 2,
            Dtype::U32 => 3,
            Dtype::F32 => 4,
            Dtype::I8 => 5,
            Dtype::I16 => 6,
            Dtype::I32 => 7,
            Dtype::I64 => 8,
            Dtype::U64 => 9,
            Dtype::F64 => 10,
        }
    }

    pub fn from_code(code: u16) -> Option<Dtype> {
        Dtype::ALL.into_iter().find(|d| d.code() == code)
    }

    pub fn size(self) -> usize {
        match self {
            Dtype::U8 | Dtype::I8 => 1,
            Dtype::U16 | Dtype::I16 => 2,
            Dtype::U32 | Dtype::I32 | Dtype::F32 => 4,
            Dtype::U64 | Dtype::I64 | Dtype::F64 => 8,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dtype::U8 => "u8",
            Dtype::U16 => "u16",
            Dtype::U32 => "u32",
            Dtype::F32 => "f32",
            Dtype::I8 => "i8",
            Dtype::I16 => "i16",
            Dtype::I32 => "i32",
            Dtype::I64 => "i64",
            Dtype::U64 => "u64",
            Dtype::F64 => "f64",
        }
    }

    /// Whether pixels are floating point.
    pub fn is_float(self) -> bool {
        matches!(self, Dtype::F32 | Dtype::F64)
    }

    /// Whether pixels are signed integers.
    pub fn is_signed_integer(self) -> bool {
        matches!(self, Dtype::I8 | Dtype::I16 | Dtype::I32 | Dtype::I64)
    }
}

impl std::str::FromStr for Dtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Dtype::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown dtype '{s}' (use u8, u16, u32, u64, i8, i16, i32, i64, f32 or f64)"
                )
            })
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, fm: &mut fmt::Formatter<'_>) -> fmt::Result {
        fm.write_str(self.name())
    }
}

/// Header `flags` bit: this is the last frame the producer will publish.
pub const FLAG_END_OF_STREAM: u32 = 1;

/// Decoded frame header. `dims` is in C order (slowest axis first, like a NumPy shape).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameHeader {
    pub frame_id: u64,
    pub timestamp_ns: u64,
    pub dtype: Dtype,
    pub dims: Dims,
    pub payload_len: u64,
    pub flags: u32,
}

/// A frame's dims: 1 to `MAX_DIMS` values kept inline, so decoding or copying a header
/// allocates nothing. Reads as a `&[u32]`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dims {
    len: u8,
    /// Unused entries are zero, so the derived equality compares the dims alone.
    values: [u32; f::MAX_DIMS],
}

impl Dims {
    /// The dims `dims`, or `None` when there are more than `MAX_DIMS` of them.
    pub fn new(dims: &[u32]) -> Option<Dims> {
        let mut values = [0u32; f::MAX_DIMS];
        values.get_mut(..dims.len())?.copy_from_slice(dims);
        Some(Dims {
            len: dims.len() as u8,
            values,
        })
    }
}

impl std::ops::Deref for Dims {
    type Target = [u32];
    fn deref(&self) -> &[u32] {
        &self.values[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for Dims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

impl PartialEq<[u32]> for Dims {
    fn eq(&self, other: &[u32]) -> bool {
        **self == *other
    }
}

impl PartialEq<Vec<u32>> for Dims {
    fn eq(&self, other: &Vec<u32>) -> bool {
        **self == other[..]
    }
}

impl<const N: usize> PartialEq<[u32; N]> for Dims {
    fn eq(&self, other: &[u32; N]) -> bool {
        **self == other[..]
    }
}

impl FrameHeader {
    /// Number of pixels the dims describe.
    pub fn pixel_count(&self) -> u64 {
        self.dims.iter().map(|&d| u64::from(d)).product()
    }
}

/// Why a slot header could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame area is {0} bytes, expected {FRAME_AREA_SIZE}")]
    ShortHeader(usize),
    #[error("unknown dtype code {0}")]
    UnknownDtype(u16),
    #[error("ndims {0} is outside 1..=4")]
    BadNdims(u16),
    #[error("payload length {len} exceeds the slot capacity {capacity}")]
    PayloadTooLong { len: u64, capacity: u64 },
    #[error("payload length {len} does not match dims and dtype ({expected} bytes)")]
    PayloadMismatch { len: u64, expected: u64 },
    #[error("attribute area length {0} exceeds its capacity {ATTR_CAPACITY}")]
    AttrTooLong(u32),
    #[error("attribute record at byte {0} is truncated or malformed")]
    BadAttribute(usize),
    #[error("attribute area is full: {needed} more bytes needed, {left} left")]
    AttrAreaFull { needed: usize, left: usize },
    #[error("attribute key must be 1 to 255 bytes of UTF-8, got {0} bytes")]
    BadKey(usize),
}

/// Where a field lies in a slot's frame area (the slot header after its stamp line, spec
/// §3.4), from its slot-header offset as the spec gives it (§3.5).
const fn at(slot_header_offset: usize) -> usize {
    slot_header_offset - FRAME_HEADER_OFFSET
}

/// Where the attribute records start in the frame area.
const ATTRS: usize = at(ATTR_OFFSET);

fn u16_at(area: &[u8], field: usize) -> u16 {
    let i = at(field);
    u16::from_le_bytes([area[i], area[i + 1]])
}
fn u32_at(area: &[u8], field: usize) -> u32 {
    let i = at(field);
    u32::from_le_bytes(area[i..i + 4].try_into().expect("4 bytes"))
}
fn u64_at(area: &[u8], field: usize) -> u64 {
    let i = at(field);
    u64::from_le_bytes(area[i..i + 8].try_into().expect("8 bytes"))
}
fn put(area: &mut [u8], field: usize, bytes: &[u8]) {
    let i = at(field);
    area[i..i + bytes.len()].copy_from_slice(bytes);
}

/// Decodes the frame header of a slot's frame area (`FRAME_AREA_SIZE` bytes).
pub(crate) fn decode_header(area: &[u8], payload_capacity: u64) -> Result<FrameHeader, FrameError> {
    if area.len() != FRAME_AREA_SIZE {
        return Err(FrameError::ShortHeader(area.len()));
    }
    let code = u16_at(area, f::DTYPE);
    let dtype = Dtype::from_code(code).ok_or(FrameError::UnknownDtype(code))?;
    let ndims = u16_at(area, f::NDIMS);
    if ndims == 0 || usize::from(ndims) > f::MAX_DIMS {
        return Err(FrameError::BadNdims(ndims));
    }
    let mut values = [0u32; f::MAX_DIMS];
    for (i, d) in values.iter_mut().enumerate().take(usize::from(ndims)) {
        *d = u32_at(area, f::DIMS + 4 * i);
    }
    let dims = Dims::new(&values[..usize::from(ndims)]).expect("ndims checked above");
    let payload_len = u64_at(area, f::PAYLOAD_LEN);
    if payload_len > payload_capacity {
        return Err(FrameError::PayloadTooLong {
            len: payload_len,
            capacity: payload_capacity,
        });
    }
    let expected = dims
        .iter()
        .try_fold(dtype.size() as u64, |acc, &d| acc.checked_mul(u64::from(d)));
    if expected != Some(payload_len) {
        return Err(FrameError::PayloadMismatch {
            len: payload_len,
            expected: expected.unwrap_or(u64::MAX),
        });
    }
    let attr_len = u32_at(area, f::ATTR_LEN);
    if attr_len as usize > ATTR_CAPACITY {
        return Err(FrameError::AttrTooLong(attr_len));
    }
    Ok(FrameHeader {
        frame_id: u64_at(area, f::FRAME_ID),
        timestamp_ns: u64_at(area, f::TIMESTAMP_NS),
        dtype,
        dims,
        payload_len,
        flags: u32_at(area, f::FLAGS),
    })
}

/// Writes `header` into a slot's frame area and clears the attribute area.
/// The caller has checked dims, dtype and payload length against the slot capacity.
pub(crate) fn encode_header(area: &mut [u8], header: &FrameHeader) {
    put(area, f::FRAME_ID, &header.frame_id.to_le_bytes());
    put(area, f::TIMESTAMP_NS, &header.timestamp_ns.to_le_bytes());
    put(area, f::PAYLOAD_LEN, &header.payload_len.to_le_bytes());
    put(area, f::DTYPE, &header.dtype.code().to_le_bytes());
    put(area, f::NDIMS, &(header.dims.len() as u16).to_le_bytes());
    put(area, f::FLAGS, &header.flags.to_le_bytes());
    for i in 0..f::MAX_DIMS {
        let d = header.dims.get(i).copied().unwrap_or(0);
        put(area, f::DIMS + 4 * i, &d.to_le_bytes());
    }
    put(area, f::ATTR_LEN, &0u32.to_le_bytes());
}

/// Value of one attribute.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue<'a> {
    I64(i64),
    F64(f64),
    Str(&'a str),
}

impl AttrValue<'_> {
    fn type_code(&self) -> u8 {
        match self {
            AttrValue::I64(_) => 1,
            AttrValue::F64(_) => 2,
            AttrValue::Str(_) => 3,
        }
    }

    fn encoded_len(&self) -> usize {
        match self {
            AttrValue::I64(_) | AttrValue::F64(_) => 8,
            AttrValue::Str(s) => s.len(),
        }
    }
}

/// Returns the attribute bytes of a slot's frame area (`attr_len` already validated by
/// decode).
pub(crate) fn attr_bytes(area: &[u8]) -> Result<&[u8], FrameError> {
    if area.len() != FRAME_AREA_SIZE {
        return Err(FrameError::ShortHeader(area.len()));
    }
    let len = u32_at(area, f::ATTR_LEN);
    if len as usize > ATTR_CAPACITY {
        return Err(FrameError::AttrTooLong(len));
    }
    Ok(&area[ATTRS..ATTRS + len as usize])
}

/// The attribute records of a slot's frame area, to write.
pub(crate) fn attr_area_mut(area: &mut [u8]) -> &mut [u8] {
    &mut area[ATTRS..]
}

/// Iterates the records of an attribute area: `key_len u8, type u8, value_len u16 LE,
/// key, value`. Stops at the first malformed record with an error.
pub fn attributes(area: &[u8]) -> impl Iterator<Item = Result<(&str, AttrValue<'_>), FrameError>> {
    let mut at = 0usize;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || at >= area.len() {
            return None;
        }
        let record = decode_attribute(area, at);
        match &record {
            Ok((next, _, _)) => at = *next,
            Err(_) => failed = true,
        }
        Some(record.map(|(_, k, v)| (k, v)))
    })
}

fn decode_attribute(area: &[u8], at: usize) -> Result<(usize, &str, AttrValue<'_>), FrameError> {
    let bad = FrameError::BadAttribute(at);
    let fixed = area.get(at..at + 4).ok_or(bad.clone())?;
    let key_len = usize::from(fixed[0]);
    let type_code = fixed[1];
    let value_len = usize::from(u16::from_le_bytes([fixed[2], fixed[3]]));
    let key_start = at + 4;
    let value_start = key_start + key_len;
    let end = value_start + value_len;
    let key = area.get(key_start..value_start).ok_or(bad.clone())?;
    let value = area.get(value_start..end).ok_or(bad.clone())?;
    let key = std::str::from_utf8(key).map_err(|_| bad.clone())?;
    if key.is_empty() {
        return Err(bad);
    }
    let value = match (type_code, value_len) {
        (1, 8) => AttrValue::I64(i64::from_le_bytes(value.try_into().expect("8 bytes"))),
        (2, 8) => AttrValue::F64(f64::from_le_bytes(value.try_into().expect("8 bytes"))),
        (3, _) => AttrValue::Str(std::str::from_utf8(value).map_err(|_| bad.clone())?),
        _ => return Err(bad),
    };
    Ok((end, key, value))
}

/// Appends one record to an attribute area of which `used` bytes are taken.
/// Returns the new used length.
pub(crate) fn encode_attribute(
    area: &mut [u8],
    used: usize,
    key: &str,
    value: &AttrValue<'_>,
) -> Result<usize, FrameError> {
    if key.is_empty() || key.len() > 255 {
        return Err(FrameError::BadKey(key.len()));
    }
    let value_len = value.encoded_len();
    if value_len > usize::from(u16::MAX) {
        return Err(FrameError::AttrAreaFull {
            needed: value_len,
            left: area.len() - used,
        });
    }
    let needed = 4 + key.len() + value_len;
    let left = area.len().saturating_sub(used);
    if needed > left {
        return Err(FrameError::AttrAreaFull { needed, left });
    }
    let rec = &mut area[used..used + needed];
    rec[0] = key.len() as u8;
    rec[1] = value.type_code();
    rec[2..4].copy_from_slice(&(value_len as u16).to_le_bytes());
    rec[4..4 + key.len()].copy_from_slice(key.as_bytes());
    let v = &mut rec[4 + key.len()..];
    match value {
        AttrValue::I64(x) => v.copy_from_slice(&x.to_le_bytes()),
        AttrValue::F64(x) => v.copy_from_slice(&x.to_le_bytes()),
        AttrValue::Str(s) => v.copy_from_slice(s.as_bytes()),
    }
    Ok(used + needed)
}

/// An attribute area built outside a slot (frames a processor holds or assembles),
/// later handed to [`SlotWriter::copy_attributes`](super::SlotWriter::copy_attributes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttributeArea {
    bytes: Vec<u8>,
}

impl AttributeArea {
    /// Copies the records of `area` whose key `keep` accepts.
    pub fn filtered(area: &[u8], keep: impl Fn(&str) -> bool) -> Result<AttributeArea, FrameError> {
        let mut out = AttributeArea::default();
        for record in attributes(area) {
            let (key, value) = record?;
            if keep(key) {
                out.push(key, &value)?;
            }
        }
        Ok(out)
    }

    /// A copy of an encoded area (such as a frame's `raw_attributes`).
    pub fn copied(area: &[u8]) -> Result<AttributeArea, FrameError> {
        if area.len() > ATTR_CAPACITY {
            return Err(FrameError::AttrTooLong(area.len() as u32));
        }
        Ok(AttributeArea {
            bytes: area.to_vec(),
        })
    }

    /// Appends one record; fails when the area would outgrow a slot's.
    pub fn push(&mut self, key: &str, value: &AttrValue<'_>) -> Result<(), FrameError> {
        let used = self.bytes.len();
        // Room for the record (encode_attribute refuses what exceeds the capacity).
        let room = (used + 4 + key.len() + value.encoded_len()).min(ATTR_CAPACITY);
        self.bytes.resize(room, 0);
        let result = encode_attribute(&mut self.bytes, used, key, value);
        self.bytes.truncate(*result.as_ref().unwrap_or(&used));
        result.map(|_| ())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Stores the attribute area length in a slot's frame area.
pub(crate) fn set_attr_len(area: &mut [u8], len: usize) {
    put(area, f::ATTR_LEN, &(len as u32).to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(dtype: Dtype, dims: Vec<u32>) -> FrameHeader {
        let payload_len = dims.iter().map(|&d| u64::from(d)).product::<u64>() * dtype.size() as u64;
        FrameHeader {
            frame_id: 7,
            timestamp_ns: 11,
            dtype,
            dims: Dims::new(&dims).expect("at most MAX_DIMS"),
            payload_len,
            flags: 0,
        }
    }

    #[test]
    fn header_round_trips() {
        let mut slot = vec![0u8; FRAME_AREA_SIZE];
        let h = header(Dtype::U16, vec![3, 5]);
        encode_header(&mut slot, &h);
        assert_eq!(decode_header(&slot, 4096).unwrap(), h);
    }

    #[test]
    fn header_rejects_payload_longer_than_capacity() {
        let mut slot = vec![0u8; FRAME_AREA_SIZE];
        encode_header(&mut slot, &header(Dtype::U8, vec![64, 65]));
        assert_eq!(
            decode_header(&slot, 4096),
            Err(FrameError::PayloadTooLong {
                len: 4160,
                capacity: 4096
            })
        );
    }

    #[test]
    fn attributes_round_trip() {
        let mut slot = vec![0u8; FRAME_AREA_SIZE];
        let area = attr_area_mut(&mut slot);
        let mut used = encode_attribute(area, 0, "x", &AttrValue::F64(1.5)).unwrap();
        used = encode_attribute(area, used, "tile_row", &AttrValue::I64(-2)).unwrap();
        used = encode_attribute(area, used, "motor", &AttrValue::Str("th")).unwrap();
        set_attr_len(&mut slot, used);
        let got: Vec<_> = attributes(attr_bytes(&slot).unwrap())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            got,
            vec![
                ("x", AttrValue::F64(1.5)),
                ("tile_row", AttrValue::I64(-2)),
                ("motor", AttrValue::Str("th"))
            ]
        );
    }

    #[test]
    fn attribute_area_reports_when_full() {
        let mut area = vec![0u8; 16];
        let err = encode_attribute(&mut area, 0, "key", &AttrValue::Str("0123456789")).unwrap_err();
        assert_eq!(
            err,
            FrameError::AttrAreaFull {
                needed: 17,
                left: 16
            }
        );
    }

    proptest! {
        // Arbitrary slot headers never panic and never yield an inconsistent header.
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), FRAME_AREA_SIZE),
                               capacity in 0u64..1 << 20) {
            if let Ok(h) = decode_header(&bytes, capacity) {
                prop_assert!(h.payload_len <= capacity);
                prop_assert_eq!(h.pixel_count() * h.dtype.size() as u64, h.payload_len);
            }
            if let Ok(area) = attr_bytes(&bytes) {
                for record in attributes(area) {
                    let _ = record;
                }
            }
        }

        // Arbitrary attribute areas: records decode or the iterator stops with an error.
        #[test]
        fn attribute_iteration_is_total(area in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut errors = 0;
            for record in attributes(&area) {
                if record.is_err() { errors += 1; }
            }
            prop_assert!(errors <= 1);
        }

        // Wrong-length slot headers are refused.
        #[test]
        fn short_headers_are_refused(len in 0usize..FRAME_AREA_SIZE) {
            let bytes = vec![0u8; len];
            prop_assert_eq!(decode_header(&bytes, 4096), Err(FrameError::ShortHeader(len)));
        }

        // Encoded records always decode back to what was written.
        #[test]
        fn encoded_attributes_decode(key in "[a-z_]{1,40}", i in any::<i64>(), s in "\\PC{0,60}") {
            let mut area = vec![0u8; ATTR_CAPACITY];
            let mut used = encode_attribute(&mut area, 0, &key, &AttrValue::I64(i)).unwrap();
            used = encode_attribute(&mut area, used, &key, &AttrValue::Str(&s)).unwrap();
            let got: Vec<_> = attributes(&area[..used]).collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(got, vec![(key.as_str(), AttrValue::I64(i)), (key.as_str(), AttrValue::Str(&s))]);
        }
    }
}
