//! A stage or source process: `streamd worker SPEC` (spawned by the supervisor, not run
//! by hand). It attaches to its input rings in its group, resumes production of its
//! output ring, runs its processor on every frame and keeps its entry in the stats
//! segment current. It exits 0 only when every input ended and its outputs are
//! finished; any other exit is a crash the supervisor restarts.

use super::config::{SourceContent, SourcePlan, StagePlan};
use super::source::{pace_or_stop, MetadataError, MetadataFeed, MetadataPlan, RateMeter, Schedule};
use crate::commands::{now_ns, stop_flag};
use crate::processors::python::PythonCode;
use crate::processors::{self, Outputs, StageContext};
use crate::ring::{
    ClaimError, Consumer, ConsumerOptions, Delivery, FrameMeta, Producer, RecvError, WaitMode,
};
use crate::sources::{self, Next, Source};
use crate::stats::layout::*;
use crate::stats::StatsSegment;
use crate::units::Rate;
use anyhow::Context;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering::{Relaxed, Release};
use std::time::{Duration, Instant};

/// Everything a worker process needs, passed by the supervisor as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSpec {
    pub pipeline: String,
    pub supervisor_pid: u32,
    /// Stage index in the stats segment (0 = the source).
    pub stage_index: usize,
    pub entry: usize,
    pub worker: u32,
    pub core: Option<usize>,
    pub role: Role,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Role {
    Source {
        plan: SourcePlan,
        output: String,
        /// The metadata ring's segment, when the source publishes channel values.
        metadata: Option<String>,
    },
    Stage {
        plan: StagePlan,
        /// Input segments, every one of them read in `group`.
        inputs: Vec<String>,
        group: String,
        /// Output segments by port.
        outputs: Vec<String>,
        /// Metadata segments, read in this worker's own group.
        metadata: Vec<String>,
    },
}

impl WorkerSpec {
    /// The Python code this worker runs, when it is a Python stage or source (then the
    /// supervisor starts it in that interpreter, with a [`Host`]).
    pub fn python(&self) -> Option<PythonCode> {
        match &self.role {
            Role::Source { plan, .. } => match &plan.content {
                SourceContent::Python { code, .. } => Some(code.clone()),
                _ => None,
            },
            Role::Stage { plan, .. } => PythonCode::for_stage(&plan.processor, &plan.args),
        }
    }
}

/// A program that runs this worker loop for work the binary cannot do itself: the
/// Python package, which makes Python stages and sources.
pub trait Host {
    /// The processor of a Python stage of `processor` (`python`, or a shipped one such as
    /// `pva`), configured with `args` (the user's and streamd's).
    fn processor(
        &self,
        processor: &str,
        args: &toml::Table,
    ) -> Result<Box<dyn processors::Processor>, String>;
    /// The frames of a Python source.
    fn frames(
        &self,
        code: &PythonCode,
        args: &toml::Table,
        plan: &SourcePlan,
    ) -> Result<Box<dyn Source>, String>;
    /// The values of metadata channels read from EPICS PVs (`plan.pvs`).
    fn metadata(&self, plan: &MetadataPlan) -> Result<Box<dyn MetadataFeed>, String>;
}

/// Exit status of a worker interrupted by a signal (a crash for the supervisor).
pub const EXIT_INTERRUPTED: i32 = 4;
/// How often an idle worker shows it lives, and a busy one refreshes its quantiles.
const HEARTBEAT: Duration = Duration::from_millis(100);

/// Runs a worker to its end; returns the process exit status.
pub fn run(spec: &WorkerSpec) -> anyhow::Result<i32> {
    run_hosted(spec, None)
}

/// Runs a worker whose stage or source may need `host` (see [`Host`]).
pub fn run_hosted(spec: &WorkerSpec, host: Option<&dyn Host>) -> anyhow::Result<i32> {
    super::sys::ignore_file_size_signal();
    if !super::sys::die_with_parent(spec.supervisor_pid) {
        anyhow::bail!("the supervisor (pid {}) is gone", spec.supervisor_pid);
    }
    if let Some(core) = spec.core {
        super::pinning::pin_to(core);
    }
    let stats = StatsSegment::open(&spec.pipeline)?;
    let mut report = Report::start(&stats, spec);
    let status = match &spec.role {
        Role::Source {
            plan,
            output,
            metadata,
        } => run_source(plan, output, metadata.as_deref(), &mut report, host),
        Role::Stage {
            plan,
            inputs,
            group,
            outputs,
            metadata,
        } => run_stage(
            spec,
            plan,
            &Wires {
                inputs,
                group,
                outputs,
                metadata,
            },
            &mut report,
            host,
        ),
    };
    // The supervisor shows why the worker ended, with how it ended.
    if let Err(e) = &status {
        stats.write_last_error(spec.entry, &format!("{e:#}"));
    }
    report.flush(&[]);
    status
}

