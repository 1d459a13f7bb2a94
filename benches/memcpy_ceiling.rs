//! The memory-copy ceiling for a frame size: the bandwidth of a plain `copy_from_slice`
//! between two frame-sized buffers, cycling through enough buffers to leave the caches.
//! Prints one JSON object. Used by `scripts/bench-ring` in the same run as the ring
//! measurements, so ratios compare like with like.
//!
//! With `--streams N`, N threads at once copy as the stages do (`copy_to_slot`: streaming
//! stores), and the bytes all of them copied per second are printed: what N cores can
//! move through memory together, the cap of a pipeline whose stages copy every frame.
//!
//!     cargo bench --bench memcpy_ceiling -- BYTES [SECONDS] [--streams N]

use std::sync::Barrier;
use std::time::{Duration, Instant};
use streamd::ring::copy_to_slot;

fn main() {
    let mut args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let streams: Option<usize> = args.iter().position(|a| a == "--streams").map(|at| {
        let n = args.get(at + 1).and_then(|n| n.parse().ok()).unwrap_or(2);
        args.drain(at..(at + 2).min(args.len()));
        n
    });
    let bytes: usize = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(512 * 512);
    let seconds: f64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1.0);
    match streams {
        None => {
            let median = copy_rate(bytes, seconds, |d, s| d.copy_from_slice(s), || ());
            println!(
                "{{\"frame_bytes\":{bytes},\"memcpy_mb_per_s\":{median:.1},\"frames_per_s\":{:.1}}}",
                median * 1e6 / bytes as f64
            );
        }
        Some(threads) => {
            let start = Barrier::new(threads);
            let total: f64 = std::thread::scope(|scope| {
                let copiers: Vec<_> = (0..threads)
                    .map(|_| {
                        scope.spawn(|| {
                            copy_rate(bytes, seconds, copy_to_slot, || {
                                start.wait();
                            })
                        })
                    })
                    .collect();
                copiers.into_iter().map(|c| c.join().expect("copier")).sum()
            });
            println!(
                "{{\"frame_bytes\":{bytes},\"streams\":{threads},\"stream_mb_per_s\":{total:.1}}}"
            );
        }
    }
}

/// The median of five rates (MB/s) of `copy` between frame-sized buffers over `seconds`,
/// timed from `ready` returning (the buffers are filled by then).
fn copy_rate(
    bytes: usize,
    seconds: f64,
    copy: impl Fn(&mut [u8], &[u8]),
    ready: impl FnOnce(),
) -> f64 {
    // At least 256 MiB of sources, like a ring of that many frames, so copies come from DRAM.
    let count = (256 << 20) / bytes.max(1) + 2;
    let sources: Vec<Vec<u8>> = (0..count).map(|i| vec![i as u8; bytes]).collect();
    let mut destination = vec![0u8; bytes];
    ready();
    let mut rates = Vec::new();
    for _ in 0..5 {
        let deadline = Duration::from_secs_f64(seconds / 5.0);
        let started = Instant::now();
        let mut copied = 0usize;
        let mut i = 0;
        while started.elapsed() < deadline {
            copy(&mut destination, &sources[i % count]);
            std::hint::black_box(&destination);
            copied += bytes;
            i += 1;
        }
        rates.push(copied as f64 / started.elapsed().as_secs_f64() / 1e6);
    }
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}
