//! What a validated pipeline file describes: the plan `streamd run` carries out and hands
//! to each worker (as JSON). Plain data: [`config`](super::config) makes it from the
//! file, the supervisor, the workers and the source read it.

use crate::processors::python::PythonCode;
use crate::processors::InputFrames;
use crate::ring::{Delivery, Dtype, FullPolicy, GroupSet, SetMode};
use crate::sources::zmq::ZmqSettings;
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
    /// Bytes of `/dev/shm` one segment of the ring takes (allocated in full at creation).
    pub fn segment_bytes(&self) -> u64 {
        crate::ring::segment_size(self.slots, self.slot_bytes).unwrap_or(u64::MAX)
    }

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
    /// A Python class's `frames()` generator, given `args` (run in the interpreter):
    /// the user's (`kind = "python"`) or the package's pvAccess source (`kind = "pva"`).
    Python {
        kind: String,
        code: PythonCode,
        args: toml::Table,
    },
    /// DECTRIS Stream V2 from a ZeroMQ PUSH socket (`kind = "zmq"`).
    Zmq(ZmqSettings),
}

impl SourceContent {
    /// The source kind's name in the registry (`registry::SOURCES`).
    pub fn kind(&self) -> &str {
        match self {
            SourceContent::Ramp | SourceContent::Random => "sim",
            SourceContent::Npy(_) | SourceContent::Tiff(_) => "replay",
            SourceContent::Python { kind, .. } => kind,
            SourceContent::Zmq(_) => "zmq",
        }
    }
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

impl SourcePlan {
    /// The source's frame size: the size of every frame, or the largest it takes.
    pub fn frame_bytes(&self) -> u64 {
        u64::from(self.nx) * u64::from(self.ny) * self.dtype.size() as u64
    }

    /// `(ny, nx, bytes per pixel)` where every frame has the declared shape; a source fed
    /// from outside (Python, pvAccess, ZeroMQ) takes any frame up to its size.
    pub fn exact_shape(&self) -> Option<(u32, u32, u64)> {
        match self.content {
            SourceContent::Ramp
            | SourceContent::Random
            | SourceContent::Npy(_)
            | SourceContent::Tiff(_) => Some((self.ny, self.nx, self.dtype.size() as u64)),
            SourceContent::Python { .. } | SourceContent::Zmq(_) => None,
        }
    }
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
    /// `(set, sets)`: the stage takes only the runs of `batch` frames dealt to that set
    /// of its inputs (spec §5.9, PvaPy's distributor sets); stages in one set each see all
    /// of its frames.
    #[serde(default)]
    pub set: Option<(u32, u32)>,
    /// How the workers take turns at the stage's runs.
    #[serde(default)]
    pub order: Order,
    /// `after = "STAGE"`: the stage takes a frame only once that earlier stage, which
    /// reads the same rings, has finished it (spec §5.10): its workers can read frames
    /// without a copy being handed on.
    #[serde(default)]
    pub after: Option<String>,
    pub cores: CoreChoice,
    /// `FILE:LINE:COLUMN` of the stage and of each argument, for checks made later
    /// (a writer's folder, checked where the run's folder is known).
    #[serde(default)]
    pub at: BTreeMap<String, String>,
}

impl StagePlan {
    /// The frames this stage reads, given each ring's slot size.
    pub fn input_frames(
        &self,
        source: &SourcePlan,
        slot_bytes: impl Fn(&str) -> u64,
    ) -> InputFrames {
        InputFrames {
            bytes: self.inputs.iter().map(|i| slot_bytes(i)).max().unwrap_or(0),
            source_bytes: source.frame_bytes(),
            shape: self
                .inputs
                .iter()
                .all(|i| *i == source.ring)
                .then(|| source.exact_shape())
                .flatten(),
        }
    }

    /// Where argument `key` was written, else where the stage's processor was named.
    pub fn location(&self, key: &str) -> &str {
        self.at
            .get(key)
            .or_else(|| self.at.get("processor"))
            .map_or("", String::as_str)
    }
}

/// How a stage's workers take turns (`order`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Order {
    /// Whichever worker is free takes the next run.
    #[default]
    FirstFree,
    /// Worker k of W takes runs k, k+W, k+2W, ... of the stage's runs: a set each.
    RoundRobin,
}

