//! `kind = "zmq"`: DECTRIS Stream V2 from a detector (or another streamd's `zmq` sink):
//! a ZeroMQ PULL socket connected to `endpoint`, each message decoded by
//! [`stream2`](crate::stream2) and its pixels written straight into the ring slot.
//!
//! * Frame identity: `image_id` is the frame id; `series_id` is an attribute.
//! * Channels: one channel goes to the ring — `channel`, else the first the `start`
//!   message lists, else the first of each image's `data` map. Others are passed over.
//! * Series: the stream is one series. Its `start` message's description travels on
//!   every frame as `series.*` attributes ([`Series`]); its `end` message ends the
//!   stream (the pipeline drains, writers close their files). A message of another
//!   series is counted in `other_series` and not published.
//! * Loss: `missed` counts the images of the series never published: a gap in
//!   `image_id`, an image refused (also counted under its reason), and at `end` the
//!   images the start message announced that never came. With `shared = true` other
//!   receivers share the stream: the gaps and the announced count are theirs too, so
//!   only this receiver's refused images count. A message that does not
//!   decode is counted under its reason (`refused_*`) and reported, never published.
//!   A sender that goes away in the middle of a series is counted (`senders_lost`) and
//!   reported; ZeroMQ reconnects when it comes back.

use super::{Next, Source, SuppliedFrame};
use crate::ring::{AttrValue, AttributeArea, Dtype, SlotWriter};
use crate::series::{Series, UserValue};
use crate::stream2::{self, Algorithm, Array, Data, DecodeError, Message};
use crate::sys::now_ns;
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// How long one wait for a message lasts before the worker gets control back.
const WAIT_MS: i64 = 100;
/// Bytes of messages ZeroMQ queues on the receiving side, as frames: enough to keep
/// the link busy, bounded in memory for large frames (2 to 32 frames).
const RECEIVE_QUEUE_BYTES: usize = 256 << 20;

/// The `[source]` keys of a zmq source.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ZmqSettings {
    /// `tcp://HOST:PORT` (or `ipc://PATH`) of the sender's PUSH socket.
    pub endpoint: String,
    /// The channel taken from each image's `data` map.
    pub channel: Option<String>,
    /// Other receivers share the sender's stream (gaps are theirs, not missed).
    pub shared: bool,
}

impl ZmqSettings {
    pub fn configure(&mut self, key: &str, value: &toml::Value) -> Result<(), String> {
        match (key, value) {
            ("endpoint", toml::Value::String(e)) => {
                check_endpoint(e, false)?;
                self.endpoint = e.clone();
            }
            ("channel", toml::Value::String(c)) if !c.is_empty() => self.channel = Some(c.clone()),
            ("shared", toml::Value::Boolean(b)) => self.shared = *b,
            (key, value) => return Err(format!("{key} cannot be {value}")),
        }
        Ok(())
    }

