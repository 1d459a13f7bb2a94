//! The NXmx side of the `hdf5` writer: what the experiment is (the `detector` table),
//! recovering data files a killed writer left open, and the master file that presents
//! every data file as one dataset in frame-id order, as DIALS's `nxmx` reader, dxtbx,
//! silx and fabio read it.
//!
//! The master is written once every worker of the stage has finished (the supervisor
//! calls [`Processor::conclude`](crate::processors::Processor::conclude)), when the data
//! files' extents are final:
//!
//! ```text
//! {prefix}_master.h5   @default = "entry"
//!   /entry                  NXentry: definition "NXmx", start_time, end_time (ISO 8601,
//!                           from the first and last frame timestamps)
//!   /entry/data             NXdata, signal "data"
//!     data                  (frames, ny, nx) virtual dataset over every data file, in
//!                           frame-id order, each frame once
//!     frame_id, timestamp_ns   per frame, in the same order
//!   /entry/metadata/NAME    per-frame values (metadata channels, reductions), NaN where
//!                           a frame lacks one
//!   /entry/sample           NXsample: name, depends_on → a fixed omega axis (one value
//!                           per frame, so DIALS counts every image)
//!   /entry/source           NXsource: name
//!   /entry/instrument       NXinstrument: name, beam (incident_wavelength, flux), and
//!     detector              NXdetector: depends_on → translation (distance), sensor,
//!                           saturation_value, pixel sizes, beam centre, and
//!     detector/module       NXdetector_module: data_origin, data_size, module_offset
//!                           (beam centre), fast and slow pixel directions
//! ```

use super::hdf5_ffi::{self as h5, Dataset, Element, File, Mode, VirtualPiece};
use crate::processors::{number, ArgValue};
use crate::ring::Dtype;
use crate::series::Series;
use std::path::{Path, PathBuf};

/// What the experiment is, from the `detector` table; every value has a default so a
/// file loads in DIALS without one, and a real beamline sets its own.
#[derive(Debug, Clone)]
pub struct Experiment {
    pub description: Option<String>,
    pub distance_m: f64,
    /// [y, x]
    pub pixel_size_m: [f64; 2],
    /// [y, x]; default: the image centre.
    pub beam_center_px: Option<[f64; 2]>,
    pub sensor_material: String,
    pub sensor_thickness_m: f64,
    pub wavelength_a: f64,
    pub flux: Option<f64>,
    /// Default: the largest value of the frames' dtype.
    pub saturation_value: Option<f64>,
    pub instrument_name: String,
    pub source_name: String,
    pub sample_name: String,
    /// What the series' start message said (a `zmq` source's frames carry it), beyond
    /// the values above: times, goniometer, ids.
    pub series: Option<Series>,
}

impl Default for Experiment {
    fn default() -> Self {
        Experiment {
            description: None,
            distance_m: 0.1,
            pixel_size_m: [75e-6, 75e-6],
            beam_center_px: None,
            sensor_material: "Si".into(),
            sensor_thickness_m: 450e-6,
            wavelength_a: 1.0,
            flux: None,
            saturation_value: None,
            instrument_name: "streamd".into(),
            source_name: "unknown source".into(),
            sample_name: "sample".into(),
            series: None,
        }
    }
}

pub const EXPERIMENT_KEYS: &[&str] = &[
    "description",
    "distance_m",
    "pixel_size_m",
    "beam_center_px",
    "sensor_material",
    "sensor_thickness_m",
    "wavelength_a",
    "flux",
    "saturation_value",
    "instrument_name",
    "source_name",
    "sample_name",
];

/// Sensor materials DIALS knows.
const SENSORS: &[&str] = &["Si", "Silicon", "CdTe", "GaAs"];

