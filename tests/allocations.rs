//! The stage worker's loop allocates nothing per frame: a passthrough stage, run by the
//! worker loop in this thread between two rings, with every heap allocation of the thread
//! counted. (In one process rather than the binary: an allocator can only be counted from
//! inside; the loop is the one `streamd worker` runs.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use streamd::pipeline::worker::{with_stage, Role, StageLoop, WorkerSpec};
use streamd::pipeline::Pipeline;
use streamd::ring::{
    Consumer, ConsumerOptions, Dtype, FrameMeta, FullPolicy, OwnedRing, Producer, RingOptions,
};
use streamd::stats::{StageDecl, StatsSegment};

/// The system allocator, counting allocations per thread (the harness's own threads
/// allocate meanwhile; only the thread that steps the loop is measured).
struct Counting;

thread_local! {
    // Const-initialised and without a destructor: reading it never allocates.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // A thread being torn down has no counter left; it is not the one measured.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: every call goes to the system allocator with the caller's arguments unchanged;
// counting only adds to a thread-local integer, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller upholds `alloc`'s contract, which is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: `ptr` came from this allocator, that is from `System`, with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, that is from `System`, with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const PIPELINE: &str = include_str!("../fixtures/pipelines/passthrough-64b.toml");

/// Frames stepped before counting: first uses (the histogram's, the clock's) may allocate.
const WARM_UP: u64 = 100;
const FRAMES: u64 = 10_000;

#[test]
fn a_passthrough_stage_allocates_nothing_per_frame() {
    let name = format!("alloc-{}", std::process::id());
    let pipeline = Pipeline::parse(PIPELINE, "test", Path::new("."), Some(&name)).unwrap();
    let plan = pipeline.stages[0].clone();
    let decl = |name: &str, processor: &str| StageDecl {
        name: name.into(),
        processor: processor.into(),
        workers: 1,
    };
    let (stats, _) =
        StatsSegment::create(&name, &[decl("source", "sim"), decl("pass", "passthrough")]).unwrap();
    let ring = |ring: &str| RingOptions {
        name: format!("{name}.{ring}"),
        slots: 64,
        slot_bytes: 64,
        full_policy: FullPolicy::Block,
    };
    let (mut producer, _) = Producer::create(&ring("in")).unwrap();
    let (output, _) = OwnedRing::create(&ring("out")).unwrap();
    let mut reader = Consumer::attach(output.name(), &ConsumerOptions::default()).unwrap();
    let spec = WorkerSpec {
        pipeline: name.clone(),
        supervisor_pid: std::process::id(),
        stage_index: 1,
        entry: 1,
        worker: 0,
        core: None,
        role: Role::Stage {
            group: plan.group(0),
            inputs: vec![ring("in").name],
            outputs: vec![output.name().to_string()],
            metadata: Vec::new(),
            plan,
        },
    };
    let entry = stats.entry(1);
    // Steps frame `id` through the stage; returns the allocations the step made and
    // whether the heartbeat fell in it (every 100 ms, it shows the processor's counters,
    // whose names are Strings: per heartbeat, not per frame).
    let mut step = |stage: &mut StageLoop<'_, '_>, id: u64| {
        let mut slot = producer.claim().unwrap();
        slot.payload_mut()[..64].fill(id as u8);
        let meta = FrameMeta {
            frame_id: id,
            timestamp_ns: id,
            dtype: Dtype::U8,
            dims: &[8, 8],
            flags: 0,
        };
        slot.publish(&meta).unwrap();
        let beat = entry.heartbeat_ns.load(Relaxed);
        let before = allocations();
        assert_eq!(stage.step().unwrap(), None, "frame {id}: the stage stopped");
        let made = allocations() - before;
        let beat_in_step = entry.heartbeat_ns.load(Relaxed) != beat;
        let frame = reader.recv().unwrap();
        assert_eq!(frame.header().frame_id, id);
        assert_eq!(frame.payload(), [id as u8; 64]);
        (made, beat_in_step)
    };
    let checked = with_stage(&spec, |stage| {
        for id in 0..WARM_UP {
            step(stage, id);
        }
        let mut checked = 0;
        for id in WARM_UP..WARM_UP + FRAMES {
            let (made, beat_in_step) = step(stage, id);
            if !beat_in_step {
                assert_eq!(
                    made, 0,
                    "frame {id}: the worker loop allocated {made} times"
                );
                checked += 1;
            }
        }
        checked
    })
    .unwrap();
    // A heartbeat comes at most every 100 ms: nearly every frame was checked.
    assert!(
        checked >= FRAMES * 9 / 10,
        "only {checked} of {FRAMES} frames came without a heartbeat"
    );
    assert_eq!(entry.frames_in.load(Relaxed), WARM_UP + FRAMES);
    assert_eq!(entry.frames_out.load(Relaxed), WARM_UP + FRAMES);
    stats.unlink();
}
