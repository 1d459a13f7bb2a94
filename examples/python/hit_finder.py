"""A hit finder: passes on only the frames with more than `min_pixels` pixels above
`threshold`, tagged with the count (attribute `hit_pixels`), and counts hits and misses.

    [[stage]]
    name = "hits"
    processor = "python"
    input = "raw"
    output = "hits"
    args = { file = "hit_finder.py", class = "HitFinder", threshold = 1000, min_pixels = 50 }
"""

import numpy as np


class HitFinder:
    def __init__(self, args):
        self.threshold = 0
        self.min_pixels = 0
        self.configure({"threshold": args.get("threshold", 100), "min_pixels": args.get("min_pixels", 10)})
        self.hits = 0
        self.misses = 0

    def configure(self, args):
        threshold = args.get("threshold", self.threshold)
        min_pixels = args.get("min_pixels", self.min_pixels)
        if not isinstance(min_pixels, int) or min_pixels < 0:
            raise ValueError(f"min_pixels must be a whole number from 0 up, got {min_pixels!r}")
        if not isinstance(threshold, (int, float)):
            raise ValueError(f"threshold must be a number, got {threshold!r}")
        self.threshold, self.min_pixels = threshold, min_pixels

    def process(self, frame):
        above = int(np.count_nonzero(frame.array > self.threshold))
        if above <= self.min_pixels:
            self.misses += 1
            return None
        self.hits += 1
        return frame.array, {"hit_pixels": above}

    def reset_stats(self):
        self.hits = self.misses = 0

    def get_stats(self):
        return {"hits": self.hits, "misses": self.misses}
