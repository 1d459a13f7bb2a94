//! `streamd peek RING`: the newest frame of a ring — its header, attributes and
//! statistics — and with `--png FILE` a preview image; the quick look, like `pvget`.
//! It reads as a lossy consumer (the ring has no read-only observer, spec §6.3): the
//! producer never waits for it, and it copies the frame out before doing anything with
//! it, so it holds a slot only for the copy.

use super::{ring_segments, Status};
use crate::processors::reductions::{reduce, Settings};
use crate::ring::{AttrValue, Consumer, ConsumerOptions, Delivery, Dtype, Frame, RecvError};
use crate::sys::{now_ns, stop_flag};
use crate::units::{quote, Seconds};
use serde_json::{json, Map, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, clap::Args)]
pub struct PeekArgs {
    /// The ring: `PIPELINE.RING` for a pipeline's (all its numbered segments when
    /// several workers write it), or a ring's own name.
    pub ring: String,
    /// Also write the frame as an 8-bit greyscale PNG, contrast stretched from its 1st
    /// to its 99th percentile.
    #[arg(long, value_name = "FILE")]
    pub png: Option<PathBuf>,
    /// Seconds to wait for a frame (0 to a year).
    #[arg(
        long,
        default_value = "5",
        allow_negative_numbers = true,
        value_name = "SECS"
    )]
    pub timeout: Seconds,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The frame, copied out of its slot.
struct Copied {
    ring: String,
    frame_id: u64,
    timestamp_ns: u64,
    dtype: Dtype,
    dims: Vec<u32>,
    attributes: Map<String, Value>,
    payload: Vec<u8>,
}

pub fn run(args: &PeekArgs) -> anyhow::Result<Status> {
    let segments = ring_segments(&args.ring);
    let options = ConsumerOptions {
        delivery: Delivery::Lossy,
        attach_timeout: args.timeout.duration(),
        ..ConsumerOptions::default()
    };
    let mut consumers = segments
        .iter()
        .map(|s| Consumer::attach(s, &options))
        .collect::<Result<Vec<_>, _>>()?;
    let stop = stop_flag();
    for consumer in &mut consumers {
        consumer.set_interrupt(stop.clone());
    }
    let deadline = Instant::now() + args.timeout.duration();
    let frame = newest(&mut consumers, &segments, deadline)?;
    drop(consumers);
    let Some(frame) = frame else {
        anyhow::bail!(
            "no frame came in ring {} within {} s; is its producer publishing (`streamd rings`)? --timeout waits longer",
            quote(&args.ring),
            args.timeout
        );
    };
    let (ny, nx) = match frame.dims[..] {
        [] => (0, 0),
        [n] => (1, n),
        [.., y, x] => (y, x),
    };
    let stats = reduce(&frame.payload, frame.dtype, ny, nx, &Settings::default());
    if let Some(path) = &args.png {
        write_png(path, &frame, ny, nx)?;
    }
    let report = json!({
        "ring": frame.ring,
        "frame_id": frame.frame_id,
        "timestamp_ns": frame.timestamp_ns,
        "age_ms": now_ns().saturating_sub(frame.timestamp_ns) as f64 / 1e6,
        "dtype": frame.dtype.name(),
        "dims": frame.dims,
        "payload_bytes": frame.payload.len(),
        "attributes": frame.attributes,
        "stats": {
            "count": stats.count,
            "sum": stats.sum,
            "mean": stats.mean,
            "min": stats.min,
            "max": stats.max,
            "std": stats.std,
            "centroid_y": stats.centroid_y,
            "centroid_x": stats.centroid_x,
            "nonfinite": stats.nonfinite,
        },
        "png": args.png.as_ref().map(|p| p.display().to_string()),
    });
    if args.json {
        println!("{report}");
    } else {
        print!("{}", text(&report));
    }
    Ok(Status::Ok)
}

/// Waits for frames until `deadline` and copies the newest one any segment has.
fn newest(
    consumers: &mut [Consumer],
    segments: &[String],
    deadline: Instant,
) -> anyhow::Result<Option<Copied>> {
    let mut best: Option<Copied> = None;
    let mut ended = vec![false; consumers.len()];
    loop {
        // Skip to each segment's newest frame: those passed over are released at once.
        for (i, consumer) in consumers.iter_mut().enumerate() {
            while !ended[i] {
                match consumer.recv_timeout(Duration::ZERO) {
                    Ok(Some(frame)) => {
                        let newer = best
                            .as_ref()
                            .is_none_or(|b| frame.header().frame_id >= b.frame_id);
                        if frame.lag() == 0 && newer {
                            best = Some(copy(&frame, &segments[i]));
                        }
                    }
                    Ok(None) => break,
                    Err(RecvError::EndOfStream { .. } | RecvError::ProducerDied { .. }) => {
                        ended[i] = true
                    }
                    Err(RecvError::Interrupted) => return Ok(best),
                    Err(e) => anyhow::bail!("{e}"),
                }
            }
        }
        let now = Instant::now();
        if best.is_some() || now >= deadline || ended.iter().all(|&e| e) {
            return Ok(best);
        }
        // Nothing yet: wait a little on one open segment, then look at all again.
        let i = ended.iter().position(|e| !e).expect("one is open");
        match consumers[i].recv_timeout((deadline - now).min(Duration::from_millis(20))) {
            Ok(Some(frame)) => best = Some(copy(&frame, &segments[i])),
            Ok(None) => {}
            Err(RecvError::EndOfStream { .. } | RecvError::ProducerDied { .. }) => ended[i] = true,
            Err(RecvError::Interrupted) => return Ok(best),
            Err(e) => anyhow::bail!("{e}"),
        }
    }
}

