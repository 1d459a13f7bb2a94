//! `hdf5`: NeXus/NXmx files, written by libhdf5 through the io_uring file driver
//! (`hdf5_ffi`).
//!
//! Layout (Dectris-style master + data files, readable by h5py + hdf5plugin, silx,
//! DIALS):
//!
//! ```text
//! {prefix}_master.h5                       ({prefix}_w{worker}_master.h5 with workers > 1)
//!   /entry                 NXentry, definition = "NXmx"
//!   /entry/instrument/detector  NXdetector: geometry from the `detector` table
//!   /entry/instrument/beam      NXbeam: incident_wavelength (when given)
//!   /entry/data            NXdata: data_000001, data_000002, ... external links to
//!                          each data file's /entry/data/data
//! {prefix}_data_000001.h5 (template)       the same /entry skeleton, plus
//!   /entry/data/data          (frames, ny, nx), one frame per chunk, raw or
//!                             bitshuffle-LZ4 (filter 32008), written as direct chunks
//!   /entry/data/frame_id      u64 per frame
//!   /entry/data/timestamp_ns  u64 per frame (ns since the Unix epoch)
//!   /entry/metadata/NAME      f64 per frame: metadata channels and reductions (frame
//!                             attributes); NaN where a frame lacks the value
//! ```
//!
//! Data files are written in SWMR mode: a reader opening with `swmr=True` follows
//! them live, and after a crash finds every frame of the last flush. A flush (every
//! `flush_ms`, and at rollover and end) appends the per-frame values, makes the new
//! extent visible and fdatasyncs the file; `frame_id` only grows after the frames it
//! names are on disk. `frames_per_file` starts a new data file every N frames.

use super::bitshuffle;
use super::hdf5_ffi::{self as h5, Element, File, Growing, Mode};
use super::{unknown_writer_key, Destination, FileContent, Rollover, WriteCounters};
use crate::processors::{number, ArgValue, Fault, Outputs, Processor, StageContext};
use crate::ring::{AttrValue, Dtype, Frame};
use std::path::{Path, PathBuf};
use std::time::Instant;

const OWN_KEYS: &[&str] = &[
    "compression",
    "frames_per_file",
    "flush_ms",
    "attributes",
    "detector",
];
/// Per-frame value datasets grow this many values per chunk.
const VALUES_PER_CHUNK: u64 = 1024;

/// Detector geometry for `/entry/instrument` (the `detector` table).
#[derive(Debug, Clone, Default)]
struct Geometry {
    description: Option<String>,
    distance_m: Option<f64>,
    pixel_size_m: Option<[f64; 2]>,
    beam_center_px: Option<[f64; 2]>,
    sensor_material: Option<String>,
    sensor_thickness_m: Option<f64>,
    wavelength_a: Option<f64>,
}

const GEOMETRY_KEYS: &[&str] = &[
    "description",
    "distance_m",
    "pixel_size_m",
    "beam_center_px",
    "sensor_material",
    "sensor_thickness_m",
    "wavelength_a",
];

