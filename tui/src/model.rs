//! What the dashboard shows, as plain data, and the [`Source`] it reads it from.
//!
//! A [`Snapshot`] is the pipeline's counters at one instant: the fields of `streamd
//! status --json` that the dashboard uses (serde ignores the rest), so the daemon side
//! fills it from its status report without a field-by-field copy. Rates, histories and
//! events are the dashboard's own work, from successive snapshots.

use serde::Deserialize;

/// One pipeline's counters at an instant.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Snapshot {
    pub pipeline: String,
    /// `starting`, `running`, `draining` or `finished`.
    pub state: String,
    pub supervisor_pid: u32,
    /// Changes when the pipeline is started again under the same name.
    pub started_unix_ns: u64,
    /// How many times `reset-stats` was asked for: a new value is a reset.
    #[serde(default)]
    pub resets: u64,
    pub uptime_s: f64,
    pub stages: Vec<Stage>,
    pub rings: Vec<Ring>,
}

impl Snapshot {
    /// Lines of the rings pane: one per ring and one per group of it.
    pub fn ring_lines(&self) -> usize {
        self.rings.iter().map(|r| 1 + r.groups.len()).sum()
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Stage {
    pub name: String,
    pub processor: String,
    /// The stage's arguments as the supervisor last applied them (`configure` changes
    /// them).
    pub args: serde_json::Value,
    /// The source: the rate asked for (`None`: as fast as it can), the rate it
    /// published at lately, and whether that is short of the rate asked for.
    pub requested_fps: Option<f64>,
    pub achieved_fps: Option<f64>,
    #[serde(default)]
    pub below_rate: bool,
    pub workers: Vec<Worker>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Worker {
    pub worker: u32,
    pub pid: u32,
    pub core: Option<u64>,
    /// `pending`, `starting`, `running`, `draining`, `finished`, `restarting`, `failed`
    /// or `error`.
    pub state: String,
    pub frames_in: u64,
    pub frames_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub missed: u64,
    pub dropped: u64,
    pub errors: u64,
    pub restarts: u64,
    pub proc_us_p50: f64,
    pub proc_us_p99: f64,
    /// Frames per processing time: bucket 0 under 2 µs, bucket b in [2^b, 2^(b+1)) µs.
    pub proc_histogram: Vec<u64>,
    /// Frames published into its input that its group has not taken yet.
    pub lag: u64,
    pub last_frame_id: Option<u64>,
    /// Milliseconds since it last showed it lives.
    pub heartbeat_age_ms: u64,
    /// No sign of life for a while although it should run (stopped, stuck, hung).
    pub stalled: bool,
    /// The full output ring it waits for (held back by a slower reader, not stalled).
    pub waiting_for: Option<String>,
    pub configured_from_frame: Option<u64>,
    pub counters: serde_json::Map<String, serde_json::Value>,
    pub last_error: Option<String>,
    /// How its last process ended (`was killed by signal 9 (SIGKILL)`).
    pub last_exit: Option<String>,
    /// The last line it wrote to stderr.
    pub last_stderr: Option<String>,
    /// Why it is not running as it should, in one line (failed, restarting, in error,
    /// stalled, held back).
    pub reason: Option<String>,
}

impl Worker {
    /// The state to show: `stalled` or `blocked` while its heartbeat is stale, else the
    /// state it reports.
    pub fn shown_state(&self) -> &str {
        if self.stalled {
            "stalled"
        } else if self.waiting_for.is_some() {
            "blocked"
        } else {
            &self.state
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Ring {
    /// The segment name, `PIPELINE.RING[.N]`.
    pub name: String,
    pub slots: u32,
    pub slot_bytes: u64,
    pub published: u64,
    /// Frames the producer did not publish (full ring, `drop-newest`).
    pub dropped: u64,
    /// `running`, `finished` or `dead`.
    pub producer: String,
    pub groups: Vec<Group>,
}

/// A consumer group of a ring: `published = delivered + missed + in_flight`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Group {
    /// The stage that reads through it (`STAGE`, `STAGE.N` for broadcast workers,
    /// `STAGE.mN` for metadata), or another tool's name.
    pub name: String,
    /// `lossless` or `lossy`.
    pub delivery: String,
    pub members: u32,
    /// The distributor set the group takes (a set of a group, or a round-robin
    /// worker's turns); absent when it takes every frame.
    #[serde(default)]
    pub set: Option<GroupSet>,
    pub published: u64,
    pub delivered: u64,
    pub missed: u64,
    pub in_flight: u64,
}

/// Set `index` of `sets` (spec §5.9).
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct GroupSet {
    pub index: u32,
    pub sets: u32,
}

impl Group {
    pub fn is_lossy(&self) -> bool {
        self.delivery == "lossy"
    }
}

/// The newest frame of a ring, sampled down to the live panel.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveFrame {
    pub ring: String,
    pub frame_id: u64,
    pub timestamp_ns: u64,
    /// The frame's own size.
    pub ny: u32,
    pub nx: u32,
    pub dtype: String,
    /// The sampled image, row-major, `height` rows of `width` values; NaN where the
    /// frame has no finite value.
    pub width: usize,
    pub height: usize,
    pub values: Vec<f32>,
}

/// What the dashboard asks of a running pipeline other than its counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    ResetStats,
    Stop,
}

/// Where the dashboard's data comes from: shared memory on a real host, canned
/// snapshots in tests.
pub trait Source {
    /// The pipelines running on this host, by name.
    fn pipelines(&mut self) -> Vec<String>;
    /// `pipeline`'s counters now; `Err` with one sentence when it cannot be read (not
    /// running, from another streamd release).
    fn snapshot(&mut self, pipeline: &str) -> Result<Snapshot, String>;
    /// The newest frame of ring segment `ring`, sampled to at most `width` × `height`
    /// pixels; `None` while the ring has no new frame. Reads as a lossy consumer: the
    /// producer never waits for it.
    fn newest_frame(&mut self, ring: &str, width: usize, height: usize) -> Option<LiveFrame>;
    /// Stops reading frames (the live view closed).
    fn close_live(&mut self);
    /// Sends a command to `pipeline`; its reply or the reason it failed.
    fn command(&mut self, pipeline: &str, command: Command) -> Result<String, String>;
}
