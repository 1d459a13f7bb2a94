//! streamd: lock-free shared-memory frame rings and the tools around them.
//!
//! * [`ring`] — the single-producer / multi-consumer ring (spec in `ringbuf-spec/`).
//! * [`pattern`] — the `ramp` and `random` test patterns and their verification.
//! * [`commands`] — the `streamd` subcommands.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod commands;
pub mod control;
pub mod pattern;
pub mod pipeline;
pub mod processors;
pub mod ring;
pub mod series;
pub mod sources;
pub mod stats;
pub mod stream2;
pub mod units;
pub mod uring;
pub mod writers;
