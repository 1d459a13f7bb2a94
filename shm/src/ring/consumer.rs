//! A consumer of a ring: alone (broadcast), or as a member of a group that shares the
//! stream in runs of `batch` consecutive frames, or of one set of a group (distributor
//! sets: the runs are dealt round the sets); `lossless` or `lossy`.

use super::error::{AttachError, RecvError};
use super::frame::{attr_bytes, attributes, decode_header, AttrValue, FrameError, FrameHeader};
use super::layout::*;
use super::membership::{
    adopt, claim_shared_run, end_check, extend_held_run, floor_of, join, leave, reap, EndCheck,
    JoinRequest, Run, Seat,
};
use super::segment::Segment;
use super::sets::Deal;
use super::wait::{futex_wait, futex_wake_all, WaitMode};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Whether a consumer may be skipped forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// Never misses a published frame; the producer waits for (or drops at the source
    /// because of) this consumer.
    #[default]
    Lossless,
    /// Never holds the producer back beyond the frame it is reading; frames it falls
    /// behind on are counted in `missed`.
    Lossy,
}

impl std::str::FromStr for Delivery {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "lossless" => Ok(Delivery::Lossless),
            "lossy" => Ok(Delivery::Lossy),
            other => Err(format!(
                "unknown delivery '{other}' (use lossless or lossy)"
            )),
        }
    }
}

/// One set of a group (spec §5.9, PvaPy's distributor sets): the runs of `batch` frames,
/// aligned to sequence numbers, are dealt round `sets` sets, run `r` (sequences
/// `r·batch … r·batch + batch − 1`) to set `r mod sets`; the consumer takes set `index`'s.
/// Strict round-robin among `W` consumers is `W` sets of one: consumer `k` takes set `k`
/// and gets runs `k, k+W, k+2W, …`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupSet {
    /// The set taken, `0 ≤ index < sets`.
    pub index: u32,
    /// How many sets the group's runs are dealt round, 1 to [`MAX_SETS`](super::MAX_SETS);
    /// every consumer of the group gives the same.
    pub sets: u32,
    pub mode: SetMode,
}

/// How the consumers of one set divide its frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SetMode {
    /// Each one sees every frame of the set (PvaPy's `mode:all`, its default for a set):
    /// cooperating applications that must all see the same frames.
    #[default]
    All,
    /// They share the set's runs, each run to one of them, first-free (PvaPy's
    /// `mode:one`): the workers of one pipeline stage.
    One,
}

impl std::str::FromStr for SetMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "all" => Ok(SetMode::All),
            "one" => Ok(SetMode::One),
            other => Err(format!("unknown set mode '{other}' (use all or one)")),
        }
    }
}

/// How to attach.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Share the stream with the other members of this group; `None` = see every frame.
    pub group: Option<String>,
    /// Consecutive frames a group member takes at a time.
    pub batch: u32,
    /// Take only one set's runs of the group (needs `group`).
    pub set: Option<GroupSet>,
    pub delivery: Delivery,
    pub wait: WaitMode,
    /// How long to wait for the ring to appear.
    pub attach_timeout: Duration,
    /// Hold frames until [`Consumer::commit`] (spec §5.8): a dropped frame is read but
    /// not released, so frames not yet made durable are re-delivered after a crash (to a
    /// mate, in a named group) and frames still in use stay in their slots. Lossless only.
    pub hold: bool,
}

impl Default for ConsumerOptions {
    /// A solo lossless consumer, one frame at a time, that does not wait for its ring.
    fn default() -> Self {
        ConsumerOptions {
            group: None,
            batch: 1,
            set: None,
            delivery: Delivery::Lossless,
            wait: WaitMode::default(),
            attach_timeout: Duration::ZERO,
            hold: false,
        }
    }
}

/// How often an idle consumer checks that the producer lives and reaps dead group
/// mates; bounds the detection of a dead producer (spec §7.4).
pub const LIVENESS_INTERVAL: Duration = Duration::from_millis(100);
/// The highest sequence a sound ring can reach: at 10 million frames a second it takes
/// 14,000 years. A larger `head`, `end_seq` or claim position means damage, and
/// arithmetic near `u64::MAX` would wrap.
pub const MAX_SEQUENCE: u64 = 1 << 62;
/// Futex sleep slice; wake-ups are normally immediate, this only bounds a missed one.
const SLEEP_SLICE: Duration = Duration::from_millis(10);

/// Counters of one consumer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerCounters {
    pub received: u64,
    pub missed: u64,
}

/// Outcome of waiting for a sequence.
#[derive(Debug, PartialEq, Eq)]
enum Ready {
    Published,
    /// An orphaned run was adopted; the position moved.
    RunChanged,
    /// The deadline passed first.
    TimedOut,
    /// A holding consumer must commit before it can go on (spec §5.8).
    MustCommit,
}

/// The consumer end of a ring. Dropping it detaches.
pub struct Consumer {
    segment: Segment,
    seat: Seat,
    delivery: Delivery,
    /// Named groups claim under the lock (crash-safe runs); a solo consumer (broadcast,
    /// or a set member that sees all of its set) claims lock-free, since its group ends
    /// with it.
    shared: bool,
    /// The runs this consumer's group is owed.
    deal: Deal,
    wait: WaitMode,
    run: Run,
    /// Frames of the run done (released or missed) and, of those, missed.
    done: u32,
    missed_in_run: u32,
    /// Holding (spec §5.8): the most frames held before a commit is required, and the
    /// next sequence to read (≥ the watermark `next_seq`). `None`: every frame is
    /// released when its guard drops, and the read position is `next_seq`.
    hold: Option<Hold>,
    interrupt: Option<Arc<AtomicBool>>,
    last_check: Instant,
    /// The sequence of a frame given up by [`Frame::detach`] and not yet released; while
    /// it is set, nothing else is read (a consumer that does not hold keeps one frame).
    detached: Option<u64>,
    /// Tells this consumer's detached frames from another's.
    id: u64,
}

