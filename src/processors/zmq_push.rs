//! `zmq`: a sink that publishes its frames as DECTRIS Stream V2 on a ZeroMQ PUSH socket
//! bound to `endpoint` — a `start` message with the series' geometry, an `image` per
//! frame, an `end` when the stream ends — so a detector's own clients, or streamd
//! pipelines with a `zmq` source on other hosts, take them. Several PULL receivers share
//! the socket: ZeroMQ deals each image to one of them, round robin among those with
//! room, and the sink sends one `start` and one `end` to each receiver connected then.
//!
//! Queueing and loss: frames wait in the sink's queue (`hwm` frames) until a receiver
//! has room (ZeroMQ holds at most [`SEND_QUEUE`] more per receiver). With `full =
//! "block"` (the default) a full queue holds the stage, and so the ring and the
//! pipeline before it, back: nothing is lost while a receiver is connected. With `full
//! = "drop"` a frame that finds the queue full is dropped and counted in
//! `frames_dropped`. At the end the sink waits up to `linger_ms` for its queue to go;
//! what is left is counted in `frames_dropped` too.

use super::{
    number, unknown_key, ArgValue, Outputs, ProcessError, Processor, Refused, StageContext, Wiring,
};
use crate::ring::{AttrValue, Frame};
use crate::series::{Series, UserValue};
use crate::sources::zmq::{check_endpoint, monitor, monitor_events};
use crate::stream2::encode::{self, ImageHeader, Pixels};
use crate::sys::stop_flag;
use crate::writers::bitshuffle;
use crate::writers::nxmx::Experiment;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Messages ZeroMQ queues per receiver beyond the sink's own queue.
pub const SEND_QUEUE: i32 = 4;
/// How long one wait for room lasts before the stop flag is looked at again.
const WAIT_MS: i64 = 50;

const KEYS: &[&str] = &[
    "endpoint",
    "compression",
    "hwm",
    "full",
    "linger_ms",
    "wait_receivers",
    "series_id",
    "channel",
    "detector",
];

/// The series being sent.
struct Sending {
    id: u64,
    unique_id: String,
    date: String,
    t0_ns: u64,
}

pub struct ZmqSink {
    endpoint: String,
    bslz4: bool,
    hwm: usize,
    drop_when_full: bool,
    linger: Duration,
    wait_receivers: u64,
    series_id: Option<u64>,
    channel: String,
    detector: Option<Experiment>,
    socket: Option<::zmq::Socket>,
    monitor: Option<::zmq::Socket>,
    context: Option<::zmq::Context>,
    stop: Arc<AtomicBool>,
    sending: Option<Sending>,
    queue: VecDeque<Vec<u8>>,
    compressed: Vec<u8>,
    scratch: Vec<u8>,
    user: Vec<(String, UserValue)>,
    receivers: u64,
    frames_sent: u64,
    frames_dropped: u64,
    bytes_sent: u64,
    starts_sent: u64,
    ends_sent: u64,
}

impl Default for ZmqSink {
    fn default() -> Self {
        ZmqSink {
            endpoint: String::new(),
            bslz4: false,
            hwm: 64,
            drop_when_full: false,
            linger: Duration::from_secs(10),
            wait_receivers: 1,
            series_id: None,
            channel: "threshold_1".into(),
            detector: None,
            socket: None,
            monitor: None,
            context: None,
            stop: Arc::new(AtomicBool::new(false)),
            sending: None,
            queue: VecDeque::new(),
            compressed: Vec::new(),
            scratch: Vec::new(),
            user: Vec::new(),
            receivers: 0,
            frames_sent: 0,
            frames_dropped: 0,
            bytes_sent: 0,
            starts_sent: 0,
            ends_sent: 0,
        }
    }
}

fn count(key: &str, value: &ArgValue, min: i64, max: i64) -> Result<u64, String> {
    match value.as_integer() {
        Some(n) if (min..=max).contains(&n) => Ok(n as u64),
        _ => Err(format!(
            "{key} must be an integer from {min} to {max}, got {value}"
        )),
    }
}

impl ZmqSink {
    fn socket(&self) -> Result<&::zmq::Socket, String> {
        self.socket
            .as_ref()
            .ok_or_else(|| "the zmq sink has not started".to_string())
    }