impl Experiment {
    pub fn parse(value: &ArgValue) -> Result<Experiment, String> {
        let table = value
            .as_table()
            .ok_or_else(|| format!("detector must be a table of geometry, got {value}"))?;
        let mut x = Experiment::default();
        let pair = |key: &str, v: &ArgValue| -> Result<[f64; 2], String> {
            match v.as_array().map(|a| {
                a.iter()
                    .map(|n| number(key, n))
                    .collect::<Result<Vec<_>, _>>()
            }) {
                Some(Ok(v)) if v.len() == 2 => Ok([v[0], v[1]]),
                _ => Err(format!("detector.{key} must be [y, x], got {v}")),
            }
        };
        let positive = |key: &str, v: &ArgValue| -> Result<f64, String> {
            match number(key, v) {
                Ok(n) if n > 0.0 => Ok(n),
                _ => Err(format!("detector.{key} must be a positive number, got {v}")),
            }
        };
        for (key, v) in table {
            let text = || {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("detector.{key} must be a string, got {v}"))
            };
            match key.as_str() {
                "description" => x.description = Some(text()?),
                "instrument_name" => x.instrument_name = text()?,
                "source_name" => x.source_name = text()?,
                "sample_name" => x.sample_name = text()?,
                "sensor_material" => {
                    let m = text()?;
                    if !SENSORS.contains(&m.as_str()) {
                        return Err(format!(
                            "detector.sensor_material must be one of {} (as DIALS names them), got \"{m}\"",
                            SENSORS.join(", ")
                        ));
                    }
                    x.sensor_material = m;
                }
                "distance_m" => x.distance_m = positive(key, v)?,
                "sensor_thickness_m" => x.sensor_thickness_m = positive(key, v)?,
                "wavelength_a" => x.wavelength_a = positive(key, v)?,
                "flux" => x.flux = Some(positive(key, v)?),
                "saturation_value" => x.saturation_value = Some(positive(key, v)?),
                "pixel_size_m" => {
                    let p = pair(key, v)?;
                    if p.iter().any(|&s| s <= 0.0) {
                        return Err(format!("detector.pixel_size_m must be positive, got {v}"));
                    }
                    x.pixel_size_m = p;
                }
                "beam_center_px" => x.beam_center_px = Some(pair(key, v)?),
                other => {
                    return Err(format!(
                        "detector has no key '{other}' (it takes: {})",
                        EXPERIMENT_KEYS.join(", ")
                    ))
                }
            }
        }
        Ok(x)
    }
}

impl Experiment {
    /// The experiment as a series' start message describes it: its values replace the
    /// `detector` table's (the detector knows what it measured), which remain for
    /// whatever it leaves out.
    pub fn with_series(&self, s: &Series) -> Experiment {
        let mut x = self.clone();
        if let (Some(y), Some(bx)) = (s.beam_center_y, s.beam_center_x) {
            x.beam_center_px = Some([y, bx]);
        }
        if let (Some(y), Some(px)) = (s.pixel_size_y, s.pixel_size_x) {
            x.pixel_size_m = [y, px];
        }
        if let Some([_, _, z]) = s.detector_translation.filter(|t| t[2] > 0.0) {
            x.distance_m = z;
        }
        if let Some(w) = s.wavelength().filter(|w| *w > 0.0) {
            x.wavelength_a = w;
        }
        if let Some(m) = &s.sensor_material {
            x.sensor_material = m.clone();
        }
        if let Some(t) = s.sensor_thickness.filter(|t| *t > 0.0) {
            x.sensor_thickness_m = t;
        }
        if let Some(v) = s.saturation_value {
            x.saturation_value = Some(v as f64);
        }
        if s.detector_description.is_some() {
            x.description = s.detector_description.clone();
        }
        x.series = Some(s.clone());
        x
    }

    /// The series description this experiment gives a `start` message (the `zmq`
    /// sink's, when its frames carry none) for frames of `ny`×`nx` `dtype`.
    pub fn series(&self, ny: u32, nx: u32, dtype: Dtype) -> Series {
        let [by, bx] = self
            .beam_center_px
            .unwrap_or([f64::from(ny) / 2.0, f64::from(nx) / 2.0]);
        let [py, px] = self.pixel_size_m;
        let saturation = self.saturation_value.map(|v| v as u64).or(match dtype {
            Dtype::U8 => Some(u64::from(u8::MAX)),
            Dtype::U16 => Some(u64::from(u16::MAX)),
            Dtype::U32 => Some(u64::from(u32::MAX)),
            Dtype::U64 => Some(u64::MAX),
            _ => None,
        });
        Series {
            beam_center_x: Some(bx),
            beam_center_y: Some(by),
            pixel_size_x: Some(px),
            pixel_size_y: Some(py),
            incident_wavelength: Some(self.wavelength_a),
            detector_translation: Some([0.0, 0.0, self.distance_m]),
            sensor_material: Some(self.sensor_material.clone()),
            sensor_thickness: Some(self.sensor_thickness_m),
            saturation_value: saturation,
            detector_description: self.description.clone(),
            ..Series::default()
        }
    }
}