/// Numbers consumers for [`Detached`] tokens.
static CONSUMER_IDS: AtomicU64 = AtomicU64::new(1);

/// A holding consumer's read position and window.
#[derive(Debug, Clone, Copy)]
struct Hold {
    window: u64,
    read: u64,
}

impl Consumer {
    /// Attaches to ring `name`, waiting up to `options.attach_timeout` for it to appear.
    pub fn attach(name: &str, options: &ConsumerOptions) -> Result<Consumer, AttachError> {
        if options.hold && options.delivery != Delivery::Lossless {
            return Err(AttachError::HoldNeedsLossless);
        }
        if options.set.is_some() && options.group.is_none() {
            return Err(AttachError::SetWithoutGroup);
        }
        let set = options.set.map(|s| (s.index, s.sets));
        // A group of its own: a broadcast consumer, or a set member that sees it all.
        let solo = options
            .set
            .map_or(options.group.is_none(), |s| s.mode == SetMode::All);
        let segment = Segment::open(name, options.attach_timeout)?;
        // The producer cannot write past the watermark plus a ring: a holder that kept a
        // whole ring would wait for a frame that can never come.
        let window = (u64::from(segment.geometry().slot_count) / 2).max(1);
        let delivery = match options.delivery {
            Delivery::Lossless => DELIVERY_LOSSLESS,
            Delivery::Lossy => DELIVERY_LOSSY,
        };
        let seat = join(
            &segment,
            &JoinRequest {
                group: options.group.as_deref(),
                batch: options.batch,
                delivery,
                set,
                solo,
            },
        )?;
        Ok(Consumer {
            segment,
            seat,
            delivery: options.delivery,
            shared: !solo,
            deal: Deal::new(options.batch, set),
            wait: options.wait,
            run: Run {
                start: 0,
                end: 0,
                received_base: 0,
                missed_base: 0,
            },
            done: 0,
            missed_in_run: 0,
            hold: options.hold.then_some(Hold { window, read: 0 }),
            interrupt: None,
            last_check: Instant::now(),
            detached: None,
            id: CONSUMER_IDS.fetch_add(1, Relaxed),
        })
    }

    /// Makes waits return `Interrupted` once `flag` is set (for example by SIGINT).
    pub fn set_interrupt(&mut self, flag: Arc<AtomicBool>) {
        self.interrupt = Some(flag);
    }

    pub fn counters(&self) -> ConsumerCounters {
        ConsumerCounters {
            received: self.run.received_base + u64::from(self.done - self.missed_in_run),
            missed: self.run.missed_base + u64::from(self.missed_in_run),
        }
    }

    fn entry(&self) -> &ConsumerEntry {
        self.segment.consumer(self.seat.entry)
    }

    /// The watermark: frames below it are released (or missed).
    fn next_seq(&self) -> u64 {
        self.run.start + u64::from(self.done)
    }

    /// The next sequence to hand out.
    fn read_seq(&self) -> u64 {
        self.hold.map_or_else(|| self.next_seq(), |h| h.read)
    }

    /// Frames read but not yet committed (always 0 unless holding).
    pub fn held(&self) -> u64 {
        self.read_seq() - self.next_seq()
    }

    /// A new run, with nothing of it read unless frames were held across (an extension).
    fn start_run(&mut self, run: Run) {
        let held = self.held();
        self.run = run;
        self.done = 0;
        self.missed_in_run = 0;
        // Only an extension (spec §5.8) starts a run while frames are held, at the
        // watermark: the read position stays. Any other run is read from its start.
        if let Some(h) = self.hold.as_mut() {
            h.read = run.start + held;
        }
    }

    /// Releases every frame read so far (spec §5.8): one progress store, then the pin,
    /// then a wake-up. A holding consumer calls this once what it read is durable; for
    /// one that does not hold, it does nothing.
    pub fn commit(&mut self) {
        self.commit_below(self.read_seq());
    }

    /// Releases the held frames below sequence `seq` and keeps the newer ones (spec §5.8,
    /// a partial commit): for a reader whose frames stay in use for different times (the
    /// Python bindings keep a frame while any view of it lives), which releases the
    /// prefix nobody uses any more.
    pub fn commit_below(&mut self, seq: u64) {
        let upto = seq.min(self.read_seq());
        if upto > self.next_seq() {
            self.done += (upto - self.next_seq()) as u32;
            self.store_progress();
        }
    }

    /// Whether this consumer has read everything its stream will ever bring: the producer
    /// finished (or died) and nothing at or after the read position was published. A
    /// holder that cannot commit yet uses this to tell the end from a full window.
    pub fn read_everything(&self) -> bool {
        let header = self.segment.header();
        // SYNC: pairs with the Release store of producer_state in `end_stream`; end_seq is
        // visible. The head load pairs with the head store in `publish` (a count only).
        let published = if header.producer_state.load(Acquire) == PRODUCER_FINISHED {
            header.end_seq.load(Relaxed)
        } else if !self.segment.producer().is_alive() {
            header.head.load(Acquire)
        } else {
            return false;
        };
        self.read_seq() >= published
    }

