//! A stage or source process: `streamd worker SPEC` (spawned by the supervisor, not run
//! by hand). It attaches to its input rings in its group, resumes production of its
//! output ring, runs its processor on every frame and keeps its entry in the stats
//! segment current. It exits 0 only when every input ended and its outputs are
//! finished; any other exit is a crash the supervisor restarts.

use super::plan::{MetadataPlan, SourceContent, SourcePlan, StagePlan};
use super::source::{pace_or_stop, MetadataError, MetadataFeed, RateMeter, Schedule};
use crate::processors::python::PythonCode;
use crate::processors::{self, Outputs, ProcessError, StageContext};
use crate::registry;
use crate::ring::{
    AttachError, ClaimError, Consumer, ConsumerOptions, Delivery, Frame, FrameMeta, Producer,
    PublishError, RecvError, WaitMode,
};
use crate::sources::{Next, Source, SuppliedFrame};
use crate::stats::layout::*;
use crate::stats::{StatsError, StatsSegment};
use crate::sys::{self, now_ns, stop_flag};
use crate::units::Rate;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::{Relaxed, Release};
use std::sync::Arc;
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

// Every counter a processor may show has a place in its stats entry.
const _: () = assert!(processors::MAX_COUNTERS <= MAX_COUNTERS);

/// Exit status of a worker interrupted by a signal (a crash for the supervisor).
pub const EXIT_INTERRUPTED: i32 = 4;
/// How often an idle worker shows it lives, and a busy one refreshes its quantiles.
const HEARTBEAT: Duration = Duration::from_millis(100);

