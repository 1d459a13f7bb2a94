//! `kind = "sim"`: the simulator's `ramp` (verifiable, spec §10) or `random` frames, one
//! frame id after another.

use super::{ContentFrames, SuppliedFrame};
use crate::pattern::{FrameContent, Ramp, RandomPool};
use crate::ring::Dtype;

/// `ramp` frames, or `random` ones, of `ny` × `nx` pixels of `dtype`.
pub fn open(random: bool, dtype: Dtype, ny: u32, nx: u32) -> ContentFrames {
    let frame = SuppliedFrame::image(0, dtype, ny, nx);
    let content = match random {
        false => FrameContent::Ramp(Ramp::new(dtype)),
        true => FrameContent::Random(RandomPool::new(frame.bytes(), 0x5eed)),
    };
    ContentFrames::new(content, frame)
}
