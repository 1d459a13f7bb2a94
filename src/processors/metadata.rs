//! `metadata`: attaches metadata channel values to frames by timestamp (PvaPy's metadata
//! processor). The stage reads its frames from `input` and channel values from the
//! rings named by its `metadata` key; every worker sees every value.
//!
//! For each frame with timestamp `t` and each channel, the window is
//! `t + offset ± tolerance`. Values older than the window are discarded (counted
//! `discarded`); the oldest value inside it is attached to the frame as an `f64`
//! attribute named after the channel and consumed (`matched`); newer values are kept
//! for later frames. A channel with no value in the window is `unmatched` once it has
//! shown a value newer than the window, or once the frame has waited `wait_ms` for late
//! values; frames wait in arrival order (at most `max_held`) and leave in that order.

use super::{
    number, positive_integer, unknown_key, ArgValue, Outputs, ProcessError, Processor, Refused,
    Wiring,
};
use crate::ring::{AttrValue, AttributeArea, Frame, FrameHeader};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Most channels one stage matches (three counters each fit the stats entry).
pub const MAX_CHANNELS: usize = 10;
/// Longest channel name (its counter names must fit the stats entry).
pub const MAX_CHANNEL_NAME: usize = 13;
/// Values kept per channel; beyond that the oldest is discarded.
const MAX_QUEUED: usize = 4096;

/// The matching rule, apart from rings and frames so its timeline can be tested alone.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub tolerance_ns: u64,
    pub offset_ns: i64,
    queues: Vec<VecDeque<(u64, f64)>>,
    newest: Vec<Option<u64>>,
    pub matched: Vec<u64>,
    pub unmatched: Vec<u64>,
    pub discarded: Vec<u64>,
}

impl Matcher {
    pub fn new(channels: usize, tolerance_ns: u64, offset_ns: i64) -> Matcher {
        Matcher {
            tolerance_ns,
            offset_ns,
            queues: vec![VecDeque::new(); channels],
            newest: vec![None; channels],
            matched: vec![0; channels],
            unmatched: vec![0; channels],
            discarded: vec![0; channels],
        }
    }

    /// Takes a value of channel `c` stamped `ts`.
    pub fn add(&mut self, c: usize, ts: u64, value: f64) {
        let queue = &mut self.queues[c];
        // Values usually come in time order; a jittered one goes to its place.
        let at = queue
            .iter()
            .rposition(|&(t, _)| t <= ts)
            .map_or(0, |i| i + 1);
        queue.insert(at, (ts, value));
        if queue.len() > MAX_QUEUED {
            queue.pop_front();
            self.discarded[c] += 1;
        }
        self.newest[c] = Some(self.newest[c].map_or(ts, |n| n.max(ts)));
    }

    /// The values for a frame stamped `t`, one per channel (`None` = unmatched), or
    /// `None` while a channel could still deliver a value and `give_up` is false.
    pub fn decide(&mut self, t: u64, give_up: bool) -> Option<Vec<Option<f64>>> {
        let centre = t as i128 + i128::from(self.offset_ns);
        let lo = centre - i128::from(self.tolerance_ns);
        let hi = centre + i128::from(self.tolerance_ns);
        let mut ready = true;
        for (c, queue) in self.queues.iter_mut().enumerate() {
            while queue.front().is_some_and(|&(ts, _)| i128::from(ts) < lo) {
                queue.pop_front();
                self.discarded[c] += 1;
            }
            let in_window = queue.front().is_some_and(|&(ts, _)| i128::from(ts) <= hi);
            let passed = self.newest[c].is_some_and(|n| i128::from(n) > hi);
            ready &= in_window || passed;
        }
        if !ready && !give_up {
            return None;
        }
        let values = (0..self.queues.len())
            .map(|c| {
                let hit = self.queues[c]
                    .front()
                    .is_some_and(|&(ts, _)| i128::from(ts) <= hi);
                if hit {
                    self.matched[c] += 1;
                    self.queues[c].pop_front().map(|(_, v)| v)
                } else {
                    self.unmatched[c] += 1;
                    None
                }
            })
            .collect();
        Some(values)
    }
}