impl Geometry {
    fn parse(value: &ArgValue) -> Result<Geometry, String> {
        let table = value
            .as_table()
            .ok_or_else(|| format!("detector must be a table of geometry, got {value}"))?;
        let mut g = Geometry::default();
        let pair = |key: &str, v: &ArgValue| -> Result<[f64; 2], String> {
            match v.as_array().map(|a| {
                a.iter()
                    .map(|x| number(key, x))
                    .collect::<Result<Vec<_>, _>>()
            }) {
                Some(Ok(v)) if v.len() == 2 => Ok([v[0], v[1]]),
                _ => Err(format!("detector.{key} must be [y, x], got {v}")),
            }
        };
        for (key, v) in table {
            let text = || {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("detector.{key} must be a string, got {v}"))
            };
            match key.as_str() {
                "description" => g.description = Some(text()?),
                "sensor_material" => g.sensor_material = Some(text()?),
                "distance_m" => g.distance_m = Some(number(key, v)?),
                "sensor_thickness_m" => g.sensor_thickness_m = Some(number(key, v)?),
                "wavelength_a" => g.wavelength_a = Some(number(key, v)?),
                "pixel_size_m" => g.pixel_size_m = Some(pair(key, v)?),
                "beam_center_px" => g.beam_center_px = Some(pair(key, v)?),
                other => {
                    return Err(format!(
                        "detector has no key '{other}' (it takes: {})",
                        GEOMETRY_KEYS.join(", ")
                    ))
                }
            }
        }
        Ok(g)
    }

    /// Writes `/entry` with its definition and instrument; returns the entry group.
    fn write_entry(&self, file: &File) -> Result<h5::Handle, String> {
        let entry = h5::group(file.root(), "entry", "NXentry")?;
        h5::string_dataset(entry.id(), "definition", "NXmx")?;
        let instrument = h5::group(entry.id(), "instrument", "NXinstrument")?;
        let detector = h5::group(instrument.id(), "detector", "NXdetector")?;
        let d = detector.id();
        if let Some(text) = &self.description {
            h5::string_dataset(d, "description", text)?;
        }
        if let Some(m) = self.distance_m {
            h5::number_dataset(d, "distance", m, "m")?;
        }
        if let Some([y, x]) = self.pixel_size_m {
            h5::number_dataset(d, "y_pixel_size", y, "m")?;
            h5::number_dataset(d, "x_pixel_size", x, "m")?;
        }
        if let Some([y, x]) = self.beam_center_px {
            h5::number_dataset(d, "beam_center_y", y, "pixel")?;
            h5::number_dataset(d, "beam_center_x", x, "pixel")?;
        }
        if let Some(text) = &self.sensor_material {
            h5::string_dataset(d, "sensor_material", text)?;
        }
        if let Some(m) = self.sensor_thickness_m {
            h5::number_dataset(d, "sensor_thickness", m, "m")?;
        }
        if let Some(a) = self.wavelength_a {
            let beam = h5::group(instrument.id(), "beam", "NXbeam")?;
            h5::number_dataset(beam.id(), "incident_wavelength", a, "angstrom")?;
        }
        Ok(entry)
    }
}

/// The data file being written.
struct DataFile {
    path: PathBuf,
    file: File,
    data: Growing,
    frame_ids: Growing,
    timestamps: Growing,
    values: Vec<Growing>,
    /// Per-frame values not yet appended (flushed together).
    pending_ids: Vec<u64>,
    pending_times: Vec<u64>,
    pending_values: Vec<Vec<f64>>,
    content: FileContent,
}

pub struct Hdf5Writer {
    destination: Destination,
    bitshuffle_lz4: bool,
    rollover: Rollover,
    attributes: Option<Vec<String>>,
    geometry: Geometry,
    worker: u32,
    workers: u32,
    restarted: bool,
    master: Option<PathBuf>,
    next_file: u64,
    current: Option<DataFile>,
    last_flush: Instant,
    compressed: Vec<u8>,
    scratch: Vec<u8>,
    counters: WriteCounters,
    values_not_stored: u64,
    bytes_stored: u64,
}

impl Default for Hdf5Writer {
    fn default() -> Self {
        Hdf5Writer {
            destination: Destination::new("{prefix}_data_{file:06}.h5", &["file", "worker"]),
            bitshuffle_lz4: false,
            rollover: Rollover::default(),
            attributes: None,
            geometry: Geometry::default(),
            worker: 0,
            workers: 1,
            restarted: false,
            master: None,
            next_file: 1,
            current: None,
            last_flush: Instant::now(),
            compressed: Vec::new(),
            scratch: Vec::new(),
            counters: WriteCounters::default(),
            values_not_stored: 0,
            bytes_stored: 0,
        }
    }
}

impl Hdf5Writer {
    fn master_path(&self, worker: u32, workers: u32) -> PathBuf {
        let prefix = &self.destination.prefix;
        self.destination.folder.join(if workers > 1 {
            format!("{prefix}_w{worker}_master.h5")
        } else {
            format!("{prefix}_master.h5")
        })
    }

