//! The single producer of a ring: claim a slot, write the frame in place, publish.

use super::error::{AttachError, ClaimError, CreateError, PublishError};
use super::frame::{
    attr_area_mut, decode_header, encode_attribute, encode_header, set_attr_len, AttrValue, Dims,
    Dtype, FrameError, FrameHeader,
};
use super::layout::*;
use super::membership::{active_consumers, lossless_floor, reap};
use super::segment::{RingSpec, Segment, StaleSegment};
use super::wait::{futex_wait, futex_wake_all};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the producer does when every slot is still needed by a lossless consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FullPolicy {
    /// Wait for space.
    #[default]
    Block,
    /// Do not publish the new frame; count it as dropped.
    DropNewest,
}

impl std::str::FromStr for FullPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "block" => Ok(FullPolicy::Block),
            "drop-newest" => Ok(FullPolicy::DropNewest),
            other => Err(format!(
                "unknown full policy '{other}' (use block or drop-newest)"
            )),
        }
    }
}

/// Parameters of a ring to create.
#[derive(Debug, Clone)]
pub struct RingOptions {
    pub name: String,
    pub slots: u32,
    /// Largest payload a slot must hold; rounded up to whole pages.
    pub slot_bytes: u64,
    pub full_policy: FullPolicy,
}

/// Shape and identity of a frame being published.
#[derive(Debug, Clone, Copy)]
pub struct FrameMeta<'a> {
    pub frame_id: u64,
    pub timestamp_ns: u64,
    pub dtype: Dtype,
    /// C order (slowest axis first), 1 to 4 entries.
    pub dims: &'a [u32],
    pub flags: u32,
}

impl FrameHeader {
    /// The header as the shape and identity of a frame to publish (flags cleared: end
    /// of stream belongs to the ring that carries it).
    pub fn meta(&self) -> FrameMeta<'_> {
        FrameMeta {
            frame_id: self.frame_id,
            timestamp_ns: self.timestamp_ns,
            dtype: self.dtype,
            dims: &self.dims,
            flags: 0,
        }
    }
}

fn ring_spec(options: &RingOptions) -> RingSpec {
    RingSpec {
        name: options.name.clone(),
        slots: options.slots,
        payload_bytes: options.slot_bytes,
        full_policy: match options.full_policy {
            FullPolicy::Block => POLICY_BLOCK,
            FullPolicy::DropNewest => POLICY_DROP_NEWEST,
        },
    }
}

/// How often a blocked producer looks for dead consumers; bounds reclaim time (spec §7.2).
pub const REAP_INTERVAL: Duration = Duration::from_millis(10);

/// The producer end of a ring. Dropping it ends the stream and removes the segment name.
pub struct Producer {
    segment: Segment,
    policy: FullPolicy,
    next_seq: u64,
    /// Cached `lossless_floor + slot_count`; may be stale low, never stale high (spec §6.1).
    limit: u64,
    seen_gen: u64,
    published: u64,
    interrupt: Option<Arc<AtomicBool>>,
    finished: bool,
    /// Tells this producer's [`HeldSlot`]s from another's (unique in the process).
    id: u64,
    /// False for a writer resuming a ring its supervisor owns: the owner removes it.
    unlink_on_drop: bool,
}

/// A ring created and owned by a supervisor that hands the producer role to one writer
/// process at a time ([`Producer::resume`]). The owner's pid is the ring's producer pid,
/// so consumers keep waiting while a crashed writer is restarted (spec §7.7). Dropping
/// it removes the segment name.
pub struct OwnedRing {
    segment: Segment,
}

impl OwnedRing {
    /// Creates ring `options.name` owned by the calling process; a stale segment of the
    /// same name is replaced and returned.
    pub fn create(options: &RingOptions) -> Result<(OwnedRing, Option<StaleSegment>), CreateError> {
        let (segment, stale) = Segment::create(&ring_spec(options), false)?;
        Ok((OwnedRing { segment }, stale))
    }

    pub fn name(&self) -> &str {
        self.segment.name()
    }

    /// Ends the stream for a writer that will not come back (its stage failed), so
    /// consumers drain what was published and stop. No writer may be running.
    pub fn finish(&self) {
        let header = self.segment.header();
        // SYNC: pairs with the Release store in `end_stream` (a stream ends once).
        if header.producer_state.load(Acquire) == PRODUCER_FINISHED {
            return;
        }
        // SYNC: pairs with the head store in the last writer's `publish`; only the count
        // is used (no writer runs now).
        end_stream(&self.segment, header.head.load(Acquire));
    }
}

