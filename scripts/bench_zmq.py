"""Stream V2 receive rates (issue 17), driven by scripts/bench-zmq.

For each frame size (1024² and 4096² u16) and pixel encoding (plain, bslz4), one sender
(pyzmq, a PUSH socket, the same pre-encoded Stream V2 image messages each time) feeds in
turn, in the same run:

  ceiling  a plain ZeroMQ PULL receiver that drops each message (benches/zmq_ceiling.rs):
           the transport's ceiling
  streamd  a `streamd run` pipeline: zmq source → ring → a verify stage that only reads
           headers; the rate is the source's frames over its span (first to last frame)
  pyzmq    a Python receiver as DECTRIS's example client decodes (cbor2 with a tag hook,
           NumPy views, dectris-compression for bslz4)

over loopback and, as root, over a veth link between two network namespaces. Frames are
Poisson(2) counts (a diffraction-like image; bslz4 packs them about 4:1). Each rate is the
median of RUNS runs. Prints a Markdown table; writes target/bench-zmq.jsonl.

    python3 scripts/bench_zmq.py [--quick]
    python3 scripts/bench_zmq.py send ENDPOINT COUNT NY NX COMPRESSION
    python3 scripts/bench_zmq.py receive ENDPOINT COUNT
"""

import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = os.path.join(ROOT, ".venv/bin/python")
STREAMD = os.path.join(ROOT, "target/release/streamd")
PORT = 31500 + os.getpid() % 400


def cbor_head(major, n):
    """A CBOR item head (RFC 8949 §3) for major type `major` and argument `n`."""
    if n < 24:
        return bytes([major << 5 | n])
    for info, fmt in ((24, ">B"), (25, ">H"), (26, ">I"), (27, ">Q")):
        if n < 1 << (8 * struct.calcsize(fmt)):
            return bytes([major << 5 | info]) + struct.pack(fmt, n)
    raise ValueError(n)


def text(s):
    b = s.encode()
    return cbor_head(3, len(b)) + b


def send(endpoint, count, ny, nx, compression):
    import numpy as np
    import zmq

    frame = np.random.default_rng(7).poisson(2.0, ny * nx).astype("<u2")
    if compression == "bslz4":
        import bitshuffle

        body = bitshuffle.compress_lz4(frame, 4096).tobytes()
        payload = cbor_head(6, 56500) + cbor_head(4, 3) + text("bslz4") + cbor_head(0, 2)
        payload += cbor_head(2, 12 + len(body)) + struct.pack(">QI", frame.nbytes, 8192) + body
    else:
        payload = cbor_head(2, frame.nbytes) + frame.tobytes()
    # {"type": "image", "series_id": 1, "image_id": ID (8 bytes), "data": {...}}
    head = cbor_head(5, 4) + text("type") + text("image") + text("series_id") + cbor_head(0, 1)
    head += text("image_id") + bytes([0x1B])
    tail = text("data") + cbor_head(5, 1) + text("threshold_1")
    tail += cbor_head(6, 40) + cbor_head(4, 2) + cbor_head(4, 2) + cbor_head(0, ny) + cbor_head(0, nx)
    tail += cbor_head(6, 69) + payload
    context = zmq.Context()
    socket = context.socket(zmq.PUSH)
    socket.setsockopt(zmq.SNDHWM, 4)
    socket.bind(endpoint)
    for image_id in range(count):
        socket.send(head + struct.pack(">Q", image_id) + tail, copy=False)
    socket.close(linger=-1)
    context.term()


def receive(endpoint, count):
    import cbor2
    import numpy as np
    import zmq
    from dectris.compression import decompress

    def tag_hook(tag, immutable):
        if tag.tag == 56500:
            algorithm, elem_size, encoded = tag.value
            return decompress(encoded, algorithm, elem_size=elem_size)
        if tag.tag == 69:
            return np.frombuffer(tag.value, dtype="<u2")
        if tag.tag == 40:
            dims, contents = tag.value
            return contents.reshape(dims)
        return tag

    socket = zmq.Context().socket(zmq.PULL)
    socket.setsockopt(zmq.RCVHWM, 32)
    socket.connect(endpoint)
    first = None
    for _ in range(count):
        message = cbor2.loads(socket.recv(copy=False).buffer, tag_hook=tag_hook)
        assert message["data"]["threshold_1"].ndim == 2
        if first is None:
            first = time.perf_counter()
    seconds = time.perf_counter() - first
    print(json.dumps({"fps": (count - 1) / seconds, "seconds": seconds}))


