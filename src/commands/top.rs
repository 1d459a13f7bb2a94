//! `streamd top`: the dashboard (crate `streamd-tui`) fed from shared memory. The
//! counters come from the stats segment and the rings' headers, read ten times a second
//! without asking any process; the live view reads the newest frame of a ring as a lossy
//! consumer, so the producer never waits for it. `--once` prints the overview as text.

use super::Status;
use crate::control::status::{collect_with, pipeline_rings, Rates};
use crate::control::{choose_pipeline, running_pipelines, send, Request};
use crate::ring::{Consumer, ConsumerOptions, Delivery, Dtype, Frame, RingInspector};
use crate::stats::StatsSegment;
use std::io::IsTerminal;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};
use streamd_tui::{Command, LiveFrame, Snapshot, Source};

#[derive(Debug, Clone, clap::Args)]
pub struct TopArgs {
    /// The pipeline to watch; left out, the only one running (or a choice).
    #[arg(long)]
    pub pipeline: Option<String>,
    /// Print the overview once as plain text and exit (rates over one second).
    #[arg(long)]
    pub once: bool,
}

pub fn run(args: &TopArgs) -> anyhow::Result<Status> {
    let mut source = SharedMemory::default();
    if args.once {
        let name = choose_pipeline(args.pipeline.as_deref())?;
        let mut app = streamd_tui::App::new(Some(name.clone()));
        for i in 0..2 {
            if i > 0 {
                std::thread::sleep(Duration::from_secs(1));
            }
            let snapshot = source.snapshot(&name).map_err(anyhow::Error::msg)?;
            app.update(snapshot, Instant::now());
        }
        let width = streamd_tui::terminal_width().unwrap_or(120);
        print!("{}", streamd_tui::ui::overview_text(&app, width));
        return Ok(Status::Ok);
    }
    if !std::io::stdout().is_terminal() {
        anyhow::bail!(
            "streamd top needs a terminal; `streamd top --once` prints the overview as text"
        );
    }
    let stop = crate::sys::stop_flag();
    streamd_tui::run(&mut source, args.pipeline.clone(), &stop)?;
    Ok(Status::Ok)
}

/// The pipeline being watched: its stats segment and rings, kept open between reads.
struct Watched {
    name: String,
    stats: StatsSegment,
    /// The segment file's inode: a new one means the pipeline was started again.
    inode: u64,
    rings: Vec<RingInspector>,
    rings_listed: Instant,
}

/// The ring the live view reads.
struct LiveReader {
    ring: String,
    consumer: Consumer,
}

#[derive(Default)]
struct SharedMemory {
    watched: Option<Watched>,
    live: Option<LiveReader>,
}

/// The rings are listed again this often (a restarted pipeline makes new ones).
const RELIST: Duration = Duration::from_secs(1);

impl SharedMemory {
    fn watch(&mut self, name: &str) -> Result<&mut Watched, String> {
        let path = crate::stats::stats_path(name);
        let inode = std::fs::metadata(&path)
            .map(|m| m.ino())
            .map_err(|_| format!("pipeline '{name}' is not running"))?;
        let current = self
            .watched
            .as_ref()
            .is_some_and(|w| w.name == name && w.inode == inode);
        if !current {
            let stats = StatsSegment::open(name).map_err(|e| e.to_string())?;
            self.watched = Some(Watched {
                name: name.to_string(),
                stats,
                inode,
                rings: pipeline_rings(name),
                rings_listed: Instant::now(),
            });
        }
        let watched = self.watched.as_mut().expect("set above");
        if !watched.stats.supervisor().is_alive() {
            return Err(format!(
                "pipeline '{name}' is not running (its supervisor, pid {}, is gone)",
                watched.stats.supervisor().pid
            ));
        }
        if watched.rings_listed.elapsed() >= RELIST {
            watched.rings = pipeline_rings(name);
            watched.rings_listed = Instant::now();
        }
        Ok(watched)
    }
}

impl Source for SharedMemory {
    fn pipelines(&mut self) -> Vec<String> {
        running_pipelines()
    }

    fn snapshot(&mut self, pipeline: &str) -> Result<Snapshot, String> {
        let watched = self.watch(pipeline)?;
        let report = collect_with(&watched.stats, &Rates::new(), &watched.rings);
        serde_json::to_value(report)
            .and_then(serde_json::from_value)
            .map_err(|e| {
                format!("pipeline '{pipeline}' reports counters this dashboard cannot read: {e}")
            })
    }

