//! The per-frame hot paths of the processors and writers, in one process on 2048×2048
//! u16 frames (8 MiB) unless said otherwise: split into 2×2 tiles, stitch them back,
//! the metadata match of 6 channels, the reductions, bitshuffle-LZ4, a TIFF file and an
//! HDF5 chunk written to tmpfs (`/dev/shm`, so the disk is not what is measured).
//! `cargo bench --bench ring` has the ring's own publish + consume.
//!
//!     cargo bench --bench hot_paths [-- FILTER]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::{Duration, Instant};
use streamd::processors::metadata::Matcher;
use streamd::processors::reductions::{Scratch, Settings};
use streamd::processors::{Outputs, Processor, StageContext};
use streamd::registry::build;
use streamd::ring::{
    Consumer, ConsumerOptions, Dtype, FrameMeta, FullPolicy, Producer, RingOptions,
};
use streamd::writers::bitshuffle;

const NY: u32 = 2048;
const NX: u32 = 2048;
const FRAME_BYTES: usize = (NY * NX * 2) as usize;

/// The simulator's ramp for frame 0: pixel i = i mod 65536.
fn ramp() -> Vec<u8> {
    (0..NY * NX)
        .flat_map(|i| (i as u16).to_le_bytes())
        .collect()
}

/// A ring of `slots` slots of `bytes`, its producer and a consumer.
fn ring(tag: &str, slots: u32, bytes: u64) -> (Producer, Consumer) {
    let name = format!("bench-{}-{tag}", std::process::id());
    let options = RingOptions {
        name: name.clone(),
        slots,
        slot_bytes: bytes,
        full_policy: FullPolicy::Block,
    };
    let (producer, _) = Producer::create(&options).expect("create ring");
    let consumer = Consumer::attach(&name, &ConsumerOptions::default()).expect("attach");
    (producer, consumer)
}

fn publish(producer: &mut Producer, payload: &[u8], frame_id: u64) {
    let mut slot = producer.claim().expect("space");
    slot.payload_mut()[..payload.len()].copy_from_slice(payload);
    let dims = [NY, NX];
    let meta = FrameMeta {
        frame_id,
        timestamp_ns: frame_id * 1_000_000,
        dtype: Dtype::U16,
        dims: &dims,
        flags: 0,
    };
    slot.publish(&meta).expect("publish");
}

fn context(outputs: Vec<String>) -> StageContext {
    StageContext {
        stage: "bench".into(),
        worker: 0,
        workers: 1,
        inputs: 1,
        outputs,
        restarts: 0,
        previous: Vec::new(),
    }
}

fn processor(name: &str, args: &str) -> Box<dyn Processor> {
    let table: toml::Table = toml::from_str(args).expect("arguments");
    build(name, &table).expect("processor")
}

fn split_and_stitch(c: &mut Criterion) {
    let pixels = ramp();
    let (mut input, mut frames) = ring("in", 4, FRAME_BYTES as u64);
    let (tile_ring, mut tiles) = ring("tiles", 16, FRAME_BYTES as u64 / 4);
    let (whole_ring, mut wholes) = ring("whole", 4, FRAME_BYTES as u64);
    let mut split = processor("split", "grid = [2, 2]");
    split.start(&context(vec!["tiles".into()])).unwrap();
    let mut stitch = processor("stitch", "");
    stitch.start(&context(vec!["whole".into()])).unwrap();
    let mut to_tiles = Outputs::new(vec![tile_ring]);
    let mut to_whole = Outputs::new(vec![whole_ring]);
    let mut group = c.benchmark_group("split-stitch 2048² u16, 2×2");
    group.throughput(Throughput::Bytes(FRAME_BYTES as u64));
    let mut id = 0u64;
    group.bench_function("split", |b| {
        b.iter_custom(|iters| {
            let mut took = Duration::ZERO;
            for _ in 0..iters {
                publish(&mut input, &pixels, id);
                id += 1;
                let frame = frames.recv().unwrap();
                let started = Instant::now();
                split.process(0, &frame, &mut to_tiles).unwrap();
                took += started.elapsed();
                drop(frame);
                for _ in 0..4 {
                    drop(tiles.recv().unwrap());
                }
            }
            took
        })
    });
    group.bench_function("stitch", |b| {
        b.iter_custom(|iters| {
            let mut took = Duration::ZERO;
            for _ in 0..iters {
                publish(&mut input, &pixels, id);
                id += 1;
                let frame = frames.recv().unwrap();
                split.process(0, &frame, &mut to_tiles).unwrap();
                drop(frame);
                for _ in 0..4 {
                    let tile = tiles.recv().unwrap();
                    let started = Instant::now();
                    stitch.process(0, &tile, &mut to_whole).unwrap();
                    took += started.elapsed();
                }
                drop(wholes.recv().unwrap());
            }
            took
        })
    });
    group.finish();
}