/// What a data file holds, read back (after making it consistent).
struct DataFile {
    path: PathBuf,
    ids: Vec<u64>,
    times: Vec<u64>,
    values: Vec<(String, Vec<f64>)>,
    /// The data dataset's extent: (frames, ny, nx).
    dims: Vec<u64>,
    element_type: Option<h5::Handle>,
    /// The series description its frames carried.
    series: Option<Series>,
}

/// Makes a data file that a killed writer may have left open consistent again: clears
/// its "open for write" flags (as `h5clear -s`) and trims every per-frame dataset to the
/// frames whose ids were flushed (the data may run ahead of the ids; those frames were
/// not durable, so the ring delivers them again). Returns the ids it holds.
pub fn recover(path: &Path) -> Result<Vec<u64>, String> {
    Ok(read_data_file(path, false, true)?.ids)
}

/// Reads a data file back. Without `recovering`, a file its writer closed opens as it
/// is (read-only, so beside a live SWMR reader too), and only one that a killed writer
/// left flagged "open for write" is recovered.
fn read_data_file(path: &Path, keep_type: bool, recovering: bool) -> Result<DataFile, String> {
    let shown = path.display();
    let as_is = match recovering {
        true => None,
        false => File::open(path, Mode::Read).ok(),
    };
    let trimming = as_is.is_none();
    let file = match as_is {
        Some(file) => file,
        None => File::open(path, Mode::Recover).map_err(|e| format!("{shown}: {e}"))?,
    };
    let ids: Vec<u64> = match h5::open_dataset(&file, "/entry/data/frame_id") {
        Some(ds) => bytemuck::pod_collect_to_vec(&ds.read(Element::U64)?),
        None => Vec::new(),
    };
    let n = ids.len() as u64;
    let trim = |ds: &Dataset| -> Result<(), String> {
        if trimming && ds.dims()?.first().is_some_and(|&len| len > n) {
            ds.set_len(n)?;
        }
        Ok(())
    };
    let mut dims = Vec::new();
    let mut element_type = None;
    if let Some(data) = h5::open_dataset(&file, "/entry/data/data") {
        trim(&data)?;
        dims = data.dims()?;
        if keep_type {
            element_type = Some(data.file_type()?);
        }
    }
    let times = match h5::open_dataset(&file, "/entry/data/timestamp_ns") {
        Some(ds) => {
            trim(&ds)?;
            bytemuck::pod_collect_to_vec(&ds.read(Element::U64)?)
        }
        None => Vec::new(),
    };
    let mut values = Vec::new();
    for name in h5::link_names(&file, "/entry/metadata") {
        if let Some(ds) = h5::open_dataset(&file, &format!("/entry/metadata/{name}")) {
            trim(&ds)?;
            values.push((name, bytemuck::pod_collect_to_vec(&ds.read(Element::F64)?)));
        }
    }
    let series = h5::open_dataset(&file, "/entry/series")
        .and_then(|ds| ds.read(Element::U8).ok())
        .and_then(|json| serde_json::from_slice(&json).ok());
    file.close().map_err(|e| format!("{shown}: {e}"))?;
    Ok(DataFile {
        path: path.to_path_buf(),
        ids,
        times,
        values,
        dims,
        element_type,
        series,
    })
}

/// What [`write_master`] found and wrote.
#[derive(Debug, Default)]
pub struct MasterSummary {
    pub frames: u64,
    /// Frames found in more than one data file (a crash re-delivered them to another
    /// worker); the master shows each once.
    pub duplicates: u64,
}

