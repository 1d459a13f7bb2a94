//! Decoding a Stream V2 message, borrowing from the received bytes.

use super::compression::{self, Algorithm};
use super::DecodeError;
use crate::ring::Dtype;
use crate::series::{Axis, Series, UserValue};
use minicbor::data::Type;
use minicbor::Decoder;

/// RFC 8746 multi-dimensional array, row-major.
const TAG_MULTI_DIM: u64 = 40;
/// Its column-major form, which Stream V2 does not use.
const TAG_MULTI_DIM_COLUMN_MAJOR: u64 = 1040;
/// DECTRIS compressed byte string.
const TAG_COMPRESSED: u64 = 56500;
/// RFC 8949 date/time text.
const TAG_DATE: u64 = 0;
/// How deep user data is followed into nested maps and arrays.
const USER_DEPTH: usize = 8;

/// One decoded message.
#[derive(Debug)]
pub enum Message<'a> {
    Start(Box<Start>),
    Image(Image<'a>),
    End(End<'a>),
}

/// A `start` message: the series description and its channels.
#[derive(Debug, Default)]
pub struct Start {
    pub series: Series,
    pub channels: Vec<String>,
    /// Threshold energy (eV) by channel.
    pub thresholds: Vec<(String, f64)>,
}

/// An `image` message; `data` holds each channel's pixels, in message order.
#[derive(Debug, Default)]
pub struct Image<'a> {
    pub series_id: Option<u64>,
    pub series_unique_id: Option<&'a str>,
    pub image_id: u64,
    pub series_date: Option<&'a str>,
    /// (numerator, denominator) seconds.
    pub start_time: Option<(u64, u64)>,
    pub stop_time: Option<(u64, u64)>,
    pub real_time: Option<(u64, u64)>,
    /// The `user_data` item as encoded (see [`user_values`]).
    pub user_data: Option<&'a [u8]>,
    pub data: Vec<(&'a str, Array<'a>)>,
}

/// An `end` message.
#[derive(Debug, Default)]
pub struct End<'a> {
    pub series_id: Option<u64>,
    pub series_unique_id: Option<&'a str>,
}

/// A 2-D typed array of pixels.
#[derive(Debug, Clone, Copy)]
pub struct Array<'a> {
    pub ny: u32,
    pub nx: u32,
    pub dtype: Dtype,
    pub big_endian: bool,
    pub data: Data<'a>,
}

/// The pixel bytes as they came.
#[derive(Debug, Clone, Copy)]
pub enum Data<'a> {
    Plain(&'a [u8]),
    Compressed {
        algorithm: Algorithm,
        elem_size: usize,
        bytes: &'a [u8],
    },
}

impl Array<'_> {
    /// Bytes of the pixels, uncompressed.
    pub fn len(&self) -> usize {
        self.ny as usize * self.nx as usize * self.dtype.size()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the pixels little-endian into `out` (exactly [`len`](Self::len) bytes):
    /// copied, or decompressed there, then byte-swapped in place when they came
    /// big-endian. `scratch` is reused from message to message.
    pub fn write_into(&self, out: &mut [u8], scratch: &mut Vec<u8>) -> Result<(), DecodeError> {
        match self.data {
            Data::Plain(bytes) => out.copy_from_slice(bytes),
            Data::Compressed {
                algorithm,
                elem_size,
                bytes,
            } => compression::decompress_into(algorithm, elem_size, bytes, out, scratch)?,
        }
        if self.big_endian {
            match self.dtype.size() {
                2 => out.chunks_exact_mut(2).for_each(|p| p.reverse()),
                4 => out.chunks_exact_mut(4).for_each(|p| p.reverse()),
                _ => {}
            }
        }
        Ok(())
    }
}

