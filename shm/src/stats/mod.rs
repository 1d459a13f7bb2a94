//! The stats segment: every process of a pipeline publishes its counters here, in
//! shared memory, so `streamd status`, `streamd top` and the metrics endpoint read them
//! without asking — and without slowing — anyone. Layout in [`layout`].

pub mod layout;

use crate::ring::ProcessId;
use layout::*;
use memmap2::{MmapOptions, MmapRaw};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{fence, AtomicU8};

const SHM_DIR: &str = "/dev/shm";
const PREFIX: &str = "streamd-stats.";

/// Nanoseconds since the Unix epoch, when the supervisor started.
fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Path of pipeline `name`'s stats segment.
pub fn stats_path(name: &str) -> PathBuf {
    Path::new(SHM_DIR).join(format!("{PREFIX}{name}"))
}

/// Names of the pipelines with a stats segment on this host (running or stale), sorted.
pub fn list_pipelines() -> io::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(SHM_DIR)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix(PREFIX)
                .map(String::from)
        })
        .collect();
    names.sort();
    Ok(names)
}

/// What the stats table holds per stage, as the supervisor declares it.
#[derive(Debug, Clone)]
pub struct StageDecl {
    pub name: String,
    pub processor: String,
    pub workers: u32,
}

/// Why a stats segment could not be created or opened.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("pipeline '{name}' is already running (supervisor pid {pid}); stop it with `streamd stop --pipeline {name}` or run this one under another name with --name")]
    Running { name: String, pid: u32 },
    #[error("no pipeline named '{0}' is running; `streamd status` lists the running ones")]
    NotRunning(String),
    #[error("{path} is not a streamd stats segment or comes from another streamd release; stop the pipeline and run `streamd clean`")]
    Foreign { path: PathBuf },
    #[error("too many stages or workers for one pipeline ({stages} stages, {entries} workers; at most 64 and 1024)")]
    TooLarge { stages: usize, entries: usize },
    #[error("could not {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl<const N: usize> Text<N> {
    /// Stores `text`, cut at a character boundary to fit (one writer at a time).
    pub fn write(&self, text: &str) {
        let mut end = text.len().min(N);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let gen = self.gen.load(Relaxed);
        self.gen.store(gen + 1, Relaxed);
        // SYNC: the odd generation is visible before any byte changes (readers re-check).
        fence(Release);
        for (cell, &b) in self.bytes.iter().zip(&text.as_bytes()[..end]) {
            cell.store(b, Relaxed);
        }
        self.len.store(end as u32, Relaxed);
        // SYNC: pairs with the Acquire load in `read`; the bytes and length are visible.
        self.gen.store(gen + 2, Release);
    }

    /// The text. A read that overlaps a write is tried again; a writer stopped in the
    /// middle (SIGSTOP) must not hang the reader, so after many tries it gets the bytes
    /// as they are.
    pub fn read(&self) -> String {
        let mut bytes = Vec::new();
        for _ in 0..1000 {
            // SYNC: pairs with the Release store that ends `write`.
            let before = self.gen.load(Acquire);
            let len = (self.len.load(Relaxed) as usize).min(N);
            bytes = self.bytes[..len].iter().map(|c| c.load(Relaxed)).collect();
            // SYNC: our byte loads happen before the re-check (seqlock reader side).
            fence(Acquire);
            if before % 2 == 0 && self.gen.load(Relaxed) == before {
                break;
            }
            std::thread::yield_now();
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// A mapped stats segment.
pub struct StatsSegment {
    map: MmapRaw,
    path: PathBuf,
    stages: usize,
    entries: usize,
}

fn write_str(cells: &[AtomicU8], text: &str) {
    let bytes = text.as_bytes();
    for (i, cell) in cells.iter().enumerate() {
        cell.store(bytes.get(i).copied().unwrap_or(0), Relaxed);
    }
}

/// Whether `cells` hold `text`, compared in place (without reading it into a String).
fn holds_str(cells: &[AtomicU8], text: &str) -> bool {
    cells
        .iter()
        .map(|c| c.load(Relaxed))
        .take_while(|&b| b != 0)
        .eq(text.bytes())
}

fn read_str(cells: &[AtomicU8]) -> String {
    let bytes: Vec<u8> = cells
        .iter()
        .map(|c| c.load(Relaxed))
        .take_while(|&b| b != 0)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

impl StatsSegment {
    /// Creates the segment of pipeline `name` for `stages`, owned by the calling process.
    /// A segment left by a dead supervisor is replaced: its pid is returned.
    pub fn create(
        name: &str,
        stages: &[StageDecl],
    ) -> Result<(StatsSegment, Option<u32>), StatsError> {
        let entries: usize = stages.iter().map(|s| s.workers as usize).sum();
        if stages.len() > 64 || entries > 1024 {
            return Err(StatsError::TooLarge {
                stages: stages.len(),
                entries,
            });
        }
        let path = stats_path(name);
        let mut replaced = None;
        let file = loop {
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(file) => break file,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    match StatsSegment::open_path(&path) {
                        Ok(old) if old.supervisor().is_alive() => {
                            return Err(StatsError::Running {
                                name: name.into(),
                                pid: old.supervisor().pid,
                            })
                        }
                        Ok(old) => replaced = Some(old.supervisor().pid),
                        // Half-created or foreign: nobody can be using it.
                        Err(_) => replaced = Some(0),
                    }
                    std::fs::remove_file(&path).map_err(|source| StatsError::Io {
                        op: "remove the stale stats segment",
                        path: path.clone(),
                        source,
                    })?;
                }
                Err(source) => {
                    return Err(StatsError::Io {
                        op: "create",
                        path,
                        source,
                    })
                }
            }
        };
        let size = segment_size(stages.len(), entries);
        file.set_len(size as u64).map_err(|source| StatsError::Io {
            op: "size",
            path: path.clone(),
            source,
        })?;
        let seg = StatsSegment::map(file, path, stages.len(), entries)?;
        let h = seg.header();
        h.magic.store(MAGIC, Relaxed);
        h.stage_count.store(stages.len() as u32, Relaxed);
        h.entry_count.store(entries as u32, Relaxed);
        let me = ProcessId::current();
        h.supervisor_pid.store(me.pid, Relaxed);
        h.supervisor_start_time.store(me.start_time, Relaxed);
        h.started_unix_ns.store(unix_ns(), Relaxed);
        write_str(&h.name, name);
        let mut first = 0u32;
        for (i, s) in stages.iter().enumerate() {
            let slot = seg.stage(i);
            write_str(&slot.name, &s.name);
            write_str(&slot.processor, &s.processor);
            slot.workers.store(s.workers, Relaxed);
            slot.first_entry.store(first, Relaxed);
            for w in 0..s.workers {
                let e = seg.entry((first + w) as usize);
                e.stage.store(i as u32, Relaxed);
                e.worker.store(w, Relaxed);
                // The frame ids start unset: the file is zero from set_len.
                e.core.store(NO_CORE, Relaxed);
            }
            first += s.workers;
        }
        // SYNC: pairs with the Acquire load in `open_path`; everything above is visible.
        h.version.store(VERSION, Release);
        Ok((seg, replaced))
    }

    /// Opens the segment of running pipeline `name`.
    pub fn open(name: &str) -> Result<StatsSegment, StatsError> {
        let path = stats_path(name);
        if !path.exists() {
            return Err(StatsError::NotRunning(name.into()));
        }
        StatsSegment::open_path(&path)
    }

    fn open_path(path: &Path) -> Result<StatsSegment, StatsError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| StatsError::Io {
                op: "open",
                path: path.into(),
                source,
            })?;
        let len = file.metadata().map(|m| m.len() as usize).unwrap_or(0);
        let foreign = || StatsError::Foreign { path: path.into() };
        if len < HEADER_SIZE {
            return Err(foreign());
        }
        let seg = StatsSegment::map(file, path.into(), 0, 0)?;
        let h = seg.header();
        // SYNC: pairs with the Release store of version in `create`.
        if h.version.load(Acquire) != VERSION || h.magic.load(Relaxed) != MAGIC {
            return Err(foreign());
        }
        let (stages, entries) = (
            h.stage_count.load(Relaxed) as usize,
            h.entry_count.load(Relaxed) as usize,
        );
        if segment_size(stages, entries) > len {
            return Err(foreign());
        }
        Ok(StatsSegment {
            stages,
            entries,
            ..seg
        })
    }

    fn map(
        file: File,
        path: PathBuf,
        stages: usize,
        entries: usize,
    ) -> Result<StatsSegment, StatsError> {
        let map = MmapOptions::new()
            .map_raw(&file)
            .map_err(|source| StatsError::Io {
                op: "map",
                path: path.clone(),
                source,
            })?;
        Ok(StatsSegment {
            map,
            path,
            stages,
            entries,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn header(&self) -> &StatsHeader {
        // SAFETY: the mapping is at least HEADER_SIZE bytes (checked on open, set on
        // create), page-aligned, and StatsHeader is all atomics, valid for any bytes.
        unsafe { &*(self.map.as_ptr() as *const StatsHeader) }
    }

    /// Number of stages (the source is stage 0).
    pub fn stage_count(&self) -> usize {
        self.stages
    }

    pub fn entry_count(&self) -> usize {
        self.entries
    }

    /// Stage `i`. Panics if `i >= stage_count()`.
    pub fn stage(&self, i: usize) -> &StageSlot {
        assert!(i < self.stages, "stage {i} out of range");
        let at = HEADER_SIZE + i * STAGE_SIZE;
        // SAFETY: in bounds (segment_size checked), 8-aligned, all atomics.
        unsafe { &*(self.map.as_ptr().add(at) as *const StageSlot) }
    }

    /// Worker entry `i`. Panics if `i >= entry_count()`.
    pub fn entry(&self, i: usize) -> &WorkerEntry {
        assert!(i < self.entries, "entry {i} out of range");
        let at = HEADER_SIZE + self.stages * STAGE_SIZE + i * ENTRY_SIZE;
        // SAFETY: in bounds (segment_size checked), 8-aligned, all atomics.
        unsafe { &*(self.map.as_ptr().add(at) as *const WorkerEntry) }
    }

    pub fn name(&self) -> String {
        read_str(&self.header().name)
    }

    pub fn stage_name(&self, i: usize) -> String {
        read_str(&self.stage(i).name)
    }

    pub fn stage_processor(&self, i: usize) -> String {
        read_str(&self.stage(i).processor)
    }

    /// The supervisor that owns the pipeline.
    pub fn supervisor(&self) -> ProcessId {
        let h = self.header();
        ProcessId {
            pid: h.supervisor_pid.load(Relaxed),
            start_time: h.supervisor_start_time.load(Relaxed),
        }
    }

    /// Publishes stage `i`'s arguments (supervisor only). Returns the new generation.
    pub fn write_args(&self, i: usize, json: &str) -> u64 {
        let slot = self.stage(i);
        let bytes = &json.as_bytes()[..json.len().min(ARGS_BYTES)];
        let gen = slot.args_gen.load(Relaxed);
        slot.args_gen.store(gen + 1, Relaxed);
        // SYNC: the odd generation is visible before any byte changes (readers re-check).
        fence(Release);
        slot.args_len.store(bytes.len() as u32, Relaxed);
        for (cell, &b) in slot.args.iter().zip(bytes) {
            cell.store(b, Relaxed);
        }
        // SYNC: pairs with the Acquire load in `read_args`; the bytes are visible.
        slot.args_gen.store(gen + 2, Release);
        gen + 2
    }

    /// Stage `i`'s arguments and their generation, if not being written right now.
    pub fn read_args(&self, i: usize) -> Option<(u64, String)> {
        let slot = self.stage(i);
        // SYNC: pairs with the Release store that ends `write_args`.
        let before = slot.args_gen.load(Acquire);
        if before % 2 == 1 {
            return None;
        }
        let len = (slot.args_len.load(Relaxed) as usize).min(ARGS_BYTES);
        let bytes: Vec<u8> = slot.args[..len].iter().map(|c| c.load(Relaxed)).collect();
        // SYNC: our byte loads happen before the re-check (seqlock reader side).
        fence(Acquire);
        (slot.args_gen.load(Relaxed) == before)
            .then(|| (before, String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// Publishes a worker's processor counters (the worker only). Allocates nothing: a
    /// worker shows them at every heartbeat and whenever it falls idle.
    pub fn write_counters<'n>(
        &self,
        entry: usize,
        counters: impl IntoIterator<Item = (&'n str, u64)>,
    ) {
        let e = self.entry(entry);
        for (i, (name, value)) in counters.into_iter().take(MAX_COUNTERS).enumerate() {
            if !holds_str(&e.counter_names[i], name) {
                write_str(&e.counter_names[i], name);
            }
            e.counter_values[i].store(value, Relaxed);
        }
    }

    /// A worker's processor counters.
    pub fn counters(&self, entry: usize) -> Vec<(String, u64)> {
        let e = self.entry(entry);
        (0..MAX_COUNTERS)
            .map(|i| {
                (
                    read_str(&e.counter_names[i]),
                    e.counter_values[i].load(Relaxed),
                )
            })
            .filter(|(name, _)| !name.is_empty())
            .collect()
    }

    /// Records a worker's latest error message (the worker only).
    pub fn write_last_error(&self, entry: usize, text: &str) {
        self.entry(entry).last_error.write(text);
    }

    /// A worker's latest error message, empty when it had none.
    pub fn last_error(&self, entry: usize) -> String {
        self.entry(entry).last_error.read()
    }

    /// Records the last line a worker wrote to stderr (the supervisor's main thread only).
    pub fn write_last_stderr(&self, entry: usize, text: &str) {
        self.entry(entry).last_stderr.write(text);
    }

    /// The last line a worker wrote to stderr, empty when it wrote none.
    pub fn last_stderr(&self, entry: usize) -> String {
        self.entry(entry).last_stderr.read()
    }

    /// Names the ring segments a worker writes (the supervisor, before it starts).
    pub fn write_outputs(&self, entry: usize, segments: &[String]) {
        write_str(&self.entry(entry).outputs, &segments.join(","));
    }

    /// The ring segments a worker writes.
    pub fn outputs(&self, entry: usize) -> Vec<String> {
        read_str(&self.entry(entry).outputs)
            .split(',')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    }

    /// Removes the segment's name.
    pub fn unlink(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_read_back_as_last_written_a_shorter_name_over_a_longer_one() {
        let name = format!("unit-counters-{}", std::process::id());
        let stage = StageDecl {
            name: "s".into(),
            processor: "p".into(),
            workers: 1,
        };
        let (seg, _) = StatsSegment::create(&name, &[stage]).unwrap();
        seg.write_counters(0, [("frames_kept", 1), ("skipped", 2)]);
        seg.write_counters(0, [("frames", 3), ("skipped", 4)]);
        let read = seg.counters(0);
        seg.unlink();
        assert_eq!(
            read,
            [("frames".to_string(), 3), ("skipped".to_string(), 4)]
        );
    }
}
