//! Consumer and group membership: join, leave, reaping dead consumers, adopting the runs
//! they left behind, and the producer's scan of what consumers still pin (spec §5, §7).
//!
//! Everything that changes membership runs under the segment's flock, so membership
//! changes never race each other; the hot paths only read the atomics they need.

use super::error::AttachError;
use super::layout::*;
use super::liveness::ProcessId;
use super::segment::{name_bytes, name_from_bytes, unix_ns, valid_name, MembershipLock, Segment};
use super::sets::{Deal, MAX_SETS};
use std::sync::atomic::AtomicU8;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};

/// Where a consumer sits in the tables.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seat {
    pub entry: usize,
    pub group: usize,
}

/// Delivery and distribution asked for by a joining consumer.
#[derive(Debug, Clone)]
pub(crate) struct JoinRequest<'a> {
    pub group: Option<&'a str>,
    pub batch: u32,
    pub delivery: u32,
    /// `(set, sets)`: take only the runs dealt to that set (spec §5.9).
    pub set: Option<(u32, u32)>,
    /// A group of its own that nobody joins by name: a broadcast consumer, or a member
    /// of a set that sees every frame of it (mode `all`).
    pub solo: bool,
}

/// What every member of a named group must agree on: delivery, batch, sets and mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Settings {
    delivery: u32,
    batch: u32,
    sets: u32,
    solo: bool,
}

impl Settings {
    fn of(grp: &GroupEntry) -> Settings {
        Settings {
            delivery: grp.delivery.load(Relaxed),
            batch: grp.batch.load(Relaxed),
            sets: grp.sets.load(Relaxed),
            solo: grp.solo.load(Relaxed) != 0,
        }
    }

    fn describe(&self) -> String {
        let delivery = if self.delivery == DELIVERY_LOSSY {
            "lossy"
        } else {
            "lossless"
        };
        let batch = self.batch;
        match (self.sets, self.solo) {
            (0, _) => format!("{delivery} with batch {batch}"),
            (sets, true) => format!(
                "{delivery} with batch {batch} in {sets} sets, each member seeing every frame of its set"
            ),
            (sets, false) => format!(
                "{delivery} with batch {batch} in {sets} sets, each shared by its members"
            ),
        }
    }
}

/// The runs group `grp` is owed (spec §5.9).
fn deal_of(grp: &GroupEntry) -> Deal {
    let sets = grp.sets.load(Relaxed);
    let set = (sets > 0).then(|| (grp.set.load(Relaxed), sets));
    Deal::new(grp.batch.load(Relaxed), set)
}

