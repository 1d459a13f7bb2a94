//! `raw`: frames appended to flat files with O_DIRECT through io_uring, plus a sidecar
//! index. A ring payload that is page-aligned and a whole number of pages (any frame
//! whose size is a multiple of 4 KiB) goes from the slot to the disk without a copy;
//! others are copied into the engine's registered buffer and padded.
//!
//! Files (documented in the README): `{prefix}_{file:06}.raw` holds records of
//! `record_bytes` = frame bytes rounded up to 4 KiB, frame pixels first, zero padding
//! after. Beside it, `….raw.index.csv`:
//!
//! ```text
//! # streamd raw index 1: dtype=u16 shape=2048x2048 frame_bytes=8388608 record_bytes=8388608
//! # frame_id,timestamp_ns,offset
//! 0,1700000000000000000,0
//! ```
//!
//! so `np.loadtxt(index, delimiter=",", dtype=np.uint64, ndmin=2)` gives the table and
//! `np.fromfile(raw, dtype, count=ny*nx, offset=offset)` a frame. The index is appended
//! at every flush (`flush_ms`), after an fdatasync of the data: it only names frames that
//! are on disk, and the ring releases a frame only after that (spec §5.8). A killed
//! writer's successor reads its predecessor's indexes, skips frames delivered again that
//! they already name, and continues with a new file. `frames_per_file` starts a new file
//! every N frames.

use super::{
    unknown_writer_key, Destination, FileContent, Incoming, OrderedStore, Recovered, Reorder,
    Rollover, Seen, WriteCounters, REORDER_KEYS,
};
use crate::processors::{ArgValue, Fault, Outputs, ProcessError, Processor, Refused, StageContext};
use crate::ring::{Frame, FrameHeader};
use crate::uring::{align_up, direct_ok, Uring, DIRECT_ALIGN};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

struct RawFile {
    path: PathBuf,
    fd: i32,
    index_fd: i32,
    len: u64,
    index_len: u64,
    pending_index: String,
    content: FileContent,
}

pub struct RawWriter {
    destination: Destination,
    rollover: Rollover,
    reorder: Reorder,
    worker: u32,
    next_file: u64,
    uring: Option<Uring>,
    current: Option<RawFile>,
    seen: Seen,
    direct: bool,
    counters: WriteCounters,
}

impl Default for RawWriter {
    fn default() -> Self {
        RawWriter {
            destination: Destination::new("{prefix}_{file:06}.raw", &["file", "worker"]),
            rollover: Rollover::default(),
            reorder: Reorder::default(),
            worker: 0,
            next_file: 1,
            uring: None,
            current: None,
            seen: Seen::default(),
            direct: true,
            counters: WriteCounters::default(),
        }
    }
}

impl RawWriter {
    fn uring(&mut self) -> &mut Uring {
        self.uring.as_mut().expect("started")
    }

    fn data_path(&self, file: u64) -> PathBuf {
        self.destination
            .path(&[("file", file), ("worker", u64::from(self.worker))])
    }

    fn open_next(&mut self, header: &FrameHeader) -> io::Result<()> {
        let path = self.data_path(self.next_file);
        let index_path = PathBuf::from(format!("{}.index.csv", path.display()));
        let exists = if self.destination.overwrite {
            libc::O_TRUNC
        } else {
            libc::O_EXCL
        };
        let flags = libc::O_WRONLY | libc::O_CREAT | exists;
        let uring = self.uring.as_mut().expect("started");
        let fd = match uring.open(&path, flags | libc::O_DIRECT, 0o644) {
            // A filesystem without O_DIRECT: the page cache it is (shown by `direct_io`).
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                self.direct = false;
                uring.open(&path, flags, 0o644)?
            }
            other => other?,
        };
        let index_fd = uring.open(&index_path, flags, 0o644)?;
        let record = align_up(header.payload_len as usize);
        let dims: Vec<String> = header.dims.iter().map(u32::to_string).collect();
        let pending_index = format!(
            "# streamd raw index 1: dtype={} shape={} frame_bytes={} record_bytes={record}\n# frame_id,timestamp_ns,offset\n",
            header.dtype.name(),
            dims.join("x"),
            header.payload_len
        );
        self.current = Some(RawFile {
            path,
            fd,
            index_fd,
            len: 0,
            index_len: 0,
            pending_index,
            content: FileContent::new(header),
        });
        self.next_file += 1;
        self.counters.files_written += 1;
        Ok(())
    }

    /// Makes the data durable, then appends the index lines that name it.
    fn flush(&mut self) -> io::Result<()> {
        let Some(mut f) = self.current.take() else {
            return Ok(());
        };
        let result = (|| {
            if f.pending_index.is_empty() {
                return Ok(());
            }
            let uring = self.uring();
            uring.datasync(f.fd)?;
            uring.write_all_at(f.index_fd, f.pending_index.as_bytes(), f.index_len)?;
            uring.datasync(f.index_fd)?;
            f.index_len += f.pending_index.len() as u64;
            f.pending_index.clear();
            Ok(())
        })();
        self.current = Some(f);
        result
    }

    fn close_current(&mut self) -> io::Result<()> {
        let flushed = self.flush();
        if let Some(f) = self.current.take() {
            let uring = self.uring();
            let closed = uring.close(f.fd).and(uring.close(f.index_fd));
            flushed.and(closed)
        } else {
            flushed
        }
    }

    fn write_frame(&mut self, frame: &Incoming<'_>) -> io::Result<()> {
        let header = frame.header();
        if self
            .current
            .as_ref()
            .is_some_and(|f| self.rollover.ends(&f.content, header))
        {
            self.close_current()?;
            self.counters.durable();
        }
        if self.current.is_none() {
            self.open_next(header)?;
        }
        let payload = frame.payload();
        let record = align_up(payload.len()) as u64;
        let mut f = self.current.take().expect("opened above");
        let uring = self.uring.as_mut().expect("started");
        let written = if direct_ok(payload, f.len) {
            uring.write_all_at(f.fd, payload, f.len)
        } else {
            match uring.staging_mut(record as usize) {
                Ok(staging) => {
                    staging[..payload.len()].copy_from_slice(payload);
                    staging[payload.len()..].fill(0);
                    uring.write_staging_at(f.fd, record as usize, f.len)
                }
                Err(e) => Err(e),
            }
        };
        if written.is_ok() {
            f.pending_index.push_str(&format!(
                "{},{},{}\n",
                header.frame_id, header.timestamp_ns, f.len
            ));
            f.len += record;
            f.content.frames += 1;
            self.counters.pending(payload.len() as u64);
        }
        self.current = Some(f);
        written
    }

    /// Makes the data durable, then the index lines that name it, and counts them.
    fn make_durable(&mut self) -> Result<(), String> {
        match self.flush() {
            Ok(()) => {
                self.counters.durable();
                Ok(())
            }
            Err(e) => Err(format!(
                "flushing: {}",
                self.counters.pending_lost(&self.destination, &e)
            )),
        }
    }
}