    /// Waits for and returns the next frame owed to this consumer. The frame stays
    /// valid, and its slot reserved, until the returned guard is dropped.
    pub fn recv(&mut self) -> Result<Frame<'_>, RecvError> {
        self.next_frame(None)
            .map(|frame| frame.expect("a wait without deadline ends with a frame or an error"))
    }

    /// Like [`recv`](Self::recv), but gives up after `timeout` with `Ok(None)`; the
    /// consumer's place is kept for the next call. Lets a loop over several rings, or
    /// one that must show a heartbeat, wait without blocking forever.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Frame<'_>>, RecvError> {
        self.next_frame(Some(Instant::now() + timeout))
    }

    fn next_frame(&mut self, deadline: Option<Instant>) -> Result<Option<Frame<'_>>, RecvError> {
        if let Some(seq) = self.detached {
            return Err(RecvError::FrameDetached { seq });
        }
        loop {
            if self.read_seq() >= self.run.end {
                if self.held() == 0 {
                    self.claim_run()?;
                } else {
                    let run = extend_held_run(&self.segment, self.seat, self.run.end)
                        .ok_or(RecvError::MustCommit)?;
                    self.start_run(run);
                }
            }
            if self.hold.is_some_and(|h| self.held() >= h.window) {
                return Err(RecvError::MustCommit);
            }
            let seq = self.read_seq();
            match self.wait_published(seq, deadline)? {
                Ready::RunChanged => continue,
                Ready::TimedOut => return Ok(None),
                Ready::MustCommit => return Err(RecvError::MustCommit),
                Ready::Published => {}
            }
            let slots = u64::from(self.segment.geometry().slot_count);
            let slot = (seq % slots) as u32;
            let stamp = self.segment.stamp(slot);
            match self.delivery {
                Delivery::Lossless => {
                    // SYNC: pairs with the producer's Release stamp store; our pin (≤ seq)
                    // keeps the slot from being rewritten (spec §6.1).
                    let found = stamp.load(Acquire);
                    if found != stamp_published(seq) {
                        // Skipped and counted as missed, so the next call goes on and
                        // the accounting still holds.
                        self.missed_in_run += 1;
                        self.finish_frame();
                        return Err(RecvError::Corrupt {
                            seq,
                            what: format!("stamp {found} instead of {}", stamp_published(seq)),
                        });
                    }
                }
                Delivery::Lossy => {
                    // SYNC: SeqCst pin store, then SeqCst stamp load; the producer stores
                    // the WRITING stamp, then loads our pin. One of us sees the other: either
                    // we see the slot is gone, or the producer waits for us (spec §6.3).
                    self.entry().pin.store(seq, SeqCst);
                    if stamp.load(SeqCst) != stamp_published(seq) {
                        self.missed_in_run += 1;
                        self.finish_frame();
                        continue;
                    }
                }
            }
            return self.open_frame(seq, slot).map(Some);
        }
    }

    fn open_frame(&mut self, seq: u64, slot: u32) -> Result<Frame<'_>, RecvError> {
        let capacity = self.segment.geometry().payload_capacity;
        // SAFETY: the slot holds `seq`, published (stamp checked in `next_frame`), and our
        // pin keeps the producer from rewriting it until this frame is released.
        let area = unsafe { self.segment.frame_area(slot) };
        match decode_header(area, capacity) {
            Ok(header) => Ok(Frame {
                consumer: self,
                slot,
                seq,
                header,
                detaching: false,
            }),
            Err(e) => {
                self.missed_in_run += 1;
                self.finish_frame();
                Err(RecvError::Corrupt {
                    seq,
                    what: e.to_string(),
                })
            }
        }
    }

    /// Takes the next run: under the lock for a named group, lock-free for a solo one.
    fn claim_run(&mut self) -> Result<(), RecvError> {
        let slots = u64::from(self.segment.geometry().slot_count);
        let counters = self.counters();
        let grp = self.segment.group(self.seat.group);
        // Checked before any arithmetic on it: a damaged claim position would wrap.
        self.plausible("the group's claim position", grp.claim_next.load(Relaxed))?;
        if self.shared {
            let run = claim_shared_run(&self.segment, self.seat, slots);
            self.start_run(run);
            return Ok(());
        }
        let entry = self.segment.consumer(self.seat.entry);
        let mut missed_base = counters.missed;
        let start = loop {
            let start =
                self.plausible("the group's claim position", grp.claim_next.load(SeqCst))?;
            if self.delivery == Delivery::Lossy {
                // More than a ring behind: jump to the newest frame owed, not to the oldest
                // one still held, whose slot the producer needs next (spec §5.5). SYNC:
                // pairs with the head store in `publish`; only the count is used here.
                let head = self.plausible("head", self.segment.header().head.load(Acquire))?;
                let newest = self.deal.newest_below(head).filter(|&n| n > start);
                if let Some(newest) = newest.filter(|_| start + slots < head) {
                    if grp
                        .claim_next
                        .compare_exchange(start, newest, SeqCst, SeqCst)
                        .is_ok()
                    {
                        missed_base += self.deal.owed(start, newest);
                    }
                    continue;
                }
            } else {
                // SYNC: the pin goes to `start` before the claim CAS; the producer loads
                // claim_next before pins, so it never sees the claim without the pin (§6.1).
                entry.pin.store(start, SeqCst);
            }
            // A set steps over the other sets' runs (spec §5.9).
            if grp
                .claim_next
                .compare_exchange(start, self.deal.next_claim(start), SeqCst, SeqCst)
                .is_ok()
            {
                break start;
            }
        };
        let run = Run {
            start,
            end: self.deal.run_end(start),
            received_base: counters.received,
            missed_base,
        };
        // Progress first, then the bases and the run with Release. SYNC: pairs with the
        // Acquire loads in `membership::view`, which load those words before `progress`:
        // a reader that sees the new run sees `progress = 0`, so it may see a count dip,
        // never a double. (If we die in between, our private group ends with us.)
        entry.progress.store(0, Relaxed);
        entry.received_base.store(run.received_base, Release);
        entry.missed_base.store(run.missed_base, Release);
        entry.run_start.store(run.start, Release);
        entry.run_end.store(run.end, Release);
        self.start_run(run);
        Ok(())
    }

    /// `value` when a sound ring can hold it (at most [`MAX_SEQUENCE`]), else `Damaged`.
    fn plausible(&self, what: &str, value: u64) -> Result<u64, RecvError> {
        if value <= MAX_SEQUENCE {
            Ok(value)
        } else {
            Err(RecvError::Damaged {
                ring: self.segment.name().to_string(),
                what: format!("{what} is {value}, beyond any real stream"),
            })
        }
    }

    /// Waits until `seq` is published. Ends with EndOfStream or ProducerDied once the
    /// producer is gone and `seq` never will be, unless a departed member's run is
    /// adopted first (then the caller starts over with that run).
    fn wait_published(&mut self, seq: u64, deadline: Option<Instant>) -> Result<Ready, RecvError> {
        let header = self.segment.header();
        loop {
            // SYNC: pairs with the producer's SeqCst store of head after the Release stamp.
            let head = self.plausible("head", header.head.load(Acquire))?;
            if head > seq {
                return Ok(Ready::Published);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(Ready::TimedOut);
            }
            if self.interrupt.as_ref().is_some_and(|f| f.load(Relaxed)) {
                return Err(RecvError::Interrupted);
            }
            // SYNC: pairs with the Release store in `end_stream`; end_seq, and the head it
            // was taken from, are visible.
            if header.producer_state.load(Acquire) == PRODUCER_FINISHED {
                let published = header.end_seq.load(Relaxed);
                if published > header.head.load(Acquire) {
                    return Err(RecvError::Damaged {
                        ring: self.segment.name().to_string(),
                        what: format!(
                            "its end is at frame {published}, beyond the {} published",
                            header.head.load(Acquire)
                        ),
                    });
                }
                if seq >= published {
                    return self.end_of_run(published, RecvError::EndOfStream { published });
                }
            }
            if self.last_check.elapsed() >= LIVENESS_INTERVAL {
                self.last_check = Instant::now();
                let producer = self.segment.producer();
                if !producer.is_alive() && header.producer_state.load(Acquire) != PRODUCER_FINISHED
                {
                    // A dead producer never advances head again: what is below it is whole.
                    // SYNC: pairs with the head store in `publish`, as at the loop's top.
                    let published = header.head.load(Acquire);
                    if seq >= published {
                        return self.end_of_run(
                            published,
                            RecvError::ProducerDied {
                                pid: producer.pid,
                                published,
                            },
                        );
                    }
                    continue;
                }
                reap(&self.segment);
            }
            // A departed member's older run pins the ring below `seq`: take it first, or
            // the producer never gets to `seq` (spec §7.3). SYNC: pairs with the SeqCst
            // store in `membership::normalize`; `adopt` re-reads everything under the lock.
            if self.segment.group(self.seat.group).orphans.load(Acquire) > 0 {
                // A holder hands nothing back: it commits, then claims the orphan (§5.8).
                if self.held() > 0 {
                    return Ok(Ready::MustCommit);
                }
                if let Some(run) = adopt(&self.segment, self.seat, Some((seq, self.run.end))) {
                    self.start_run(run);
                    return Ok(Ready::RunChanged);
                }
            }
            match self.wait {
                WaitMode::Spin => std::hint::spin_loop(),
                WaitMode::Futex => {
                    header.data_waiters.fetch_add(1, SeqCst);
                    let word = header.data_futex.load(SeqCst);
                    // SYNC: waiter count up (SeqCst) before this head load; the producer
                    // stores head (SeqCst) before loading the count: no lost wake-up.
                    if header.head.load(SeqCst) <= seq
                        && header.producer_state.load(Acquire) != PRODUCER_FINISHED
                    {
                        let slice = deadline.map_or(SLEEP_SLICE, |d| {
                            d.saturating_duration_since(Instant::now()).min(SLEEP_SLICE)
                        });
                        futex_wait(&header.data_futex, word, slice);
                    }
                    header.data_waiters.fetch_sub(1, SeqCst);
                }
            }
        }
    }

    /// The stream ended at `published` for this run: take over a run a dead or departed
    /// mate left unfinished; while a live mate still owes frames below the end, stay (it
    /// may yet die and leave them to us); then report `end` (spec §5.6).
    fn end_of_run(&mut self, published: u64, end: RecvError) -> Result<Ready, RecvError> {
        if self.held() > 0 {
            return Ok(Ready::MustCommit);
        }
        match end_check(&self.segment, self.seat, published) {
            EndCheck::Adopted(run) => {
                self.start_run(run);
                Ok(Ready::RunChanged)
            }
            EndCheck::MatesOwe if !self.interrupt.as_ref().is_some_and(|f| f.load(Relaxed)) => {
                std::thread::sleep(SLEEP_SLICE);
                Ok(Ready::RunChanged)
            }
            EndCheck::MatesOwe => Err(RecvError::Interrupted),
            EndCheck::Ended => Err(end),
        }
    }

    /// Marks the current frame done (released or missed): one store of the progress
    /// word, then the pin, then a wake-up for a producer waiting for space.
    fn finish_frame(&mut self) {
        if let Some(h) = self.hold.as_mut() {
            // Read, not released: the watermark moves only in `commit`.
            h.read += 1;
            return;
        }
        self.done += 1;
        self.store_progress();
    }

    fn store_progress(&mut self) {
        let entry = self.segment.consumer(self.seat.entry);
        // One word per frame (then the pin): whichever of these stores a killed consumer
        // made, its entry derives exact counts. The pin below is what orders our reads of
        // the slot.
        // SYNC: Release pairs with the Acquire load in `membership::view`: a status reader
        // that counts this frame then reads a head at least as far as the one we read.
        entry
            .progress
            .store(progress(self.done, self.missed_in_run), Release);
        // SYNC: SeqCst pin store (our reads of the slot happen-before the producer's
        // rewrite, which loads this pin), then the SeqCst load of producer_waiting.
        let pin = if self.delivery == Delivery::Lossless {
            self.next_seq()
        } else {
            NO_PIN
        };
        entry.pin.store(pin, SeqCst);
        let header = self.segment.header();
        if header.producer_waiting.load(SeqCst) != 0 {
            header.space_futex.fetch_add(1, SeqCst);
            futex_wake_all(&header.space_futex);
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        leave(&self.segment, self.seat);
    }
}

