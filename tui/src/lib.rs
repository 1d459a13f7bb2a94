//! `streamd top`, the live dashboard: a row per stage worker with its rates, loss and
//! processing times, the rings' fill and accounting, a minute of throughput per stage,
//! recent events, a worker's detail and a live view of the newest frame of a ring.
//!
//! The crate knows nothing of shared memory: `streamd` gives it a [`model::Source`]
//! that reads the stats segment and the rings, and tests give it canned snapshots. The
//! [`app::App`] holds all state and turns keys into [`app::Action`]s; `ui` draws it
//! (`impl Widget for &App`); `terminal` runs the loop on a real terminal.
#![forbid(unsafe_code)]

pub mod app;
pub mod model;
mod terminal;
pub mod ui;

pub use app::App;
pub use model::{Command, LiveFrame, Snapshot, Source};
pub use terminal::{run, TICK};

/// The width of the terminal on stdout, if stdout is one.
pub fn terminal_width() -> Option<u16> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        return None;
    }
    ratatui::crossterm::terminal::size()
        .ok()
        .map(|(width, _)| width)
}