impl StagePlan {
    /// The set worker `worker` takes on each input (spec §5.9): the stage's own set, and
    /// in round-robin order one set per worker within it, so worker k of W takes the
    /// stage's turns k, k+W, ... (of `sets` sets, set `s`: sets `s + sets·k` of
    /// `sets·W`). The worker shares its set with the supervisor's holder (mode one).
    pub fn set_of(&self, worker: u32) -> Option<GroupSet> {
        let (index, sets) = match (self.order, self.set) {
            (Order::FirstFree, set) => set?,
            (Order::RoundRobin, None) => (worker, self.workers),
            (Order::RoundRobin, Some((set, sets))) => (set + sets * worker, sets * self.workers),
        };
        Some(GroupSet {
            index,
            sets,
            mode: SetMode::One,
        })
    }

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

    /// Distinct groups (and sets) of this stage on each input.
    pub fn groups(&self) -> Vec<(String, Option<GroupSet>)> {
        if self.broadcast || self.order == Order::RoundRobin {
            (0..self.workers)
                .map(|w| (self.group(w), self.set_of(w)))
                .collect()
        } else {
            vec![(self.name.clone(), self.set_of(0))]
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
///
/// With `pvs`, the values come from EPICS channels instead (`channels = "pva://x,
/// ca://y"`): each update's value and timestamp become one such record, published
/// between frames by a Python-hosted source (see [`MetadataFeed`](super::source::MetadataFeed)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataPlan {
    pub ring: String,
    /// Simulated channels (none when `pvs` is given).
    pub channels: Vec<ChannelPlan>,
    pub jitter_ns: u64,
    pub gap_every: u64,
    /// Channels read from EPICS PVs.
    #[serde(default)]
    pub pvs: Vec<PvChannel>,
    /// The monitor queue each PV's server keeps for this client (`record[queueSize=N]`,
    /// PvaPy's `--server-queue-size`); 0 leaves the library's default.
    #[serde(default)]
    pub queue_size: u32,
}

/// A metadata channel read from an EPICS PV: `pva://PV` or `ca://PV`, optionally named
/// `NAME=pva://PV` (the attribute name; the PV name otherwise).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PvChannel {
    pub name: String,
    /// `pva` or `ca`.
    pub protocol: String,
    pub pv: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelPlan {
    pub name: String,
    pub every: u64,
}

impl MetadataPlan {
    /// Parses `pva://x,ca://y,z=pva://13SIM1:m1.RBV`; `None` when no entry names a
    /// protocol (simulated channels, [`parse_channels`](Self::parse_channels)).
    pub fn parse_pvs(spec: &str) -> Option<Result<Vec<PvChannel>, String>> {
        if !spec.contains("://") {
            return None;
        }
        let parse = || {
            let mut pvs: Vec<PvChannel> = Vec::new();
            for part in spec.split(',').map(str::trim) {
                let (name, url) = match part.split_once('=') {
                    Some((name, url)) if !name.contains("://") => (Some(name.trim()), url.trim()),
                    _ => (None, part),
                };
                let Some((protocol, pv)) = url.split_once("://") else {
                    return Err(format!(
                        "channel '{part}' names no protocol; write every channel as pva://PV or ca://PV"
                    ));
                };
                if !matches!(protocol, "pva" | "ca") {
                    return Err(format!(
                        "channel '{part}': unknown protocol '{protocol}' (use pva:// or ca://)"
                    ));
                }
                if pv.is_empty() || pv.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(format!("channel '{part}' has no usable PV name"));
                }
                let name = name.unwrap_or(pv);
                let max = crate::processors::metadata::MAX_CHANNEL_NAME;
                if name.is_empty() || name.len() > max {
                    return Err(format!(
                        "channel '{part}': the name '{name}' must be 1 to {max} characters; name it NAME={protocol}://{pv}"
                    ));
                }
                if pvs.iter().any(|c| c.name == name) {
                    return Err(format!("channel '{name}' is listed twice"));
                }
                pvs.push(PvChannel {
                    name: name.to_string(),
                    protocol: protocol.to_string(),
                    pv: pv.to_string(),
                });
            }
            Ok(pvs)
        };
        Some(parse())
    }

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

    #[test]
    fn pv_channel_lists_name_their_protocols() {
        assert!(MetadataPlan::parse_pvs("x,y").is_none());
        let c = MetadataPlan::parse_pvs("pva://x, ca://y:z,m=pva://13SIM1:m1.RBV")
            .unwrap()
            .unwrap();
        let got: Vec<_> = c
            .iter()
            .map(|c| (c.name.as_str(), c.protocol.as_str(), c.pv.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("x", "pva", "x"),
                ("y:z", "ca", "y:z"),
                ("m", "pva", "13SIM1:m1.RBV")
            ]
        );
        for bad in [
            "pva://x,y",
            "http://x",
            "pva://",
            "pva://x,pva://x",
            "pva://a_very_long_pv_name",
        ] {
            assert!(MetadataPlan::parse_pvs(bad).unwrap().is_err(), "{bad}");
        }
    }
}