/// A frame read in place. The slot stays reserved for this consumer until drop.
pub struct Frame<'a> {
    consumer: &'a mut Consumer,
    slot: u32,
    seq: u64,
    header: FrameHeader,
    /// Set by [`Frame::detach`]: the drop keeps the frame reserved.
    detaching: bool,
}

impl Frame<'_> {
    pub fn header(&self) -> &FrameHeader {
        &self.header
    }

    /// Frames the producer has published after this one: how far the reader lags.
    pub fn lag(&self) -> u64 {
        // SYNC: pairs with the head store in `publish`; only the count is used.
        let head = self.consumer.segment.header().head.load(Acquire);
        head.saturating_sub(self.seq + 1)
    }

    /// Position of this frame in the ring's stream (0, 1, 2, ...).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Whether the lossless group `group` of this ring has finished this frame: every
    /// member that took it is done with it (spec §5.10). `None` while the ring has no
    /// such group. What that group did with the frame happens-before a `true`.
    pub fn finished_by(&self, group: &str) -> Option<bool> {
        floor_of(&self.consumer.segment, group).map(|floor| floor > self.seq)
    }

    /// The pixels, `header().payload_len` bytes, page-aligned.
    pub fn payload(&self) -> &[u8] {
        let len = self.header.payload_len as usize;
        // SAFETY: the slot cannot be rewritten while this guard lives (our pin holds it);
        // payload_len ≤ payload_capacity (checked by decode_header).
        unsafe { self.consumer.segment.payload(self.slot, len) }
    }

    /// The attribute area as encoded (spec §4.3), for copying a frame's attributes
    /// unchanged into another ring.
    pub fn raw_attributes(&self) -> Result<&[u8], FrameError> {
        // SAFETY: the slot is reserved for this guard, as for `payload`.
        attr_bytes(unsafe { self.consumer.segment.frame_area(self.slot) })
    }

    /// The key/value attributes the producer attached.
    pub fn attributes(&self) -> impl Iterator<Item = Result<(&str, AttrValue<'_>), FrameError>> {
        let area = self.raw_attributes();
        let failed = area.as_ref().err().cloned();
        area.ok()
            .into_iter()
            .flat_map(attributes)
            .chain(failed.map(Err))
    }
}

