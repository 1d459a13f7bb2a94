//! Byte layout of a ring segment, exactly as `ringbuf-spec/SPEC.md` §3 gives it.
//!
//! Every structure is `#[repr(C)]`, little-endian, and made only of atomics (padding
//! included), so any bit pattern is a valid value, another language can map the same
//! bytes, and a `&RingHeader` stays sound while other processes store into any of its
//! words: every byte is behind an `UnsafeCell`. Offsets, never pointers. Producer-written
//! and consumer-written words sit on separate 128-byte lines. The `const` asserts at the end
//! keep this file and the spec in step: change one and the build tells you to change
//! the other.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8};

/// `b"STRMDRNG"` read as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"STRMDRNG");
/// Layout version this build reads and writes (2: distributor sets, spec §5.9).
pub const VERSION: u32 = 2;
/// Separation of words written by different processes (two x86 lines, one Apple line).
pub const LINE: usize = 128;
/// Payloads and slot headers are aligned to this so a slot can feed O_DIRECT I/O.
pub const PAGE: usize = 4096;
/// Bytes reserved for the ring header; the consumer table starts here.
pub const HEADER_SIZE: usize = 1024;
/// Consumers and groups a ring can hold; consumers are tracked in a 64-bit mask.
pub const MAX_CONSUMERS: usize = 64;
pub const MAX_GROUPS: usize = 32;
/// Bytes before each payload: the stamp line, the frame header and the attribute area.
pub const SLOT_HEADER_SIZE: usize = PAGE;
/// Offset of the frame header inside a slot header.
pub const FRAME_HEADER_OFFSET: usize = 64;
/// The frame header and the attribute area: the part of a slot header the producer
/// writes as bytes (the stamp before it is only ever touched as an atomic).
pub const FRAME_AREA_SIZE: usize = SLOT_HEADER_SIZE - FRAME_HEADER_OFFSET;
/// Offset and capacity of the attribute area inside a slot header.
pub const ATTR_OFFSET: usize = 128;
pub const ATTR_CAPACITY: usize = SLOT_HEADER_SIZE - ATTR_OFFSET;
/// Longest ring or group name, in bytes.
pub const NAME_CAPACITY: usize = 32;

/// "Nothing pinned" in a consumer's `pin`.
pub const NO_PIN: u64 = u64::MAX;

/// Slot stamps: which sequence a slot holds and whether it is complete (0, as creation
/// leaves it, is an empty slot).
pub const fn stamp_writing(seq: u64) -> u64 {
    2 * seq + 1
}
pub const fn stamp_published(seq: u64) -> u64 {
    2 * seq + 2
}

/// `producer_state` values.
pub const PRODUCER_RUNNING: u32 = 1;
pub const PRODUCER_FINISHED: u32 = 2;

/// `full_policy` values.
pub const POLICY_BLOCK: u32 = 0;
pub const POLICY_DROP_NEWEST: u32 = 1;

/// `delivery` values.
pub const DELIVERY_LOSSLESS: u32 = 0;
pub const DELIVERY_LOSSY: u32 = 1;

/// Consumer entry `state` values.
pub const ENTRY_FREE: u32 = 0;
pub const ENTRY_ACTIVE: u32 = 1;
/// The owner is gone but left a claimed run that a live group member will adopt.
pub const ENTRY_ORPHAN: u32 = 2;

/// Group `state` values.
pub const GROUP_FREE: u32 = 0;
pub const GROUP_ACTIVE: u32 = 1;

/// `flags` bits of the ring header.
pub const RING_FLAG_HUGE_PAGES: u32 = 1;

/// The ring header at offset 0.
#[repr(C, align(128))]
pub struct RingHeader {
    // Line 0: stored once by the creator (Relaxed) before `version`, never changed
    // afterwards. Atomics even so: an attacher maps and reads the header while its
    // creator may still be writing it (spec §2.3), and only atomic loads of words being
    // stored are defined.
    pub magic: AtomicU64,
    /// Stored last at creation with Release; attachers load it with Acquire first.
    pub version: AtomicU32,
    pub header_size: AtomicU32,
    pub segment_size: AtomicU64,
    pub slot_count: AtomicU32,
    pub max_consumers: AtomicU32,
    pub max_groups: AtomicU32,
    pub slot_header_size: AtomicU32,
    pub slot_stride: AtomicU64,
    pub payload_capacity: AtomicU64,
    pub consumers_offset: AtomicU64,
    pub groups_offset: AtomicU64,
    pub slots_offset: AtomicU64,
    pub full_policy: AtomicU32,
    pub flags: AtomicU32,
    pub created_unix_ns: AtomicU64,
    pub name: [AtomicU8; NAME_CAPACITY],

