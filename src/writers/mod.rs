//! File writers: pipeline sinks that put frames on disk through the io_uring engine
//! (`crate::uring`). `tiff` writes one file per frame, `hdf5` NXmx files with SWMR and
//! rollover, `raw` flat O_DIRECT files with an index. What they share lives here: the
//! output folder and file-name template (confined to the folder), the folder check made
//! before any frame is taken, the error policy, and the counters.

#[allow(unsafe_code)] // the AVX2 shuffle, after the CPU check
pub mod bitshuffle;
pub mod hdf5;
#[allow(unsafe_code)] // libhdf5 and its file driver
mod hdf5_ffi;
pub mod nxmx;
pub mod raw;
pub mod tiff;

use crate::processors::{unknown_key, ArgValue, Fault};
use crate::ring::{AttrValue, Dtype, Frame, FrameHeader};
use crate::series::Series;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// Where a writer's files go and what it does when writing fails: the keys every writer
/// takes (`folder`, `prefix`, `template`, `overwrite`, `on_error`).
#[derive(Debug, Clone)]
pub struct Destination {
    pub folder: PathBuf,
    pub prefix: String,
    pub template: Template,
    pub overwrite: bool,
    pub stop_on_error: bool,
}

/// Keys [`Destination::configure`] takes, for the unknown-key message.
pub const DESTINATION_KEYS: &[&str] = &["folder", "prefix", "template", "overwrite", "on_error"];

impl Destination {
    pub fn new(template: &str, placeholders: &'static [&'static str]) -> Destination {
        Destination {
            folder: PathBuf::from("."),
            prefix: "scan".into(),
            template: Template::parse(template, placeholders).expect("built-in template"),
            overwrite: false,
            stop_on_error: false,
        }
    }

    /// Takes one of the shared keys; `Ok(false)` when `key` is not one of them.
    pub fn configure(&mut self, key: &str, value: &ArgValue) -> Result<bool, String> {
        match (key, value) {
            ("folder", ArgValue::String(f)) => self.folder = PathBuf::from(f),
            ("prefix", ArgValue::String(p)) => {
                check_prefix(p)?;
                self.prefix = p.clone();
            }
            ("template", ArgValue::String(t)) => {
                self.template = Template::parse(t, self.template.placeholders)?
            }
            ("overwrite", ArgValue::Boolean(b)) => self.overwrite = *b,
            ("on_error", ArgValue::String(p)) if p == "continue" || p == "stop" => {
                self.stop_on_error = p == "stop"
            }
            ("on_error", other) => {
                return Err(format!(
                    "on_error must be \"continue\" (count frames not written and go on) or \"stop\" (drain the pipeline), got {other}"
                ))
            }
            ("folder" | "prefix" | "template", other) => {
                return Err(format!("{key} must be a string, got {other}"))
            }
            ("overwrite", other) => {
                return Err(format!("overwrite must be true or false, got {other}"))
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The path of a file named by the template, inside the folder.
    pub fn path(&self, values: &[(&str, u64)]) -> PathBuf {
        self.folder.join(self.template.render(&self.prefix, values))
    }

    /// Refuses several workers when the template cannot tell their files apart: they
    /// would write the same files, and a restarted worker could not find its own.
    pub fn check_workers(&self, workers: u32, files: &str) -> Result<(), String> {
        if workers > 1 && !self.template.names("worker") {
            return Err(format!(
                "with {workers} workers the {files} template needs {{worker}}, so that each worker's files have names of their own"
            ));
        }
        Ok(())
    }

    /// Checks the folder exists, is a folder, and takes a new file (probed by creating
    /// and removing one), so a wrong folder fails the run before any frame is taken.
    pub fn check_folder(&self) -> Result<(), String> {
        let folder = &self.folder;
        let shown = folder.display();
        match std::fs::metadata(folder) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(format!(
                    "output folder {shown} does not exist; create it or correct `folder`"
                ))
            }
            Err(e) => return Err(format!("output folder {shown} cannot be read: {e}")),
            Ok(m) if !m.is_dir() => {
                return Err(format!(
                    "output folder {shown} is not a folder; point `folder` at a directory"
                ))
            }
            Ok(_) => {}
        }
        let probe = folder.join(format!(".streamd-probe-{}", std::process::id()));
        let mut uring = crate::uring::Uring::new(crate::uring::DIRECT_ALIGN)
            .map_err(|e| format!("io_uring is not available: {e}"))?;
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
        match uring.open(&probe, flags, 0o600) {
            Ok(fd) => {
                let _ = uring.close(fd);
                let _ = std::fs::remove_file(&probe);
            }
            Err(e) => return Err(write_failure(folder, &e)),
        }
        // The template may name a sub-folder: it must exist too.
        let sample = self.path(&[]);
        if let Some(parent) = sample.parent() {
            if !parent.is_dir() {
                return Err(format!(
                    "the template puts files in {}, which does not exist; create it or change `template`",
                    parent.display()
                ));
            }
        }
        Ok(())
    }

    /// Refuses a folder already holding files the template names (an earlier run's),
    /// unless `overwrite` is set: each would fail to be written, or be replaced.
    pub fn check_earlier_files(&self, files: &str) -> Result<(), String> {
        if self.overwrite {
            return Ok(());
        }
        let sample = self.path(&[]);
        let folder = match sample.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut found: Vec<String> = std::fs::read_dir(folder)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| self.template.matches(&self.prefix, name, &[]))
                    .collect()
            })
            .unwrap_or_default();
        if found.is_empty() {
            return Ok(());
        }
        found.sort();
        Err(format!(
            "{} already holds {} {files} file(s) named like this writer's ({}{}), from an earlier run; set overwrite = true to replace them, or change `prefix` or `folder`",
            folder.display(),
            found.len(),
            found[0],
            if found.len() > 1 { ", ..." } else { "" }
        ))
    }
}

