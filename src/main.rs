//! The `streamd` binary: parses the command line and runs a subcommand. Errors reach
//! the user as one sentence on stderr with exit status 2; data problems use 1 and a
//! dead producer 3 (see `streamd --help`).

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use streamd::commands::{self, consume::ConsumeArgs, sim::SimArgs};

#[derive(Parser)]
#[command(
    name = "streamd",
    version,
    about = "Shared-memory frame rings and pipelines for detector hosts"
)]
#[command(
    after_help = "Exit status: 0 ok, 1 frames failed verification, 2 usage or setup error, 3 the producer died."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Simulate a detector: publish frames into a ring.
    Sim(SimArgs),
    /// Read frames from a ring: count, verify and time them.
    Consume(ConsumeArgs),
    /// List the rings in /dev/shm with their producers, groups and counters.
    Rings {
        #[arg(long)]
        json: bool,
    },
    /// Remove ring segments whose producer finished or died.
    Clean {
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Sim(args) => commands::sim::run(&args),
        Command::Consume(args) => commands::consume::run(&args),
        Command::Rings { json } => commands::rings::list(json),
        Command::Clean { json } => commands::rings::clean(json),
    };
    match result {
        Ok(status) => ExitCode::from(status as u8),
        Err(e) => {
            eprintln!("streamd: {e:#}");
            ExitCode::from(2)
        }
    }
}
