//! `kind = "replay"`: frames from an `.npy` stack or a TIFF series, read whole when the
//! source opens; frame id k gets frame k mod frames.

use super::{Next, Source, SuppliedFrame};
use crate::pattern::{FrameContent, NpyStack, TiffSeries};
use crate::ring::{Dtype, SlotWriter};
use std::path::{Path, PathBuf};

pub struct Replay {
    content: FrameContent,
    frame: SuppliedFrame,
}

impl Replay {
    /// The frames of an `.npy` stack, as `ny` × `nx` pixels of `dtype`.
    pub fn npy(path: &Path, dtype: Dtype, ny: u32, nx: u32) -> Result<Replay, String> {
        let content = FrameContent::Npy(NpyStack::open(path)?);
        Ok(Replay::of(content, dtype, ny, nx))
    }

    /// The frames of a TIFF series, one file each.
    pub fn tiff(paths: &[PathBuf], dtype: Dtype, ny: u32, nx: u32) -> Result<Replay, String> {
        let content = FrameContent::Tiff(TiffSeries::from_paths(paths)?);
        Ok(Replay::of(content, dtype, ny, nx))
    }

    fn of(content: FrameContent, dtype: Dtype, ny: u32, nx: u32) -> Replay {
        let frame = SuppliedFrame::image(0, dtype, ny, nx);
        Replay { content, frame }
    }
}

impl Source for Replay {
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
