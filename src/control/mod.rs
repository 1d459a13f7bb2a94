//! The control socket of a running pipeline (`/dev/shm/streamd-control.NAME`, a Unix
//! socket, mode 0600) and the commands that use it: `status`, `configure`, `stop`,
//! `reset-stats`. One JSON request line per connection, one JSON reply line.

pub mod metrics;
pub mod server;
pub mod status;

use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
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

/// Picks the pipeline a command addresses: the one named, or the only one running.
pub fn choose_pipeline(named: Option<&str>) -> anyhow::Result<String> {
    if let Some(name) = named {
        return Ok(name.to_string());
    }
    match running_pipelines().as_slice() {
        [] => anyhow::bail!(
            "no pipeline is running on this host; start one with `streamd run PIPELINE.toml`"
        ),
        [one] => Ok(one.clone()),
        many => anyhow::bail!(
            "{} pipelines are running ({}); choose one with --pipeline NAME",
            many.len(),
            many.join(", ")
        ),
    }
}

/// Sends `request` to pipeline `name` and returns its reply.
pub fn send(name: &str, request: &Request) -> anyhow::Result<Reply> {
    let path = socket_path(name);
    let stream = UnixStream::connect(&path).map_err(|e| {
        anyhow::anyhow!(
            "cannot reach pipeline '{name}' at {}: {e}; is it running (`streamd status`)?",
            path.display()
        )
    })?;
    // Configure waits up to a few seconds for the workers to take the change.
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut writer = &stream;
    writeln!(writer, "{}", serde_json::to_string(request)?)?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    serde_json::from_str(&line)
        .map_err(|e| anyhow::anyhow!("pipeline '{name}' sent an unreadable reply: {e}"))
}
