"""A DECTRIS Stream V2 sender written from DECTRIS's public documentation
(dectris/documentation: stream_v2/README.md and cbor/dectris-compression-tag.md), the
way a detector sends: a PUSH socket bound to an endpoint, CBOR messages (cbor2) —
`start`, one `image` per exposure, `end` — pixels as an RFC 8746 typed array in a
multi-dimensional array (tag 40), some compressed under tag 56500 with the `bitshuffle`
package (bslz4, HDF5 filter framing) or with lz4 (HDF5 LZ4 filter framing).

Frames are the `ramp` of ringbuf-spec §10: pixel i of image f is (f + i) mod 2^16.

    stream2_sender.py --endpoint tcp://*:PORT --frames N [--nx 256 --ny 256]
        [--skip 97] [--bslz4-every 3] [--lz4-every 7] [--big-endian-every 5]
        [--bad malformed,dtype,oversized,truncated,type] [--vanish-after K]

--skip K leaves out every image id that is K-1 modulo K (a deliberate gap). --bad sends
broken messages after the first images. --vanish-after K exits (without `end`) after K
images, as a sender that dies mid-series. Prints one JSON line: what it sent.
"""

import argparse
import json
import struct
import sys
import time

import bitshuffle
import cbor2
import numpy as np
import zmq

SERIES_ID = 42
GEOMETRY = {
    "beam_center_x": 123.5,
    "beam_center_y": 140.25,
    "pixel_size_x": 7.5e-05,
    "pixel_size_y": 7.5e-05,
    "incident_energy": 12398.419843320026,  # 1 Å
    "incident_wavelength": 1.0,
    "detector_translation": [0.0, 0.0, 0.2345],
    "sensor_material": "CdTe",
    "sensor_thickness": 0.00075,
    "saturation_value": 60000,
    "count_time": 0.0009,
    "frame_time": 0.001,
    "goniometer": {"omega": {"increment": 0.1, "start": 10.0}},
    "detector_description": "Test EIGER2 XE 1M",
    "detector_serial_number": "E-32-0123",
    "number_of_images": 0,  # set from --frames
    "threshold_energy": {"threshold_1": 6000.0},
}


def ramp(image_id, ny, nx):
    return ((np.arange(ny * nx, dtype=np.uint64) + image_id) % 65536).astype("<u2").reshape(ny, nx)


def bslz4(array):
    """The bitshuffle HDF5 filter's framing: u64 BE size, u32 BE block bytes, blocks."""
    elem = array.dtype.itemsize
    block = 8192 // elem
    body = bitshuffle.compress_lz4(np.ascontiguousarray(array).ravel(), block)
    return struct.pack(">QI", array.nbytes, block * elem) + body.tobytes()