/// Decodes one message. Keys it does not know are passed over, as the specification's
/// own parser does; large start-message tables (flatfields, masks) are skipped unread.
pub fn decode(bytes: &[u8]) -> Result<Message<'_>, DecodeError> {
    let mut d = Decoder::new(bytes);
    if !matches!(d.datatype()?, Type::Map | Type::MapIndef) {
        return Err(DecodeError::Malformed(format!(
            "a message is a CBOR map, not {}",
            d.datatype()?
        )));
    }
    let mut kind: Option<&str> = None;
    let mut start = Start::default();
    let mut image = Image::default();
    let mut image_id = None;
    let mut data = None;
    let s = &mut start.series;
    let entries = d.map()?;
    let mut seen = 0u64;
    loop {
        match entries {
            Some(n) if seen == n => break,
            None if d.datatype()? == Type::Break => {
                // The break byte that ends an indefinite-length map.
                d.set_position(d.position() + 1);
                break;
            }
            _ => {}
        }
        seen += 1;
        let key = text(&mut d, "a key")?;
        match key {
            "type" => kind = Some(text(&mut d, "type")?),
            "series_id" => s.series_id = Some(d.u64()?),
            "series_unique_id" => image.series_unique_id = Some(text(&mut d, key)?),
            "image_id" => image_id = Some(d.u64()?),
            "series_date" => image.series_date = Some(date(&mut d)?),
            "start_time" => image.start_time = Some(rational(&mut d, key)?),
            "stop_time" => image.stop_time = Some(rational(&mut d, key)?),
            "real_time" => image.real_time = Some(rational(&mut d, key)?),
            "user_data" => {
                let from = d.position();
                d.skip()?;
                image.user_data = Some(&bytes[from..d.position()]);
            }
            "data" => data = Some(channels(&mut d)?),
            "arm_date" => s.arm_date = Some(date(&mut d)?.to_string()),
            "beam_center_x" => s.beam_center_x = Some(number(&mut d, key)?),
            "beam_center_y" => s.beam_center_y = Some(number(&mut d, key)?),
            "pixel_size_x" => s.pixel_size_x = Some(number(&mut d, key)?),
            "pixel_size_y" => s.pixel_size_y = Some(number(&mut d, key)?),
            "incident_wavelength" => s.incident_wavelength = Some(number(&mut d, key)?),
            "incident_energy" => s.incident_energy = Some(number(&mut d, key)?),
            "sensor_thickness" => s.sensor_thickness = Some(number(&mut d, key)?),
            "count_time" => s.count_time = Some(number(&mut d, key)?),
            "frame_time" => s.frame_time = Some(number(&mut d, key)?),
            "saturation_value" => s.saturation_value = Some(d.u64()?),
            "number_of_images" => s.number_of_images = Some(d.u64()?),
            "sensor_material" => s.sensor_material = Some(text(&mut d, key)?.to_string()),
            "detector_description" => s.detector_description = Some(text(&mut d, key)?.to_string()),
            "detector_serial_number" => {
                s.detector_serial_number = Some(text(&mut d, key)?.to_string())
            }
            "detector_translation" => {
                let v = numbers(&mut d, key)?;
                match v[..] {
                    [x, y, z] => s.detector_translation = Some([x, y, z]),
                    _ => return Err(invalid(key, "3 numbers")),
                }
            }
            "goniometer" => s.goniometer = goniometer(&mut d)?,
            "channels" => {
                let n = definite(d.array()?, key)?;
                for _ in 0..n {
                    start.channels.push(text(&mut d, key)?.to_string());
                }
            }
            "threshold_energy" => {
                let n = definite(d.map()?, key)?;
                for _ in 0..n {
                    let channel = text(&mut d, key)?.to_string();
                    start.thresholds.push((channel, number(&mut d, key)?));
                }
            }
            _ => d.skip()?,
        }
    }
    if d.position() != bytes.len() {
        return Err(DecodeError::Malformed(format!(
            "{} bytes follow the message's map",
            bytes.len() - d.position()
        )));
    }
    image.series_id = start.series.series_id;
    match kind {
        Some("start") => {
            start.series.series_unique_id = image.series_unique_id.map(str::to_string);
            if let Some(raw) = image.user_data {
                start.series.user = user_values(raw);
            }
            Ok(Message::Start(Box::new(start)))
        }
        Some("image") => {
            image.image_id = image_id
                .ok_or_else(|| DecodeError::Invalid("an image message has no image_id".into()))?;
            image.data =
                data.ok_or_else(|| DecodeError::Invalid("an image message has no data".into()))?;
            Ok(Message::Image(image))
        }
        Some("end") => Ok(Message::End(End {
            series_id: image.series_id,
            series_unique_id: image.series_unique_id,
        })),
        Some(other) => Err(DecodeError::Unsupported(format!(
            "message type '{}' is not one of start, image, end",
            crate::units::one_line(other)
        ))),
        None => Err(DecodeError::Malformed("the message has no type".into())),
    }
}