    fn data_path(&self, file: u64) -> PathBuf {
        self.destination
            .path(&[("file", file), ("worker", u64::from(self.worker))])
    }

    /// Opens the next data file for frames like `frame`, and links it from the master.
    fn open_next(&mut self, frame: &Frame<'_>) -> Result<(), String> {
        let header = frame.header();
        // A restarted worker continues after the files its predecessor made.
        while self.restarted && self.data_path(self.next_file).exists() {
            self.next_file += 1;
        }
        let index = self.next_file;
        let path = self.data_path(index);
        let names: Vec<String> = match &self.attributes {
            Some(list) => list.clone(),
            None => frame
                .attributes()
                .filter_map(Result::ok)
                .filter(|(_, v)| !matches!(v, AttrValue::Str(_)))
                .map(|(k, _)| k.to_string())
                .collect(),
        };
        self.attributes = Some(names.clone());
        let overwrite = self.destination.overwrite;
        let file = File::open(&path, Mode::Create { overwrite })?;
        let entry = self.geometry.write_entry(&file)?;
        let data_group = h5::group(entry.id(), "data", "NXdata")?;
        h5::string_attribute(data_group.id(), "signal", "data")?;
        let item: Vec<u64> = header.dims.iter().map(|&d| u64::from(d)).collect();
        let data = Growing::create(
            data_group.id(),
            "data",
            element(header.dtype),
            &item,
            1,
            self.bitshuffle_lz4,
        )?;
        let frame_ids = Growing::create(
            data_group.id(),
            "frame_id",
            Element::U64,
            &[],
            VALUES_PER_CHUNK,
            false,
        )?;
        let timestamps = Growing::create(
            data_group.id(),
            "timestamp_ns",
            Element::U64,
            &[],
            VALUES_PER_CHUNK,
            false,
        )?;
        h5::string_attribute(timestamps.id(), "units", "ns")?;
        let metadata = h5::group(entry.id(), "metadata", "NXcollection")?;
        let values = names
            .iter()
            .map(|n| Growing::create(metadata.id(), n, Element::F64, &[], VALUES_PER_CHUNK, false))
            .collect::<Result<Vec<_>, _>>()?;
        drop((metadata, data_group, entry));
        file.start_swmr()?;
        self.link_from_master(index, &path)?;
        self.next_file = index + 1;
        self.counters.files_written += 1;
        self.current = Some(DataFile {
            path,
            file,
            data,
            frame_ids,
            timestamps,
            pending_values: vec![Vec::new(); values.len()],
            values,
            pending_ids: Vec::new(),
            pending_times: Vec::new(),
            content: FileContent::new(header),
        });
        self.last_flush = Instant::now();
        Ok(())
    }

    /// Adds data file `index` to the master file (created with the first data file).
    fn link_from_master(&mut self, index: u64, data: &Path) -> Result<(), String> {
        let master_path = self.master_path(self.worker, self.workers);
        let master = if self.master.is_none() && !(self.restarted && master_path.exists()) {
            let file = File::open(
                &master_path,
                Mode::Create {
                    overwrite: self.destination.overwrite,
                },
            )?;
            let entry = self.geometry.write_entry(&file)?;
            let data_group = h5::group(entry.id(), "data", "NXdata")?;
            h5::string_attribute(data_group.id(), "signal", "data_000001")?;
            drop((data_group, entry));
            file
        } else {
            File::open(&master_path, Mode::Append)?
        };
        self.master = Some(master_path.clone());
        let group = h5::open_group(&master, "/entry/data")?;
        // Relative to the master's folder, so the set can be moved as a whole.
        let relative = data
            .strip_prefix(master_path.parent().unwrap_or(Path::new(".")))
            .unwrap_or(data);
        h5::external_link(
            group.id(),
            &format!("data_{index:06}"),
            &relative.to_string_lossy(),
            "/entry/data/data",
        )?;
        drop(group);
        master.close()
    }