/// Why a worker stopped short: the process exits with it, and the supervisor restarts
/// it as a crash.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("the supervisor (pid {0}) is gone")]
    SupervisorGone(u32),
    #[error("the pipeline's supervisor (pid {0}) died")]
    SupervisorDied(u32),
    #[error(transparent)]
    Stats(#[from] StatsError),
    /// An input, metadata or output ring could not be attached or resumed.
    #[error(transparent)]
    Attach(#[from] AttachError),
    /// An input ring is damaged past reading.
    #[error(transparent)]
    Ring(RecvError),
    /// The stage's processor could not be made from its arguments.
    #[error("stage '{stage}': {reason}")]
    Build { stage: String, reason: String },
    #[error("stage '{stage}' could not start: {reason}")]
    Start { stage: String, reason: ProcessError },
    /// The source could not be opened (its files, its socket, its Python class).
    #[error("the {kind} source: {reason}")]
    OpenSource { kind: String, reason: String },
    #[error("the metadata channels: {0}")]
    MetadataChannels(String),
    /// The source's frames could not be made (its files, its rate, its supply).
    #[error("{0}")]
    Source(String),
    #[error("publishing metadata: {0}")]
    Metadata(MetadataError),
    #[error("publishing a frame")]
    Publish(#[source] PublishError),
    /// The stage this one comes `after` ended without finishing a frame.
    #[error("stage '{stage}' will not take frame {frame_id}: stage '{after}', which it comes after, failed before finishing it; see that stage's error")]
    AfterFailed {
        stage: String,
        after: String,
        frame_id: u64,
    },
}

/// Runs a worker to its end; returns the process exit status.
pub fn run(spec: &WorkerSpec) -> Result<i32, WorkerError> {
    run_hosted(spec, None)
}

/// Runs a worker whose stage or source may need `host` (see [`Host`]).
pub fn run_hosted(spec: &WorkerSpec, host: Option<&dyn Host>) -> Result<i32, WorkerError> {
    sys::ignore_file_size_signal();
    if !sys::die_with_parent(spec.supervisor_pid) {
        return Err(WorkerError::SupervisorGone(spec.supervisor_pid));
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
        stats.write_last_error(spec.entry, &crate::units::sentence(e));
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
            .store(spec.core.map_or(NO_CORE, |c| c as u64), Relaxed);
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
        self.entry.set_last_frame_id(frame_id);
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
        let totals = counters.iter().map(|(name, value)| {
            let base = self
                .counter_base
                .iter()
                .find(|(n, _)| n == name && !self.gauges.contains(&n.as_str()))
                .map_or(0, |(_, b)| *b);
            (name.as_str(), base + value)
        });
        self.stats.write_counters(self.index, totals);
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
) -> Result<i32, WorkerError> {
    let mut source = SourceLoop::open(plan, output, metadata, report, host)?;
    while !source.stop.load(Relaxed) && plan.frames.is_none_or(|n| source.frame_id < n) {
        if source.step()? == Flow::Stop {
            break;
        }
    }
    source.finish()
}

/// Whether a source goes on after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Next,
    /// Interrupted, or the supply ended.
    Stop,
}

/// A source worker between its start and its end: where its frames and metadata values
/// come from, its rings, its schedule and what it counted.
struct SourceLoop<'r, 'a> {
    plan: &'r SourcePlan,
    report: &'r mut Report<'a>,
    supply: Box<dyn Source>,
    /// Channel values from EPICS PVs, through the host, published between frames.
    feed: Option<Box<dyn MetadataFeed>>,
    producer: Producer,
    metadata_ring: Option<Producer>,
    stop: Arc<AtomicBool>,
    /// The last frame a crashed predecessor published: a supply that numbers its own
    /// frames starts again from its first, and those are not published twice.
    last_id: Option<u64>,
    frame_id: u64,
    rate: SourceRate,
    schedule: Schedule,
    values: Values,
    published: u64,
    bytes: u64,
    dropped: u64,
    missed: u64,
}

impl<'r, 'a> SourceLoop<'r, 'a> {
    /// Opens the supply (built in, or the host's) and the feed, and resumes the rings
    /// after the last frame a predecessor published.
    fn open(
        plan: &'r SourcePlan,
        output: &str,
        metadata: Option<&str>,
        report: &'r mut Report<'a>,
        host: Option<&dyn Host>,
    ) -> Result<SourceLoop<'r, 'a>, WorkerError> {
        let supply: Box<dyn Source> = match (&plan.content, host) {
            (SourceContent::Python { kind, code, args }, Some(host)) => host
                .frames(code, args, plan)
                .map_err(|reason| WorkerError::OpenSource {
                    kind: kind.clone(),
                    reason,
                })?,
            (content, _) => {
                registry::open_source(plan).map_err(|reason| WorkerError::OpenSource {
                    kind: content.kind().to_string(),
                    reason,
                })?
            }
        };
        report.gauges = supply.gauges();
        let feed = match (plan.metadata.as_ref(), host) {
            (Some(m), Some(host)) if !m.pvs.is_empty() => {
                Some(host.metadata(m).map_err(WorkerError::MetadataChannels)?)
            }
            _ => None,
        };
        let mut producer = Producer::resume(output)?;
        let stop = stop_flag();
        producer.set_interrupt(stop.clone());
        let metadata_ring = match metadata {
            Some(name) => {
                let mut ring = Producer::resume(name)?;
                ring.set_interrupt(stop.clone());
                Some(ring)
            }
            None => None,
        };
        // A restarted source continues after the last frame its predecessor published.
        let last_id = producer.last_published().map(|h| h.frame_id);
        let frame_id = last_id.map_or(0, |id| id + 1);
        // The rate as last configured (`streamd configure source fps=F` changes it).
        let rate = SourceRate::start(report, plan.fps)?;
        let schedule = Schedule::new(rate.rate, frame_id);
        report.state(WORKER_RUNNING);
        Ok(SourceLoop {
            plan,
            report,
            supply,
            feed,
            producer,
            metadata_ring,
            stop,
            last_id,
            frame_id,
            rate,
            schedule,
            values: Values::default(),
            published: 0,
            bytes: 0,
            dropped: 0,
            missed: 0,
        })
    }

    /// One frame: a new rate, the wait for its time, the values that arrived before
    /// it, then the frame itself.
    fn step(&mut self) -> Result<Flow, WorkerError> {
        if self
            .rate
            .changed(self.report, self.frame_id, self.published)?
        {
            self.schedule = Schedule::new(self.rate.rate, self.frame_id);
        }
        match self.wait_due()? {
            Pace::Due => {}
            Pace::Again => return Ok(Flow::Next),
            Pace::Stop => return Ok(Flow::Stop),
        }
        let next = self
            .supply
            .next(self.frame_id)
            .map_err(WorkerError::Source)?;
        // Values that arrived before this frame go first, as a motor position would.
        if self.publish_feed()? == Flow::Stop {
            return Ok(Flow::Stop);
        }
        // Frames the source missed that no frame carries (a refused image).
        self.missed += self.supply.take_missed();
        match next {
            Next::Frame(next) => self.publish(next),
            Next::Idle | Next::Problem(_) => {
                if let Next::Problem(why) = &next {
                    self.report.error(why);
                }
                if self.report.due() {
                    self.show(false);
                }
                Ok(Flow::Next)
            }
            Next::End => Ok(Flow::Stop),
        }
    }

    /// Waits until the current frame is due. Waiting for a slow rate's next frame, the
    /// source still shows it lives, and takes a new rate at once (`Again`).
    fn wait_due(&mut self) -> Result<Pace, WorkerError> {
        let Some(at) = self.schedule.due(self.frame_id) else {
            return Ok(Pace::Due);
        };
        loop {
            let wake = at.min(Instant::now() + HEARTBEAT);
            if !pace_or_stop(wake, &self.stop) {
                return Ok(Pace::Stop);
            }
            if wake == at {
                return Ok(Pace::Due);
            }
            self.report.beat();
            self.rate.measure(self.report, self.published);
            if self
                .rate
                .changed(self.report, self.frame_id, self.published)?
            {
                return Ok(Pace::Again);
            }
        }
    }

    /// Publishes every value the feed has; `Stop` when interrupted.
    fn publish_feed(&mut self) -> Result<Flow, WorkerError> {
        let (Some(feed), Some(ring), Some(m)) = (
            self.feed.as_mut(),
            self.metadata_ring.as_mut(),
            self.plan.metadata.as_ref(),
        ) else {
            return Ok(Flow::Next);
        };
        match self.values.publish_from(feed.as_mut(), ring, m) {
            Ok(()) => Ok(Flow::Next),
            Err(MetadataError::Interrupted) => Ok(Flow::Stop),
            Err(e) => Err(WorkerError::Metadata(e)),
        }
    }

    /// Claims a slot, writes the supplied frame into it and publishes it after its
    /// simulated metadata values.
    fn publish(&mut self, next: SuppliedFrame) -> Result<Flow, WorkerError> {
        if self.last_id.is_some_and(|id| next.frame_id <= id) {
            return Ok(Flow::Next);
        }
        self.frame_id = next.frame_id;
        self.missed += next.missed;
        self.report.entry.claiming.store(1, Relaxed);
        let claimed = self.producer.claim();
        self.report.entry.claiming.store(0, Relaxed);
        let mut slot = match claimed {
            Ok(slot) => slot,
            Err(ClaimError::Full) => {
                self.dropped += 1;
                self.frame_id += 1;
                self.report
                    .outputs((self.published, self.bytes, self.dropped));
                return Ok(Flow::Next);
            }
            Err(ClaimError::Interrupted) => return Ok(Flow::Stop),
        };
        if let Err(e) = self.supply.write(&mut slot) {
            // Not published; the next claim reuses the slot.
            self.report.error(&format!("frame {}: {e}", self.frame_id));
            self.frame_id += 1;
            return Ok(Flow::Next);
        }
        let frame_id = self.frame_id;
        let timestamp_ns = next
            .timestamp_ns
            .or_else(|| self.schedule.timestamp_ns(frame_id))
            .unwrap_or_else(now_ns);
        if let (Some(ring), Some(m)) = (self.metadata_ring.as_mut(), self.plan.metadata.as_ref()) {
            // Published before the frame it belongs to, as a motor position would be.
            self.report.entry.claiming.store(2, Relaxed);
            let published_values = m.publish(ring, frame_id, timestamp_ns);
            self.report.entry.claiming.store(0, Relaxed);
            match published_values {
                Ok((p, d)) => {
                    self.values.published += p;
                    self.values.dropped += d;
                }
                Err(MetadataError::Interrupted) => return Ok(Flow::Stop),
                Err(e) => return Err(WorkerError::Metadata(e)),
            }
        }
        let meta = FrameMeta {
            frame_id,
            timestamp_ns,
            dtype: next.dtype,
            dims: &next.dims,
            flags: 0,
        };
        slot.publish(&meta).map_err(WorkerError::Publish)?;
        self.report.active();
        self.published += 1;
        self.bytes += next.bytes() as u64;
        self.report.entry.set_last_frame_id(frame_id);
        self.report
            .outputs((self.published, self.bytes, self.dropped));
        if self.report.due() {
            self.show(true);
        }
        self.frame_id += 1;
        Ok(Flow::Next)
    }

    /// The heartbeat and the counters (with the rate achieved, after a frame). After
    /// `reset-stats` the frame counts go on (the entry's reset base marks where `status`
    /// starts); the source's and the feed's own counters start over.
    fn show(&mut self, measure: bool) {
        if measure {
            self.rate.measure(self.report, self.published);
        }
        let counters = self.counters();
        if self.report.tick(self.missed, &counters) {
            self.supply.reset_counters();
            if let Some(feed) = self.feed.as_mut() {
                feed.reset_counters();
            }
        }
    }

    fn counters(&self) -> Vec<(String, u64)> {
        source_counters(
            self.supply.as_ref(),
            self.feed.as_deref(),
            self.metadata_ring.is_some().then_some(&self.values),
        )
    }

    /// The stream ends: what the feed holds is published too (the metadata stage drains
    /// after the frames), both rings end, the final counters are shown.
    fn finish(mut self) -> Result<i32, WorkerError> {
        self.report.entry.below_rate.store(0, Relaxed);
        self.report.state(WORKER_DRAINING);
        self.publish_feed()?;
        self.producer.finish();
        if let Some(ring) = &mut self.metadata_ring {
            ring.finish();
        }
        self.missed += self.supply.take_missed();
        self.report.missed(self.missed);
        let counters = self.counters();
        self.report.flush(&counters);
        self.report.state(WORKER_FINISHED);
        Ok(0)
    }
}

/// How the wait for a frame's time ended.
enum Pace {
    Due,
    /// A new rate came while waiting: start the frame again.
    Again,
    Stop,
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
    fn start(report: &Report<'_>, fps: f64) -> Result<SourceRate, WorkerError> {
        let (args_gen, fps) = match current_args(report.stats, 0) {
            Some((gen, args)) => (gen, source_fps(&args).unwrap_or(fps)),
            None => (0, fps),
        };
        // Validated in the pipeline file already; checked again, never trusted to fit.
        let rate = Rate::new(fps, "fps").map_err(WorkerError::Source)?;
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
    ) -> Result<bool, WorkerError> {
        if report.stats.stage(0).args_gen.load(Relaxed) == self.args_gen {
            return Ok(false);
        }
        // None while the supervisor writes them: taken at the next call.
        let Some((gen, args)) = current_args(report.stats, 0) else {
            return Ok(false);
        };
        self.args_gen = gen;
        if let Some(fps) = source_fps(&args) {
            self.rate = Rate::new(fps, "fps").map_err(WorkerError::Source)?;
            self.meter = RateMeter::new(self.rate.get(), Instant::now(), published);
        }
        report.entry.set_applied_from_frame(frame_id);
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

/// Runs stage worker `spec` in the calling thread and hands its loop to `drive`, which
/// steps it: for benches and tests that feed the input and read the output between
/// steps in one thread. A worker process runs [`run`] instead, to the end of its inputs.
///
/// # Panics
///
/// When `spec` is a source's.
pub fn with_stage<T>(
    spec: &WorkerSpec,
    drive: impl FnOnce(&mut StageLoop<'_, '_>) -> T,
) -> Result<T, WorkerError> {
    let Role::Stage {
        plan,
        inputs,
        group,
        outputs,
        metadata,
    } = &spec.role
    else {
        panic!("with_stage runs a stage, not a source");
    };
    let stats = StatsSegment::open(&spec.pipeline)?;
    let mut report = Report::start(&stats, spec);
    let wires = Wires {
        inputs,
        group,
        outputs,
        metadata,
    };
    let mut stage = StageLoop::open(spec, plan, &wires, &mut report, None)?;
    Ok(drive(&mut stage))
}

fn run_stage(
    spec: &WorkerSpec,
    plan: &StagePlan,
    wires: &Wires<'_>,
    report: &mut Report<'_>,
    host: Option<&dyn Host>,
) -> Result<i32, WorkerError> {
    let mut stage = StageLoop::open(spec, plan, wires, report, host)?;
    while stage.ended < stage.ins.len() {
        if let Some(code) = stage.step()? {
            return Ok(code);
        }
    }
    stage.finish()
}

/// A stage worker between its start and its end: its processor, its rings and where it
/// is in reading them.
pub struct StageLoop<'r, 'a> {
    spec: &'r WorkerSpec,
    plan: &'r StagePlan,
    report: &'r mut Report<'a>,
    processor: Box<dyn processors::Processor>,
    /// The arguments as last configured, and their generation in the stats segment.
    args: toml::Table,
    args_gen: u64,
    /// A configuration was applied: the next frame says from where.
    pending_config: bool,
    ins: Vec<Input>,
    /// Metadata rings, read in full before every input frame.
    side: Vec<Input>,
    out: Outputs,
    /// How often the processor makes its frames durable, if it holds them (a writer).
    sync_every: Option<Duration>,
    last_sync: Instant,
    /// The input to try first next (round robin).
    next: usize,
    /// Inputs tried in a row without a frame.
    idle_pass: usize,
    /// How long to wait for a frame before polling the processor.
    idle_wait: Duration,
    /// Inputs whose stream ended.
    ended: usize,
    /// Set when the worker is asked to stop; ends a wait for the stage `after` names.
    stop: Arc<AtomicBool>,
}

impl<'r, 'a> StageLoop<'r, 'a> {
    /// Builds and configures the processor, attaches to the input and metadata rings in
    /// the stage's groups, resumes the output rings and starts the processor.
    fn open(
        spec: &'r WorkerSpec,
        plan: &'r StagePlan,
        wires: &Wires<'_>,
        report: &'r mut Report<'a>,
        host: Option<&dyn Host>,
    ) -> Result<StageLoop<'r, 'a>, WorkerError> {
        // The arguments as last configured (they may have changed since the plan was made).
        let (args_gen, args) =
            current_args(report.stats, spec.stage_index).unwrap_or((0, plan.args.clone()));
        let mut processor = match (spec.python(), host) {
            (Some(_), Some(host)) => host.processor(&plan.processor, &args),
            _ => registry::build(&plan.processor, &args).map_err(|e| e.reason),
        }
        .map_err(|reason| WorkerError::Build {
            stage: plan.name.clone(),
            reason,
        })?;
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
            Ok::<_, WorkerError>(Input {
                consumer,
                ended: false,
            })
        };
        let ins = wires
            .inputs
            .iter()
            .map(|name| {
                let group = wires.group.to_string();
                let set = plan.set_of(spec.worker);
                attach(
                    name,
                    group,
                    plan.batch,
                    set,
                    plan.delivery,
                    sync_every.is_some(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let metadata_group = plan.metadata_group(spec.worker);
        let side = wires
            .metadata
            .iter()
            .map(|name| {
                let group = metadata_group.clone();
                attach(name, group, METADATA_BATCH, None, Delivery::Lossless, false)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut producers = Vec::new();
        for name in wires.outputs {
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
        processor.start(&ctx).map_err(|reason| WorkerError::Start {
            stage: plan.name.clone(),
            reason,
        })?;
        report.entry.applied_gen.store(args_gen, Relaxed);
        report.state(WORKER_RUNNING);
        let idle_wait = if side.is_empty() {
            Duration::from_millis(10)
        } else {
            Duration::from_millis(1)
        };
        Ok(StageLoop {
            spec,
            plan,
            report,
            processor,
            args,
            args_gen,
            pending_config: false,
            ins,
            side,
            out,
            sync_every,
            last_sync: Instant::now(),
            next: 0,
            idle_pass: 0,
            idle_wait,
            ended: 0,
            stop,
        })
    }

    /// One frame, or one wait for it, from the next input, with what goes around it:
    /// a new configuration before, metadata and polls, syncs and the heartbeat after.
    /// `Some(status)` ends the worker early (interrupted).
    pub fn step(&mut self) -> Result<Option<i32>, WorkerError> {
        self.apply_configuration();
        let k = self.pick_input();
        let wait = self.wait();
        // Every value published before the frame is taken reaches the processor first;
        // new values may let held frames go, decided before the next frame comes.
        if take_metadata(&mut self.side, self.processor.as_mut(), self.report)? {
            poll(self.processor.as_mut(), &mut self.out, self.report);
        }
        let must_settle = match self.receive(k, wait)? {
            Received::Frame | Received::Nothing => false,
            Received::MustSettle => true,
            Received::Interrupted => return Ok(Some(EXIT_INTERRUPTED)),
        };
        let sync_due = self
            .sync_every
            .is_some_and(|every| self.last_sync.elapsed() >= every);
        if must_settle || sync_due {
            settle(
                self.processor.as_mut(),
                &mut self.ins,
                self.report,
                &self.plan.name,
            );
            self.last_sync = Instant::now();
        }
        if self.report.due()
            && self
                .report
                .tick(missed(&self.ins, &self.side), &self.processor.counters())
        {
            self.processor.reset_counters();
        }
        Ok(None)
    }

    /// `streamd configure`: new arguments apply from the next frame on.
    fn apply_configuration(&mut self) {
        let stats = self.report.stats;
        let slot = stats.stage(self.spec.stage_index);
        if slot.args_gen.load(Relaxed) == self.args_gen {
            return;
        }
        let Some((gen, text)) = stats.read_args(self.spec.stage_index) else {
            return;
        };
        if let Ok(new_args) = serde_json::from_str::<toml::Table>(&text) {
            for (key, value) in &new_args {
                if self.args.get(key) == Some(value) {
                    continue;
                }
                if let Err(e) = self.processor.configure(key, value) {
                    self.report.error(&format!("configure {key}: {e}"));
                }
            }
            self.args = new_args;
            // A holding writer's sync interval (`flush_ms`) may have changed; whether it
            // holds at all was settled when it attached.
            if self.sync_every.is_some() {
                self.sync_every = self.processor.sync_interval().or(self.sync_every);
            }
        }
        self.args_gen = gen;
        self.pending_config = true;
    }

    /// The next input that has not ended and that the processor wants (any open one
    /// when it wants none), round robin, with no list built per frame.
    fn pick_input(&mut self) -> usize {
        let (ins, processor) = (&self.ins, &self.processor);
        let pick = |wanted: bool| {
            (0..ins.len())
                .map(|i| (self.next + i) % ins.len())
                .find(|&i| !ins[i].ended && (!wanted || processor.wants(i)))
        };
        let k = pick(true)
            .or_else(|| pick(false))
            .expect("the loop runs while an input is open");
        self.next = k + 1;
        k
    }

    /// How long to wait for a frame: one input waits a while; several are polled in
    /// turn, with a short nap once a whole round brought nothing.
    fn wait(&self) -> Duration {
        let active = self.ins.len() - self.ended;
        if active == 1 {
            self.idle_wait
        } else if self.idle_pass >= active {
            Duration::from_millis(1)
        } else {
            Duration::ZERO
        }
    }

    /// Takes a frame from input `k` and hands it to the processor, or notes why none came.
    fn receive(&mut self, k: usize, wait: Duration) -> Result<Received, WorkerError> {
        let StageLoop {
            plan,
            report,
            processor,
            args_gen,
            pending_config,
            ins,
            out,
            idle_pass,
            ended,
            stop,
            ..
        } = self;
        let input = &mut ins[k];
        match input.consumer.recv_timeout(wait) {
            Ok(Some(frame)) => {
                *idle_pass = 0;
                if let Some(after) = &plan.after {
                    let waited = wait_until_finished(&frame, after, stop, report);
                    if waited != AfterWait::Finished {
                        // Not handed over nor released: when this worker leaves, its run
                        // from this frame on is left to a mate or its successor (§7.3).
                        let frame_id = frame.header().frame_id;
                        frame.detach();
                        return match waited {
                            AfterWait::Failed => Err(WorkerError::AfterFailed {
                                stage: plan.name.clone(),
                                after: after.clone(),
                                frame_id,
                            }),
                            _ => Ok(Received::Interrupted),
                        };
                    }
                }
                let (frame_id, payload_len) = (frame.header().frame_id, frame.header().payload_len);
                let lag = frame.lag();
                let began = Instant::now();
                let result = processor.process(k, &frame, out);
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
                if *pending_config {
                    *pending_config = false;
                    report.entry.set_applied_from_frame(frame_id);
                    // SYNC: pairs with the supervisor's Acquire load when it waits for the
                    // workers to take a configuration: applied_from_frame is visible.
                    report.entry.applied_gen.store(*args_gen, Release);
                }
                Ok(Received::Frame)
            }
            Ok(None) => {
                *idle_pass += 1;
                poll(processor.as_mut(), out, report);
                // Idle: `status` shows counters that include every frame handled.
                if report.counters_behind {
                    report.show_counters(&processor.counters());
                }
                Ok(Received::Nothing)
            }
            Err(RecvError::EndOfStream { .. }) => {
                input.ended = true;
                *ended += 1;
                Ok(Received::Nothing)
            }
            Err(RecvError::ProducerDied { pid, .. }) => Err(WorkerError::SupervisorDied(pid)),
            Err(RecvError::Interrupted) => Ok(Received::Interrupted),
            Err(RecvError::MustCommit) => Ok(Received::MustSettle),
            Err(e @ RecvError::Corrupt { .. }) => {
                report.error(&e.to_string());
                Ok(Received::Nothing)
            }
            Err(e @ (RecvError::Damaged { .. } | RecvError::FrameDetached { .. })) => {
                Err(WorkerError::Ring(e))
            }
        }
    }

    /// Every input ended: the processor stops, what it holds is committed, the output
    /// streams end and the final counters are shown.
    fn finish(mut self) -> Result<i32, WorkerError> {
        let report = &mut *self.report;
        report.state(WORKER_DRAINING);
        take_metadata(&mut self.side, self.processor.as_mut(), report)?;
        if let Err(e) = self.processor.stop(&mut self.out) {
            report.error(&format!("stage '{}' stop: {e}", self.plan.name));
        }
        // Whatever stop could not make durable is counted by the processor by now.
        for input in &mut self.ins {
            input.consumer.commit();
        }
        self.out.finish();
        report.outputs(self.out.counts());
        report.missed(missed(&self.ins, &self.side));
        report.flush(&self.processor.counters());
        report.state(WORKER_FINISHED);
        Ok(0)
    }
}

/// How long a worker waiting for the stage it comes `after` sleeps between looks: that
/// stage's members wake nobody when they finish a frame.
const AFTER_NAP: Duration = Duration::from_micros(50);

/// How a wait for the stage a stage comes `after` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterWait {
    Finished,
    /// The worker was asked to stop.
    Stopped,
    /// That stage is over and some worker of it failed: the frame may never have been
    /// finished, and taking it would pass it on as if it had.
    Failed,
}

/// Waits until the lossless group of stage `after` has finished `frame`. The supervisor
/// holds that group until every worker of the stage has ended, so a group gone means
/// the stage is over: every frame was finished if every worker finished. The worker
/// shows it lives meanwhile: waiting for a slower stage is not a stall.
fn wait_until_finished(
    frame: &Frame<'_>,
    after: &str,
    stop: &AtomicBool,
    report: &mut Report<'_>,
) -> AfterWait {
    loop {
        match frame.finished_by(after) {
            Some(true) => return AfterWait::Finished,
            None if stage_finished(report.stats, after) => return AfterWait::Finished,
            None => return AfterWait::Failed,
            Some(false) => {}
        }
        if stop.load(Relaxed) {
            return AfterWait::Stopped;
        }
        if report.due() {
            report.beat();
        }
        std::thread::sleep(AFTER_NAP);
    }
}

/// Whether every worker of stage `name` finished (none failed or is still to run).
fn stage_finished(stats: &StatsSegment, name: &str) -> bool {
    (0..stats.stage_count())
        .find(|&i| stats.stage_name(i) == name)
        .is_some_and(|i| {
            let slot = stats.stage(i);
            let first = slot.first_entry.load(Relaxed) as usize;
            // Final states: stored by each worker before it exited, and the supervisor
            // let the group go only after they all had (our load of the group's state,
            // SC, follows that).
            (first..first + slot.workers.load(Relaxed) as usize)
                .all(|e| stats.entry(e).state.load(Relaxed) == WORKER_FINISHED)
        })
}

/// What one receive on an input came to.
enum Received {
    /// A frame was handed to the processor.
    Frame,
    /// No frame: a timeout (the processor was polled), an input ended, a damaged slot.
    Nothing,
    /// A holding consumer must commit before it reads on.
    MustSettle,
    /// The worker was asked to stop.
    Interrupted,
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
) -> Result<bool, WorkerError> {
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
                    return Err(WorkerError::SupervisorDied(pid))
                }
                // Metadata rings are read without holding (MustCommit cannot come).
                Err(RecvError::Interrupted | RecvError::MustCommit) => break,
                Err(e @ RecvError::Corrupt { .. }) => {
                    report.error(&e.to_string());
                    break;
                }
                Err(e @ (RecvError::Damaged { .. } | RecvError::FrameDetached { .. })) => {
                    return Err(WorkerError::Ring(e))
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
