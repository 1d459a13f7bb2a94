//! `streamd run PIPELINE.toml` and `streamd demo` (the same, on the built-in pipeline).

use super::Status;
use crate::control::status::{render, StatusReport};
use crate::pipeline::config::check_pipeline_name;
use crate::pipeline::plan::{Order, SourceContent};
use crate::pipeline::supervisor::{self, RunOptions};
use crate::pipeline::Pipeline;
use crate::ring::FullPolicy;
use crate::stats::{StatsError, StatsSegment};
use crate::units::{positive_seconds, quote, Seconds};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The built-in demo pipeline (`streamd demo`).
pub const DEMO_PIPELINE: &str = include_str!("../../fixtures/pipelines/demo.toml");

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The pipeline file (TOML); `fixtures/pipelines/` has examples.
    pub pipeline: PathBuf,
    /// Drain and stop after this many seconds (more than 0, at most a year).
    #[arg(long, value_parser = positive_seconds, allow_negative_numbers = true, value_name = "SECS")]
    pub runtime: Option<Seconds>,
    /// Folder the stages run in (it must exist): relative file names in processor
    /// arguments land here.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Run under this pipeline name instead of the file's (two copies side by side).
    #[arg(long)]
    pub name: Option<String>,
    /// Serve the counters in Prometheus text format on this address (127.0.0.1:9464).
    #[arg(long)]
    pub metrics: Option<SocketAddr>,
    /// Print the final status as one JSON object on the last line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Seconds to run before draining (more than 0, at most a year).
    #[arg(long, default_value = "10", value_parser = positive_seconds, allow_negative_numbers = true, value_name = "SECS")]
    pub runtime: Seconds,
    /// Where its files go: an existing folder (default: a new folder under the system's
    /// temp folder).
    #[arg(long)]
    pub output: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// The pipeline file (TOML).
    pub pipeline: PathBuf,
    /// The folder the run would use: writers' folders are checked from there.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Check under this pipeline name instead of the file's.
    #[arg(long)]
    pub name: Option<String>,
}

/// `streamd check`: every check `run` makes before it starts anything, then the plan.
pub fn check(args: &CheckArgs) -> anyhow::Result<Status> {
    if let Some(name) = &args.name {
        check_pipeline_name(name).map_err(|m| anyhow::anyhow!("--name {m}"))?;
    }
    let pipeline = Pipeline::load(&args.pipeline, args.name.as_deref())?;
    preflight(&pipeline, args.output.as_deref())?;
    print!("{}", plan(&pipeline));
    Ok(Status::Ok)
}

/// Every check `run` makes before it starts anything, in this order, beyond those made
/// when the file was read: no pipeline of the name is running, the output folder exists
/// (it becomes the current folder, as for the run), the stages' folders and files (a
/// writer's folder, template and earlier files; a verifier's ids file; a Python class),
/// and `/dev/shm` has room for the rings.
fn preflight(pipeline: &Pipeline, output: Option<&Path>) -> anyhow::Result<()> {
    if let Ok(stats) = StatsSegment::open(&pipeline.name) {
        if stats.supervisor().is_alive() {
            return Err(StatsError::Running {
                name: pipeline.name.clone(),
                pid: stats.supervisor().pid,
            }
            .into());
        }
    }
    if let Some(dir) = output {
        let shown = quote(&dir.display().to_string());
        if !dir.exists() {
            anyhow::bail!(
                "--output {shown} does not exist; create it first (mkdir -p {shown}) or give an existing folder"
            );
        }
        if !dir.is_dir() {
            anyhow::bail!("--output {shown} is a file, not a folder; give a folder");
        }
        std::env::set_current_dir(dir)
            .map_err(|e| anyhow::anyhow!("cannot enter the output folder {shown}: {e}"))?;
    }
    supervisor::prepare_stages(pipeline)?;
    let needed = ring_bytes(pipeline);
    let shm = Path::new("/dev/shm");
    if let Some(free) = crate::sys::free_bytes(shm) {
        if needed > free {
            anyhow::bail!(
                "the rings of pipeline '{}' need {} of /dev/shm but {} is free; free some (`streamd clean` removes what dead pipelines left), make /dev/shm larger, or give rings fewer or smaller slots",
                pipeline.name,
                bytes(needed),
                bytes(free)
            );
        }
    }
    Ok(())
}