fn invalid(key: &str, expected: &str) -> DecodeError {
    DecodeError::Malformed(format!("{key} must be {expected}"))
}

fn definite(n: Option<u64>, key: &str) -> Result<u64, DecodeError> {
    n.ok_or_else(|| DecodeError::Unsupported(format!("{key} has indefinite length")))
}

fn text<'a>(d: &mut Decoder<'a>, what: &str) -> Result<&'a str, DecodeError> {
    match d.datatype()? {
        Type::String => Ok(d.str()?),
        other => Err(DecodeError::Malformed(format!(
            "{what} must be a text string, not {other}"
        ))),
    }
}

/// `DateTime`: tag 0 and text (the tag is optional here, as some senders leave it out).
fn date<'a>(d: &mut Decoder<'a>) -> Result<&'a str, DecodeError> {
    if d.datatype()? == Type::Tag {
        let tag = d.tag()?.as_u64();
        if tag != TAG_DATE {
            return Err(DecodeError::Malformed(format!(
                "a date is tag 0 and text, not tag {tag}"
            )));
        }
    }
    text(d, "a date")
}

/// `Float`: any CBOR number.
fn number(d: &mut Decoder<'_>, key: &str) -> Result<f64, DecodeError> {
    Ok(match d.datatype()? {
        Type::F16 | Type::F32 | Type::F64 => d.f64()?,
        Type::U8 | Type::U16 | Type::U32 | Type::U64 => d.u64()? as f64,
        Type::I8 | Type::I16 | Type::I32 | Type::I64 | Type::Int => d.i64()? as f64,
        other => return Err(invalid(key, &format!("a number, not {other}"))),
    })
}

fn numbers(d: &mut Decoder<'_>, key: &str) -> Result<Vec<f64>, DecodeError> {
    let n = definite(d.array()?, key)?;
    (0..n.min(16)).map(|_| number(d, key)).collect()
}

/// `Rational`: [numerator, denominator].
fn rational(d: &mut Decoder<'_>, key: &str) -> Result<(u64, u64), DecodeError> {
    if d.array()? != Some(2) {
        return Err(invalid(key, "a rational [numerator, denominator]"));
    }
    let r = (d.u64()?, d.u64()?);
    if r.1 == 0 {
        return Err(DecodeError::Invalid(format!("{key} has denominator 0")));
    }
    Ok(r)
}

fn goniometer(d: &mut Decoder<'_>) -> Result<Vec<Axis>, DecodeError> {
    let n = definite(d.map()?, "goniometer")?;
    let mut axes = Vec::new();
    for _ in 0..n {
        let name = text(d, "a goniometer axis")?.to_string();
        let mut axis = Axis {
            name,
            start: 0.0,
            increment: 0.0,
        };
        let fields = definite(d.map()?, "a goniometer axis")?;
        for _ in 0..fields {
            match text(d, "a goniometer key")? {
                "start" => axis.start = number(d, "start")?,
                "increment" => axis.increment = number(d, "increment")?,
                _ => d.skip()?,
            }
        }
        axes.push(axis);
    }
    Ok(axes)
}

