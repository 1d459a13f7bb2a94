"""Zero copy, shown by speed (scripts/bench-python): a Python consumer's
`frame.array.sum()` over 4096² u8 frames of a ring, against NumPy summing an in-memory
array of the same size, timed in the same process. Prints one JSON line, then the
sentence for BENCHMARKS.md."""

import json
import sys
import time

import numpy as np

import streamd

ring, frames = sys.argv[1], int(sys.argv[2])
in_memory = np.random.default_rng(0).integers(0, 256, (4096, 4096), dtype=np.uint8)
consumer = streamd.Consumer(ring, timeout=60, attach_timeout=60)
ring_s = []
for frame in consumer:
    array = frame.array
    t = time.perf_counter()
    array.sum()
    ring_s.append(time.perf_counter() - t)
    del array
memory_s = []
for _ in range(len(ring_s)):
    t = time.perf_counter()
    in_memory.sum()
    memory_s.append(time.perf_counter() - t)
median = lambda v: sorted(v)[len(v) // 2]
r = {"frames": len(ring_s), "ring_sum_ms": 1e3 * median(ring_s), "memory_sum_ms": 1e3 * median(memory_s),
     "ratio": median(memory_s) / median(ring_s)}
print(json.dumps(r))
print(f"Zero copy: frame.array.sum() of a 4096² u8 ring frame takes {r['ring_sum_ms']:.2f} ms, of an "
      f"in-memory array {r['memory_sum_ms']:.2f} ms (medians of {r['frames']}): the ring runs at "
      f"{r['ratio']:.0%} of in-memory speed.")
