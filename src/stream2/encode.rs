//! Encoding Stream V2 messages (the `zmq` sink), little-endian typed arrays as the
//! detectors send them.

use crate::ring::Dtype;
use crate::series::{Series, UserValue};
use minicbor::encode::Error;
use minicbor::Encoder;
use std::convert::Infallible;

type Enc<'v> = Encoder<&'v mut Vec<u8>>;
type Done = Result<(), Error<Infallible>>;

/// Pixels as the image message carries them.
#[derive(Debug, Clone, Copy)]
pub enum Pixels<'a> {
    Plain(&'a [u8]),
    /// A bitshuffle-LZ4 chunk (HDF5 filter 32008 framing) of `dtype`-sized elements.
    BsLz4(&'a [u8]),
}

/// What an image message says besides its pixels.
#[derive(Debug, Clone, Copy)]
pub struct ImageHeader<'a> {
    pub series_id: u64,
    pub series_unique_id: &'a str,
    pub image_id: u64,
    pub series_date: &'a str,
    /// Nanoseconds from `series_date`.
    pub start_ns: u64,
    pub stop_ns: Option<u64>,
    pub real_ns: Option<u64>,
    pub user: &'a [(String, UserValue)],
    pub channel: &'a str,
    pub ny: u32,
    pub nx: u32,
    pub dtype: Dtype,
}

/// The little-endian RFC 8746 typed-array tag of `dtype`.
pub fn typed_array_tag(dtype: Dtype) -> u64 {
    match dtype {
        Dtype::U8 => 64,
        Dtype::U16 => 69,
        Dtype::U32 => 70,
        Dtype::U64 => 71,
        Dtype::I8 => 72,
        Dtype::I16 => 77,
        Dtype::I32 => 78,
        Dtype::I64 => 79,
        Dtype::F32 => 85,
        Dtype::F64 => 86,
    }
}

/// Stream V2's `image_dtype` name.
pub fn dtype_name(dtype: Dtype) -> &'static str {
    match dtype {
        Dtype::U8 => "uint8",
        Dtype::U16 => "uint16",
        Dtype::U32 => "uint32",
        Dtype::U64 => "uint64",
        Dtype::I8 => "int8",
        Dtype::I16 => "int16",
        Dtype::I32 => "int32",
        Dtype::I64 => "int64",
        Dtype::F32 => "float32",
        Dtype::F64 => "float64",
    }
}

fn date(e: &mut Enc<'_>, text: &str) -> Done {
    e.tag(minicbor::data::Tag::new(0))?.str(text)?;
    Ok(())
}

fn user_map(e: &mut Enc<'_>, user: &[(String, UserValue)]) -> Done {
    e.map(user.len() as u64)?;
    for (k, v) in user {
        e.str(k)?;
        match v {
            UserValue::Int(i) => e.i64(*i)?,
            UserValue::Float(x) => e.f64(*x)?,
            UserValue::Text(t) => e.str(t)?,
        };
    }
    Ok(())
}

fn seconds(e: &mut Enc<'_>, ns: u64) -> Done {
    e.array(2)?.u64(ns)?.u64(1_000_000_000)?;
    Ok(())
}

