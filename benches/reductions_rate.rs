//! The `stats` reductions on one core beside the single-core memory read bandwidth,
//! measured in the same process: 2048×2048 frames (u16: the simulator's ramp; f32: the
//! same values as floats; and a mostly-zero u16 frame, as real detector images are),
//! all reductions with a threshold, with and without a 256-bin histogram. Frames cycle
//! through 256 MiB so they come from DRAM, as ring slots do.
//! Prints one JSON object; `scripts/bench-reductions` runs it beside NumPy.
//!
//!     cargo bench --bench reductions_rate -- [SECONDS]

use std::time::{Duration, Instant};
use streamd::processors::reductions::{Scratch, Settings};
use streamd::ring::Dtype;

const N: u32 = 2048;

/// Milliseconds per call of `f` over `frames` (median of 5 slices of `seconds`).
fn time_ms(seconds: f64, frames: &[Vec<u8>], mut f: impl FnMut(&[u8])) -> f64 {
    let mut per = Vec::new();
    let mut i = 0;
    for _ in 0..5 {
        let started = Instant::now();
        let mut calls = 0u32;
        while started.elapsed() < Duration::from_secs_f64(seconds / 5.0) || calls == 0 {
            f(&frames[i % frames.len()]);
            i += 1;
            calls += 1;
        }
        per.push(started.elapsed().as_secs_f64() * 1e3 / f64::from(calls));
    }
    per.sort_by(f64::total_cmp);
    per[per.len() / 2]
}

/// Copies of `frame` filling 256 MiB, in 64-byte aligned buffers (ring payloads are
/// page-aligned).
fn copies(frame: &[u8]) -> Vec<Vec<u8>> {
    let count = (256 << 20) / frame.len() + 2;
    (0..count).map(|_| frame.to_vec()).collect()
}

fn main() {
    let seconds: f64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(3.0);
    let pixels = (N * N) as usize;
    let u16s: Vec<u8> = (0..pixels).flat_map(|i| (i as u16).to_le_bytes()).collect();
    let f32s: Vec<u8> = (0..pixels)
        .flat_map(|i| f32::from(i as u16).to_le_bytes())
        .collect();
    // One pixel in 16 lit (values below 4096), the rest zero.
    let zeros: Vec<u8> = (0..pixels)
        .flat_map(|i| (if i % 16 == 0 { (i % 4096) as u16 } else { 0 }).to_le_bytes())
        .collect();
    let (u16_frames, f32_frames) = (copies(&u16s), copies(&f32s));
    let zero_frames = copies(&zeros);
    let settings = |bins| Settings {
        roi: None,
        threshold: Some(1000.0),
        bins,
        range: None,
    };
    let mut scratch = Scratch::default();
    let mut run = |frames: &[Vec<u8>], dtype, bins| {
        let s = settings(bins);
        time_ms(seconds, frames, |f| {
            std::hint::black_box(scratch.reduce(f, dtype, N, N, &s));
        })
    };
    let u16_0 = run(&u16_frames, Dtype::U16, 0);
    let u16_256 = run(&u16_frames, Dtype::U16, 256);
    let f32_256 = run(&f32_frames, Dtype::F32, 256);
    let zeros_256 = run(&zero_frames, Dtype::U16, 256);
    // The ceiling: reading every byte once (a sum of 64-bit words), same frames.
    let read_ms = time_ms(seconds, &u16_frames, |f| {
        let words = f
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes(w.try_into().unwrap()));
        std::hint::black_box(words.fold(0u64, u64::wrapping_add));
    });
    let bytes = (pixels * 2) as f64;
    println!(
        "{{\"u16_ms\":{u16_0:.3},\"u16_hist256_ms\":{u16_256:.3},\"f32_hist256_ms\":{f32_256:.3},\"u16_zeros_hist256_ms\":{zeros_256:.3},\"read_ms_u16_frame\":{read_ms:.3},\"read_mb_per_s\":{:.1}}}",
        bytes / read_ms / 1e3
    );
}
