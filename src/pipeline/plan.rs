//! What a validated pipeline file describes: the plan `streamd run` carries out and hands
//! to each worker (as JSON). Plain data: [`config`](super::config) makes it from the
//! file, the supervisor, the workers and the source read it.

use crate::processors::python::PythonCode;
use crate::ring::{Delivery, Dtype, FullPolicy};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// A validated pipeline: what `streamd run` starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pipeline {
    pub name: String,
    /// Where it came from, for messages.
    pub origin: String,
    pub drain_timeout: Duration,
    pub restart: RestartPolicy,
    pub rings: Vec<RingPlan>,
    pub source: SourcePlan,
    pub stages: Vec<StagePlan>,
}

/// When a crashing worker stops being restarted.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RestartPolicy {
    /// Crashes within `window_s` after which the worker is marked failed.
    #[serde(default = "default_max_crashes")]
    pub max_crashes: u32,
    #[serde(default = "default_window_s")]
    pub window_s: f64,
    /// First delay before a restart; doubles with each crash in the window, up to 5 s.
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
}

fn default_max_crashes() -> u32 {
    5
}
fn default_window_s() -> f64 {
    60.0
}
fn default_backoff_ms() -> u64 {
    100
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            max_crashes: default_max_crashes(),
            window_s: default_window_s(),
            backoff_ms: default_backoff_ms(),
        }
    }
}

/// A ring as the pipeline uses it. A ring written by a stage with several workers is
/// one segment per worker (`NAME.0`, `NAME.1`, ...): a ring has a single producer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RingPlan {
    pub name: String,
    pub slots: u32,
    pub slot_bytes: u64,
    pub full_policy: FullPolicy,
    /// Processes that write it: one segment each.
    pub writers: u32,
}

impl RingPlan {
    /// Segment names in `/dev/shm` for pipeline `pipeline`.
    pub fn segments(&self, pipeline: &str) -> Vec<String> {
        if self.writers == 1 {
            vec![format!("{pipeline}.{}", self.name)]
        } else {
            (0..self.writers)
                .map(|i| format!("{pipeline}.{}.{i}", self.name))
                .collect()
        }
    }
}

/// Which cores a stage's workers run on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoreChoice {
    /// Spread over the host's cores by the supervisor.
    Auto,
    /// Worker `i` gets `list[i % len]`.
    List(Vec<usize>),
}