/// Ends the stream after `end_seq` frames and wakes every consumer (spec §6.6).
fn end_stream(segment: &Segment, end_seq: u64) {
    let header = segment.header();
    header.end_seq.store(end_seq, Relaxed);
    // SYNC: pairs with consumers' Acquire load of producer_state; end_seq is visible.
    header.producer_state.store(PRODUCER_FINISHED, Release);
    header.data_futex.fetch_add(1, SeqCst);
    futex_wake_all(&header.data_futex);
}

impl Drop for OwnedRing {
    fn drop(&mut self) {
        self.segment.unlink();
    }
}

impl Producer {
    /// Creates the ring. A stale segment of the same name (dead producer) is replaced and
    /// returned so the caller can say so.
    pub fn create(options: &RingOptions) -> Result<(Producer, Option<StaleSegment>), CreateError> {
        let (segment, stale) = Segment::create(&ring_spec(options), true)?;
        let producer = Producer {
            segment,
            policy: options.full_policy,
            next_seq: 0,
            limit: u64::MAX,
            seen_gen: u64::MAX,
            published: 0,
            interrupt: None,
            finished: false,
            id: next_producer_id(),
            unlink_on_drop: true,
        };
        Ok((producer, stale))
    }

    /// Takes over production of ring `name`, created by an [`OwnedRing`], at its first
    /// unpublished sequence. A slot a crashed writer left half-written is written again
    /// (spec §7.7). The caller's supervisor guarantees that no other writer lives.
    pub fn resume(name: &str) -> Result<Producer, AttachError> {
        let segment = Segment::open(name, Duration::ZERO)?;
        let header = segment.header();
        // SYNC: pairs with the Release store in `end_stream`.
        if header.producer_state.load(Acquire) == PRODUCER_FINISHED {
            return Err(AttachError::Finished(name.into()));
        }
        let head = header.head.load(Acquire);
        let policy = if header.full_policy.load(Relaxed) == POLICY_DROP_NEWEST {
            FullPolicy::DropNewest
        } else {
            FullPolicy::Block
        };
        Ok(Producer {
            segment,
            policy,
            next_seq: head,
            limit: u64::MAX,
            seen_gen: u64::MAX,
            published: head,
            interrupt: None,
            finished: false,
            id: next_producer_id(),
            unlink_on_drop: false,
        })
    }

    /// Header of the newest published frame, if any; a resumed writer continues its ids.
    pub fn last_published(&self) -> Option<FrameHeader> {
        let seq = self.next_seq.checked_sub(1)?;
        let slot = (seq % u64::from(self.segment.geometry().slot_count)) as u32;
        // SAFETY: only this producer writes slots, and `&self` keeps it from writing while
        // the area is read.
        let area = unsafe { self.segment.frame_area(slot) };
        decode_header(area, self.slot_capacity()).ok()
    }

    /// Makes waits return `Interrupted` once `flag` is set (for example by SIGINT).
    pub fn set_interrupt(&mut self, flag: Arc<AtomicBool>) {
        self.interrupt = Some(flag);
    }

    fn interrupted(&self) -> bool {
        self.interrupt.as_ref().is_some_and(|f| f.load(Relaxed))
    }

    /// The ring's name.
    pub fn name(&self) -> &str {
        self.segment.name()
    }

    /// The segment itself, for tests that damage it on purpose.
    #[cfg(test)]
    pub(crate) fn segment(&self) -> &Segment {
        &self.segment
    }

    /// Bytes a slot's payload can hold.
    pub fn slot_capacity(&self) -> u64 {
        self.segment.geometry().payload_capacity
    }

    /// What a claim does when the ring is full.
    pub fn full_policy(&self) -> FullPolicy {
        self.policy
    }

