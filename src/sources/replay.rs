//! `kind = "replay"`: frames from an `.npy` stack or a TIFF series, read whole when the
//! source opens; frame id k gets frame k mod frames.

use super::{Next, Source, SuppliedFrame};
use crate::pattern::{FrameContent, NpyStack, TiffSeries};
use crate::pipeline::config::{SourceContent, SourcePlan};
use crate::ring::SlotWriter;

pub struct Replay {
    content: FrameContent,
    frame: SuppliedFrame,
}

impl Replay {
    pub fn open(plan: &SourcePlan) -> Result<Replay, String> {
        let content = match &plan.content {
            SourceContent::Npy(path) => FrameContent::Npy(NpyStack::open(path)?),
            SourceContent::Tiff(paths) => FrameContent::Tiff(TiffSeries::from_paths(paths)?),
            _ => return Err("a replay source reads an .npy stack or TIFF files".into()),
        };
        let frame = SuppliedFrame::image(0, plan.dtype, plan.ny, plan.nx);
        Ok(Replay { content, frame })
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
