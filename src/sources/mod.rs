//! Sources: where a pipeline's frames come from — the kind of its own beside
//! [`Processor`](crate::processors::Processor). A source worker (`pipeline::worker`)
//! asks its source for the next frame, claims a ring slot, has the source write the
//! frame there and publishes it; pacing, restarts, metadata channels and the stats are
//! the worker's. Each source is one file here and one entry in [`REGISTRY`], chosen in
//! the pipeline file by `[source] kind = "..."`.

pub(crate) mod replay;
pub(crate) mod sim;
pub mod zmq;

use crate::pattern::FrameContent;
use crate::ring::{Dims, Dtype, SlotWriter};

/// One source of frames.
pub trait Source {
    /// Gets the next frame ready, numbered `next_id` unless the source numbers its own
    /// (a detector's image ids, a Python generator's).
    fn next(&mut self, next_id: u64) -> Result<Next, String>;

    /// Writes the frame [`next`](Self::next) got ready into a claimed slot: its pixels
    /// (`SuppliedFrame::bytes` of them) and attributes. An error leaves the slot
    /// unpublished; the source has counted why.
    fn write(&mut self, slot: &mut SlotWriter<'_>) -> Result<(), String>;

    /// Frames the source knows it never got that no supplied frame carries in its
    /// `missed` (an image refused, the announced end of a series that never came); the
    /// worker adds them to its `missed` when it takes them.
    fn take_missed(&mut self) -> u64 {
        0
    }

    /// Source-specific counters (at most `processors::MAX_COUNTERS`), shown by `status`
    /// and `top` like a processor's.
    fn counters(&self) -> Vec<(String, u64)> {
        Vec::new()
    }

    /// `streamd reset-stats`: zero those counters.
    fn reset_counters(&mut self) {}

    /// Counters that are levels (connected senders), not totals: a restarted worker
    /// shows its own value of these, not its predecessor's plus its own.
    fn gauges(&self) -> &'static [&'static str] {
        &[]
    }
}

/// What [`Source::next`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    Frame(SuppliedFrame),
    /// Nothing yet (a network source waited a while); ask again.
    Idle,
    /// Something the source refused and counted (a message that does not decode, a
    /// sender gone): one sentence for the worker to report. Ask again.
    Problem(String),
    /// The stream is over.
    End,
}

/// What [`Source::next`] got ready.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SuppliedFrame {
    pub frame_id: u64,
    /// `None`: stamped by the worker (the scheduled time when paced, else now).
    pub timestamp_ns: Option<u64>,
    pub dtype: Dtype,
    /// C order (slowest first), 1 to 4 of them.
    pub dims: Dims,
    /// Frames the source knows were lost before this one (a gap in a detector's
    /// numbering): counted as the source's `missed`.
    pub missed: u64,
}

impl SuppliedFrame {
    /// A 2-D frame `[ny, nx]` with nothing missed before it.
    pub fn image(frame_id: u64, dtype: Dtype, ny: u32, nx: u32) -> SuppliedFrame {
        SuppliedFrame {
            frame_id,
            timestamp_ns: None,
            dtype,
            dims: Dims::new(&[ny, nx]).expect("two dims"),
            missed: 0,
        }
    }

    pub fn bytes(&self) -> usize {
        self.dims.iter().map(|&d| d as usize).product::<usize>() * self.dtype.size()
    }
}

/// Frames whose pixels a [`FrameContent`] computes or holds, one frame id after another:
/// the simulator's ([`sim::open`]) and replayed ones ([`replay::npy`], [`replay::tiff`]).
pub struct ContentFrames {
    content: FrameContent,
    frame: SuppliedFrame,
}

impl ContentFrames {
    fn new(content: FrameContent, frame: SuppliedFrame) -> ContentFrames {
        ContentFrames { content, frame }
    }
}

impl Source for ContentFrames {
    fn next(&mut self, next_id: u64) -> Result<Next, String> {
        self.frame.frame_id = next_id;
        Ok(Next::Frame(self.frame))
    }

    fn write(&mut self, slot: &mut SlotWriter<'_>) -> Result<(), String> {
        let out = &mut slot.payload_mut()[..self.frame.bytes()];
        self.content.fill(out, self.frame.frame_id);
        Ok(())
    }
}
