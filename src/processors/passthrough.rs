//! `passthrough`: forwards frames unchanged. With `every = N` it keeps only frames whose
//! id is a multiple of N — a live-preview tap that does not load its consumers.

use super::{positive_integer, unknown_key, ArgValue, Outputs, ProcessError, Processor, Refused};
use crate::ring::Frame;

pub struct Passthrough {
    every: u64,
    skipped: u64,
}

impl Default for Passthrough {
    fn default() -> Self {
        Passthrough {
            every: 1,
            skipped: 0,
        }
    }
}

impl Processor for Passthrough {
    fn configure(&mut self, key: &str, value: &ArgValue) -> Result<(), Refused> {
        match key {
            "every" => self.every = positive_integer(key, value)?,
            _ => return Err(unknown_key("passthrough", key, &["every"]).into()),
        }
        Ok(())
    }

    fn process(
        &mut self,
        _input: usize,
        frame: &Frame<'_>,
        out: &mut Outputs,
    ) -> Result<(), ProcessError> {
        if frame.header().frame_id % self.every != 0 {
            self.skipped += 1;
            return Ok(());
        }
        if out.is_empty() {
            return Ok(());
        }
        out.forward(0, frame).map_err(Into::into)
    }

    fn counters(&self) -> Vec<(String, u64)> {
        vec![("skipped".into(), self.skipped)]
    }
}