def lz4_literal_block(data):
    """One LZ4 block (lz4_Block_format.md) holding `data` as literals only."""
    n = len(data)
    if n < 15:
        return bytes([n << 4]) + data
    extra = n - 15
    return bytes([0xF0]) + b"\xff" * (extra // 255) + bytes([extra % 255]) + data


def lz4_hdf5(raw, block=8192):
    """The HDF5 LZ4 filter's framing: u64 BE size, u32 BE block size, then per block
    u32 BE compressed length and the LZ4 block."""
    out = [struct.pack(">QI", len(raw), block)]
    for at in range(0, len(raw), block):
        packed = lz4_literal_block(raw[at : at + block])
        out.append(struct.pack(">I", len(packed)) + packed)
    return b"".join(out)


def image_message(image_id, ny, nx, how, big_endian, date):
    pixels = ramp(image_id, ny, nx)
    if big_endian:
        pixels = pixels.astype(">u2")
    tag = 65 if big_endian else 69
    if how == "bslz4":
        payload = cbor2.CBORTag(56500, ["bslz4", 2, bslz4(pixels)])
    elif how == "lz4":
        payload = cbor2.CBORTag(56500, ["lz4", 0, lz4_hdf5(pixels.tobytes())])
    else:
        payload = pixels.tobytes()
    return {
        "type": "image",
        "series_id": SERIES_ID,
        "series_unique_id": "series-42",
        "image_id": image_id,
        "real_time": [900, 1_000_000],
        "series_date": cbor2.CBORTag(0, date),
        "start_time": [image_id * 1000, 1_000_000],
        "stop_time": [image_id * 1000 + 900, 1_000_000],
        "user_data": {"shot": image_id, "note": "ok"},
        "data": {"threshold_1": cbor2.CBORTag(40, [[ny, nx], cbor2.CBORTag(tag, payload)])},
    }


def bad_messages(ny, nx, date):
    """Broken messages, by the kind streamd counts them under."""
    good = cbor2.dumps(image_message(1, ny, nx, "plain", False, date))
    wrong_dtype = image_message(1, ny, nx, "plain", False, date)
    # int16, little-endian (RFC 8746 tag 77): not a pixel type streamd takes.
    wrong_dtype["data"]["threshold_1"].value[1] = cbor2.CBORTag(77, b"\0" * (ny * nx * 2))
    oversized = image_message(1, ny * 4, nx * 4, "plain", False, date)
    return {
        "malformed": b"\xa2\x64type\x65image\xff\xff",  # a map whose value is a break
        "dtype": cbor2.dumps(wrong_dtype),
        "oversized": cbor2.dumps(oversized),
        "truncated": good[: len(good) // 2],
        "type": cbor2.dumps({"type": "calibration", "series_id": SERIES_ID}),
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--frames", type=int, required=True)
    p.add_argument("--nx", type=int, default=256)
    p.add_argument("--ny", type=int, default=256)
    p.add_argument("--skip", type=int, default=0)
    p.add_argument("--bslz4-every", type=int, default=0)
    p.add_argument("--lz4-every", type=int, default=0)
    p.add_argument("--big-endian-every", type=int, default=0)
    p.add_argument("--bad", default="")
    p.add_argument("--vanish-after", type=int, default=0)
    a = p.parse_args()

    context = zmq.Context()
    socket = context.socket(zmq.PUSH)
    socket.bind(a.endpoint)
    date = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    start = dict(GEOMETRY)
    start.update(
        {
            "type": "start",
            "series_id": SERIES_ID,
            "series_unique_id": "series-42",
            "arm_date": cbor2.CBORTag(0, date),
            "channels": ["threshold_1"],
            "image_dtype": "uint16",
            "image_size_x": a.nx,
            "image_size_y": a.ny,
            "number_of_images": a.frames,
            "user_data": {"sample": "lysozyme", "run": 7},
        }
    )
    # A blocking send waits for the first receiver, as a detector's stream does.
    socket.send(cbor2.dumps(start))
    sent = {"images": 0, "skipped": 0, "bslz4": 0, "lz4": 0, "big_endian": 0, "bad": 0}
    bad = [b for b in a.bad.split(",") if b]
    for image_id in range(a.frames):
        if a.skip and image_id % a.skip == a.skip - 1:
            sent["skipped"] += 1
            continue
        how = "plain"
        if a.bslz4_every and image_id % a.bslz4_every == 0:
            how = "bslz4"
        elif a.lz4_every and image_id % a.lz4_every == 0:
            how = "lz4"
        big = bool(a.big_endian_every and image_id % a.big_endian_every == 1)
        socket.send(cbor2.dumps(image_message(image_id, a.ny, a.nx, how, big, date)))
        sent["images"] += 1
        if how != "plain":
            sent[how] += 1
        sent["big_endian"] += int(big)
        if sent["images"] == 3 and bad:
            messages = bad_messages(a.ny, a.nx, date)
            for kind in bad:
                socket.send(messages[kind])
                sent["bad"] += 1
        if a.vanish_after and sent["images"] == a.vanish_after:
            # Gone without an end: close at once, dropping nothing already sent.
            socket.close(linger=5000)
            context.term()
            print(json.dumps(sent), flush=True)
            return
    socket.send(cbor2.dumps({"type": "end", "series_id": SERIES_ID, "series_unique_id": "series-42"}))
    socket.close(linger=30000)
    context.term()
    print(json.dumps(sent), flush=True)


if __name__ == "__main__":
    sys.exit(main())