    // Line 1: producer identity and state; written by the producer, rarely.
    pub producer_pid: AtomicU32,
    pub producer_state: AtomicU32,
    /// Kernel start time of the producer (field 22 of /proc/PID/stat), against pid reuse.
    pub producer_start_time: AtomicU64,
    /// Final `head`, valid once `producer_state` is FINISHED.
    pub end_seq: AtomicU64,
    _pad1: [AtomicU8; LINE - 24],

    // Line 2: the producer's hot words.
    /// Number of frames published; frame `seq` lives in slot `seq % slot_count`.
    pub head: AtomicU64,
    /// Frames not published because the ring was full under `drop-newest`.
    pub dropped: AtomicU64,
    /// Futex word consumers sleep on; bumped after a publish when `data_waiters > 0`.
    pub data_futex: AtomicU32,
    _pad2: [AtomicU8; LINE - 20],

    // Line 3: consumer-written words the producer reads.
    pub data_waiters: AtomicU32,
    /// Futex word the producer sleeps on when the ring is full.
    pub space_futex: AtomicU32,
    pub producer_waiting: AtomicU32,
    _pad3: [AtomicU8; LINE - 12],

    // Line 4: membership, changed only under the segment's flock.
    /// Bumped after every join, so the producer recomputes its cached limit.
    pub membership_gen: AtomicU64,
    /// Bit i set: consumer entry i is active and lossy.
    pub lossy_mask: AtomicU64,
    /// Consumers found dead and reaped since creation.
    pub consumers_reaped: AtomicU64,
    _pad4: [AtomicU8; LINE - 24],
}

/// One consumer entry; `MAX_CONSUMERS` of them start at `consumers_offset`.
///
/// Per frame, the owner stores only `progress` (then `pin`), one word each, so a consumer
/// killed between any two of its stores leaves an entry whose derived values (the next
/// sequence, the counters: from `run_start`, `progress` and the bases) are exact. The
/// reaper reads it only after finding the owner dead, under the membership lock. A new
/// run changes several words: `progress = 0` first, then the run and the bases with
/// Release; live readers (status, a mate's end check) load those with Acquire before
/// `progress`, so what they derive may dip for a moment, never double (spec §4).
#[repr(C, align(128))]
pub struct ConsumerEntry {
    // Line A: written by the owning consumer (and by journaled changes under the lock).
    /// Lossless: lowest sequence not yet released (the producer must not overwrite it or
    /// anything after it). Lossy: the one sequence being read, or NO_PIN.
    pub pin: AtomicU64,
    /// Low 32 bits: frames of the run done (released or missed); high 32: of those, missed.
    pub progress: AtomicU64,
    /// First sequence of the claimed run; `next = run_start + done`.
    pub run_start: AtomicU64,
    /// End (exclusive) of the claimed run.
    pub run_end: AtomicU64,
    /// Frames received before this run.
    pub received_base: AtomicU64,
    /// Frames missed before this run.
    pub missed_base: AtomicU64,
    _pad_a: [AtomicU8; LINE - 48],

    // Line B: identity, written under the segment's flock.
    pub state: AtomicU32,
    pub pid: AtomicU32,
    pub start_time: AtomicU64,
    pub group: AtomicU32,
    pub delivery: AtomicU32,
    pub attached_unix_ns: AtomicU64,
    _pad_b: [AtomicU8; LINE - 32],
}

/// Packs a run's progress word.
pub const fn progress(done: u32, missed: u32) -> u64 {
    (missed as u64) << 32 | done as u64
}

/// Unpacks a progress word into (done, missed).
pub const fn progress_parts(word: u64) -> (u32, u32) {
    (word as u32, (word >> 32) as u32)
}

/// One consumer group; `MAX_GROUPS` of them start at `groups_offset`.
#[repr(C, align(128))]
pub struct GroupEntry {
    // Line A: the producer reads these on its slow path.
    /// Next sequence no member has claimed yet.
    pub claim_next: AtomicU64,
    /// Odd while a journaled membership change is being applied (spec §7.6).
    pub gen: AtomicU64,
    /// Orphan entries waiting for adoption.
    pub orphans: AtomicU32,
    _pad_a: [AtomicU8; LINE - 20],

    // Line B: written under the segment's flock.
    pub state: AtomicU32,
    pub delivery: AtomicU32,
    pub batch: AtomicU32,
    pub members: AtomicU32,
    /// `head` when the group was formed: the group is owed every frame from here on.
    pub start_seq: AtomicU64,
    /// Counters of members that have left or died.
    pub retired_received: AtomicU64,
    pub retired_missed: AtomicU64,
    /// Empty for a solo (broadcast) consumer's private group.
    pub name: [AtomicU8; NAME_CAPACITY],
    /// Distributor sets (spec §5.9): 0 = none, the group is owed every frame; else the
    /// number of sets its group's runs are dealt round, and `set` (< `sets`) the one it
    /// takes.
    pub sets: AtomicU32,
    pub set: AtomicU32,
    /// 1: the group belongs to one consumer and nobody joins it by name (a broadcast
    /// consumer, or a set member that sees every frame of its set); 0: joined by name.
    pub solo: AtomicU32,
    _pad_b: [AtomicU8; LINE - 84],