/// A `start` message for frames of `ny`×`nx` `dtype` in channel `channel`.
pub fn start(series: &Series, channel: &str, (ny, nx): (u32, u32), dtype: Dtype) -> Vec<u8> {
    let mut out = Vec::new();
    let written: Done = (|| {
        let mut e = Encoder::new(&mut out);
        let s = series;
        let mut fields: Vec<(&str, f64)> = Vec::new();
        for (k, v) in [
            ("beam_center_x", s.beam_center_x),
            ("beam_center_y", s.beam_center_y),
            ("count_time", s.count_time),
            ("frame_time", s.frame_time),
            ("incident_energy", s.incident_energy),
            ("incident_wavelength", s.incident_wavelength),
            ("pixel_size_x", s.pixel_size_x),
            ("pixel_size_y", s.pixel_size_y),
            ("sensor_thickness", s.sensor_thickness),
        ] {
            if let Some(v) = v {
                fields.push((k, v));
            }
        }
        let texts: Vec<(&str, &str)> = [
            ("detector_description", &s.detector_description),
            ("detector_serial_number", &s.detector_serial_number),
            ("sensor_material", &s.sensor_material),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
        .collect();
        let integers: Vec<(&str, u64)> = [
            ("number_of_images", s.number_of_images),
            ("saturation_value", s.saturation_value),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
        // type, series_id, series_unique_id, channels, image_dtype, image_size_x/y
        let mut entries = 7 + fields.len() + texts.len() + integers.len();
        entries += usize::from(s.arm_date.is_some())
            + usize::from(s.detector_translation.is_some())
            + usize::from(!s.goniometer.is_empty())
            + usize::from(s.threshold_energy.is_some())
            + usize::from(!s.user.is_empty());
        e.map(entries as u64)?;
        e.str("type")?.str("start")?;
        e.str("series_id")?.u64(s.series_id.unwrap_or(0))?;
        e.str("series_unique_id")?
            .str(s.series_unique_id.as_deref().unwrap_or(""))?;
        if let Some(arm) = &s.arm_date {
            e.str("arm_date")?;
            date(&mut e, arm)?;
        }
        e.str("channels")?.array(1)?.str(channel)?;
        e.str("image_dtype")?.str(dtype_name(dtype))?;
        e.str("image_size_x")?.u64(u64::from(nx))?;
        e.str("image_size_y")?.u64(u64::from(ny))?;
        for (k, v) in fields {
            e.str(k)?.f64(v)?;
        }
        for (k, v) in texts {
            e.str(k)?.str(v)?;
        }
        for (k, v) in integers {
            e.str(k)?.u64(v)?;
        }
        if let Some(t) = s.detector_translation {
            e.str("detector_translation")?.array(3)?;
            for v in t {
                e.f64(v)?;
            }
        }
        if !s.goniometer.is_empty() {
            e.str("goniometer")?.map(s.goniometer.len() as u64)?;
            for axis in &s.goniometer {
                e.str(&axis.name)?.map(2)?;
                e.str("increment")?.f64(axis.increment)?;
                e.str("start")?.f64(axis.start)?;
            }
        }
        if let Some(energy) = s.threshold_energy {
            e.str("threshold_energy")?
                .map(1)?
                .str(channel)?
                .f64(energy)?;
        }
        if !s.user.is_empty() {
            e.str("user_data")?;
            user_map(&mut e, &s.user)?;
        }
        Ok(())
    })();
    debug_assert!(written.is_ok(), "writing to a Vec cannot fail");
    out
}

/// An `image` message, appended to `out` (cleared first).
pub fn image(h: &ImageHeader<'_>, pixels: Pixels<'_>, out: &mut Vec<u8>) {
    out.clear();
    let written: Done = (|| {
        let mut e = Encoder::new(&mut *out);
        let entries = 7
            + usize::from(h.stop_ns.is_some())
            + usize::from(h.real_ns.is_some())
            + usize::from(!h.user.is_empty());
        e.map(entries as u64)?;
        e.str("type")?.str("image")?;
        e.str("series_id")?.u64(h.series_id)?;
        e.str("series_unique_id")?.str(h.series_unique_id)?;
        e.str("image_id")?.u64(h.image_id)?;
        e.str("series_date")?;
        date(&mut e, h.series_date)?;
        e.str("start_time")?;
        seconds(&mut e, h.start_ns)?;
        if let Some(ns) = h.stop_ns {
            e.str("stop_time")?;
            seconds(&mut e, ns)?;
        }
        if let Some(ns) = h.real_ns {
            e.str("real_time")?;
            seconds(&mut e, ns)?;
        }
        if !h.user.is_empty() {
            e.str("user_data")?;
            user_map(&mut e, h.user)?;
        }
        e.str("data")?.map(1)?.str(h.channel)?;
        e.tag(minicbor::data::Tag::new(40))?.array(2)?;
        e.array(2)?.u32(h.ny)?.u32(h.nx)?;
        e.tag(minicbor::data::Tag::new(typed_array_tag(h.dtype)))?;
        match pixels {
            Pixels::Plain(bytes) => {
                e.bytes(bytes)?;
            }
            Pixels::BsLz4(bytes) => {
                e.tag(minicbor::data::Tag::new(56500))?.array(3)?;
                e.str("bslz4")?.u64(h.dtype.size() as u64)?.bytes(bytes)?;
            }
        }
        Ok(())
    })();
    debug_assert!(written.is_ok(), "writing to a Vec cannot fail");
}

/// An `end` message.
pub fn end(series_id: u64, series_unique_id: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let written: Done = (|| {
        let mut e = Encoder::new(&mut out);
        e.map(3)?;
        e.str("type")?.str("end")?;
        e.str("series_id")?.u64(series_id)?;
        e.str("series_unique_id")?.str(series_unique_id)?;
        Ok(())
    })();
    debug_assert!(written.is_ok(), "writing to a Vec cannot fail");
    out
}
