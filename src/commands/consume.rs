//! `streamd consume`: a standalone consumer that counts, verifies and times frames.

use super::{per_second, print_counters, Status};
use crate::pattern::verify_ramp;
use crate::ring::{
    Consumer, ConsumerCounters, ConsumerOptions, Delivery, Detached, FrameHeader, GroupSet,
    RecvError, SetMode, WaitMode,
};
use crate::sys::{now_ns, stop_flag};
use crate::units::{one_line, positive_seconds, quote, Seconds};
use anyhow::Context;
use hdrhistogram::Histogram;
use serde_json::json;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Settings of one consumer run (the `streamd consume` command line).
#[derive(Debug, Clone, clap::Args)]
pub struct ConsumeArgs {
    /// The ring; a pipeline ring that several workers write (`PIPELINE.RING`) is read as
    /// all its numbered segments, as a stage reads it.
    #[arg(long)]
    pub ring: String,
    /// Share the stream with the other members of this group.
    #[arg(long)]
    pub group: Option<String>,
    /// Consecutive frames a group member takes at a time; with sets, the frames each set
    /// gets per turn (runs aligned to sequence numbers).
    #[arg(long, default_value_t = 1, requires = "group")]
    pub batch: u32,
    /// Take only the runs dealt to this set of the group (0 to --sets minus 1): PvaPy's
    /// distributor `set`. Strict round-robin among W consumers: --sets W, --set k.
    #[arg(long, requires_all = ["group", "sets"])]
    pub set: Option<u32>,
    /// How many sets the group's runs are dealt round (every member gives the same).
    #[arg(long, requires = "set")]
    pub sets: Option<u32>,
    /// all: see every frame of the set (each member does); one: share the set's runs with
    /// the set's other members, first-free.
    #[arg(long, default_value = "all", requires = "set")]
    pub set_mode: SetMode,
    /// lossless or lossy.
    #[arg(long, default_value = "lossless")]
    pub delivery: Delivery,
    #[arg(long, conflicts_with = "runtime")]
    pub frames: Option<u64>,
    /// Stop after this many seconds, counted from attaching, whether frames come or not
    /// (more than 0, at most a year).
    #[arg(long, value_parser = positive_seconds, allow_negative_numbers = true, value_name = "SECS")]
    pub runtime: Option<Seconds>,
    /// Check every frame against the ramp pattern.
    #[arg(long)]
    pub verify: bool,
    /// Read every byte of each frame in place (a stand-in for a processor's pass).
    #[arg(long)]
    pub read: bool,
    /// Busy-poll instead of sleeping (lowest latency, burns a core).
    #[arg(long)]
    pub spin: bool,
    /// Print the counters as one JSON object on the last line.
    #[arg(long)]
    pub json: bool,
    /// Seconds to wait for the ring to appear (0 to a year).
    #[arg(
        long,
        default_value = "30",
        allow_negative_numbers = true,
        value_name = "SECS"
    )]
    pub attach_timeout: Seconds,
    /// Spend this many microseconds after each frame (a stand-in for processing a copy),
    /// at most 1000000.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub work_us: u64,
    /// Write each received frame id to this file, one per line, as it arrives.
    #[arg(long)]
    pub record_ids: Option<PathBuf>,
}

/// Errors shown for the first few bad frames; the rest are only counted.
const SHOWN_ERRORS: u64 = 5;

/// XOR of the payload's 8-byte words: reads every byte at memory bandwidth.
fn fold_words(payload: &[u8]) -> u64 {
    let words = payload.chunks_exact(8);
    let tail = words
        .remainder()
        .iter()
        .fold(0u64, |acc, &b| acc ^ u64::from(b));
    words.fold(tail, |acc, w| {
        acc ^ u64::from_le_bytes(w.try_into().expect("8 bytes"))
    })
}

