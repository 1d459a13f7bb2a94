"""Rotates every frame: PvaPy's image-rotation example processor (hpcAdImageProcessorExample),
ported to a streamd Python stage.

    [[stage]]
    name = "rotate"
    processor = "python"
    input = "raw"
    output = "rotated"
    args = { file = "rotate.py", class = "Rotate", angle = 90 }

`angle` is in degrees, a multiple of 90 (counter-clockwise, as numpy.rot90), so the
rotation is exact; `streamd configure PIPELINE rotate angle=180` changes it while running.
"""

import numpy as np


class Rotate:
    def __init__(self, args):
        self.turns = self.quarter_turns(args.get("angle", 90))
        self.rotated = 0

    @staticmethod
    def quarter_turns(angle):
        if not isinstance(angle, (int, float)) or angle % 90 != 0:
            raise ValueError(f"angle must be a multiple of 90 degrees, got {angle!r}")
        return int(angle // 90) % 4

    def start(self):
        pass

    def configure(self, args):
        if "angle" in args:
            self.turns = self.quarter_turns(args["angle"])

    def process(self, frame):
        self.rotated += 1
        return np.rot90(frame.array, self.turns)

    def stop(self):
        pass

    def reset_stats(self):
        self.rotated = 0

    def get_stats(self):
        return {"rotated": self.rotated}
