//! `streamd run`: creates a pipeline's rings and stats segment, spawns every stage
//! worker as its own pinned process, restarts what crashes, serves the control socket,
//! drains in order on SIGINT/SIGTERM/`streamd stop`, and removes its segments.

use super::pinning::CoreAssigner;
use super::plan::{Pipeline, SourceContent};
use super::worker::{Role, WorkerSpec, METADATA_BATCH};
use crate::control::server::{serve, serve_metrics, Shared};
use crate::control::socket_path;
use crate::control::status::{collect, pipeline_rings, StatusReport};
use crate::processors::Wiring;
use crate::registry;
use crate::ring::{Consumer, ConsumerOptions, OwnedRing, RingOptions};
use crate::stats::layout::*;
use crate::stats::{StageDecl, StatsSegment};
use crate::sys::{signal_child, stop_flag};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How `streamd run` was asked to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Drain and stop after this long.
    pub runtime: Option<Duration>,
    pub metrics: Option<SocketAddr>,
    /// Print a one-line summary every second (for a person watching the terminal).
    pub progress: bool,
}

/// How a run ended.
pub struct RunOutcome {
    pub report: StatusReport,
    /// Stages that failed or did not drain in time, one sentence each.
    pub problems: Vec<String>,
    /// What stages said when they concluded (where a writer's master file is).
    pub notes: Vec<String>,
}

const TICK: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One worker process slot (stage `stage`, worker `worker`).
struct Slot {
    spec: WorkerSpec,
    child: Option<Child>,
    crashes: Vec<Instant>,
    restart_at: Option<Instant>,
    done: bool,
    /// The ring segments this worker writes.
    outputs: Vec<String>,
}

/// The checks that need the run's folder (a writer's folder and files), made before
/// anything starts; each refusal names where the file set it.
pub fn prepare_stages(pipeline: &Pipeline) -> anyhow::Result<()> {
    if let SourceContent::Python { code, args } = &pipeline.source.content {
        code.check("source", args, None)
            .map_err(|e| anyhow::anyhow!("the Python source: {e}"))?;
    }
    for stage in &pipeline.stages {
        registry::build(&stage.processor, &stage.args)
            .map_err(|e| anyhow::anyhow!("stage '{}': {}", stage.name, e.reason))?
            .prepare(stage.workers)
            .map_err(|e| {
                let key = [
                    "folder", "template", "prefix", "file", "module", "class", "python",
                ]
                .into_iter()
                .find(|k| e.contains(k) && stage.at.contains_key(*k))
                .unwrap_or("processor");
                anyhow::anyhow!("{}: stage '{}': {e}", stage.location(key), stage.name)
            })?;
    }
    Ok(())
}

