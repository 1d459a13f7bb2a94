//! Per-frame cost of the ring's hot path in one process: claim + publish, then recv +
//! release, for 64-byte frames (no cross-core traffic; `scripts/bench-ring` measures
//! the cross-process numbers).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use streamd::ring::{
    Consumer, ConsumerOptions, Dtype, FrameMeta, FullPolicy, Producer, RingOptions,
};

fn publish_and_consume(c: &mut Criterion) {
    let name = format!("bench-{}", std::process::id());
    let options = RingOptions {
        name: name.clone(),
        slots: 64,
        slot_bytes: 64,
        full_policy: FullPolicy::Block,
    };
    let (mut producer, _) = Producer::create(&options).expect("create ring");
    let mut consumer = Consumer::attach(
        &name,
        &ConsumerOptions {
            batch: 1,
            ..Default::default()
        },
    )
    .expect("attach");
    let dims = [8u32, 8];
    let mut id = 0u64;
    let mut group = c.benchmark_group("ring");
    group.throughput(Throughput::Elements(1));
    group.bench_function("publish+recv 64 B", |b| {
        b.iter(|| {
            let mut slot = producer.claim().expect("space");
            slot.payload_mut()[0] = id as u8;
            let meta = FrameMeta {
                frame_id: id,
                timestamp_ns: 0,
                dtype: Dtype::U8,
                dims: &dims,
                flags: 0,
            };
            slot.publish(&meta).expect("publish");
            id += 1;
            let frame = consumer.recv().expect("frame");
            std::hint::black_box(frame.payload()[0]);
        })
    });
    group.finish();
}

criterion_group!(benches, publish_and_consume);
criterion_main!(benches);
