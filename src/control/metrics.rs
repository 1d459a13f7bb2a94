//! `--metrics ADDR`: the status counters in Prometheus text format over plain HTTP.

use super::status::{StatusReport, WorkerStatus};
use std::fmt::Write;

/// A per-worker metric: name, type, help text, and how to read it.
type Metric = (
    &'static str,
    &'static str,
    &'static str,
    fn(&WorkerStatus) -> f64,
);

/// The report in Prometheus exposition format (version 0.0.4).
pub fn render(report: &StatusReport) -> String {
    let mut out = String::new();
    let metrics: [Metric; 10] = [
        (
            "streamd_frames_in_total",
            "counter",
            "Frames taken from the input rings.",
            |w| w.frames_in as f64,
        ),
        (
            "streamd_frames_out_total",
            "counter",
            "Frames published to the output rings.",
            |w| w.frames_out as f64,
        ),
        (
            "streamd_bytes_in_total",
            "counter",
            "Payload bytes taken in.",
            |w| w.bytes_in as f64,
        ),
        (
            "streamd_missed_total",
            "counter",
            "Frames a lossy input skipped.",
            |w| w.missed as f64,
        ),
        (
            "streamd_dropped_total",
            "counter",
            "Frames not published because an output ring was full.",
            |w| w.dropped as f64,
        ),
        (
            "streamd_errors_total",
            "counter",
            "Frames the processor failed on.",
            |w| w.errors as f64,
        ),
        (
            "streamd_restarts_total",
            "counter",
            "Times the worker was restarted after a crash.",
            |w| w.restarts as f64,
        ),
        (
            "streamd_lag_frames",
            "gauge",
            "Frames published to the input ring after the last one taken.",
            |w| w.lag as f64,
        ),
        (
            "streamd_processing_p50_seconds",
            "gauge",
            "Median processing time per frame.",
            |w| w.proc_us_p50 / 1e6,
        ),
        (
            "streamd_processing_p99_seconds",
            "gauge",
            "99th percentile processing time per frame.",
            |w| w.proc_us_p99 / 1e6,
        ),
    ];
    for (name, kind, help, value) in metrics {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for stage in &report.stages {
            for w in &stage.workers {
                let _ = writeln!(
                    out,
                    "{name}{{pipeline=\"{}\",stage=\"{}\",worker=\"{}\"}} {}",
                    report.pipeline,
                    stage.name,
                    w.worker,
                    value(w)
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