/// Registers the calling process as a consumer.
pub(crate) fn join(seg: &Segment, req: &JoinRequest<'_>) -> Result<Seat, AttachError> {
    if req.batch == 0 {
        return Err(AttachError::BadBatch(req.batch));
    }
    if let Some(name) = req.group {
        if !valid_name(name) {
            return Err(AttachError::BadGroup(super::error::shown(name)));
        }
    }
    if let Some((set, sets)) = req.set {
        if sets == 0 || sets > MAX_SETS || set >= sets {
            return Err(AttachError::BadSet { set, sets });
        }
    }
    let _lock = locked(seg);
    reap_locked(seg);
    let h = seg.header();
    let entry = (0..MAX_CONSUMERS)
        .find(|&i| seg.consumer(i).state.load(Relaxed) == ENTRY_FREE)
        .ok_or_else(|| AttachError::TableFull {
            name: seg.name().into(),
            max: MAX_CONSUMERS,
        })?;
    let asked = Settings {
        delivery: req.delivery,
        batch: req.batch,
        sets: req.set.map_or(0, |(_, sets)| sets),
        solo: req.solo,
    };
    // Every group entry of that name (one per set, or one per member that sees all of
    // its set) must have been formed with the same settings, or the sets would not
    // partition the stream alike.
    if let Some(name) = req.group {
        let named = (0..MAX_GROUPS)
            .map(|g| seg.group(g))
            .filter(|grp| grp.state.load(Relaxed) == GROUP_ACTIVE && group_name(grp) == name);
        for grp in named {
            let has = Settings::of(grp);
            if has != asked {
                return Err(AttachError::GroupMismatch {
                    name: seg.name().into(),
                    group: name.into(),
                    has: has.describe(),
                    asked: asked.describe(),
                });
            }
        }
    }
    // A solo consumer forms its own group; the others join their group's (set's) entry.
    let existing = req.group.filter(|_| !req.solo).and_then(|name| {
        (0..MAX_GROUPS).find(|&g| {
            let grp = seg.group(g);
            grp.state.load(Relaxed) == GROUP_ACTIVE
                && group_name(grp) == name
                && req.set.is_none_or(|(set, _)| grp.set.load(Relaxed) == set)
        })
    });
    let group = match existing {
        Some(g) => g,
        None => form_group(seg, req)?,
    };
    let me = ProcessId::current();
    let e = seg.consumer(entry);
    e.pin.store(NO_PIN, SeqCst);
    e.progress.store(0, Relaxed);
    e.run_start.store(0, Relaxed);
    e.run_end.store(0, Relaxed);
    e.received_base.store(0, Relaxed);
    e.missed_base.store(0, Relaxed);
    e.pid.store(me.pid, Relaxed);
    e.start_time.store(me.start_time, Relaxed);
    e.group.store(group as u32, Relaxed);
    e.delivery.store(req.delivery, Relaxed);
    e.attached_unix_ns.store(unix_ns(), Relaxed);
    // The entry counts from here on; a crash before this store leaves a free entry.
    e.state.store(ENTRY_ACTIVE, SeqCst);
    // Counts members and sets our lossy_mask bit (SeqCst: the producer's lossy check
    // must see it before our first pin, spec §6.3).
    normalize(seg, group);
    h.membership_gen.fetch_add(1, SeqCst);
    Ok(Seat { entry, group })
}

/// Creates a group that is owed every frame published from now on.
fn form_group(seg: &Segment, req: &JoinRequest<'_>) -> Result<usize, AttachError> {
    let h = seg.header();
    let g = (0..MAX_GROUPS)
        .find(|&g| seg.group(g).state.load(Relaxed) == GROUP_FREE)
        .ok_or_else(|| AttachError::GroupsFull {
            name: seg.name().into(),
            max: MAX_GROUPS,
        })?;
    let grp = seg.group(g);
    let deal = Deal::new(req.batch, req.set);
    // A provisional floor no higher than anything the producer may still write over...
    let provisional = h.head.load(SeqCst);
    grp.claim_next.store(provisional, SeqCst);
    grp.start_seq.store(provisional, Relaxed);
    grp.gen.store(0, Relaxed);
    grp.orphans.store(0, Relaxed);
    grp.delivery.store(req.delivery, Relaxed);
    grp.batch.store(req.batch, Relaxed);
    let (set, sets) = req.set.unwrap_or((0, 0));
    grp.sets.store(sets, Relaxed);
    grp.set.store(set, Relaxed);
    grp.solo.store(u32::from(req.solo), Relaxed);
    grp.members.store(0, Relaxed);
    grp.journal_len.store(0, Relaxed);
    grp.retired_received.store(0, Relaxed);
    grp.retired_missed.store(0, Relaxed);
    // Empty for a broadcast consumer's private group; a solo set member's keeps its
    // group's name for `streamd rings`, and `solo` keeps others from joining it.
    write_name(grp, req.group.unwrap_or(""));
    // SYNC: the settings above (sets, set, batch, ...) are visible to whoever loads
    // `state` ACTIVE with Acquire (inspectors; joiners hold the lock anyway).
    grp.state.store(GROUP_ACTIVE, SeqCst);
    // ...then make the producer rescan, and start at a head read after that: at most
    // the one frame being written when the producer last checked the generation was
    // placed without this group's floor, and it is at `start` or later (spec §5.2).
    // A set starts claiming at its first run from there (§5.9).
    h.membership_gen.fetch_add(1, SeqCst);
    let start = h.head.load(SeqCst);
    grp.start_seq.store(start, Relaxed);
    grp.claim_next.store(deal.first_from(start), SeqCst);
    Ok(g)
}