/// Runs `pipeline` until it ends or is stopped.
pub fn run(pipeline: &Pipeline, options: &RunOptions) -> anyhow::Result<RunOutcome> {
    let stop = stop_flag();
    let name = &pipeline.name;
    // Writers check their folders here, in the run's folder, before anything starts.
    prepare_stages(pipeline)?;
    let mut decls = vec![StageDecl {
        name: "source".into(),
        processor: match &pipeline.source.content {
            SourceContent::Ramp | SourceContent::Random => "sim".into(),
            SourceContent::Npy(_) => "npy".into(),
            SourceContent::Tiff(_) => "tiff".into(),
            SourceContent::Python { .. } => "python".into(),
        },
        workers: 1,
    }];
    decls.extend(pipeline.stages.iter().map(|s| StageDecl {
        name: s.name.clone(),
        processor: s.processor.clone(),
        workers: s.workers,
    }));
    let (stats, replaced) = StatsSegment::create(name, &decls)?;
    if let Some(pid) = replaced {
        let removed = remove_stale_rings(name);
        eprintln!(
            "streamd run: removed the stale stats segment and {removed} ring(s) of pipeline '{name}' left by supervisor pid {pid}, which is gone"
        );
    }
    // Whatever happens from here on, the segments go when we return.
    let _cleanup = Cleanup {
        stats: &stats,
        socket: socket_path(name),
    };
    stats.write_args(0, "{}");
    for (i, stage) in pipeline.stages.iter().enumerate() {
        stats.write_args(i + 1, &serde_json::to_string(&stage.args)?);
    }

    // Rings, owned here so consumers wait through a writer's restart.
    let mut rings: HashMap<String, OwnedRing> = HashMap::new();
    for plan in &pipeline.rings {
        for segment in plan.segments(name) {
            let (ring, _stale) = OwnedRing::create(&RingOptions {
                name: segment.clone(),
                slots: plan.slots,
                slot_bytes: plan.slot_bytes,
                full_policy: plan.full_policy,
            })?;
            rings.insert(segment, ring);
        }
    }
    let segments_of = |ring: &str| -> Vec<String> {
        pipeline
            .rings
            .iter()
            .find(|r| r.name == ring)
            .map(|r| r.segments(name))
            .unwrap_or_default()
    };

    // Hold every stage group from the first frame on, so a group keeps its place while
    // its only worker restarts, and no frame is published before the group exists.
    let mut holders: Vec<Vec<Consumer>> = Vec::new();
    for stage in &pipeline.stages {
        let mut held = Vec::new();
        for input in &stage.inputs {
            for segment in segments_of(input) {
                for group in stage.groups() {
                    held.push(Consumer::attach(
                        &segment,
                        &ConsumerOptions {
                            group: Some(group),
                            batch: stage.batch,
                            delivery: stage.delivery,
                            ..Default::default()
                        },
                    )?);
                }
            }
        }
        for ring in &stage.metadata {
            for segment in segments_of(ring) {
                for w in 0..stage.workers {
                    held.push(Consumer::attach(
                        &segment,
                        &ConsumerOptions {
                            group: Some(stage.metadata_group(w)),
                            batch: METADATA_BATCH,
                            ..Default::default()
                        },
                    )?);
                }
            }
        }
        holders.push(held);
    }

    let shared = Arc::new(Shared {
        wiring: pipeline
            .stages
            .iter()
            .map(|s| {
                let wiring = Wiring {
                    inputs: s.inputs.len(),
                    outputs: s.outputs.len(),
                    metadata: s.metadata.len(),
                    workers: s.workers,
                    frame: None,
                };
                (s.name.clone(), wiring)
            })
            .collect(),
        ..Shared::default()
    });
    serve(name, shared.clone())?;
    if let Some(addr) = options.metrics {
        serve_metrics(addr, name, shared.clone())?;
    }

    // Worker slots: stages first (so they are attached), the source last.
    let mut cores = CoreAssigner::new();
    let supervisor_pid = std::process::id();
    let mut slots: Vec<Slot> = Vec::new();
    let mut entry = 1usize;
    for (i, stage) in pipeline.stages.iter().enumerate() {
        for w in 0..stage.workers {
            // Worker w writes segment w of each of its stage's output rings.
            let outputs: Vec<String> = stage
                .outputs
                .iter()
                .filter_map(|r| segments_of(r).get(w as usize).cloned())
                .collect();
            let inputs = stage.inputs.iter().flat_map(|r| segments_of(r)).collect();
            let metadata = stage.metadata.iter().flat_map(|r| segments_of(r)).collect();
            slots.push(Slot {
                spec: WorkerSpec {
                    pipeline: name.clone(),
                    supervisor_pid,
                    stage_index: i + 1,
                    entry,
                    worker: w,
                    core: cores.assign(&stage.cores, w),
                    role: Role::Stage {
                        plan: stage.clone(),
                        inputs,
                        group: stage.group(w),
                        outputs: outputs.clone(),
                        metadata,
                    },
                },
                child: None,
                crashes: Vec::new(),
                restart_at: None,
                done: false,
                outputs,
            });
            entry += 1;
        }
    }
    let source_output = segments_of(&pipeline.source.ring).remove(0);
    let source_metadata = pipeline
        .source
        .metadata
        .as_ref()
        .map(|m| segments_of(&m.ring).remove(0));
    slots.push(Slot {
        spec: WorkerSpec {
            pipeline: name.clone(),
            supervisor_pid,
            stage_index: 0,
            entry: 0,
            worker: 0,
            core: cores.assign(&pipeline.source.cores, 0),
            role: Role::Source {
                plan: pipeline.source.clone(),
                output: source_output.clone(),
                metadata: source_metadata.clone(),
            },
        },
        child: None,
        crashes: Vec::new(),
        restart_at: None,
        done: false,
        outputs: [Some(source_output), source_metadata]
            .into_iter()
            .flatten()
            .collect(),
    });
    if let Some(notice) = cores.sharing_notice(slots.len()) {
        eprintln!("streamd run: {notice}");
    }
    for slot in &mut slots {
        spawn(slot, &stats)?;
    }
    stats.header().state.store(PIPELINE_RUNNING, Release);
    eprintln!(
        "streamd run: pipeline '{name}' running with {} processes; `streamd status` shows it, Ctrl-C drains and stops it",
        slots.len()
    );

    let started = Instant::now();
    let mut drain_deadline: Option<Instant> = None;
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let mut rate_clock = Instant::now();
    let mut last_counts: HashMap<usize, (u64, u64)> = HashMap::new();
    loop {
        // SYNC: pairs with the Release store of a worker whose fault asks for a stop.
        let fault_stop = stats.header().stop_request.load(Acquire) != 0;
        let asked_to_stop = stop.load(Relaxed)
            || shared.stop.load(SeqCst)
            || fault_stop
            || options.runtime.is_some_and(|r| started.elapsed() >= r);
        if asked_to_stop && drain_deadline.is_none() {
            if fault_stop {
                for i in 0..stats.entry_count() {
                    // SYNC: pairs with the worker's Release store in `Report::state`; the
                    // last_error it wrote before is visible.
                    if stats.entry(i).state.load(Acquire) == WORKER_ERROR {
                        let stage = stats.stage_name(stats.entry(i).stage.load(Relaxed) as usize);
                        let text = format!(
                            "stage '{stage}' worker {} stopped the pipeline (on_error = \"stop\"): {}",
                            stats.entry(i).worker.load(Relaxed),
                            stats.last_error(i)
                        );
                        shared.event(text.clone());
                        problems.push(text);
                    }
                }
            }
            drain_deadline = Some(Instant::now() + pipeline.drain_timeout);
            stats.header().state.store(PIPELINE_DRAINING, Release);
            let source = slots.last_mut().expect("the source slot");
            match &source.child {
                Some(child) => signal_child(child.id(), libc::SIGTERM),
                None => {
                    // Waiting for a restart: it will not come; end its stream here.
                    source.done = true;
                    source.restart_at = None;
                    finish_output(source, &rings);
                }
            }
        }
        let draining = drain_deadline.is_some();
        for slot in &mut slots {
            reap(
                slot,
                &stats,
                &shared,
                &rings,
                pipeline,
                draining,
                &mut problems,
            );
            if slot.restart_at.is_some_and(|t| Instant::now() >= t) {
                slot.restart_at = None;
                stats.entry(slot.spec.entry).restarts.fetch_add(1, Relaxed);
                spawn(slot, &stats)?;
            }
        }
        // A stage whose workers are all done no longer needs its groups held, and
        // concludes (a writer ties its workers' files together).
        let stage_done = |i: usize| {
            slots
                .iter()
                .filter(|s| s.spec.stage_index == i + 1)
                .all(|s| s.done)
        };
        let mut ended = Ended {
            notes: &mut notes,
            problems: &mut problems,
        };
        ended.conclude(&mut holders, pipeline, &stats, stage_done);
        if slots.iter().all(|s| s.done) {
            break;
        }
        if drain_deadline.is_some_and(|d| Instant::now() >= d) {
            for slot in slots.iter_mut().filter(|s| !s.done) {
                let stage = stats.stage_name(slot.spec.stage_index);
                problems.push(format!(
                    "stage '{stage}' worker {} did not drain within {:.0} s and was killed",
                    slot.spec.worker,
                    pipeline.drain_timeout.as_secs_f64()
                ));
                if let Some(mut child) = slot.child.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                slot.done = true;
            }
            break;
        }
        if rate_clock.elapsed() >= Duration::from_secs(1) {
            let seconds = rate_clock.elapsed().as_secs_f64();
            rate_clock = Instant::now();
            let mut rates = HashMap::new();
            for i in 0..stats.entry_count() {
                let e = stats.entry(i);
                let now = (e.frames_in.load(Relaxed), e.frames_out.load(Relaxed));
                let before = last_counts.insert(i, now).unwrap_or((0, 0));
                rates.insert(
                    i,
                    (
                        now.0.saturating_sub(before.0) as f64 / seconds,
                        now.1.saturating_sub(before.1) as f64 / seconds,
                    ),
                );
            }
            if options.progress {
                eprintln!("{}", progress_line(&stats, &rates, started.elapsed()));
            }
            if let Ok(mut r) = shared.rates.lock() {
                *r = rates;
            }
        }
        std::thread::sleep(TICK);
    }
    // Stages cut short by the drain deadline conclude with what they left.
    let mut ended = Ended {
        notes: &mut notes,
        problems: &mut problems,
    };
    ended.conclude(&mut holders, pipeline, &stats, |_| true);
    stats.header().state.store(PIPELINE_FINISHED, Release);
    let report = collect(
        &stats,
        &shared.rates.lock().map(|r| r.clone()).unwrap_or_default(),
    );
    drop(holders);
    drop(rings);
    Ok(RunOutcome {
        report,
        problems,
        notes,
    })
}

