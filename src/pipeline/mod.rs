//! Pipelines: the file that describes one ([`config`]) and the plan made of it
//! ([`plan`]), the supervisor that runs it (`streamd run`), and the stage and source
//! processes it spawns.

pub mod config;
mod logs;
pub mod pinning;
pub mod plan;
pub mod source;
pub mod supervisor;
pub mod worker;

pub use config::ConfigError;
pub use plan::Pipeline;