/// Bytes of `/dev/shm` every segment of every ring takes together.
fn ring_bytes(pipeline: &Pipeline) -> u64 {
    pipeline
        .rings
        .iter()
        .map(|r| r.segment_bytes().saturating_mul(u64::from(r.writers)))
        .fold(0, u64::saturating_add)
}

/// `12.3 MiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// What `run` would start: the rings with their sizes and memory, and every process with
/// what it does and its core.
fn plan(pipeline: &Pipeline) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "pipeline '{}' ({}): every check passed; nothing was started",
        pipeline.name, pipeline.origin
    );
    let free = crate::sys::free_bytes(Path::new("/dev/shm"))
        .map_or(String::new(), |f| format!(" ({} free)", bytes(f)));
    let _ = writeln!(
        out,
        "rings: {} of /dev/shm{free}",
        bytes(ring_bytes(pipeline))
    );
    for ring in &pipeline.rings {
        let segments = ring.segments(&pipeline.name);
        let _ = writeln!(
            out,
            "  {:<14} {:>5} slots of {:>10} = {:>10} {}{}",
            ring.name,
            ring.slots,
            bytes(ring.slot_bytes),
            bytes(ring.segment_bytes().saturating_mul(u64::from(ring.writers))),
            match ring.full_policy {
                FullPolicy::Block => "block",
                FullPolicy::DropNewest => "drop-newest",
            },
            if segments.len() > 1 {
                format!(", one segment per writer: {}", segments.join(", "))
            } else {
                String::new()
            }
        );
    }
    let cores = supervisor::CorePlan::new(pipeline);
    let core = |c: Option<usize>| c.map_or("unpinned".to_string(), |c| format!("core {c}"));
    let _ = writeln!(
        out,
        "processes: {} on {} available core(s){}",
        cores.processes,
        cores.available,
        cores
            .shared
            .as_ref()
            .map_or(String::new(), |s| format!(" ({s})"))
    );
    let source = &pipeline.source;
    let pace = match &source.content {
        SourceContent::Python { kind, args, .. } if kind == "pva" => format!(
            "from the NTNDArray channel {}",
            args.get("channel")
                .map_or(String::new(), ToString::to_string)
        ),
        _ if source.fps > 0.0 => format!("at {} frames/s", source.fps),
        _ => "as fast as taken".to_string(),
    };
    let _ = writeln!(
        out,
        "  {:<18} {:<9} {}x{} {} {pace}, {} → {}",
        "source",
        core(cores.source),
        source.nx,
        source.ny,
        source.dtype.name(),
        source
            .frames
            .map_or("until stopped".to_string(), |n| format!("{n} frames")),
        source.ring
    );
    if let Some(m) = source.metadata.as_ref().filter(|m| !m.pvs.is_empty()) {
        let pvs: Vec<String> = m
            .pvs
            .iter()
            .map(|c| format!("{}={}://{}", c.name, c.protocol, c.pv))
            .collect();
        let _ = writeln!(out, "  metadata → {}: {}", m.ring, pvs.join(", "));
    }
    for (stage, stage_cores) in pipeline.stages.iter().zip(&cores.stages) {
        // How the stage takes its frames, when not every run first-free.
        let mut dealing = String::new();
        if let Some((set, sets)) = stage.set {
            dealing.push_str(&format!(" (set {set} of {sets}, runs of {})", stage.batch));
        }
        if stage.order == Order::RoundRobin {
            dealing.push_str(&format!(" (round-robin runs of {})", stage.batch));
        }
        if let Some(after) = &stage.after {
            dealing.push_str(&format!(" (after {after})"));
        }
        for (w, &c) in stage_cores.iter().enumerate() {
            let _ = writeln!(
                out,
                "  {:<18} {:<9} {}{dealing} {} → {}",
                format!("{} w{w}", stage.name),
                core(c),
                stage.processor,
                stage.inputs.join(", "),
                if stage.outputs.is_empty() {
                    "-".to_string()
                } else {
                    stage.outputs.join(", ")
                }
            );
        }
    }
    out
}