/// When a writer that keeps files open (`hdf5`, `raw`) starts a new file and makes what
/// it wrote durable: the keys `frames_per_file` (0: never roll over) and `flush_ms`.
#[derive(Debug, Clone)]
pub struct Rollover {
    pub frames_per_file: u64,
    pub flush_every: Duration,
}

impl Default for Rollover {
    fn default() -> Self {
        Rollover {
            frames_per_file: 0,
            flush_every: Duration::from_secs(1),
        }
    }
}

impl Rollover {
    pub const KEYS: [&'static str; 2] = ["frames_per_file", "flush_ms"];

    /// Takes one of [`Rollover::KEYS`]; `Ok(false)` when `key` is not one of them.
    pub fn configure(&mut self, key: &str, value: &ArgValue) -> Result<bool, String> {
        match (key, value) {
            ("frames_per_file", ArgValue::Integer(n)) if *n >= 0 => {
                self.frames_per_file = *n as u64
            }
            ("frames_per_file", other) => {
                return Err(format!(
                    "frames_per_file must be a whole number (0: no rollover), got {other}"
                ))
            }
            ("flush_ms", ArgValue::Integer(n)) if *n > 0 => {
                self.flush_every = Duration::from_millis(*n as u64)
            }
            ("flush_ms", other) => {
                return Err(format!(
                    "flush_ms must be a positive number of ms, got {other}"
                ))
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Whether a file holding `content` must end before the frame of `header`: it is
    /// full, or the frames changed dtype or shape.
    pub fn ends(&self, content: &FileContent, header: &FrameHeader) -> bool {
        (self.frames_per_file > 0 && content.frames >= self.frames_per_file)
            || content.dtype != header.dtype
            || content.dims[..] != header.dims[..]
    }
}

/// What an open data file holds: its frame count and the frames' dtype and shape.
#[derive(Debug, Clone)]
pub struct FileContent {
    pub frames: u64,
    pub dtype: Dtype,
    pub dims: Vec<u32>,
}

impl FileContent {
    /// An empty file for frames like `header`'s.
    pub fn new(header: &FrameHeader) -> FileContent {
        FileContent {
            frames: 0,
            dtype: header.dtype,
            dims: header.dims.to_vec(),
        }
    }
}

/// One sentence for a failed write into `folder`, naming the cause and the fix.
pub fn write_failure(folder: &Path, e: &io::Error) -> String {
    let shown = folder.display();
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => format!(
            "the disk holding {shown} is full; free space there or point `folder` at another disk"
        ),
        Some(libc::EFBIG) => format!(
            "a file in {shown} reached the file-size limit (ulimit -f) or the filesystem's largest file"
        ),
        Some(libc::EACCES) | Some(libc::EPERM) => format!(
            "no permission to write in {shown}; give this user write access or choose another `folder`"
        ),
        Some(libc::EROFS) => format!("{shown} is on a read-only filesystem; choose another `folder`"),
        Some(libc::EEXIST) => format!(
            "a file of that name already exists in {shown}; set overwrite = true to replace files, or change `prefix`"
        ),
        Some(libc::EIO) => format!("the disk holding {shown} reported an I/O error (EIO); check the device"),
        _ => format!("writing in {shown} failed: {e}"),
    }
}

fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() || prefix.contains('/') || prefix == "." || prefix == ".." {
        return Err(format!(
            "prefix must be a plain file-name part (no '/'), got \"{prefix}\""
        ));
    }
    Ok(())
}

/// A file-name template: text with `{name}` or `{name:0N}` (zero-padded to N digits)
/// placeholders; `{prefix}` is the writer's prefix. A template whose names could leave
/// the output folder (absolute, `..`) is refused.
#[derive(Debug, Clone)]
pub struct Template {
    text: String,
    placeholders: &'static [&'static str],
}

impl Template {
    pub fn parse(text: &str, placeholders: &'static [&'static str]) -> Result<Template, String> {
        let template = Template {
            text: text.to_string(),
            placeholders,
        };
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("template \"{text}\" has a '{{' without its '}}'"))?;
            let inner = &rest[open + 1..open + close];
            let (name, spec) = inner.split_once(':').unwrap_or((inner, ""));
            if name != "prefix" && !placeholders.contains(&name) {
                return Err(format!(
                    "template \"{text}\" names {{{name}}}; known: {{prefix}}, {}",
                    placeholders
                        .iter()
                        .map(|p| format!("{{{p}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if !spec.is_empty() && (!spec.starts_with('0') || spec[1..].parse::<u8>().is_err()) {
                return Err(format!(
                    "template \"{text}\": {{{inner}}} — the only format is 0N (zero-padded to N digits)"
                ));
            }
            rest = &rest[open + close + 1..];
        }
        let sample = Path::new(&template.render("p", &[])).to_path_buf();
        let confined = sample
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
            && sample.components().next().is_some();
        if sample.components().all(|c| matches!(c, Component::CurDir)) {
            return Err(format!(
                "template \"{text}\" names no file; give a file name such as \"{{prefix}}_{{frame_id:06}}.tiff\""
            ));
        }
        if !confined {
            return Err(format!(
                "template \"{text}\" would write outside the output folder; use a relative name without '..'"
            ));
        }
        Ok(template)
    }

    /// Whether the template uses placeholder `name`.
    pub fn names(&self, name: &str) -> bool {
        self.text.contains(&format!("{{{name}}}")) || self.text.contains(&format!("{{{name}:"))
    }

    /// Whether file name `name` is one the template's last path component makes with
    /// `prefix`, the `fixed` values (this worker's number, say) and any number for the
    /// other placeholders (how a restarted writer finds its files).
    pub fn matches(&self, prefix: &str, name: &str, fixed: &[(&str, u64)]) -> bool {
        let text = self.text.rsplit('/').next().unwrap_or(&self.text);
        let mut rest = name;
        let mut template = text;
        while let Some(open) = template.find('{') {
            let Some(tail) = rest.strip_prefix(&template[..open]) else {
                return false;
            };
            let close = open + template[open..].find('}').expect("checked by parse");
            let inner = &template[open + 1..close];
            let (placeholder, _) = inner.split_once(':').unwrap_or((inner, ""));
            rest = if placeholder == "prefix" {
                match tail.strip_prefix(prefix) {
                    Some(r) => r,
                    None => return false,
                }
            } else if fixed.iter().any(|(n, _)| *n == placeholder) {
                let one = Template {
                    text: format!("{{{inner}}}"),
                    placeholders: self.placeholders,
                };
                match tail.strip_prefix(&one.render(prefix, fixed)) {
                    Some(r) => r,
                    None => return false,
                }
            } else {
                let digits =
                    tail.len() - tail.trim_start_matches(|c: char| c.is_ascii_digit()).len();
                if digits == 0 {
                    return false;
                }
                &tail[digits..]
            };
            template = &template[close + 1..];
        }
        rest == template
    }

    /// The name for these values (placeholders without a value render as 0).
    pub fn render(&self, prefix: &str, values: &[(&str, u64)]) -> String {
        let mut out = String::with_capacity(self.text.len() + 16);
        let mut rest = self.text.as_str();
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let close = open + rest[open..].find('}').expect("checked by parse");
            let inner = &rest[open + 1..close];
            let (name, spec) = inner.split_once(':').unwrap_or((inner, ""));
            if name == "prefix" {
                out.push_str(prefix);
            } else {
                let value = values
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map_or(0, |(_, v)| *v);
                let width: usize = spec.get(1..).and_then(|w| w.parse().ok()).unwrap_or(0);
                out.push_str(&format!("{value:0width$}"));
            }
            rest = &rest[close + 1..];
        }
        out.push_str(rest);
        out
    }
}

/// What every writer counts, and its standing fault. `frames_written` counts frames
/// that are durable; a writer that makes frames durable in batches (`flush_ms`) keeps
/// the others pending until its sync says how it went.
#[derive(Debug, Default)]
pub struct WriteCounters {
    pub frames_written: u64,
    pub bytes_written: u64,
    pub files_written: u64,
    /// Frames that reached the writer but are not on disk (each also counts as an error).
    pub frames_not_written: u64,
    /// Frames delivered again after a crash that were already on disk, not stored twice.
    pub duplicates: u64,
    /// Written but not yet durable: frames and bytes.
    pending: (u64, u64),
    pub fault: Option<Fault>,
}

impl WriteCounters {
    pub fn written(&mut self, bytes: u64) {
        self.frames_written += 1;
        self.bytes_written += bytes;
        self.fault = None;
    }