fn write_name(grp: &GroupEntry, name: &str) {
    for (cell, b) in grp.name.iter().zip(name_bytes(name)) {
        cell.store(b, Relaxed);
    }
}

fn group_name(grp: &GroupEntry) -> String {
    name_from_bytes(&grp.name.each_ref().map(|b: &AtomicU8| b.load(Relaxed)))
}

/// Takes the membership lock and finishes a change its previous holder died in.
fn locked(seg: &Segment) -> MembershipLock<'_> {
    let lock = seg.lock_membership();
    for g in 0..MAX_GROUPS {
        let grp = seg.group(g);
        if grp.gen.load(SeqCst) % 2 == 1 {
            apply_journal(seg, g);
            grp.gen.fetch_add(1, SeqCst);
        }
    }
    lock
}

/// A claimed run and the counters before it, as the consumer keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    pub start: u64,
    pub end: u64,
    pub received_base: u64,
    pub missed_base: u64,
}

/// What an entry says about its owner's position and counts, derived from the words
/// the owner writes (spec §3.2).
#[derive(Debug, Clone, Copy)]
struct EntryView {
    next: u64,
    run_end: u64,
    received: u64,
    missed: u64,
}

/// Derives an entry's view. The run and base words are loaded before `progress`, with
/// Acquire. SYNC: pairs with the Release stores of those words, which come after
/// `progress = 0`, in the broadcast claim (`Consumer::claim_run`) and in `apply_journal`:
/// a reader that sees a new run or base sees its `progress` reset, so a live entry's
/// `next` and counts may read low for a moment (a dip), never high (a double). Read after
/// its owner died, the entry is exact: per frame the owner stores one word, `progress`.
fn view(e: &ConsumerEntry) -> EntryView {
    let received_base = e.received_base.load(Acquire);
    let missed_base = e.missed_base.load(Acquire);
    let run_start = e.run_start.load(Acquire);
    let run_end = e.run_end.load(Acquire);
    // SYNC: pairs with the Release store in `Consumer::store_progress`: a frame counted
    // here was published by a head this thread can no longer read below (`groups`).
    let (done, missed_in_run) = progress_parts(e.progress.load(Acquire));
    EntryView {
        next: run_start + u64::from(done),
        run_end,
        received: received_base + u64::from(done - missed_in_run.min(done)),
        missed: missed_base + u64::from(missed_in_run),
    }
}

/// Final values of one entry, for a journal.
#[derive(Debug, Clone, Copy)]
struct EntryValues {
    entry: usize,
    state: u32,
    pin: u64,
    run: Run,
}

/// Performs a membership change of group `g` crash-consistently (lock held): the final
/// values go to the group's journal, `gen` turns odd (the commit point, and the signal
/// for the producer's scan to retry), the values are applied, `gen` turns even. If the
/// holder dies in between, the next `locked` re-applies the journal (spec §7.6).
fn commit(seg: &Segment, g: usize, writes: &[EntryValues], retired: (u64, u64), claim_next: u64) {
    let grp = seg.group(g);
    for (slot, w) in grp.journal.iter().zip(writes) {
        slot.entry.store(w.entry as u32, Relaxed);
        slot.state.store(w.state, Relaxed);
        slot.pin.store(w.pin, Relaxed);
        slot.run_start.store(w.run.start, Relaxed);
        slot.run_end.store(w.run.end, Relaxed);
        slot.received_base.store(w.run.received_base, Relaxed);
        slot.missed_base.store(w.run.missed_base, Relaxed);
    }
    grp.journal_len.store(writes.len() as u32, Relaxed);
    grp.journal_retired_received.store(retired.0, Relaxed);
    grp.journal_retired_missed.store(retired.1, Relaxed);
    grp.journal_claim_next.store(claim_next, Relaxed);
    // SYNC: the journal words above, then `gen` odd (SeqCst, so a release): pairs with
    // the SeqCst load of `gen` in `locked` by whoever takes the lock after us, which then
    // reads the journal we wrote if we die before turning `gen` even.
    grp.gen.fetch_add(1, SeqCst);
    apply_journal(seg, g);
    grp.gen.fetch_add(1, SeqCst);
}

