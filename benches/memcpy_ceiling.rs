//! The memory-copy ceiling for a frame size: the bandwidth of a plain `copy_from_slice`
//! between two frame-sized buffers, cycling through enough buffers to leave the caches.
//! Prints one JSON object. Used by `scripts/bench-ring` in the same run as the ring
//! measurements, so ratios compare like with like.
//!
//!     cargo bench --bench memcpy_ceiling -- BYTES [SECONDS]

use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let bytes: usize = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(512 * 512);
    let seconds: f64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1.0);
    // At least 256 MiB of sources, like a ring of that many frames, so copies come from DRAM.
    let count = (256 << 20) / bytes.max(1) + 2;
    let sources: Vec<Vec<u8>> = (0..count).map(|i| vec![i as u8; bytes]).collect();
    let mut destination = vec![0u8; bytes];
    let mut rates = Vec::new();
    for _ in 0..5 {
        let deadline = Duration::from_secs_f64(seconds / 5.0);
        let started = Instant::now();
        let mut copied = 0usize;
        let mut i = 0;
        while started.elapsed() < deadline {
            destination.copy_from_slice(&sources[i % count]);
            std::hint::black_box(&destination);
            copied += bytes;
            i += 1;
        }
        rates.push(copied as f64 / started.elapsed().as_secs_f64() / 1e6);
    }
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    println!(
        "{{\"frame_bytes\":{bytes},\"memcpy_mb_per_s\":{median:.1},\"frames_per_s\":{:.1}}}",
        median * 1e6 / bytes as f64
    );
}