pub fn run(args: &ConsumeArgs) -> anyhow::Result<Status> {
    let options = ConsumerOptions {
        group: args.group.clone(),
        batch: args.batch,
        set: args.set.zip(args.sets).map(|(index, sets)| GroupSet {
            index,
            sets,
            mode: args.set_mode,
        }),
        delivery: args.delivery,
        wait: if args.spin {
            WaitMode::Spin
        } else {
            WaitMode::Futex
        },
        attach_timeout: args.attach_timeout.duration(),
        hold: false,
    };
    let mut record = match &args.record_ids {
        Some(path) => Some(File::create(path).map_err(|e| {
            anyhow::anyhow!(
                "could not create --record-ids file {}: {}; give a path in a folder you can write",
                quote(&path.display().to_string()),
                crate::units::one_line(&e.to_string())
            )
        })?),
        None => None,
    };
    let mut consumer = Segments::attach(&args.ring, &options)?;
    let stop = stop_flag();
    consumer.set_interrupt(&stop);
    let mut tally = Tally::new();
    let end = read_frames(&mut consumer, args, record.as_mut(), &stop, &mut tally)?;
    if tally.corrupt > 1 {
        eprintln!(
            "streamd consume: ring {}: {} damaged slots skipped in all (counted in missed and verify_errors)",
            quote(&args.ring),
            tally.corrupt
        );
    }
    let elapsed = tally
        .started
        .map_or(0.0, |s: Instant| s.elapsed().as_secs_f64());
    let counters = consumer.counters();
    drop(consumer);
    let bad_frames = tally.verify_errors + tally.corrupt;
    let report = json!({
        "ring": args.ring,
        "received": counters.received,
        "missed": counters.missed,
        "verify_errors": bad_frames,
        "first_id": tally.first_id,
        "last_id": tally.last_id,
        "fps": per_second(counters.received as f64, elapsed),
        "mb_per_s": per_second(tally.bytes as f64 / 1e6, elapsed),
        "latency_ns_p50": tally.latency.value_at_quantile(0.5),
        "latency_ns_p99": tally.latency.value_at_quantile(0.99),
        "end": end,
    });
    print_counters(&report, args.json);
    Ok(if bad_frames > 0 || tally.damaged {
        Status::DataErrors
    } else if end == "producer-died" {
        Status::ProducerDied
    } else {
        Status::Ok
    })
}

/// What a consumer run counted.
struct Tally {
    /// Publication to reading, per frame.
    latency: Histogram<u64>,
    /// Verification's scratch buffer, reused.
    scratch: Vec<u8>,
    first_id: Option<u64>,
    last_id: Option<u64>,
    verify_errors: u64,
    /// Damaged slots skipped.
    corrupt: u64,
    bytes: u64,
    /// The ring itself is damaged: reading stopped.
    damaged: bool,
    /// When the first frame came.
    started: Option<Instant>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            // 1 ns to 1 h at 3 significant figures; longer waits saturate at the top.
            latency: Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3)
                .expect("valid bounds"),
            scratch: Vec::new(),
            first_id: None,
            last_id: None,
            verify_errors: 0,
            corrupt: 0,
            bytes: 0,
            damaged: false,
            started: None,
        }
    }

    /// Counts, records, reads and verifies one frame (its header and pixels), as the
    /// arguments ask.
    fn frame(
        &mut self,
        header: &FrameHeader,
        payload: &[u8],
        args: &ConsumeArgs,
        record: Option<&mut File>,
    ) -> anyhow::Result<()> {
        self.started.get_or_insert_with(Instant::now);
        self.latency
            .saturating_record(now_ns().saturating_sub(header.timestamp_ns));
        self.first_id.get_or_insert(header.frame_id);
        self.last_id = Some(header.frame_id);
        self.bytes += header.payload_len;
        if let Some(file) = record {
            // One write per id: a consumer killed at any instant leaves whole lines.
            file.write_all(format!("{}\n", header.frame_id).as_bytes())
                .context("could not record a frame id")?;
        }
        if args.read {
            std::hint::black_box(fold_words(payload));
        }
        if args.verify {
            let found = verify_ramp(payload, header.dtype, header.frame_id, &mut self.scratch);
            if let Some(pixel) = found {
                self.verify_errors += 1;
                if self.verify_errors <= SHOWN_ERRORS {
                    eprintln!(
                        "streamd consume: frame {} differs from the ramp at pixel {pixel}",
                        header.frame_id
                    );
                }
            }
        }
        Ok(())
    }
}

/// Reads frames until the frame count, the runtime, the end of the stream, the
/// producer's death, damage or `stop`; returns which (the report's `end`).
fn read_frames(
    consumer: &mut Segments,
    args: &ConsumeArgs,
    mut record: Option<&mut File>,
    stop: &AtomicBool,
    tally: &mut Tally,
) -> anyhow::Result<&'static str> {
    // The runtime counts from attaching, and holds on an idle or stalled ring: the
    // wait for a frame never outlasts it.
    let attached = Instant::now();
    let deadline = args.runtime.map(|r| attached + r.duration());
    loop {
        if args
            .frames
            .is_some_and(|n| consumer.counters().received >= n)
        {
            return Ok("frames");
        }
        if stop.load(Relaxed) {
            return Ok("interrupted");
        }
        let received = match deadline {
            None => consumer.recv().map(Some),
            Some(d) => match d.checked_duration_since(Instant::now()) {
                None => return Ok("runtime"),
                Some(left) => consumer.recv_timeout(left),
            },
        };
        let (segment, frame) = match received {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok("runtime"),
            Err(e) => match stopped_by(e, &args.ring, tally) {
                Some(end) => return Ok(end),
                None => continue,
            },
        };
        let payload = consumer.payload(segment, &frame);
        let counted = tally.frame(frame.header(), payload, args, record.as_deref_mut());
        consumer.release(segment, frame);
        counted?;
        if args.work_us > 0 {
            std::thread::sleep(Duration::from_micros(args.work_us));
        }
    }
}