    /// Follows receivers connecting and leaving.
    fn watch(&mut self) {
        if let Some(monitor) = &self.monitor {
            for code in monitor_events(monitor) {
                if code == ::zmq::SocketEvent::HANDSHAKE_SUCCEEDED.to_raw() {
                    self.receivers += 1;
                } else if code == ::zmq::SocketEvent::DISCONNECTED.to_raw() {
                    self.receivers = self.receivers.saturating_sub(1);
                }
            }
        }
    }

    /// Waits until a receiver has room (true), or `deadline` passes or the worker is
    /// stopped (false).
    fn wait_for_room(&mut self, deadline: Option<Instant>) -> Result<bool, String> {
        loop {
            self.watch();
            let socket = self.socket()?;
            match socket.poll(::zmq::POLLOUT, WAIT_MS) {
                Ok(n) if n > 0 => return Ok(true),
                Ok(_) | Err(::zmq::Error::EINTR) => {}
                Err(e) => return Err(format!("zmq sink: waiting for a receiver: {e}")),
            }
            if self.stop.load(Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
        }
    }

    /// Hands queued messages to ZeroMQ while a receiver has room.
    fn flush(&mut self) -> Result<(), String> {
        while !self.queue.is_empty() {
            let socket = self.socket()?;
            match socket.poll(::zmq::POLLOUT, 0) {
                Ok(n) if n > 0 => {}
                Ok(_) | Err(::zmq::Error::EINTR) => return Ok(()),
                Err(e) => return Err(format!("zmq sink: {e}")),
            }
            let message = self.queue.pop_front().expect("not empty");
            let len = message.len() as u64;
            match self.socket()?.send(message, ::zmq::DONTWAIT) {
                Ok(()) => {
                    self.frames_sent += 1;
                    self.bytes_sent += len;
                }
                // The receiver that had room left between the poll and the send.
                Err(::zmq::Error::EAGAIN) => {
                    self.frames_dropped += 1;
                    return Err("a frame was lost: its receiver disconnected as it was sent".into());
                }
                Err(e) => return Err(format!("zmq sink: sending: {e}")),
            }
        }
        Ok(())
    }

    /// Sends one message to every receiver connected now (at least one), waiting for
    /// room; `deadline` bounds the wait at the end of the stream.
    fn send_to_each_receiver(
        &mut self,
        message: &[u8],
        deadline: Option<Instant>,
    ) -> Result<u64, String> {
        self.watch();
        let mut sent = 0;
        for _ in 0..self.receivers.max(1) {
            if !self.wait_for_room(deadline)? {
                break;
            }
            match self.socket()?.send(message, ::zmq::DONTWAIT) {
                Ok(()) => sent += 1,
                Err(::zmq::Error::EAGAIN) => {}
                Err(e) => return Err(format!("zmq sink: sending: {e}")),
            }
        }
        Ok(sent)
    }

    /// Starts the series with the first frame: waits for `wait_receivers`, then sends
    /// `start` with the geometry the frame carries (a streamd zmq source's `series.*`
    /// attributes) or else the `detector` table's.
    fn begin(&mut self, frame: &Frame<'_>) -> Result<(), String> {
        while self.receivers < self.wait_receivers {
            if !self.wait_for_room(None)? && self.stop.load(Relaxed) {
                return Err("stopped while waiting for receivers".into());
            }
            self.watch();
            if self.receivers >= self.wait_receivers {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let header = frame.header();
        let (ny, nx) = super::image_shape("zmq", header)?;
        let carried = Series::from_attributes(frame.attributes().filter_map(Result::ok));
        let mut series = match (carried, &self.detector) {
            (Some(s), _) => s,
            (None, Some(x)) => x.series(ny, nx, header.dtype),
            (None, None) => Experiment::default().series(ny, nx, header.dtype),
        };
        let frame_series = frame
            .attributes()
            .filter_map(Result::ok)
            .find_map(|(k, v)| match (k, v) {
                ("series_id", AttrValue::I64(i)) => u64::try_from(i).ok(),
                _ => None,
            });
        let id = self
            .series_id
            .or(series.series_id)
            .or(frame_series)
            .unwrap_or(1);
        let t0_ns = header.timestamp_ns;
        let unique_id = series
            .series_unique_id
            .clone()
            .unwrap_or_else(|| format!("streamd-{}-{id}-{t0_ns}", std::process::id()));
        series.series_id = Some(id);
        series.series_unique_id = Some(unique_id.clone());
        let date = crate::stream2::format_date(t0_ns);
        series.arm_date.get_or_insert_with(|| date.clone());
        let start = encode::start(&series, &self.channel, (ny, nx), header.dtype);
        self.starts_sent += self.send_to_each_receiver(&start, None)?;
        self.sending = Some(Sending {
            id,
            unique_id,
            date,
            t0_ns,
        });
        Ok(())
    }

    fn encode(&mut self, frame: &Frame<'_>) -> Result<Vec<u8>, String> {
        let header = frame.header();
        let (ny, nx) = super::image_shape("zmq", header)?;
        let sending = self.sending.as_ref().expect("begun");
        // Everything but the series description and Stream V2's own fields goes on as
        // the image's user data (metadata channels, reductions, a detector's user data).
        self.user.clear();
        let mut real_s = None;
        for (key, value) in frame.attributes().filter_map(Result::ok) {
            match key {
                "real_time" => {
                    if let AttrValue::F64(x) = value {
                        real_s = Some(x);
                    }
                }
                "series_id" | "start_time" | "stop_time" => {}
                k if k.starts_with(crate::series::PREFIX) => {}
                k => {
                    let name = k.strip_prefix("user.").unwrap_or(k).to_string();
                    self.user.push((
                        name,
                        match value {
                            AttrValue::I64(i) => UserValue::Int(i),
                            AttrValue::F64(x) => UserValue::Float(x),
                            AttrValue::Str(s) => UserValue::Text(s.to_string()),
                        },
                    ));
                }
            }
        }
        let start_ns = header.timestamp_ns.saturating_sub(sending.t0_ns);
        let real_ns = real_s
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| (s * 1e9).round() as u64);
        let image = ImageHeader {
            series_id: sending.id,
            series_unique_id: &sending.unique_id,
            image_id: header.frame_id,
            series_date: &sending.date,
            start_ns,
            stop_ns: real_ns.map(|r| start_ns + r),
            real_ns,
            user: &self.user,
            channel: &self.channel,
            ny,
            nx,
            dtype: header.dtype,
        };
        let payload = frame.payload();
        let pixels = if self.bslz4 {
            let elem = header.dtype.size();
            self.compressed
                .resize(bitshuffle::max_compressed_len(payload.len(), elem), 0);
            let len = bitshuffle::compress(payload, elem, &mut self.compressed, &mut self.scratch);
            Pixels::BsLz4(&self.compressed[..len])
        } else {
            Pixels::Plain(payload)
        };
        let mut message = Vec::with_capacity(payload.len() + 1024);
        encode::image(&image, pixels, &mut message);
        Ok(message)
    }
}

impl Processor for ZmqSink {
    /// The socket is bound and the series begun at start.
    fn fixed_while_running(&self) -> &'static [&'static str] {
        &["endpoint", "channel", "series_id"]
    }

    fn configure(&mut self, key: &str, value: &ArgValue) -> Result<(), Refused> {
        if self.socket.is_some() && self.fixed_while_running().contains(&key) {
            return Err(super::fixed_while_running(key));
        }
        match (key, value) {
            ("endpoint", ArgValue::String(e)) => {
                check_endpoint(e, true)?;
                self.endpoint = e.clone();
            }
            ("endpoint", other) => {
                return Err(format!("endpoint must be \"tcp://*:PORT\", got {other}").into())
            }
            ("compression", ArgValue::String(c)) if c == "none" || c == "bslz4" => {
                self.bslz4 = c == "bslz4"
            }
            ("compression", other) => {
                return Err(format!(
                    "compression must be \"none\" or \"bslz4\" (bitshuffle-LZ4 under the DECTRIS compression tag), got {other}"
                ).into())
            }
            ("hwm", v) => self.hwm = count(key, v, 1, 1 << 20)? as usize,
            ("full", ArgValue::String(f)) if f == "block" || f == "drop" => {
                self.drop_when_full = f == "drop"
            }
            ("full", other) => {
                return Err(format!(
                    "full must be \"block\" (wait for a receiver) or \"drop\" (drop and count), got {other}"
                ).into())
            }
            ("linger_ms", v) => self.linger = Duration::from_millis(count(key, v, 0, 3_600_000)?),
            ("wait_receivers", v) => self.wait_receivers = count(key, v, 0, 1024)?,
            ("series_id", v) => self.series_id = Some(number(key, v)?.max(0.0) as u64),
            ("channel", ArgValue::String(c)) if !c.is_empty() => self.channel = c.clone(),
            ("channel", other) => return Err(format!("channel must be a name, got {other}").into()),
            ("detector", v) => self.detector = Some(Experiment::parse(v)?),
            _ => return Err(unknown_key("zmq", key, KEYS).into()),
        }
        Ok(())
    }

    fn check_wiring(&self, wiring: &Wiring) -> Result<(), Refused> {
        if self.endpoint.is_empty() {
            return Err(
                "the zmq sink needs endpoint = \"tcp://*:PORT\" (where receivers connect)".into(),
            );
        }
        if wiring.workers != 1 {
            return Err(
                "a zmq sink has one worker (one socket bound to its endpoint; receivers share it)"
                    .into(),
            );
        }
        if wiring.outputs != 0 {
            return Err("a zmq sink ends the pipeline; give it no output".into());
        }
        Ok(())
    }

    fn start(&mut self, _ctx: &StageContext) -> Result<(), ProcessError> {
        let context = ::zmq::Context::new();
        let fail = |what: &str, e: ::zmq::Error| format!("zmq sink: {what}: {e}");
        let socket = context.socket(::zmq::PUSH).map_err(|e| fail("socket", e))?;
        socket
            .set_sndhwm(SEND_QUEUE)
            .map_err(|e| fail("send queue", e))?;
        let monitor = monitor(
            &context,
            &socket,
            "sink",
            ::zmq::SocketEvent::HANDSHAKE_SUCCEEDED as i32
                | ::zmq::SocketEvent::DISCONNECTED as i32,
        )
        .map_err(|e| fail("monitor", e))?;
        socket
            .bind(&self.endpoint)
            .map_err(|e| fail(&format!("binding {}", self.endpoint), e))?;
        self.stop = stop_flag();
        self.socket = Some(socket);
        self.monitor = Some(monitor);
        self.context = Some(context);
        Ok(())
    }

    fn process(
        &mut self,
        _input: usize,
        frame: &Frame<'_>,
        _out: &mut Outputs,
    ) -> Result<(), ProcessError> {
        if self.sending.is_none() {
            self.begin(frame)?;
        }
        self.watch();
        self.flush()?;
        if self.queue.len() >= self.hwm {
            if self.drop_when_full {
                self.frames_dropped += 1;
                return Ok(());
            }
            while self.queue.len() >= self.hwm {
                if !self.wait_for_room(None)? {
                    self.frames_dropped += 1;
                    return Err(format!(
                        "frame {} dropped: stopped while waiting for a receiver",
                        frame.header().frame_id
                    )
                    .into());
                }
                self.flush()?;
            }
        }
        let message = self.encode(frame)?;
        self.queue.push_back(message);
        Ok(self.flush()?)
    }

    fn poll(&mut self, _out: &mut Outputs) -> Result<(), ProcessError> {
        self.watch();
        Ok(self.flush()?)
    }

    fn stop(&mut self, _out: &mut Outputs) -> Result<(), ProcessError> {
        let deadline = Instant::now() + self.linger;
        let mut result: Result<(), ProcessError> = Ok(());
        while !self.queue.is_empty() {
            if !self.wait_for_room(Some(deadline))? {
                break;
            }
            if let Err(e) = self.flush() {
                result = Err(e.into());
            }
        }
        let left = self.queue.len() as u64;
        self.queue.clear();
        self.frames_dropped += left;
        if left > 0 {
            result = Err(format!(
                "{left} frames were still queued after linger_ms ({} ms) with no receiver taking them; they are counted in frames_dropped",
                self.linger.as_millis()
            )
            .into());
        }
        if let Some(s) = self.sending.take() {
            let end = encode::end(s.id, &s.unique_id);
            self.ends_sent += self.send_to_each_receiver(&end, Some(deadline))?;
        }
        // Closing waits (up to the linger) for what ZeroMQ still holds to leave.
        if let Some(socket) = self.socket.take() {
            let left_ms = deadline
                .saturating_duration_since(Instant::now())
                .as_millis();
            let _ = socket.set_linger(left_ms.min(i32::MAX as u128) as i32);
        }
        self.monitor = None;
        self.context = None;
        result
    }

    fn counters(&self) -> Vec<(String, u64)> {
        [
            ("frames_sent", self.frames_sent),
            ("frames_queued", self.queue.len() as u64),
            ("frames_dropped", self.frames_dropped),
            ("bytes_sent", self.bytes_sent),
            ("starts_sent", self.starts_sent),
            ("ends_sent", self.ends_sent),
            ("receivers", self.receivers),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    fn gauges(&self) -> &'static [&'static str] {
        &["frames_queued", "receivers"]
    }
}
