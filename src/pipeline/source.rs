//! What a source worker adds around its [`Source`](crate::sources::Source): the pacing
//! that holds a frame rate, and the metadata channel values published beside the frames
//! (simulated, or read from outside by a [`MetadataFeed`]). Shared by `streamd sim` and a
//! pipeline's source.

use crate::ring::{AttrValue, ClaimError, Dtype, FrameMeta, Producer};
use crate::units::{nth_tick, Rate};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// Metadata values a source's host reads from outside (EPICS PVs, `pva://` and `ca://`
/// channels), published into the metadata ring between frames.
pub trait MetadataFeed {
    /// Every value that arrived since the last call, oldest first; never waits.
    fn take(&mut self) -> Result<Vec<ChannelValue>, String>;
    /// The feed's own counters (values received, disconnects, ...).
    fn counters(&self) -> Vec<(String, u64)> {
        Vec::new()
    }
    /// `streamd reset-stats`: zero those counters.
    fn reset_counters(&mut self) {}
}

/// A channel's value with its timestamp, as the metadata stage matches it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChannelValue {
    /// Index into [`MetadataPlan::pvs`].
    pub channel: usize,
    pub timestamp_ns: u64,
    pub value: f64,
}

/// Sleeps until `at`, spinning for the last stretch so high rates stay even.
pub fn pace(at: Instant) {
    pace_or_stop(at, &AtomicBool::new(false));
}

/// Like [`pace`], but wakes at least every 50 ms to look at `stop`: returns false
/// when it was raised (a slow rate never makes SIGTERM wait for the next frame).
pub fn pace_or_stop(at: Instant, stop: &AtomicBool) -> bool {
    let spin = Duration::from_micros(200);
    let slice = Duration::from_millis(50);
    loop {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= at {
            return true;
        }
        let left = at - now;
        if left > spin {
            std::thread::sleep((left - spin).min(slice));
        } else {
            std::hint::spin_loop();
        }
    }
}

/// A pipeline source's schedule: frame `first + k` is due `k` intervals after `start`
/// and stamped with that time. A new rate (`streamd configure source fps=F`) starts a
/// new schedule at the next frame.
pub struct Schedule {
    interval: Option<Duration>,
    start: Instant,
    start_ns: u64,
    first: u64,
}

impl Schedule {
    /// A schedule at `rate` whose first frame is `first`, due now.
    pub fn new(rate: Rate, first: u64) -> Schedule {
        Schedule {
            interval: rate.interval(),
            start: Instant::now(),
            start_ns: crate::commands::now_ns(),
            first,
        }
    }

    /// When frame `frame_id` is due; `None` when the source runs as fast as it can.
    pub fn due(&self, frame_id: u64) -> Option<Instant> {
        let interval = self.interval?;
        Some(self.start + nth_tick(interval, frame_id.saturating_sub(self.first)))
    }

    /// The time frame `frame_id` is stamped with, as a detector's clock would (a late
    /// publication does not move the timestamp metadata is matched to); `None` when the
    /// source is not paced.
    pub fn timestamp_ns(&self, frame_id: u64) -> Option<u64> {
        let interval = self.interval?;
        let after = nth_tick(interval, frame_id.saturating_sub(self.first));
        Some(self.start_ns.saturating_add(after.as_nanos() as u64))
    }
}

/// The rate a paced source achieves, measured over a window of the last second or the
/// last five requested frame intervals, whichever is longer (at most a minute), so a
/// slow rate is not judged on one frame.
pub struct RateMeter {
    requested: f64,
    window: Duration,
    since: Instant,
    /// (when, frames published by then), oldest first, spanning about one window.
    samples: VecDeque<(Instant, u64)>,
}

/// What a [`RateMeter`] measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    /// Frames per second over the window (or since the meter started, if shorter).
    pub achieved: f64,
    /// A whole window has passed and the source published less than 90 % of the frames
    /// it was asked for in it.
    pub below: bool,
}

impl RateMeter {
    /// Below this share of the requested rate, a source is below its rate.
    pub const SHORT: f64 = 0.9;

    /// A meter for a source asked for `requested` frames/s (0: as fast as it can, never
    /// below), that had published `count` frames at `now`.
    pub fn new(requested: f64, now: Instant, count: u64) -> RateMeter {
        let intervals = if requested > 0.0 {
            Duration::from_secs_f64((5.0 / requested).min(60.0))
        } else {
            Duration::ZERO
        };
        RateMeter {
            requested,
            window: intervals.max(Duration::from_secs(1)),
            since: now,
            samples: VecDeque::from([(now, count)]),
        }
    }