/// Writes the journal's values (idempotent), then recomputes what is derived.
fn apply_journal(seg: &Segment, g: usize) {
    let grp = seg.group(g);
    let len = (grp.journal_len.load(Relaxed) as usize).min(grp.journal.len());
    for w in &grp.journal[..len] {
        let index = w.entry.load(Relaxed) as usize;
        if index >= MAX_CONSUMERS {
            continue;
        }
        let e = seg.consumer(index);
        e.pin.store(w.pin.load(Relaxed), SeqCst);
        // Every journaled run starts fresh: nothing of it done yet. Progress first, then
        // the run and bases with Release. SYNC: pairs with the Acquire loads in `view`,
        // which load those words before `progress`: a count may dip, never double.
        e.progress.store(0, Relaxed);
        e.run_start.store(w.run_start.load(Relaxed), Release);
        e.run_end.store(w.run_end.load(Relaxed), Release);
        e.received_base
            .store(w.received_base.load(Relaxed), Release);
        e.missed_base.store(w.missed_base.load(Relaxed), Release);
        e.state.store(w.state.load(Relaxed), SeqCst);
    }
    // The group's counters after its entries: a retired member's counts leave its entry
    // before they reach `retired_*`. SYNC: Release, paired with the Acquire loads in
    // `groups`, which read `retired_*` before the entries: a member's counts are summed
    // at most once (a dip, never a double).
    grp.retired_received
        .store(grp.journal_retired_received.load(Relaxed), Release);
    grp.retired_missed
        .store(grp.journal_retired_missed.load(Relaxed), Release);
    grp.claim_next
        .store(grp.journal_claim_next.load(Relaxed), SeqCst);
    normalize(seg, g);
}

/// Recomputes group `g`'s member and orphan counts and the ring's lossy mask from the
/// entries; dissolves a group left without active members (lock held, idempotent).
fn normalize(seg: &Segment, g: usize) {
    let grp = seg.group(g);
    let of_group = |i: usize, state: u32| {
        let e = seg.consumer(i);
        e.state.load(Relaxed) == state && e.group.load(Relaxed) as usize == g
    };
    let members = (0..MAX_CONSUMERS)
        .filter(|&i| of_group(i, ENTRY_ACTIVE))
        .count() as u32;
    if members == 0 && grp.state.load(Relaxed) == GROUP_ACTIVE {
        // A group with no consumer holds nothing back; its orphans go with it.
        for i in (0..MAX_CONSUMERS).filter(|&i| of_group(i, ENTRY_ORPHAN)) {
            seg.consumer(i).pin.store(NO_PIN, SeqCst);
            seg.consumer(i).state.store(ENTRY_FREE, SeqCst);
        }
        grp.state.store(GROUP_FREE, SeqCst);
    }
    let orphans = (0..MAX_CONSUMERS)
        .filter(|&i| of_group(i, ENTRY_ORPHAN))
        .count() as u32;
    grp.members.store(members, SeqCst);
    grp.orphans.store(orphans, SeqCst);
    let lossy = (0..MAX_CONSUMERS)
        .filter(|&i| {
            let e = seg.consumer(i);
            e.state.load(Relaxed) == ENTRY_ACTIVE && e.delivery.load(Relaxed) == DELIVERY_LOSSY
        })
        .fold(0u64, |mask, i| mask | 1 << i);
    seg.header().lossy_mask.store(lossy, SeqCst);
    // Wake a producer that may be waiting on something this change released.
    let h = seg.header();
    h.space_futex.fetch_add(1, SeqCst);
    super::wait::futex_wake_all(&h.space_futex);
}