/// A worker's counters, mirrored into its stats entry.
struct Report<'a> {
    stats: &'a StatsSegment,
    entry: &'a WorkerEntry,
    index: usize,
    frames_in: u64,
    bytes_in: u64,
    missed_base: u64,
    errors: u64,
    out_base: (u64, u64, u64),
    /// The processor counters a crashed predecessor last showed: shown counters are this
    /// plus the processor's own, so totals continue across restarts.
    counter_base: Vec<(String, u64)>,
    /// Processor counters that are levels, shown as they are (`Processor::gauges`).
    gauges: &'static [&'static str],
    /// Frames were handled since the processor counters were last shown.
    counters_behind: bool,
    times: Histogram<u64>,
    /// When this worker handled its first frame (since it started or a reset).
    first_frame: Option<Instant>,
    last_beat: Instant,
    reset_seen: u64,
}

impl<'a> Report<'a> {
    /// Takes over the entry, continuing the counts of a predecessor that crashed.
    fn start(stats: &'a StatsSegment, spec: &WorkerSpec) -> Report<'a> {
        let entry = stats.entry(spec.entry);
        entry.pid.store(std::process::id(), Relaxed);
        entry
            .core
            .store(spec.core.map_or(NONE, |c| c as u64), Relaxed);
        entry.state.store(WORKER_STARTING, Relaxed);
        entry.heartbeat_ns.store(now_ns(), Relaxed);
        Report {
            stats,
            entry,
            index: spec.entry,
            frames_in: entry.frames_in.load(Relaxed),
            bytes_in: entry.bytes_in.load(Relaxed),
            missed_base: entry.missed.load(Relaxed),
            errors: entry.errors.load(Relaxed),
            out_base: (
                entry.frames_out.load(Relaxed),
                entry.bytes_out.load(Relaxed),
                entry.dropped.load(Relaxed),
            ),
            counter_base: stats.counters(spec.entry),
            gauges: &[],
            counters_behind: false,
            times: Histogram::new_with_bounds(1, 60_000_000_000, 2).expect("valid bounds"),
            first_frame: None,
            last_beat: Instant::now(),
            reset_seen: entry.reset_seen.load(Relaxed),
        }
    }

    fn state(&self, state: u32) {
        // SYNC: a reader that loads this state with Acquire sees the counters before it.
        self.entry.state.store(state, Release);
    }

    /// A frame was handled now: extends the span from the first one.
    fn active(&mut self) {
        let span = self.first_frame.get_or_insert_with(Instant::now).elapsed();
        self.entry.span_us.store(span.as_micros() as u64, Relaxed);
    }

    fn frame_in(&mut self, frame_id: u64, bytes: u64, lag: u64, took: Duration) {
        self.active();
        self.counters_behind = true;
        self.frames_in += 1;
        self.bytes_in += bytes;
        self.entry.frames_in.store(self.frames_in, Relaxed);
        self.entry.bytes_in.store(self.bytes_in, Relaxed);
        self.entry.last_frame_id.store(frame_id, Relaxed);
        self.entry.lag.store(lag, Relaxed);
        self.times.saturating_record(took.as_nanos().max(1) as u64);
    }

    fn error(&mut self, what: &str) {
        self.errors += 1;
        self.entry.errors.store(self.errors, Relaxed);
        // The first few errors say what happened; the count says how often.
        if self.errors <= 3 {
            eprintln!("streamd worker {}: {what}", std::process::id());
        }
        self.stats.write_last_error(self.index, what);
    }

    /// Shows a processor's standing fault as the worker's state; a fault that asks for
    /// it makes the supervisor drain the pipeline.
    fn fault(&mut self, fault: Option<&processors::Fault>) {
        let in_error = self.entry.state.load(Relaxed) == WORKER_ERROR;
        match fault {
            Some(fault) if !in_error => {
                self.stats.write_last_error(self.index, &fault.reason);
                if fault.stop_pipeline {
                    // SYNC: pairs with the supervisor's Acquire load; last_error is visible.
                    self.stats.header().stop_request.store(1, Release);
                }
                self.state(WORKER_ERROR);
            }
            None if in_error => self.state(WORKER_RUNNING),
            _ => {}
        }
    }

    /// Output counts: frames, bytes, dropped, on top of what predecessors counted.
    fn outputs(&self, (frames, bytes, dropped): (u64, u64, u64)) {
        let (f, b, d) = self.out_base;
        self.entry.frames_out.store(f + frames, Relaxed);
        self.entry.bytes_out.store(b + bytes, Relaxed);
        self.entry.dropped.store(d + dropped, Relaxed);
    }

    /// Missed frames: the inputs' total `missed`, on top of the predecessor's count.
    fn missed(&self, missed: u64) {
        self.entry
            .missed
            .store(self.missed_base.wrapping_add(missed), Relaxed);
    }

    /// Whether a heartbeat is due; cheap enough for every frame.
    fn due(&self) -> bool {
        self.last_beat.elapsed() >= HEARTBEAT
    }

    /// Heartbeat, quantiles, missed and processor counters (call when `due`). Returns
    /// true when `reset-stats` asked for zeroed counters (the caller zeroes its own).
    fn tick(&mut self, missed: u64, counters: &[(String, u64)]) -> bool {
        self.flush(counters);
        self.missed(missed);
        let reset = self.stats.header().reset_gen.load(Relaxed);
        if reset != self.reset_seen {
            self.reset_seen = reset;
            self.entry.reset_seen.store(reset, Relaxed);
            // The counts go on over the whole run; what `status` shows starts here.
            let (e, base) = (self.entry, &self.entry.reset_base);
            for (count, at_reset) in [
                (&e.frames_in, &base.frames_in),
                (&e.bytes_in, &base.bytes_in),
                (&e.frames_out, &base.frames_out),
                (&e.bytes_out, &base.bytes_out),
                (&e.missed, &base.missed),
                (&e.dropped, &base.dropped),
                (&e.errors, &base.errors),
            ] {
                at_reset.store(count.load(Relaxed), Relaxed);
            }
            self.times.reset();
            self.first_frame = None;
            for field in [&e.proc_p50_ns, &e.proc_p99_ns, &e.span_us]
                .into_iter()
                .chain(&e.proc_histogram)
            {
                field.store(0, Relaxed);
            }
            return true;
        }
        false
    }

    /// Shows the worker lives (a stale heartbeat flags it as stalled).
    fn beat(&mut self) {
        self.last_beat = Instant::now();
        self.entry.heartbeat_ns.store(now_ns(), Relaxed);
    }

    fn flush(&mut self, counters: &[(String, u64)]) {
        self.beat();
        if !self.times.is_empty() {
            self.entry
                .proc_p50_ns
                .store(self.times.value_at_quantile(0.5), Relaxed);
            self.entry
                .proc_p99_ns
                .store(self.times.value_at_quantile(0.99), Relaxed);
            let mut buckets = [0u64; TIME_BUCKETS];
            for v in self.times.iter_recorded() {
                buckets[time_bucket(v.value_iterated_to())] += v.count_at_value();
            }
            for (cell, count) in self.entry.proc_histogram.iter().zip(buckets) {
                cell.store(count, Relaxed);
            }
        }
        self.show_counters(counters);
    }

    /// Publishes the processor's counters on top of what predecessors counted.
    fn show_counters(&mut self, counters: &[(String, u64)]) {
        self.counters_behind = false;
        let totals: Vec<(String, u64)> = counters
            .iter()
            .map(|(name, value)| {
                let base = self
                    .counter_base
                    .iter()
                    .find(|(n, _)| n == name && !self.gauges.contains(&n.as_str()))
                    .map_or(0, |(_, b)| *b);
                (name.clone(), base + value)
            })
            .collect();
        self.stats.write_counters(self.index, &totals);
    }
}

/// The histogram bucket of a processing time of `ns` (see [`TIME_BUCKETS`]).
fn time_bucket(ns: u64) -> usize {
    let micros = ns / 1000;
    (micros.max(1).ilog2() as usize).min(TIME_BUCKETS - 1)
}

fn run_source(
    plan: &SourcePlan,
    output: &str,
    metadata: Option<&str>,
    report: &mut Report<'_>,
    host: Option<&dyn Host>,
) -> anyhow::Result<i32> {
    let mut supply = sources::open(plan, host)
        .map_err(|e| anyhow::anyhow!("the {} source: {e}", plan.content.kind()))?;
    report.gauges = supply.gauges();
    // Channel values from EPICS PVs come through the host, published between frames.
    let mut feed: Option<Box<dyn MetadataFeed>> = match (plan.metadata.as_ref(), host) {
        (Some(m), Some(host)) if !m.pvs.is_empty() => Some(
            host.metadata(m)
                .map_err(|e| anyhow::anyhow!("the metadata channels: {e}"))?,
        ),
        _ => None,
    };
    let mut producer = Producer::resume(output)?;
    let stop = stop_flag();
    producer.set_interrupt(stop.clone());
    let mut metadata_ring = match metadata {
        Some(name) => {
            let mut ring = Producer::resume(name)?;
            ring.set_interrupt(stop.clone());
            Some(ring)
        }
        None => None,
    };
    let mut values = Values::default();
    // A restarted source continues after the last frame its predecessor published.
    let last_id = producer.last_published().map(|h| h.frame_id);
    let mut frame_id = last_id.map_or(0, |id| id + 1);
    // The rate as last configured (`streamd configure source fps=F` changes it).
    let mut rate = SourceRate::start(report, plan.fps)?;
    let mut schedule = Schedule::new(rate.rate, frame_id);
    let (mut published, mut bytes, mut dropped, mut missed) = (0u64, 0u64, 0u64, 0u64);
    report.state(WORKER_RUNNING);
    'frames: while !stop.load(Relaxed) && plan.frames.is_none_or(|n| frame_id < n) {
        if rate.changed(report, frame_id, published)? {
            schedule = Schedule::new(rate.rate, frame_id);
        }
        if let Some(at) = schedule.due(frame_id) {
            // Waiting for a slow rate's next frame, the source still shows it lives, and
            // takes a new rate at once.
            loop {
                let wake = at.min(Instant::now() + HEARTBEAT);
                if !pace_or_stop(wake, &stop) {
                    break 'frames;
                }
                if wake == at {
                    break;
                }
                report.beat();
                rate.measure(report, published);
                if rate.changed(report, frame_id, published)? {
                    continue 'frames;
                }
            }
        }
        let next = supply.next(frame_id).map_err(anyhow::Error::msg)?;
        // Values that arrived before this frame go first, as a motor position would.
        if let (Some(feed), Some(ring), Some(m)) = (
            feed.as_mut(),
            metadata_ring.as_mut(),
            plan.metadata.as_ref(),
        ) {
            match values.publish_from(feed.as_mut(), ring, m) {
                Ok(()) => {}
                Err(MetadataError::Interrupted) => break,
                Err(e) => return Err(anyhow::anyhow!("publishing metadata: {e}")),
            }
        }
        // Frames the source missed that no frame carries (a refused image).
        missed += supply.take_missed();
        let next = match next {
            Next::Frame(next) => next,
            Next::Idle | Next::Problem(_) => {
                if let Next::Problem(why) = &next {
                    report.error(why);
                }
                if !report.due() {
                    continue;
                }
                let counters = source_counters(
                    supply.as_ref(),
                    feed.as_deref(),
                    metadata_ring.is_some().then_some(&values),
                );
                if report.tick(missed, &counters) {
                    supply.reset_counters();
                    if let Some(feed) = feed.as_mut() {
                        feed.reset_counters();
                    }
                }
                continue;
            }
            Next::End => break,
        };
        // A restarted supply that numbers its own frames starts again from its first:
        // what the predecessor published is not published twice.
        if last_id.is_some_and(|id| next.frame_id <= id) {
            continue;
        }
        frame_id = next.frame_id;
        missed += next.missed;
        report.entry.claiming.store(1, Relaxed);
        let claimed = producer.claim();
        report.entry.claiming.store(0, Relaxed);
        let mut slot = match claimed {
            Ok(slot) => slot,
            Err(ClaimError::Full) => {
                dropped += 1;
                frame_id += 1;
                report.outputs((published, bytes, dropped));
                continue;
            }
            Err(ClaimError::Interrupted) => break,
        };
        if let Err(e) = supply.write(&mut slot) {
            // Not published; the next claim reuses the slot.
            report.error(&format!("frame {frame_id}: {e}"));
            frame_id += 1;
            continue;
        }
        let timestamp_ns = next
            .timestamp_ns
            .or_else(|| schedule.timestamp_ns(frame_id))
            .unwrap_or_else(now_ns);
        if let (Some(ring), Some(m)) = (metadata_ring.as_mut(), plan.metadata.as_ref()) {
            // Published before the frame it belongs to, as a motor position would be.
            report.entry.claiming.store(2, Relaxed);
            let published_values = m.publish(ring, frame_id, timestamp_ns);
            report.entry.claiming.store(0, Relaxed);
            match published_values {
                Ok((p, d)) => {
                    (values.published, values.dropped) = (values.published + p, values.dropped + d)
                }
                Err(MetadataError::Interrupted) => break,
                Err(e) => return Err(anyhow::anyhow!("publishing metadata: {e}")),
            }
        }
        let meta = FrameMeta {
            frame_id,
            timestamp_ns,
            dtype: next.dtype,
            dims: &next.dims,
            flags: 0,
        };
        slot.publish(&meta).context("publishing a frame")?;
        report.active();
        published += 1;
        bytes += next.bytes() as u64;
        report.entry.last_frame_id.store(frame_id, Relaxed);
        report.outputs((published, bytes, dropped));
        if report.due() {
            rate.measure(report, published);
            let counters = source_counters(
                supply.as_ref(),
                feed.as_deref(),
                metadata_ring.is_some().then_some(&values),
            );
            if report.tick(missed, &counters) {
                supply.reset_counters();
                if let Some(feed) = feed.as_mut() {
                    feed.reset_counters();
                }
            }
        }
        frame_id += 1;
    }
    report.entry.below_rate.store(0, Relaxed);
    report.state(WORKER_DRAINING);
    // What the feed holds is published too: the metadata stage drains after the frames.
    if let (Some(feed), Some(ring), Some(m)) = (
        feed.as_mut(),
        metadata_ring.as_mut(),
        plan.metadata.as_ref(),
    ) {
        match values.publish_from(feed.as_mut(), ring, m) {
            Ok(()) | Err(MetadataError::Interrupted) => {}
            Err(e) => return Err(anyhow::anyhow!("publishing metadata: {e}")),
        }
    }
    producer.finish();
    if let Some(ring) = &mut metadata_ring {
        ring.finish();
    }
    missed += supply.take_missed();
    report.missed(missed);
    report.flush(&source_counters(
        supply.as_ref(),
        feed.as_deref(),
        metadata_ring.is_some().then_some(&values),
    ));
    report.state(WORKER_FINISHED);
    Ok(0)
}