/// Where concluding stages report.
struct Ended<'a> {
    notes: &'a mut Vec<String>,
    problems: &'a mut Vec<String>,
}

impl Ended<'_> {
    /// Lets every stage that still holds its groups and is `done` let them go and
    /// conclude, with the arguments it last ran with.
    fn conclude(
        &mut self,
        holders: &mut [Vec<Consumer>],
        pipeline: &Pipeline,
        stats: &StatsSegment,
        done: impl Fn(usize) -> bool,
    ) {
        for (i, held) in holders.iter_mut().enumerate() {
            if held.is_empty() || !done(i) {
                continue;
            }
            held.clear();
            let stage = &pipeline.stages[i];
            let args = stats
                .read_args(i + 1)
                .and_then(|(_, text)| serde_json::from_str::<toml::Table>(&text).ok())
                .unwrap_or_else(|| stage.args.clone());
            let concluded = registry::build(&stage.processor, &args)
                .map_err(|e| e.reason)
                .and_then(|p| p.conclude(stage.workers));
            match concluded {
                Ok(Some(note)) => self.notes.push(format!("stage '{}': {note}", stage.name)),
                Ok(None) => {}
                Err(e) => self.problems.push(format!("stage '{}': {e}", stage.name)),
            }
        }
    }
}

/// Removes the stats segment and control socket on every exit path.
struct Cleanup<'a> {
    stats: &'a StatsSegment,
    socket: std::path::PathBuf,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        self.stats.unlink();
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn spawn(slot: &mut Slot, stats: &StatsSegment) -> anyhow::Result<()> {
    let spec = serde_json::to_string(&slot.spec)?;
    // A Python stage or source runs in its interpreter, which hosts the same worker loop
    // through the streamd package; every other worker is this binary again.
    let mut command = match slot.spec.python() {
        Some(code) => {
            let mut c = Command::new(code.interpreter());
            c.args(["-m", "streamd._worker"]);
            c
        }
        None => {
            let mut c = Command::new(std::env::current_exe()?);
            c.arg("worker");
            c
        }
    };
    command.arg(spec).stdin(Stdio::null()).stdout(Stdio::null());
    // Its own process group: a Ctrl-C at the terminal reaches only the supervisor, which
    // then drains the pipeline in order.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let child = command.spawn()?;
    let e = stats.entry(slot.spec.entry);
    e.pid.store(child.id(), Relaxed);
    e.state.store(WORKER_STARTING, Release);
    slot.child = Some(child);
    Ok(())
}

