//! Bytes of the stats segment `/dev/shm/streamd-stats.PIPELINE`. Every field is an
//! atomic with a single writer: the supervisor writes the header, the stage table and
//! each entry's `restarts`/`state` while its worker is down; a worker writes the rest of
//! its own entry. Readers (`status`, `top`, metrics) only load, so they never slow a
//! worker; a snapshot may be a frame apart between fields.

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8};

pub const MAGIC: u64 = u64::from_le_bytes(*b"STRMSTAT");
pub const VERSION: u32 = 6;
pub const NAME_BYTES: usize = 32;
pub const COUNTER_NAME_BYTES: usize = 32;
/// Processor counters an entry holds (a stage worker checks its processor's fit).
pub const MAX_COUNTERS: usize = 32;
/// Room for a stage's arguments as JSON.
pub const ARGS_BYTES: usize = 8000;
/// Room for a worker's last error message, and for the last line it wrote to stderr.
pub const ERROR_BYTES: usize = 240;
/// Room for the names of the ring segments a worker writes, comma-separated.
pub const OUTPUTS_BYTES: usize = 1024;

pub const HEADER_SIZE: usize = 4096;
pub const STAGE_SIZE: usize = 8192;
pub const ENTRY_SIZE: usize = 4096;

/// Pipeline states (`StatsHeader::state`).
pub const PIPELINE_STARTING: u32 = 0;
pub const PIPELINE_RUNNING: u32 = 1;
pub const PIPELINE_DRAINING: u32 = 2;
pub const PIPELINE_FINISHED: u32 = 3;

/// Worker states (`WorkerEntry::state`).
pub const WORKER_PENDING: u32 = 0;
pub const WORKER_STARTING: u32 = 1;
pub const WORKER_RUNNING: u32 = 2;
/// Inputs ended; finishing outputs.
pub const WORKER_DRAINING: u32 = 3;
pub const WORKER_FINISHED: u32 = 4;
/// Crashed; the supervisor restarts it after a backoff.
pub const WORKER_RESTARTING: u32 = 5;
/// Crashed too often; not restarted.
pub const WORKER_FAILED: u32 = 6;
/// Running, but its processor reports a standing fault (a full disk); `last_error` says
/// which.
pub const WORKER_ERROR: u32 = 7;

/// Buckets of a worker's processing-time histogram: bucket 0 counts times under 2 µs,
/// bucket b times in [2^b, 2^(b+1)) µs, the last bucket everything longer.
pub const TIME_BUCKETS: usize = 24;

/// A worker that runs unpinned (`core`).
pub const NO_CORE: u64 = u64::MAX;

/// `WorkerEntry::frame_ids_set` bits: which frame-id fields hold an id.
const LAST_FRAME_SET: u32 = 1;
const APPLIED_FRAME_SET: u32 = 2;

/// How a worker process last ended (`WorkerEntry::exit`): the kind in the high 32 bits,
/// the exit status or signal number in the low ones; 0 before any exit.
pub const EXIT_CODE: u64 = 1 << 32;
pub const EXIT_SIGNAL: u64 = 2 << 32;

#[repr(C)]
pub struct StatsHeader {
    pub magic: AtomicU64,
    /// Stored last on creation (Release), checked first on open (Acquire).
    pub version: AtomicU32,
    pub stage_count: AtomicU32,
    pub entry_count: AtomicU32,
    pub supervisor_pid: AtomicU32,
    pub supervisor_start_time: AtomicU64,
    pub started_unix_ns: AtomicU64,
    pub state: AtomicU32,
    /// Set by a worker whose processor's fault asks the pipeline to stop (`on_error =
    /// "stop"`); the supervisor then drains, as for `streamd stop`.
    pub stop_request: AtomicU32,
    /// Bumped by `reset-stats`; each worker starts its shown counts again from zero (its
    /// `reset_base`) and its processing times over when it sees a new value.
    pub reset_gen: AtomicU64,
    pub name: [AtomicU8; NAME_BYTES],
}

