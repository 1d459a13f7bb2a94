#!/usr/bin/env python3
"""Reads streamd's files back with the tools scientists use (h5py + hdf5plugin,
tifffile, numpy) and checks every frame against the simulator's ramp: pixel i of frame
f holds (f + i) mod 2^bits. Independent of streamd's own code; the tests run it.

    check_files.py hdf5 MASTER [--frames N] [--compression bslz4|none] [--channels x,y]
                   [--reductions sum,max,above [--roi y,x,ny,nx] [--threshold T]]
    check_files.py tiff FOLDER [--frames N]
    check_files.py raw INDEX [--frames N]
    check_files.py swmr DATAFILE --frames N     (follows a file while it is written)
    check_files.py partial DATAFILE             (a file whose writer was killed)

Prints one JSON object with what it found; exits 1 with a message on any mismatch.
"""
import argparse
import glob
import json
import math
import os
import sys
import time

import h5py
import hdf5plugin  # noqa: F401  (registers filter 32008 with h5py)
import numpy as np
import tifffile


def fail(message):
    print(f"check_files: {message}", file=sys.stderr)
    sys.exit(1)


def ramp(frame_id, shape, dtype):
    n = int(np.prod(shape))
    if np.dtype(dtype).kind == "f":
        values = (frame_id + np.arange(n, dtype=np.float64)) % float(2**24)
        return values.astype(dtype).reshape(shape)
    bits = np.dtype(dtype).itemsize * 8
    values = (np.uint64(frame_id) + np.arange(n, dtype=np.uint64)) % np.uint64(2**bits)
    return values.astype(dtype).reshape(shape)


def check_frame(frame, frame_id, where):
    expected = ramp(int(frame_id), frame.shape, frame.dtype)
    if not np.array_equal(frame, expected):
        bad = int(np.flatnonzero(frame.ravel() != expected.ravel())[0])
        fail(f"{where}: frame {frame_id} differs from the ramp at pixel {bad}")


def metadata_value(frame_id, channel, k):
    """The simulator's value of channel k (0-based): id + (k+1)/8."""
    return frame_id + (k + 1) / 8


def text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def check_hdf5(args):
    master = h5py.File(args.path, "r")
    entry = master["entry"]
    if text(entry.attrs["NX_class"]) != "NXentry":
        fail("/entry is not an NXentry")
    if text(entry["definition"][()]) != "NXmx":
        fail("/entry/definition is not NXmx")
    if text(entry["data"].attrs["NX_class"]) != "NXdata":
        fail("/entry/data is not an NXdata")
    detector = entry["instrument/detector"]
    if text(detector.attrs["NX_class"]) != "NXdetector":
        fail("/entry/instrument/detector is not an NXdetector")
    geometry = {k: (text(v[()]) if v.dtype.kind in "SOU" else float(v[()]))
                for k, v in detector.items()
                if isinstance(v, h5py.Dataset) and v.shape == ()}
    data = entry["data/data"]
    if not data.is_virtual:
        fail("/entry/data/data is not a virtual dataset over the data files")
    files = sorted({os.path.basename(v.file_name) for v in data.virtual_sources()})
    folder = os.path.dirname(os.path.abspath(args.path))
    for name in files:
        with h5py.File(os.path.join(folder, name), "r") as data_file:
            stored = data_file["entry/data/data"]
            if args.compression == "bslz4" and "32008" not in stored._filters:
                fail(f"{name} is not bitshuffle-LZ4 compressed: {stored._filters}")
            if args.compression == "none" and stored._filters:
                fail(f"{name} has filters {stored._filters}")
            if stored.chunks != (1,) + stored.shape[1:]:
                fail(f"{name}: chunks {stored.chunks} are not one frame each")
            if len(data_file["entry/data/frame_id"]) != stored.shape[0]:
                fail(f"{name}: {stored.shape[0]} frames but {len(data_file['entry/data/frame_id'])} ids")
    ids = [int(x) for x in entry["data/frame_id"][:]]
    stamps = entry["data/timestamp_ns"][:]
    if len(ids) != data.shape[0] or len(stamps) != data.shape[0]:
        fail(f"the master shows {data.shape[0]} frames but {len(ids)} ids")
    if any(b <= a for a, b in zip(ids, ids[1:])):
        fail("the master's frames are not in increasing frame-id order")
    for k, frame_id in enumerate(ids):
        check_frame(data[k], frame_id, f"{args.path} image {k}")
    values = {name: ds[:].tolist() for name, ds in entry["metadata"].items()}
    frames = data.shape[0]
    if args.frames is not None and frames != args.frames:
        fail(f"{frames} frames in the files, expected {args.frames}")
    if args.frames is not None and sorted(ids) != list(range(args.frames)):
        fail("frame ids are not each frame exactly once")
    for k, name in enumerate(n for n in (args.channels or "").split(",") if n):
        got = values.get(name)
        if got is None:
            fail(f"no /entry/metadata/{name}")
        present = 0
        for frame_id, v in zip(ids, got):
            if not math.isnan(v):
                present += 1
                if v != metadata_value(frame_id, name, k):
                    fail(f"{name} of frame {frame_id} is {v}, expected {metadata_value(frame_id, name, k)}")
        values[name] = present
    for name in (n for n in (args.reductions or "").split(",") if n):
        got = values.get(name)
        if got is None:
            fail(f"no /entry/metadata/{name}")
        for frame_id, v in zip(ids, got):
            frame = ramp(frame_id, data.shape[1:], data.dtype).astype(np.float64)
            if args.roi:
                y, x, ny, nx = (int(n) for n in args.roi.split(","))
                frame = frame[y:y + ny, x:x + nx]
            expected = {"sum": frame.sum(), "max": frame.max(), "min": frame.min(),
                        "mean": frame.mean(), "count": frame.size,
                        "above": (frame > (args.threshold or 0)).sum()}[name]
            if not math.isclose(v, expected, rel_tol=1e-9):
                fail(f"{name} of frame {frame_id} is {v}, expected {expected}")
        values[name] = len(got)
    print(json.dumps({"frames": frames, "files": files, "geometry": geometry,
                      "dtype": str(data.dtype), "shape": list(data.shape[1:]),
                      "values": {k: v for k, v in values.items() if isinstance(v, int)}}))


