//! `--metrics ADDR`: the status counters in Prometheus text format over plain HTTP.

use super::status::{StageStatus, StatusReport, WorkerStatus};
use std::fmt::Write;

/// A per-worker metric: name, type, help text, and how to read it (`None`: no sample
/// for that worker).
type Metric = (
    &'static str,
    &'static str,
    &'static str,
    fn(&WorkerStatus) -> Option<f64>,
);

/// A label value as the exposition format writes it: `\`, `"` and newlines escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The report in Prometheus exposition format (version 0.0.4).
pub fn render(report: &StatusReport) -> String {
    let mut out = String::new();
    let metrics: [Metric; 15] = [
        (
            "streamd_frames_in_total",
            "counter",
            "Frames taken from the input rings.",
            |w| Some(w.frames_in as f64),
        ),
        (
            "streamd_frames_out_total",
            "counter",
            "Frames published to the output rings.",
            |w| Some(w.frames_out as f64),
        ),
        (
            "streamd_bytes_in_total",
            "counter",
            "Payload bytes taken in.",
            |w| Some(w.bytes_in as f64),
        ),
        (
            "streamd_missed_total",
            "counter",
            "Frames a lossy input skipped.",
            |w| Some(w.missed as f64),
        ),
        (
            "streamd_dropped_total",
            "counter",
            "Frames not published because an output ring was full.",
            |w| Some(w.dropped as f64),
        ),
        (
            "streamd_errors_total",
            "counter",
            "Frames the processor failed on.",
            |w| Some(w.errors as f64),
        ),
        (
            "streamd_restarts_total",
            "counter",
            "Times the worker was restarted after a crash.",
            |w| Some(w.restarts as f64),
        ),
        (
            "streamd_lag_frames",
            "gauge",
            "Frames published to the input ring after the last one taken.",
            |w| Some(w.lag as f64),
        ),
        (
            "streamd_processing_p50_seconds",
            "gauge",
            "Median processing time per frame.",
            |w| Some(w.proc_us_p50 / 1e6),
        ),
        (
            "streamd_processing_p99_seconds",
            "gauge",
            "99th percentile processing time per frame.",
            |w| Some(w.proc_us_p99 / 1e6),
        ),
        (
            "streamd_worker_failed",
            "gauge",
            "1 when the worker crashed too often and is not restarted.",
            |w| Some(f64::from(u8::from(w.state == "failed"))),
        ),
        (
            "streamd_worker_stalled",
            "gauge",
            "1 while the worker shows no sign of life (a stale heartbeat) and waits for nothing.",
            |w| Some(f64::from(u8::from(w.stalled))),
        ),
        (
            "streamd_heartbeat_age_seconds",
            "gauge",
            "Seconds since the worker last showed it lives.",
            |w| Some(w.heartbeat_age_ms as f64 / 1e3),
        ),
        (
            "streamd_worker_exit_status",
            "gauge",
            "Exit status of the worker's last process that exited.",
            |w| w.exit_status.map(f64::from),
        ),
        (
            "streamd_worker_exit_signal",
            "gauge",
            "Signal that killed the worker's last process that was killed.",
            |w| w.exit_signal.map(f64::from),
        ),
    ];
    for (name, kind, help, value) in metrics {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for stage in &report.stages {
            for w in &stage.workers {
                if let Some(value) = value(w) {
                    let _ = writeln!(
                        out,
                        "{name}{{pipeline=\"{}\",stage=\"{}\",worker=\"{}\"}} {value}",
                        report.pipeline, stage.name, w.worker,
                    );
                }
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP streamd_worker_reason_info Why the worker is not running as it should (failed, restarting, in error, stalled, held back).\n# TYPE streamd_worker_reason_info gauge"
    );
    for stage in &report.stages {
        for w in &stage.workers {
            if let Some(reason) = &w.reason {
                let _ = writeln!(
                    out,
                    "streamd_worker_reason_info{{pipeline=\"{}\",stage=\"{}\",worker=\"{}\",state=\"{}\",reason=\"{}\"}} 1",
                    report.pipeline,
                    stage.name,
                    w.worker,
                    w.state,
                    label(reason)
                );
            }
        }
    }
    type SourceMetric = (&'static str, &'static str, fn(&StageStatus) -> Option<f64>);
    let source: [SourceMetric; 3] = [
        (
            "streamd_source_requested_fps",
            "Frames per second the source is asked for (absent: as fast as it can).",
            |s| s.requested_fps,
        ),
        (
            "streamd_source_achieved_fps",
            "Frames per second the source published over its measuring window.",
            |s| s.achieved_fps,
        ),
        (
            "streamd_source_below_rate",
            "1 while the source publishes less than 90 % of the rate asked for.",
            |s| s.requested_fps.map(|_| f64::from(u8::from(s.below_rate))),
        ),
    ];
    for (name, help, value) in source {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for stage in &report.stages {
            if let Some(value) = value(stage) {
                let _ = writeln!(
                    out,
                    "{name}{{pipeline=\"{}\",stage=\"{}\"}} {value}",
                    report.pipeline, stage.name
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP streamd_ring_published_total Frames published into the ring.\n# TYPE streamd_ring_published_total counter"
    );
    for ring in &report.rings {
        let _ = writeln!(
            out,
            "streamd_ring_published_total{{pipeline=\"{}\",ring=\"{}\"}} {}",
            report.pipeline,
            ring["name"].as_str().unwrap_or("?"),
            ring["published"]
        );
    }
    out
}
