//! Per-frame cost of the ring's hot path in one process: claim + publish, then recv +
//! release, for 64-byte frames (no cross-core traffic; `scripts/bench-ring` measures
//! the cross-process numbers); and beside it, in the same run, one frame through a
//! passthrough stage: published into its input ring, taken, forwarded and shown in the
//! stats segment by one step of the worker loop, received from its output ring.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::path::Path;
use streamd::pipeline::worker::{with_stage, Role, WorkerSpec};
use streamd::pipeline::Pipeline;
use streamd::ring::{
    Consumer, ConsumerOptions, Dtype, FrameMeta, FullPolicy, OwnedRing, Producer, RingOptions,
};
use streamd::stats::{StageDecl, StatsSegment};

const DIMS: [u32; 2] = [8, 8];

/// Claims, fills and publishes 64-byte frame `id`.
fn publish(producer: &mut Producer, id: u64) {
    let mut slot = producer.claim().expect("space");
    slot.payload_mut()[0] = id as u8;
    let meta = FrameMeta {
        frame_id: id,
        timestamp_ns: 0,
        dtype: Dtype::U8,
        dims: &DIMS,
        flags: 0,
    };
    slot.publish(&meta).expect("publish");
}

fn ring_options(name: String) -> RingOptions {
    RingOptions {
        name,
        slots: 64,
        slot_bytes: 64,
        full_policy: FullPolicy::Block,
    }
}

/// The ring alone: claim + publish, recv + release, by a consumer of its own (as
/// `streamd consume` reads) or one in a named group taking runs of `batch` (as a stage's
/// worker reads its input).
fn publish_and_consume(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring");
    group.throughput(Throughput::Elements(1));
    let readers = [
        ("publish+recv 64 B".to_string(), None, 1),
        (
            "publish+recv 64 B, group, batch 1".to_string(),
            Some("g"),
            1,
        ),
        (
            "publish+recv 64 B, group, batch 16".to_string(),
            Some("g"),
            16,
        ),
    ];
    for (label, reader_group, batch) in readers {
        let name = format!("bench-{}", std::process::id());
        let (mut producer, _) = Producer::create(&ring_options(name.clone())).expect("create ring");
        let options = ConsumerOptions {
            group: reader_group.map(String::from),
            batch,
            ..Default::default()
        };
        let mut consumer = Consumer::attach(&name, &options).expect("attach");
        let mut id = 0u64;
        group.bench_function(label, |b| {
            b.iter(|| {
                publish(&mut producer, id);
                id += 1;
                let frame = consumer.recv().expect("frame");
                std::hint::black_box(frame.payload()[0]);
            })
        });
    }
    group.finish();
}

const PIPELINE: &str = include_str!("../fixtures/pipelines/passthrough-64b.toml");

/// One frame through a passthrough stage: published into its input ring, one step of
/// the worker loop (take it in the stage's group, forward it, count it in the stats
/// segment), received from its output ring by a consumer of its own.
fn through_a_passthrough_stage(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring");
    group.throughput(Throughput::Elements(1));
    for batch in [1, 16] {
        let name = format!("bench-{}", std::process::id());
        let text = PIPELINE.replace("batch = 1", &format!("batch = {batch}"));
        let plan = Pipeline::parse(&text, "bench", Path::new("."), Some(&name))
            .expect("pipeline")
            .stages
            .remove(0);
        let decl = |name: &str, processor: &str| StageDecl {
            name: name.into(),
            processor: processor.into(),
            workers: 1,
        };
        let (stats, _) =
            StatsSegment::create(&name, &[decl("source", "sim"), decl("pass", "passthrough")])
                .expect("stats segment");
        let input = format!("{name}.in");
        let (mut producer, _) = Producer::create(&ring_options(input.clone())).expect("input ring");
        let (output, _) =
            OwnedRing::create(&ring_options(format!("{name}.out"))).expect("output ring");
        let mut reader =
            Consumer::attach(output.name(), &ConsumerOptions::default()).expect("attach");
        let spec = WorkerSpec {
            pipeline: name.clone(),
            supervisor_pid: std::process::id(),
            stage_index: 1,
            entry: 1,
            worker: 0,
            core: None,
            role: Role::Stage {
                group: plan.group(0),
                inputs: vec![input],
                outputs: vec![output.name().to_string()],
                metadata: Vec::new(),
                plan,
            },
        };
        let mut id = 0u64;
        with_stage(&spec, |stage| {
            let label = format!("publish+stage step+recv 64 B, batch {batch}");
            group.bench_function(label, |b| {
                b.iter(|| {
                    publish(&mut producer, id);
                    id += 1;
                    stage.step().expect("step");
                    let frame = reader.recv().expect("frame");
                    std::hint::black_box(frame.payload()[0]);
                })
            });
        })
        .expect("stage");
        stats.unlink();
    }
    group.finish();
}

criterion_group!(benches, publish_and_consume, through_a_passthrough_stage);
criterion_main!(benches);