    /// The writer of a slot claimed and then [held](SlotWriter::hold), to write more or
    /// publish. A hold goes stale when this producer published since (or it is another
    /// producer's): then it comes back as `Err`, and the slot is not to be used.
    pub fn resume_held(&mut self, held: HeldSlot) -> Result<SlotWriter<'_>, HeldSlot> {
        if held.producer != self.id || held.seq != self.next_seq {
            return Err(held);
        }
        let slot = (held.seq % u64::from(self.segment.geometry().slot_count)) as u32;
        // The claim that made this hold checked the lossless floor and the lossy pins for
        // this seq and stamped the slot WRITING; nothing was published since (seq is still
        // next_seq), so the slot is still ours alone.
        Ok(SlotWriter {
            producer: self,
            seq: held.seq,
            slot,
            attr_used: held.attr_used,
        })
    }

    /// Frames published so far.
    pub fn published(&self) -> u64 {
        self.published
    }

    /// Frames dropped under `drop-newest` so far.
    pub fn dropped(&self) -> u64 {
        self.segment.header().dropped.load(Relaxed)
    }

    pub fn counters(&self) -> ProducerCounters {
        ProducerCounters {
            published: self.published,
            dropped: self.dropped(),
        }
    }

    /// Consumers found dead and reaped since the ring was created.
    pub fn consumers_reaped(&self) -> u64 {
        self.segment.header().consumers_reaped.load(Relaxed)
    }

    /// Waits until at least `count` consumers are attached.
    pub fn wait_for_consumers(&self, count: usize) -> Result<(), ClaimError> {
        let mut last_reap = Instant::now();
        while active_consumers(&self.segment) < count {
            if self.interrupted() {
                return Err(ClaimError::Interrupted);
            }
            if last_reap.elapsed() > Duration::from_millis(100) {
                // A consumer that attached and died must not count.
                reap(&self.segment);
                last_reap = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }

    /// Claims the next slot. With `block` waits for space; with `drop-newest` returns
    /// `Full` (and counts a dropped frame) when lossless consumers still need every slot.
    pub fn claim(&mut self) -> Result<SlotWriter<'_>, ClaimError> {
        let seq = self.next_seq;
        let slots = u64::from(self.segment.geometry().slot_count);
        let header = self.segment.header();
        // SYNC: pairs with the SeqCst increments in `membership::join`; a new group's
        // floor is scanned before we rely on the cached limit again.
        let gen = header.membership_gen.load(SeqCst);
        if gen != self.seen_gen || seq >= self.limit {
            self.seen_gen = gen;
            self.limit = lossless_floor(&self.segment).saturating_add(slots);
        }
        if seq >= self.limit {
            match self.policy {
                FullPolicy::DropNewest => {
                    header.dropped.fetch_add(1, Relaxed);
                    return Err(ClaimError::Full);
                }
                FullPolicy::Block => self.wait_for_space(seq)?,
            }
        }
        let slot = (seq % slots) as u32;
        // SYNC: SeqCst store then SeqCst loads of lossy pins; a lossy reader stores its pin
        // then loads this stamp. One of us sees the other (spec §6.3).
        self.segment.stamp(slot).store(stamp_writing(seq), SeqCst);
        if seq >= slots {
            self.wait_for_lossy_readers(seq - slots)?;
        }
        Ok(SlotWriter {
            producer: self,
            seq,
            slot,
            attr_used: 0,
        })
    }

    fn wait_for_space(&mut self, seq: u64) -> Result<(), ClaimError> {
        let slots = u64::from(self.segment.geometry().slot_count);
        let header = self.segment.header();
        let mut last_reap = Instant::now();
        loop {
            // SYNC: SeqCst flag store, then SeqCst pin loads in the floor scan; releasing
            // consumers store their pin, then load this flag (spec §8).
            header.producer_waiting.store(1, SeqCst);
            let word = header.space_futex.load(SeqCst);
            self.limit = lossless_floor(&self.segment).saturating_add(slots);
            if seq < self.limit {
                header.producer_waiting.store(0, Relaxed);
                return Ok(());
            }
            if self.interrupted() {
                header.producer_waiting.store(0, Relaxed);
                return Err(ClaimError::Interrupted);
            }
            futex_wait(&header.space_futex, word, REAP_INTERVAL);
            if last_reap.elapsed() >= REAP_INTERVAL {
                reap(&self.segment);
                last_reap = Instant::now();
            }
        }
    }

    /// Waits while a lossy consumer holds the frame this slot still contains.
    fn wait_for_lossy_readers(&self, old_seq: u64) -> Result<(), ClaimError> {
        let header = self.segment.header();
        let mut since = Instant::now();
        loop {
            let mask = header.lossy_mask.load(SeqCst);
            let held = (0..MAX_CONSUMERS)
                .filter(|i| mask & (1 << i) != 0)
                .any(|i| self.segment.consumer(i).pin.load(SeqCst) == old_seq);
            if !held {
                return Ok(());
            }
            if self.interrupted() {
                return Err(ClaimError::Interrupted);
            }
            std::thread::yield_now();
            if since.elapsed() >= REAP_INTERVAL {
                reap(&self.segment);
                since = Instant::now();
            }
        }
    }

    /// Marks the end of the stream and wakes every consumer. Also done on drop.
    pub fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        end_stream(&self.segment, self.next_seq);
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.finish();
        if self.unlink_on_drop {
            self.segment.unlink();
        }
    }
}

fn next_producer_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    // Only uniqueness matters: no other memory is ordered by this counter.
    NEXT.fetch_add(1, Relaxed)
}

