//! What a series (one arm of a detector) is: its geometry and detector description,
//! as a DECTRIS Stream V2 `start` message states them. It travels with the frames as
//! attributes named `series.KEY` on every frame of the series (so any frame, whichever
//! worker or file it reaches, carries it), the `hdf5` writer keeps one copy in each
//! data file and puts it into the NXmx master, and the `zmq` sink sends it on in its
//! own `start` message.
//!
//! Units are Stream V2's: pixels for the beam centre, metres for lengths, seconds for
//! times, ångström for the wavelength, eV for energies, degrees for goniometer axes.

use crate::ring::{AttrValue, AttributeArea};
use serde::{Deserialize, Serialize};

/// Prefix of the attributes that describe the series rather than the frame.
pub const PREFIX: &str = "series.";

/// hc in eV·Å: wavelength (Å) = HC / energy (eV).
pub const HC_EV_ANGSTROM: f64 = 12_398.419_843_320_026;

/// One goniometer axis: its position at the first image and its step per image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Axis {
    pub name: String,
    pub start: f64,
    pub increment: f64,
}

/// A value of user data, flattened to what a frame attribute holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum UserValue {
    Int(i64),
    Float(f64),
    Text(String),
}

impl UserValue {
    pub fn attr(&self) -> AttrValue<'_> {
        match self {
            UserValue::Int(i) => AttrValue::I64(*i),
            UserValue::Float(x) => AttrValue::F64(*x),
            UserValue::Text(s) => AttrValue::Str(s),
        }
    }
}

/// The series description; every field is optional, as a detector may leave any out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub series_id: Option<u64>,
    pub series_unique_id: Option<String>,
    pub arm_date: Option<String>,
    pub beam_center_x: Option<f64>,
    pub beam_center_y: Option<f64>,
    pub pixel_size_x: Option<f64>,
    pub pixel_size_y: Option<f64>,
    pub incident_wavelength: Option<f64>,
    pub incident_energy: Option<f64>,
    /// [x, y, z] in metres; z is the sample-to-detector distance.
    pub detector_translation: Option<[f64; 3]>,
    pub sensor_material: Option<String>,
    pub sensor_thickness: Option<f64>,
    pub saturation_value: Option<u64>,
    pub count_time: Option<f64>,
    pub frame_time: Option<f64>,
    pub number_of_images: Option<u64>,
    pub detector_description: Option<String>,
    pub detector_serial_number: Option<String>,
    /// The channel the frames come from and its threshold energy.
    pub channel: Option<String>,
    pub threshold_energy: Option<f64>,
    pub goniometer: Vec<Axis>,
    /// The `start` message's user data, flattened (`a.b` for nested maps).
    pub user: Vec<(String, UserValue)>,
}

/// The numeric fields, by attribute name (after the prefix).
macro_rules! numbers {
    ($m:ident) => {
        [
            ("beam_center_x", &$m.beam_center_x),
            ("beam_center_y", &$m.beam_center_y),
            ("pixel_size_x", &$m.pixel_size_x),
            ("pixel_size_y", &$m.pixel_size_y),
            ("incident_wavelength", &$m.incident_wavelength),
            ("incident_energy", &$m.incident_energy),
            ("sensor_thickness", &$m.sensor_thickness),
            ("count_time", &$m.count_time),
            ("frame_time", &$m.frame_time),
            ("threshold_energy", &$m.threshold_energy),
        ]
    };
}

impl Series {
    /// Whether nothing is known.
    pub fn is_empty(&self) -> bool {
        *self == Series::default()
    }

    /// The wavelength in Å, from the wavelength or else the energy.
    pub fn wavelength(&self) -> Option<f64> {
        self.incident_wavelength.or_else(|| {
            self.incident_energy
                .filter(|e| *e > 0.0)
                .map(|e| HC_EV_ANGSTROM / e)
        })
    }