    // Lines C and D: redo journal of the membership change in progress (spec §7.6),
    // written under the flock; valid while `gen` is odd.
    pub journal: [JournalWrite; 2],
    pub journal_len: AtomicU32,
    _pad_c0: AtomicU32,
    pub journal_retired_received: AtomicU64,
    pub journal_retired_missed: AtomicU64,
    pub journal_claim_next: AtomicU64,
    _pad_c: [AtomicU8; 2 * LINE - 2 * 48 - 32],
}

/// Final values of one consumer entry in a membership journal.
#[repr(C)]
pub struct JournalWrite {
    pub entry: AtomicU32,
    pub state: AtomicU32,
    pub pin: AtomicU64,
    pub run_start: AtomicU64,
    pub run_end: AtomicU64,
    pub received_base: AtomicU64,
    pub missed_base: AtomicU64,
}

/// Offsets of the frame header fields inside a slot header (little-endian).
pub mod frame_field {
    pub const FRAME_ID: usize = 64;
    pub const TIMESTAMP_NS: usize = 72;
    pub const PAYLOAD_LEN: usize = 80;
    pub const DTYPE: usize = 88;
    pub const NDIMS: usize = 90;
    pub const FLAGS: usize = 92;
    pub const DIMS: usize = 96;
    pub const ATTR_LEN: usize = 112;
    pub const MAX_DIMS: usize = 4;
}

/// Computed placement of every region of a segment with the given parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub slot_count: u32,
    pub payload_capacity: u64,
    pub slot_stride: u64,
    pub consumers_offset: u64,
    pub groups_offset: u64,
    pub slots_offset: u64,
    pub segment_size: u64,
}

impl Geometry {
    /// Places the regions for `slot_count` slots of at least `payload_bytes` each.
    /// Returns `None` when the sizes overflow.
    pub fn new(slot_count: u32, payload_bytes: u64) -> Option<Geometry> {
        let payload_capacity = round_up(payload_bytes.max(1), PAGE as u64)?;
        let slot_stride = payload_capacity.checked_add(SLOT_HEADER_SIZE as u64)?;
        let consumers_offset = HEADER_SIZE as u64;
        let groups_offset =
            consumers_offset + (MAX_CONSUMERS * std::mem::size_of::<ConsumerEntry>()) as u64;
        let tables_end = groups_offset + (MAX_GROUPS * std::mem::size_of::<GroupEntry>()) as u64;
        let slots_offset = round_up(tables_end, PAGE as u64)?;
        let segment_size = slot_stride
            .checked_mul(u64::from(slot_count))?
            .checked_add(slots_offset)?;
        Some(Geometry {
            slot_count,
            payload_capacity,
            slot_stride,
            consumers_offset,
            groups_offset,
            slots_offset,
            segment_size,
        })
    }

    pub fn slot_offset(&self, index: u32) -> u64 {
        self.slots_offset + u64::from(index) * self.slot_stride
    }
}

fn round_up(value: u64, to: u64) -> Option<u64> {
    Some(value.checked_add(to - 1)? / to * to)
}

