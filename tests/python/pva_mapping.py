"""NTNDArray updates as the `pva` source turns them into frames, without a network:
p4p Values of areaDetector's NTNDArray type handed to streamd.pva.Source. For
tests/epics.rs; prints one JSON object of findings, each of which must be true."""

import json

import lz4.block
import numpy as np
from p4p import Value
from p4p.nt import NTNDArray

from streamd.pva import Source

TYPE = NTNDArray.buildType()
MEMBERS = {  # the value union's members areaDetector serves, and their dtypes
    "byteValue": np.int8, "ubyteValue": np.uint8, "shortValue": np.int16,
    "ushortValue": np.uint16, "intValue": np.int32, "uintValue": np.uint32,
    "longValue": np.int64, "ulongValue": np.uint64, "floatValue": np.float32,
    "doubleValue": np.float64,
}
SCALAR_TYPE = {np.int8: 1, np.int16: 2, np.int32: 3, np.int64: 4, np.uint8: 5,
               np.uint16: 6, np.uint32: 7, np.uint64: 8, np.float32: 9, np.float64: 10}


def update(uid, pixels, member=None, codec=None, attrs=(), seconds=1_700_000_000, ns=5):
    """An NTNDArray as an areaDetector IOC serves it: dims fastest axis first."""
    fields = {
        "uniqueId": uid,
        "dimension": [{"size": n, "offset": 0, "fullSize": n, "binning": 1, "reverse": False}
                      for n in reversed(pixels.shape)],
        "timeStamp": {"secondsPastEpoch": seconds, "nanoseconds": ns},
        "attribute": [{"name": k, "value": v} for k, v in attrs],
        "uncompressedSize": pixels.nbytes,
    }
    if codec:
        fields["value"] = ("ubyteValue", np.frombuffer(codec[1], np.uint8))
        fields["codec"] = {"name": codec[0], "parameters": SCALAR_TYPE[pixels.dtype.type]}
    else:
        fields["value"] = (member, pixels.reshape(-1))
    return Value(TYPE, fields)


def main():
    found = {}
    source = Source({"channel": "unused"})
    rng = np.random.default_rng(18)

    # Every pixel type: the union member gives the dtype; pixels are bit for bit.
    for i, (member, dtype) in enumerate(MEMBERS.items()):
        info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
        pixels = (rng.integers(info.min, info.max, (3, 5), dtype=dtype, endpoint=True)
                  if info else rng.standard_normal((3, 5)).astype(dtype))
        frame = source._frame(update(i + 1, pixels, member))
        found[f"dtype {np.dtype(dtype).name}"] = (
            frame["array"].dtype == dtype and frame["array"].shape == (3, 5)
            and np.array_equal(frame["array"], pixels))

    # Shape: areaDetector's [nx, ny] is NumPy's (ny, nx); RGB1 [3, nx, ny] is (ny, nx, 3).
    rgb = rng.integers(0, 255, (4, 6, 3), dtype=np.uint8)
    frame = source._frame(update(20, rgb, "ubyteValue"))
    found["rgb1 shape"] = frame["array"].shape == (4, 6, 3) and np.array_equal(frame["array"], rgb)

    # Timestamp, attributes (numbers and strings kept; an array cannot be one: counted).
    frame = source._frame(update(21, rgb, "ubyteValue", attrs=[
        ("ColorMode", 2), ("Exposure", 0.25), ("Detector", "Pilatus"),
        ("ROI", np.array([1, 2], dtype=np.int32))]))
    found["timestamp"] = frame["timestamp_ns"] == 1_700_000_000 * 10**9 + 5
    found["attributes"] = frame["attrs"] == {"ColorMode": 2, "Exposure": 0.25, "Detector": "Pilatus"}
    found["attribute dropped"] = source.get_stats()["attributes_dropped"] == 1

    # uniqueId: a gap is missed frames; a restart of the numbering keeps ids growing.
    frame = source._frame(update(25, rgb, "ubyteValue"))
    found["gap counted"] = frame["id"] == 25 and frame["missed"] == 3
    frame = source._frame(update(1, rgb, "ubyteValue"))
    found["restart continues the ids"] = (frame["id"] == 26 and frame["missed"] == 0
                                          and source.get_stats()["id_resets"] == 1)
    frame = source._frame(update(3, rgb, "ubyteValue"))
    found["gap after a restart"] = frame["id"] == 28 and frame["missed"] == 1

    # An empty array (an IOC before its first frame) is not a frame.
    empty = Value(TYPE, {"uniqueId": 0})
    found["empty update"] = source._frame(empty) is None

    # NDPluginCodec's lz4: decompressed bit for bit, in the type codec.parameters names.
    pixels = rng.integers(0, 4000, (16, 32), dtype=np.uint16)
    packed = lz4.block.compress(pixels.tobytes(), store_size=False)
    frame = source._frame(update(29, pixels, codec=("lz4", packed)))
    found["lz4"] = frame["array"].dtype == np.uint16 and np.array_equal(frame["array"], pixels)

    # A codec streamd cannot undo is refused with one sentence naming it.
    try:
        source._frame(update(30, pixels, codec=("jpeg", b"\xff\xd8\xff")))
        found["jpeg refused"] = False
    except ValueError as e:
        found["jpeg refused"] = "'jpeg'" in str(e) and "NDPluginCodec" in str(e)
        found["jpeg message"] = str(e)
    print(json.dumps(found))


if __name__ == "__main__":
    main()
