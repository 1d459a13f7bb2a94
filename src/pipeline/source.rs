//! Frame content for a source — the simulator patterns or a replayed file — and the
//! pacing that holds a frame rate. Shared by `streamd sim` and a pipeline's source.

use super::plan::{MetadataPlan, SourceContent};
use crate::pattern::{fill_ramp, NpyStack, RandomPool, TiffSeries};
use crate::ring::{AttrValue, ClaimError, Dtype, FrameMeta, Producer, SlotWriter};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// Where the pixels of each frame come from.
pub enum FrameContent {
    Ramp(Dtype),
    Random(RandomPool),
    Npy(NpyStack),
    Tiff(TiffSeries),
}

impl FrameContent {
    /// Prepares content for frames of `frame_bytes`; files are read whole here.
    pub fn open(
        content: &SourceContent,
        dtype: Dtype,
        frame_bytes: usize,
    ) -> Result<FrameContent, String> {
        Ok(match content {
            SourceContent::Ramp => FrameContent::Ramp(dtype),
            SourceContent::Random => FrameContent::Random(RandomPool::new(frame_bytes, 0x5eed)),
            SourceContent::Npy(path) => FrameContent::Npy(NpyStack::open(path)?),
            SourceContent::Tiff(paths) => {
                let series = TiffSeries::from_paths(paths)?;
                FrameContent::Tiff(series)
            }
            SourceContent::Python { .. } => {
                return Err("a Python source's frames come from its interpreter".into())
            }
        })
    }

    /// Writes frame `frame_id` into `out` (exactly one frame's bytes).
    pub fn fill(&self, out: &mut [u8], frame_id: u64) {
        match self {
            FrameContent::Ramp(dtype) => fill_ramp(out, *dtype, frame_id),
            FrameContent::Random(pool) => pool.fill(out, frame_id),
            FrameContent::Npy(stack) => stack.fill(out, frame_id),
            FrameContent::Tiff(series) => series.fill(out, frame_id),
        }
    }
}

/// Where a source worker's frames come from: a pattern or files (built in), or code its
/// host runs (a Python class's `frames()`, through the Python package).
pub trait FrameSupply {
    /// Gets the next frame ready, numbered `next_id` unless the supply numbers its own;
    /// `None` ends the stream.
    fn next(&mut self, next_id: u64) -> Result<Option<SuppliedFrame>, String>;
    /// Writes the frame [`next`](Self::next) got ready into a claimed slot: its pixels
    /// (`SuppliedFrame::bytes` of them) and attributes.
    fn write(&mut self, slot: &mut SlotWriter<'_>) -> Result<(), String>;
}

/// What [`FrameSupply::next`] got ready.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SuppliedFrame {
    pub frame_id: u64,
    /// `None`: stamped by the worker (the scheduled time when paced, else now).
    pub timestamp_ns: Option<u64>,
    pub dtype: Dtype,
    /// `[ny, nx]`.
    pub dims: [u32; 2],
}

impl SuppliedFrame {
    pub fn bytes(&self) -> usize {
        self.dims[0] as usize * self.dims[1] as usize * self.dtype.size()
    }
}

/// The built-in supply: pattern or replayed files, one frame id after another.
pub struct BuiltIn {
    content: FrameContent,
    frame: SuppliedFrame,
}

impl BuiltIn {
    pub fn open(
        content: &SourceContent,
        dtype: Dtype,
        ny: u32,
        nx: u32,
    ) -> Result<BuiltIn, String> {
        let frame = SuppliedFrame {
            frame_id: 0,
            timestamp_ns: None,
            dtype,
            dims: [ny, nx],
        };
        Ok(BuiltIn {
            content: FrameContent::open(content, dtype, frame.bytes())?,
            frame,
        })
    }
}

impl FrameSupply for BuiltIn {
    fn next(&mut self, next_id: u64) -> Result<Option<SuppliedFrame>, String> {
        self.frame.frame_id = next_id;
        Ok(Some(self.frame))
    }

    fn write(&mut self, slot: &mut SlotWriter<'_>) -> Result<(), String> {
        let bytes = self.frame.bytes();
        self.content
            .fill(&mut slot.payload_mut()[..bytes], self.frame.frame_id);
        Ok(())
    }
}

/// Sleeps until `at`, spinning for the last stretch so high rates stay even.
pub fn pace(at: Instant) {
    pace_or_stop(at, &AtomicBool::new(false));
}

/// Like [`pace`], but wakes at least every 50 ms to look at `stop`: returns false
/// when it was raised (a slow rate never makes SIGTERM wait for the next frame).
pub fn pace_or_stop(at: Instant, stop: &AtomicBool) -> bool {
    let spin = Duration::from_micros(200);
    let slice = Duration::from_millis(50);
    loop {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= at {
            return true;
        }
        let left = at - now;
        if left > spin {
            std::thread::sleep((left - spin).min(slice));
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Publishing is the source's part of the plan (the plan itself is plain data).
impl MetadataPlan {
    /// Publishes frame `frame_id`'s values (stamped around `frame_ts`); returns how many
    /// were published and how many a full `drop-newest` ring dropped.
    pub fn publish(
        &self,
        ring: &mut Producer,
        frame_id: u64,
        frame_ts: u64,
    ) -> Result<(u64, u64), MetadataError> {
        if self.gap_every > 0 && frame_id % self.gap_every == self.gap_every - 1 {
            return Ok((0, 0));
        }
        let (mut published, mut dropped) = (0, 0);
        for (k, channel) in self.channels.iter().enumerate() {
            if frame_id % channel.every != 0 {
                continue;
            }
            let jitter = if self.jitter_ns == 0 {
                0
            } else {
                let span = 2 * self.jitter_ns + 1;
                (mix(frame_id, k as u64) % span) as i64 - self.jitter_ns as i64
            };
            let mut slot = match ring.claim() {
                Ok(slot) => slot,
                Err(ClaimError::Full) => {
                    dropped += 1;
                    continue;
                }
                Err(ClaimError::Interrupted) => return Err(MetadataError::Interrupted),
            };
            slot.push_attr(&channel.name, AttrValue::F64(Self::value(k, frame_id)))?;
            slot.publish(&FrameMeta {
                frame_id,
                timestamp_ns: frame_ts.saturating_add_signed(jitter),
                dtype: Dtype::U8,
                dims: &[0],
                flags: 0,
            })?;
            published += 1;
        }
        Ok((published, dropped))
    }
}

/// Why metadata could not be published.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("interrupted while waiting for space in the metadata ring")]
    Interrupted,
    #[error("{0}")]
    Publish(#[from] crate::ring::PublishError),
    #[error("{0}")]
    Attribute(#[from] crate::ring::FrameError),
}

/// A fixed pseudo-random number for (a, b) (splitmix64 of their mix).
fn mix(a: u64, b: u64) -> u64 {
    let mut z = a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ b.wrapping_add(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