    /// A frame is in the file but not yet durable.
    pub fn pending(&mut self, bytes: u64) {
        self.pending.0 += 1;
        self.pending.1 += bytes;
    }

    /// Everything pending became durable.
    pub fn durable(&mut self) {
        let (frames, bytes) = std::mem::take(&mut self.pending);
        if frames > 0 {
            self.frames_written += frames;
            self.bytes_written += bytes;
            self.fault = None;
        }
    }

    /// Nothing pending became durable: counts it as not written; returns the reason.
    pub fn pending_lost(&mut self, destination: &Destination, e: &io::Error) -> String {
        let (frames, _) = std::mem::take(&mut self.pending);
        self.lost(frames, destination, e)
    }

    /// Takes what a restarted writer found on disk as the truth: what its predecessor
    /// showed (`previous`, which the worker adds to these counters) plus what it made
    /// durable without showing it before it died. Frames shown as written that the files
    /// no longer hold are counted as not written: a file gone is never a silent loss.
    pub fn recovered(
        &mut self,
        found: &Recovered,
        previous: &[(String, u64)],
        destination: &Destination,
    ) {
        let shown = |name: &str| {
            previous
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0, |(_, v)| *v)
        };
        let shown_frames = shown("frames_written");
        self.frames_written += found.frames.saturating_sub(shown_frames);
        self.files_written += found.files.saturating_sub(shown("files_written"));
        if found.frames < shown_frames {
            let gone = shown_frames - found.frames;
            let why = io::Error::other(format!(
                "{gone} frames shown as written are not in the files a restarted writer found"
            ));
            eprintln!("streamd: {}", self.lost(gone, destination, &why));
        }
    }

