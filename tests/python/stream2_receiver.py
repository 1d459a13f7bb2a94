"""A DECTRIS Stream V2 receiver as DECTRIS's example client (stream_v2/examples/
client.py) decodes one: a PULL socket, cbor2 with a tag hook for tag 40 (row-major
multi-dimensional array), the RFC 8746 typed arrays and the DECTRIS compression tag
56500, decompressed with DECTRIS's own `dectris-compression` package.

    stream2_receiver.py --endpoint tcp://HOST:PORT [--ramp]

Runs to the `end` message. Checks every image against the ramp (ringbuf-spec §10:
pixel i of image f is (f + i) mod 2^bits) with --ramp, and prints one JSON line: the
start message's fields, the image ids received, how many were compressed, and any
image that differed.
"""

import argparse
import json
import sys

import cbor2
import numpy as np
import zmq
from dectris.compression import decompress

TYPED = {64: "u1", 68: "u1", 65: ">u2", 69: "<u2", 66: ">u4", 70: "<u4", 81: ">f4", 85: "<f4"}
compressed = {"count": 0}


def tag_hook(tag, immutable):
    if tag.tag == 56500:
        algorithm, elem_size, encoded = tag.value
        compressed["count"] += 1
        return decompress(encoded, algorithm, elem_size=elem_size)
    if tag.tag in TYPED:
        return np.frombuffer(tag.value, dtype=TYPED[tag.tag])
    if tag.tag == 40:
        dims, contents = tag.value
        return contents.reshape(dims)
    return tag


def ramp(image_id, shape, dtype):
    n = int(np.prod(shape))
    bits = np.dtype(dtype).itemsize * 8
    if np.dtype(dtype).kind == "f":
        values = (np.arange(n, dtype=np.uint64) + image_id) % (1 << 24)
    else:
        values = (np.arange(n, dtype=np.uint64) + image_id) % (1 << bits)
    return values.astype(dtype).reshape(shape)


def plain(value):
    if isinstance(value, cbor2.CBORTag):
        return plain(value.value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--ramp", action="store_true")
    a = p.parse_args()
    socket = zmq.Context().socket(zmq.PULL)
    socket.connect(a.endpoint)
    print("connected", flush=True)
    report = {"start": None, "ids": [], "wrong": [], "starts": 0, "ends": 0}
    while True:
        message = cbor2.loads(socket.recv(), tag_hook=tag_hook)
        kind = message["type"]
        if kind == "start":
            report["starts"] += 1
            report["start"] = plain(message)
        elif kind == "image":
            image_id = message["image_id"]
            report["ids"].append(image_id)
            for channel, pixels in message["data"].items():
                if a.ramp and not np.array_equal(pixels, ramp(image_id, pixels.shape, pixels.dtype)):
                    report["wrong"].append(image_id)
            report.setdefault("user_data", plain(message.get("user_data")))
            report["series_id"] = message["series_id"]
        elif kind == "end":
            report["ends"] += 1
            break
    report["compressed"] = compressed["count"]
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    sys.exit(main())
