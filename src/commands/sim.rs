//! `streamd sim`: a detector simulator that publishes frames into a ring.

use super::{per_second, print_counters, Status};
use crate::pattern::{FrameContent, NpyStack, Ramp, RandomPool};
use crate::pipeline::plan::MetadataPlan;
use crate::pipeline::source::{pace_or_stop, MetadataError};
use crate::ring::{
    ClaimError, Dtype, FrameMeta, FullPolicy, Producer, RingOptions, FLAG_END_OF_STREAM,
};
use crate::sys::{now_ns, stop_flag};
use crate::units::{nth_tick, positive_seconds, quote, Rate, Seconds};
use anyhow::{bail, Context};
use serde_json::json;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

/// The most slots a ring may have on the command line.
pub const MAX_SLOTS: i64 = 1 << 20;

/// Frame content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Ramp,
    Random,
    /// Replay the frames of a `.npy` stack; its shape and dtype override --nx/--ny/--dtype.
    File(std::path::PathBuf),
}

impl std::str::FromStr for Pattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ramp" => Ok(Pattern::Ramp),
            "random" => Ok(Pattern::Random),
            other => match other.strip_prefix("file:") {
                Some(path) if !path.is_empty() => Ok(Pattern::File(path.into())),
                _ => Err(format!(
                    "unknown pattern '{other}' (use ramp, random or file:PATH.npy)"
                )),
            },
        }
    }
}