fn retired_counts(grp: &GroupEntry) -> (u64, u64) {
    (
        grp.retired_received.load(Relaxed),
        grp.retired_missed.load(Relaxed),
    )
}

/// Deregisters a consumer; a run it claimed but did not finish goes to a live member.
pub(crate) fn leave(seg: &Segment, seat: Seat) {
    let _lock = locked(seg);
    retire(seg, seat.entry);
}

/// Reaps consumers whose process is gone. Returns how many were reaped.
pub(crate) fn reap(seg: &Segment) -> usize {
    let _lock = locked(seg);
    reap_locked(seg)
}

fn reap_locked(seg: &Segment) -> usize {
    let mut reaped = 0;
    for i in 0..MAX_CONSUMERS {
        let e = seg.consumer(i);
        if e.state.load(Relaxed) != ENTRY_ACTIVE {
            continue;
        }
        let owner = ProcessId {
            pid: e.pid.load(Relaxed),
            start_time: e.start_time.load(Relaxed),
        };
        if !owner.is_alive() {
            retire(seg, i);
            seg.header().consumers_reaped.fetch_add(1, Relaxed);
            reaped += 1;
        }
    }
    reaped
}

/// Removes an ACTIVE entry (lock held): it becomes an orphan holding its unfinished run
/// if the group lives on, else it is freed (spec §7.2).
fn retire(seg: &Segment, entry: usize) {
    let h = seg.header();
    let e = seg.consumer(entry);
    let g = e.group.load(Relaxed) as usize;
    let grp = seg.group(g);
    let others = (0..MAX_CONSUMERS).filter(|&i| i != entry).any(|i| {
        let o = seg.consumer(i);
        o.state.load(Relaxed) == ENTRY_ACTIVE && o.group.load(Relaxed) as usize == g
    });
    let v = view(e);
    // Frames past the end of a finished stream are owed to nobody. SYNC: pairs with the
    // Release store of producer_state in `end_stream`; end_seq is visible.
    let finished = h.producer_state.load(Acquire) == PRODUCER_FINISHED;
    let owed_end = if finished {
        v.run_end.min(h.end_seq.load(Relaxed))
    } else {
        v.run_end
    };
    let orphan = others && v.next < owed_end;
    let lossless = e.delivery.load(Relaxed) == DELIVERY_LOSSLESS;
    let values = EntryValues {
        entry,
        state: if orphan { ENTRY_ORPHAN } else { ENTRY_FREE },
        // A lossless orphan pins its run; a lossy one holds nothing.
        pin: if orphan && lossless { v.next } else { NO_PIN },
        run: Run {
            start: v.next,
            end: v.run_end,
            received_base: 0,
            missed_base: 0,
        },
    };
    let (r, m) = retired_counts(grp);
    commit(
        seg,
        g,
        &[values],
        (r + v.received, m + v.missed),
        grp.claim_next.load(SeqCst),
    );
}

/// Claims the next run for a member of a named group, under the lock and journaled, so
/// a member killed at any instant leaves its run recorded (spec §5.3). An orphaned run
/// comes first; a lossy group more than a ring behind skips to the newest frame (§5.5).
pub(crate) fn claim_shared_run(seg: &Segment, seat: Seat, slots: u64) -> Run {
    let _lock = locked(seg);
    if let Some(run) = adopt_locked(seg, seat, None) {
        return run;
    }
    let grp = seg.group(seat.group);
    let me = seg.consumer(seat.entry);
    let v = view(me);
    let lossy = me.delivery.load(Relaxed) == DELIVERY_LOSSY;
    let deal = deal_of(grp);
    let mut start = grp.claim_next.load(SeqCst);
    let mut missed_base = v.missed;
    if lossy {
        // SYNC: pairs with the head store in `publish`; only the count is used.
        let head = seg.header().head.load(Acquire);
        if start + slots < head {
            // To the newest frame owed (of the set, with sets), counting what it skips.
            if let Some(newest) = deal.newest_below(head).filter(|&n| n > start) {
                missed_base += deal.owed(start, newest);
                start = newest;
            }
        }
    }
    let end = deal.run_end(start);
    let run = Run {
        start,
        end,
        received_base: v.received,
        missed_base,
    };
    let mine = EntryValues {
        entry: seat.entry,
        state: ENTRY_ACTIVE,
        pin: if lossy { NO_PIN } else { start },
        run,
    };
    commit(
        seg,
        seat.group,
        &[mine],
        retired_counts(grp),
        deal.next_claim(start),
    );
    run
}