/// A frame waiting for late metadata.
struct Held {
    header: FrameHeader,
    pixels: Vec<u8>,
    attributes: AttributeArea,
    since: Instant,
}

pub struct AttachMetadata {
    channels: Vec<String>,
    tolerance_ns: u64,
    offset_ns: i64,
    wait: Duration,
    max_held: usize,
    matcher: Option<Matcher>,
    held: VecDeque<Held>,
    spare: Vec<Vec<u8>>,
    frames_held: u64,
}

impl Default for AttachMetadata {
    fn default() -> Self {
        AttachMetadata {
            channels: Vec::new(),
            tolerance_ns: 250_000,
            offset_ns: 0,
            wait: Duration::from_millis(10),
            max_held: 64,
            matcher: None,
            held: VecDeque::new(),
            spare: Vec::new(),
            frames_held: 0,
        }
    }
}

const KEYS: [&str; 5] = [
    "channels",
    "tolerance_us",
    "offset_us",
    "wait_ms",
    "max_held",
];

impl Processor for AttachMetadata {
    /// The channels matched are settled when the matcher is built, at start.
    fn fixed_while_running(&self) -> &'static [&'static str] {
        &["channels"]
    }

    fn configure(&mut self, key: &str, value: &ArgValue) -> Result<(), Refused> {
        match key {
            "channels" => {
                let names = value
                    .as_array()
                    .and_then(|l| l.iter().map(|v| v.as_str().map(str::to_string)).collect())
                    .ok_or_else(|| format!("channels must be a list of names, got {value}"))?;
                let names: Vec<String> = names;
                if names.is_empty() || names.len() > MAX_CHANNELS {
                    return Err(format!("channels must list 1 to {MAX_CHANNELS} names").into());
                }
                if let Some(bad) = names
                    .iter()
                    .find(|n| n.is_empty() || n.len() > MAX_CHANNEL_NAME)
                {
                    return Err(format!(
                        "channel name {} must be 1 to {MAX_CHANNEL_NAME} characters",
                        crate::units::quote(bad)
                    )
                    .into());
                }
                if let Some(twice) = names
                    .iter()
                    .enumerate()
                    .find_map(|(i, n)| names[..i].contains(n).then_some(n))
                {
                    return Err(format!(
                        "channel {} is listed twice in channels; list each once",
                        crate::units::quote(twice)
                    )
                    .into());
                }
                if self.matcher.is_some() {
                    return Err(super::fixed_while_running(key));
                }
                self.channels = names;
            }
            "tolerance_us" | "offset_us" => {
                let us = number(key, value)?;
                if !(-1e12..=1e12).contains(&us) {
                    return Err(format!("{key} must be within ±1e12 microseconds, got {us}").into());
                }
                if key == "tolerance_us" && us < 0.0 {
                    return Err(format!("tolerance_us must be 0 or more, got {us}").into());
                }
                let ns = (us * 1000.0).round() as i64;
                if key == "tolerance_us" {
                    self.tolerance_ns = ns as u64;
                } else {
                    self.offset_ns = ns;
                }
                if let Some(m) = &mut self.matcher {
                    (m.tolerance_ns, m.offset_ns) = (self.tolerance_ns, self.offset_ns);
                }
            }
            "wait_ms" => {
                let ms = number(key, value)?;
                if !(0.0..=60_000.0).contains(&ms) {
                    return Err(format!("wait_ms must be 0 to 60000, got {ms}").into());
                }
                self.wait = Duration::from_secs_f64(ms / 1000.0);
            }
            "max_held" => self.max_held = positive_integer(key, value)? as usize,
            _ => return Err(unknown_key("metadata", key, &KEYS).into()),
        }
        Ok(())
    }

    fn check_wiring(&self, wiring: &Wiring) -> Result<(), Refused> {
        if self.channels.is_empty() {
            return Err("metadata needs channels = [\"x\", ...]".into());
        }
        if wiring.metadata == 0 {
            return Err(
                "metadata needs metadata = \"RING\" naming the ring of channel values".into(),
            );
        }
        Ok(())
    }

    fn start(&mut self, _ctx: &super::StageContext) -> Result<(), ProcessError> {
        self.matcher = Some(Matcher::new(
            self.channels.len(),
            self.tolerance_ns,
            self.offset_ns,
        ));
        Ok(())
    }

    fn metadata(&mut self, record: &Frame<'_>) -> Result<(), ProcessError> {
        let ts = record.header().timestamp_ns;
        let matcher = self.matcher.as_mut().ok_or("metadata before start")?;
        for attribute in record.attributes() {
            let (key, value) = attribute?;
            let Some(c) = self.channels.iter().position(|n| n == key) else {
                continue;
            };
            let value = match value {
                AttrValue::F64(x) => x,
                AttrValue::I64(i) => i as f64,
                AttrValue::Str(_) => continue,
            };
            matcher.add(c, ts, value);
        }
        Ok(())
    }

    fn process(
        &mut self,
        _input: usize,
        frame: &Frame<'_>,
        out: &mut Outputs,
    ) -> Result<(), ProcessError> {
        let header = frame.header();
        if self.held.is_empty() {
            let matcher = self.matcher.as_mut().ok_or("frame before start")?;
            if let Some(values) = matcher.decide(header.timestamp_ns, false) {
                let attributes = frame.raw_attributes()?;
                return send(
                    &self.channels,
                    out,
                    header,
                    frame.payload(),
                    attributes,
                    &values,
                );
            }
        }
        let mut pixels = self.spare.pop().unwrap_or_default();
        pixels.clear();
        pixels.extend_from_slice(frame.payload());
        let attributes = AttributeArea::copied(frame.raw_attributes()?)?;
        // Every value published before the frames held so far has been taken by now; this
        // frame is held from the same moment, so it cannot time out before its values come.
        let now = Instant::now();
        self.held.push_back(Held {
            header: header.clone(),
            pixels,
            attributes,
            since: now,
        });
        self.frames_held += 1;
        self.release(out, Some(now))
    }

    fn poll(&mut self, out: &mut Outputs) -> Result<(), ProcessError> {
        self.release(out, Some(Instant::now()))
    }

    fn stop(&mut self, out: &mut Outputs) -> Result<(), ProcessError> {
        self.release(out, None)
    }

    fn counters(&self) -> Vec<(String, u64)> {
        let mut counters = Vec::new();
        if let Some(m) = &self.matcher {
            for (c, name) in self.channels.iter().enumerate() {
                counters.push((format!("{name}.matched"), m.matched[c]));
                counters.push((format!("{name}.unmatched"), m.unmatched[c]));
                counters.push((format!("{name}.discarded"), m.discarded[c]));
            }
        }
        counters.push(("frames_held".into(), self.frames_held));
        counters
    }
}