/// Writes the master file over `data_files` (made consistent first).
pub fn write_master(
    master: &Path,
    data_files: &[PathBuf],
    experiment: &Experiment,
    overwrite: bool,
) -> Result<MasterSummary, String> {
    let mut files = Vec::new();
    for path in data_files {
        let file = read_data_file(path, true, false)?;
        if file.element_type.is_some() {
            files.push(file);
        }
    }
    // Only files with the first file's frame shape fit one dataset.
    let item: Vec<u64> = files.first().map_or(Vec::new(), |f| f.dims[1..].to_vec());
    let mut order: Vec<(u64, usize, u64)> = Vec::new();
    for (k, f) in files.iter().enumerate() {
        if f.dims[1..] != item[..] {
            return Err(format!(
                "{} holds frames of shape {:?}, the first data file {:?}; one master cannot show both",
                f.path.display(),
                &f.dims[1..],
                item
            ));
        }
        order.extend(
            f.ids
                .iter()
                .enumerate()
                .map(|(row, &id)| (id, k, row as u64)),
        );
    }
    order.sort_unstable();
    let before = order.len();
    order.dedup_by_key(|(id, _, _)| *id);
    let summary = MasterSummary {
        frames: order.len() as u64,
        duplicates: (before - order.len()) as u64,
    };
    let folder = master.parent().unwrap_or(Path::new("."));
    let mut pieces: Vec<VirtualPiece> = Vec::new();
    for (position, &(_, k, row)) in order.iter().enumerate() {
        if let Some(last) = pieces.last_mut() {
            if last.file == relative(folder, &files[k].path)
                && last.source_first + last.count == row
            {
                last.count += 1;
                continue;
            }
        }
        pieces.push(VirtualPiece {
            first: position as u64,
            count: 1,
            file: relative(folder, &files[k].path),
            dataset: "/entry/data/data".into(),
            source_first: row,
            source: files[k].dims.clone(),
        });
    }
    let ids: Vec<u64> = order.iter().map(|&(id, _, _)| id).collect();
    let times: Vec<u64> = order
        .iter()
        .map(|&(_, k, row)| files[k].times.get(row as usize).copied().unwrap_or(0))
        .collect();
    let mut names: Vec<&str> = files
        .iter()
        .flat_map(|f| f.values.iter().map(|(n, _)| n.as_str()))
        .collect();
    names.sort_unstable();
    names.dedup();

    let from_series;
    let experiment = match files.iter().find_map(|f| f.series.as_ref()) {
        Some(series) => {
            from_series = experiment.with_series(series);
            &from_series
        }
        None => experiment,
    };
    let file = File::open(master, Mode::Create { overwrite })?;
    h5::string_attribute(file.root(), "default", "entry")?;
    let entry = h5::group(file.root(), "entry", "NXentry")?;
    let e = entry.id();
    h5::string_attribute(e, "default", "data")?;
    h5::string_dataset(e, "definition", "NXmx")?;
    let first = times.iter().copied().min().unwrap_or(0);
    let last = times.iter().copied().max().unwrap_or(0);
    h5::string_dataset(e, "start_time", &iso8601(first))?;
    h5::string_dataset(e, "end_time", &iso8601(last))?;

    let data = h5::group(e, "data", "NXdata")?;
    h5::string_attribute(data.id(), "signal", "data")?;
    let dims: Vec<u64> = std::iter::once(order.len() as u64)
        .chain(item.iter().copied())
        .collect();
    if let Some(element_type) = files.first().and_then(|f| f.element_type.as_ref()) {
        h5::virtual_dataset(data.id(), "data", element_type.id(), &dims, &pieces)?;
    }
    h5::values_dataset(
        data.id(),
        "frame_id",
        Element::U64,
        bytemuck::cast_slice(&ids),
        "",
    )?;
    h5::values_dataset(
        data.id(),
        "timestamp_ns",
        Element::U64,
        bytemuck::cast_slice(&times),
        "ns",
    )?;
    let metadata = h5::group(e, "metadata", "NXcollection")?;
    for name in names {
        let values: Vec<f64> = order
            .iter()
            .map(|&(_, k, row)| {
                files[k]
                    .values
                    .iter()
                    .find(|(n, _)| n == name)
                    .and_then(|(_, v)| v.get(row as usize).copied())
                    .unwrap_or(f64::NAN)
            })
            .collect();
        h5::values_dataset(
            metadata.id(),
            name,
            Element::F64,
            bytemuck::cast_slice(&values),
            "",
        )?;
    }

    write_sample(e, experiment, &ids)?;
    let source = h5::group(e, "source", "NXsource")?;
    h5::string_dataset(source.id(), "name", &experiment.source_name)?;
    let dtype_max = files
        .first()
        .and_then(|f| f.element_type.as_ref())
        .and_then(|t| h5::unsigned_max(t.id()));
    write_instrument(e, experiment, &item, dtype_max)?;
    drop((source, metadata, data, entry));
    file.close()?;
    Ok(summary)
}

