//! `tiff`: one TIFF per frame, encoded by the `tiff` crate straight into the io_uring
//! engine's registered buffer and written under a hidden temporary name; a file appears
//! under its final name only whole, by a rename that does not replace (whole or absent,
//! whatever happens to the writer). Files are written with O_DIRECT, padded with zeros
//! to 4 KiB after the last IFD: filling fresh page-cache pages cost as much as the disk
//! itself on the hosts measured (BENCHMARKS.md). A file system without O_DIRECT gets
//! buffered writes, their writeback started at once.
//!
//! Durability (`sync = true`, the default): every `flush_ms` (and when the worker
//! needs its ring slots back, and at the end) the batch is made durable together — one
//! fdatasync per file, all in flight at once, so the file system commits its journal
//! once for the batch rather than once per file — then renamed, then the folder is
//! fsynced. Until then the writer *holds* the batch's frames in its input ring (spec
//! §5.8): a crash before the sync delivers them again to the restarted writer, which
//! writes them again (a frame whose final file exists is skipped). `sync = false`
//! renames each file at once without a sync (whole or absent after a crash of streamd,
//! not of the machine).
//!
//! Tags (documented in the README): ImageDescription holds JSON
//! `{"frame_id": N, "timestamp_ns": T, "attributes": {...}}`; private tags 65000
//! (frame id) and 65001 (timestamp, ns since the Unix epoch) hold the same numbers as
//! ASCII decimal; Software is `streamd VERSION`.

use super::{unknown_writer_key, Destination, Recovered, Seen, WriteCounters};
use crate::processors::{
    fixed_while_running, image_shape, ArgValue, Fault, Outputs, ProcessError, Processor, Refused,
    StageContext,
};
use crate::ring::{AttrValue, Dtype, Frame};
use crate::uring::{FileOptions, Staged, Uring};
use std::io::Cursor;
use std::time::Duration;
use tiff::encoder::{colortype, TiffEncoder, TiffValue};
use tiff::tags::Tag;

pub const TAG_FRAME_ID: u16 = 65000;
pub const TAG_TIMESTAMP_NS: u16 = 65001;

/// Room for the TIFF structure and tags around the pixels.
const TIFF_OVERHEAD: usize = 64 << 10;

pub struct TiffWriter {
    destination: Destination,
    /// fdatasync each file before its rename (`sync = false` leaves it to the kernel:
    /// files then survive a crash of streamd, not of the machine).
    sync: bool,
    worker: u32,
    /// A crashed predecessor's frames come again: a file already there is one of them.
    restarted: bool,
    seen: Seen,
    uring: Option<Uring>,
    /// Files are written with O_DIRECT (padded to 4 KiB with zeros past the last IFD),
    /// until the folder's file system refuses it.
    direct: bool,
    /// Files written under their temporary names, not yet durable, with their bytes.
    batch: Vec<(Staged, u64)>,
    flush_every: Duration,
    counters: WriteCounters,
}

impl Default for TiffWriter {
    fn default() -> Self {
        TiffWriter {
            destination: Destination::new("{prefix}_{frame_id:06}.tiff", &["frame_id", "worker"]),
            sync: true,
            worker: 0,
            restarted: false,
            seen: Seen::default(),
            uring: None,
            direct: false,
            batch: Vec::new(),
            flush_every: Duration::from_secs(1),
            counters: WriteCounters::default(),
        }
    }
}

