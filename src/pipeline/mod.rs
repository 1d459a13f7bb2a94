//! Pipelines: the file that describes one ([`config`]), the supervisor that runs it
//! (`streamd run`), and the stage and source processes it spawns.

pub mod config;
mod logs;
pub mod pinning;
pub mod source;
pub mod supervisor;
pub mod sys;
pub mod worker;

pub use config::{ConfigError, Pipeline};