const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(
        cfg!(target_endian = "little"),
        "the ring layout is little-endian"
    );
    assert!(size_of::<RingHeader>() == 5 * LINE);
    assert!(size_of::<RingHeader>() <= HEADER_SIZE);
    assert!(offset_of!(RingHeader, version) == 8);
    assert!(offset_of!(RingHeader, header_size) == 12);
    assert!(offset_of!(RingHeader, segment_size) == 16);
    assert!(offset_of!(RingHeader, slot_count) == 24);
    assert!(offset_of!(RingHeader, max_consumers) == 28);
    assert!(offset_of!(RingHeader, max_groups) == 32);
    assert!(offset_of!(RingHeader, slot_header_size) == 36);
    assert!(offset_of!(RingHeader, slot_stride) == 40);
    assert!(offset_of!(RingHeader, payload_capacity) == 48);
    assert!(offset_of!(RingHeader, consumers_offset) == 56);
    assert!(offset_of!(RingHeader, groups_offset) == 64);
    assert!(offset_of!(RingHeader, slots_offset) == 72);
    assert!(offset_of!(RingHeader, full_policy) == 80);
    assert!(offset_of!(RingHeader, flags) == 84);
    assert!(offset_of!(RingHeader, created_unix_ns) == 88);
    assert!(offset_of!(RingHeader, name) == 96);
    assert!(offset_of!(RingHeader, producer_pid) == 128);
    assert!(offset_of!(RingHeader, producer_state) == 132);
    assert!(offset_of!(RingHeader, producer_start_time) == 136);
    assert!(offset_of!(RingHeader, end_seq) == 144);
    assert!(offset_of!(RingHeader, head) == 256);
    assert!(offset_of!(RingHeader, dropped) == 264);
    assert!(offset_of!(RingHeader, data_futex) == 272);
    assert!(offset_of!(RingHeader, data_waiters) == 384);
    assert!(offset_of!(RingHeader, space_futex) == 388);
    assert!(offset_of!(RingHeader, producer_waiting) == 392);
    assert!(offset_of!(RingHeader, membership_gen) == 512);
    assert!(offset_of!(RingHeader, lossy_mask) == 520);
    assert!(offset_of!(RingHeader, consumers_reaped) == 528);

    assert!(size_of::<ConsumerEntry>() == 2 * LINE);
    assert!(offset_of!(ConsumerEntry, pin) == 0);
    assert!(offset_of!(ConsumerEntry, progress) == 8);
    assert!(offset_of!(ConsumerEntry, run_start) == 16);
    assert!(offset_of!(ConsumerEntry, run_end) == 24);
    assert!(offset_of!(ConsumerEntry, received_base) == 32);
    assert!(offset_of!(ConsumerEntry, missed_base) == 40);
    assert!(offset_of!(ConsumerEntry, state) == 128);
    assert!(offset_of!(ConsumerEntry, pid) == 132);
    assert!(offset_of!(ConsumerEntry, start_time) == 136);
    assert!(offset_of!(ConsumerEntry, group) == 144);
    assert!(offset_of!(ConsumerEntry, delivery) == 148);
    assert!(offset_of!(ConsumerEntry, attached_unix_ns) == 152);

    assert!(size_of::<GroupEntry>() == 4 * LINE);
    assert!(size_of::<JournalWrite>() == 48);
    assert!(offset_of!(GroupEntry, claim_next) == 0);
    assert!(offset_of!(GroupEntry, gen) == 8);
    assert!(offset_of!(GroupEntry, orphans) == 16);
    assert!(offset_of!(GroupEntry, state) == 128);
    assert!(offset_of!(GroupEntry, delivery) == 132);
    assert!(offset_of!(GroupEntry, batch) == 136);
    assert!(offset_of!(GroupEntry, members) == 140);
    assert!(offset_of!(GroupEntry, start_seq) == 144);
    assert!(offset_of!(GroupEntry, retired_received) == 152);
    assert!(offset_of!(GroupEntry, retired_missed) == 160);
    assert!(offset_of!(GroupEntry, name) == 168);
    assert!(offset_of!(GroupEntry, sets) == 200);
    assert!(offset_of!(GroupEntry, set) == 204);
    assert!(offset_of!(GroupEntry, solo) == 208);
    assert!(offset_of!(GroupEntry, journal) == 256);
    assert!(offset_of!(GroupEntry, journal_len) == 352);
    assert!(offset_of!(GroupEntry, journal_retired_received) == 360);
    assert!(offset_of!(GroupEntry, journal_retired_missed) == 368);
    assert!(offset_of!(GroupEntry, journal_claim_next) == 376);

    assert!(MAX_CONSUMERS <= 64, "lossy_mask has 64 bits");
    assert!(frame_field::FRAME_ID == FRAME_HEADER_OFFSET);
    assert!(frame_field::ATTR_LEN + 4 <= ATTR_OFFSET);
    assert!(frame_field::DIMS + 4 * frame_field::MAX_DIMS == frame_field::ATTR_LEN);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_places_page_aligned_payloads() {
        let g = Geometry::new(8, 100).unwrap();
        assert_eq!(g.payload_capacity, 4096);
        assert_eq!(g.slot_stride, 8192);
        assert_eq!(g.consumers_offset, 1024);
        assert_eq!(g.groups_offset, 1024 + 64 * 256);
        assert_eq!(g.groups_offset + 32 * 512, 33792);
        assert_eq!(g.slots_offset % PAGE as u64, 0);
        assert_eq!(g.slots_offset, 36864);
        for i in 0..8 {
            assert_eq!(
                (g.slot_offset(i) + SLOT_HEADER_SIZE as u64) % PAGE as u64,
                0
            );
        }
        assert_eq!(g.segment_size, g.slots_offset + 8 * 8192);
    }

    #[test]
    fn geometry_rejects_overflow() {
        assert!(Geometry::new(u32::MAX, u64::MAX / 2).is_none());
    }
}
