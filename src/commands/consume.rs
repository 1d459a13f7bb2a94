//! `streamd consume`: a standalone consumer that counts, verifies and times frames.

use super::{per_second, print_counters, Status};
use crate::pattern::verify_ramp;
use crate::ring::{Consumer, ConsumerOptions, Delivery, RecvError, WaitMode};
use crate::sys::{now_ns, stop_flag};
use crate::units::{one_line, positive_seconds, quote, Seconds};
use anyhow::Context;
use hdrhistogram::Histogram;
use serde_json::json;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// Settings of one consumer run (the `streamd consume` command line).
#[derive(Debug, Clone, clap::Args)]
pub struct ConsumeArgs {
    #[arg(long)]
    pub ring: String,
    /// Share the stream with the other members of this group.
    #[arg(long)]
    pub group: Option<String>,
    /// Consecutive frames a group member takes at a time.
    #[arg(long, default_value_t = 1, requires = "group")]
    pub batch: u32,
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
    let mut consumer = Consumer::attach(&args.ring, &options)?;
    let stop = stop_flag();
    consumer.set_interrupt(stop.clone());
    // 1 ns to 1 h at 3 significant figures; longer waits saturate at the top.
    let mut latency =
        Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid bounds");
    let mut scratch = Vec::new();
    let (mut first_id, mut last_id) = (None, None);
    let (mut verify_errors, mut corrupt, mut bytes) = (0u64, 0u64, 0u64);
    let mut damaged = false;
    // The runtime counts from attaching, and holds on an idle or stalled ring: the
    // wait for a frame never outlasts it.
    let attached = Instant::now();
    let deadline = args.runtime.map(|r| attached + r.duration());
    let mut started = None;
    let mut damaged_shown = false;
    let end = loop {
        if args
            .frames
            .is_some_and(|n| consumer.counters().received >= n)
        {
            break "frames";
        }
        if stop.load(Relaxed) {
            break "interrupted";
        }
        let received = match deadline {
            None => consumer.recv().map(Some),
            Some(d) => match d.checked_duration_since(Instant::now()) {
                None => break "runtime",
                Some(left) => consumer.recv_timeout(left),
            },
        };
        let frame = match received {
            Ok(Some(frame)) => frame,
            Ok(None) => break "runtime",
            Err(RecvError::EndOfStream { .. }) => break "end-of-stream",
            Err(RecvError::Interrupted) => break "interrupted",
            Err(e @ RecvError::ProducerDied { .. }) => {
                eprintln!("streamd consume: ring {}: {e}", quote(&args.ring));
                break "producer-died";
            }
            Err(e @ (RecvError::Damaged { .. } | RecvError::FrameDetached { .. })) => {
                eprintln!("streamd consume: {}", one_line(&e.to_string()));
                damaged = true;
                break "damaged";
            }
            Err(e @ RecvError::Corrupt { .. }) => {
                // Skipped and counted; shown once, the rest summed up at the end.
                corrupt += 1;
                if !damaged_shown {
                    damaged_shown = true;
                    eprintln!(
                        "streamd consume: ring {}: {}; skipping damaged slots and counting them",
                        quote(&args.ring),
                        one_line(&e.to_string())
                    );
                }
                continue;
            }
            Err(RecvError::MustCommit) => unreachable!("consume does not hold frames"),
        };
        started.get_or_insert_with(Instant::now);
        let header = frame.header();
        latency.saturating_record(now_ns().saturating_sub(header.timestamp_ns));
        first_id.get_or_insert(header.frame_id);
        last_id = Some(header.frame_id);
        bytes += header.payload_len;
        if let Some(file) = record.as_mut() {
            // One write per id: a consumer killed at any instant leaves whole lines.
            file.write_all(format!("{}\n", header.frame_id).as_bytes())
                .context("could not record a frame id")?;
        }
        if args.read {
            std::hint::black_box(fold_words(frame.payload()));
        }
        if args.verify {
            if let Some(pixel) =
                verify_ramp(frame.payload(), header.dtype, header.frame_id, &mut scratch)
            {
                verify_errors += 1;
                if verify_errors <= SHOWN_ERRORS {
                    eprintln!(
                        "streamd consume: frame {} differs from the ramp at pixel {pixel}",
                        header.frame_id
                    );
                }
            }
        }
        drop(frame);
        if args.work_us > 0 {
            std::thread::sleep(Duration::from_micros(args.work_us));
        }
    };
    if corrupt > 1 {
        eprintln!(
            "streamd consume: ring {}: {corrupt} damaged slots skipped in all (counted in missed and verify_errors)",
            quote(&args.ring)
        );
    }
    let elapsed = started.map_or(0.0, |s: Instant| s.elapsed().as_secs_f64());
    let counters = consumer.counters();
    drop(consumer);
    let report = json!({
        "ring": args.ring,
        "received": counters.received,
        "missed": counters.missed,
        "verify_errors": verify_errors + corrupt,
        "first_id": first_id,
        "last_id": last_id,
        "fps": per_second(counters.received as f64, elapsed),
        "mb_per_s": per_second(bytes as f64 / 1e6, elapsed),
        "latency_ns_p50": latency.value_at_quantile(0.5),
        "latency_ns_p99": latency.value_at_quantile(0.99),
        "end": end,
    });
    print_counters(&report, args.json);
    Ok(if verify_errors + corrupt > 0 || damaged {
        Status::DataErrors
    } else if end == "producer-died" {
        Status::ProducerDied
    } else {
        Status::Ok
    })
}
