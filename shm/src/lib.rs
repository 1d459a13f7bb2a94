//! streamd's shared memory: every byte that other processes map, and all the `unsafe`
//! that touches it, behind safe types.
//!
//! * [`ring`] — the single-producer / multi-consumer frame ring (`ringbuf-spec/SPEC.md`):
//!   [`Producer`](ring::Producer), [`SlotWriter`](ring::SlotWriter),
//!   [`Consumer`](ring::Consumer), [`Frame`](ring::Frame),
//!   [`RingInspector`](ring::RingInspector).
//! * [`stats`] — the stats segment, where each pipeline worker publishes its counters.
//!
//! A crate of its own so that the compiler keeps the fence: the segment mapping, the
//! header words and the protocol helpers are private here, and nothing outside can
//! store into a ring's `head` or a consumer's `pin`. The `streamd` crate re-exports both
//! modules (`streamd::ring`, `streamd::stats`).
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod ring;
pub mod stats;