/// The frame ids an index names (its complete lines), trimming a torn last line.
fn recover_index(index: &Path) -> io::Result<Vec<u64>> {
    let text = std::fs::read_to_string(index)?;
    let complete = text.rfind('\n').map_or(0, |i| i + 1);
    if complete < text.len() {
        std::fs::OpenOptions::new()
            .write(true)
            .open(index)?
            .set_len(complete as u64)?;
    }
    Ok(text[..complete]
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(',').next()?.parse().ok())
        .collect())
}

impl OrderedStore for RawWriter {
    fn parts(&mut self) -> (&mut Seen, &mut Reorder, &mut WriteCounters) {
        (&mut self.seen, &mut self.reorder, &mut self.counters)
    }

    fn store(&mut self, frame: &Incoming<'_>) -> Result<(), String> {
        self.write_frame(frame).map_err(|e| {
            format!(
                "frame {} not written: {}",
                frame.header().frame_id,
                self.counters.not_written(&self.destination, &e)
            )
        })
    }
}

impl Processor for RawWriter {
    fn configure(&mut self, key: &str, value: &ArgValue) -> Result<(), Refused> {
        if matches!(key, "template" | "prefix" | "folder") && self.current.is_some() {
            return Err(format!("{key} cannot change while a file is open").into());
        }
        if self.destination.configure(key, value)?
            || self.rollover.configure(key, value)?
            || self.reorder.configure(key, value)?
        {
            return Ok(());
        }
        let own: Vec<&str> = Rollover::KEYS
            .iter()
            .chain(&REORDER_KEYS)
            .copied()
            .collect();
        Err(unknown_writer_key("raw", key, &own).into())
    }

    fn check_wiring(&self, wiring: &crate::processors::Wiring) -> Result<(), Refused> {
        self.destination
            .check_workers(wiring.workers, "raw file")
            .map_err(Into::into)
    }

    fn prepare(&self, _workers: u32) -> Result<(), Refused> {
        self.destination.check_folder()?;
        Ok(self.destination.check_earlier_files("raw")?)
    }

    fn start(&mut self, ctx: &StageContext) -> Result<(), ProcessError> {
        self.worker = ctx.worker;
        self.uring = Some(Uring::new(DIRECT_ALIGN).map_err(|e| format!("io_uring: {e}"))?);
        if ctx.restarts > 0 {
            // A restarted worker continues after the files its predecessors made.
            let mut found = Recovered::default();
            while self.data_path(self.next_file).exists() {
                let index = format!("{}.index.csv", self.data_path(self.next_file).display());
                for id in recover_index(Path::new(&index)).unwrap_or_default() {
                    found.frames += 1;
                    self.seen.first_time(id);
                }
                found.files += 1;
                self.next_file += 1;
            }
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
        self.take(frame).map_err(Into::into)
    }

    fn sync_interval(&self) -> Option<Duration> {
        Some(self.rollover.flush_every)
    }

    fn sync(&mut self) -> Result<(), ProcessError> {
        let kept = self.store_kept(true);
        kept.and(self.make_durable()).map_err(Into::into)
    }

    fn stop(&mut self, _out: &mut Outputs) -> Result<(), ProcessError> {
        self.store_kept(true)?;
        self.make_durable()?;
        let path = self.current.as_ref().map(|f| f.path.clone());
        self.close_current()
            .map_err(|e| {
                format!(
                    "closing {}: {}",
                    path.unwrap_or_default().display(),
                    super::write_failure(&self.destination.folder, &e)
                )
            })
            .map_err(Into::into)
    }

    fn fault(&self) -> Option<&Fault> {
        self.counters.fault.as_ref()
    }

    fn gauges(&self) -> &'static [&'static str] {
        &["direct_io"]
    }

    fn counters(&self) -> Vec<(String, u64)> {
        let mut list = self.counters.list();
        list.push(("direct_io".into(), u64::from(self.direct)));
        list.push(("late_frames".into(), self.reorder.late));
        list
    }
}
