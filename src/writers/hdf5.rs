//! `hdf5`: NeXus/NXmx files, written by libhdf5 through the io_uring file driver
//! (`hdf5_ffi`).
//!
//! Layout (Dectris-style master + data files, readable by h5py + hdf5plugin, silx,
//! fabio, DIALS's `nxmx`):
//!
//! ```text
//! {prefix}_data_000001.h5 (template)       per worker, in the order the worker got them
//!   /entry/data/data          (frames, ny, nx), one frame per chunk, raw or
//!                             bitshuffle-LZ4 (filter 32008), written as direct chunks
//!   /entry/data/frame_id      u64 per frame
//!   /entry/data/timestamp_ns  u64 per frame (ns since the Unix epoch)
//!   /entry/metadata/NAME      f64 per frame: metadata channels and reductions (frame
//!                             attributes); NaN where a frame lacks the value
//! {prefix}_master.h5                       written when the stage ends (`nxmx.rs`):
//!                             every data file as one dataset in frame-id order
//! ```
//!
//! Data files are written in SWMR mode: a reader opening with `swmr=True` follows
//! them live. A sync (every `flush_ms`, and whenever the worker needs ring slots back)
//! appends the per-frame values, makes the new extent visible and fdatasyncs the file;
//! `frame_id` only grows after the frames it names are on disk, and the ring releases a
//! frame only after that (spec §5.8). A killed writer's successor makes its files
//! consistent (`nxmx::recover`), skips frames delivered again that they already hold,
//! and counts what it found. `frames_per_file` starts a new data file every N frames.

use super::bitshuffle;
use super::hdf5_ffi::{self as h5, Element, File, Growing, H5Error, Mode};
use super::nxmx::{self, Experiment};
use super::{
    unknown_writer_key, Destination, FileContent, Incoming, OrderedStore, Recovered, Reorder,
    Rollover, Seen, WriteCounters, REORDER_KEYS,
};
use crate::processors::{ArgValue, Fault, Outputs, ProcessError, Processor, Refused, StageContext};
use crate::ring::{Dtype, Frame};
use std::path::PathBuf;
use std::time::Duration;

const OWN_KEYS: &[&str] = &[
    "compression",
    "frames_per_file",
    "flush_ms",
    "reorder_window",
    "attributes",
    "detector",
];
/// Per-frame value datasets grow this many values per chunk.
const VALUES_PER_CHUNK: u64 = 1024;

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
    reorder: Reorder,
    attributes: Option<Vec<String>>,
    experiment: Experiment,
    worker: u32,
    next_file: u64,
    current: Option<DataFile>,
    seen: Seen,
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
            reorder: Reorder::default(),
            attributes: None,
            experiment: Experiment::default(),
            worker: 0,
            next_file: 1,
            current: None,
            seen: Seen::default(),
            compressed: Vec::new(),
            scratch: Vec::new(),
            counters: WriteCounters::default(),
            values_not_stored: 0,
            bytes_stored: 0,
        }
    }
}

impl Hdf5Writer {
    fn master_path(&self) -> PathBuf {
        let prefix = &self.destination.prefix;
        self.destination.folder.join(format!("{prefix}_master.h5"))
    }

    fn data_path(&self, worker: u32, file: u64) -> PathBuf {
        self.destination
            .path(&[("file", file), ("worker", u64::from(worker))])
    }

    /// Every data file of `worker`, in order (a restarted worker continues the numbers).
    fn data_files(&self, worker: u32) -> Vec<PathBuf> {
        (1..)
            .map(|file| self.data_path(worker, file))
            .take_while(|path| path.exists())
            .collect()
    }

