//! `streamd status | stop | reset-stats | configure`: talk to a running pipeline.

use super::Status;
use crate::control::{choose_pipeline, send, status::render, Request};

#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// The pipeline to address; may be left out when only one runs.
    #[arg(long)]
    pub pipeline: Option<String>,
}

pub fn status(target: &Target, json: bool, health: bool) -> anyhow::Result<Status> {
    let name = choose_pipeline(target.pipeline.as_deref())?;
    let reply = send(&name, &Request::Status)?;
    let report = reply
        .status
        .ok_or_else(|| anyhow::anyhow!("pipeline '{name}' sent no status: {}", reply.message))?;
    if health {
        let problems = unhealthy(&report);
        if problems.is_empty() {
            println!("pipeline '{name}' is healthy");
            return Ok(Status::Ok);
        }
        for problem in &problems {
            println!("pipeline '{name}': {problem}");
        }
        return Ok(Status::DataErrors);
    }
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(Status::Ok)
}

pub fn simple(target: &Target, request: Request) -> anyhow::Result<Status> {
    let name = choose_pipeline(target.pipeline.as_deref())?;
    let reply = send(&name, &request)?;
    if reply.ok {
        println!("{}", reply.message);
        Ok(Status::Ok)
    } else {
        anyhow::bail!("{}", reply.message)
    }
}

/// Splits `KEY=VALUE`.
pub fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("'{text}' is not KEY=VALUE")),
    }
}

/// What makes a running pipeline unhealthy, a line each: failed, erring or stalled
/// workers, and a source below the rate it is asked for.
fn unhealthy(report: &crate::control::status::StatusReport) -> Vec<String> {
    let mut problems = Vec::new();
    for stage in &report.stages {
        if stage.below_rate {
            problems.push(format!(
                "{} publishes {:.1} of the {} frames/s asked for",
                stage.name,
                stage.achieved_fps.unwrap_or_default(),
                stage.requested_fps.unwrap_or_default()
            ));
        }
        for w in &stage.workers {
            if w.stalled || matches!(w.state.as_str(), "failed" | "error") {
                problems.push(format!(
                    "{} worker {} {}: {}",
                    stage.name,
                    w.worker,
                    crate::control::status::shown_state(w),
                    w.reason.as_deref().unwrap_or("no reason recorded")
                ));
            }
        }
    }
    problems
}