/// What the source publishes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SourceContent {
    Ramp,
    Random,
    Npy(PathBuf),
    Tiff(Vec<PathBuf>),
    /// A Python class's `frames()` generator, given `args` (run in the interpreter).
    Python {
        code: PythonCode,
        args: toml::Table,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourcePlan {
    pub ring: String,
    pub content: SourceContent,
    pub nx: u32,
    pub ny: u32,
    pub dtype: Dtype,
    /// Frames per second; 0 = as fast as the pipeline takes them.
    pub fps: f64,
    /// `None` runs until stopped.
    pub frames: Option<u64>,
    pub cores: CoreChoice,
    /// Channel values published beside the frames.
    pub metadata: Option<MetadataPlan>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StagePlan {
    pub name: String,
    pub processor: String,
    pub args: toml::Table,
    pub inputs: Vec<String>,
    /// Output rings by port; most stages have one, `route` several, sinks none.
    pub outputs: Vec<String>,
    /// Rings of metadata channel values every worker reads in full.
    pub metadata: Vec<String>,
    pub workers: u32,
    pub batch: u32,
    pub delivery: Delivery,
    /// Every worker sees every frame instead of sharing them.
    pub broadcast: bool,
    pub cores: CoreChoice,
    /// `FILE:LINE:COLUMN` of the stage and of each argument, for checks made later
    /// (a writer's folder, checked where the run's folder is known).
    #[serde(default)]
    pub at: BTreeMap<String, String>,
}

impl StagePlan {
    /// Where argument `key` was written, else where the stage's processor was named.
    pub fn location(&self, key: &str) -> &str {
        self.at
            .get(key)
            .or_else(|| self.at.get("processor"))
            .map_or("", String::as_str)
    }
}

impl StagePlan {
    /// The ring group worker `worker` joins on each input.
    pub fn group(&self, worker: u32) -> String {
        if self.broadcast {
            format!("{}.{worker}", self.name)
        } else {
            self.name.clone()
        }
    }

    /// The ring group worker `worker` joins on each metadata ring: its own, so every
    /// worker sees every value.
    pub fn metadata_group(&self, worker: u32) -> String {
        format!("{}.m{worker}", self.name)
    }

    /// Every ring the stage reads: inputs, then metadata.
    pub fn reads(&self) -> impl Iterator<Item = &String> {
        self.inputs.iter().chain(&self.metadata)
    }

    /// Distinct groups of this stage on each input.
    pub fn groups(&self) -> Vec<String> {
        if self.broadcast {
            (0..self.workers).map(|w| self.group(w)).collect()
        } else {
            vec![self.name.clone()]
        }
    }
}

/// Metadata channel values a source publishes beside its frames (`streamd sim
/// --metadata`, a pipeline source's `metadata` table), for tests and commissioning.
///
/// Channel `k` (0-based) of frame `f` has the value `f + (k + 1) / 8` (exact in f64) and
/// the frame's timestamp moved by a jitter in `±jitter_ns` (fixed by `f` and `k`). A
/// channel written `NAME/N` publishes only for frames whose id is a multiple of `N`; with
/// `gap_every = G`, frames whose id is `G - 1` modulo `G` get no values at all. Each value
/// is one record in the metadata ring — an empty payload, the value as an `f64`
/// attribute named after the channel, its timestamp in the header — published just
/// before its frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataPlan {
    pub ring: String,
    pub channels: Vec<ChannelPlan>,
    pub jitter_ns: u64,
    pub gap_every: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelPlan {
    pub name: String,
    pub every: u64,
}

impl MetadataPlan {
    /// Parses `x,y/2,z`.
    pub fn parse_channels(spec: &str) -> Result<Vec<ChannelPlan>, String> {
        let mut channels: Vec<ChannelPlan> = Vec::new();
        for part in spec.split(',').map(str::trim) {
            let (name, every) = match part.split_once('/') {
                None => (part, 1),
                Some((name, n)) => match n.parse::<u64>() {
                    Ok(n) if n >= 1 => (name, n),
                    _ => return Err(format!("channel '{part}': the part after '/' must be a positive integer (publish every N frames)")),
                },
            };
            let max = crate::processors::metadata::MAX_CHANNEL_NAME;
            let valid = !name.is_empty()
                && name.len() <= max
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return Err(format!(
                    "channel name '{name}' is invalid: use 1 to {max} characters from A-Z a-z 0-9 _"
                ));
            }
            if channels.iter().any(|c| c.name == name) {
                return Err(format!("channel '{name}' is listed twice"));
            }
            channels.push(ChannelPlan {
                name: name.to_string(),
                every,
            });
        }
        Ok(channels)
    }

    /// The value of channel `k` for frame `frame_id`.
    pub fn value(k: usize, frame_id: u64) -> f64 {
        frame_id as f64 + (k + 1) as f64 / 8.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_lists_parse_with_rates() {
        let c = MetadataPlan::parse_channels("x, y/2,z").unwrap();
        assert_eq!(
            c.iter()
                .map(|c| (c.name.as_str(), c.every))
                .collect::<Vec<_>>(),
            [("x", 1), ("y", 2), ("z", 1)]
        );
        assert!(MetadataPlan::parse_channels("x,x").is_err());
        assert!(MetadataPlan::parse_channels("x/0").is_err());
        assert!(MetadataPlan::parse_channels("a.b").is_err());
    }
}