    /// Opens the next data file for frames like `frame`.
    fn open_next(&mut self, frame: &Incoming<'_>) -> Result<(), H5Error> {
        let header = frame.header();
        let index = self.next_file;
        let path = self.data_path(self.worker, index);
        let names: Vec<String> = match &self.attributes {
            Some(list) => list.clone(),
            None => {
                let mut names = Vec::new();
                frame.for_each_value(|k, _| names.push(k.to_string()));
                names
            }
        };
        self.attributes = Some(names.clone());
        let overwrite = self.destination.overwrite;
        let file = File::open(&path, Mode::Create { overwrite })?;
        let entry = h5::group(file.root(), "entry", "NXentry")?;
        h5::string_dataset(entry.id(), "definition", "NXmx")?;
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
        // The series description, once per file (SWMR allows no new datasets later).
        if let Some(series) = frame.series() {
            let json = serde_json::to_vec(&series)
                .map_err(|e| H5Error::Setup(format!("the series description: {e}")))?;
            let ds = h5::values_dataset(entry.id(), "series", Element::U8, &json, "")?;
            h5::string_attribute(ds.id(), "format", "streamd series description, JSON")?;
        }
        let metadata = h5::group(entry.id(), "metadata", "NXcollection")?;
        let values = names
            .iter()
            .map(|n| Growing::create(metadata.id(), n, Element::F64, &[], VALUES_PER_CHUNK, false))
            .collect::<Result<Vec<_>, _>>()?;
        drop((metadata, data_group, entry));
        file.start_swmr()?;
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
        Ok(())
    }

