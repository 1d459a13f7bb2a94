//! What a source worker adds around its [`Source`](crate::sources::Source): the pacing
//! that holds a frame rate, and the metadata channel values published beside the frames
//! (simulated, or read from outside by a [`MetadataFeed`]). Shared by `streamd sim` and a
//! pipeline's source.

use super::plan::MetadataPlan;
use crate::ring::{AttrValue, ClaimError, Dtype, FrameMeta, Producer};
use crate::units::{nth_tick, Rate};
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
            start_ns: crate::sys::now_ns(),
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

/// Publishing is the source's part of the plan (the plan itself is plain data).
impl MetadataPlan {
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
}