fn metadata_match(c: &mut Criterion) {
    const CHANNELS: usize = 6;
    let period = 1_000_000u64;
    let mut matcher = Matcher::new(CHANNELS, 100_000, 0);
    let mut group = c.benchmark_group("metadata match");
    group.throughput(Throughput::Elements(1));
    let mut frame = 0u64;
    group.bench_function("6 channels, one frame", |b| {
        b.iter(|| {
            let t = frame * period;
            for ch in 0..CHANNELS {
                matcher.add(ch, t + 37 * ch as u64, frame as f64);
            }
            std::hint::black_box(matcher.decide(t, false));
            frame += 1;
        })
    });
    group.finish();
}

fn reductions(c: &mut Criterion) {
    let pixels = ramp();
    let mut group = c.benchmark_group("reductions 2048² u16");
    group.throughput(Throughput::Bytes(FRAME_BYTES as u64));
    for bins in [0usize, 256] {
        let settings = Settings {
            roi: None,
            threshold: Some(1000.0),
            bins,
            range: None,
        };
        let mut scratch = Scratch::default();
        group.bench_with_input(BenchmarkId::new("bins", bins), &settings, |b, s| {
            b.iter(|| std::hint::black_box(scratch.reduce(&pixels, Dtype::U16, NY, NX, s)))
        });
    }
    group.finish();
}

fn bitshuffle_lz4(c: &mut Criterion) {
    let pixels = ramp();
    let mut out = vec![0u8; bitshuffle::max_compressed_len(pixels.len(), 2)];
    let mut scratch = Vec::new();
    let mut group = c.benchmark_group("bitshuffle-LZ4 2048² u16");
    group.throughput(Throughput::Bytes(FRAME_BYTES as u64));
    group.bench_function("compress ramp", |b| {
        b.iter(|| std::hint::black_box(bitshuffle::compress(&pixels, 2, &mut out, &mut scratch)))
    });
    group.finish();
}

/// A writer stage writing the same frame again and again into a folder on tmpfs; the
/// folder is emptied after every sample.
fn writer(c: &mut Criterion, label: &str, name: &str, args: &str) {
    let folder = tempfile::Builder::new()
        .prefix("streamd-bench-")
        .tempdir_in("/dev/shm")
        .expect("a folder on /dev/shm");
    let pixels = ramp();
    let (mut input, mut frames) = ring(name, 2, FRAME_BYTES as u64);
    publish(&mut input, &pixels, 7);
    let frame = frames.recv().unwrap();
    let mut nothing = Outputs::new(Vec::new());
    let mut group = c.benchmark_group("writers 2048² u16, tmpfs");
    group.throughput(Throughput::Bytes(FRAME_BYTES as u64));
    group.bench_function(label, |b| {
        b.iter_custom(|iters| {
            let args = format!("folder = \"{}\"\n{args}", folder.path().display());
            let mut w = processor(name, &args);
            w.start(&context(Vec::new())).unwrap();
            let started = Instant::now();
            for _ in 0..iters {
                w.process(0, &frame, &mut nothing).unwrap();
            }
            w.stop(&mut nothing).unwrap();
            let took = started.elapsed();
            for entry in std::fs::read_dir(folder.path()).unwrap() {
                std::fs::remove_file(entry.unwrap().path()).unwrap();
            }
            took
        })
    });
    group.finish();
}

fn writers(c: &mut Criterion) {
    writer(c, "tiff file (encode + write)", "tiff", "overwrite = true");
    writer(
        c,
        "hdf5 chunk (uncompressed)",
        "hdf5",
        "compression = \"none\"\noverwrite = true",
    );
    writer(
        c,
        "hdf5 chunk (bitshuffle-LZ4)",
        "hdf5",
        "compression = \"bslz4\"\noverwrite = true",
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3));
    targets = split_and_stitch, metadata_match, reductions, bitshuffle_lz4, writers
}
criterion_main!(benches);