#[repr(C)]
pub struct StageSlot {
    pub name: [AtomicU8; NAME_BYTES],
    pub processor: [AtomicU8; NAME_BYTES],
    pub workers: AtomicU32,
    pub first_entry: AtomicU32,
    /// Seqlock over `args_len` and `args`: odd while the supervisor writes them.
    pub args_gen: AtomicU64,
    pub args_len: AtomicU32,
    pub args: [AtomicU8; ARGS_BYTES],
}

#[repr(C)]
pub struct WorkerEntry {
    pub stage: AtomicU32,
    pub worker: AtomicU32,
    pub pid: AtomicU32,
    pub state: AtomicU32,
    pub core: AtomicU64,
    pub restarts: AtomicU64,
    /// Unix ns of the worker's last sign of life (at least every 100 ms while it runs).
    pub heartbeat_ns: AtomicU64,
    pub frames_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub frames_out: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Frames the ring skipped past this worker (lossy delivery).
    pub missed: AtomicU64,
    /// Frames this worker could not publish (full `drop-newest` output ring).
    pub dropped: AtomicU64,
    /// Frames the processor failed on.
    pub errors: AtomicU64,
    pub proc_p50_ns: AtomicU64,
    pub proc_p99_ns: AtomicU64,
    /// Frames per processing-time bucket ([`TIME_BUCKETS`]), since start or reset.
    pub proc_histogram: [AtomicU64; TIME_BUCKETS],
    /// Frames published into the input ring that this worker's group had not taken yet.
    pub lag: AtomicU64,
    /// Read through [`WorkerEntry::last_frame_id`].
    last_frame_id: AtomicU64,
    /// µs from this worker's first frame to its latest (since it started or statistics
    /// were reset): frames over it is the rate it held.
    pub span_us: AtomicU64,
    /// The stage `args_gen` this worker applies, and the first frame id it applied to
    /// (read through [`WorkerEntry::applied_from_frame`]).
    pub applied_gen: AtomicU64,
    applied_from_frame: AtomicU64,
    /// Which of the two frame ids above is set (`LAST_FRAME_SET`, `APPLIED_FRAME_SET`):
    /// a frame id may be any u64, so no value of it can mean "none yet".
    frame_ids_set: AtomicU32,
    pub reset_seen: AtomicU64,
    pub counter_names: [[AtomicU8; COUNTER_NAME_BYTES]; MAX_COUNTERS],
    pub counter_values: [AtomicU64; MAX_COUNTERS],
    /// The worker's latest error message (empty: none yet).
    pub last_error: Text<ERROR_BYTES>,
    /// How the worker's last process ended ([`EXIT_CODE`], [`EXIT_SIGNAL`]); written by
    /// the supervisor when it reaps it.
    pub exit: AtomicU64,
    /// The last line the worker wrote to stderr, which the supervisor drains (written
    /// by the supervisor's main thread).
    pub last_stderr: Text<ERROR_BYTES>,
    /// The ring segments this worker writes by port, comma-separated (written by the
    /// supervisor before the worker starts).
    pub outputs: [AtomicU8; OUTPUTS_BYTES],
    /// 1 + the port of the output ring the worker is claiming a slot in, 0 when it is not
    /// claiming: a worker whose heartbeat is stale while it claims waits for space (its
    /// readers are behind), it is not stalled.
    pub claiming: AtomicU32,
    /// A paced source: 1 while it publishes less than 90 % of the rate it was asked for
    /// (over its measuring window), and the rate it achieved there (f64 bits).
    pub below_rate: AtomicU32,
    pub achieved_fps: AtomicU64,
    /// The frame counters above at the last `reset-stats`, stored by the worker when it
    /// sees the reset: `status`, `top` and the metrics show counts since then; a run's
    /// final report the whole run's, which add up (every frame counted by every stage it
    /// passed).
    pub reset_base: FrameCounts,
    /// `restarts` at the last `reset-stats` (stored by the supervisor's control thread).
    pub restarts_base: AtomicU64,
}