pub fn run(args: &RunArgs) -> anyhow::Result<Status> {
    if let Some(name) = &args.name {
        // The name comes from the command line, not the file: say so.
        check_pipeline_name(name).map_err(|m| anyhow::anyhow!("--name {m}"))?;
    }
    let pipeline = Pipeline::load(&args.pipeline, args.name.as_deref())?;
    let options = RunOptions {
        runtime: args.runtime.map(Seconds::duration),
        metrics: args.metrics,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    preflight(&pipeline, args.output.as_deref())?;
    start(&pipeline, args.json, &options, false)
}

pub fn demo(args: &DemoArgs) -> anyhow::Result<Status> {
    let name = format!("demo-{}", std::process::id() % 100_000);
    let pipeline = Pipeline::parse(
        DEMO_PIPELINE,
        "demo.toml (built in)",
        Path::new("."),
        Some(&name),
    )?;
    // Its own new folder, unless told where (an existing folder, as for `run`).
    let output = match &args.output {
        Some(dir) => dir.clone(),
        None => {
            let dir = std::env::temp_dir().join(&name);
            std::fs::create_dir_all(&dir).map_err(|e| {
                anyhow::anyhow!(
                    "cannot create the demo's folder {}: {e}; give one with --output DIR",
                    dir.display()
                )
            })?;
            dir
        }
    };
    preflight(&pipeline, Some(&output))?;
    eprintln!(
        "streamd demo: pipeline '{name}' for {} s; its files go to {}",
        args.runtime,
        output.display()
    );
    eprintln!("streamd demo: watch it with `streamd status --pipeline {name}` in another terminal");
    let options = RunOptions {
        runtime: Some(args.runtime.duration()),
        metrics: None,
        progress: true,
    };
    start(&pipeline, args.json, &options, true)
}

/// Runs `pipeline` (checked by [`preflight`], in its output folder) and prints how it
/// ended.
/// With `summary` (the demo), what each stage did and where its files are follow the
/// table (on stderr with `json`, whose object stays the last line on stdout).
fn start(
    pipeline: &Pipeline,
    json: bool,
    options: &RunOptions,
    summary: bool,
) -> anyhow::Result<Status> {
    let outcome = supervisor::run(pipeline, options)?;
    for note in &outcome.notes {
        eprintln!("streamd run: {note}");
    }
    for problem in &outcome.problems {
        eprintln!("streamd run: {problem}");
    }
    let story = summary.then(|| summarise(&outcome.report));
    if json {
        if let Some(story) = &story {
            eprint!("{story}");
        }
        println!("{}", serde_json::to_string(&outcome.report)?);
    } else {
        print!("{}", render(&outcome.report));
        if let Some(story) = &story {
            print!("{story}");
        }
    }
    let errors: u64 = outcome.report.stages.iter().map(|s| s.errors).sum();
    Ok(if !outcome.problems.is_empty() {
        Status::PipelineFailed
    } else if errors > 0 {
        Status::DataErrors
    } else {
        Status::Ok
    })
}

/// `streamd worker SPEC`: one stage or source process of a pipeline, started by
/// `streamd run` with its description as JSON; exits with the worker's status.
pub fn worker(spec: &str) -> anyhow::Result<Status> {
    let spec: crate::pipeline::worker::WorkerSpec = serde_json::from_str(spec)?;
    let code = crate::pipeline::worker::run(&spec)?;
    std::process::exit(code)
}

/// What each stage did, in a line each, and where the writers' files are (the run's
/// folder is the current one): the end of `streamd demo`.
fn summarise(report: &StatusReport) -> String {
    use std::fmt::Write;
    let folder = std::env::current_dir().unwrap_or_default();
    let mut out = format!("\nWhat each stage did (files in {}):\n", folder.display());
    for (i, stage) in report.stages.iter().enumerate() {
        let counter = |key: &str| -> u64 {
            stage
                .workers
                .iter()
                .filter_map(|w| w.counters.get(key).and_then(serde_json::Value::as_u64))
                .sum()
        };
        let each: Vec<String> = stage
            .workers
            .iter()
            .map(|w| w.frames_in.to_string())
            .collect();
        let did = match stage.processor.as_str() {
            _ if i == 0 => format!(
                "published {} frames at {:.1} frames/s{}, and {} metadata values",
                stage.frames_out,
                stage.achieved_fps.unwrap_or_default(),
                stage
                    .requested_fps
                    .map_or(String::new(), |f| format!(" (asked for {f})")),
                counter("metadata_values")
            ),
            "split" => format!(
                "cut {} frames into {} tiles",
                stage.frames_in, stage.frames_out
            ),
            "passthrough" => format!(
                "{} worker(s) passed on {} frames between them ({})",
                stage.workers.len(),
                stage.frames_in,
                each.join(" + ")
            ),
            "stitch" => format!(
                "stitched {} tiles back into {} frames ({} incomplete)",
                stage.frames_in,
                counter("stitched"),
                counter("incomplete")
            ),
            "metadata" => {
                let matched: Vec<String> = stage
                    .workers
                    .iter()
                    .flat_map(|w| w.counters.iter())
                    .filter_map(|(k, v)| {
                        let channel = k.strip_suffix(".matched")?;
                        Some(format!("{channel} to {v} frames"))
                    })
                    .collect();
                format!("attached {}", matched.join(", "))
            }
            "stats" => format!("reduced {} frames", stage.frames_in),
            "route" => {
                let routes: Vec<String> = stage
                    .workers
                    .iter()
                    .flat_map(|w| w.counters.iter())
                    .map(|(k, v)| format!("{v} to {k}"))
                    .collect();
                format!("routed {} frames: {}", stage.frames_in, routes.join(", "))
            }
            "verify" => format!(
                "checked every pixel of {} frames: {} differed",
                counter("verified") + counter("verify_errors"),
                counter("verify_errors")
            ),
            "hdf5" => format!(
                "wrote {} frames to {} (NXmx, over {} data file(s))",
                counter("frames_written"),
                folder
                    .join(stage.args["folder"].as_str().unwrap_or(""))
                    .join(format!(
                        "{}_master.h5",
                        stage.args["prefix"].as_str().unwrap_or("scan")
                    ))
                    .display(),
                counter("files_written")
            ),
            "tiff" | "raw" => format!(
                "wrote {} frames to {}",
                counter("frames_written"),
                files_of(stage)
            ),
            other => format!(
                "{other}: {} frames in, {} out",
                stage.frames_in, stage.frames_out
            ),
        };
        let _ = writeln!(out, "  {:<8} {did}", stage.name);
    }
    let lost: u64 = report
        .stages
        .iter()
        .map(|s| s.missed + s.dropped + s.errors)
        .sum();
    let _ = writeln!(
        out,
        "  {}",
        if lost == 0 {
            "nothing was lost: no frame missed, dropped or failed".to_string()
        } else {
            format!("{lost} frames missed, dropped or failed: see the table above")
        }
    );
    out
}

/// A writer stage's files in its folder: `hit_000000.tiff … hit_000271.tiff (36 files)`.
fn files_of(stage: &crate::control::status::StageStatus) -> String {
    let arg = |key: &str| stage.args.get(key).and_then(serde_json::Value::as_str);
    let folder = std::env::current_dir()
        .unwrap_or_default()
        .join(arg("folder").unwrap_or(""));
    let prefix = format!("{}_", arg("prefix").unwrap_or("scan"));
    let mut names: Vec<String> = std::fs::read_dir(&folder)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let shown = |name: &String| folder.join(name).display().to_string();
    match names.as_slice() {
        [] => "no files".to_string(),
        [one] => shown(one),
        [first, .., last] => format!("{} … {} ({} files)", shown(first), last, names.len()),
    }
}