/// What a receive error means for the run: its end, or `None` to read on (a damaged
/// slot, skipped and counted; said once).
fn stopped_by(e: RecvError, ring: &str, tally: &mut Tally) -> Option<&'static str> {
    match e {
        RecvError::EndOfStream { .. } => Some("end-of-stream"),
        RecvError::Interrupted => Some("interrupted"),
        e @ RecvError::ProducerDied { .. } => {
            eprintln!("streamd consume: ring {}: {e}", quote(ring));
            Some("producer-died")
        }
        e @ (RecvError::Damaged { .. } | RecvError::FrameDetached { .. }) => {
            eprintln!("streamd consume: {}", one_line(&e.to_string()));
            tally.damaged = true;
            Some("damaged")
        }
        e @ RecvError::Corrupt { .. } => {
            // Skipped and counted; shown once, the rest summed up at the end.
            tally.corrupt += 1;
            if tally.corrupt == 1 {
                eprintln!(
                    "streamd consume: ring {}: {}; skipping damaged slots and counting them",
                    quote(ring),
                    one_line(&e.to_string())
                );
            }
            None
        }
        RecvError::MustCommit => unreachable!("consume does not hold frames"),
    }
}

/// The ring segments `consume --ring` reads: the ring itself, or all the numbered
/// segments of a pipeline ring several workers write (as a stage reads them), in turn.
/// Frames are handed out detached, so they can come from any of them.
struct Segments {
    consumers: Vec<Consumer>,
    /// How each segment ended, once it did.
    ended: Vec<Option<RecvError>>,
    next: usize,
}

impl Segments {
    fn attach(ring: &str, options: &ConsumerOptions) -> anyhow::Result<Segments> {
        let consumers = super::ring_segments(ring)
            .iter()
            .map(|name| Consumer::attach(name, options))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Segments {
            ended: consumers.iter().map(|_| None).collect(),
            consumers,
            next: 0,
        })
    }

    fn set_interrupt(&mut self, stop: &Arc<AtomicBool>) {
        for consumer in &mut self.consumers {
            consumer.set_interrupt(stop.clone());
        }
    }

    /// Every segment's counts, summed.
    fn counters(&self) -> ConsumerCounters {
        let mut total = ConsumerCounters::default();
        for c in self.consumers.iter().map(Consumer::counters) {
            total.received += c.received;
            total.missed += c.missed;
        }
        total
    }

    fn recv(&mut self) -> Result<(usize, Detached), RecvError> {
        loop {
            if let Some(frame) = self.recv_timeout(Duration::from_secs(3600))? {
                return Ok(frame);
            }
        }
    }

    /// The next frame of any segment, with its segment; how the last one ended once
    /// every one has. One segment waits in the ring's own way (futex or spin); several
    /// are taken in turn, each waited on for a millisecond at most.
    fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<(usize, Detached)>, RecvError> {
        let deadline = Instant::now() + timeout;
        let count = self.consumers.len();
        loop {
            let open: Vec<usize> = (0..count)
                .map(|k| (self.next + k) % count)
                .filter(|&i| self.ended[i].is_none())
                .collect();
            let Some(&last) = open.last() else {
                return Err(self
                    .ended
                    .iter_mut()
                    .find_map(Option::take)
                    .expect("all ended"));
            };
            for &i in &open {
                let left = deadline.saturating_duration_since(Instant::now());
                let wait = match (count, i == last) {
                    (1, _) => left,
                    (_, true) => left.min(Duration::from_millis(1)),
                    _ => Duration::ZERO,
                };
                match self.consumers[i].recv_timeout(wait) {
                    Ok(Some(frame)) => {
                        self.next = i + 1;
                        return Ok(Some((i, frame.detach())));
                    }
                    Ok(None) => {}
                    Err(e @ RecvError::EndOfStream { .. }) => self.ended[i] = Some(e),
                    Err(e) => return Err(e),
                }
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    /// The pixels of `frame`, read from segment `segment`, until it is released.
    fn payload(&self, segment: usize, frame: &Detached) -> &[u8] {
        self.consumers[segment]
            .detached_payload(frame)
            .expect("a detached frame stays reserved until it is released")
    }

    fn release(&mut self, segment: usize, frame: Detached) {
        self.consumers[segment].release(frame);
    }
}