impl Processor for TiffWriter {
    /// Whether the worker holds frames in its ring until they are durable is settled when
    /// it attaches; a durable batch without holding could lose them.
    fn fixed_while_running(&self) -> &'static [&'static str] {
        &["sync"]
    }

    fn configure(&mut self, key: &str, value: &ArgValue) -> Result<(), Refused> {
        if self.destination.configure(key, value)? {
            return Ok(());
        }
        match (key, value) {
            ("sync", _) if self.uring.is_some() => return Err(fixed_while_running(key)),
            ("sync", ArgValue::Boolean(b)) => self.sync = *b,
            ("sync", other) => {
                return Err(format!("sync must be true or false, got {other}").into())
            }
            ("flush_ms", ArgValue::Integer(n)) if *n > 0 => {
                self.flush_every = Duration::from_millis(*n as u64)
            }
            ("flush_ms", other) => {
                return Err(format!("flush_ms must be a positive number of ms, got {other}").into())
            }
            _ => return Err(unknown_writer_key("tiff", key, &["sync", "flush_ms"]).into()),
        }
        Ok(())
    }

    fn check_wiring(&self, wiring: &crate::processors::Wiring) -> Result<(), Refused> {
        self.destination
            .check_workers(wiring.workers, "TIFF")
            .map_err(Into::into)
    }

    fn prepare(&self, _workers: u32) -> Result<(), Refused> {
        self.destination.check_folder()?;
        Ok(self.destination.check_earlier_files("TIFF")?)
    }

    fn start(&mut self, ctx: &StageContext) -> Result<(), ProcessError> {
        self.worker = ctx.worker;
        self.direct = true;
        self.uring = Some(Uring::new(TIFF_OVERHEAD).map_err(|e| format!("io_uring: {e}"))?);
        self.restarted = ctx.restarts > 0;
        if self.restarted {
            // The files are the truth: count what the predecessors published.
            let mine = [("worker", u64::from(self.worker))];
            let sample = self.destination.path(&[("frame_id", 0), mine[0]]);
            let folder = sample.parent().unwrap_or(&self.destination.folder);
            let files = std::fs::read_dir(folder)
                .map(|entries| {
                    entries
                        .filter_map(Result::ok)
                        .filter(|e| {
                            self.destination.template.matches(
                                &self.destination.prefix,
                                &e.file_name().to_string_lossy(),
                                &mine,
                            )
                        })
                        .count() as u64
                })
                .unwrap_or(0);
            let found = Recovered {
                frames: files,
                files,
            };
            self.counters
                .recovered(&found, &ctx.previous, &self.destination);
            // A predecessor's unpublished batch: its frames come again (held), so
            // its temporary files only take space.
            if let Ok(entries) = std::fs::read_dir(folder) {
                for entry in entries.filter_map(Result::ok) {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let inner = name.strip_prefix('.').and_then(|n| n.strip_suffix(".part"));
                    if inner.is_some_and(|n| {
                        self.destination
                            .template
                            .matches(&self.destination.prefix, n, &mine)
                    }) {
                        let _ = std::fs::remove_file(entry.path());
                    }
                }
            }
        }
        Ok(())
    }

    fn process(
        &mut self,
        _input: usize,
        frame: &Frame<'_>,
        _out: &mut Outputs,
    ) -> Result<(), ProcessError> {
        let header = frame.header();
        let (ny, nx) = image_shape("tiff", header)?;
        let path = self.destination.path(&[
            ("frame_id", header.frame_id),
            ("worker", u64::from(self.worker)),
        ]);
        if !self.seen.first_time(header.frame_id) || (self.restarted && path.exists()) {
            self.counters.duplicates += 1;
            return Ok(());
        }
        let description = describe(frame);
        let uring = self.uring.as_mut().expect("started");
        let staging = uring
            .staging_mut(frame.payload().len() + description.len() + TIFF_OVERHEAD)
            .map_err(|e| format!("io_uring buffer: {e}"))?;
        let len = encode(staging, frame, ny, nx, &description)
            .map_err(|e| format!("TIFF encoding of frame {}: {e}", header.frame_id))?;
        let name = path
            .file_name()
            .expect("template names a file")
            .to_string_lossy();
        let temp = path.with_file_name(format!(".{name}.part"));
        // Durable files wait for the batch's sync to be renamed; the others are
        // renamed at once.
        let mut options = FileOptions {
            overwrite: self.destination.overwrite,
            sync: false,
            rename: !self.sync,
            direct: self.direct,
        };
        let mut written = uring.write_file(&temp, &path, len, options);
        if self.direct
            && written
                .as_ref()
                .is_err_and(|e| e.raw_os_error() == Some(libc::EINVAL))
        {
            // The folder's file system has no O_DIRECT (tmpfs before Linux 6.6): the
            // page cache it is.
            self.direct = false;
            options.direct = false;
            written = uring.write_file(&temp, &path, len, options);
        }
        match written {
            Ok(()) if self.sync => {
                self.batch.push((Staged { temp, path }, len as u64));
                Ok(())
            }
            Ok(()) => {
                self.counters.written(len as u64);
                self.counters.files_written += 1;
                Ok(())
            }
            Err(e) => Err(format!(
                "{} not written: {}",
                path.display(),
                self.counters.not_written(&self.destination, &e)
            )
            .into()),
        }
    }

    fn sync_interval(&self) -> Option<Duration> {
        self.sync.then_some(self.flush_every)
    }

    fn sync(&mut self) -> Result<(), ProcessError> {
        Ok(self.publish()?)
    }

    fn stop(&mut self, _out: &mut Outputs) -> Result<(), ProcessError> {
        Ok(self.publish()?)
    }

    fn fault(&self) -> Option<&Fault> {
        self.counters.fault.as_ref()
    }

    fn counters(&self) -> Vec<(String, u64)> {
        self.counters.list()
    }
}

