//! `kind = "sim"`: the simulator's `ramp` (verifiable, spec §10) or `random` frames, one
//! frame id after another.

use super::{Next, Source, SuppliedFrame};
use crate::pattern::{FrameContent, RandomPool};
use crate::ring::{Dtype, SlotWriter};

pub struct Sim {
    content: FrameContent,
    frame: SuppliedFrame,
}

impl Sim {
    /// `ramp` frames, or `random` ones, of `ny` × `nx` pixels of `dtype`.
    pub fn open(random: bool, dtype: Dtype, ny: u32, nx: u32) -> Sim {
        let frame = SuppliedFrame::image(0, dtype, ny, nx);
        let content = match random {
            false => FrameContent::Ramp(dtype),
            true => FrameContent::Random(RandomPool::new(frame.bytes(), 0x5eed)),
        };
        Sim { content, frame }
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
