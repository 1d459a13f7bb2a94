"""A Python consumer for tests/python.rs: reads RING (in GROUP when given, in one of its
sets with --set and --sets), checks every
frame against the ramp (spec §10), records the ids it got in IDS_FILE, checks that a
frame's array is a view of the ring's mapping, and prints one JSON line of counters.
With --stop-after N it prints "read N" after N frames and then blocks (to be killed)."""

import argparse
import json
import sys

import numpy as np

import streamd


def ring_mapping(ring):
    """The address range of the ring's segment in this process (from /proc/self/maps)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            if line.rstrip().endswith(f"/streamd-ring.{ring}"):
                start, end = (int(x, 16) for x in line.split()[0].split("-"))
                return start, end
    raise SystemExit(f"ring {ring} is not mapped")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("ring")
    p.add_argument("ids_file")
    p.add_argument("--group")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--set", type=int)
    p.add_argument("--sets", type=int)
    p.add_argument("--stop-after", type=int)
    a = p.parse_args()
    consumer = streamd.Consumer(a.ring, group=a.group, batch=a.batch, timeout=60, attach_timeout=30,
                                set=a.set, sets=a.sets)
    start, end = ring_mapping(a.ring)
    ramps = {}
    frames = errors = outside = 0
    with open(a.ids_file, "w") as ids:
        for frame in consumer:
            array = frame.array
            if not (start <= array.ctypes.data and array.ctypes.data + array.nbytes <= end):
                outside += 1
            key = (array.shape, array.dtype.str)
            if key not in ramps:
                ramps[key] = np.arange(array.size, dtype=np.uint64).reshape(array.shape)
            expected = ((ramps[key] + frame.id) % (1 << (8 * array.itemsize))).astype(array.dtype)
            if not np.array_equal(array, expected):
                errors += 1
            del array
            ids.write(f"{frame.id}\n")
            frames += 1
            if a.stop_after is not None and frames == a.stop_after:
                ids.flush()
                print(f"read {frames}", flush=True)
                sys.stdin.read()  # blocks until killed
    print(json.dumps({"frames": frames, "errors": errors, "outside": outside,
                      "ended": consumer.ended, **consumer.counters()}), flush=True)


if __name__ == "__main__":
    main()
