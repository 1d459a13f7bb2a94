//! What a source worker adds around its [`Source`](crate::sources::Source): the pacing
//! that holds a frame rate and the metadata channel values published beside the
//! frames. Shared by `streamd sim` and a pipeline's source.

use crate::ring::{AttrValue, ClaimError, Dtype, FrameMeta, Producer};
use serde::{Deserialize, Serialize};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

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
