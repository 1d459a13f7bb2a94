//! Frame content for a source — the simulator patterns or a replayed file — and the
//! pacing that holds a frame rate. Shared by `streamd sim` and a pipeline's source.

use super::config::SourceContent;
use crate::pattern::{fill_ramp, NpyStack, RandomPool, TiffSeries};
use crate::ring::Dtype;
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

/// Sleeps until `at`, spinning for the last stretch so high rates stay even.
pub fn pace(at: Instant) {
    let spin = Duration::from_micros(200);
    loop {
        let now = Instant::now();
        if now >= at {
            return;
        }
        let left = at - now;
        if left > spin {
            std::thread::sleep(left - spin);
        } else {
            std::hint::spin_loop();
        }
    }
}
