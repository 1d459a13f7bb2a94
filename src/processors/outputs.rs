//! The output rings a processor publishes into, with the counts the worker reports.

use crate::ring::{
    AttrValue, ClaimError, Frame, FrameError, FrameMeta, FullPolicy, HeldSlot, Producer, SlotWriter,
};

/// A stage worker's output rings (ports 0, 1, ...), counting what goes through them.
pub struct Outputs {
    rings: Vec<Producer>,
    /// Per port: a slot claimed for a frame a processor fills over several calls.
    held: Vec<Option<HeldSlot>>,
    frames: u64,
    bytes: u64,
    dropped: u64,
    watch: Option<ClaimWatch>,
}

/// Told the port a claim is about to wait on (`Some`), then that it is done (`None`):
/// a worker shows it is waiting for space, which is not being stuck.
pub type ClaimWatch = Box<dyn FnMut(Option<usize>) + Send>;

/// Why a frame could not be published.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("output port {port} does not exist (this stage has {count})")]
    NoPort { port: usize, count: usize },
    #[error("interrupted while waiting for space in the output ring")]
    Interrupted,
    #[error("output port {port} has a held slot; publish or release it first")]
    Held { port: usize },
    #[error("{0}")]
    Publish(#[from] crate::ring::PublishError),
    #[error("{0}")]
    Attributes(#[from] crate::ring::FrameError),
}

impl Outputs {
    pub fn new(rings: Vec<Producer>) -> Outputs {
        Outputs {
            held: rings.iter().map(|_| None).collect(),
            rings,
            frames: 0,
            bytes: 0,
            dropped: 0,
            watch: None,
        }
    }

    /// Calls `watch` around every claim (see [`ClaimWatch`]).
    pub fn watch_claims(&mut self, watch: ClaimWatch) {
        self.watch = Some(watch);
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

    /// Claims a slot in port `port`; `Ok(None)` when the ring is full under
    /// `drop-newest` (the frame is counted as dropped). Publishing the slot counts it.
    pub fn claim(&mut self, port: usize) -> Result<Option<OutputSlot<'_>>, OutputError> {
        if self.is_held(port) {
            return Err(OutputError::Held { port });
        }
        let count = self.rings.len();
        let ring = self
            .rings
            .get_mut(port)
            .ok_or(OutputError::NoPort { port, count })?;
        if let Some(watch) = &mut self.watch {
            watch(Some(port));
        }
        let claimed = ring.claim();
        if let Some(watch) = &mut self.watch {
            watch(None);
        }
        match claimed {
            Ok(slot) => Ok(Some(OutputSlot {
                slot,
                frames: &mut self.frames,
                bytes: &mut self.bytes,
            })),
            Err(ClaimError::Full) => {
                self.dropped += 1;
                Ok(None)
            }
            Err(ClaimError::Interrupted) => Err(OutputError::Interrupted),
        }
    }

    /// Claims a slot in port `port` and keeps it for a frame written over several calls
    /// (the slot is the frame's buffer: no copy when it is done). `Ok(false)` when the
    /// port does not exist, already holds a slot, or drops frames when full (a claim
    /// would count a drop that publishing later might not make): the caller then
    /// buffers the frame itself. Only blocking rings wait for space here.
    pub fn hold(&mut self, port: usize) -> Result<bool, OutputError> {
        let Some(ring) = self.rings.get_mut(port) else {
            return Ok(false);
        };
        if self.held[port].is_some() || ring.full_policy() != FullPolicy::Block {
            return Ok(false);
        }
        match ring.claim() {
            Ok(slot) => {
                self.held[port] = Some(slot.hold());
                Ok(true)
            }
            Err(ClaimError::Interrupted) => Err(OutputError::Interrupted),
            Err(ClaimError::Full) => Ok(false),
        }
    }

    /// Whether port `port` holds a slot.
    pub fn is_held(&self, port: usize) -> bool {
        self.held.get(port).is_some_and(Option::is_some)
    }

    /// The ring segment port `port` writes (empty for no such port).
    pub fn ring_name(&self, port: usize) -> &str {
        self.rings.get(port).map_or("", Producer::name)
    }

    /// Bytes a slot of port `port` holds (0 for no such port).
    pub fn capacity(&self, port: usize) -> u64 {
        self.rings.get(port).map_or(0, Producer::slot_capacity)
    }

    /// The slot port `port` holds, to write or publish; it stays held until published.
    pub fn held(&mut self, port: usize) -> Option<HeldOutput<'_>> {
        let token = self.held.get_mut(port)?;
        let ring = &mut self.rings[port];
        let writer = match ring.resume_held(token.take()?) {
            Ok(writer) => writer,
            // Cannot happen while only `Outputs` claims on this ring; a stale hold is
            // dropped (it publishes nothing).
            Err(_) => return None,
        };
        Some(HeldOutput {
            writer: Some(writer),
            home: token,
            frames: &mut self.frames,
            bytes: &mut self.bytes,
        })
    }

    /// Gives up the slot port `port` holds: nothing is published.
    pub fn release_held(&mut self, port: usize) {
        if let Some(token) = self.held.get_mut(port) {
            *token = None;
        }
    }

    /// Copies `frame` — pixels, header and attributes — to port `port`.
    pub fn forward(&mut self, port: usize, frame: &Frame<'_>) -> Result<(), OutputError> {
        let header = frame.header();
        let meta = header.meta();
        self.send(port, &meta, frame.payload(), frame.raw_attributes()?, &[])
    }

    /// Publishes a frame described by `meta` whose pixels are `payload`, with the encoded
    /// attributes `attributes` followed by `extra`. A full `drop-newest` ring drops it
    /// (counted).
    pub fn send(
        &mut self,
        port: usize,
        meta: &FrameMeta<'_>,
        payload: &[u8],
        attributes: &[u8],
        extra: &[(&str, AttrValue<'_>)],
    ) -> Result<(), OutputError> {
        let Some(mut slot) = self.claim(port)? else {
            return Ok(());
        };
        let capacity = slot.payload_mut().len() as u64;
        if payload.len() as u64 > capacity {
            return Err(crate::ring::PublishError::TooLarge {
                len: payload.len() as u64,
                capacity,
            }
            .into());
        }
        crate::ring::copy_to_slot(&mut slot.payload_mut()[..payload.len()], payload);
        slot.copy_attributes(attributes)?;
        for (key, value) in extra {
            slot.push_attr(key, value.clone())?;
        }
        slot.publish(meta)
    }

    /// Ends the stream of every output ring.
    pub fn finish(&mut self) {
        for ring in &mut self.rings {
            ring.finish();
        }
    }
}

/// A claimed output slot: write the payload and attributes, then publish (counted).
pub struct OutputSlot<'a> {
    slot: SlotWriter<'a>,
    frames: &'a mut u64,
    bytes: &'a mut u64,
}

impl OutputSlot<'_> {
    pub fn payload_mut(&mut self) -> &mut [u8] {
        self.slot.payload_mut()
    }

    pub fn copy_attributes(&mut self, encoded: &[u8]) -> Result<(), FrameError> {
        self.slot.copy_attributes(encoded)
    }

    pub fn push_attr(&mut self, key: &str, value: AttrValue<'_>) -> Result<(), FrameError> {
        self.slot.push_attr(key, value)
    }

    /// Publishes the frame and counts it.
    pub fn publish(self, meta: &FrameMeta<'_>) -> Result<(), OutputError> {
        let bytes = meta
            .dims
            .iter()
            .fold(meta.dtype.size() as u64, |acc, &d| acc * u64::from(d));
        self.slot.publish(meta)?;
        *self.frames += 1;
        *self.bytes += bytes;
        Ok(())
    }
}

