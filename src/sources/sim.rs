//! `kind = "sim"`: the simulator's `ramp` (verifiable, spec §10) or `random` frames, one
//! frame id after another.

use super::{Next, Source, SuppliedFrame};
use crate::pattern::{FrameContent, RandomPool};
use crate::pipeline::config::{SourceContent, SourcePlan};
use crate::ring::SlotWriter;

pub struct Sim {
    content: FrameContent,
    frame: SuppliedFrame,
}

impl Sim {
    pub fn open(plan: &SourcePlan) -> Result<Sim, String> {
        let frame = SuppliedFrame::image(0, plan.dtype, plan.ny, plan.nx);
        let content = match plan.content {
            SourceContent::Ramp => FrameContent::Ramp(plan.dtype),
            SourceContent::Random => FrameContent::Random(RandomPool::new(frame.bytes(), 0x5eed)),
            _ => return Err("the simulator makes ramp or random frames".into()),
        };
        Ok(Sim { content, frame })
    }
}

impl Source for Sim {
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