/// A source's requested rate as last configured, and how well it holds it.
struct SourceRate {
    rate: Rate,
    args_gen: u64,
    meter: RateMeter,
}

impl SourceRate {
    /// The rate as the supervisor last published it (a restarted source keeps one
    /// `streamd configure` set), else the plan's `fps`.
    fn start(report: &Report<'_>, fps: f64) -> anyhow::Result<SourceRate> {
        let (args_gen, fps) = match current_args(report.stats, 0) {
            Some((gen, args)) => (gen, source_fps(&args).unwrap_or(fps)),
            None => (0, fps),
        };
        // Validated in the pipeline file already; checked again, never trusted to fit.
        let rate = Rate::new(fps, "fps").map_err(anyhow::Error::msg)?;
        report.entry.applied_gen.store(args_gen, Relaxed);
        Ok(SourceRate {
            rate,
            args_gen,
            meter: RateMeter::new(rate.get(), Instant::now(), 0),
        })
    }

    /// Takes a rate `streamd configure source fps=F` set since the last call, from frame
    /// `frame_id` on; true when there was one.
    fn changed(
        &mut self,
        report: &Report<'_>,
        frame_id: u64,
        published: u64,
    ) -> anyhow::Result<bool> {
        if report.stats.stage(0).args_gen.load(Relaxed) == self.args_gen {
            return Ok(false);
        }
        // None while the supervisor writes them: taken at the next call.
        let Some((gen, args)) = current_args(report.stats, 0) else {
            return Ok(false);
        };
        self.args_gen = gen;
        if let Some(fps) = source_fps(&args) {
            self.rate = Rate::new(fps, "fps").map_err(anyhow::Error::msg)?;
            self.meter = RateMeter::new(self.rate.get(), Instant::now(), published);
        }
        report.entry.applied_from_frame.store(frame_id, Relaxed);
        // SYNC: pairs with the supervisor's Acquire load when it waits for the workers to
        // take a configuration: applied_from_frame is visible.
        report.entry.applied_gen.store(gen, Release);
        Ok(true)
    }