    /// Counts a frame that was not written and returns the message for the frame error.
    pub fn not_written(&mut self, destination: &Destination, e: &io::Error) -> String {
        self.lost(1, destination, e)
    }

    fn lost(&mut self, frames: u64, destination: &Destination, e: &io::Error) -> String {
        self.frames_not_written += frames;
        let reason = write_failure(&destination.folder, e);
        self.fault = Some(Fault {
            reason: format!(
                "{reason} ({} frames not written so far)",
                self.frames_not_written
            ),
            stop_pipeline: destination.stop_on_error,
        });
        reason
    }

    pub fn list(&self) -> Vec<(String, u64)> {
        vec![
            ("frames_written".into(), self.frames_written),
            ("bytes_written".into(), self.bytes_written),
            ("files_written".into(), self.files_written),
            ("frames_not_written".into(), self.frames_not_written),
            ("duplicates".into(), self.duplicates),
        ]
    }
}

/// What a restarted writer found in the files its predecessors left.
#[derive(Debug, Default)]
pub struct Recovered {
    pub frames: u64,
    pub files: u64,
}

/// The frame ids a writer stored lately, so that a frame delivered again — after a
/// crash of this writer (spec §5.8) or of a stage before it (§7.3) — is stored once.
/// Bounded: a re-delivered frame is at most a ring's worth of frames old.
#[derive(Debug, Default)]
pub struct Seen {
    ids: HashSet<u64>,
    order: VecDeque<u64>,
}