impl Drop for Frame<'_> {
    fn drop(&mut self) {
        if self.detaching && self.consumer.hold.is_none() {
            self.consumer.detached = Some(self.seq);
        } else {
            self.consumer.finish_frame();
        }
    }
}

impl Frame<'_> {
    /// Gives up the guard but keeps the frame: for a reader that cannot hold a borrow
    /// (the Python bindings). A holding consumer has read the frame, which stays in its
    /// slot until a commit passes it; any other keeps the frame reserved, and reads
    /// nothing else, until [`Consumer::release`].
    pub fn detach(mut self) -> Detached {
        let detached = Detached {
            consumer: self.consumer.id,
            seq: self.seq,
            slot: self.slot,
            header: self.header.clone(),
        };
        self.detaching = true;
        detached
    }
}

/// A frame read by [`Frame::detach`]: a token that reaches its bytes through the consumer
/// while they are still reserved for it.
#[derive(Debug)]
pub struct Detached {
    consumer: u64,
    seq: u64,
    slot: u32,
    header: FrameHeader,
}

impl Detached {
    pub fn header(&self) -> &FrameHeader {
        &self.header
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }
}

impl Consumer {
    /// Whether `frame` is this consumer's and still reserved: detached and not released,
    /// or held and not committed.
    fn reserves(&self, frame: &Detached) -> bool {
        frame.consumer == self.id
            && match self.hold {
                Some(_) => self.next_seq() <= frame.seq && frame.seq < self.read_seq(),
                None => self.detached == Some(frame.seq),
            }
    }

    /// The pixels of a detached frame; `None` once its slot may be rewritten (released,
    /// committed) or when it is another consumer's.
    pub fn detached_payload(&self, frame: &Detached) -> Option<&[u8]> {
        if !self.reserves(frame) {
            return None;
        }
        let len = frame.header.payload_len as usize;
        // SAFETY: the slot cannot be rewritten while the frame is reserved for this
        // consumer (checked above), and the returned borrow of `self` keeps it so (release
        // and commit take `&mut self`); payload_len ≤ payload_capacity (decode_header).
        Some(unsafe { self.segment.payload(frame.slot, len) })
    }