/// The slot a port holds ([`Outputs::held`]): write it, publish it (counted), or drop
/// this guard to keep holding it for a later call. Dropping it never publishes.
pub struct HeldOutput<'a> {
    writer: Option<SlotWriter<'a>>,
    home: &'a mut Option<HeldSlot>,
    frames: &'a mut u64,
    bytes: &'a mut u64,
}

impl<'a> HeldOutput<'a> {
    /// The writer is taken only by `publish`, which consumes the guard, and by `Drop`.
    fn writer(&mut self) -> &mut SlotWriter<'a> {
        self.writer
            .as_mut()
            .expect("a HeldOutput keeps its writer until published")
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        self.writer().payload_mut()
    }

    pub fn copy_attributes(&mut self, encoded: &[u8]) -> Result<(), FrameError> {
        self.writer().copy_attributes(encoded)
    }

    pub fn push_attr(&mut self, key: &str, value: AttrValue<'_>) -> Result<(), FrameError> {
        self.writer().push_attr(key, value)
    }

    /// Publishes the frame and counts it; the port holds nothing afterwards.
    pub fn publish(mut self, meta: &FrameMeta<'_>) -> Result<(), OutputError> {
        let writer = self
            .writer
            .take()
            .expect("a HeldOutput keeps its writer until published");
        OutputSlot {
            slot: writer,
            frames: &mut *self.frames,
            bytes: &mut *self.bytes,
        }
        .publish(meta)
    }
}

impl Drop for HeldOutput<'_> {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take() {
            *self.home = Some(writer.hold());
        }
    }
}