    /// Appends the pending per-frame values and makes everything visible and durable.
    fn flush(&mut self) -> Result<(), H5Error> {
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

    /// Makes what was written durable and counts it; a failed flush leaves the file
    /// with the frames of the last good one (the extent never shows frames that are not
    /// there) and counts the rest as not written.
    fn make_durable(&mut self) -> Result<(), String> {
        match self.flush() {
            Ok(()) => {
                self.counters.durable();
                Ok(())
            }
            Err(e) => {
                let reason = self.counters.pending_lost(&self.destination, &e.into_io());
                // The file keeps what its ids name; the next frame starts a new file.
                if let Some(f) = self.current.take() {
                    let path = f.path.clone();
                    drop(f);
                    let _ = nxmx::recover(&path);
                }
                Err(format!("flushing: {reason}"))
            }
        }
    }

    fn close_current(&mut self) -> Result<(), String> {
        let flushed = self.make_durable();
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

    fn write_frame(&mut self, frame: &Incoming<'_>) -> Result<(), StoreError> {
        let header = frame.header();
        if header.pixel_count() == 0 {
            let reason = format!("frame {} has no pixels to store", header.frame_id);
            return Err(StoreError::Other(reason));
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
        let (mut found, mut numeric) = (0usize, 0usize);
        for pending in f.pending_values.iter_mut() {
            pending.push(f64::NAN);
        }
        frame.for_each_value(|key, number| {
            numeric += 1;
            if let Some(k) = names.iter().position(|n| n == key) {
                *f.pending_values[k].last_mut().expect("pushed above") = number;
                found += 1;
            }
        });
        if found < numeric {
            self.values_not_stored += 1;
        }
        f.content.frames += 1;
        self.bytes_stored += stored;
        self.counters.pending(payload.len() as u64);
        Ok(())
    }
}

/// Why a frame was not stored.
enum StoreError {
    /// libhdf5 or its file driver failed (a full disk, no permission).
    File(H5Error),
    /// The frame cannot be stored, or closing the previous file failed: the sentence.
    Other(String),
}

impl From<H5Error> for StoreError {
    fn from(e: H5Error) -> StoreError {
        StoreError::File(e)
    }
}

impl From<String> for StoreError {
    fn from(reason: String) -> StoreError {
        StoreError::Other(reason)
    }
}

impl StoreError {
    /// The system error a writer classifies (disk full, no permission), or one that
    /// carries the sentence.
    fn into_io(self) -> std::io::Error {
        match self {
            StoreError::File(e) => e.into_io(),
            StoreError::Other(reason) => std::io::Error::other(reason),
        }
    }
}

fn element(dtype: Dtype) -> Element {
    match dtype {
        Dtype::U8 => Element::U8,
        Dtype::U16 => Element::U16,
        Dtype::U32 => Element::U32,
        Dtype::U64 => Element::U64,
        Dtype::I8 => Element::I8,
        Dtype::I16 => Element::I16,
        Dtype::I32 => Element::I32,
        Dtype::I64 => Element::I64,
        Dtype::F32 => Element::F32,
        Dtype::F64 => Element::F64,
    }
}

impl OrderedStore for Hdf5Writer {
    fn parts(&mut self) -> (&mut Seen, &mut Reorder, &mut WriteCounters) {
        (&mut self.seen, &mut self.reorder, &mut self.counters)
    }

    fn store(&mut self, frame: &Incoming<'_>) -> Result<(), String> {
        let id = frame.header().frame_id;
        self.write_frame(frame).map_err(|e| {
            let e = e.into_io();
            let path = self
                .current
                .as_ref()
                .map_or_else(|| self.destination.folder.clone(), |f| f.path.clone());
            format!(
                "frame {id} not written to {}: {}",
                path.display(),
                self.counters.not_written(&self.destination, &e)
            )
        })
    }
}

impl Processor for Hdf5Writer {
    fn configure(&mut self, key: &str, value: &ArgValue) -> Result<(), Refused> {
        let changing_layout = self.current.is_some()
            && matches!(
                key,
                "compression" | "attributes" | "template" | "prefix" | "folder"
            );
        if changing_layout {
            return Err(format!("{key} cannot change while a file is open").into());
        }
        if self.destination.configure(key, value)?
            || self.rollover.configure(key, value)?
            || self.reorder.configure(key, value)?
        {
            return Ok(());
        }
        match (key, value) {
            ("compression", ArgValue::String(c)) if c == "none" || c == "bslz4" => {
                self.bitshuffle_lz4 = c == "bslz4"
            }
            ("compression", other) => {
                return Err(format!(
                    "compression must be \"none\" or \"bslz4\" (bitshuffle-LZ4, HDF5 filter 32008), got {other}"
                ).into())
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
                return Err(format!("attributes must be a list of names, got {other}").into())
            }
            ("detector", v) => self.experiment = Experiment::parse(v)?,
            _ => {
                let own: Vec<&str> = OWN_KEYS.iter().chain(&REORDER_KEYS).copied().collect();
                return Err(unknown_writer_key("hdf5", key, &own).into());
            }
        }
        Ok(())
    }

    fn check_wiring(&self, wiring: &crate::processors::Wiring) -> Result<(), Refused> {
        self.destination
            .check_workers(wiring.workers, "data file")
            .map_err(Into::into)
    }

    fn prepare(&self, _workers: u32) -> Result<(), Refused> {
        h5::init().map_err(String::from)?;
        self.destination.check_folder()?;
        let master = self.master_path();
        if master.exists() && !self.destination.overwrite {
            return Err(format!(
                "{} already exists; set overwrite = true to replace it, or change `prefix`",
                master.display()
            )
            .into());
        }
        self.destination
            .check_earlier_files("HDF5 data")
            .map_err(Into::into)
    }

    fn start(&mut self, ctx: &StageContext) -> Result<(), ProcessError> {
        h5::init().map_err(String::from)?;
        self.worker = ctx.worker;
        if ctx.restarts > 0 {
            let _hdf5 = h5::lock();
            let files = self.data_files(self.worker);
            let mut found = Recovered::default();
            for (k, path) in files.iter().enumerate() {
                let ids = match nxmx::recover(path) {
                    Ok(ids) => ids,
                    // A predecessor killed while creating its last file may leave one
                    // libhdf5 cannot open. Frames reach a file only after it is whole,
                    // so that one holds none: it goes, and its number is used again.
                    // Were that wrong, the frames shown as written that no file holds
                    // are counted as not written below.
                    Err(_) if k + 1 == files.len() => {
                        std::fs::remove_file(path).map_err(|e| {
                            format!(
                                "{} is unreadable and cannot be removed: {e}",
                                path.display()
                            )
                        })?;
                        eprintln!(
                            "streamd hdf5: removed {}, which its killed writer had not finished creating (it held no frames)",
                            path.display()
                        );
                        break;
                    }
                    Err(e) => return Err(e.into()),
                };
                found.files += 1;
                for id in ids {
                    found.frames += 1;
                    self.seen.first_time(id);
                }
            }
            self.next_file = found.files + 1;
            self.counters
                .recovered(&found, &ctx.previous, &self.destination);
        }
        Ok(())
    }

    fn process(
        &mut self,
        _input: usize,
        frame: &Frame<'_>,
        _out: &mut Outputs,
    ) -> Result<(), ProcessError> {
        let _hdf5 = h5::lock();
        self.take(frame).map_err(Into::into)
    }

    fn sync_interval(&self) -> Option<Duration> {
        Some(self.rollover.flush_every)
    }

    fn sync(&mut self) -> Result<(), ProcessError> {
        let _hdf5 = h5::lock();
        let kept = self.store_kept(true);
        kept.and(self.make_durable()).map_err(Into::into)
    }

    fn stop(&mut self, _out: &mut Outputs) -> Result<(), ProcessError> {
        let _hdf5 = h5::lock();
        let kept = self.store_kept(true);
        kept.and(self.close_current()).map_err(Into::into)
    }

    fn conclude(&self, workers: u32) -> Result<Option<String>, ProcessError> {
        h5::init().map_err(String::from)?;
        let _hdf5 = h5::lock();
        let files: Vec<PathBuf> = (0..workers).flat_map(|w| self.data_files(w)).collect();
        let master = self.master_path();
        let summary = nxmx::write_master(
            &master,
            &files,
            &self.experiment,
            self.destination.overwrite,
        )
        .map_err(|e| format!("writing {}: {e}", master.display()))?;
        let duplicates = match summary.duplicates {
            0 => String::new(),
            n => format!(" ({n} frames stored twice after a crash are shown once)"),
        };
        let shown = master.canonicalize().unwrap_or(master);
        Ok(Some(format!(
            "{}: {} frames from {} data files in frame-id order{duplicates}",
            shown.display(),
            summary.frames,
            files.len()
        )))
    }

    fn fault(&self) -> Option<&Fault> {
        self.counters.fault.as_ref()
    }

    fn counters(&self) -> Vec<(String, u64)> {
        let mut list = self.counters.list();
        list.push(("bytes_stored".into(), self.bytes_stored));
        list.push(("frames_with_unstored_values".into(), self.values_not_stored));
        list.push(("late_frames".into(), self.reorder.late));
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::{Dims, FrameHeader};
    use crate::writers::KeptFrame;
    use std::path::Path;

    fn restarted(folder: &std::path::Path) -> Result<Hdf5Writer, ProcessError> {
        let mut writer = Hdf5Writer::default();
        writer.configure("folder", &ArgValue::String(folder.display().to_string()))?;
        writer.start(&StageContext {
            stage: "h5".into(),
            worker: 0,
            workers: 1,
            inputs: 1,
            outputs: Vec::new(),
            restarts: 1,
            previous: Vec::new(),
        })?;
        Ok(writer)
    }

    #[test]
    fn a_last_file_its_killed_writer_never_finished_is_removed_on_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scan_data_000001.h5");
        std::fs::write(&path, b"not yet an HDF5 file").unwrap();
        let writer = restarted(dir.path()).expect("the restart goes on");
        assert!(!path.exists());
        assert_eq!(writer.next_file, 1, "its number is used again");
    }

    #[test]
    fn an_unreadable_file_before_the_last_stops_the_restart() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("scan_data_000001.h5"), b"damaged").unwrap();
        std::fs::write(dir.path().join("scan_data_000002.h5"), b"damaged").unwrap();
        let err = restarted(dir.path()).err().expect("refused").to_string();
        assert!(err.contains("scan_data_000001.h5"), "{err}");
        assert!(dir.path().join("scan_data_000001.h5").exists());
    }

    const NY: u32 = 96;
    const NX: u32 = 128;

    fn pixels(id: u64) -> Vec<u16> {
        (0..NY * NX)
            .map(|k| (u64::from(k) + id * 7) as u16)
            .collect()
    }

    fn frame(id: u64) -> KeptFrame {
        let payload: Vec<u8> = bytemuck::cast_slice(&pixels(id)).to_vec();
        KeptFrame {
            header: FrameHeader {
                frame_id: id,
                timestamp_ns: 1_000 + id,
                dtype: Dtype::U16,
                dims: Dims::new(&[NY, NX]).unwrap(),
                payload_len: payload.len() as u64,
                flags: 0,
            },
            payload,
            values: Vec::new(),
            series: None,
        }
    }

    /// A bitshuffle-LZ4 writer into `folder` that has stored and synced frames 0..40
    /// and stored frames 40..80 (not yet synced).
    fn writing(folder: &Path) -> Hdf5Writer {
        let mut writer = Hdf5Writer::default();
        let folder = ArgValue::String(folder.display().to_string());
        writer.configure("folder", &folder).unwrap();
        let bslz4 = ArgValue::String("bslz4".into());
        writer.configure("compression", &bslz4).unwrap();
        h5::init().unwrap();
        let _hdf5 = h5::lock();
        for id in 0..80 {
            writer.store(&Incoming::Kept(&frame(id))).unwrap();
            if id == 39 {
                writer.make_durable().unwrap();
            }
        }
        writer
    }

    /// What SIGKILL leaves: the file's bytes as they are now (the page cache outlives
    /// the process), copied to `to` while the writer still has it open.
    fn killed_copy(from: &Path, to: &Path) -> PathBuf {
        let name = "scan_data_000001.h5";
        std::fs::copy(from.join(name), to.join(name)).unwrap();
        to.join(name)
    }

    /// The ids and frames in a data file, read back as a reader (or the master) would.
    fn read_back(path: &Path) -> (Vec<u64>, Vec<u16>) {
        let _hdf5 = h5::lock();
        let file = File::open(path, Mode::Read).expect("opens read-only");
        let ids = h5::open_dataset(&file, "/entry/data/frame_id")
            .unwrap()
            .read(Element::U64)
            .unwrap();
        let data = h5::open_dataset(&file, "/entry/data/data").unwrap();
        let data = data
            .read(Element::U16)
            .expect("every frame it names reads back");
        (
            bytemuck::pod_collect_to_vec(&ids),
            bytemuck::pod_collect_to_vec(&data),
        )
    }

    fn assert_holds(path: &Path, frames: u64) {
        let (ids, data) = read_back(path);
        assert_eq!(ids, (0..frames).collect::<Vec<_>>());
        let expected: Vec<u16> = (0..frames).flat_map(pixels).collect();
        assert!(data == expected, "the frames' pixels differ");
    }

    /// The superblock's (v2/v3) stored end of allocation.
    fn stored_eoa(path: &Path) -> u64 {
        let bytes = std::fs::read(path).unwrap();
        u64::from_le_bytes(bytes[28..36].try_into().unwrap())
    }

    #[test]
    fn frames_named_before_the_superblock_was_written_survive_a_restart() {
        let (dir, killed) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut writer = writing(dir.path());
        // Killed inside a sync: frame chunks and datasets flushed (the ids name frames
        // 40..80), the superblock, whose EOA ends before their chunks, not yet.
        let copy = {
            let _hdf5 = h5::lock();
            let f = writer.current.as_mut().unwrap();
            f.data.flush().unwrap();
            let ids = std::mem::take(&mut f.pending_ids);
            f.frame_ids
                .append_values(bytemuck::cast_slice(&ids))
                .unwrap();
            f.frame_ids.flush().unwrap();
            let copy = killed_copy(dir.path(), killed.path());
            drop(writer);
            copy
        };
        let len = std::fs::metadata(&copy).unwrap().len();
        assert!(stored_eoa(&copy) < len, "the superblock lags the data");

        let restarted = restarted(killed.path()).expect("the restart goes on");
        assert_eq!(restarted.next_file, 2);
        assert!(stored_eoa(&copy) >= len, "the EOA covers every frame");
        assert_holds(&copy, 80);
    }

    #[test]
    fn a_file_shorter_than_its_stored_eoa_is_recovered_not_removed() {
        let (dir, killed) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let writer = writing(dir.path());
        let copy = killed_copy(dir.path(), killed.path());
        // Killed inside a sync after the superblock was written but before the file was
        // extended to its EOA: the stored EOA lies past the end of the file.
        let mut bytes = std::fs::read(&copy).unwrap();
        let eoa = bytes.len() as u64 + 4096;
        bytes[28..36].copy_from_slice(&eoa.to_le_bytes());
        let sum = h5::metadata_checksum(&bytes[..44]);
        bytes[44..48].copy_from_slice(&sum.to_le_bytes());
        std::fs::write(&copy, &bytes).unwrap();
        {
            let _hdf5 = h5::lock();
            drop(writer);
        }

        let restarted = restarted(killed.path()).expect("the restart goes on");
        assert!(copy.exists(), "a file that holds frames stays");
        assert_eq!(restarted.next_file, 2);
        assert_holds(&copy, 40);
    }
}
