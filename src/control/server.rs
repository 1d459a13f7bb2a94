//! The supervisor's side of the control socket and of the metrics endpoint.

use super::status::{collect, Rates};
use super::{socket_path, Reply, Request};
use crate::processors::{self, InputFrames, Refused, Wiring};
use crate::registry;
use crate::stats::layout::*;
use crate::stats::{StatsError, StatsSegment};
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the control thread shares with the supervisor loop.
#[derive(Default)]
pub struct Shared {
    /// Raised by `streamd stop`.
    pub stop: AtomicBool,
    pub rates: Mutex<Rates>,
    /// Human-readable events (restarts, failures, configuration changes), newest last.
    pub events: Mutex<Vec<String>>,
    /// What a configuration change of each stage is checked against, by stage name.
    pub stages: HashMap<String, StageBounds>,
}

/// A stage's shape, which a live configuration change must fit.
pub struct StageBounds {
    /// How the stage is connected.
    pub wiring: Wiring,
    /// The stage's output ring with the smallest slots, if it has outputs: a change whose
    /// frames would not fit is refused.
    pub room: Option<OutputRoom>,
}

/// The frames a stage reads and the room its smallest output slots give them.
pub struct OutputRoom {
    pub input: InputFrames,
    pub ring: String,
    pub slot_bytes: u64,
}

impl Shared {
    pub fn event(&self, text: String) {
        eprintln!("streamd run: {text}");
        if let Ok(mut events) = self.events.lock() {
            events.push(text);
        }
    }
}

/// Why the control socket or the metrics endpoint could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot create the control socket {path}: {io}")]
    Socket { path: String, io: io::Error },
    #[error("cannot serve metrics on {addr}: {io}; choose a free port")]
    Metrics { addr: SocketAddr, io: io::Error },
    #[error(transparent)]
    Stats(#[from] StatsError),
    /// The serving thread could not be started.
    #[error(transparent)]
    Thread(#[from] io::Error),
}

/// Binds pipeline `name`'s control socket (mode 0600) and serves it on a thread.
pub fn serve(name: &str, shared: Arc<Shared>) -> Result<(), ServeError> {
    let path = socket_path(name);
    let _ = std::fs::remove_file(&path);
    let listener = crate::sys::with_umask(0o177, || UnixListener::bind(&path)).map_err(|io| {
        ServeError::Socket {
            path: path.display().to_string(),
            io,
        }
    })?;
    let stats = StatsSegment::open(name)?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = handle(&stats, &shared, stream);
            }
        })?;
    Ok(())
}

fn handle(stats: &StatsSegment, shared: &Shared, stream: UnixStream) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let reply = match serde_json::from_str::<Request>(&line) {
        Err(e) => refuse(format!("unreadable request: {e}")),
        Ok(Request::Status) => Reply {
            ok: true,
            message: String::new(),
            status: Some(collect(
                stats,
                &shared.rates.lock().map(|r| r.clone()).unwrap_or_default(),
            )),
        },
        Ok(Request::Stop) => {
            shared.stop.store(true, Ordering::SeqCst);
            shared.event("stop requested over the control socket; draining".into());
            accept("stopping: the source stops, the stages drain, then the pipeline exits".into())
        }
        Ok(Request::ResetStats) => {
            for i in 0..stats.entry_count() {
                let e = stats.entry(i);
                e.restarts_base.store(e.restarts.load(Relaxed), Relaxed);
            }
            stats.header().reset_gen.fetch_add(1, Relaxed);
            shared.event("statistics reset".into());
            accept("statistics reset: status, top and the metrics count from zero within 100 ms; the run's final report still counts the whole run".into())
        }
        Ok(Request::Configure { stage, key, value }) => {
            configure(stats, shared, &stage, &key, &value)
        }
    };
    let mut writer = &stream;
    writeln!(writer, "{}", serde_json::to_string(&reply)?)?;
    Ok(())
}

fn accept(message: String) -> Reply {
    Reply {
        ok: true,
        message,
        status: None,
    }
}

fn refuse(message: String) -> Reply {
    Reply {
        ok: false,
        message,
        status: None,
    }
}

