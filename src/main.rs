//! The `streamd` binary: parses the command line and runs a subcommand. Errors reach
//! the user as one sentence on stderr with exit status 2; data problems use 1 and a
//! dead producer 3 (see `streamd --help`).

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use streamd::commands::{self, consume::ConsumeArgs, sim::Pattern, sim::SimArgs};
use streamd::ring::{Delivery, Dtype, FullPolicy};

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
    Sim {
        #[arg(long)]
        ring: String,
        #[arg(long, default_value_t = 512)]
        nx: u32,
        #[arg(long, default_value_t = 512)]
        ny: u32,
        #[arg(long, default_value = "u8")]
        dtype: Dtype,
        /// Frames per second; 0 = as fast as the consumers allow.
        #[arg(long, default_value_t = 0.0)]
        fps: f64,
        /// Stop after this many frames.
        #[arg(long, conflicts_with = "runtime")]
        frames: Option<u64>,
        /// Stop after this many seconds.
        #[arg(long)]
        runtime: Option<f64>,
        /// Frame content: ramp (verifiable, see the spec) or random.
        #[arg(long, default_value = "ramp")]
        pattern: Pattern,
        #[arg(long, default_value_t = 64)]
        slots: u32,
        /// What to do when lossless consumers still need every slot.
        #[arg(long, value_enum, default_value_t = PolicyArg::Block)]
        policy: PolicyArg,
        /// Publish nothing until this many consumers are attached.
        #[arg(long, default_value_t = 0)]
        wait_consumers: usize,
        /// Print the counters as one JSON object on the last line.
        #[arg(long)]
        json: bool,
    },
    /// Read frames from a ring: count, verify and time them.
    Consume {
        #[arg(long)]
        ring: String,
        /// Share the stream with the other members of this group.
        #[arg(long)]
        group: Option<String>,
        /// Consecutive frames a group member takes at a time.
        #[arg(long, default_value_t = 1, requires = "group")]
        batch: u32,
        #[arg(long, value_enum, default_value_t = DeliveryArg::Lossless)]
        delivery: DeliveryArg,
        #[arg(long, conflicts_with = "runtime")]
        frames: Option<u64>,
        #[arg(long)]
        runtime: Option<f64>,
        /// Check every frame against the ramp pattern.
        #[arg(long)]
        verify: bool,
        /// Read every byte of each frame in place (a stand-in for a processor's pass).
        #[arg(long)]
        read: bool,
        /// Busy-poll instead of sleeping (lowest latency, burns a core).
        #[arg(long)]
        spin: bool,
        #[arg(long)]
        json: bool,
        /// Seconds to wait for the ring to appear.
        #[arg(long, default_value_t = 30.0)]
        attach_timeout: f64,
        /// Spend this many microseconds after each frame (a stand-in for processing a copy).
        #[arg(long, default_value_t = 0)]
        work_us: u64,
        /// Write each received frame id to this file, one per line.
        #[arg(long)]
        record_ids: Option<PathBuf>,
    },
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

#[derive(Clone, Copy, ValueEnum)]
enum PolicyArg {
    Block,
    DropNewest,
}

#[derive(Clone, Copy, ValueEnum)]
enum DeliveryArg {
    Lossless,
    Lossy,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Sim {
            ring,
            nx,
            ny,
            dtype,
            fps,
            frames,
            runtime,
            pattern,
            slots,
            policy,
            wait_consumers,
            json,
        } => {
            let policy = match policy {
                PolicyArg::Block => FullPolicy::Block,
                PolicyArg::DropNewest => FullPolicy::DropNewest,
            };
            commands::sim::run(&SimArgs {
                ring,
                nx,
                ny,
                dtype,
                fps,
                frames,
                runtime,
                pattern,
                slots,
                policy,
                wait_consumers,
                json,
            })
        }
        Command::Consume {
            ring,
            group,
            batch,
            delivery,
            frames,
            runtime,
            verify,
            read,
            spin,
            json,
            attach_timeout,
            work_us,
            record_ids,
        } => {
            let delivery = match delivery {
                DeliveryArg::Lossless => Delivery::Lossless,
                DeliveryArg::Lossy => Delivery::Lossy,
            };
            commands::consume::run(&ConsumeArgs {
                ring,
                group,
                batch,
                delivery,
                frames,
                runtime,
                verify,
                read,
                spin,
                json,
                attach_timeout,
                work_us,
                record_ids,
            })
        }
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
