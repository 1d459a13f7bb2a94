"""A Python producer for tests/python.rs: creates RING (shape NY×NX u16) and publishes
FRAMES ramp frames (spec §10) once CONSUMERS consumers are attached, each with the
attribute `n` = frame id; prints its counters as one JSON line."""

import json
import sys

import numpy as np

import streamd


def main():
    ring, ny, nx, frames, consumers = sys.argv[1], *map(int, sys.argv[2:6])
    producer = streamd.Producer(ring, (ny, nx), "uint16", slots=16)
    producer.wait_for_consumers(consumers)
    base = np.arange(ny * nx, dtype=np.uint64).reshape(ny, nx)
    for frame_id in range(frames):
        slot = producer.claim()
        np.copyto(slot.array, ((base + frame_id) % 65536).astype(np.uint16))
        slot.publish(frame_id, attrs={"n": frame_id})
    producer.finish()
    print(json.dumps(producer.counters()), flush=True)


if __name__ == "__main__":
    main()