    /// Shows the rate achieved by now, with `published` frames published so far.
    fn measure(&mut self, report: &Report<'_>, published: u64) {
        let measured = self.meter.record(Instant::now(), published);
        report
            .entry
            .achieved_fps
            .store(measured.achieved.to_bits(), Relaxed);
        report
            .entry
            .below_rate
            .store(u32::from(measured.below), Relaxed);
    }
}

/// The `fps` of the source's run-time arguments.
fn source_fps(args: &toml::Table) -> Option<f64> {
    processors::number("fps", args.get("fps")?).ok()
}

/// Metadata values a source published into its metadata ring, and dropped there.
#[derive(Default)]
struct Values {
    published: u64,
    dropped: u64,
}

impl Values {
    /// Publishes every value `feed` has, oldest first.
    fn publish_from(
        &mut self,
        feed: &mut dyn MetadataFeed,
        ring: &mut Producer,
        plan: &MetadataPlan,
    ) -> Result<(), MetadataError> {
        let taken = feed.take().map_err(MetadataError::Feed)?;
        for value in &taken {
            if plan.publish_value(ring, self.published + self.dropped, value)? {
                self.published += 1;
            } else {
                self.dropped += 1;
            }
        }
        Ok(())
    }
}

/// The source's counters: its supply's, its feed's, and the metadata values.
fn source_counters(
    supply: &dyn Source,
    feed: Option<&dyn MetadataFeed>,
    values: Option<&Values>,
) -> Vec<(String, u64)> {
    let mut counters = supply.counters();
    if let Some(feed) = feed {
        counters.extend(feed.counters());
    }
    if let Some(v) = values {
        counters.push(("metadata_values".into(), v.published));
        counters.push(("metadata_dropped".into(), v.dropped));
    }
    counters
}