/// A worker's frame counters, as [`WorkerEntry::reset_base`] keeps them.
#[repr(C)]
pub struct FrameCounts {
    pub frames_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub frames_out: AtomicU64,
    pub bytes_out: AtomicU64,
    pub missed: AtomicU64,
    pub dropped: AtomicU64,
    pub errors: AtomicU64,
}

/// A message one thread writes and anyone reads, under a seqlock (`gen` odd while it is
/// written), so a reader never shows half of one message and half of the next.
#[repr(C)]
pub struct Text<const N: usize> {
    pub gen: AtomicU64,
    pub len: AtomicU32,
    pub bytes: [AtomicU8; N],
}

impl WorkerEntry {
    /// Records the id of the frame just handled (the worker only).
    pub fn set_last_frame_id(&self, id: u64) {
        self.last_frame_id.store(id, Relaxed);
        // The bit is set once; a Relaxed load per frame keeps the RMW off the hot path.
        if self.frame_ids_set.load(Relaxed) & LAST_FRAME_SET == 0 {
            // SYNC: pairs with the Acquire load in `last_frame_id`: whoever sees the bit
            // sees an id stored before it.
            self.frame_ids_set.fetch_or(LAST_FRAME_SET, Release);
        }
    }

    /// The id of the last frame the worker (or a predecessor) handled; `None` before
    /// the first.
    pub fn last_frame_id(&self) -> Option<u64> {
        // SYNC: pairs with the Release `fetch_or` in `set_last_frame_id`.
        let set = self.frame_ids_set.load(Acquire) & LAST_FRAME_SET != 0;
        set.then(|| self.last_frame_id.load(Relaxed))
    }

    /// Records the first frame a new configuration applied to (the worker only), before
    /// it stores `applied_gen`.
    pub fn set_applied_from_frame(&self, id: u64) {
        self.applied_from_frame.store(id, Relaxed);
        // SYNC: pairs with the Acquire load in `applied_from_frame`.
        self.frame_ids_set.fetch_or(APPLIED_FRAME_SET, Release);
    }

    /// The first frame the worker's current configuration applied to; `None` before any
    /// `configure` took effect.
    pub fn applied_from_frame(&self) -> Option<u64> {
        // SYNC: pairs with the Release `fetch_or` in `set_applied_from_frame`.
        let set = self.frame_ids_set.load(Acquire) & APPLIED_FRAME_SET != 0;
        set.then(|| self.applied_from_frame.load(Relaxed))
    }
}

const _: () = assert!(std::mem::size_of::<StatsHeader>() <= HEADER_SIZE);
const _: () = assert!(std::mem::size_of::<StageSlot>() <= STAGE_SIZE);
const _: () = assert!(std::mem::size_of::<WorkerEntry>() <= ENTRY_SIZE);

/// Bytes of a segment with `stages` stages and `entries` worker entries.
pub fn segment_size(stages: usize, entries: usize) -> usize {
    HEADER_SIZE + stages * STAGE_SIZE + entries * ENTRY_SIZE
}

pub fn state_name(state: u32) -> &'static str {
    match state {
        WORKER_PENDING => "pending",
        WORKER_STARTING => "starting",
        WORKER_RUNNING => "running",
        WORKER_DRAINING => "draining",
        WORKER_FINISHED => "finished",
        WORKER_RESTARTING => "restarting",
        WORKER_FAILED => "failed",
        WORKER_ERROR => "error",
        _ => "unknown",
    }
}

pub fn pipeline_state_name(state: u32) -> &'static str {
    match state {
        PIPELINE_STARTING => "starting",
        PIPELINE_RUNNING => "running",
        PIPELINE_DRAINING => "draining",
        PIPELINE_FINISHED => "finished",
        _ => "unknown",
    }
}