impl AttachMetadata {
    /// Lets held frames leave in order once their values are decided: every one at the
    /// end (`checked` is `None`), else a frame that waited `wait_ms` before `checked`,
    /// the moment by which every value published before it had been taken. Measuring
    /// to `checked`, not to now, keeps time spent blocked on a full output ring (while
    /// no metadata is read) from counting as waiting for values.
    fn release(&mut self, out: &mut Outputs, checked: Option<Instant>) -> Result<(), ProcessError> {
        let matcher = self.matcher.as_mut().ok_or("frame before start")?;
        while let Some(front) = self.held.front() {
            let give_up = checked.is_none_or(|checked| {
                self.held.len() > self.max_held
                    || checked.saturating_duration_since(front.since) >= self.wait
            });
            let Some(values) = matcher.decide(front.header.timestamp_ns, give_up) else {
                return Ok(());
            };
            let held = self.held.pop_front().expect("front exists");
            let result = send(
                &self.channels,
                out,
                &held.header,
                &held.pixels,
                held.attributes.as_bytes(),
                &values,
            );
            self.spare.push(held.pixels);
            result?;
        }
        Ok(())
    }
}

fn send(
    channels: &[String],
    out: &mut Outputs,
    header: &FrameHeader,
    pixels: &[u8],
    attributes: &[u8],
    values: &[Option<f64>],
) -> Result<(), ProcessError> {
    if out.is_empty() {
        return Ok(());
    }
    let extra: Vec<(&str, AttrValue<'_>)> = channels
        .iter()
        .zip(values)
        .filter_map(|(name, v)| v.map(|v| (name.as_str(), AttrValue::F64(v))))
        .collect();
    let meta = header.meta();
    Ok(out.send(0, &meta, pixels, attributes, &extra)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    enum Event {
        Value(usize, u64, f64),
        Frame(u64),
        /// The oldest waiting frame's `wait_ms` runs out.
        Timeout,
    }

    /// Plays `events` the way the processor does: frames wait in order until decided.
    fn play(m: &mut Matcher, events: &[Event]) -> Vec<(u64, Vec<Option<f64>>)> {
        let ts = |f: u64| 10 * MS + f * MS;
        let mut held: VecDeque<u64> = VecDeque::new();
        let mut left = Vec::new();
        for event in events.iter().chain([&Event::Timeout]) {
            let mut give_up = false;
            match *event {
                Event::Value(c, t, v) => m.add(c, t, v),
                Event::Frame(f) => held.push_back(f),
                Event::Timeout => give_up = true,
            }
            while let Some(&f) = held.front() {
                let Some(values) = m.decide(ts(f), give_up) else {
                    break;
                };
                left.push((held.pop_front().unwrap(), values));
                give_up = false;
            }
        }
        left
    }

    /// Frames every 1 ms from t = 10 ms; tolerance 0.25 ms. Channel x comes with every
    /// frame with ±0.1 ms jitter, except frame 3 (missing) and frame 5 (late: it comes
    /// after the frame stopped waiting). Channel y comes with every other frame.
    #[test]
    fn a_timeline_with_jitter_a_gap_a_late_value_and_two_rates() {
        let ts = |f: u64| 10 * MS + f * MS;
        let mut events = Vec::new();
        for f in 0..8u64 {
            if f != 3 && f != 5 {
                let jittered = if f % 2 == 0 {
                    ts(f) + 100_000
                } else {
                    ts(f) - 100_000
                };
                events.push(Event::Value(0, jittered, f as f64));
            }
            if f % 2 == 0 {
                events.push(Event::Value(1, ts(f), 100.0 + f as f64));
            }
            events.push(Event::Frame(f));
            if f == 5 {
                events.push(Event::Timeout);
                events.push(Event::Value(0, ts(5) + 50_000, 5.0));
            }
        }
        let mut m = Matcher::new(2, 250_000, 0);
        let left = play(&mut m, &events);
        let ids: Vec<u64> = left.iter().map(|(f, _)| *f).collect();
        assert_eq!(ids, (0..8).collect::<Vec<_>>(), "frames leave in order");
        let x: Vec<Option<f64>> = left.iter().map(|(_, v)| v[0]).collect();
        let y: Vec<Option<f64>> = left.iter().map(|(_, v)| v[1]).collect();
        assert_eq!(
            x,
            [
                Some(0.0),
                Some(1.0),
                Some(2.0),
                None,
                Some(4.0),
                None,
                Some(6.0),
                Some(7.0)
            ]
        );
        assert_eq!(
            y,
            [
                Some(100.0),
                None,
                Some(102.0),
                None,
                Some(104.0),
                None,
                Some(106.0),
                None
            ]
        );
        // x: frames 3 and 5 unmatched; the late value for 5 is discarded at frame 6.
        assert_eq!((m.matched[0], m.unmatched[0], m.discarded[0]), (6, 2, 1));
        // y: every odd frame unmatched, decided when the next value passes it.
        assert_eq!((m.matched[1], m.unmatched[1], m.discarded[1]), (4, 4, 0));
    }

    #[test]
    fn an_offset_shifts_the_window_and_old_values_are_discarded() {
        let mut m = Matcher::new(1, 10, 1_000);
        m.add(0, 500, 1.0); // too old for a frame at 0 (window 990..1010)
        m.add(0, 1_005, 2.0);
        m.add(0, 5_000, 3.0);
        assert_eq!(m.decide(0, false), Some(vec![Some(2.0)]));
        assert_eq!((m.matched[0], m.discarded[0]), (1, 1));
        // The next value is newer than the window: unmatched at once.
        assert_eq!(m.decide(2_000, false), Some(vec![None]));
        assert_eq!(m.unmatched[0], 1);
    }
}
