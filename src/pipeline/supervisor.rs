//! `streamd run`: creates a pipeline's rings and stats segment, spawns every stage
//! worker as its own pinned process, restarts what crashes, serves the control socket,
//! drains in order on SIGINT/SIGTERM/`streamd stop`, and removes its segments.

use super::logs::{LastLine, Logs};
use super::pinning::CoreAssigner;
use super::plan::{Pipeline, SourceContent};
use super::worker::{Role, WorkerSpec, METADATA_BATCH};
use crate::control::server::{serve, serve_metrics, OutputRoom, ServeError, Shared, StageBounds};
use crate::control::socket_path;
use crate::control::status::{collect_whole_run, exit_text, pipeline_rings, StatusReport};
use crate::processors::{Refused, Wiring};
use crate::registry;
use crate::ring::{AttachError, Consumer, ConsumerOptions, CreateError, OwnedRing, RingOptions};
use crate::stats::layout::*;
use crate::stats::{StageDecl, StatsError, StatsSegment};
use crate::sys::{signal_child, stop_flag};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
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
    /// The last line its processes wrote to stderr, and the line count last shown.
    stderr: Arc<Mutex<LastLine>>,
    stderr_shown: u64,
}

impl Slot {
    fn new(spec: WorkerSpec, outputs: Vec<String>) -> Slot {
        Slot {
            spec,
            child: None,
            crashes: Vec::new(),
            restart_at: None,
            done: false,
            outputs,
            stderr: Arc::default(),
            stderr_shown: 0,
        }
    }

    /// Shows the worker's newest stderr line in its stats entry.
    fn show_stderr(&mut self, stats: &StatsSegment) {
        let Ok(last) = self.stderr.lock() else {
            return;
        };
        if last.lines != self.stderr_shown {
            stats.write_last_stderr(self.spec.entry, &last.text);
            self.stderr_shown = last.lines;
        }
    }
}

/// The core of each process as `run` assigns them: every stage's workers in order, then
/// the source (`None`: the host reports no cores; it runs unpinned).
pub struct CorePlan {
    /// By stage, by worker.
    pub stages: Vec<Vec<Option<usize>>>,
    pub source: Option<usize>,
    /// How many processes that makes, and the cores they may run on.
    pub processes: usize,
    pub available: usize,
    /// `core 0 is shared` or `cores 0-1 are shared` when some core runs more than one.
    pub shared: Option<String>,
}

impl CorePlan {
    pub fn new(pipeline: &Pipeline) -> CorePlan {
        let mut cores = CoreAssigner::new();
        let stages = pipeline
            .stages
            .iter()
            .map(|stage| {
                (0..stage.workers)
                    .map(|w| cores.assign(&stage.cores, w))
                    .collect()
            })
            .collect();
        let source = cores.assign(&pipeline.source.cores, 0);
        CorePlan {
            stages,
            source,
            processes: 1 + pipeline
                .stages
                .iter()
                .map(|s| s.workers as usize)
                .sum::<usize>(),
            available: cores.available(),
            shared: cores.shared_cores(),
        }
    }
}