    fn newest_frame(&mut self, ring: &str, width: usize, height: usize) -> Option<LiveFrame> {
        if self.live.as_ref().is_none_or(|l| l.ring != ring) {
            let options = ConsumerOptions {
                delivery: Delivery::Lossy,
                ..ConsumerOptions::default()
            };
            self.live = Some(LiveReader {
                ring: ring.to_string(),
                consumer: Consumer::attach(ring, &options).ok()?,
            });
        }
        let reader = self.live.as_mut().expect("set above");
        // Skips to the newest frame: each frame passed over is released at once, and a
        // producer faster than this loop gets the last one read.
        let mut ended = false;
        let mut newest = None;
        for i in 0..MAX_SKIP {
            match reader.consumer.recv_timeout(Duration::ZERO) {
                Ok(Some(frame)) if frame.lag() == 0 || i + 1 == MAX_SKIP => {
                    newest = Some(sample(ring, &frame, width, height));
                    break;
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    ended = true;
                    break;
                }
            }
        }
        if ended {
            // The ring ended or its producer died: attach again next time.
            self.live = None;
        }
        newest
    }

    fn close_live(&mut self) {
        self.live = None;
    }

    fn command(&mut self, pipeline: &str, command: Command) -> Result<String, String> {
        let request = match command {
            Command::ResetStats => Request::ResetStats,
            Command::Stop => Request::Stop,
        };
        match send(pipeline, &request) {
            Ok(reply) if reply.ok => Ok(reply.message),
            Ok(reply) => Err(reply.message),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Frames the live view skips at most per read.
const MAX_SKIP: usize = 4096;

/// The frame sampled down (or up) to fit `width` × `height` pixels, keeping its aspect;
/// each pixel the mean of up to 2 × 2 samples of its area.
fn sample(ring: &str, frame: &Frame<'_>, width: usize, height: usize) -> LiveFrame {
    let header = frame.header();
    let (ny, nx) = match &header.dims[..] {
        [] => (0, 0),
        [n] => (1, *n),
        [.., y, x] => (*y, *x),
    };
    let payload = frame.payload();
    let size = header.dtype.size();
    let value = |y: usize, x: usize| -> f32 {
        let at = (y * nx as usize + x) * size;
        let Some(bytes) = payload.get(at..at + size) else {
            return f32::NAN;
        };
        match header.dtype {
            Dtype::U8 => f32::from(bytes[0]),
            Dtype::I8 => f32::from(bytes[0] as i8),
            Dtype::U16 => f32::from(u16::from_le_bytes([bytes[0], bytes[1]])),
            Dtype::I16 => f32::from(i16::from_le_bytes([bytes[0], bytes[1]])),
            Dtype::U32 => u32::from_le_bytes(bytes.try_into().expect("4 bytes")) as f32,
            Dtype::I32 => i32::from_le_bytes(bytes.try_into().expect("4 bytes")) as f32,
            Dtype::U64 => u64::from_le_bytes(bytes.try_into().expect("8 bytes")) as f32,
            Dtype::I64 => i64::from_le_bytes(bytes.try_into().expect("8 bytes")) as f32,
            Dtype::F32 => f32::from_le_bytes(bytes.try_into().expect("4 bytes")),
            Dtype::F64 => f64::from_le_bytes(bytes.try_into().expect("8 bytes")) as f32,
        }
    };
    let scale = (f64::from(nx) / width.max(1) as f64).max(f64::from(ny) / height.max(1) as f64);
    let (out_w, out_h) = if nx == 0 || ny == 0 || scale <= 0.0 {
        (0, 0)
    } else {
        (
            ((f64::from(nx) / scale) as usize).clamp(1, width.max(1)),
            ((f64::from(ny) / scale) as usize).clamp(1, height.max(1)),
        )
    };
    let offsets: &[f64] = if scale >= 2.0 { &[0.25, 0.75] } else { &[0.5] };
    let mut values = Vec::with_capacity(out_w * out_h);
    for oy in 0..out_h {
        for ox in 0..out_w {
            let (mut sum, mut n) = (0.0f32, 0u32);
            for dy in offsets {
                for dx in offsets {
                    let y = (((oy as f64 + dy) * scale) as usize).min(ny as usize - 1);
                    let x = (((ox as f64 + dx) * scale) as usize).min(nx as usize - 1);
                    let v = value(y, x);
                    if v.is_finite() {
                        sum += v;
                        n += 1;
                    }
                }
            }
            values.push(if n > 0 { sum / n as f32 } else { f32::NAN });
        }
    }
    LiveFrame {
        ring: ring.to_string(),
        frame_id: header.frame_id,
        timestamp_ns: header.timestamp_ns,
        ny,
        nx,
        dtype: header.dtype.name().to_string(),
        width: out_w,
        height: out_h,
        values,
    }
}