impl Seen {
    const REMEMBERED: usize = 1 << 16;

    /// Records `id`; false when it was seen already.
    pub fn first_time(&mut self, id: u64) -> bool {
        if !self.ids.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > Self::REMEMBERED {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        true
    }
}

/// A frame on its way into a file: still in its ring slot, or a copy that the reorder
/// window kept.
pub enum Incoming<'a> {
    Slot(&'a Frame<'a>),
    Kept(&'a KeptFrame),
}

/// A frame copied out of its slot to be stored later, in frame-id order.
pub struct KeptFrame {
    header: FrameHeader,
    payload: Vec<u8>,
    values: Vec<(String, f64)>,
    series: Option<Series>,
}

impl Incoming<'_> {
    pub fn header(&self) -> &FrameHeader {
        match self {
            Incoming::Slot(frame) => frame.header(),
            Incoming::Kept(kept) => &kept.header,
        }
    }

    pub fn payload(&self) -> &[u8] {
        match self {
            Incoming::Slot(frame) => frame.payload(),
            Incoming::Kept(kept) => &kept.payload,
        }
    }

    /// The series description the frame carries (`series.*` attributes).
    pub fn series(&self) -> Option<Series> {
        match self {
            Incoming::Slot(frame) => {
                Series::from_attributes(frame.attributes().filter_map(Result::ok))
            }
            Incoming::Kept(kept) => kept.series.clone(),
        }
    }

    /// Calls `f` with each numeric attribute of the frame (text attributes are not
    /// stored as values, and the series description is stored once per file).
    pub fn for_each_value(&self, mut f: impl FnMut(&str, f64)) {
        match self {
            Incoming::Slot(frame) => {
                for (key, value) in frame.attributes().filter_map(Result::ok) {
                    if key.starts_with(crate::series::PREFIX) {
                        continue;
                    }
                    match value {
                        AttrValue::I64(i) => f(key, i as f64),
                        AttrValue::F64(x) => f(key, x),
                        AttrValue::Str(_) => {}
                    }
                }
            }
            Incoming::Kept(kept) => {
                for (key, value) in &kept.values {
                    f(key, *value)
                }
            }
        }
    }
}