impl TiffWriter {
    /// Makes the batch durable and gives its files their names (one sync for all).
    fn publish(&mut self) -> Result<(), String> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let uring = self.uring.as_mut().expect("started");
        let batch = std::mem::take(&mut self.batch);
        let (files, bytes): (Vec<Staged>, Vec<u64>) = batch.into_iter().unzip();
        let results = uring.publish_batch(&files, self.destination.overwrite);
        let mut first_error = None;
        for ((file, len), result) in files.iter().zip(bytes).zip(results) {
            match result {
                Ok(()) => {
                    self.counters.written(len);
                    self.counters.files_written += 1;
                }
                Err(e) => {
                    let reason = self.counters.not_written(&self.destination, &e);
                    first_error
                        .get_or_insert(format!("{} not written: {reason}", file.path.display()));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// The ImageDescription JSON.
fn describe(frame: &Frame<'_>) -> String {
    let header = frame.header();
    let attributes: serde_json::Map<String, serde_json::Value> = frame
        .attributes()
        .filter_map(Result::ok)
        .map(|(k, v)| {
            let value = match v {
                AttrValue::I64(i) => i.into(),
                AttrValue::F64(x) => x.into(),
                AttrValue::Str(s) => s.into(),
            };
            (k.to_string(), value)
        })
        .collect();
    serde_json::json!({
        "frame_id": header.frame_id,
        "timestamp_ns": header.timestamp_ns,
        "attributes": attributes,
    })
    .to_string()
}

/// Encodes the frame as a one-page TIFF into `buf`; returns the length.
fn encode(
    buf: &mut [u8],
    frame: &Frame<'_>,
    ny: u32,
    nx: u32,
    description: &str,
) -> tiff::TiffResult<usize> {
    let header = frame.header();
    let mut cursor = Cursor::new(buf);
    let mut tiff = TiffEncoder::new(&mut cursor)?;
    let payload = frame.payload();
    // Each dtype with the TIFF sample format that holds it (SampleFormat int, uint, float).
    macro_rules! write_as {
        ($color:ident, $t:ty) => {
            page::<colortype::$color, _>(
                &mut tiff,
                nx,
                ny,
                frame,
                description,
                &pixels::<$t>(payload),
            )?
        };
    }
    match header.dtype {
        Dtype::U8 => page::<colortype::Gray8, _>(&mut tiff, nx, ny, frame, description, payload)?,
        Dtype::I8 => write_as!(GrayI8, i8),
        Dtype::U16 => write_as!(Gray16, u16),
        Dtype::I16 => write_as!(GrayI16, i16),
        Dtype::U32 => write_as!(Gray32, u32),
        Dtype::I32 => write_as!(GrayI32, i32),
        Dtype::U64 => write_as!(Gray64, u64),
        Dtype::I64 => write_as!(GrayI64, i64),
        Dtype::F32 => write_as!(Gray32Float, f32),
        Dtype::F64 => write_as!(Gray64Float, f64),
    }
    Ok(cursor.position() as usize)
}

/// The payload as pixels: borrowed when aligned (ring payloads are page-aligned).
fn pixels<T: bytemuck::Pod>(payload: &[u8]) -> std::borrow::Cow<'_, [T]> {
    match bytemuck::try_cast_slice(payload) {
        Ok(p) => std::borrow::Cow::Borrowed(p),
        Err(_) => std::borrow::Cow::Owned(bytemuck::pod_collect_to_vec(payload)),
    }
}

fn page<C, W>(
    tiff: &mut TiffEncoder<W>,
    nx: u32,
    ny: u32,
    frame: &Frame<'_>,
    description: &str,
    data: &[C::Inner],
) -> tiff::TiffResult<()>
where
    C: colortype::ColorType,
    W: std::io::Write + std::io::Seek,
    [C::Inner]: TiffValue,
{
    let header = frame.header();
    let mut image = tiff.new_image::<C>(nx, ny)?;
    let dir = image.encoder();
    dir.write_tag(Tag::ImageDescription, description)?;
    dir.write_tag(
        Tag::Software,
        concat!("streamd ", env!("CARGO_PKG_VERSION")),
    )?;
    dir.write_tag(
        Tag::Unknown(TAG_FRAME_ID),
        header.frame_id.to_string().as_str(),
    )?;
    dir.write_tag(
        Tag::Unknown(TAG_TIMESTAMP_NS),
        header.timestamp_ns.to_string().as_str(),
    )?;
    image.write_data(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_is_fixed_once_started_and_flush_ms_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = TiffWriter::default();
        let folder = ArgValue::String(dir.path().display().to_string());
        writer.configure("folder", &folder).unwrap();
        writer.configure("sync", &ArgValue::Boolean(false)).unwrap();
        writer.configure("sync", &ArgValue::Boolean(true)).unwrap();
        writer
            .start(&StageContext {
                stage: "tiff".into(),
                worker: 0,
                workers: 1,
                inputs: 1,
                outputs: Vec::new(),
                restarts: 0,
                previous: Vec::new(),
            })
            .unwrap();
        // Whether frames are held until durable was settled by the first value.
        let refused = writer
            .configure("sync", &ArgValue::Boolean(false))
            .unwrap_err();
        assert!(
            refused.to_string().contains("sync cannot change"),
            "{refused}"
        );
        assert_eq!(writer.sync_interval(), Some(Duration::from_secs(1)));
        writer
            .configure("flush_ms", &ArgValue::Integer(250))
            .unwrap();
        assert_eq!(writer.sync_interval(), Some(Duration::from_millis(250)));
    }
}