/// The frame's header, attributes and pixels, copied out of its slot.
fn copy(frame: &Frame<'_>, ring: &str) -> Copied {
    let header = frame.header();
    let attributes = frame
        .attributes()
        .filter_map(Result::ok)
        .map(|(k, v)| {
            let value = match v {
                AttrValue::I64(i) => json!(i),
                AttrValue::F64(x) => json!(x),
                AttrValue::Str(s) => json!(s),
            };
            (k.to_string(), value)
        })
        .collect();
    Copied {
        ring: ring.to_string(),
        frame_id: header.frame_id,
        timestamp_ns: header.timestamp_ns,
        dtype: header.dtype,
        dims: header.dims.to_vec(),
        attributes,
        payload: frame.payload().to_vec(),
    }
}

/// Pixel `i` of the frame as f32 (NaN past its end).
fn pixel(frame: &Copied, i: usize) -> f32 {
    let size = frame.dtype.size();
    let Some(b) = frame.payload.get(i * size..(i + 1) * size) else {
        return f32::NAN;
    };
    match frame.dtype {
        Dtype::U8 => f32::from(b[0]),
        Dtype::I8 => f32::from(b[0] as i8),
        Dtype::U16 => f32::from(u16::from_le_bytes([b[0], b[1]])),
        Dtype::I16 => f32::from(i16::from_le_bytes([b[0], b[1]])),
        Dtype::U32 => u32::from_le_bytes(b.try_into().expect("4 bytes")) as f32,
        Dtype::I32 => i32::from_le_bytes(b.try_into().expect("4 bytes")) as f32,
        Dtype::U64 => u64::from_le_bytes(b.try_into().expect("8 bytes")) as f32,
        Dtype::I64 => i64::from_le_bytes(b.try_into().expect("8 bytes")) as f32,
        Dtype::F32 => f32::from_le_bytes(b.try_into().expect("4 bytes")),
        Dtype::F64 => f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32,
    }
}

fn write_png(path: &std::path::Path, frame: &Copied, ny: u32, nx: u32) -> anyhow::Result<()> {
    let count = ny as usize * nx as usize;
    let values: Vec<f32> = (0..count).map(|i| pixel(frame, i)).collect();
    let mut finite: Vec<f32> = values.iter().copied().filter(|v| v.is_finite()).collect();
    finite.sort_by(f32::total_cmp);
    let at = |q: f64| {
        finite
            .get(((finite.len().max(1) - 1) as f64 * q).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let (lo, hi) = (at(0.01), at(0.99));
    let span = if hi > lo { hi - lo } else { 1.0 };
    let grey: Vec<u8> = values
        .iter()
        .map(|v| {
            if v.is_finite() {
                (((v - lo) / span).clamp(0.0, 1.0) * 255.0).round() as u8
            } else {
                0
            }
        })
        .collect();
    let image = image::GrayImage::from_raw(nx, ny, grey)
        .ok_or_else(|| anyhow::anyhow!("a frame of {ny}x{nx} does not make an image"))?;
    image.save(path).map_err(|e| {
        anyhow::anyhow!(
            "could not write --png {}: {e}; give a .png path in a folder you can write",
            quote(&path.display().to_string())
        )
    })
}

/// The report for people.
fn text(report: &Value) -> String {
    let stats = &report["stats"];
    let dims: Vec<String> = report["dims"]
        .as_array()
        .into_iter()
        .flatten()
        .map(ToString::to_string)
        .collect();
    let mut out = format!(
        "ring {}  frame {}\n  timestamp   {} ns ({:.1} ms ago)\n  shape       {} {} ({} bytes)\n",
        report["ring"].as_str().unwrap_or("?"),
        report["frame_id"],
        report["timestamp_ns"],
        report["age_ms"].as_f64().unwrap_or_default(),
        dims.join(" x "),
        report["dtype"].as_str().unwrap_or("?"),
        report["payload_bytes"]
    );
    let attributes: Vec<String> = report["attributes"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if !attributes.is_empty() {
        out.push_str(&format!("  attributes  {}\n", attributes.join(" ")));
    }
    out.push_str(&format!(
        "  statistics  min {} max {} mean {:.3} std {:.3} sum {} nonfinite {}\n  centroid    y {:.2} x {:.2}\n",
        stats["min"], stats["max"],
        stats["mean"].as_f64().unwrap_or(f64::NAN),
        stats["std"].as_f64().unwrap_or(f64::NAN),
        stats["sum"], stats["nonfinite"],
        stats["centroid_y"].as_f64().unwrap_or(f64::NAN),
        stats["centroid_x"].as_f64().unwrap_or(f64::NAN),
    ));
    if let Some(png) = report["png"].as_str() {
        out.push_str(&format!("  preview     {png}\n"));
    }
    out
}