/// Validates `key=value` on a scratch processor, publishes the new arguments, and waits
/// briefly for the workers to apply them to their next frame.
fn configure(stats: &StatsSegment, shared: &Shared, stage: &str, key: &str, value: &str) -> Reply {
    if stats.stage_count() > 0 && stage == stats.stage_name(0) {
        return configure_source(stats, shared, key, value);
    }
    let Some(index) = (1..stats.stage_count()).find(|&i| stats.stage_name(i) == stage) else {
        let names: Vec<String> = (0..stats.stage_count())
            .map(|i| stats.stage_name(i))
            .collect();
        return refuse(format!(
            "no stage '{stage}' in this pipeline (stages: {}); nothing changed",
            names.join(", ")
        ));
    };
    let Some((_, text)) = stats.read_args(index) else {
        return refuse("another configure is being applied; try again".into());
    };
    let mut args: toml::Table = serde_json::from_str(&text).unwrap_or_default();
    let before = args.clone();
    let parsed = processors::parse_value(value);
    args.insert(key.to_string(), parsed.clone());
    let processor = stats.stage_processor(index);
    let checked = registry::build(&processor, &args)
        .map_err(|e| Refused(e.reason))
        .and_then(|p| {
            if p.fixed_while_running().contains(&key) && before.get(key) != Some(&parsed) {
                return Err(processors::fixed_while_running(key));
            }
            let Some(bounds) = shared.stages.get(stage) else {
                return Ok(());
            };
            p.check_wiring(&bounds.wiring)?;
            match &bounds.room {
                Some(OutputRoom {
                    input,
                    ring,
                    slot_bytes,
                }) => match p.output_bytes(input) {
                    needed if needed > *slot_bytes => Err(Refused(format!(
                        "its frames of up to {needed} bytes would not fit ring '{ring}', whose slots hold {slot_bytes} bytes (give that ring a larger slot_bytes and restart the pipeline)"
                    ))),
                    _ => Ok(()),
                },
                None => Ok(()),
            }
        })
        // A Python class checks the change itself, on a scratch instance.
        .and_then(|()| match processor.as_str() {
            "python" | "pva" => {
                processors::python::PythonStage::check_change(&processor, &before, key, &parsed)
            }
            _ => Ok(()),
        });
    if let Err(reason) = checked {
        return refuse(format!(
            "stage '{stage}' refused {key}={value}: {reason}; nothing changed"
        ));
    }
    let json = match serde_json::to_string(&args) {
        Ok(json) if json.len() <= ARGS_BYTES => json,
        _ => {
            return refuse(format!(
                "stage '{stage}': the arguments do not fit in {ARGS_BYTES} bytes; nothing changed"
            ))
        }
    };
    apply(stats, shared, index, (stage, key, value), &json)
}

/// `configure source fps=F`: the one setting of a source that can change while it runs.
fn configure_source(stats: &StatsSegment, shared: &Shared, key: &str, value: &str) -> Reply {
    let stage = stats.stage_name(0);
    if key != "fps" {
        return refuse(format!(
            "the source takes only fps while it runs (its frames, shape and pattern are fixed when the pipeline starts): `streamd configure {stage} fps=F`; nothing changed"
        ));
    }
    match value.parse::<crate::units::Rate>() {
        Ok(rate) => {
            let json = serde_json::json!({ "fps": rate.get() }).to_string();
            apply(stats, shared, 0, (&stage, key, value), &json)
        }
        Err(reason) => refuse(format!(
            "stage '{stage}' refused fps={value}: {reason}; nothing changed"
        )),
    }
}

/// Publishes stage `index`'s new arguments `json` (the change `key=value` of `stage`)
/// and waits briefly for its workers to take them.
fn apply(
    stats: &StatsSegment,
    shared: &Shared,
    index: usize,
    (stage, key, value): (&str, &str, &str),
    json: &str,
) -> Reply {
    let gen = stats.write_args(index, json);
    shared.event(format!("stage '{stage}': {key} set to {value}"));
    let slot = stats.stage(index);
    let entries = slot.first_entry.load(Relaxed) as usize
        ..(slot.first_entry.load(Relaxed) + slot.workers.load(Relaxed)) as usize;
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut applied = Vec::new();
    loop {
        applied.clear();
        let mut waiting = false;
        for i in entries.clone() {
            let e = stats.entry(i);
            let state = e.state.load(Acquire);
            // SYNC: pairs with the worker's Release store of applied_gen; the frame id
            // it stored just before is visible.
            if e.applied_gen.load(Acquire) >= gen {
                // Stored before applied_gen, so set once the generation is.
                let from = e.applied_from_frame().unwrap_or_default();
                applied.push(format!(
                    "worker {} from frame {from}",
                    e.worker.load(Relaxed)
                ));
            } else if state == WORKER_RUNNING {
                waiting = true;
            }
        }
        if !waiting || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let taken = if applied.is_empty() {
        "it applies from the next frame each worker takes".to_string()
    } else {
        format!("applied by {}", applied.join(", "))
    };
    accept(format!("stage '{stage}': {key}={value} accepted; {taken}"))
}

/// Serves the status as Prometheus text on `addr` (one short HTTP/1.0 reply per connection).
pub fn serve_metrics(addr: SocketAddr, name: &str, shared: Arc<Shared>) -> Result<(), ServeError> {
    let listener = TcpListener::bind(addr).map_err(|io| ServeError::Metrics { addr, io })?;
    let stats = StatsSegment::open(name)?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request);
                let rates = shared.rates.lock().map(|r| r.clone()).unwrap_or_default();
                let body = super::metrics::render(&collect(&stats, &rates));
                let _ = write!(
                    stream,
                    "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            }
        })?;
    Ok(())
}