/// Extends a holding member's run (spec §5.8): when nobody claimed since its run ended
/// (`claim_next == run_end`) and no orphan waits, one journaled change gives it the run
/// from its watermark to the end of the next run, keeping every held frame pinned and
/// owed to it. `None`: it must commit first and claim as usual (always, in a group of
/// several sets, whose next run is never contiguous: spec §5.9).
pub(crate) fn extend_held_run(seg: &Segment, seat: Seat, run_end: u64) -> Option<Run> {
    let _lock = locked(seg);
    let grp = seg.group(seat.group);
    if grp.orphans.load(Relaxed) > 0 || grp.claim_next.load(SeqCst) != run_end {
        return None;
    }
    let v = view(seg.consumer(seat.entry));
    let deal = deal_of(grp);
    let run = Run {
        start: v.next,
        end: deal.run_end(run_end),
        received_base: v.received,
        missed_base: v.missed,
    };
    let mine = EntryValues {
        entry: seat.entry,
        state: ENTRY_ACTIVE,
        pin: v.next,
        run,
    };
    commit(
        seg,
        seat.group,
        &[mine],
        retired_counts(grp),
        deal.next_claim(run_end),
    );
    Some(run)
}

/// Takes over an orphaned run of the seat's group, if there is one. With `waiting_at`,
/// the member is waiting for that sequence with its own run unread; it then adopts only
/// an older run, and hands its own run to the orphan entry in exchange, so the oldest
/// owed frames, which pin the producer, are always taken first (spec §7.3).
pub(crate) fn adopt(seg: &Segment, seat: Seat, waiting_at: Option<(u64, u64)>) -> Option<Run> {
    let _lock = locked(seg);
    adopt_locked(seg, seat, waiting_at)
}

fn adopt_locked(seg: &Segment, seat: Seat, waiting_at: Option<(u64, u64)>) -> Option<Run> {
    let grp = seg.group(seat.group);
    let orphan = (0..MAX_CONSUMERS).find(|&i| {
        let o = seg.consumer(i);
        o.state.load(Relaxed) == ENTRY_ORPHAN
            && o.group.load(Relaxed) as usize == seat.group
            && waiting_at.is_none_or(|(next, _)| view(o).next < next)
    })?;
    let o = view(seg.consumer(orphan));
    let me = seg.consumer(seat.entry);
    let mine_now = view(me);
    let lossless = me.delivery.load(Relaxed) == DELIVERY_LOSSLESS;
    let run = Run {
        start: o.next,
        end: o.run_end,
        received_base: mine_now.received,
        missed_base: mine_now.missed,
    };
    let mine = EntryValues {
        entry: seat.entry,
        state: ENTRY_ACTIVE,
        pin: if lossless { o.next } else { NO_PIN },
        run,
    };
    let theirs = match waiting_at {
        Some((next, end)) if next < end => EntryValues {
            entry: orphan,
            state: ENTRY_ORPHAN,
            pin: if lossless { next } else { NO_PIN },
            run: Run {
                start: next,
                end,
                received_base: 0,
                missed_base: 0,
            },
        },
        _ => EntryValues {
            entry: orphan,
            state: ENTRY_FREE,
            pin: NO_PIN,
            run: Run {
                start: 0,
                end: 0,
                received_base: 0,
                missed_base: 0,
            },
        },
    };
    commit(
        seg,
        seat.group,
        &[mine, theirs],
        retired_counts(grp),
        grp.claim_next.load(SeqCst),
    );
    Some(run)
}