/// Why a pipeline could not be run (once running, a failed stage is a problem in the
/// outcome, not an error).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the {kind} source: {reason}")]
    PythonSource { kind: String, reason: String },
    /// A stage's processor could not be made from its arguments.
    #[error("stage '{stage}': {reason}")]
    Stage { stage: String, reason: String },
    /// A stage refused what it needs outside the pipeline, at `location` in the file.
    #[error("{location}: stage '{stage}': {reason}")]
    Prepare {
        location: String,
        stage: String,
        reason: Refused,
    },
    #[error(transparent)]
    Stats(#[from] StatsError),
    #[error(transparent)]
    Ring(#[from] CreateError),
    /// A stage's group could not be held.
    #[error(transparent)]
    Hold(#[from] AttachError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// A worker process could not be started.
    #[error(transparent)]
    Spawn(#[from] std::io::Error),
    /// Arguments or a worker's description could not be encoded.
    #[error(transparent)]
    Encode(#[from] serde_json::Error),
}

/// The checks that need the run's folder (a writer's folder and files), made before
/// anything starts; each refusal names where the file set it.
pub fn prepare_stages(pipeline: &Pipeline) -> Result<(), RunError> {
    if let SourceContent::Python { kind, code, args } = &pipeline.source.content {
        code.check("source", args, None)
            .map_err(|reason| RunError::PythonSource {
                kind: kind.clone(),
                reason,
            })?;
    }
    for stage in &pipeline.stages {
        registry::build(&stage.processor, &stage.args)
            .map_err(|e| RunError::Stage {
                stage: stage.name.clone(),
                reason: e.reason,
            })?
            .prepare(stage.workers)
            .map_err(|reason| {
                let key = [
                    "folder", "template", "prefix", "ids_file", "file", "module", "class", "python",
                ]
                .into_iter()
                .find(|k| reason.0.contains(k) && stage.at.contains_key(*k))
                .unwrap_or("processor");
                RunError::Prepare {
                    location: stage.location(key).to_string(),
                    stage: stage.name.clone(),
                    reason,
                }
            })?;
    }
    Ok(())
}

/// Runs `pipeline` until it ends or is stopped. The caller has made the checks of
/// [`prepare_stages`], in the run's folder.
pub fn run(pipeline: &Pipeline, options: &RunOptions) -> Result<RunOutcome, RunError> {
    let stop = stop_flag();
    let stats = declare_stats(pipeline)?;
    // Whatever happens from here on, the segments go when we return.
    let _cleanup = Cleanup {
        stats: &stats,
        socket: socket_path(&pipeline.name),
    };
    // The source's one argument that `streamd configure` may change while it runs.
    stats.write_args(
        0,
        &serde_json::json!({ "fps": pipeline.source.fps }).to_string(),
    );
    for (i, stage) in pipeline.stages.iter().enumerate() {
        stats.write_args(i + 1, &serde_json::to_string(&stage.args)?);
    }
    let rings = create_rings(pipeline)?;
    let holders = hold_groups(pipeline)?;
    let shared = serve_control(pipeline, options)?;
    let mut slots = worker_slots(pipeline);
    let logs = Logs::start()?;
    for slot in &mut slots {
        stats.write_outputs(slot.spec.entry, &slot.outputs);
        spawn(slot, &stats, &logs)?;
    }
    stats.header().state.store(PIPELINE_RUNNING, Release);
    eprintln!(
        "streamd run: pipeline '{}' running with {} processes; `streamd status` shows it, Ctrl-C drains and stops it",
        pipeline.name,
        slots.len()
    );
    let mut run = Supervision {
        pipeline,
        options,
        stats: &stats,
        shared: &shared,
        holders,
        rings,
        slots,
        logs,
        problems: Vec::new(),
        notes: Vec::new(),
        started: Instant::now(),
        drain_deadline: None,
        rate_clock: Instant::now(),
        last_counts: HashMap::new(),
    };
    while !run.tick(&stop)? {
        std::thread::sleep(TICK);
    }
    // Stages cut short by the drain deadline conclude with what they left.
    run.conclude(|_| true);
    stats.header().state.store(PIPELINE_FINISHED, Release);
    for slot in &mut run.slots {
        slot.show_stderr(&stats);
    }
    let report = collect_whole_run(&stats, &held_rates(&stats));
    let Supervision {
        problems, notes, ..
    } = run;
    Ok(RunOutcome {
        report,
        problems,
        notes,
    })
}

/// Creates the pipeline's stats segment, one entry per worker (the source is stage 0),
/// replacing (and saying so) what a dead supervisor of the same name left.
fn declare_stats(pipeline: &Pipeline) -> Result<StatsSegment, RunError> {
    let name = &pipeline.name;
    let mut decls = vec![StageDecl {
        name: "source".into(),
        // The source's stage shows its kind, as a stage shows its processor.
        processor: pipeline.source.content.kind().into(),
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
    Ok(stats)
}

/// The segments of the pipeline's ring `ring` (one per writer).
fn segments_of(pipeline: &Pipeline, ring: &str) -> Vec<String> {
    pipeline
        .rings
        .iter()
        .find(|r| r.name == ring)
        .map(|r| r.segments(&pipeline.name))
        .unwrap_or_default()
}

/// Every ring segment, owned here so consumers wait through a writer's restart.
fn create_rings(pipeline: &Pipeline) -> Result<HashMap<String, OwnedRing>, RunError> {
    let mut rings = HashMap::new();
    for plan in &pipeline.rings {
        for segment in plan.segments(&pipeline.name) {
            let (ring, _stale) = OwnedRing::create(&RingOptions {
                name: segment.clone(),
                slots: plan.slots,
                slot_bytes: plan.slot_bytes,
                full_policy: plan.full_policy,
            })?;
            rings.insert(segment, ring);
        }
    }
    Ok(rings)
}

/// Holds every stage group from the first frame on, so a group keeps its place while its
/// only worker restarts, and no frame is published before the group exists. One list per
/// stage: its input groups, then each worker's metadata group.
fn hold_groups(pipeline: &Pipeline) -> Result<Vec<Vec<Consumer>>, RunError> {
    let mut holders = Vec::new();
    for stage in &pipeline.stages {
        let mut held = Vec::new();
        for input in &stage.inputs {
            for segment in segments_of(pipeline, input) {
                for (group, set) in stage.groups() {
                    held.push(Consumer::attach(
                        &segment,
                        &ConsumerOptions {
                            group: Some(group),
                            batch: stage.batch,
                            set,
                            delivery: stage.delivery,
                            ..Default::default()
                        },
                    )?);
                }
            }
        }
        for ring in &stage.metadata {
            for segment in segments_of(pipeline, ring) {
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
    Ok(holders)
}

/// Serves the control socket (and the metrics endpoint when asked) on their threads.
fn serve_control(pipeline: &Pipeline, options: &RunOptions) -> Result<Arc<Shared>, RunError> {
    let slot_bytes = |name: &str| {
        let ring = pipeline.rings.iter().find(|r| r.name == name);
        ring.map_or(0, |r| r.slot_bytes)
    };
    let shared = Arc::new(Shared {
        stages: pipeline
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
                let room =
                    s.outputs
                        .iter()
                        .map(|o| (slot_bytes(o), o))
                        .min()
                        .map(|(bytes, ring)| OutputRoom {
                            input: s.input_frames(&pipeline.source, slot_bytes),
                            ring: ring.clone(),
                            slot_bytes: bytes,
                        });
                (s.name.clone(), StageBounds { wiring, room })
            })
            .collect(),
        ..Shared::default()
    });
    serve(&pipeline.name, shared.clone())?;
    if let Some(addr) = options.metrics {
        serve_metrics(addr, &pipeline.name, shared.clone())?;
    }
    Ok(shared)
}

/// A slot for every worker process, pinned to its core: stages first (so they are
/// attached), the source last.
fn worker_slots(pipeline: &Pipeline) -> Vec<Slot> {
    let name = &pipeline.name;
    let cores = CorePlan::new(pipeline);
    let supervisor_pid = std::process::id();
    let mut slots: Vec<Slot> = Vec::new();
    let mut entry = 1usize;
    for (i, stage) in pipeline.stages.iter().enumerate() {
        for w in 0..stage.workers {
            // Worker w writes segment w of each of its stage's output rings.
            let outputs: Vec<String> = stage
                .outputs
                .iter()
                .filter_map(|r| segments_of(pipeline, r).get(w as usize).cloned())
                .collect();
            let inputs = stage
                .inputs
                .iter()
                .flat_map(|r| segments_of(pipeline, r))
                .collect();
            let metadata = stage
                .metadata
                .iter()
                .flat_map(|r| segments_of(pipeline, r))
                .collect();
            let spec = WorkerSpec {
                pipeline: name.clone(),
                supervisor_pid,
                stage_index: i + 1,
                entry,
                worker: w,
                core: cores.stages[i][w as usize],
                role: Role::Stage {
                    plan: stage.clone(),
                    inputs,
                    group: stage.group(w),
                    outputs: outputs.clone(),
                    metadata,
                },
            };
            slots.push(Slot::new(spec, outputs));
            entry += 1;
        }
    }
    let source_output = segments_of(pipeline, &pipeline.source.ring).remove(0);
    let source_metadata = pipeline
        .source
        .metadata
        .as_ref()
        .map(|m| segments_of(pipeline, &m.ring).remove(0));
    let spec = WorkerSpec {
        pipeline: name.clone(),
        supervisor_pid,
        stage_index: 0,
        entry: 0,
        worker: 0,
        core: cores.source,
        role: Role::Source {
            plan: pipeline.source.clone(),
            output: source_output.clone(),
            metadata: source_metadata.clone(),
        },
    };
    let outputs = [Some(source_output), source_metadata]
        .into_iter()
        .flatten()
        .collect();
    slots.push(Slot::new(spec, outputs));
    if let Some(shared) = &cores.shared {
        eprintln!(
            "streamd run: {} processes on {} available core(s): {shared}, so processes on one core take turns",
            cores.processes, cores.available
        );
    }
    slots
}

/// A running pipeline as the supervisor loop keeps it.
struct Supervision<'a> {
    pipeline: &'a Pipeline,
    options: &'a RunOptions,
    stats: &'a StatsSegment,
    shared: &'a Shared,
    /// Each stage's held groups, let go once the stage is done (before the rings go).
    holders: Vec<Vec<Consumer>>,
    rings: HashMap<String, OwnedRing>,
    /// The workers, the source last.
    slots: Vec<Slot>,
    /// Where the workers' stderr goes.
    logs: Logs,
    problems: Vec<String>,
    notes: Vec<String>,
    started: Instant,
    drain_deadline: Option<Instant>,
    rate_clock: Instant,
    last_counts: HashMap<usize, (u64, u64)>,
}

impl Supervision<'_> {
    /// One turn of the loop: start draining when asked, notice exits, restart what is
    /// due, conclude finished stages, enforce the drain deadline, update the rates.
    /// Returns true once every worker is done (or was killed at the deadline).
    fn tick(&mut self, stop: &AtomicBool) -> Result<bool, RunError> {
        if self.drain_deadline.is_none() && self.asked_to_stop(stop) {
            self.start_drain();
        }
        let draining = self.drain_deadline.is_some();
        for slot in &mut self.slots {
            slot.show_stderr(self.stats);
            reap(
                slot,
                self.stats,
                self.shared,
                &self.rings,
                self.pipeline,
                draining,
                &mut self.problems,
            );
            if slot.restart_at.is_some_and(|t| Instant::now() >= t) {
                slot.restart_at = None;
                let entry = self.stats.entry(slot.spec.entry);
                entry.restarts.fetch_add(1, Relaxed);
                spawn(slot, self.stats, &self.logs)?;
            }
        }
        // A stage whose workers are all done no longer needs its groups held, and
        // concludes (a writer ties its workers' files together).
        let slots = &self.slots;
        let stage_done = |i: usize| {
            slots
                .iter()
                .filter(|s| s.spec.stage_index == i + 1)
                .all(|s| s.done)
        };
        let mut ended = Ended {
            notes: &mut self.notes,
            problems: &mut self.problems,
        };
        ended.conclude(&mut self.holders, self.pipeline, self.stats, stage_done);
        if self.slots.iter().all(|s| s.done) {
            return Ok(true);
        }
        if self.drain_deadline.is_some_and(|d| Instant::now() >= d) {
            self.kill_undrained();
            return Ok(true);
        }
        if self.rate_clock.elapsed() >= Duration::from_secs(1) {
            self.update_rates();
        }
        Ok(false)
    }

    /// Whether a signal, `streamd stop`, a worker's fault or the runtime asks to stop.
    fn asked_to_stop(&mut self, stop: &AtomicBool) -> bool {
        // SYNC: pairs with the Release store of a worker whose fault asks for a stop.
        let fault_stop = self.stats.header().stop_request.load(Acquire) != 0;
        if fault_stop {
            self.report_fault_stops();
        }
        stop.load(Relaxed)
            || self.shared.stop.load(SeqCst)
            || fault_stop
            || self
                .options
                .runtime
                .is_some_and(|r| self.started.elapsed() >= r)
    }

    /// Names every worker whose fault stopped the pipeline.
    fn report_fault_stops(&mut self) {
        let stats = self.stats;
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
                self.shared.event(text.clone());
                self.problems.push(text);
            }
        }
    }

    /// Stops the source; the stages drain behind it, each ending when its inputs do.
    fn start_drain(&mut self) {
        self.drain_deadline = Some(Instant::now() + self.pipeline.drain_timeout);
        self.stats.header().state.store(PIPELINE_DRAINING, Release);
        let source = self.slots.last_mut().expect("the source slot");
        match &source.child {
            Some(child) => signal_child(child.id(), libc::SIGTERM),
            None => {
                // Waiting for a restart: it will not come; end its stream here.
                source.done = true;
                source.restart_at = None;
                finish_output(source, &self.rings);
            }
        }
    }

    /// Kills the workers still running at the drain deadline, each a problem.
    fn kill_undrained(&mut self) {
        for slot in self.slots.iter_mut().filter(|s| !s.done) {
            let stage = self.stats.stage_name(slot.spec.stage_index);
            self.problems.push(format!(
                "stage '{stage}' worker {} did not drain within {:.0} s and was killed",
                slot.spec.worker,
                self.pipeline.drain_timeout.as_secs_f64()
            ));
            if let Some(mut child) = slot.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            slot.done = true;
        }
    }

    /// Frames per second in and out of every worker since the last update, for
    /// `status` and the progress line.
    fn update_rates(&mut self) {
        let seconds = self.rate_clock.elapsed().as_secs_f64();
        self.rate_clock = Instant::now();
        let mut rates = HashMap::new();
        for i in 0..self.stats.entry_count() {
            let e = self.stats.entry(i);
            let now = (e.frames_in.load(Relaxed), e.frames_out.load(Relaxed));
            let before = self.last_counts.insert(i, now).unwrap_or((0, 0));
            rates.insert(
                i,
                (
                    now.0.saturating_sub(before.0) as f64 / seconds,
                    now.1.saturating_sub(before.1) as f64 / seconds,
                ),
            );
        }
        if self.options.progress {
            eprintln!(
                "{}",
                progress_line(self.stats, &rates, self.started.elapsed())
            );
        }
        if let Ok(mut r) = self.shared.rates.lock() {
            *r = rates;
        }
    }

    /// Lets every stage that is `done` let its groups go and conclude.
    fn conclude(&mut self, done: impl Fn(usize) -> bool) {
        let mut ended = Ended {
            notes: &mut self.notes,
            problems: &mut self.problems,
        };
        ended.conclude(&mut self.holders, self.pipeline, self.stats, done);
    }
}

/// Each worker's frames in and out per second over the span it handled frames in (its
/// first frame to its latest): the rates of a run's final report, which a last-second
/// rate would show as 0 after the drain (or for a run shorter than a second).
fn held_rates(stats: &StatsSegment) -> crate::control::status::Rates {
    (0..stats.entry_count())
        .map(|i| {
            let e = stats.entry(i);
            let seconds = e.span_us.load(Relaxed) as f64 / 1e6;
            let rate = |frames: u64| {
                if seconds > 0.0 {
                    frames as f64 / seconds
                } else {
                    0.0
                }
            };
            // The span starts again at a reset, so do the frames over it.
            let since = |total: &AtomicU64, at_reset: &AtomicU64| {
                total.load(Relaxed).saturating_sub(at_reset.load(Relaxed))
            };
            let rates = (
                rate(since(&e.frames_in, &e.reset_base.frames_in)),
                rate(since(&e.frames_out, &e.reset_base.frames_out)),
            );
            (i, rates)
        })
        .collect()
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
                .and_then(|p| p.conclude(stage.workers).map_err(|e| e.to_string()));
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

fn spawn(slot: &mut Slot, stats: &StatsSegment, logs: &Logs) -> Result<(), RunError> {
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
    command
        .arg(spec)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // Its own process group: a Ctrl-C at the terminal reaches only the supervisor, which
    // then drains the pipeline in order.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command.spawn()?;
    if let Some(pipe) = child.stderr.take() {
        logs.drain(pipe, slot.stderr.clone());
    }
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
    let exit = match (
        status.code(),
        std::os::unix::process::ExitStatusExt::signal(&status),
    ) {
        (Some(code), _) => EXIT_CODE | u64::from(code as u8),
        (None, Some(sig)) => EXIT_SIGNAL | u64::from(sig as u32),
        _ => 0,
    };
    e.exit.store(exit, Relaxed);
    let how = exit_text(exit).unwrap_or_else(|| "ended".into());
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
