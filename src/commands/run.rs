//! `streamd run PIPELINE.toml` and `streamd demo` (the same, on the built-in pipeline).

use super::Status;
use crate::control::status::render;
use crate::pipeline::supervisor::{self, RunOptions};
use crate::pipeline::Pipeline;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The built-in demo pipeline (`streamd demo`).
pub const DEMO_PIPELINE: &str = include_str!("../../fixtures/pipelines/demo.toml");

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The pipeline file (TOML); `fixtures/pipelines/` has examples.
    pub pipeline: PathBuf,
    /// Drain and stop after this many seconds.
    #[arg(long)]
    pub runtime: Option<f64>,
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
    /// Seconds to run before draining.
    #[arg(long, default_value_t = 10.0)]
    pub runtime: f64,
    /// Where its files go (default: a new folder under the system's temp folder).
    #[arg(long)]
    pub output: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &RunArgs) -> anyhow::Result<Status> {
    let pipeline = Pipeline::load(&args.pipeline, args.name.as_deref())?;
    let options = RunOptions {
        runtime: runtime(args.runtime)?,
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
        runtime: runtime(Some(args.runtime))?,
        metrics: None,
        progress: true,
    };
    execute(&pipeline, Some(&output), args.json, &options)
}

fn runtime(seconds: Option<f64>) -> anyhow::Result<Option<Duration>> {
    match seconds {
        Some(r) if !(r > 0.0 && r.is_finite()) => {
            anyhow::bail!("--runtime {r} is not a duration; give a positive number of seconds")
        }
        other => Ok(other.map(Duration::from_secs_f64)),
    }
}

fn execute(
    pipeline: &Pipeline,
    output: Option<&Path>,
    json: bool,
    options: &RunOptions,
) -> anyhow::Result<Status> {
    if let Some(dir) = output {
        std::fs::create_dir_all(dir).map_err(|e| {
            anyhow::anyhow!("cannot create the output folder {}: {e}", dir.display())
        })?;
        std::env::set_current_dir(dir).map_err(|e| {
            anyhow::anyhow!("cannot enter the output folder {}: {e}", dir.display())
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
