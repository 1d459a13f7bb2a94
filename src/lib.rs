//! streamd: lock-free shared-memory frame rings and the pipelines around them.
//!
//! * [`ring`] — the single-producer / multi-consumer ring (spec in `ringbuf-spec/`), and
//!   [`stats`], the stats segment: both from the `streamd-shm` crate, which holds all the
//!   unsafe code on shared memory.
//! * [`pattern`] — the `ramp` and `random` test patterns and their verification.
//! * [`processors`] and [`writers`] — what a stage does to frames; [`sources`] — where a
//!   pipeline's frames come from (with [`stream2`], the DECTRIS Stream V2 codec, and
//!   [`series`]); [`registry`] names processors and sources.
//! * [`pipeline`] — the pipeline file, the supervisor and the stage workers.
//! * [`control`] — the control socket and the status report.
//! * [`commands`] — the `streamd` subcommands.
//!
//! Unsafe code is denied except in the modules that make system or library calls.
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub use streamd_shm::{ring, stats};

pub mod commands;
pub mod control;
pub mod pattern;
pub mod pipeline;
pub mod processors;
pub mod registry;
pub mod series;
pub mod sources;
pub mod stream2;
#[allow(unsafe_code)] // kill, prctl, signal, umask
pub mod sys;
pub mod units;
#[allow(unsafe_code)] // buffers lent to the kernel
pub mod uring;
pub mod writers;
