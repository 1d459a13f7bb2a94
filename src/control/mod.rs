//! The control socket of a running pipeline (`/dev/shm/streamd-control.NAME`, a Unix
//! socket, mode 0600) and the commands that use it: `status`, `configure`, `stop`,
//! `reset-stats`. One JSON request line per connection, one JSON reply line.

pub mod metrics;
pub mod server;
pub mod status;

use serde::{Deserialize, Serialize};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

const PREFIX: &str = "streamd-control.";

/// Path of pipeline `name`'s control socket.
pub fn socket_path(name: &str) -> PathBuf {
    Path::new("/dev/shm").join(format!("{PREFIX}{name}"))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Request {
    Status,
    Stop,
    ResetStats,
    Configure {
        stage: String,
        key: String,
        value: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<status::StatusReport>,
}

/// The pipelines on this host whose supervisor is alive, by name.
pub fn running_pipelines() -> Vec<String> {
    crate::stats::list_pipelines()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| crate::stats::StatsSegment::open(n).is_ok_and(|s| s.supervisor().is_alive()))
        .collect()
}

/// Why a command could not talk to a pipeline over its control socket.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no pipeline is running on this host; start one with `streamd run PIPELINE.toml`")]
    NoneRunning,
    #[error("{} pipelines are running ({}); choose one with --pipeline NAME", .names.len(), .names.join(", "))]
    Several { names: Vec<String> },
    #[error("cannot reach pipeline '{name}' at {path}: {io}; is it running (`streamd status`)?")]
    Unreachable {
        name: String,
        path: String,
        io: io::Error,
    },
    #[error("pipeline '{name}' sent an unreadable reply: {reason}")]
    BadReply {
        name: String,
        reason: serde_json::Error,
    },
    /// The request could not be encoded.
    #[error(transparent)]
    Encode(#[from] serde_json::Error),
    /// The connection failed after it was made.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Picks the pipeline a command addresses: the one named, or the only one running.
pub fn choose_pipeline(named: Option<&str>) -> Result<String, ControlError> {
    if let Some(name) = named {
        return Ok(name.to_string());
    }
    match running_pipelines().as_slice() {
        [] => Err(ControlError::NoneRunning),
        [one] => Ok(one.clone()),
        many => Err(ControlError::Several {
            names: many.to_vec(),
        }),
    }
}

/// Sends `request` to pipeline `name` and returns its reply.
pub fn send(name: &str, request: &Request) -> Result<Reply, ControlError> {
    let path = socket_path(name);
    let stream = UnixStream::connect(&path).map_err(|io| ControlError::Unreachable {
        name: name.to_string(),
        path: path.display().to_string(),
        io,
    })?;
    // Configure waits up to a few seconds for the workers to take the change.
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut writer = &stream;
    writeln!(writer, "{}", serde_json::to_string(request)?)?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    serde_json::from_str(&line).map_err(|reason| ControlError::BadReply {
        name: name.to_string(),
        reason,
    })
}
