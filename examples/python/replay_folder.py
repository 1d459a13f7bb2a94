"""A Python source that replays a folder of frame files (`.npy`: one frame or a stack of
frames each; `.tif`/`.tiff` through tifffile when it is installed), in name order, with
each frame's file in the attribute `file`.

    [source]
    kind = "python"
    ring = "raw"
    file = "replay_folder.py"
    class = "ReplayFolder"
    nx = 512
    ny = 512
    dtype = "u16"
    args = { folder = "frames/" }
"""

import os

import numpy as np


class ReplayFolder:
    def __init__(self, args):
        self.folder = args["folder"]
        if not os.path.isdir(self.folder):
            raise FileNotFoundError(f"folder {self.folder!r} does not exist")
        self.files = sorted(
            f for f in os.listdir(self.folder) if f.endswith((".npy", ".tif", ".tiff"))
        )
        if not self.files:
            raise FileNotFoundError(f"folder {self.folder!r} has no .npy or .tif files")

    def load(self, path):
        if path.endswith(".npy"):
            return np.load(path)
        import tifffile

        return tifffile.imread(path)

    def frames(self):
        frame_id = 0
        for name in self.files:
            data = self.load(os.path.join(self.folder, name))
            stack = data if data.ndim == 3 else data[np.newaxis]
            for image in stack:
                yield {"array": image, "id": frame_id, "attrs": {"file": name}}
                frame_id += 1
