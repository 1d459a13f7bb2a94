//! Per-operation errors of the ring. Each message is one sentence that names the thing
//! and says what to do about it, because operators read them at 3 a.m.

use std::io;
use std::path::PathBuf;

/// A name as shown in a message: control characters escaped, cut to 48 characters,
/// so a message stays one line however the name was mangled.
pub(crate) fn shown(name: &str) -> String {
    let mut out: String = name
        .chars()
        .take(48)
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() || c == '\\' || c == '\'' {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect();
    if name.chars().count() > 48 {
        out.push('…');
    }
    out
}

/// Creating a ring failed.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("ring name '{0}' is invalid: use 1 to 31 characters from A-Z a-z 0-9 _ - .")]
    BadName(String),
    #[error("ring '{name}' needs at least 1 slot; give 1 or more slots")]
    NoSlots { name: String },
    #[error("ring '{name}' of {slots} slots of {slot_bytes} bytes would take more than 2^40 bytes (1 TiB); use fewer or smaller slots")]
    BadSize {
        name: String,
        slots: u32,
        slot_bytes: u64,
    },
    #[error(
        "ring '{name}' already has a live producer (pid {pid}); stop it or choose another name"
    )]
    Exists { name: String, pid: u32 },
    #[error("ring '{name}' exists at {path} but belongs to uid {owner}, not to you (uid {you}); remove it as that user")]
    OwnedByOther {
        name: String,
        path: PathBuf,
        owner: u32,
        you: u32,
    },
    #[error("not enough space in /dev/shm for ring '{name}' ({bytes} bytes); free space there or use fewer or smaller slots")]
    NoSpace { name: String, bytes: u64 },
    #[error("could not {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

/// Attaching to an existing ring failed.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("ring name '{0}' is invalid: use 1 to 31 characters from A-Z a-z 0-9 _ - .")]
    BadName(String),
    #[error("ring '{name}' did not appear at {path} within {waited_s} s; start its producer (streamd sim --ring {name}) or check the name with `streamd rings`")]
    NotFound {
        name: String,
        path: PathBuf,
        waited_s: u64,
    },
    #[error("ring '{name}' at {path} belongs to uid {owner}, not to you (uid {you}); attach as that user")]
    OwnedByOther {
        name: String,
        path: PathBuf,
        owner: u32,
        you: u32,
    },
    #[error("{path} is not a streamd ring (bad magic); remove it or choose another name")]
    BadMagic { path: PathBuf },
    #[error("ring '{name}' at {path} was never finished by its creator (layout version still 0 after {waited_ms} ms); if its producer is gone, run `streamd clean` or remove the file, then start the producer again")]
    NeverInitialised {
        name: String,
        path: PathBuf,
        waited_ms: u64,
    },
    #[error("ring '{name}' uses layout version {found} but this streamd speaks version {expected}; run producer and consumers from the same release")]
    Version {
        name: String,
        found: u32,
        expected: u32,
    },
    #[error("ring '{name}' has an inconsistent layout ({what}); the segment is damaged: run `streamd clean` and restart its producer")]
    Layout { name: String, what: String },
    #[error("ring '{name}' already has {max} consumers attached; detach one first")]
    TableFull { name: String, max: usize },
    #[error("ring '{name}' already has {max} consumer groups; use an existing group")]
    GroupsFull { name: String, max: usize },
    #[error(
        "group '{group}' on ring '{name}' is {has}; you asked for {asked}: use the same settings"
    )]
    GroupMismatch {
        name: String,
        group: String,
        has: String,
        asked: String,
    },
    #[error("group name '{0}' is invalid: use 1 to 31 characters from A-Z a-z 0-9 _ - .")]
    BadGroup(String),
    #[error("batch must be at least 1, got {0}")]
    BadBatch(u32),
    #[error("set {set} of {sets} does not exist: give 1 to 1048576 sets and a set from 0 to one less than the sets")]
    BadSet { set: u32, sets: u32 },
    #[error("a set is part of a group: name the group the set belongs to")]
    SetWithoutGroup,
    #[error("only a lossless consumer can hold frames until it commits; use lossless delivery")]
    HoldNeedsLossless,
    #[error("ring '{0}' has ended its stream, so no producer can resume it; create it anew")]
    Finished(String),
    #[error("could not {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

/// The producer could not claim a slot.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClaimError {
    /// The ring is full and the policy is `drop-newest`: the frame is counted as dropped.
    #[error("ring is full; the frame was dropped")]
    Full,
    /// The interrupt flag was raised while waiting for space.
    #[error("interrupted while waiting for space in the ring")]
    Interrupted,
}

/// The producer could not publish a frame it had written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PublishError {
    #[error("frame of {len} bytes does not fit the slot capacity of {capacity} bytes")]
    TooLarge { len: u64, capacity: u64 },
    #[error("frame shape {dims:?} of {dtype} needs {expected} bytes but {len} were given")]
    ShapeMismatch {
        dims: Vec<u32>,
        dtype: String,
        expected: u64,
        len: u64,
    },
    #[error("frames have 1 to 4 dimensions, got {0}")]
    BadNdims(usize),
}

/// Why a consumer got no frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecvError {
    /// The producer finished and every frame owed to this consumer was delivered or missed.
    #[error("end of stream after {published} published frames")]
    EndOfStream { published: u64 },
    /// The producer died; everything it published has been drained.
    #[error("the producer (pid {pid}) died after publishing {published} frames; all of them were drained")]
    ProducerDied { pid: u32, published: u64 },
    /// The interrupt flag was raised while waiting.
    #[error("interrupted")]
    Interrupted,
    /// A slot did not hold what the protocol guarantees; the ring is damaged.
    #[error("slot for frame sequence {seq} is damaged: {what}")]
    Corrupt { seq: u64, what: String },
    /// The ring's shared counters are impossible (a sequence past 2^62, an end beyond
    /// what was published): the segment is damaged and nothing more can be read.
    #[error("ring '{ring}' is damaged ({what}); stop its producer, run `streamd clean` and start it again")]
    Damaged { ring: String, what: String },
    /// A holding consumer (spec §5.8) must `commit()` before it can take another frame:
    /// its window is full, its next run is not contiguous, or the stream ended.
    #[error("the consumer holds frames it must commit before it can go on")]
    MustCommit,
    /// A frame given up by `Frame::detach` was not released: a consumer that does not
    /// hold keeps one frame at a time.
    #[error("frame sequence {seq} is still in use; release it before reading the next")]
    FrameDetached { seq: u64 },
}