    /// Appends the pending per-frame values and makes everything visible and durable.
    fn flush(&mut self) -> Result<(), String> {
        self.last_flush = Instant::now();
        let Some(f) = self.current.as_mut() else {
            return Ok(());
        };
        if f.pending_ids.is_empty() {
            return Ok(());
        }
        // Frames first: a reader that sees an id finds its frame.
        f.data.flush()?;
        for (ds, pending) in f.values.iter_mut().zip(&mut f.pending_values) {
            ds.append_values(bytemuck::cast_slice(pending))?;
            ds.flush()?;
            pending.clear();
        }
        f.timestamps
            .append_values(bytemuck::cast_slice(&f.pending_times))?;
        f.timestamps.flush()?;
        f.frame_ids
            .append_values(bytemuck::cast_slice(&f.pending_ids))?;
        f.frame_ids.flush()?;
        f.pending_times.clear();
        f.pending_ids.clear();
        f.file.flush()
    }

    fn close_current(&mut self) -> Result<(), String> {
        let flushed = self.flush();
        if let Some(f) = self.current.take() {
            let DataFile {
                file,
                data,
                frame_ids,
                timestamps,
                values,
                path,
                ..
            } = f;
            drop((data, frame_ids, timestamps, values));
            file.close()
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        flushed
    }

    fn write_frame(&mut self, frame: &Frame<'_>) -> Result<(), String> {
        let header = frame.header();
        if header.pixel_count() == 0 {
            return Err(format!("frame {} has no pixels to store", header.frame_id));
        }
        if self
            .current
            .as_ref()
            .is_some_and(|f| self.rollover.ends(&f.content, header))
        {
            self.close_current()?;
        }
        if self.current.is_none() {
            self.open_next(frame)?;
        }
        let payload = frame.payload();
        let chunk: &[u8] = if self.bitshuffle_lz4 {
            let elem = header.dtype.size();
            self.compressed
                .resize(bitshuffle::max_compressed_len(payload.len(), elem), 0);
            let len = bitshuffle::compress(payload, elem, &mut self.compressed, &mut self.scratch);
            &self.compressed[..len]
        } else {
            payload
        };
        let stored = chunk.len() as u64;
        let names = self.attributes.as_deref().unwrap_or(&[]);
        let f = self.current.as_mut().expect("opened above");
        f.data.append_chunk(chunk)?;
        f.pending_ids.push(header.frame_id);
        f.pending_times.push(header.timestamp_ns);
        let mut found = 0usize;
        let mut numeric = 0usize;
        for pending in f.pending_values.iter_mut() {
            pending.push(f64::NAN);
        }
        for (key, value) in frame.attributes().filter_map(Result::ok) {
            let number = match value {
                AttrValue::I64(i) => i as f64,
                AttrValue::F64(x) => x,
                AttrValue::Str(_) => continue,
            };
            numeric += 1;
            if let Some(k) = names.iter().position(|n| n == key) {
                *f.pending_values[k].last_mut().expect("pushed above") = number;
                found += 1;
            }
        }
        if found < numeric {
            self.values_not_stored += 1;
        }
        f.content.frames += 1;
        self.bytes_stored += stored;
        Ok(())
    }
}

fn element(dtype: Dtype) -> Element {
    match dtype {
        Dtype::U8 => Element::U8,
        Dtype::U16 => Element::U16,
        Dtype::U32 => Element::U32,
        Dtype::F32 => Element::F32,
    }
}

impl Processor for Hdf5Writer {
    fn configure(&mut self, key: &str, value: &ArgValue) -> Result<(), String> {
        let changing_layout = self.current.is_some()
            && matches!(
                key,
                "compression" | "attributes" | "template" | "prefix" | "folder"
            );
        if changing_layout {
            return Err(format!("{key} cannot change while a file is open"));
        }
        if self.destination.configure(key, value)? || self.rollover.configure(key, value)? {
            return Ok(());
        }
        match (key, value) {
            ("compression", ArgValue::String(c)) if c == "none" || c == "bslz4" => {
                self.bitshuffle_lz4 = c == "bslz4"
            }
            ("compression", other) => {
                return Err(format!(
                    "compression must be \"none\" or \"bslz4\" (bitshuffle-LZ4, HDF5 filter 32008), got {other}"
                ))
            }
            ("attributes", ArgValue::Array(list)) => {
                self.attributes = Some(
                    list.iter()
                        .map(|v| v.as_str().map(str::to_string))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| format!("attributes must be a list of names, got {value}"))?,
                )
            }
            ("attributes", other) => {
                return Err(format!("attributes must be a list of names, got {other}"))
            }
            ("detector", v) => self.geometry = Geometry::parse(v)?,
            _ => return Err(unknown_writer_key("hdf5", key, OWN_KEYS)),
        }
        Ok(())
    }