/// `data`: channel name → multi-dimensional array.
fn channels<'a>(d: &mut Decoder<'a>) -> Result<Vec<(&'a str, Array<'a>)>, DecodeError> {
    let n = definite(d.map()?, "data")?;
    let mut out = Vec::with_capacity(n.min(8) as usize);
    for _ in 0..n {
        let name = text(d, "a channel name")?;
        out.push((name, multi_dim(d, name)?));
    }
    Ok(out)
}

/// RFC 8746 typed-array tags streamd takes: (dtype, big-endian).
fn typed_array(tag: u64) -> Result<(Dtype, bool), DecodeError> {
    Ok(match tag {
        64 | 68 => (Dtype::U8, false),
        65 => (Dtype::U16, true),
        69 => (Dtype::U16, false),
        66 => (Dtype::U32, true),
        70 => (Dtype::U32, false),
        81 => (Dtype::F32, true),
        85 => (Dtype::F32, false),
        other => {
            let name = match other {
                67 | 71 => "uint64",
                72 => "int8",
                73 | 77 => "int16",
                74 | 78 => "int32",
                75 | 79 => "int64",
                80 | 84 => "float16",
                82 | 86 => "float64",
                83 | 87 => "float128",
                _ => "not a typed array",
            };
            return Err(DecodeError::Unsupported(format!(
                "pixels of type {name} (tag {other}) are not supported; streamd takes uint8, uint16, uint32 and float32"
            )));
        }
    })
}

fn multi_dim<'a>(d: &mut Decoder<'a>, channel: &str) -> Result<Array<'a>, DecodeError> {
    let what = format!("channel '{}'", crate::units::one_line(channel));
    if d.datatype()? != Type::Tag {
        return Err(invalid(&what, "a multi-dimensional array (tag 40)"));
    }
    match d.tag()?.as_u64() {
        TAG_MULTI_DIM => {}
        TAG_MULTI_DIM_COLUMN_MAJOR => {
            return Err(DecodeError::Unsupported(format!(
                "{what} is a column-major array (tag 1040); Stream V2 images are row-major (tag 40)"
            )))
        }
        other => {
            return Err(invalid(
                &what,
                &format!("a multi-dimensional array (tag 40), not tag {other}"),
            ))
        }
    }
    if d.array()? != Some(2) {
        return Err(invalid(&what, "[dimensions, typed array]"));
    }
    let dims = numbers_u64(d, &what)?;
    let [ny, nx] = dims[..] else {
        return Err(DecodeError::Unsupported(format!(
            "{what} has {} dimensions; streamd takes 2-D images",
            dims.len()
        )));
    };
    let (Ok(ny), Ok(nx)) = (u32::try_from(ny), u32::try_from(nx)) else {
        return Err(DecodeError::Invalid(format!(
            "{what} has dimensions {ny}×{nx}, too large for a frame"
        )));
    };
    if d.datatype()? != Type::Tag {
        return Err(invalid(&what, "a typed array (an RFC 8746 tag)"));
    }
    let (dtype, big_endian) = typed_array(d.tag()?.as_u64())?;
    let data = match d.datatype()? {
        Type::Bytes => Data::Plain(d.bytes()?),
        Type::Tag => {
            let tag = d.tag()?.as_u64();
            if tag != TAG_COMPRESSED {
                return Err(invalid(
                    &what,
                    &format!("a byte string or compressed (tag 56500), not tag {tag}"),
                ));
            }
            if d.array()? != Some(3) {
                return Err(invalid(
                    "compressed data",
                    "[algorithm, element size, bytes]",
                ));
            }
            let algorithm = Algorithm::parse(text(d, "the compression algorithm")?)?;
            let elem_size = d.u64()? as usize;
            let bytes = d.bytes()?;
            if algorithm == Algorithm::BsLz4 && elem_size != dtype.size() {
                return Err(DecodeError::Invalid(format!(
                    "{what}: bslz4 element size {elem_size} differs from the {}-byte pixels",
                    dtype.size()
                )));
            }
            Data::Compressed {
                algorithm,
                elem_size,
                bytes,
            }
        }
        other => return Err(invalid(&what, &format!("a byte string, not {other}"))),
    };
    let array = Array {
        ny,
        nx,
        dtype,
        big_endian,
        data,
    };
    let expected = (ny as u64)
        .checked_mul(nx as u64)
        .and_then(|n| n.checked_mul(dtype.size() as u64));
    let got = match data {
        Data::Plain(b) => b.len() as u64,
        Data::Compressed { bytes, .. } => compression::original_len(bytes)?,
    };
    if expected != Some(got) {
        return Err(DecodeError::Invalid(format!(
            "{what} is {ny}×{nx} {} but holds {got} bytes of pixels",
            dtype.name()
        )));
    }
    Ok(array)
}