    /// Appends the description to a frame's attributes as `series.KEY` records.
    pub fn push_attributes(&self, area: &mut AttributeArea) -> Result<(), String> {
        let mut push = |key: &str, value: AttrValue<'_>| {
            area.push(&format!("{PREFIX}{key}"), &value)
                .map_err(|e| format!("series attribute {key}: {e}"))
        };
        for (key, value) in numbers!(self) {
            if let Some(v) = value {
                push(key, AttrValue::F64(*v))?;
            }
        }
        for (key, value) in [
            ("series_id", self.series_id),
            ("saturation_value", self.saturation_value),
            ("number_of_images", self.number_of_images),
        ] {
            if let Some(v) = value {
                push(key, AttrValue::I64(v.min(i64::MAX as u64) as i64))?;
            }
        }
        for (key, value) in [
            ("series_unique_id", &self.series_unique_id),
            ("arm_date", &self.arm_date),
            ("sensor_material", &self.sensor_material),
            ("detector_description", &self.detector_description),
            ("detector_serial_number", &self.detector_serial_number),
            ("channel", &self.channel),
        ] {
            if let Some(v) = value {
                push(key, AttrValue::Str(v))?;
            }
        }
        if let Some([x, y, z]) = self.detector_translation {
            push("detector_translation.x", AttrValue::F64(x))?;
            push("detector_translation.y", AttrValue::F64(y))?;
            push("detector_translation.z", AttrValue::F64(z))?;
        }
        for axis in &self.goniometer {
            push(
                &format!("goniometer.{}.start", axis.name),
                AttrValue::F64(axis.start),
            )?;
            push(
                &format!("goniometer.{}.increment", axis.name),
                AttrValue::F64(axis.increment),
            )?;
        }
        for (key, value) in &self.user {
            push(&format!("user.{key}"), value.attr())?;
        }
        Ok(())
    }

    /// Reads the description back from a frame's attributes (those without the prefix
    /// are passed over); `None` when the frame carries none.
    pub fn from_attributes<'a>(
        attributes: impl Iterator<Item = (&'a str, AttrValue<'a>)>,
    ) -> Option<Series> {
        let mut s = Series::default();
        let mut any = false;
        for (key, value) in attributes {
            let Some(key) = key.strip_prefix(PREFIX) else {
                continue;
            };
            any = true;
            s.set(key, &value);
        }
        any.then_some(s)
    }

    fn set(&mut self, key: &str, value: &AttrValue<'_>) {
        let number = match value {
            AttrValue::F64(x) => Some(*x),
            AttrValue::I64(i) => Some(*i as f64),
            AttrValue::Str(_) => None,
        };
        let text = match value {
            AttrValue::Str(s) => Some(s.to_string()),
            _ => None,
        };
        let whole = number.filter(|n| *n >= 0.0).map(|n| n as u64);
        let slot: Option<&mut Option<f64>> = match key {
            "beam_center_x" => Some(&mut self.beam_center_x),
            "beam_center_y" => Some(&mut self.beam_center_y),
            "pixel_size_x" => Some(&mut self.pixel_size_x),
            "pixel_size_y" => Some(&mut self.pixel_size_y),
            "incident_wavelength" => Some(&mut self.incident_wavelength),
            "incident_energy" => Some(&mut self.incident_energy),
            "sensor_thickness" => Some(&mut self.sensor_thickness),
            "count_time" => Some(&mut self.count_time),
            "frame_time" => Some(&mut self.frame_time),
            "threshold_energy" => Some(&mut self.threshold_energy),
            _ => None,
        };
        if let Some(slot) = slot {
            *slot = number;
            return;
        }
        match key {
            "series_id" => self.series_id = whole,
            "saturation_value" => self.saturation_value = whole,
            "number_of_images" => self.number_of_images = whole,
            "series_unique_id" => self.series_unique_id = text,
            "arm_date" => self.arm_date = text,
            "sensor_material" => self.sensor_material = text,
            "detector_description" => self.detector_description = text,
            "detector_serial_number" => self.detector_serial_number = text,
            "channel" => self.channel = text,
            _ => {
                if let Some(axis) = key.strip_prefix("detector_translation.") {
                    let t = self.detector_translation.get_or_insert([0.0; 3]);
                    let i = match axis {
                        "x" => 0,
                        "y" => 1,
                        _ => 2,
                    };
                    t[i] = number.unwrap_or(0.0);
                } else if let Some(rest) = key.strip_prefix("goniometer.") {
                    if let Some((name, part)) = rest.rsplit_once('.') {
                        let at = match self.goniometer.iter().position(|a| a.name == name) {
                            Some(at) => at,
                            None => {
                                self.goniometer.push(Axis {
                                    name: name.to_string(),
                                    start: 0.0,
                                    increment: 0.0,
                                });
                                self.goniometer.len() - 1
                            }
                        };
                        let v = number.unwrap_or(0.0);
                        match part {
                            "start" => self.goniometer[at].start = v,
                            _ => self.goniometer[at].increment = v,
                        }
                    }
                } else if let Some(name) = key.strip_prefix("user.") {
                    let v = match value {
                        AttrValue::I64(i) => UserValue::Int(*i),
                        AttrValue::F64(x) => UserValue::Float(*x),
                        AttrValue::Str(s) => UserValue::Text(s.to_string()),
                    };
                    self.user.push((name.to_string(), v));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::attributes;

    #[test]
    fn a_series_survives_the_trip_through_frame_attributes() {
        let series = Series {
            series_id: Some(7),
            series_unique_id: Some("abc".into()),
            beam_center_x: Some(512.5),
            beam_center_y: Some(500.25),
            pixel_size_x: Some(75e-6),
            pixel_size_y: Some(75e-6),
            incident_energy: Some(12_400.0),
            detector_translation: Some([0.0, 0.0, 0.125]),
            sensor_material: Some("CdTe".into()),
            sensor_thickness: Some(750e-6),
            saturation_value: Some(65_000),
            count_time: Some(0.001),
            frame_time: Some(0.002),
            goniometer: vec![Axis {
                name: "omega".into(),
                start: 10.0,
                increment: 0.1,
            }],
            user: vec![("sample".into(), UserValue::Text("lysozyme".into()))],
            ..Series::default()
        };
        let mut area = AttributeArea::default();
        series.push_attributes(&mut area).unwrap();
        let back =
            Series::from_attributes(attributes(area.as_bytes()).map(Result::unwrap)).unwrap();
        assert_eq!(back, series);
        assert!((back.wavelength().unwrap() - 0.99987).abs() < 1e-4);
    }
}