    fn prepare(&self, workers: u32) -> Result<(), String> {
        h5::init()?;
        self.destination.check_folder()?;
        if workers > 1 && !self.destination.template.names("worker") {
            return Err(format!(
                "with {workers} workers the data file template needs {{worker}}, or the workers would write the same files"
            ));
        }
        for worker in 0..workers {
            let master = self.master_path(worker, workers);
            if master.exists() && !self.destination.overwrite {
                return Err(format!(
                    "{} already exists; set overwrite = true to replace it, or change `prefix`",
                    master.display()
                ));
            }
        }
        Ok(())
    }

    fn start(&mut self, ctx: &StageContext) -> Result<(), String> {
        h5::init()?;
        self.worker = ctx.worker;
        self.workers = ctx.workers;
        self.restarted = ctx.restarts > 0;
        Ok(())
    }

    fn process(
        &mut self,
        _input: usize,
        frame: &Frame<'_>,
        _out: &mut Outputs,
    ) -> Result<(), String> {
        let _hdf5 = h5::lock();
        let result = self.write_frame(frame).and_then(|()| {
            if self.last_flush.elapsed() >= self.rollover.flush_every {
                self.flush()
            } else {
                Ok(())
            }
        });
        match result {
            Ok(()) => {
                self.counters.written(frame.payload().len() as u64);
                Ok(())
            }
            Err(message) => Err(self.failed(frame.header().frame_id, message)),
        }
    }

    fn poll(&mut self, _out: &mut Outputs) -> Result<(), String> {
        if self.last_flush.elapsed() < self.rollover.flush_every {
            return Ok(());
        }
        let _hdf5 = h5::lock();
        self.flush().map_err(|m| self.failed(u64::MAX, m))
    }

    fn stop(&mut self, _out: &mut Outputs) -> Result<(), String> {
        let _hdf5 = h5::lock();
        self.close_current().map_err(|m| self.failed(u64::MAX, m))
    }

    fn fault(&self) -> Option<&Fault> {
        self.counters.fault.as_ref()
    }

    fn counters(&self) -> Vec<(String, u64)> {
        let mut list = self.counters.list();
        list.push(("bytes_stored".into(), self.bytes_stored));
        list.push(("frames_with_unstored_values".into(), self.values_not_stored));
        list
    }
}

impl Hdf5Writer {
    /// Counts a frame (or a flush, `frame_id` MAX) that did not reach the disk.
    fn failed(&mut self, frame_id: u64, message: String) -> String {
        let path = self
            .current
            .as_ref()
            .map_or_else(|| self.destination.folder.clone(), |f| f.path.clone());
        let what = if frame_id == u64::MAX {
            "flushing".to_string()
        } else {
            format!("frame {frame_id} not written")
        };
        match h5::take_io_error() {
            Some(e) if frame_id != u64::MAX => format!(
                "{what} to {}: {}",
                path.display(),
                self.counters.not_written(&self.destination, &e)
            ),
            _ => {
                if frame_id != u64::MAX {
                    self.counters
                        .not_written(&self.destination, &std::io::Error::other(message.clone()));
                }
                format!("{what} to {}: {message}", path.display())
            }
        }
    }
}