/// What the writers that store frames in frame-id order (`hdf5`, `raw`) share: taking
/// a frame from the ring — skipped when stored already, stored now when it is next,
/// kept otherwise — and storing the kept ones when they are due.
pub trait OrderedStore {
    /// The writer's repeated-frame memory, reorder window and counters.
    fn parts(&mut self) -> (&mut Seen, &mut Reorder, &mut WriteCounters);

    /// Stores one frame, counting it as not written when that fails.
    fn store(&mut self, frame: &Incoming<'_>) -> Result<(), String>;

    fn take(&mut self, frame: &Frame<'_>) -> Result<(), String> {
        let (seen, reorder, counters) = self.parts();
        if !seen.first_time(frame.header().frame_id) {
            counters.duplicates += 1;
            return Ok(());
        }
        let now = match reorder.place(frame) {
            Placement::Now | Placement::Late => self.store(&Incoming::Slot(frame)),
            Placement::Kept => Ok(()),
        };
        now.and(self.store_kept(false))
    }

    /// Stores the kept frames that are due (all of them with `all`).
    fn store_kept(&mut self, all: bool) -> Result<(), String> {
        let mut result = Ok(());
        while let Some(kept) = self.parts().1.next(all) {
            result = result.and(self.store(&Incoming::Kept(&kept)));
        }
        result
    }
}

/// Where [`Reorder::place`] puts a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Store it now: it follows the last stored frame.
    Now,
    /// Store it now, out of order: a higher id is stored already. Counted.
    Late,
    /// Kept until the frames before it came, the window overflows, or a sync.
    Kept,
}

/// Puts frames that arrive from several rings (a writer collecting several workers'
/// output) back in frame-id order before they are stored. A frame waits while a lower
/// id may still come, for at most `window` frames or until the next sync (`flush_ms`);
/// then the lowest waiting frame is stored. So a frame is stored in order if it comes
/// less than `window` frames and one sync period after a higher one; a later one is
/// still stored, out of order, and counted in `late_frames`.
pub struct Reorder {
    window: usize,
    kept: BTreeMap<u64, KeptFrame>,
    last: Option<u64>,
    pub late: u64,
}

/// Keys [`Reorder::configure`] takes.
pub const REORDER_KEYS: [&str; 1] = ["reorder_window"];

impl Default for Reorder {
    fn default() -> Self {
        Reorder {
            window: 16,
            kept: BTreeMap::new(),
            last: None,
            late: 0,
        }
    }
}