    /// The attribute area of a detached frame (spec §4.3); `None` as for the payload.
    pub fn detached_attributes(&self, frame: &Detached) -> Option<Result<&[u8], FrameError>> {
        if !self.reserves(frame) {
            return None;
        }
        // SAFETY: the slot is reserved for this consumer, as for `detached_payload`.
        Some(attr_bytes(unsafe { self.segment.frame_area(frame.slot) }))
    }

    /// Releases a detached frame of a consumer that does not hold; a holder releases
    /// through [`commit_below`](Self::commit_below), and this does nothing for it.
    pub fn release(&mut self, frame: Detached) {
        if self.hold.is_none() && frame.consumer == self.id && self.detached == Some(frame.seq) {
            self.detached = None;
            self.finish_frame();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::{Dtype, FrameMeta, FullPolicy, Producer, RingOptions};

    fn ring(tag: &str, frames: u64) -> Producer {
        ring_of(tag, 8, frames)
    }

    fn ring_of(tag: &str, slots: u32, frames: u64) -> Producer {
        let (mut producer, _) = Producer::create(&RingOptions {
            name: format!("unit-{tag}-{}", std::process::id()),
            slots,
            slot_bytes: 64,
            full_policy: FullPolicy::Block,
        })
        .unwrap();
        publish(&mut producer, 0..frames);
        producer
    }

    /// Set `index` of `sets` of group `name`, in runs of `batch`.
    fn set_member(name: &str, batch: u32, index: u32, sets: u32, mode: SetMode) -> ConsumerOptions {
        ConsumerOptions {
            group: Some(name.into()),
            batch,
            set: Some(GroupSet { index, sets, mode }),
            ..ConsumerOptions::default()
        }
    }

    /// Frame ids until the end of the stream.
    fn drain(consumer: &mut Consumer) -> Vec<u64> {
        let mut ids = Vec::new();
        loop {
            match consumer.recv() {
                Ok(frame) => ids.push(frame.header().frame_id),
                Err(RecvError::EndOfStream { .. }) => return ids,
                Err(e) => panic!("unexpected {e}"),
            }
        }
    }

    /// Sequences below `end` whose run of `batch` is dealt to set `index` of `sets`.
    fn of_set(end: u64, batch: u64, index: u64, sets: u64) -> Vec<u64> {
        (0..end).filter(|s| s / batch % sets == index).collect()
    }

    /// Publishes 8 × 8 u8 frames with these ids.
    fn publish(producer: &mut Producer, ids: std::ops::Range<u64>) {
        for frame_id in ids {
            let slot = producer.claim().unwrap();
            let meta = FrameMeta {
                frame_id,
                timestamp_ns: 1,
                dtype: Dtype::U8,
                dims: &[8, 8],
                flags: 0,
            };
            slot.publish(&meta).unwrap();
        }
    }

    fn group(name: &str, delivery: Delivery) -> ConsumerOptions {
        ConsumerOptions {
            group: Some(name.into()),
            delivery,
            ..ConsumerOptions::default()
        }
    }

    /// Issue 15: a zeroed stamp made a lossless group member return `Corrupt` for the
    /// same frame forever. It is reported once, skipped and counted as missed.
    #[test]
    fn a_damaged_slot_is_reported_once_then_skipped_and_counted() {
        let mut producer = ring("stamp", 0);
        let mut consumer =
            Consumer::attach(producer.name(), &group("G", Delivery::Lossless)).unwrap();
        publish(&mut producer, 0..6);
        producer.segment().stamp(4).store(0, SeqCst);
        producer.finish();
        let (mut ids, mut damaged) = (Vec::new(), Vec::new());
        loop {
            match consumer.recv() {
                Ok(frame) => ids.push(frame.header().frame_id),
                Err(RecvError::Corrupt { seq, what }) => damaged.push((seq, what)),
                Err(RecvError::EndOfStream { published }) => {
                    assert_eq!(published, 6);
                    break;
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!(ids, [0, 1, 2, 3, 5]);
        assert_eq!(damaged, [(4, "stamp 0 instead of 10".to_string())]);
        assert_eq!(
            consumer.counters(),
            ConsumerCounters {
                received: 5,
                missed: 1
            }
        );
    }

    /// A frame is finished by a group once every member that took it has moved past it;
    /// a member still at a frame holds the group's floor there.
    #[test]
    fn a_frame_is_finished_by_a_group_once_its_members_are_past_it() {
        let mut producer = ring("gate", 0);
        let lossless = |name: &str| {
            Consumer::attach(producer.name(), &group(name, Delivery::Lossless)).unwrap()
        };
        let (mut first, mut second, mut gated) =
            (lossless("work"), lossless("work"), lossless("after"));
        let _metadata = lossless("work.m0");
        publish(&mut producer, 0..4);
        let frame = gated.recv().unwrap();
        assert_eq!(frame.seq(), 0);
        assert_eq!(frame.finished_by("nobody"), None);
        // Names are whole: "work" is neither its prefix "wor" nor "work.m0".
        assert_eq!(frame.finished_by("wor"), None);
        // Nobody in `work` has taken frame 0 yet.
        assert_eq!(frame.finished_by("work"), Some(false));
        // `first` is at frame 0 while `second` takes frame 1 and finishes it.
        let at_zero = first.recv().unwrap();
        assert_eq!(at_zero.seq(), 0);
        drop(second.recv().unwrap());
        assert_eq!(frame.finished_by("work"), Some(false));
        drop(at_zero);
        assert_eq!(frame.finished_by("work"), Some(true));
        assert_eq!(frame.finished_by("work.m0"), Some(false));
    }

    /// Issue 16: a solo holder keeps frames in use in their slots and releases them out
    /// of order: the watermark moves only past the frames nobody uses any more, and the
    /// producer cannot rewrite a slot below it.
    #[test]
    fn a_solo_holder_releases_the_prefix_no_frame_uses() {
        let mut producer = ring("solo-hold", 0);
        let options = ConsumerOptions {
            hold: true,
            ..ConsumerOptions::default()
        };
        let mut consumer = Consumer::attach(producer.name(), &options).unwrap();
        publish(&mut producer, 0..8);
        let frames: Vec<Detached> = (0..4).map(|_| consumer.recv().unwrap().detach()).collect();
        assert_eq!(consumer.held(), 4);
        // The window (half of 8 slots) is full.
        assert_eq!(consumer.recv().err(), Some(RecvError::MustCommit));
        // Frames 1 and 2 are done, 0 is still in use: nothing can be released.
        consumer.commit_below(frames[0].seq());
        assert_eq!(consumer.held(), 4);
        consumer.commit_below(frames[3].seq());
        assert_eq!(consumer.held(), 1);
        assert!(consumer.detached_payload(&frames[0]).is_none());
        assert_eq!(
            consumer.detached_payload(&frames[3]).map(<[u8]>::len),
            Some(64)
        );
        consumer.commit();
        assert!(consumer.detached_payload(&frames[3]).is_none());
        assert_eq!(consumer.recv().unwrap().header().frame_id, 4);
    }

    /// Issue 16: a consumer that does not hold keeps one detached frame at a time, and
    /// its bytes are unreachable once it is released.
    #[test]
    fn a_detached_frame_blocks_reading_until_released() {
        let mut producer = ring("detach", 0);
        let mut consumer = Consumer::attach(producer.name(), &ConsumerOptions::default()).unwrap();
        publish(&mut producer, 0..3);
        let first = consumer.recv().unwrap().detach();
        assert_eq!(
            consumer.recv().err(),
            Some(RecvError::FrameDetached { seq: 0 })
        );
        assert!(consumer.detached_payload(&first).is_some());
        let other = Consumer::attach(producer.name(), &ConsumerOptions::default()).unwrap();
        assert!(other.detached_payload(&first).is_none());
        consumer.release(first);
        assert_eq!(consumer.recv().unwrap().header().frame_id, 1);
    }

    /// Issue 19: the sets of a group partition the stream in aligned runs, and every
    /// member of a set (mode all) sees every frame of it; each has its set's accounting.
    #[test]
    fn sets_partition_the_stream_and_each_member_sees_all_of_its_set() {
        let mut producer = ring_of("sets", 64, 0);
        let name = producer.segment().name().to_string();
        let attach = |index| Consumer::attach(&name, &set_member("G", 2, index, 2, SetMode::All));
        let mut members = [attach(0).unwrap(), attach(0).unwrap(), attach(1).unwrap()];
        publish(&mut producer, 0..21);
        producer.finish();
        let ids: Vec<Vec<u64>> = members.iter_mut().map(drain).collect();
        assert_eq!(ids[0], of_set(21, 2, 0, 2));
        assert_eq!(ids[1], of_set(21, 2, 0, 2));
        assert_eq!(ids[2], of_set(21, 2, 1, 2));
        assert_eq!(members[2].counters().received, 10);
        let groups = super::super::membership::groups(producer.segment());
        assert_eq!(
            groups.len(),
            3,
            "a group of its own for each member (mode all)"
        );
        for (g, expected) in groups.iter().zip([11, 11, 10]) {
            assert_eq!(g.name, "G");
            assert_eq!(g.set.map(|s| s.mode), Some("all"));
            assert_eq!(
                (g.published, g.delivered, g.missed, g.in_flight),
                (expected, expected, 0, 0)
            );
        }
    }

    /// Issue 19: in mode one the members of a set share its runs, each run to one of them.
    #[test]
    fn members_of_a_shared_set_split_its_runs() {
        let mut producer = ring_of("set-one", 64, 0);
        let name = producer.segment().name().to_string();
        let options = set_member("G", 1, 1, 3, SetMode::One);
        let mut a = Consumer::attach(&name, &options).unwrap();
        let mut b = Consumer::attach(&name, &options).unwrap();
        publish(&mut producer, 0..12);
        producer.finish();
        let first = a.recv().unwrap().header().frame_id;
        let second = b.recv().unwrap().header().frame_id;
        let mut all = [vec![first, second], drain(&mut a), drain(&mut b)].concat();
        all.sort_unstable();
        assert_eq!((first, second), (1, 4));
        assert_eq!(all, [1, 4, 7, 10]);
        let groups = super::super::membership::groups(producer.segment());
        assert_eq!(groups.len(), 1);
        assert_eq!(
            (groups[0].members, groups[0].published, groups[0].delivered),
            (2, 4, 4)
        );
    }

    /// Issue 19: a set formed while the stream runs is owed the rest of the run it joins
    /// in, then its runs; only they count as published to it.
    #[test]
    fn a_set_joining_mid_run_takes_the_rest_of_that_run() {
        let mut producer = ring_of("set-late", 64, 5);
        let name = producer.segment().name().to_string();
        let mut late = Consumer::attach(&name, &set_member("G", 4, 1, 2, SetMode::All)).unwrap();
        publish(&mut producer, 5..16);
        producer.finish();
        assert_eq!(drain(&mut late), [5, 6, 7, 12, 13, 14, 15]);
        let groups = super::super::membership::groups(producer.segment());
        assert_eq!((groups[0].published, groups[0].delivered), (7, 7));
    }

    /// Issue 19: strict round-robin is a set per worker: worker k of 3 gets runs k, k+3, ...
    #[test]
    fn round_robin_gives_worker_k_runs_k_plus_multiples_of_the_workers() {
        let mut producer = ring_of("rr", 64, 0);
        let name = producer.segment().name().to_string();
        let mut workers: Vec<Consumer> = (0..3)
            .map(|k| Consumer::attach(&name, &set_member("rr", 2, k, 3, SetMode::One)).unwrap())
            .collect();
        publish(&mut producer, 0..30);
        producer.finish();
        for (k, worker) in workers.iter_mut().enumerate() {
            assert_eq!(drain(worker), of_set(30, 2, k as u64, 3), "worker {k}");
        }
    }

    /// Issue 19: a lossy member more than a ring behind skips to the newest frame of its
    /// set and counts only its set's frames as missed: received + missed = published.
    #[test]
    fn a_lossy_set_member_counts_only_its_sets_frames_as_missed() {
        let mut producer = ring("set-lossy", 0);
        let name = producer.segment().name().to_string();
        let options = ConsumerOptions {
            delivery: Delivery::Lossy,
            ..set_member("G", 2, 0, 2, SetMode::All)
        };
        let mut lossy = Consumer::attach(&name, &options).unwrap();
        publish(&mut producer, 0..40);
        producer.finish();
        // Runs of set 0 below 40: [36, 38) is the newest, and 37 its newest frame.
        assert_eq!(drain(&mut lossy), [37]);
        assert_eq!(
            lossy.counters(),
            ConsumerCounters {
                received: 1,
                missed: 19
            }
        );
        let groups = super::super::membership::groups(producer.segment());
        assert_eq!(
            (groups[0].published, groups[0].delivered, groups[0].missed),
            (20, 1, 19)
        );
    }

    /// Issue 19: a holder in a set cannot extend a run over the other sets' runs; it
    /// commits at the end of each run, then claims its set's next one.
    #[test]
    fn a_holder_in_a_set_commits_at_the_end_of_each_run() {
        let mut producer = ring_of("set-hold", 16, 0);
        let name = producer.segment().name().to_string();
        let options = ConsumerOptions {
            hold: true,
            ..set_member("G", 2, 0, 2, SetMode::One)
        };
        let mut holder = Consumer::attach(&name, &options).unwrap();
        publish(&mut producer, 0..8);
        assert_eq!(holder.recv().unwrap().header().frame_id, 0);
        assert_eq!(holder.recv().unwrap().header().frame_id, 1);
        assert_eq!(holder.recv().err(), Some(RecvError::MustCommit));
        holder.commit();
        assert_eq!(holder.recv().unwrap().header().frame_id, 4);
    }

    /// Issue 19: the members of a group agree on its sets; a set must exist and belongs
    /// to a named group.
    #[test]
    fn sets_are_checked_when_joining() {
        let producer = ring("set-join", 0);
        let name = producer.segment().name();
        let _first = Consumer::attach(name, &set_member("G", 2, 0, 2, SetMode::All)).unwrap();
        let error = |options| Consumer::attach(name, &options).err().unwrap().to_string();
        assert_eq!(
            error(set_member("G", 2, 1, 3, SetMode::All)),
            format!("group 'G' on ring '{name}' is lossless with batch 2 in 2 sets, each member seeing every frame of its set; you asked for lossless with batch 2 in 3 sets, each member seeing every frame of its set: use the same settings")
        );
        assert!(
            error(set_member("G", 2, 1, 2, SetMode::One)).contains("each shared by its members")
        );
        assert!(
            error(set_member("H", 2, 2, 2, SetMode::All)).starts_with("set 2 of 2 does not exist")
        );
        let unnamed = ConsumerOptions {
            group: None,
            ..set_member("H", 2, 0, 2, SetMode::All)
        };
        assert!(error(unnamed).starts_with("a set is part of a group"));
    }

    /// Issue 15: a `head` of 2^64-1 made a lossy consumer spin in `claim_run`; every
    /// delivery now ends with `Damaged` instead of wrapping arithmetic.
    #[test]
    fn an_impossible_head_ends_every_consumer_with_damaged() {
        for (tag, delivery, grouped) in [
            ("lossy", Delivery::Lossy, false),
            ("lossless", Delivery::Lossless, false),
            ("grp", Delivery::Lossless, true),
        ] {
            let producer = ring(tag, 3);
            let options = if grouped {
                group("G", delivery)
            } else {
                ConsumerOptions {
                    delivery,
                    ..ConsumerOptions::default()
                }
            };
            let mut consumer = Consumer::attach(producer.name(), &options).unwrap();
            producer.segment().header().head.store(u64::MAX, SeqCst);
            let mut outcome = None;
            // Frames before the damage may still come; the damage ends it.
            for _ in 0..10 {
                match consumer.recv() {
                    Ok(_) => continue,
                    Err(e) => {
                        outcome = Some(e);
                        break;
                    }
                }
            }
            match outcome {
                Some(RecvError::Damaged { what, .. }) => {
                    assert!(what.contains("18446744073709551615"), "{what}")
                }
                other => panic!("{tag}: {other:?}"),
            }
        }
    }
}