def check_tiff(args):
    names = sorted(glob.glob(os.path.join(args.path, "*.tiff")))
    ids = []
    for name in names:
        with tifffile.TiffFile(name) as tif:
            page = tif.pages[0]
            frame_id = int(page.tags[65000].value)
            stamp = int(page.tags[65001].value)
            described = json.loads(page.description)
            if described["frame_id"] != frame_id or described["timestamp_ns"] != stamp:
                fail(f"{name}: tags and ImageDescription disagree")
            check_frame(page.asarray(), frame_id, name)
            for k, channel in enumerate(c for c in (args.channels or "").split(",") if c):
                v = described["attributes"].get(channel)
                if v is not None and v != metadata_value(frame_id, channel, k):
                    fail(f"{name}: {channel} is {v}")
            ids.append(frame_id)
    if args.frames is not None and sorted(ids) != list(range(args.frames)):
        fail(f"{len(ids)} TIFFs, expected frames 0..{args.frames}")
    print(json.dumps({"frames": len(ids), "ids": sorted(ids)}))


def check_raw(args):
    with open(args.path) as f:
        header = dict(item.split("=") for item in f.readline().split(":", 1)[1].split())
    dtype = {"u8": np.uint8, "u16": np.uint16, "u32": np.uint32, "f32": np.float32}[header["dtype"]]
    shape = tuple(int(d) for d in header["shape"].split("x"))
    index = np.loadtxt(args.path, delimiter=",", dtype=np.uint64, ndmin=2)
    raw = args.path[: -len(".index.csv")]
    size = os.path.getsize(raw)
    for frame_id, _stamp, offset in index:
        if offset % 4096 or offset + int(header["record_bytes"]) > size:
            fail(f"frame {frame_id} at offset {offset} is not a whole aligned record")
        frame = np.fromfile(raw, dtype=dtype, count=int(np.prod(shape)), offset=int(offset))
        check_frame(frame.reshape(shape), frame_id, raw)
    ids = sorted(int(i) for i in index[:, 0])
    if args.frames is not None and ids != list(range(args.frames)):
        fail(f"{len(ids)} frames in the index, expected 0..{args.frames}")
    print(json.dumps({"frames": len(ids), "record_bytes": int(header["record_bytes"])}))


def follow_swmr(args):
    """Follows a data file with SWMR reads until it holds --frames frames."""
    deadline = time.time() + 120
    while not os.path.exists(args.path):
        if time.time() > deadline:
            fail(f"{args.path} never appeared")
        time.sleep(0.01)
    f = h5py.File(args.path, "r", libver="latest", swmr=True)
    data, ids = f["entry/data/data"], f["entry/data/frame_id"]
    seen, checked = [], 0
    while checked < args.frames:
        if time.time() > deadline:
            fail(f"only {checked} frames appeared")
        ids.refresh()
        data.refresh()
        n = ids.shape[0]
        if data.shape[0] < n:
            fail(f"{n} frame ids but only {data.shape[0]} frames visible")
        if seen and n < seen[-1]:
            fail(f"the file shrank from {seen[-1]} to {n} frames")
        if not seen or n != seen[-1]:
            seen.append(n)
        for i in range(checked, n):
            check_frame(data[i], ids[i], args.path)
        checked = n
        time.sleep(0.02)
    print(json.dumps({"frames": checked, "sizes_seen": seen}))


def check_partial(args):
    f = h5py.File(args.path, "r", libver="latest", swmr=True)
    data, ids = f["entry/data/data"], f["entry/data/frame_id"][:]
    for i, frame_id in enumerate(ids):
        check_frame(data[i], frame_id, args.path)
    if list(ids) != list(range(len(ids))):
        fail("the frame ids of the killed writer's file are not 0..n")
    print(json.dumps({"frames": len(ids), "visible": data.shape[0]}))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["hdf5", "tiff", "raw", "swmr", "partial"])
    parser.add_argument("path")
    parser.add_argument("--frames", type=int)
    parser.add_argument("--compression", choices=["bslz4", "none"])
    parser.add_argument("--channels", help="metadata channels, in the simulator's order")
    parser.add_argument("--reductions",
                        help="reductions to recompute (sum,max,min,mean,count,above)")
    parser.add_argument("--roi", help="the region they were taken over: y,x,ny,nx")
    parser.add_argument("--threshold", type=float, help="the threshold of `above`")
    args = parser.parse_args()
    {"hdf5": check_hdf5, "tiff": check_tiff, "raw": check_raw,
     "swmr": follow_swmr, "partial": check_partial}[args.kind](args)


if __name__ == "__main__":
    main()