/// `path` relative to `folder` when inside it, so the set of files can move as a whole.
fn relative(folder: &Path, path: &Path) -> String {
    path.strip_prefix(folder)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

/// Goniometer axes in the order the sample's `depends_on` chain follows them (the
/// innermost first), with the directions of the usual NXmx/DIALS convention.
const SAMPLE_AXES: &[(&str, [f64; 3])] = &[
    ("phi", [-1.0, 0.0, 0.0]),
    ("chi", [0.0, 0.0, 1.0]),
    ("kappa", [-0.642_787_6, -0.766_044_4, 0.0]),
    ("omega", [-1.0, 0.0, 0.0]),
];

fn write_sample(entry: h5::hid_t, x: &Experiment, ids: &[u64]) -> Result<(), String> {
    let sample = h5::group(entry, "sample", "NXsample")?;
    h5::string_dataset(sample.id(), "name", &x.sample_name)?;
    let transformations = h5::group(sample.id(), "transformations", "NXtransformations")?;
    let given = x.series.as_ref().map_or(&[][..], |s| &s.goniometer[..]);
    // The series' axes, each with its position at every frame (start + increment ×
    // image id); without any, a fixed omega (DIALS counts images by it).
    let mut axes: Vec<(&str, [f64; 3], f64, f64)> = SAMPLE_AXES
        .iter()
        .filter_map(|(name, vector)| {
            given
                .iter()
                .find(|a| a.name == *name)
                .map(|a| (*name, *vector, a.start, a.increment))
        })
        .collect();
    if axes.is_empty() {
        axes.push(("omega", [-1.0, 0.0, 0.0], 0.0, 0.0));
    }
    let path = |name: &str| format!("/entry/sample/transformations/{name}");
    h5::string_dataset(sample.id(), "depends_on", &path(axes[0].0))?;
    for (k, (name, vector, start, increment)) in axes.iter().enumerate() {
        let values: Vec<f64> = ids
            .iter()
            .map(|&id| start + increment * id as f64)
            .collect();
        let ds = h5::values_dataset(
            transformations.id(),
            name,
            Element::F64,
            bytemuck::cast_slice(&values),
            "deg",
        )?;
        let next = axes.get(k + 1).map_or(".".to_string(), |a| path(a.0));
        axis(ds.id(), "rotation", *vector, [0.0; 3], &next)?;
        if *increment != 0.0 {
            h5::number_dataset(
                transformations.id(),
                &format!("{name}_increment_set"),
                *increment,
                "deg",
            )?;
        }
    }
    Ok(())
}

/// A transformation's attributes (NXtransformations).
fn axis(
    object: h5::hid_t,
    kind: &str,
    vector: [f64; 3],
    offset: [f64; 3],
    depends_on: &str,
) -> Result<(), String> {
    h5::string_attribute(object, "transformation_type", kind)?;
    h5::f64s_attribute(object, "vector", &vector)?;
    h5::f64s_attribute(object, "offset", &offset)?;
    h5::string_attribute(object, "offset_units", "m")?;
    h5::string_attribute(object, "depends_on", depends_on).map_err(Into::into)
}

fn write_instrument(
    entry: h5::hid_t,
    x: &Experiment,
    item: &[u64],
    dtype_max: Option<f64>,
) -> Result<(), String> {
    let instrument = h5::group(entry, "instrument", "NXinstrument")?;
    h5::string_dataset(instrument.id(), "name", &x.instrument_name)?;
    let beam = h5::group(instrument.id(), "beam", "NXbeam")?;
    h5::number_dataset(beam.id(), "incident_wavelength", x.wavelength_a, "angstrom")?;
    if let Some(flux) = x.flux {
        h5::number_dataset(beam.id(), "total_flux", flux, "Hz")?;
    }
    let detector = h5::group(instrument.id(), "detector", "NXdetector")?;
    let d = detector.id();
    const TRANSLATION: &str = "/entry/instrument/detector/transformations/translation";
    const MODULE_OFFSET: &str = "/entry/instrument/detector/module/module_offset";
    if let Some(text) = &x.description {
        h5::string_dataset(d, "description", text)?;
    }
    h5::string_dataset(d, "depends_on", TRANSLATION)?;
    h5::number_dataset(d, "distance", x.distance_m, "m")?;
    let [py, px] = x.pixel_size_m;
    h5::number_dataset(d, "y_pixel_size", py, "m")?;
    h5::number_dataset(d, "x_pixel_size", px, "m")?;
    let (ny, nx) = match item {
        [ny, nx] => (*ny as f64, *nx as f64),
        _ => (0.0, 0.0),
    };
    let [by, bx] = x.beam_center_px.unwrap_or([ny / 2.0, nx / 2.0]);
    h5::number_dataset(d, "beam_center_y", by, "pixel")?;
    h5::number_dataset(d, "beam_center_x", bx, "pixel")?;
    h5::string_dataset(d, "sensor_material", &x.sensor_material)?;
    h5::number_dataset(d, "sensor_thickness", x.sensor_thickness_m, "m")?;
    if let Some(saturation) = x.saturation_value.or(dtype_max) {
        h5::number_dataset(d, "saturation_value", saturation, "")?;
    }
    if let Some(s) = &x.series {
        write_series(d, s)?;
    }
    let transformations = h5::group(d, "transformations", "NXtransformations")?;
    let translation = h5::number_dataset(transformations.id(), "translation", x.distance_m, "m")?;
    axis(
        translation.id(),
        "translation",
        [0.0, 0.0, 1.0],
        [0.0; 3],
        ".",
    )?;
    let module = h5::group(d, "module", "NXdetector_module")?;
    let m = module.id();
    let size: Vec<u32> = item.iter().map(|&n| n as u32).collect();
    h5::values_dataset(
        m,
        "data_origin",
        Element::U32,
        bytemuck::cast_slice(&[0u32, 0]),
        "",
    )?;
    h5::values_dataset(
        m,
        "data_size",
        Element::U32,
        bytemuck::cast_slice(&size),
        "",
    )?;
    // The module's origin sits so that the beam hits pixel (bx, by): fast runs along
    // −x, slow along −y (the usual NXmx/DIALS convention).
    let offset = h5::number_dataset(m, "module_offset", 0.0, "m")?;
    axis(
        offset.id(),
        "translation",
        [1.0, 0.0, 0.0],
        [bx * px, by * py, 0.0],
        TRANSLATION,
    )?;
    let fast = h5::number_dataset(m, "fast_pixel_direction", px, "m")?;
    axis(
        fast.id(),
        "translation",
        [-1.0, 0.0, 0.0],
        [0.0; 3],
        MODULE_OFFSET,
    )?;
    let slow = h5::number_dataset(m, "slow_pixel_direction", py, "m")?;
    axis(
        slow.id(),
        "translation",
        [0.0, -1.0, 0.0],
        [0.0; 3],
        MODULE_OFFSET,
    )
}

/// What a series' start message adds to the detector: times, thresholds, serial
/// number, and Dectris's `detectorSpecific` ids.
fn write_series(detector: h5::hid_t, s: &Series) -> Result<(), String> {
    for (name, value, units) in [
        ("count_time", s.count_time, "s"),
        ("frame_time", s.frame_time, "s"),
        ("threshold_energy", s.threshold_energy, "eV"),
    ] {
        if let Some(v) = value {
            h5::number_dataset(detector, name, v, units)?;
        }
    }
    if let Some(serial) = &s.detector_serial_number {
        h5::string_dataset(detector, "serial_number", serial)?;
    }
    let specific = h5::group(detector, "detectorSpecific", "NXcollection")?;
    for (name, value) in [("series_id", s.series_id), ("nimages", s.number_of_images)] {
        if let Some(v) = value {
            h5::scalar_dataset(specific.id(), name, Element::U64, &v.to_le_bytes(), "")?;
        }
    }
    for (name, value) in [
        ("series_unique_id", &s.series_unique_id),
        ("arm_date", &s.arm_date),
        ("channel", &s.channel),
    ] {
        if let Some(v) = value {
            h5::string_dataset(specific.id(), name, v)?;
        }
    }
    if let Some(e) = s.incident_energy {
        h5::number_dataset(specific.id(), "incident_energy", e, "eV")?;
    }
    for (key, value) in &s.user {
        let name = format!("user_{key}");
        match value {
            crate::series::UserValue::Int(i) => {
                h5::scalar_dataset(
                    specific.id(),
                    &name,
                    Element::F64,
                    &(*i as f64).to_le_bytes(),
                    "",
                )?;
            }
            crate::series::UserValue::Float(v) => {
                h5::number_dataset(specific.id(), &name, *v, "")?;
            }
            crate::series::UserValue::Text(t) => h5::string_dataset(specific.id(), &name, t)?,
        }
    }
    Ok(())
}

/// `ns` since the Unix epoch as ISO 8601 UTC with milliseconds.
fn iso8601(ns: u64) -> String {
    crate::units::utc_date_time(ns, 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_iso8601_utc() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            iso8601(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(iso8601(951_782_400_000_000_000), "2000-02-29T00:00:00.000Z");
    }
}
