"""A Python stage for tests/epics.rs: checks every frame bit for bit against the .npy
stack PvaPy's simulator serves (uniqueId u carries frame (u - 1) mod frames), records
the frame ids it saw, and can be made slow on purpose (delay_ms per frame)."""

import time

import numpy as np


class NpyCheck:
    def __init__(self, args):
        self.stack = np.load(args["npy"])
        self.ids_file = args["ids_file"]
        self.delay = float(args.get("delay_ms", 0)) / 1000.0
        self.first_uid = int(args.get("first_uid", 1))
        self.ids = []
        self.exact = 0
        self.wrong = 0

    def process(self, frame):
        expected = self.stack[(frame.id - self.first_uid) % len(self.stack)]
        if frame.array.dtype == expected.dtype and np.array_equal(frame.array, expected):
            self.exact += 1
        else:
            self.wrong += 1
        self.ids.append(frame.id)
        if self.delay:
            time.sleep(self.delay)  # the slow stage the test asks for, not a wait

    def get_stats(self):
        return {"exact": self.exact, "wrong": self.wrong}

    def stop(self):
        with open(self.ids_file, "w") as f:
            f.writelines(f"{i}\n" for i in self.ids)