    /// Takes the count of frames published by `now`.
    pub fn record(&mut self, now: Instant, count: u64) -> Measured {
        self.samples.push_back((now, count));
        // Keep the newest sample that is at least a window old as the window's start.
        while self.samples.len() > 2 && now.duration_since(self.samples[1].0) >= self.window {
            self.samples.pop_front();
        }
        let (then, before) = self.samples[0];
        let seconds = now.duration_since(then).as_secs_f64();
        let achieved = if seconds > 0.0 {
            count.saturating_sub(before) as f64 / seconds
        } else {
            0.0
        };
        let settled = now.duration_since(self.since) >= self.window;
        Measured {
            achieved,
            below: self.requested > 0.0 && settled && achieved < Self::SHORT * self.requested,
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
/// between frames by a Python-hosted source (see [`MetadataFeed`]).
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

    /// Publishes one channel value as metadata record number `seq`; `Ok(false)` when a
    /// full `drop-newest` ring dropped it.
    pub fn publish_value(
        &self,
        ring: &mut Producer,
        seq: u64,
        value: &ChannelValue,
    ) -> Result<bool, MetadataError> {
        let Some(channel) = self.pvs.get(value.channel) else {
            return Ok(true);
        };
        let mut slot = match ring.claim() {
            Ok(slot) => slot,
            Err(ClaimError::Full) => return Ok(false),
            Err(ClaimError::Interrupted) => return Err(MetadataError::Interrupted),
        };
        slot.push_attr(&channel.name, AttrValue::F64(value.value))?;
        slot.publish(&FrameMeta {
            frame_id: seq,
            timestamp_ns: value.timestamp_ns,
            dtype: Dtype::U8,
            dims: &[0],
            flags: 0,
        })?;
        Ok(true)
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

    /// Publishes frame `frame_id`'s values (stamped around `frame_ts`); returns how many
    /// were published and how many a full `drop-newest` ring dropped.
    pub fn publish(
        &self,
        ring: &mut Producer,
        frame_id: u64,
        frame_ts: u64,
    ) -> Result<(u64, u64), MetadataError> {
        if self.gap_every > 0 && frame_id % self.gap_every == self.gap_every - 1 {
            return Ok((0, 0));
        }
        let (mut published, mut dropped) = (0, 0);
        for (k, channel) in self.channels.iter().enumerate() {
            if frame_id % channel.every != 0 {
                continue;
            }
            let jitter = if self.jitter_ns == 0 {
                0
            } else {
                let span = 2 * self.jitter_ns + 1;
                (mix(frame_id, k as u64) % span) as i64 - self.jitter_ns as i64
            };
            let mut slot = match ring.claim() {
                Ok(slot) => slot,
                Err(ClaimError::Full) => {
                    dropped += 1;
                    continue;
                }
                Err(ClaimError::Interrupted) => return Err(MetadataError::Interrupted),
            };
            slot.push_attr(&channel.name, AttrValue::F64(Self::value(k, frame_id)))?;
            slot.publish(&FrameMeta {
                frame_id,
                timestamp_ns: frame_ts.saturating_add_signed(jitter),
                dtype: Dtype::U8,
                dims: &[0],
                flags: 0,
            })?;
            published += 1;
        }
        Ok((published, dropped))
    }
}

/// Why metadata could not be published.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("interrupted while waiting for space in the metadata ring")]
    Interrupted,
    #[error("{0}")]
    Publish(#[from] crate::ring::PublishError),
    #[error("{0}")]
    Attribute(#[from] crate::ring::FrameError),
    #[error("{0}")]
    Feed(String),
}

/// A fixed pseudo-random number for (a, b) (splitmix64 of their mix).
fn mix(a: u64, b: u64) -> u64 {
    let mut z = a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ b.wrapping_add(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_short_of_its_rate_for_a_whole_window_is_below_it() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // 100 frames/s asked: a window of 1 s.
        let mut meter = RateMeter::new(100.0, t0, 0);
        // Half the rate, but less than a window so far: not judged yet.
        let early = meter.record(at(500), 25);
        assert_eq!(early.achieved, 50.0);
        assert!(!early.below);
        for step in 6..=20 {
            meter.record(at(step * 100), step * 5);
        }
        let late = meter.record(at(2100), 105);
        assert!((late.achieved - 50.0).abs() < 1e-9, "{late:?}");
        assert!(late.below);
        // Back at the rate: over the last second it is no longer below.
        for step in 22..=32 {
            meter.record(at(step * 100), 105 + (step - 21) * 10);
        }
        let caught_up = meter.record(at(3300), 225);
        assert!(!caught_up.below, "{caught_up:?}");
        assert!((caught_up.achieved - 100.0).abs() < 1e-9, "{caught_up:?}");
    }

    #[test]
    fn a_slow_rate_is_judged_over_five_frames_and_max_rate_never_below() {
        let t0 = Instant::now();
        // 0.5 frames/s: a window of 10 s; one frame in 4 s is not judged.
        let mut meter = RateMeter::new(0.5, t0, 0);
        assert!(!meter.record(t0 + Duration::from_secs(4), 1).below);
        assert!(meter.record(t0 + Duration::from_secs(12), 2).below);
        let mut unpaced = RateMeter::new(0.0, t0, 0);
        assert!(!unpaced.record(t0 + Duration::from_secs(5), 1).below);
    }

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