    pub fn check_complete(&self) -> Result<(), String> {
        if self.endpoint.is_empty() {
            return Err(
                "a zmq source needs endpoint = \"tcp://HOST:PORT\" (the sender's PUSH socket)"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Checks a ZeroMQ endpoint: `tcp://HOST:PORT` (`*` as host only to bind) or
/// `ipc://PATH`.
pub fn check_endpoint(endpoint: &str, bind: bool) -> Result<(), String> {
    let shown = crate::units::quote(endpoint);
    if let Some(path) = endpoint.strip_prefix("ipc://") {
        return match path.is_empty() {
            true => Err(format!("endpoint {shown} names no socket file")),
            false => Ok(()),
        };
    }
    let Some(address) = endpoint.strip_prefix("tcp://") else {
        return Err(format!(
            "endpoint {shown} must be tcp://HOST:PORT or ipc://PATH"
        ));
    };
    let port = address.rsplit_once(':').and_then(|(host, port)| {
        let port: u16 = port.parse().ok()?;
        (!host.is_empty() && (bind || host != "*") && port > 0).then_some(port)
    });
    match port {
        Some(_) => Ok(()),
        None if bind => Err(format!(
            "endpoint {shown} must be tcp://*:PORT (or an address of this host) with a port from 1 to 65535"
        )),
        None => Err(format!(
            "endpoint {shown} must be tcp://HOST:PORT with a port from 1 to 65535"
        )),
    }
}

/// The series being received.
struct Open {
    id: Option<u64>,
    /// From the start message (empty when it went to another receiver).
    description: Series,
    /// The description as `series.*` attributes, encoded once.
    attributes: AttributeArea,
    channels: Vec<String>,
    /// `series_date` as text and in ns since the epoch, parsed once.
    date: Option<(String, u64)>,
    received: u64,
    missed: u64,
}

/// Where the pixels of the frame `next` got ready lie in the message.
struct Pixels {
    ny: u32,
    nx: u32,
    dtype: Dtype,
    big_endian: bool,
    range: Range<usize>,
    compression: Option<(Algorithm, usize)>,
}

impl Pixels {
    fn of(array: &Array<'_>, message: &[u8]) -> Pixels {
        let (bytes, compression) = match array.data {
            Data::Plain(b) => (b, None),
            Data::Compressed {
                algorithm,
                elem_size,
                bytes,
            } => (bytes, Some((algorithm, elem_size))),
        };
        // The slice lies inside the message it was decoded from.
        let start = bytes.as_ptr() as usize - message.as_ptr() as usize;
        Pixels {
            ny: array.ny,
            nx: array.nx,
            dtype: array.dtype,
            big_endian: array.big_endian,
            range: start..start + bytes.len(),
            compression,
        }
    }

    fn array<'a>(&self, message: &'a [u8]) -> Array<'a> {
        let bytes = &message[self.range.clone()];
        Array {
            ny: self.ny,
            nx: self.nx,
            dtype: self.dtype,
            big_endian: self.big_endian,
            data: match self.compression {
                None => Data::Plain(bytes),
                Some((algorithm, elem_size)) => Data::Compressed {
                    algorithm,
                    elem_size,
                    bytes,
                },
            },
        }
    }
}

#[derive(Default)]
struct Counters {
    messages: u64,
    images: u64,
    bytes_received: u64,
    series_started: u64,
    series_ended: u64,
    malformed: u64,
    truncated: u64,
    unsupported: u64,
    invalid: u64,
    oversized: u64,
    no_channel: u64,
    other_series: u64,
    out_of_order: u64,
    senders_lost: u64,
    attributes_dropped: u64,
    connected: u64,
}

pub struct ZmqSource {
    settings: ZmqSettings,
    socket: ::zmq::Socket,
    monitor: ::zmq::Socket,
    _context: ::zmq::Context,
    message: ::zmq::Message,
    /// Bytes a ring slot holds.
    capacity: usize,
    /// Frames missed that no supplied frame carries (refused, or never sent at the end).
    unattached: u64,
    series: Option<Open>,
    last_id: Option<u64>,
    pending: Option<(Pixels, AttributeArea)>,
    scratch: Vec<u8>,
    /// Every sender disconnected; reported once the queue is read.
    gone: bool,
    n: Counters,
}

impl ZmqSource {
    /// Connects to the sender of `settings`; frames of at most `ny` × `nx` pixels of
    /// `dtype` fit a slot.
    pub fn open(
        settings: &ZmqSettings,
        dtype: Dtype,
        ny: u32,
        nx: u32,
    ) -> Result<ZmqSource, String> {
        let context = ::zmq::Context::new();
        let fail = |what: &str, e: ::zmq::Error| format!("zmq source: {what}: {e}");
        let socket = context.socket(::zmq::PULL).map_err(|e| fail("socket", e))?;
        let frame_bytes = nx as usize * ny as usize * dtype.size();
        let queue = (RECEIVE_QUEUE_BYTES / frame_bytes.max(1)).clamp(2, 32) as i32;
        socket
            .set_rcvhwm(queue)
            .map_err(|e| fail("receive queue", e))?;
        // Closing never waits for messages nobody will read.
        socket.set_linger(0).map_err(|e| fail("linger", e))?;
        let monitor = monitor(
            &context,
            &socket,
            "source",
            ::zmq::SocketEvent::CONNECTED as i32 | ::zmq::SocketEvent::DISCONNECTED as i32,
        )
        .map_err(|e| fail("monitor", e))?;
        socket
            .connect(&settings.endpoint)
            .map_err(|e| fail(&format!("connecting to {}", settings.endpoint), e))?;
        Ok(ZmqSource {
            settings: settings.clone(),
            socket,
            monitor,
            _context: context,
            message: ::zmq::Message::new(),
            capacity: frame_bytes,
            unattached: 0,
            series: None,
            last_id: None,
            pending: None,
            scratch: Vec::new(),
            gone: false,
            n: Counters::default(),
        })
    }

    /// Follows the monitor's events: connections made and lost.
    fn watch_connections(&mut self) {
        for code in monitor_events(&self.monitor) {
            if code == ::zmq::SocketEvent::CONNECTED.to_raw() {
                self.n.connected += 1;
                self.gone = false;
            } else if code == ::zmq::SocketEvent::DISCONNECTED.to_raw() {
                self.n.connected = self.n.connected.saturating_sub(1);
                self.gone = self.n.connected == 0;
            }
        }
    }

    /// A sender gone in the middle of a series, once everything it sent was read (its
    /// end message may still be queued when the connection closes).
    fn sender_lost(&mut self) -> Option<Next> {
        if !self.gone {
            return None;
        }
        self.gone = false;
        let open = self.series.as_ref().filter(|s| s.received > 0)?;
        self.n.senders_lost += 1;
        Some(Next::Problem(format!(
            "the sender at {} went away in the middle of series {} after image {}; it is counted in senders_lost, and ZeroMQ reconnects when the sender comes back",
            self.settings.endpoint,
            open.id.map_or("?".into(), |i| i.to_string()),
            self.last_id.map_or("?".into(), |i| i.to_string()),
        )))
    }

    fn refuse(&mut self, e: &DecodeError) -> Next {
        match e {
            DecodeError::Malformed(_) => self.n.malformed += 1,
            DecodeError::Truncated(_) => self.n.truncated += 1,
            DecodeError::Unsupported(_) => self.n.unsupported += 1,
            DecodeError::Invalid(_) => self.n.invalid += 1,
        }
        Next::Problem(format!(
            "message {} refused ({}): {e}",
            self.n.messages,
            e.kind()
        ))
    }

    /// Takes one received message; `None` when it publishes nothing.
    fn take(&mut self) -> Option<Next> {
        let message = std::mem::replace(&mut self.message, ::zmq::Message::new());
        let next = match stream2::decode(&message) {
            Err(e) => Some(self.refuse(&e)),
            Ok(Message::Start(start)) => self.start(*start),
            Ok(Message::End(end)) => self.end(end.series_id),
            Ok(Message::Image(image)) => self.image(&image, &message),
        };
        self.message = message;
        next
    }

    fn start(&mut self, start: stream2::Start) -> Option<Next> {
        let mut description = start.series;
        if let Some(open) = &self.series {
            if open.id == description.series_id {
                // A sender that shares its stream sends a start to each receiver.
                return None;
            }
            if open.received > 0 {
                self.n.other_series += 1;
                return Some(Next::Problem(format!(
                    "a start message of series {} came in the middle of series {}; it is passed over (one run takes one series)",
                    description.series_id.unwrap_or(0),
                    open.id.unwrap_or(0)
                )));
            }
        }
        self.n.series_started += 1;
        let channel = self
            .settings
            .channel
            .clone()
            .or_else(|| start.channels.first().cloned());
        description.threshold_energy = channel.as_ref().and_then(|c| {
            start
                .thresholds
                .iter()
                .find(|(name, _)| name == c)
                .map(|(_, e)| *e)
        });
        description.channel = channel;
        let mut attributes = AttributeArea::default();
        let fitted = description.push_attributes(&mut attributes);
        self.series = Some(Open {
            id: description.series_id,
            description,
            attributes,
            channels: start.channels,
            date: None,
            received: 0,
            missed: 0,
        });
        fitted.err().map(|e| {
            self.n.attributes_dropped += 1;
            Next::Problem(format!(
                "the series description does not fit a frame's attributes whole: {e}"
            ))
        })
    }

    fn end(&mut self, series_id: Option<u64>) -> Option<Next> {
        if let Some(open) = &self.series {
            if series_id.is_some() && open.id.is_some() && series_id != open.id {
                self.n.other_series += 1;
                return Some(Next::Problem(format!(
                    "an end message of series {} came during series {}; it is passed over",
                    series_id.unwrap_or(0),
                    open.id.unwrap_or(0)
                )));
            }
            // Images the start message announced that never came are missed too.
            if !self.settings.shared {
                if let Some(announced) = open.description.number_of_images {
                    self.unattached += announced.saturating_sub(open.received + open.missed);
                }
            }
        }
        self.n.series_ended += 1;
        Some(Next::End)
    }

    fn image(&mut self, image: &stream2::Image<'_>, message: &[u8]) -> Option<Next> {
        let open = self.series.get_or_insert_with(|| Open {
            id: image.series_id,
            description: Series::default(),
            attributes: AttributeArea::default(),
            channels: Vec::new(),
            date: None,
            received: 0,
            missed: 0,
        });
        if open.id.is_none() {
            open.id = image.series_id;
        }
        if image.series_id.is_some() && image.series_id != open.id {
            self.n.other_series += 1;
            return Some(Next::Problem(format!(
                "image {} of series {} came during series {}; it is passed over (one run takes one series)",
                image.image_id,
                image.series_id.unwrap_or(0),
                open.id.unwrap_or(0)
            )));
        }
        self.n.images += 1;
        let wanted = self
            .settings
            .channel
            .as_deref()
            .or(open.channels.first().map(String::as_str));
        let found = match wanted {
            Some(name) => image.data.iter().find(|(c, _)| *c == name),
            None => image.data.first(),
        };
        let Some((_, array)) = found else {
            self.n.no_channel += 1;
            return Some(Next::Problem(format!(
                "image {} has no channel {}; it is not published",
                image.image_id,
                crate::units::quote(wanted.unwrap_or("(any)"))
            )));
        };
        if array.len() > self.capacity {
            self.n.oversized += 1;
            return Some(Next::Problem(format!(
                "image {} is {}×{} {} ({} bytes), more than the ring's slots hold ({} bytes); raise the source's nx, ny or dtype",
                image.image_id,
                array.ny,
                array.nx,
                array.dtype.name(),
                array.len(),
                self.capacity
            )));
        }
        let id = image.image_id;
        open.received += 1;
        let mut gap = 0;
        match self.last_id {
            Some(last) if id <= last => self.n.out_of_order += 1,
            Some(last) if id > last + 1 && !self.settings.shared => {
                gap = id - last - 1;
                open.missed += gap;
            }
            _ => {}
        }
        self.last_id = Some(self.last_id.map_or(id, |l| l.max(id)));
        // Time: the series date plus the image's start time, else when it arrived.
        if let Some(text) = image.series_date {
            if open.date.as_ref().is_none_or(|(t, _)| t != text) {
                open.date = stream2::parse_date(text).map(|ns| (text.to_string(), ns));
            }
        }
        let seconds = |r: Option<(u64, u64)>| r.map(|(n, d)| n as f64 / d as f64);
        let timestamp = match (&open.date, image.start_time) {
            (Some((_, date)), Some((n, d))) => {
                date.saturating_add((n as u128 * 1_000_000_000 / d as u128) as u64)
            }
            _ => now_ns(),
        };
        let mut attributes = AttributeArea::default();
        let mut fits = Ok(());
        let mut push = |key: &str, value: AttrValue<'_>| {
            if fits.is_ok() {
                fits = attributes.push(key, &value);
            }
        };
        if let Some(id) = open.id {
            push("series_id", AttrValue::I64(id.min(i64::MAX as u64) as i64));
        }
        for (key, value) in [
            ("start_time", seconds(image.start_time)),
            ("stop_time", seconds(image.stop_time)),
            ("real_time", seconds(image.real_time)),
        ] {
            if let Some(v) = value {
                push(key, AttrValue::F64(v));
            }
        }
        let user: Vec<(String, UserValue)> = image
            .user_data
            .map(stream2::user_values)
            .unwrap_or_default();
        for (key, value) in &user {
            push(&format!("user.{key}"), value.attr());
        }
        for record in crate::ring::attributes(open.attributes.as_bytes()).flatten() {
            push(record.0, record.1);
        }
        if let Err(e) = fits {
            // Published all the same, counted; the first time also says why.
            self.n.attributes_dropped += 1;
            if self.n.attributes_dropped == 1 {
                eprintln!("streamd zmq source: image {id}: attributes left out: {e}");
            }
        }
        self.pending = Some((Pixels::of(array, message), attributes));
        let mut frame = SuppliedFrame::image(id, array.dtype, array.ny, array.nx);
        frame.timestamp_ns = Some(timestamp);
        frame.missed = gap;
        Some(Next::Frame(frame))
    }
}

/// A PAIR socket that receives `socket`'s `events` (a mask of `zmq::SocketEvent`s), for
/// [`monitor_events`]; `role` names it apart from the other end's in this process.
pub fn monitor(
    context: &::zmq::Context,
    socket: &::zmq::Socket,
    role: &str,
    events: i32,
) -> Result<::zmq::Socket, ::zmq::Error> {
    let at = format!("inproc://streamd-{role}-monitor-{}", std::process::id());
    socket.monitor(&at, events)?;
    let monitor = context.socket(::zmq::PAIR)?;
    monitor.connect(&at)?;
    Ok(monitor)
}

/// The events a socket monitor has queued, by code (`zmq::SocketEvent::to_raw`).
pub fn monitor_events(monitor: &::zmq::Socket) -> Vec<u16> {
    let mut codes = Vec::new();
    while let Ok(event) = monitor.recv_bytes(::zmq::DONTWAIT) {
        // An event is two frames: u16 event and u32 value, then the address.
        let _address = monitor.recv_bytes(::zmq::DONTWAIT);
        if let Some(b) = event.get(..2) {
            codes.push(u16::from_ne_bytes([b[0], b[1]]));
        }
    }
    codes
}

impl Source for ZmqSource {
    fn next(&mut self, next_id: u64) -> Result<Next, String> {
        // A restarted source continues after its predecessor's last frame: images sent
        // while no receiver was connected count as missed like any other gap.
        if self.last_id.is_none() && next_id > 0 {
            self.last_id = Some(next_id - 1);
        }
        loop {
            self.watch_connections();
            let mut items = [
                self.socket.as_poll_item(::zmq::POLLIN),
                self.monitor.as_poll_item(::zmq::POLLIN),
            ];
            match ::zmq::poll(&mut items, WAIT_MS) {
                Ok(_) => {}
                // A signal (SIGTERM) interrupts the wait; the worker looks at its flag.
                Err(::zmq::Error::EINTR) => return Ok(Next::Idle),
                Err(e) => return Err(format!("zmq source: waiting for messages: {e}")),
            }
            if !items[0].is_readable() {
                if items[1].is_readable() {
                    continue;
                }
                return Ok(self.sender_lost().unwrap_or(Next::Idle));
            }
            match self.socket.recv(&mut self.message, ::zmq::DONTWAIT) {
                Ok(()) => {}
                Err(::zmq::Error::EAGAIN | ::zmq::Error::EINTR) => return Ok(Next::Idle),
                Err(e) => return Err(format!("zmq source: receiving: {e}")),
            }
            self.n.messages += 1;
            self.n.bytes_received += self.message.len() as u64;
            if let Some(next) = self.take() {
                return Ok(next);
            }
        }
    }