fn finish_output(slot: &Slot, rings: &HashMap<String, OwnedRing>) {
    for ring in slot.outputs.iter().filter_map(|o| rings.get(o)) {
        ring.finish();
    }
}

/// Notices a worker's exit: done when it finished, else a crash to restart or, after
/// too many, a failure whose output stream is ended so the stages after it drain.
fn reap(
    slot: &mut Slot,
    stats: &StatsSegment,
    shared: &Shared,
    rings: &HashMap<String, OwnedRing>,
    pipeline: &Pipeline,
    draining: bool,
    problems: &mut Vec<String>,
) {
    let Some(child) = slot.child.as_mut() else {
        return;
    };
    let Ok(Some(status)) = child.try_wait() else {
        return;
    };
    slot.child = None;
    let e = stats.entry(slot.spec.entry);
    let stage = stats.stage_name(slot.spec.stage_index);
    let who = format!(
        "stage '{stage}' worker {} (pid {})",
        slot.spec.worker,
        e.pid.load(Relaxed)
    );
    let is_source = slot.spec.stage_index == 0;
    // SYNC: pairs with the worker's Release store in `Report::state`; its final counters
    // are visible (and, through our Release stores of the pipeline state, to readers).
    if status.success() && e.state.load(Acquire) == WORKER_FINISHED {
        slot.done = true;
        return;
    }
    let how = match (
        status.code(),
        std::os::unix::process::ExitStatusExt::signal(&status),
    ) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "ended".into(),
    };
    if is_source && draining {
        // A source stopped while draining has done its job; end its stream.
        slot.done = true;
        finish_output(slot, rings);
        e.state.store(WORKER_FINISHED, Release);
        return;
    }
    let now = Instant::now();
    let window = Duration::from_secs_f64(pipeline.restart.window_s);
    slot.crashes.retain(|t| now.duration_since(*t) < window);
    slot.crashes.push(now);
    let crashes = slot.crashes.len() as u32;
    if crashes >= pipeline.restart.max_crashes {
        slot.done = true;
        e.state.store(WORKER_FAILED, Release);
        finish_output(slot, rings);
        let text = format!(
            "{who} {how}; it crashed {crashes} times within {:.0} s, so it is marked failed and not restarted",
            pipeline.restart.window_s
        );
        shared.event(text.clone());
        problems.push(text);
        return;
    }
    let backoff = Duration::from_millis(pipeline.restart.backoff_ms)
        .saturating_mul(1 << (crashes - 1).min(16))
        .min(MAX_BACKOFF);
    e.state.store(WORKER_RESTARTING, Release);
    slot.restart_at = Some(now + backoff);
    shared.event(format!(
        "{who} {how}; restarting in {} ms (crash {crashes} of {} allowed within {:.0} s)",
        backoff.as_millis(),
        pipeline.restart.max_crashes,
        pipeline.restart.window_s
    ));
}