/// What a member that reached the end of the stream should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndCheck {
    /// A departed member's run was adopted: read it.
    Adopted(Run),
    /// A live mate still owes frames below the end: stay, it may die and leave them.
    MatesOwe,
    /// The group is done with the stream.
    Ended,
}

/// Decides, under the lock so no change is half-applied, whether the seat's group is
/// done with a stream that ended at `end` (spec §5.6).
pub(crate) fn end_check(seg: &Segment, seat: Seat, end: u64) -> EndCheck {
    let _lock = locked(seg);
    reap_locked(seg);
    // Our own run lies past the end of the stream: nothing to hand back.
    if let Some(run) = adopt_locked(seg, seat, None) {
        return EndCheck::Adopted(run);
    }
    let mates_owe = (0..MAX_CONSUMERS).filter(|&i| i != seat.entry).any(|i| {
        let e = seg.consumer(i);
        let v = view(e);
        e.state.load(Relaxed) == ENTRY_ACTIVE
            && e.group.load(Relaxed) as usize == seat.group
            && v.next < v.run_end.min(end)
    });
    if mates_owe {
        EndCheck::MatesOwe
    } else {
        EndCheck::Ended
    }
}

/// Lowest sequence any lossless group still needs: the producer may write sequence `s`
/// only while `s < floor + slot_count` (spec §6.1). `u64::MAX` when nothing pins.
pub(crate) fn lossless_floor(seg: &Segment) -> u64 {
    (0..MAX_GROUPS)
        .filter(|&g| is_lossless(seg.group(g)))
        .map(|g| group_floor(seg, g))
        .min()
        .unwrap_or(u64::MAX)
}

fn is_lossless(grp: &GroupEntry) -> bool {
    grp.state.load(SeqCst) == GROUP_ACTIVE && grp.delivery.load(Relaxed) == DELIVERY_LOSSLESS
}

/// Lowest sequence lossless group `g` still needs: every frame below it was claimed and
/// finished by a member (spec §6.1).
fn group_floor(seg: &Segment, g: usize) -> u64 {
    let grp = seg.group(g);
    loop {
        let before = grp.gen.load(SeqCst);
        if before % 2 == 1 {
            // A change is in flight: wait for its holder, or finish it if the holder
            // died (taking the lock does both), then scan again.
            drop(locked(seg));
            continue;
        }
        // SYNC: claim_next before the pins: a member stores its pin before its claim
        // CAS, so a claim we see implies we see the pin (spec §6.1).
        let mut f = grp.claim_next.load(SeqCst);
        for i in 0..MAX_CONSUMERS {
            let e = seg.consumer(i);
            if e.state.load(SeqCst) != ENTRY_FREE && e.group.load(Relaxed) as usize == g {
                f = f.min(e.pin.load(SeqCst));
            }
        }
        if grp.gen.load(SeqCst) == before {
            return f;
        }
    }
}

/// The floor of the lossless named group `name` (spec §5.10): one group entry that
/// takes every frame (no sets). `None` while the ring has no such group.
pub(crate) fn floor_of(seg: &Segment, name: &str) -> Option<u64> {
    if !valid_name(name) {
        return None;
    }
    let wanted = name_bytes(name);
    let mut named = (0..MAX_GROUPS).filter(|&g| {
        let grp = seg.group(g);
        is_lossless(grp)
            && grp.sets.load(Relaxed) == 0
            && grp
                .name
                .iter()
                .zip(wanted)
                .all(|(c, b)| c.load(Relaxed) == b)
    });
    match (named.next(), named.next()) {
        (Some(g), None) => Some(group_floor(seg, g)),
        _ => None,
    }
}

/// Number of active consumers.
pub(crate) fn active_consumers(seg: &Segment) -> usize {
    // SYNC: pairs with the SeqCst store of `state` that ends `join`; only the count is used.
    (0..MAX_CONSUMERS)
        .filter(|&i| seg.consumer(i).state.load(Acquire) == ENTRY_ACTIVE)
        .count()
}

