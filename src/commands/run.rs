//! `streamd run PIPELINE.toml` and `streamd demo` (the same, on the built-in pipeline).

use super::Status;
use crate::control::status::render;
use crate::pipeline::config::check_pipeline_name;
use crate::pipeline::supervisor::{self, RunOptions};
use crate::pipeline::Pipeline;
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
    /// Folder the stages run in: relative file names in processor arguments land here.
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
    /// Where its files go (default: a new folder under the system's temp folder).
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
    match &args.output {
        Some(dir) if dir.exists() && !dir.is_dir() => anyhow::bail!(
            "--output {} is a file, not a folder; give a folder (it is created if missing)",
            quote(&dir.display().to_string())
        ),
        Some(dir) if dir.is_dir() => {
            std::env::set_current_dir(dir).map_err(|e| {
                anyhow::anyhow!(
                    "cannot enter the output folder {}: {e}",
                    quote(&dir.display().to_string())
                )
            })?;
            supervisor::prepare_stages(&pipeline)?;
        }
        // A folder `run` would create: writers' own folders are checked when it exists.
        Some(_) => {}
        None => supervisor::prepare_stages(&pipeline)?,
    }
    println!(
        "pipeline '{}' ({}): {} rings, source and {} stages",
        pipeline.name,
        pipeline.origin,
        pipeline.rings.len(),
        pipeline.stages.len()
    );
    for ring in &pipeline.rings {
        println!(
            "  ring {}: {} slots of {} bytes, {} segment(s)",
            ring.name, ring.slots, ring.slot_bytes, ring.writers
        );
    }
    let s = &pipeline.source;
    println!(
        "  source → {}: {}x{} {} at {} fps, {}",
        s.ring,
        s.nx,
        s.ny,
        s.dtype.name(),
        s.fps,
        s.frames
            .map_or("until stopped".to_string(), |n| format!("{n} frames"))
    );
    for st in &pipeline.stages {
        println!(
            "  stage {}: {} × {} workers, {} → {}",
            st.name,
            st.processor,
            st.workers,
            st.inputs.join(", "),
            if st.outputs.is_empty() {
                "-".to_string()
            } else {
                st.outputs.join(", ")
            }
        );
    }
    Ok(Status::Ok)
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
    execute(&pipeline, args.output.as_deref(), args.json, &options)
}

pub fn demo(args: &DemoArgs) -> anyhow::Result<Status> {
    let name = format!("demo-{}", std::process::id() % 100_000);
    let pipeline = Pipeline::parse(
        DEMO_PIPELINE,
        "demo.toml (built in)",
        Path::new("."),
        Some(&name),
    )?;
    let output = match &args.output {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(&name),
    };
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
    execute(&pipeline, Some(&output), args.json, &options)
}

fn execute(
    pipeline: &Pipeline,
    output: Option<&Path>,
    json: bool,
    options: &RunOptions,
) -> anyhow::Result<Status> {
    if let Some(dir) = output {
        if dir.exists() && !dir.is_dir() {
            anyhow::bail!(
                "--output {} is a file, not a folder; give a folder (it is created if missing)",
                quote(&dir.display().to_string())
            );
        }
        std::fs::create_dir_all(dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot create the output folder {}: {e}; give a folder you can write",
                quote(&dir.display().to_string())
            )
        })?;
        std::env::set_current_dir(dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot enter the output folder {}: {e}",
                quote(&dir.display().to_string())
            )
        })?;
    }
    let outcome = supervisor::run(pipeline, options)?;
    for note in &outcome.notes {
        eprintln!("streamd run: {note}");
    }
    for problem in &outcome.problems {
        eprintln!("streamd run: {problem}");
    }
    if json {
        println!("{}", serde_json::to_string(&outcome.report)?);
    } else {
        print!("{}", render(&outcome.report));
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
