//! The output rings a processor publishes into, with the counts the worker reports.

use crate::ring::{ClaimError, Frame, FrameMeta, Producer, SlotWriter};

/// A stage worker's output rings (ports 0, 1, ...), counting what goes through them.
pub struct Outputs {
    rings: Vec<Producer>,
    frames: u64,
    bytes: u64,
    dropped: u64,
}

/// Why a frame could not be published.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("output port {port} does not exist (this stage has {count})")]
    NoPort { port: usize, count: usize },
    #[error("interrupted while waiting for space in the output ring")]
    Interrupted,
    #[error("{0}")]
    Publish(#[from] crate::ring::PublishError),
    #[error("{0}")]
    Attributes(#[from] crate::ring::FrameError),
}

impl Outputs {
    pub fn new(rings: Vec<Producer>) -> Outputs {
        Outputs {
            rings,
            frames: 0,
            bytes: 0,
            dropped: 0,
        }
    }

    /// Number of output ports.
    pub fn len(&self) -> usize {
        self.rings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rings.is_empty()
    }

    /// Frames published, bytes published, frames dropped by a full `drop-newest` ring.
    pub fn counts(&self) -> (u64, u64, u64) {
        (self.frames, self.bytes, self.dropped)
    }

    /// Starts the counts again from zero (`streamd reset-stats`).
    pub fn reset_counts(&mut self) {
        (self.frames, self.bytes, self.dropped) = (0, 0, 0);
    }

    /// Claims a slot in port `port`; `Ok(None)` when the ring is full under
    /// `drop-newest` (the frame is counted as dropped).
    pub fn claim(&mut self, port: usize) -> Result<Option<SlotWriter<'_>>, OutputError> {
        let count = self.rings.len();
        let ring = self
            .rings
            .get_mut(port)
            .ok_or(OutputError::NoPort { port, count })?;
        match ring.claim() {
            Ok(slot) => Ok(Some(slot)),
            Err(ClaimError::Full) => {
                self.dropped += 1;
                Ok(None)
            }
            Err(ClaimError::Interrupted) => Err(OutputError::Interrupted),
        }
    }

    /// Publishes a claimed slot and counts it.
    pub fn publish(
        &mut self,
        slot: SlotWriter<'_>,
        meta: &FrameMeta<'_>,
    ) -> Result<(), OutputError> {
        let bytes = meta
            .dims
            .iter()
            .fold(meta.dtype.size() as u64, |acc, &d| acc * u64::from(d));
        slot.publish(meta)?;
        self.frames += 1;
        self.bytes += bytes;
        Ok(())
    }

    /// Copies `frame` — pixels, header and attributes — to port `port`.
    pub fn forward(&mut self, port: usize, frame: &Frame<'_>) -> Result<(), OutputError> {
        let Some(mut slot) = self.claim(port)? else {
            return Ok(());
        };
        let header = frame.header();
        let payload = frame.payload();
        let capacity = slot.payload_mut().len() as u64;
        if payload.len() as u64 > capacity {
            return Err(crate::ring::PublishError::TooLarge {
                len: payload.len() as u64,
                capacity,
            }
            .into());
        }
        slot.payload_mut()[..payload.len()].copy_from_slice(payload);
        slot.copy_attributes(frame.raw_attributes()?)?;
        let meta = FrameMeta {
            frame_id: header.frame_id,
            timestamp_ns: header.timestamp_ns,
            dtype: header.dtype,
            dims: &header.dims,
            flags: header.flags,
        };
        // The borrow of `self` through `slot` ends at publish; count afterwards.
        slot.publish(&meta)?;
        self.frames += 1;
        self.bytes += payload.len() as u64;
        Ok(())
    }

    /// Ends the stream of every output ring.
    pub fn finish(&mut self) {
        for ring in &mut self.rings {
            ring.finish();
        }
    }
}
