"""Waiting releases the GIL and Ctrl-C interrupts it (tests/python.rs): a thread runs
while the main thread waits for a frame that never comes; the test sends SIGINT once the
thread has printed, and the wait must end in KeyboardInterrupt."""

import sys
import threading

import streamd

ring = sys.argv[1]
producer = streamd.Producer(ring, (8, 8), "uint8", slots=4)
consumer = streamd.Consumer(ring)


def runs_while_main_waits():
    count = 0
    while count < 1_000_000:
        count += 1
    print("thread ran", flush=True)


threading.Thread(target=runs_while_main_waits, daemon=True).start()
try:
    consumer.recv(timeout=60)
    print("no interrupt")
except KeyboardInterrupt:
    print("interrupted", flush=True)