/// One input ring of a stage worker.
struct Input {
    consumer: Consumer,
    ended: bool,
}

/// A stage worker's rings: inputs read in `group`, outputs by port, metadata rings.
#[derive(Clone, Copy)]
struct Wires<'a> {
    inputs: &'a [String],
    group: &'a str,
    outputs: &'a [String],
    metadata: &'a [String],
}

fn run_stage(
    spec: &WorkerSpec,
    plan: &StagePlan,
    wires: &Wires<'_>,
    report: &mut Report<'_>,
    host: Option<&dyn Host>,
) -> anyhow::Result<i32> {
    let Wires {
        inputs,
        group,
        outputs,
        metadata,
    } = *wires;
    let stats = report.stats;
    let stage_slot = stats.stage(spec.stage_index);
    // The arguments as last configured (they may have changed since the plan was made).
    let (mut args_gen, mut args) =
        current_args(stats, spec.stage_index).unwrap_or((0, plan.args.clone()));
    let mut processor = match (spec.python(), host) {
        (Some(_), Some(host)) => host.processor(&plan.processor, &args),
        _ => processors::build(&plan.processor, &args).map_err(|e| e.reason),
    }
    .map_err(|e| anyhow::anyhow!("stage '{}': {e}", plan.name))?;
    let stop = stop_flag();
    // A processor that makes frames durable later (a writer) holds them in the ring
    // until it has (spec §5.8): a crash then re-delivers them instead of losing them.
    let sync_every = processor.sync_interval();
    report.gauges = processor.gauges();
    let attach = |name: &String, group: String, batch: u32, set, delivery, hold| {
        let options = ConsumerOptions {
            group: Some(group),
            batch,
            set,
            delivery,
            wait: WaitMode::Futex,
            attach_timeout: Duration::from_secs(5),
            hold,
        };
        let mut consumer = Consumer::attach(name, &options)?;
        consumer.set_interrupt(stop.clone());
        anyhow::Ok(Input {
            consumer,
            ended: false,
        })
    };
    let mut ins = inputs
        .iter()
        .map(|name| {
            attach(
                name,
                group.to_string(),
                plan.batch,
                plan.set_of(spec.worker),
                plan.delivery,
                sync_every.is_some(),
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let metadata_group = plan.metadata_group(spec.worker);
    let mut side = metadata
        .iter()
        .map(|name| {
            attach(
                name,
                metadata_group.clone(),
                METADATA_BATCH,
                None,
                Delivery::Lossless,
                false,
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut producers = Vec::new();
    for name in outputs {
        let mut producer = Producer::resume(name)?;
        producer.set_interrupt(stop.clone());
        producers.push(producer);
    }
    let mut out = Outputs::new(producers);
    // Its own mapping of the stats segment, so the watch outlives any borrow here.
    let marks = StatsSegment::open(&spec.pipeline)?;
    let entry = spec.entry;
    out.watch_claims(Box::new(move |port| {
        let claiming = port.map_or(0, |p| p as u32 + 1);
        marks.entry(entry).claiming.store(claiming, Relaxed);
    }));
    let ctx = StageContext {
        stage: plan.name.clone(),
        worker: spec.worker,
        workers: plan.workers,
        inputs: ins.len(),
        outputs: plan.outputs.clone(),
        restarts: report.entry.restarts.load(Relaxed),
        previous: report.counter_base.clone(),
    };
    processor
        .start(&ctx)
        .map_err(|e| anyhow::anyhow!("stage '{}' could not start: {e}", plan.name))?;
    report.entry.applied_gen.store(args_gen, Relaxed);
    report.state(WORKER_RUNNING);
    let mut pending_config = false;
    let mut last_sync = Instant::now();
    let mut next = 0usize;
    let mut idle_pass = 0usize;
    // How long to wait for a frame before polling the processor (metadata may be due).
    let idle_wait = if side.is_empty() {
        Duration::from_millis(10)
    } else {
        Duration::from_millis(1)
    };
    let mut ended = 0usize;
    while ended < ins.len() {
        // `streamd configure`: new arguments apply from the next frame on.
        if stage_slot.args_gen.load(Relaxed) != args_gen {
            if let Some((gen, text)) = stats.read_args(spec.stage_index) {
                if let Ok(new_args) = serde_json::from_str::<toml::Table>(&text) {
                    for (key, value) in &new_args {
                        if args.get(key) != Some(value) {
                            if let Err(e) = processor.configure(key, value) {
                                report.error(&format!("configure {key}: {e}"));
                            }
                        }
                    }
                    args = new_args;
                }
                args_gen = gen;
                pending_config = true;
            }
        }
        // The next input that has not ended and that the processor wants (any open one
        // when it wants none), round robin, with no list built per frame.
        let active = ins.len() - ended;
        let pick = |wanted: bool| {
            (0..ins.len())
                .map(|i| (next + i) % ins.len())
                .find(|&i| !ins[i].ended && (!wanted || processor.wants(i)))
        };
        let k = pick(true)
            .or_else(|| pick(false))
            .expect("the loop runs while an input is open");
        next = k + 1;
        // One input: wait a while. Several: poll each, then nap briefly on one.
        let wait = if active == 1 {
            idle_wait
        } else if idle_pass >= active {
            Duration::from_millis(1)
        } else {
            Duration::ZERO
        };
        // Every value published before the frame is taken reaches the processor first;
        // new values may let held frames go, decided before the next frame comes.
        if take_metadata(&mut side, processor.as_mut(), report)? {
            poll(processor.as_mut(), &mut out, report);
        }
        let input = &mut ins[k];
        let mut must_settle = false;
        match input.consumer.recv_timeout(wait) {
            Ok(Some(frame)) => {
                idle_pass = 0;
                let (frame_id, payload_len) = (frame.header().frame_id, frame.header().payload_len);
                let lag = frame.lag();
                let began = Instant::now();
                let result = processor.process(k, &frame, &mut out);
                let took = began.elapsed();
                drop(frame);
                if let Err(e) = result {
                    report.error(&format!("stage '{}' frame {}: {e}", plan.name, frame_id));
                    report.fault(processor.fault());
                } else if report.entry.state.load(Relaxed) == WORKER_ERROR {
                    report.fault(processor.fault());
                }
                report.frame_in(frame_id, payload_len, lag, took);
                report.outputs(out.counts());
                if pending_config {
                    pending_config = false;
                    report.entry.applied_from_frame.store(frame_id, Relaxed);
                    // SYNC: pairs with the supervisor's Acquire load when it waits for the
                    // workers to take a configuration: applied_from_frame is visible.
                    report.entry.applied_gen.store(args_gen, Release);
                }
            }
            Ok(None) => {
                idle_pass += 1;
                poll(processor.as_mut(), &mut out, report);
                // Idle: `status` shows counters that include every frame handled.
                if report.counters_behind {
                    report.show_counters(&processor.counters());
                }
            }
            Err(RecvError::EndOfStream { .. }) => {
                input.ended = true;
                ended += 1;
            }
            Err(RecvError::ProducerDied { pid, .. }) => {
                anyhow::bail!("the pipeline's supervisor (pid {pid}) died")
            }
            Err(RecvError::Interrupted) => return Ok(EXIT_INTERRUPTED),
            Err(RecvError::MustCommit) => must_settle = true,
            Err(e @ RecvError::Corrupt { .. }) => report.error(&e.to_string()),
            Err(e @ (RecvError::Damaged { .. } | RecvError::FrameDetached { .. })) => {
                anyhow::bail!("{e}")
            }
        };
        if must_settle || sync_every.is_some_and(|every| last_sync.elapsed() >= every) {
            settle(processor.as_mut(), &mut ins, report, &plan.name);
            last_sync = Instant::now();
        }
        if report.due() && report.tick(missed(&ins, &side), &processor.counters()) {
            processor.reset_counters();
        }
    }
    report.state(WORKER_DRAINING);
    take_metadata(&mut side, processor.as_mut(), report)?;
    if let Err(e) = processor.stop(&mut out) {
        report.error(&format!("stage '{}' stop: {e}", plan.name));
    }
    // Whatever stop could not make durable is counted by the processor by now.
    for input in &mut ins {
        input.consumer.commit();
    }
    out.finish();
    report.outputs(out.counts());
    report.missed(missed(&ins, &side));
    report.flush(&processor.counters());
    report.state(WORKER_FINISHED);
    Ok(0)
}

/// Frames the ring skipped past this worker, over its inputs and metadata rings.
fn missed(ins: &[Input], side: &[Input]) -> u64 {
    ins.iter()
        .chain(side)
        .map(|i| i.consumer.counters().missed)
        .sum()
}

/// Metadata records a member of a metadata group claims at once (one lock per run).
pub const METADATA_BATCH: u32 = 64;

/// Hands every metadata record published so far to the processor; true if any came.
fn take_metadata(
    side: &mut [Input],
    processor: &mut dyn processors::Processor,
    report: &mut Report<'_>,
) -> anyhow::Result<bool> {
    let mut took = false;
    for input in side.iter_mut().filter(|i| !i.ended) {
        loop {
            match input.consumer.recv_timeout(Duration::ZERO) {
                Ok(Some(record)) => {
                    took = true;
                    if let Err(e) = processor.metadata(&record) {
                        report.error(&format!(
                            "metadata record {}: {e}",
                            record.header().frame_id
                        ));
                    }
                }
                Ok(None) => break,
                Err(RecvError::EndOfStream { .. }) => {
                    input.ended = true;
                    break;
                }
                Err(RecvError::ProducerDied { pid, .. }) => {
                    anyhow::bail!("the pipeline's supervisor (pid {pid}) died")
                }
                // Metadata rings are read without holding (MustCommit cannot come).
                Err(RecvError::Interrupted | RecvError::MustCommit) => break,
                Err(e @ RecvError::Corrupt { .. }) => {
                    report.error(&e.to_string());
                    break;
                }
                Err(e @ (RecvError::Damaged { .. } | RecvError::FrameDetached { .. })) => {
                    anyhow::bail!("{e}")
                }
            }
        }
    }
    Ok(took)
}

/// Makes what the processor was handed durable, shows the counters that say so, then
/// lets the rings forget those frames (spec §5.8). A crash before the commit re-delivers
/// them; one after it finds them counted.
fn settle(
    processor: &mut dyn processors::Processor,
    ins: &mut [Input],
    report: &mut Report<'_>,
    stage: &str,
) {
    if ins.iter().all(|i| i.consumer.held() == 0) {
        return;
    }
    if let Err(e) = processor.sync() {
        report.error(&format!("stage '{stage}': {e}"));
        report.fault(processor.fault());
    }
    report.show_counters(&processor.counters());
    for input in ins {
        input.consumer.commit();
    }
}

fn poll(processor: &mut dyn processors::Processor, out: &mut Outputs, report: &mut Report<'_>) {
    if let Err(e) = processor.poll(out) {
        report.error(&format!("poll: {e}"));
    }
    report.outputs(out.counts());
}

/// Stage `stage`'s arguments as the supervisor last published them.
fn current_args(stats: &StatsSegment, stage: usize) -> Option<(u64, toml::Table)> {
    let (gen, text) = stats.read_args(stage)?;
    Some((gen, serde_json::from_str(&text).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processing_times_fall_in_power_of_two_microsecond_buckets() {
        assert_eq!(time_bucket(0), 0);
        assert_eq!(time_bucket(1_999), 0);
        assert_eq!(time_bucket(2_000), 1);
        assert_eq!(time_bucket(3_999), 1);
        assert_eq!(time_bucket(4_000), 2);
        assert_eq!(time_bucket(1_000_000), 9);
        assert_eq!(time_bucket(u64::MAX), TIME_BUCKETS - 1);
    }
}