/// `  3.0 s | source 500/s | work 500/s | check 500/s | missed 0 dropped 0 errors 0 restarts 0`
fn progress_line(
    stats: &StatsSegment,
    rates: &crate::control::status::Rates,
    elapsed: Duration,
) -> String {
    let mut line = format!("{:>6.1} s", elapsed.as_secs_f64());
    let mut totals = [0u64; 4];
    for s in 0..stats.stage_count() {
        let slot = stats.stage(s);
        let first = slot.first_entry.load(Relaxed) as usize;
        let entries = first..first + slot.workers.load(Relaxed) as usize;
        // The source is measured by what it publishes, a stage by what it takes in.
        let fps: f64 = entries
            .clone()
            .map(|i| {
                rates
                    .get(&i)
                    .map_or(0.0, |r| if s == 0 { r.1 } else { r.0 })
            })
            .sum();
        line.push_str(&format!(" | {} {fps:.0}/s", stats.stage_name(s)));
        for i in entries {
            let e = stats.entry(i);
            totals[0] += e.missed.load(Relaxed);
            totals[1] += e.dropped.load(Relaxed);
            totals[2] += e.errors.load(Relaxed);
            totals[3] += e.restarts.load(Relaxed);
        }
    }
    let [missed, dropped, errors, restarts] = totals;
    format!("{line} | missed {missed} dropped {dropped} errors {errors} restarts {restarts}")
}

/// Removes ring segments `NAME.*` whose owner is gone. Returns how many.
pub fn remove_stale_rings(name: &str) -> usize {
    pipeline_rings(name)
        .into_iter()
        .filter(|r| r.is_stale())
        .map(|r| r.remove())
        .count()
}
