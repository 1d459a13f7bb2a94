//! The lock-free single-producer / multi-consumer frame ring in `/dev/shm`.
//!
//! `ringbuf-spec/SPEC.md` is the normative description of the bytes and the protocol;
//! this module implements it. It knows nothing of processors, pipelines or processes
//! beyond the pids it stores for liveness.
//!
//! ```no_run
//! use streamd_shm::ring::*;
//! let opts = RingOptions { name: "raw".into(), slots: 64, slot_bytes: 512 * 512, full_policy: FullPolicy::Block };
//! let (mut producer, _stale) = Producer::create(&opts)?;
//! let mut slot = producer.claim()?;
//! slot.payload_mut()[..4].copy_from_slice(&[1, 2, 3, 4]);
//! slot.publish(&FrameMeta { frame_id: 0, timestamp_ns: 0, dtype: Dtype::U8, dims: &[2, 2], flags: 0 })?;
//!
//! let mut consumer = Consumer::attach("raw", &ConsumerOptions { batch: 1, ..Default::default() })?;
//! // consumer.recv() now waits for frames published after it attached.
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod consumer;
mod copy;
mod error;
mod frame;
mod layout;
mod liveness;
mod membership;
mod producer;
mod segment;
mod sets;
mod wait;

pub use consumer::{
    Consumer, ConsumerCounters, ConsumerOptions, Delivery, Detached, Frame, GroupSet, SetMode,
    LIVENESS_INTERVAL,
};
pub use copy::{copy_to_slot, stream_rows};
pub use error::{AttachError, ClaimError, CreateError, PublishError, RecvError};
pub use frame::{
    attributes, AttrValue, AttributeArea, Dims, Dtype, FrameError, FrameHeader, FLAG_END_OF_STREAM,
};
pub use liveness::ProcessId;
pub use membership::{ConsumerSnapshot, GroupSnapshot, SetSnapshot};
pub use producer::{
    FrameMeta, FullPolicy, HeldSlot, OwnedRing, Producer, ProducerCounters, RingOptions,
    SlotWriter, REAP_INTERVAL,
};
use segment::Segment;
pub use segment::{list_names, segment_path, StaleSegment};
pub use sets::MAX_SETS;
pub use wait::WaitMode;

/// Longest ring or group name, in bytes (spec §2.1).
pub const MAX_NAME_LEN: usize = layout::NAME_CAPACITY - 1;
/// Bytes of attributes a frame carries at most (spec §3.6).
pub const ATTR_CAPACITY: usize = layout::ATTR_CAPACITY;
/// Consumer groups a ring holds (spec §3.3).
pub const MAX_GROUPS: usize = layout::MAX_GROUPS;

/// Bytes of a ring segment of `slots` slots of `slot_bytes` (spec §3.1), `None` when
/// the sizes overflow.
pub fn segment_size(slots: u32, slot_bytes: u64) -> Option<u64> {
    layout::Geometry::new(slots, slot_bytes).map(|g| g.segment_size)
}

/// A read-only look at a ring for status tools (`streamd rings`, the dashboard).
pub struct RingInspector {
    segment: Segment,
}

/// Everything `streamd rings` shows about one ring.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RingSnapshot {
    pub name: String,
    pub path: String,
    pub slots: u32,
    pub slot_bytes: u64,
    pub segment_bytes: u64,
    pub huge_pages: bool,
    pub full_policy: &'static str,
    pub producer_pid: u32,
    /// `running`, `finished` or `dead` (dead = stale: `streamd clean` removes it).
    pub producer: &'static str,
    pub published: u64,
    pub dropped: u64,
    pub consumers_reaped: u64,
    pub groups: Vec<GroupSnapshot>,
}

impl RingInspector {
    /// Opens ring `name` without joining it.
    pub fn open(name: &str) -> Result<RingInspector, AttachError> {
        Ok(RingInspector {
            segment: Segment::open(name, std::time::Duration::ZERO)?,
        })
    }

    /// True when the producer finished or is gone: nobody will publish again.
    pub fn is_stale(&self) -> bool {
        self.producer_state() != "running"
    }

    /// `running`, `finished` or `dead`.
    fn producer_state(&self) -> &'static str {
        // SYNC: pairs with the Release store in `end_stream`; only the state is used.
        if self
            .segment
            .header()
            .producer_state
            .load(std::sync::atomic::Ordering::Acquire)
            == layout::PRODUCER_FINISHED
        {
            "finished"
        } else if self.segment.producer().is_alive() {
            "running"
        } else {
            "dead"
        }
    }

    pub fn snapshot(&self) -> RingSnapshot {
        use std::sync::atomic::Ordering::{Acquire, Relaxed};
        let seg = &self.segment;
        let h = seg.header();
        let producer = seg.producer();
        let state = self.producer_state();
        RingSnapshot {
            name: seg.name().to_string(),
            path: seg.path().display().to_string(),
            slots: seg.geometry().slot_count,
            slot_bytes: seg.geometry().payload_capacity,
            segment_bytes: seg.geometry().segment_size,
            huge_pages: h.flags.load(Relaxed) & layout::RING_FLAG_HUGE_PAGES != 0,
            full_policy: if h.full_policy.load(Relaxed) == layout::POLICY_DROP_NEWEST {
                "drop-newest"
            } else {
                "block"
            },
            producer_pid: producer.pid,
            producer: state,
            // SYNC: pairs with the head store in `publish`; only the count is used.
            published: h.head.load(Acquire),
            dropped: h.dropped.load(Relaxed),
            consumers_reaped: h.consumers_reaped.load(Relaxed),
            groups: membership::groups(seg),
        }
    }

    /// Removes the segment's name (mapped processes keep their mapping).
    pub fn remove(self) {
        self.segment.unlink();
    }
}