/// Snapshot of one group for status output.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GroupSnapshot {
    pub name: String,
    pub delivery: &'static str,
    pub batch: u32,
    /// The distributor set this group takes (spec §5.9); `None`: every frame.
    pub set: Option<SetSnapshot>,
    pub members: u32,
    pub orphaned_runs: u32,
    pub published: u64,
    pub delivered: u64,
    pub missed: u64,
    pub in_flight: u64,
    pub consumers: Vec<ConsumerSnapshot>,
}

/// Which set of its group a group entry takes, and how its members divide it.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct SetSnapshot {
    pub index: u32,
    pub sets: u32,
    /// `all`: this entry is one member's, which sees every frame of the set; `one`: its
    /// members share the set's runs.
    pub mode: &'static str,
}

/// Snapshot of one consumer for status output.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConsumerSnapshot {
    pub pid: u32,
    pub alive: bool,
    pub received: u64,
    pub missed: u64,
}

/// Reads every active group's counters. `published = delivered + missed + in_flight`
/// holds by construction; counters are read without stopping anyone, so a snapshot of
/// a running ring may be a few frames apart between fields, but `published` is read last
/// and is never below `delivered + missed`.
pub(crate) fn groups(seg: &Segment) -> Vec<GroupSnapshot> {
    let mut out = Vec::new();
    for g in 0..MAX_GROUPS {
        let grp = seg.group(g);
        // SYNC: pairs with the SeqCst store of `state` in `form_group`: the group's
        // settings, stored before it, are visible.
        if grp.state.load(Acquire) != GROUP_ACTIVE {
            continue;
        }
        let mut consumers = Vec::new();
        // SYNC: pairs with the Release stores in `apply_journal`: counts that moved here
        // from a retired entry are no longer in that entry when we read it below.
        let (mut delivered, mut missed) = (
            grp.retired_received.load(Acquire),
            grp.retired_missed.load(Acquire),
        );
        for i in 0..MAX_CONSUMERS {
            let e = seg.consumer(i);
            // SYNC: pairs with the SeqCst store of `state` that ends `join`: the identity
            // words stored before it are visible.
            if e.state.load(Acquire) == ENTRY_ACTIVE && e.group.load(Relaxed) as usize == g {
                let v = view(e);
                let (r, m) = (v.received, v.missed);
                delivered += r;
                missed += m;
                let pid = ProcessId {
                    pid: e.pid.load(Relaxed),
                    start_time: e.start_time.load(Relaxed),
                };
                consumers.push(ConsumerSnapshot {
                    pid: pid.pid,
                    alive: pid.is_alive(),
                    received: r,
                    missed: m,
                });
            }
        }
        // Read after the counts, so `published` covers every frame they count: a counted
        // frame's `progress` store (Release) follows its reader's Acquire load of a head
        // past it, and our Acquire loads of `progress` then `head` see at least that head.
        // Only the frames of its set are published to a set (spec §12).
        let head = seg.header().head.load(Acquire);
        let published = deal_of(grp).owed(grp.start_seq.load(Relaxed), head);
        let sets = grp.sets.load(Relaxed);
        out.push(GroupSnapshot {
            name: group_name(grp),
            delivery: if grp.delivery.load(Relaxed) == DELIVERY_LOSSY {
                "lossy"
            } else {
                "lossless"
            },
            batch: grp.batch.load(Relaxed),
            set: (sets > 0).then(|| SetSnapshot {
                index: grp.set.load(Relaxed),
                sets,
                mode: if grp.solo.load(Relaxed) != 0 {
                    "all"
                } else {
                    "one"
                },
            }),
            members: grp.members.load(Relaxed),
            orphaned_runs: grp.orphans.load(Relaxed),
            published,
            delivered,
            missed,
            in_flight: published.saturating_sub(delivered + missed),
            consumers,
        });
    }
    out
}
