//! The `streamd` subcommands. Each returns an [`Outcome`]: the counters it prints and
//! the exit status, so the binary stays a thin shell around them.

pub mod consume;
pub mod control;
pub mod peek;
pub mod rings;
pub mod run;
pub mod sim;
pub mod top;

/// Exit status of a command that ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok = 0,
    /// Frames failed verification or a slot was damaged.
    DataErrors = 1,
    /// The producer died; everything it published was drained.
    ProducerDied = 3,
    /// A pipeline stage failed (crashed too often) or did not drain in time.
    PipelineFailed = 5,
}

/// Prints counters: one JSON object as the last stdout line with `json`, else
/// `key: value` lines.
pub fn print_counters(value: &serde_json::Value, json: bool) {
    if json {
        println!("{value}");
    } else if let Some(map) = value.as_object() {
        for (key, v) in map {
            println!("{key}: {v}");
        }
    }
}

/// Rate over a duration; 0 for an empty one.
pub(crate) fn per_second(count: f64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count / seconds
    } else {
        0.0
    }
}

/// The ring segments a reader of `name` reads: `name` itself when it exists, else its
/// numbered segments `name.0`, `name.1`, ... (a pipeline ring that several workers
/// write, as a stage that reads it does); `name` alone when neither exists yet.
pub fn ring_segments(name: &str) -> Vec<String> {
    let names = crate::ring::list_names().unwrap_or_default();
    if names.iter().any(|n| n == name) {
        return vec![name.to_string()];
    }
    let prefix = format!("{name}.");
    let mut numbered: Vec<(u64, String)> = names
        .into_iter()
        .filter_map(|n| {
            let index = n.strip_prefix(&prefix)?.parse().ok()?;
            Some((index, n))
        })
        .collect();
    numbered.sort();
    if numbered.is_empty() {
        vec![name.to_string()]
    } else {
        numbered.into_iter().map(|(_, n)| n).collect()
    }
}