impl Reorder {
    /// Takes `reorder_window` (frames; 0 stores frames as they come); `Ok(false)` for
    /// another key.
    pub fn configure(&mut self, key: &str, value: &ArgValue) -> Result<bool, String> {
        match (key, value) {
            ("reorder_window", ArgValue::Integer(n)) if (0..=4096).contains(n) => {
                self.window = *n as usize
            }
            ("reorder_window", other) => {
                return Err(format!(
                    "reorder_window must be a number of frames from 0 (store as they come) to 4096, got {other}"
                ))
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    pub fn place(&mut self, frame: &Frame<'_>) -> Placement {
        let id = frame.header().frame_id;
        let waiting_below = self.kept.first_key_value().is_some_and(|(&k, _)| k < id);
        match self.last {
            Some(last) if id <= last => {
                self.late += 1;
                Placement::Late
            }
            _ if self.window == 0 => {
                self.last = Some(id);
                Placement::Now
            }
            last if !waiting_below && last.map_or(id == 0, |l| id == l + 1) => {
                self.last = Some(id);
                Placement::Now
            }
            _ => {
                let mut values = Vec::new();
                Incoming::Slot(frame).for_each_value(|k, v| values.push((k.to_string(), v)));
                self.kept.insert(
                    id,
                    KeptFrame {
                        header: frame.header().clone(),
                        payload: frame.payload().to_vec(),
                        values,
                        series: Incoming::Slot(frame).series(),
                    },
                );
                Placement::Kept
            }
        }
    }

    /// The next kept frame to store: the lowest, once it follows the last stored one or
    /// the window overflows; with `all` (a sync), every kept frame in turn.
    pub fn next(&mut self, all: bool) -> Option<KeptFrame> {
        let (&first, _) = self.kept.first_key_value()?;
        let ready =
            all || self.kept.len() > self.window || self.last.is_some_and(|l| first == l + 1);
        if !ready {
            return None;
        }
        self.last = Some(first);
        self.kept.remove(&first)
    }
}

/// The unknown-key message of a writer: its own keys and the shared ones.
pub fn unknown_writer_key(writer: &str, key: &str, own: &[&str]) -> String {
    let all: Vec<&str> = own.iter().chain(DESTINATION_KEYS).copied().collect();
    unknown_key(writer, key, &all)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: &[&str] = &["frame_id", "worker"];

    #[test]
    fn a_restart_counts_what_its_predecessor_made_durable_unseen_and_what_is_gone() {
        let destination = Destination::new("{prefix}_{frame_id}.tiff", NAMES);
        let previous = [
            ("frames_written".to_string(), 10),
            ("files_written".to_string(), 10),
        ];
        let mut more = WriteCounters::default();
        more.recovered(
            &Recovered {
                frames: 12,
                files: 12,
            },
            &previous,
            &destination,
        );
        assert_eq!((more.frames_written, more.files_written), (2, 2));
        assert_eq!(more.frames_not_written, 0);
        assert!(more.fault.is_none());

        let mut fewer = WriteCounters::default();
        fewer.recovered(
            &Recovered {
                frames: 7,
                files: 7,
            },
            &previous,
            &destination,
        );
        assert_eq!((fewer.frames_written, fewer.frames_not_written), (0, 3));
        let fault = fewer.fault.expect("a loss is a fault");
        assert!(
            fault
                .reason
                .contains("3 frames shown as written are not in the files"),
            "{}",
            fault.reason
        );
    }

    #[test]
    fn templates_render_and_stay_in_the_folder() {
        let t = Template::parse("{prefix}_{frame_id:06}.tiff", NAMES).unwrap();
        assert_eq!(t.render("scan", &[("frame_id", 42)]), "scan_000042.tiff");
        let t = Template::parse("w{worker}/{prefix}-{frame_id}.tif", NAMES).unwrap();
        assert_eq!(
            t.render("a", &[("frame_id", 7), ("worker", 1)]),
            "w1/a-7.tif"
        );
        for bad in ["../{frame_id}.tiff", "/tmp/{frame_id}.tiff", "a/../../b"] {
            let err = Template::parse(bad, NAMES).unwrap_err();
            assert!(err.contains("outside the output folder"), "{bad}: {err}");
        }
        // Issue 15: "." names the folder itself, no file; it is not "outside".
        for bad in ["", ".", "./."] {
            let err = Template::parse(bad, NAMES).unwrap_err();
            assert!(err.contains("names no file"), "{bad}: {err}");
        }
        assert!(Template::parse("{nope}.tiff", NAMES)
            .unwrap_err()
            .contains("names {nope}"));
        assert!(Template::parse("{frame_id:6}.tiff", NAMES)
            .unwrap_err()
            .contains("0N"));
        assert!(Template::parse("{frame_id.tiff", NAMES).is_err());
    }

    #[test]
    fn templates_recognise_their_own_names() {
        let t = Template::parse("{prefix}_w{worker}_{frame_id:06}.tiff", NAMES).unwrap();
        let mine = [("worker", 1)];
        assert!(t.matches("scan", "scan_w1_000042.tiff", &mine));
        assert!(t.matches("scan", "scan_w1_1234567.tiff", &mine));
        assert!(!t.matches("scan", "scan_w2_000042.tiff", &mine));
        assert!(!t.matches("scan", "scan_w1_000042.tiff.part", &mine));
        assert!(!t.matches("scan", ".scan_w1_000042.tiff.part", &mine));
        assert!(!t.matches("other", "scan_w1_000042.tiff", &mine));
        let sub = Template::parse("w{worker}/{prefix}-{frame_id}.tif", NAMES).unwrap();
        assert!(sub.matches("a", "a-7.tif", &[("worker", 0)]));
    }
}