/// Settings of one simulator run (the `streamd sim` command line).
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    #[arg(long)]
    pub ring: String,
    #[arg(long, default_value_t = 512)]
    pub nx: u32,
    #[arg(long, default_value_t = 512)]
    pub ny: u32,
    /// u8, u16, u32 or f32.
    #[arg(long, default_value = "u8")]
    pub dtype: Dtype,
    /// Frames per second; 0 = as fast as the consumers allow, else 0.001 to 1e7.
    #[arg(
        long,
        default_value = "0",
        allow_negative_numbers = true,
        value_name = "FPS"
    )]
    pub fps: Rate,
    /// Stop after this many frames.
    #[arg(long, conflicts_with = "runtime")]
    pub frames: Option<u64>,
    /// Stop after this many seconds (more than 0, at most a year).
    #[arg(long, value_parser = positive_seconds, allow_negative_numbers = true, value_name = "SECS")]
    pub runtime: Option<Seconds>,
    /// Frame content: ramp (verifiable, see the spec), random, or file:PATH.npy (replay a
    /// (frames, ny, nx) stack, whose shape and dtype then apply).
    #[arg(long, default_value = "ramp")]
    pub pattern: Pattern,
    /// Slots in the ring, 1 to 1048576.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=MAX_SLOTS))]
    pub slots: u32,
    /// block or drop-newest: what to do when lossless consumers still need every slot.
    #[arg(long, default_value = "block")]
    pub policy: FullPolicy,
    /// Metadata channels to publish beside the frames, e.g. `x,y/2,z` (`/N`: only every
    /// N-th frame). Values go to --metadata-ring; the spec of the values is in the README.
    #[arg(long)]
    pub metadata: Option<String>,
    /// Ring of the metadata values (default: RING.meta).
    #[arg(long, requires = "metadata")]
    pub metadata_ring: Option<String>,
    /// Move each value's timestamp by up to ± this many microseconds (at most 1e9).
    #[arg(
        long,
        default_value_t = 0.0,
        requires = "metadata",
        allow_negative_numbers = true
    )]
    pub metadata_jitter_us: f64,
    /// Leave out every value of frames whose id is N-1 modulo N.
    #[arg(long, default_value_t = 0, requires = "metadata")]
    pub metadata_gap: u64,
    /// Publish nothing until this many consumers are attached.
    #[arg(long, default_value_t = 0)]
    pub wait_consumers: usize,
    /// Print the counters as one JSON object on the last line.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &SimArgs) -> anyhow::Result<Status> {
    let (args, stack) = with_file_shape(args)?;
    let args = &args;
    if args.nx == 0 || args.ny == 0 {
        bail!(
            "frame size {}x{} is empty; give --nx and --ny of at least 1",
            args.nx,
            args.ny
        );
    }
    let frame_bytes = u64::from(args.nx) * u64::from(args.ny) * args.dtype.size() as u64;
    // Checked before any ring exists: a bad plan leaves nothing behind.
    let plan = match &args.metadata {
        None => None,
        Some(spec) => Some(metadata_plan(args, spec)?),
    };
    let mut producer = create_ring(args, frame_bytes)?;
    let stop = stop_flag();
    producer.set_interrupt(stop.clone());
    let mut metadata = match plan {
        None => None,
        Some(plan) => {
            let (mut ring, _) = Producer::create(&RingOptions {
                name: plan.ring.clone(),
                slots: args.slots.saturating_mul(plan.channels.len() as u32),
                slot_bytes: 0,
                full_policy: args.policy,
            })?;
            ring.set_interrupt(stop.clone());
            Some((plan, ring))
        }
    };
    if args.wait_consumers > 0 {
        eprintln!(
            "streamd sim: ring '{}' waiting for {} consumer(s)",
            args.ring, args.wait_consumers
        );
        if producer.wait_for_consumers(args.wait_consumers) == Err(ClaimError::Interrupted) {
            eprintln!("streamd sim: interrupted before any consumer attached");
        }
    }
    let content = match (stack, &args.pattern) {
        (Some(stack), _) => FrameContent::Npy(stack),
        (None, Pattern::Random) => {
            FrameContent::Random(RandomPool::new(frame_bytes as usize, 0x5eed))
        }
        (None, _) => FrameContent::Ramp(Ramp::new(args.dtype)),
    };
    let started = Instant::now();
    let sent = publish_frames(
        args,
        &mut producer,
        metadata.as_mut().map(|(plan, ring)| (&*plan, ring)),
        (&content, frame_bytes as usize),
        &stop,
        started,
    )?;
    producer.finish();
    if let Some((_, ring)) = &mut metadata {
        ring.finish();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let counters = producer.counters();
    let mut report = json!({
        "ring": args.ring,
        "published": counters.published,
        "dropped": counters.dropped,
        "consumers_reaped": producer.consumers_reaped(),
        "first_id": sent.first_id,
        "last_id": sent.last_id,
        "fps": per_second(counters.published as f64, elapsed),
        "mb_per_s": per_second(counters.published as f64 * frame_bytes as f64 / 1e6, elapsed),
    });
    if let Some((plan, _)) = &metadata {
        report["metadata_ring"] = json!(plan.ring);
        report["metadata_published"] = json!(sent.values);
        report["metadata_dropped"] = json!(sent.values_dropped);
    }
    print_counters(&report, args.json);
    Ok(Status::Ok)
}

/// The arguments with a replayed file's shape and dtype in place of --nx, --ny and
/// --dtype, and the file's frames (`None` for a pattern).
fn with_file_shape(args: &SimArgs) -> anyhow::Result<(SimArgs, Option<NpyStack>)> {
    let stack = match &args.pattern {
        Pattern::File(path) => Some(NpyStack::open(path).map_err(anyhow::Error::msg)?),
        _ => None,
    };
    let (nx, ny, dtype) = stack
        .as_ref()
        .map_or((args.nx, args.ny, args.dtype), |s| (s.nx, s.ny, s.dtype));
    let args = SimArgs {
        nx,
        ny,
        dtype,
        ..args.clone()
    };
    Ok((args, stack))
}

