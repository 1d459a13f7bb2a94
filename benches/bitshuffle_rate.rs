//! Bitshuffle-LZ4 compression speed of one core on 2048×2048 u16 frames, for
//! `scripts/bench-writers`, which times the reference implementation (the `bitshuffle`
//! Python package) on the same frames in the same run. Prints one JSON object: input
//! MB/s and compressed fraction for each frame kind.
//!
//!     cargo bench --bench bitshuffle_rate -- [SECONDS]
//!
//! Frames: `ramp` is the simulator's ramp of frame 0 (pixel i = i mod 65536); `noise`
//! is pixel i = ((i · 2654435761) mod 2^32) >> 28, values 0..15 scattered like a
//! low-flux photon-counting frame.

use std::time::Instant;
use streamd::writers::bitshuffle;

fn rate(frame: &[u8], seconds: f64) -> (f64, f64) {
    let mut out = vec![0u8; bitshuffle::max_compressed_len(frame.len(), 2)];
    let mut scratch = Vec::new();
    let mut rates = Vec::new();
    let mut len = 0;
    for _ in 0..5 {
        let started = Instant::now();
        let mut done = 0usize;
        while started.elapsed().as_secs_f64() < seconds / 5.0 {
            len = bitshuffle::compress(frame, 2, &mut out, &mut scratch);
            std::hint::black_box(&out);
            done += frame.len();
        }
        rates.push(done as f64 / started.elapsed().as_secs_f64() / 1e6);
    }
    rates.sort_by(f64::total_cmp);
    (rates[2], len as f64 / frame.len() as f64)
}

/// Decompression speed (output MB/s) straight into a frame buffer, as the `zmq` source
/// does into a ring slot.
fn decompress_rate(frame: &[u8], seconds: f64) -> f64 {
    let mut packed = vec![0u8; bitshuffle::max_compressed_len(frame.len(), 2)];
    let len = bitshuffle::compress(frame, 2, &mut packed, &mut Vec::new());
    let mut out = vec![0u8; frame.len()];
    let mut scratch = Vec::new();
    let mut rates = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let mut done = 0usize;
        while started.elapsed().as_secs_f64() < seconds / 5.0 {
            bitshuffle::decompress_into(&packed[..len], 2, &mut out, &mut scratch)
                .expect("its own output");
            std::hint::black_box(&out);
            done += frame.len();
        }
        rates.push(done as f64 / started.elapsed().as_secs_f64() / 1e6);
    }
    assert_eq!(out, frame);
    rates.sort_by(f64::total_cmp);
    rates[2]
}

fn main() {
    let seconds: f64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(3.0);
    let pixels = 2048 * 2048u64;
    let ramp: Vec<u8> = (0..pixels)
        .flat_map(|i| ((i % 65536) as u16).to_le_bytes())
        .collect();
    let noise: Vec<u8> = (0..pixels)
        .flat_map(|i| ((((i * 2_654_435_761) % (1 << 32)) >> 28) as u16).to_le_bytes())
        .collect();
    let (ramp_rate, ramp_ratio) = rate(&ramp, seconds);
    let (noise_rate, noise_ratio) = rate(&noise, seconds);
    let ramp_out = decompress_rate(&ramp, seconds);
    let noise_out = decompress_rate(&noise, seconds);
    println!(
        "{{\"ramp_mb_per_s\": {ramp_rate:.1}, \"ramp_compressed_fraction\": {ramp_ratio:.4}, \"noise_mb_per_s\": {noise_rate:.1}, \"noise_compressed_fraction\": {noise_ratio:.4}, \"ramp_decompress_mb_per_s\": {ramp_out:.1}, \"noise_decompress_mb_per_s\": {noise_out:.1}}}"
    );
}
