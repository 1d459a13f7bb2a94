//! A stage or source process: `streamd worker SPEC` (spawned by the supervisor, not run
//! by hand). It attaches to its input rings in its group, resumes production of its
//! output ring, runs its processor on every frame and keeps its entry in the stats
//! segment current. It exits 0 only when every input ended and its outputs are
//! finished; any other exit is a crash the supervisor restarts.

use super::config::{SourcePlan, StagePlan};
use super::source::{pace, FrameContent};
use crate::commands::{now_ns, stop_flag};
use crate::processors::{self, Outputs, StageContext};
use crate::ring::{
    ClaimError, Consumer, ConsumerOptions, FrameMeta, Producer, RecvError, WaitMode,
};
use crate::stats::layout::*;
use crate::stats::StatsSegment;
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
    },
    Stage {
        plan: StagePlan,
        /// Input segments, every one of them read in `group`.
        inputs: Vec<String>,
        group: String,
        output: Option<String>,
    },
}

/// Exit status of a worker interrupted by a signal (a crash for the supervisor).
pub const EXIT_INTERRUPTED: i32 = 4;
/// How often an idle worker shows it lives, and a busy one refreshes its quantiles.
const HEARTBEAT: Duration = Duration::from_millis(100);

/// Runs a worker to its end; returns the process exit status.
pub fn run(spec: &WorkerSpec) -> anyhow::Result<i32> {
    if !super::sys::die_with_parent(spec.supervisor_pid) {
        anyhow::bail!("the supervisor (pid {}) is gone", spec.supervisor_pid);
    }
    if let Some(core) = spec.core {
        super::pinning::pin_to(core);
    }
    let stats = StatsSegment::open(&spec.pipeline)?;
    let mut report = Report::start(&stats, spec);
    let status = match &spec.role {
        Role::Source { plan, output } => run_source(plan, output, &mut report),
        Role::Stage {
            plan,
            inputs,
            group,
            output,
        } => run_stage(spec, plan, inputs, group, output.as_deref(), &mut report),
    };
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
    times: Histogram<u64>,
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
            times: Histogram::new_with_bounds(1, 60_000_000_000, 2).expect("valid bounds"),
            last_beat: Instant::now(),
            reset_seen: entry.reset_seen.load(Relaxed),
        }
    }

    fn state(&self, state: u32) {
        // SYNC: a reader that loads this state with Acquire sees the counters before it.
        self.entry.state.store(state, Release);
    }

    fn frame_in(&mut self, frame_id: u64, bytes: u64, lag: u64, took: Duration) {
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
    }

    /// Output counts: frames, bytes, dropped, on top of what predecessors counted.
    fn outputs(&self, (frames, bytes, dropped): (u64, u64, u64)) {
        let (f, b, d) = self.out_base;
        self.entry.frames_out.store(f + frames, Relaxed);
        self.entry.bytes_out.store(b + bytes, Relaxed);
        self.entry.dropped.store(d + dropped, Relaxed);
    }

    /// Missed frames: the inputs' total `missed`, counted from the predecessor's count
    /// (or from the last reset).
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
    fn tick(&mut self, missed: u64, counters: &[(&'static str, u64)]) -> bool {
        self.flush(counters);
        self.missed(missed);
        let reset = self.stats.header().reset_gen.load(Relaxed);
        if reset != self.reset_seen {
            self.reset_seen = reset;
            self.entry.reset_seen.store(reset, Relaxed);
            self.frames_in = 0;
            self.bytes_in = 0;
            self.errors = 0;
            self.missed_base = 0u64.wrapping_sub(missed);
            self.times.reset();
            for field in [
                &self.entry.frames_in,
                &self.entry.bytes_in,
                &self.entry.frames_out,
                &self.entry.bytes_out,
                &self.entry.missed,
                &self.entry.dropped,
                &self.entry.errors,
                &self.entry.proc_p50_ns,
                &self.entry.proc_p99_ns,
            ] {
                field.store(0, Relaxed);
            }
            return true;
        }
        false
    }

    fn flush(&mut self, counters: &[(&'static str, u64)]) {
        self.last_beat = Instant::now();
        self.entry.heartbeat_ns.store(now_ns(), Relaxed);
        if !self.times.is_empty() {
            self.entry
                .proc_p50_ns
                .store(self.times.value_at_quantile(0.5), Relaxed);
            self.entry
                .proc_p99_ns
                .store(self.times.value_at_quantile(0.99), Relaxed);
        }
        self.stats.write_counters(self.index, counters);
    }
}

fn run_source(plan: &SourcePlan, output: &str, report: &mut Report<'_>) -> anyhow::Result<i32> {
    let frame_bytes = plan.nx as usize * plan.ny as usize * plan.dtype.size();
    let content =
        FrameContent::open(&plan.content, plan.dtype, frame_bytes).map_err(anyhow::Error::msg)?;
    let mut producer = Producer::resume(output)?;
    let stop = stop_flag();
    producer.set_interrupt(stop.clone());
    // A restarted source continues after the last frame its predecessor published.
    let mut frame_id = producer.last_published().map_or(0, |h| h.frame_id + 1);
    let dims = [plan.ny, plan.nx];
    let interval = (plan.fps > 0.0).then(|| Duration::from_secs_f64(1.0 / plan.fps));
    let started = Instant::now();
    let first_id = frame_id;
    let (mut published, mut dropped) = (0u64, 0u64);
    report.state(WORKER_RUNNING);
    while !stop.load(Relaxed) && plan.frames.is_none_or(|n| frame_id < n) {
        if let Some(interval) = interval {
            pace(started + interval.mul_f64((frame_id - first_id) as f64));
        }
        let mut slot = match producer.claim() {
            Ok(slot) => slot,
            Err(ClaimError::Full) => {
                dropped += 1;
                frame_id += 1;
                report.outputs((published, published * frame_bytes as u64, dropped));
                continue;
            }
            Err(ClaimError::Interrupted) => break,
        };
        content.fill(&mut slot.payload_mut()[..frame_bytes], frame_id);
        let meta = FrameMeta {
            frame_id,
            timestamp_ns: now_ns(),
            dtype: plan.dtype,
            dims: &dims,
            flags: 0,
        };
        slot.publish(&meta).context("publishing a frame")?;
        published += 1;
        report.entry.last_frame_id.store(frame_id, Relaxed);
        report.outputs((published, published * frame_bytes as u64, dropped));
        if report.due() && report.tick(0, &[]) {
            (published, dropped) = (0, 0);
            report.out_base = (0, 0, 0);
        }
        frame_id += 1;
    }
    report.state(WORKER_DRAINING);
    producer.finish();
    report.state(WORKER_FINISHED);
    Ok(0)
}

/// One input ring of a stage worker.
struct Input {
    consumer: Consumer,
    ended: bool,
}

fn run_stage(
    spec: &WorkerSpec,
    plan: &StagePlan,
    inputs: &[String],
    group: &str,
    output: Option<&str>,
    report: &mut Report<'_>,
) -> anyhow::Result<i32> {
    let stats = report.stats;
    let stage_slot = stats.stage(spec.stage_index);
    // The arguments as last configured (they may have changed since the plan was made).
    let (mut args_gen, mut args) =
        current_args(stats, spec.stage_index).unwrap_or((0, plan.args.clone()));
    let mut processor = processors::build(&plan.processor, &args)
        .map_err(|e| anyhow::anyhow!("stage '{}': {}", plan.name, e.reason))?;
    let stop = stop_flag();
    let options = ConsumerOptions {
        group: Some(group.to_string()),
        batch: plan.batch,
        delivery: plan.delivery,
        wait: WaitMode::Futex,
        attach_timeout: Duration::from_secs(5),
    };
    let mut ins = Vec::new();
    for name in inputs {
        let mut consumer = Consumer::attach(name, &options)?;
        consumer.set_interrupt(stop.clone());
        ins.push(Input {
            consumer,
            ended: false,
        });
    }
    let mut producers = Vec::new();
    if let Some(name) = output {
        let mut producer = Producer::resume(name)?;
        producer.set_interrupt(stop.clone());
        producers.push(producer);
    }
    let mut out = Outputs::new(producers);
    let ctx = StageContext {
        stage: plan.name.clone(),
        worker: spec.worker,
        workers: plan.workers,
        inputs: ins.len(),
        outputs: out.len(),
    };
    processor
        .start(&ctx)
        .map_err(|e| anyhow::anyhow!("stage '{}' could not start: {e}", plan.name))?;
    report.entry.applied_gen.store(args_gen, Relaxed);
    report.state(WORKER_RUNNING);
    let mut pending_config = false;
    let mut next = 0usize;
    let mut idle_pass = 0usize;
    while ins.iter().any(|i| !i.ended) {
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
        let active: Vec<usize> = (0..ins.len()).filter(|&i| !ins[i].ended).collect();
        let k = active[next % active.len()];
        next = next.wrapping_add(1);
        // One input: wait up to a heartbeat. Several: poll each, then nap briefly on one.
        let wait = if active.len() == 1 {
            HEARTBEAT
        } else if idle_pass >= active.len() {
            Duration::from_millis(1)
        } else {
            Duration::ZERO
        };
        let input = &mut ins[k];
        match input.consumer.recv_timeout(wait) {
            Ok(Some(frame)) => {
                idle_pass = 0;
                let header = frame.header().clone();
                let lag = frame.lag();
                let began = Instant::now();
                let result = processor.process(k, &frame, &mut out);
                let took = began.elapsed();
                drop(frame);
                if let Err(e) = result {
                    report.error(&format!(
                        "stage '{}' frame {}: {e}",
                        plan.name, header.frame_id
                    ));
                }
                report.frame_in(header.frame_id, header.payload_len, lag, took);
                report.outputs(out.counts());
                if pending_config {
                    pending_config = false;
                    report
                        .entry
                        .applied_from_frame
                        .store(header.frame_id, Relaxed);
                    // SYNC: pairs with the supervisor's Acquire load when it waits for the
                    // workers to take a configuration: applied_from_frame is visible.
                    report.entry.applied_gen.store(args_gen, Release);
                }
            }
            Ok(None) => idle_pass += 1,
            Err(RecvError::EndOfStream { .. }) => input.ended = true,
            Err(RecvError::ProducerDied { pid, .. }) => {
                anyhow::bail!("the pipeline's supervisor (pid {pid}) died")
            }
            Err(RecvError::Interrupted) => return Ok(EXIT_INTERRUPTED),
            Err(e @ RecvError::Corrupt { .. }) => report.error(&e.to_string()),
        };
        if report.due() {
            let missed: u64 = ins.iter().map(|i| i.consumer.counters().missed).sum();
            if report.tick(missed, &processor.counters()) {
                out.reset_counts();
                report.out_base = (0, 0, 0);
            }
        }
    }
    report.state(WORKER_DRAINING);
    if let Err(e) = processor.stop(&mut out) {
        report.error(&format!("stage '{}' stop: {e}", plan.name));
    }
    out.finish();
    report.outputs(out.counts());
    let missed: u64 = ins.iter().map(|i| i.consumer.counters().missed).sum();
    report.missed(missed);
    report.flush(&processor.counters());
    report.state(WORKER_FINISHED);
    Ok(0)
}

/// Stage `stage`'s arguments as the supervisor last published them.
fn current_args(stats: &StatsSegment, stage: usize) -> Option<(u64, toml::Table)> {
    let (gen, text) = stats.read_args(stage)?;
    Some((gen, serde_json::from_str(&text).ok()?))
}