/// Creates the frame ring, saying so when it replaced one whose producer is gone.
fn create_ring(args: &SimArgs, frame_bytes: u64) -> anyhow::Result<Producer> {
    let (producer, stale) = Producer::create(&RingOptions {
        name: args.ring.clone(),
        slots: args.slots,
        slot_bytes: frame_bytes,
        full_policy: args.policy,
    })?;
    if let Some(stale) = stale {
        eprintln!(
            "streamd sim: removed stale segment {} left by producer pid {} that is gone",
            stale.path.display(),
            stale.producer_pid
        );
    }
    Ok(producer)
}

/// What the publishing loop sent.
#[derive(Default)]
struct Sent {
    first_id: Option<u64>,
    last_id: Option<u64>,
    /// Metadata values published and dropped (a full `drop-newest` metadata ring).
    values: u64,
    values_dropped: u64,
}

/// Publishes frames of `frame_bytes` from `content`, paced from `started` when asked,
/// each after its metadata values, until the frame count or the runtime is reached or
/// `stop` is raised.
fn publish_frames(
    args: &SimArgs,
    producer: &mut Producer,
    mut metadata: Option<(&MetadataPlan, &mut Producer)>,
    (content, frame_bytes): (&FrameContent, usize),
    stop: &AtomicBool,
    started: Instant,
) -> anyhow::Result<Sent> {
    let dims = [args.ny, args.nx];
    let interval = args.fps.interval();
    let deadline = args.runtime.map(Seconds::duration);
    let mut sent = Sent::default();
    let mut frame_id = 0u64;
    while !stop.load(Relaxed) {
        if args.frames.is_some_and(|n| frame_id >= n)
            || deadline.is_some_and(|d| started.elapsed() >= d)
        {
            break;
        }
        if let Some(interval) = interval {
            if !pace_or_stop(started + nth_tick(interval, frame_id), stop) {
                break;
            }
        }
        let mut slot = match producer.claim() {
            Ok(slot) => slot,
            Err(ClaimError::Full) => {
                frame_id += 1;
                continue;
            }
            Err(ClaimError::Interrupted) => break,
        };
        content.fill(&mut slot.payload_mut()[..frame_bytes], frame_id);
        let last = args.frames.is_some_and(|n| frame_id + 1 == n);
        let timestamp_ns = now_ns();
        if let Some((plan, ring)) = metadata.as_mut() {
            match plan.publish(ring, frame_id, timestamp_ns) {
                Ok((p, d)) => {
                    (sent.values, sent.values_dropped) = (sent.values + p, sent.values_dropped + d)
                }
                Err(MetadataError::Interrupted) => break,
                Err(e) => bail!("publishing metadata: {e}"),
            }
        }
        let meta = FrameMeta {
            frame_id,
            timestamp_ns,
            dtype: args.dtype,
            dims: &dims,
            flags: if last { FLAG_END_OF_STREAM } else { 0 },
        };
        slot.publish(&meta).context("publishing a frame")?;
        sent.first_id.get_or_insert(frame_id);
        sent.last_id = Some(frame_id);
        frame_id += 1;
    }
    Ok(sent)
}

fn metadata_plan(args: &SimArgs, spec: &str) -> anyhow::Result<MetadataPlan> {
    let channels =
        MetadataPlan::parse_channels(spec).map_err(|e| anyhow::anyhow!("--metadata: {e}"))?;
    if !(args.metadata_jitter_us >= 0.0 && args.metadata_jitter_us <= 1e9) {
        bail!("--metadata-jitter-us must be 0 to 1e9 microseconds");
    }
    let ring = args
        .metadata_ring
        .clone()
        .unwrap_or_else(|| format!("{}.meta", args.ring));
    if ring == args.ring {
        bail!(
            "--metadata-ring {} is the frame ring itself; give the metadata its own ring (default: {})",
            quote(&ring),
            quote(&format!("{}.meta", args.ring))
        );
    }
    Ok(MetadataPlan {
        ring,
        channels,
        jitter_ns: (args.metadata_jitter_us * 1000.0).round() as u64,
        gap_every: args.metadata_gap,
        pvs: Vec::new(),
        queue_size: 0,
    })
}