fn numbers_u64(d: &mut Decoder<'_>, what: &str) -> Result<Vec<u64>, DecodeError> {
    let n = definite(d.array()?, what)?;
    (0..n.min(8)).map(|_| Ok(d.u64()?)).collect()
}

/// User data (`Any`) flattened into attribute values: a map's entries by key (`a.b`
/// for nested maps), arrays of simple values as text, booleans as 0/1; byte strings
/// and what lies deeper than a few levels are left out. A bare value is named `value`.
pub fn user_values(raw: &[u8]) -> Vec<(String, UserValue)> {
    let mut out = Vec::new();
    let mut d = Decoder::new(raw);
    if matches!(d.datatype(), Ok(Type::Map | Type::MapIndef)) {
        let _ = flatten_map(&mut d, "", 0, &mut out);
    } else if let Ok(Some(v)) = simple(&mut d) {
        out.push(("value".to_string(), v));
    }
    out
}

fn flatten_map(
    d: &mut Decoder<'_>,
    prefix: &str,
    depth: usize,
    out: &mut Vec<(String, UserValue)>,
) -> Result<(), DecodeError> {
    let n = definite(d.map()?, "user_data")?;
    for _ in 0..n {
        let key = match d.datatype()? {
            Type::String => d.str()?.to_string(),
            Type::U8 | Type::U16 | Type::U32 | Type::U64 => d.u64()?.to_string(),
            _ => {
                d.skip()?;
                d.skip()?;
                continue;
            }
        };
        let name = if prefix.is_empty() {
            key
        } else {
            format!("{prefix}.{key}")
        };
        match d.datatype()? {
            Type::Map if depth < USER_DEPTH => flatten_map(d, &name, depth + 1, out)?,
            Type::Array => {
                let n = definite(d.array()?, "user_data")?;
                let mut items = Vec::new();
                for _ in 0..n {
                    match simple(d)? {
                        Some(UserValue::Int(i)) => items.push(i.to_string()),
                        Some(UserValue::Float(x)) => items.push(x.to_string()),
                        Some(UserValue::Text(t)) => items.push(format!("{t:?}")),
                        None => items.push("null".into()),
                    }
                }
                out.push((name, UserValue::Text(format!("[{}]", items.join(", ")))));
            }
            _ => {
                if let Some(v) = simple(d)? {
                    out.push((name, v));
                }
            }
        }
    }
    Ok(())
}

/// A number, text or boolean; anything else is skipped (`None`).
fn simple(d: &mut Decoder<'_>) -> Result<Option<UserValue>, DecodeError> {
    Ok(Some(match d.datatype()? {
        Type::Bool => UserValue::Int(i64::from(d.bool()?)),
        Type::U8 | Type::U16 | Type::U32 | Type::U64 => {
            let n = d.u64()?;
            match i64::try_from(n) {
                Ok(i) => UserValue::Int(i),
                Err(_) => UserValue::Float(n as f64),
            }
        }
        Type::I8 | Type::I16 | Type::I32 | Type::I64 => UserValue::Int(d.i64()?),
        Type::F16 | Type::F32 | Type::F64 => UserValue::Float(d.f64()?),
        Type::String => UserValue::Text(d.str()?.to_string()),
        _ => {
            d.skip()?;
            return Ok(None);
        }
    }))
}