/// A claim kept across calls without borrowing the producer: made by
/// [`SlotWriter::hold`], turned back into the writer by [`Producer::resume_held`].
/// Dropping it publishes nothing, as dropping the writer does (the next claim reuses
/// the slot).
#[must_use = "a held slot is published only through Producer::resume_held"]
#[derive(Debug)]
pub struct HeldSlot {
    producer: u64,
    seq: u64,
    attr_used: usize,
}

/// A claimed slot. Write the payload and attributes, then `publish`; dropping it
/// unpublished publishes nothing and the next claim reuses the slot.
#[must_use = "a claimed slot is published only by calling publish()"]
pub struct SlotWriter<'a> {
    producer: &'a mut Producer,
    seq: u64,
    slot: u32,
    attr_used: usize,
}

impl SlotWriter<'_> {
    /// The slot's whole payload area (`slot_capacity` bytes, page-aligned).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        // SAFETY: this writer holds the claim of the slot: no consumer reads it until
        // publish (the lossless floor and the lossy pins were checked after the WRITING
        // stamp), and `&mut self` makes the returned slice the only reference.
        unsafe { self.producer.segment.payload_mut(self.slot) }
    }

    /// The frame header and attribute area; the stamp, which lossy readers in other
    /// processes load, stays outside it and is only ever stored as an atomic.
    fn frame_area_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for `payload_mut`.
        unsafe { self.producer.segment.frame_area_mut(self.slot) }
    }

    /// Replaces the attributes with an already encoded area, such as
    /// [`Frame::raw_attributes`](super::Frame::raw_attributes) of an input frame.
    pub fn copy_attributes(&mut self, encoded: &[u8]) -> Result<(), FrameError> {
        if encoded.len() > ATTR_CAPACITY {
            return Err(FrameError::AttrTooLong(encoded.len() as u32));
        }
        attr_area_mut(self.frame_area_mut())[..encoded.len()].copy_from_slice(encoded);
        self.attr_used = encoded.len();
        Ok(())
    }

    /// Appends a key/value attribute (tile coordinates, motor positions, ...).
    pub fn push_attr(&mut self, key: &str, value: AttrValue<'_>) -> Result<(), FrameError> {
        let used = self.attr_used;
        let area = attr_area_mut(self.frame_area_mut());
        self.attr_used = encode_attribute(area, used, key, &value)?;
        Ok(())
    }

    /// Sequence number this frame will get.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Keeps the claim (and what was written) without borrowing the producer, for a
    /// frame filled over several calls; [`Producer::resume_held`] gives it back.
    pub fn hold(self) -> HeldSlot {
        HeldSlot {
            producer: self.producer.id,
            seq: self.seq,
            attr_used: self.attr_used,
        }
    }

    /// Publishes the frame: its header is written from `meta` and the payload length
    /// follows from dims and dtype.
    pub fn publish(mut self, meta: &FrameMeta<'_>) -> Result<(), PublishError> {
        if meta.dims.is_empty() || meta.dims.len() > frame_field::MAX_DIMS {
            return Err(PublishError::BadNdims(meta.dims.len()));
        }
        let capacity = self.producer.slot_capacity();
        let len = meta
            .dims
            .iter()
            .try_fold(meta.dtype.size() as u64, |acc, &d| {
                acc.checked_mul(u64::from(d))
            })
            .unwrap_or(u64::MAX);
        if len > capacity {
            return Err(PublishError::TooLarge { len, capacity });
        }
        let header = FrameHeader {
            frame_id: meta.frame_id,
            timestamp_ns: meta.timestamp_ns,
            dtype: meta.dtype,
            dims: Dims::new(meta.dims).expect("ndims checked above"),
            payload_len: len,
            flags: meta.flags,
        };
        let attr_used = self.attr_used;
        let area = self.frame_area_mut();
        encode_header(area, &header);
        set_attr_len(area, attr_used);
        let (seq, slot) = (self.seq, self.slot);
        let producer = &mut *self.producer;
        let ring = producer.segment.header();
        // SYNC: pairs with readers' stamp loads (Acquire for lossless, SeqCst for lossy):
        // header and payload are visible to whoever sees this stamp.
        producer
            .segment
            .stamp(slot)
            .store(stamp_published(seq), Release);
        // SYNC: pairs with consumers' Acquire load of head; SeqCst so the waiter check
        // below cannot move before it (no lost wake-up, spec §8).
        ring.head.store(seq + 1, SeqCst);
        if ring.data_waiters.load(SeqCst) > 0 {
            ring.data_futex.fetch_add(1, SeqCst);
            futex_wake_all(&ring.data_futex);
        }
        producer.next_seq = seq + 1;
        producer.published += 1;
        Ok(())
    }
}

/// A producer's view of its own counters, for reports.
#[derive(Debug, Clone, Copy)]
pub struct ProducerCounters {
    pub published: u64,
    pub dropped: u64,
}