def ceiling_binary():
    out = subprocess.run(
        ["cargo", "bench", "--bench", "zmq_ceiling", "--no-run"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stderr
    for line in out.splitlines():
        if "zmq_ceiling" in line and "(" in line:
            return os.path.join(ROOT, line.split("(")[1].rstrip(")"))
    raise SystemExit("cargo did not name the zmq_ceiling bench binary")


def in_ns(ns, argv):
    return (["ip", "netns", "exec", ns] if ns else []) + argv


def run_streamd(ns, endpoint, count, ny, nx, work):
    slots = max(4, min(64, (512 << 20) // (ny * nx * 2)))
    name = f"bz{os.getpid() % 100000}"
    path = os.path.join(work, "bench.toml")
    with open(path, "w") as f:
        f.write(
            f"""name = "{name}"
[[ring]]
name = "raw"
slots = {slots}
[source]
kind = "zmq"
ring = "raw"
endpoint = "{endpoint}"
nx = {nx}
ny = {ny}
dtype = "u16"
frames = {count}
[[stage]]
name = "read"
processor = "verify"
input = "raw"
args = {{ pattern = "none" }}
"""
        )
    return subprocess.Popen(in_ns(ns, [STREAMD, "run", path, "--json"]), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, cwd=work)


def streamd_rate(out):
    report = json.loads(out.strip().splitlines()[-1])
    src = report["stages"][0]["workers"][0]
    return (src["frames_out"] - 1) / (src["span_us"] / 1e6)


def one(kind, link, count, ny, nx, compression, ceiling, work):
    recv_ns, send_ns = (None, None) if link == "loopback" else (NS[1], NS[0])
    host = "127.0.0.1" if link == "loopback" else "10.78.1.1"
    endpoint = f"tcp://{host}:{PORT}"
    if kind == "ceiling":
        receiver = subprocess.Popen(in_ns(recv_ns, [ceiling, endpoint, str(count)]), stdout=subprocess.PIPE, text=True)
    elif kind == "pyzmq":
        receiver = subprocess.Popen(in_ns(recv_ns, [PY, __file__, "receive", endpoint, str(count)]), stdout=subprocess.PIPE, text=True)
    else:
        receiver = run_streamd(recv_ns, endpoint, count, ny, nx, work)
    bind = f"tcp://{'127.0.0.1' if link == 'loopback' else '*'}:{PORT}"
    sender = subprocess.Popen(in_ns(send_ns, [PY, __file__, "send", bind, str(count), str(ny), str(nx), compression]))
    out, _ = receiver.communicate(timeout=600)
    sender.wait(timeout=600)
    if kind == "streamd":
        return streamd_rate(out)
    return json.loads(out.strip().splitlines()[-1])["fps"]


NS = [f"bzA{os.getpid()}", f"bzB{os.getpid()}"]


def make_link():
    subprocess.run(["ip", "netns", "add", NS[0]], check=True)
    subprocess.run(["ip", "netns", "add", NS[1]], check=True)
    va, vb = f"bza{os.getpid() % 100000}", f"bzb{os.getpid() % 100000}"
    for cmd in (
        ["ip", "link", "add", va, "netns", NS[0], "type", "veth", "peer", "name", vb, "netns", NS[1]],
        ["ip", "-n", NS[0], "addr", "add", "10.78.1.1/24", "dev", va],
        ["ip", "-n", NS[1], "addr", "add", "10.78.1.2/24", "dev", vb],
        ["ip", "-n", NS[0], "link", "set", va, "up"],
        ["ip", "-n", NS[1], "link", "set", vb, "up"],
        ["ip", "-n", NS[0], "link", "set", "lo", "up"],
        ["ip", "-n", NS[1], "link", "set", "lo", "up"],
    ):
        subprocess.run(cmd, check=True)


def drop_link():
    for ns in NS:
        subprocess.run(["ip", "netns", "delete", ns], stderr=subprocess.DEVNULL)


def main():
    quick = "--quick" in sys.argv
    runs = 1 if quick else 3
    ceiling = ceiling_binary()
    links = ["loopback"]
    if os.geteuid() == 0:
        make_link()
        links.append("veth")
    else:
        print("not root: the veth rows are left out", file=sys.stderr)
    rows = []
    out = open(os.path.join(ROOT, "target/bench-zmq.jsonl"), "w")
    try:
        with tempfile.TemporaryDirectory() as work:
            for ny, nx, count in ((1024, 1024, 200 if quick else 600), (4096, 4096, 15 if quick else 40)):
                for compression in ("none", "bslz4"):
                    for link in links:
                        rates = {"ceiling": [], "streamd": [], "pyzmq": []}
                        for _ in range(runs):
                            for kind in rates:
                                rates[kind].append(one(kind, link, count, ny, nx, compression, ceiling, work))
                        row = {k: statistics.median(v) for k, v in rates.items()}
                        row.update(frame=f"{ny}x{nx} u16", compression=compression, link=link, runs=runs, frames=count)
                        out.write(json.dumps(row) + "\n")
                        out.flush()
                        rows.append(row)
                        print(f"{row['frame']} {compression} {link}: ceiling {row['ceiling']:.0f}/s streamd {row['streamd']:.0f}/s pyzmq {row['pyzmq']:.0f}/s", file=sys.stderr)
    finally:
        if os.geteuid() == 0:
            drop_link()
    print("| frame | pixels | link | ceiling (PULL, drop) | streamd zmq source → ring | pyzmq + cbor2 (DECTRIS client) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        mb = int(r["frame"].split("x")[0]) * int(r["frame"].split("x")[1].split()[0]) * 2 / 1e6
        cell = lambda k: f"{r[k]:.0f} fr/s, {r[k] * mb / 1000:.2f} GB/s"
        print(
            f"| {r['frame']} | {r['compression']} | {r['link']} | {cell('ceiling')} "
            f"| {cell('streamd')} ({100 * r['streamd'] / r['ceiling']:.0f} %) "
            f"| {cell('pyzmq')} ({100 * r['pyzmq'] / r['ceiling']:.0f} %) |"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "send":
        send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
    elif len(sys.argv) > 1 and sys.argv[1] == "receive":
        receive(sys.argv[2], int(sys.argv[3]))
    else:
        main()
