//! The `streamd` binary: parses the command line and runs a subcommand. Errors reach
//! the user as one sentence on stderr with exit status 2; data problems use 1, a dead
//! producer 3 and a failed pipeline stage 5 (see `streamd --help`).

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use streamd::commands::{
    self,
    consume::ConsumeArgs,
    control::Target,
    peek::PeekArgs,
    run::{CheckArgs, DemoArgs, RunArgs},
    sim::SimArgs,
    top::TopArgs,
};
use streamd::control::Request;
use streamd::units::one_line;

#[derive(Parser)]
#[command(
    name = "streamd",
    version,
    about = "Shared-memory frame rings and pipelines for detector hosts"
)]
#[command(
    after_help = "Exit status: 0 ok, 1 frames failed verification or processing, 2 usage or setup error, 3 the producer died, 5 a pipeline stage failed or did not drain."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline file: rings, pinned stage processes, supervision, control socket.
    Run(RunArgs),
    /// Validate a pipeline file and print its plan; start nothing.
    Check(CheckArgs),
    /// Run the built-in demo pipeline and say where its files go.
    Demo(DemoArgs),
    /// Show a running pipeline's stages, workers, rings and counters.
    Status {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        json: bool,
        /// A health check: `healthy` and status 0, or a line per failed, erring or
        /// stalled worker and a source below its rate and status 1 (2: not running).
        #[arg(long, conflicts_with = "json")]
        health: bool,
    },
    /// Drain a running pipeline in order and stop it.
    Stop {
        #[command(flatten)]
        target: Target,
    },
    /// Zero a running pipeline's counters.
    ResetStats {
        #[command(flatten)]
        target: Target,
    },
    /// Change a processor argument of a running stage: STAGE KEY=VALUE.
    Configure {
        stage: String,
        #[arg(value_parser = commands::control::key_value)]
        setting: (String, String),
        #[command(flatten)]
        target: Target,
    },
    /// The live dashboard of a running pipeline (`--once`: the overview as text).
    Top(TopArgs),
    /// Simulate a detector: publish frames into a ring.
    Sim(SimArgs),
    /// Read frames from a ring: count, verify and time them.
    Consume(ConsumeArgs),
    /// The newest frame of a ring: header, attributes, statistics (`--png`: a preview).
    Peek(PeekArgs),
    /// List the rings in /dev/shm with their producers, groups and counters.
    Rings {
        #[arg(long)]
        json: bool,
    },
    /// Remove segments whose producer or pipeline finished or died.
    Clean {
        #[arg(long)]
        json: bool,
    },
    /// A pipeline's stage process (started by `streamd run`, not by hand).
    #[command(hide = true)]
    Worker { spec: String },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    let result = match cli.command {
        Command::Run(args) => commands::run::run(&args),
        Command::Demo(args) => commands::run::demo(&args),
        Command::Check(args) => commands::run::check(&args),
        Command::Status {
            target,
            json,
            health,
        } => commands::control::status(&target, json, health),
        Command::Stop { target } => commands::control::simple(&target, Request::Stop),
        Command::ResetStats { target } => commands::control::simple(&target, Request::ResetStats),
        Command::Configure {
            stage,
            setting: (key, value),
            target,
        } => commands::control::simple(&target, Request::Configure { stage, key, value }),
        Command::Top(args) => commands::top::run(&args),
        Command::Sim(args) => commands::sim::run(&args),
        Command::Consume(args) => commands::consume::run(&args),
        Command::Peek(args) => commands::peek::run(&args),
        Command::Rings { json } => commands::rings::list(json),
        Command::Clean { json } => commands::rings::clean(json),
        Command::Worker { spec } => commands::run::worker(&spec),
    };
    match result {
        Ok(status) => ExitCode::from(status as u8),
        Err(e) => {
            eprintln!("streamd: {}", one_line(&format!("{e:#}")));
            ExitCode::from(2)
        }
    }
}

/// Help and version go out as clap writes them; a usage error becomes one line (its
/// tip kept, the usage block left to `--help`), status 2.
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
    }
    let text = e.render().to_string();
    let parts: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:"))
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
        .collect();
    let sentence = parts.join("; ");
    let sentence = sentence.strip_prefix("error: ").unwrap_or(&sentence);
    eprintln!(
        "streamd: {} (see --help)",
        one_line(sentence.trim_end_matches('.'))
    );
    ExitCode::from(2)
}