    fn write(&mut self, slot: &mut SlotWriter<'_>) -> Result<(), String> {
        let (pixels, attributes) = self.pending.take().ok_or("no image was made ready")?;
        let array = pixels.array(&self.message);
        let out = &mut slot.payload_mut()[..array.len()];
        if let Err(e) = array.write_into(out, &mut self.scratch) {
            // Counted under its reason, and missed: a frame of the series never published.
            self.n.invalid += 1;
            self.unattached += 1;
            if let Some(open) = &mut self.series {
                open.missed += 1;
            }
            return Err(format!(
                "message {} refused (invalid): {e}",
                self.n.messages
            ));
        }
        slot.copy_attributes(attributes.as_bytes())
            .map_err(|e| e.to_string())
    }

    fn take_missed(&mut self) -> u64 {
        std::mem::take(&mut self.unattached)
    }

    fn gauges(&self) -> &'static [&'static str] {
        &["connected"]
    }

    fn counters(&self) -> Vec<(String, u64)> {
        let n = &self.n;
        [
            ("messages", n.messages),
            ("images", n.images),
            ("bytes_received", n.bytes_received),
            ("series_started", n.series_started),
            ("series_ended", n.series_ended),
            ("refused_malformed", n.malformed),
            ("refused_truncated", n.truncated),
            ("refused_unsupported", n.unsupported),
            ("refused_invalid", n.invalid),
            ("refused_oversized", n.oversized),
            ("refused_no_channel", n.no_channel),
            ("other_series", n.other_series),
            ("out_of_order", n.out_of_order),
            ("senders_lost", n.senders_lost),
            ("attributes_dropped", n.attributes_dropped),
            ("connected", n.connected),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}
