#!/usr/bin/env python3
"""The throughput ladder behind scripts/bench-table and scripts/bench-pvapy.

For each frame size (u8 frames, 512² to 4096²) and consumer count, the highest frame
rate a simulated detector can hold for a fixed time with zero frames missed, found by
search. A rung is one run at one rate (a rung that fails is run once more: it fails only
when it fails twice, so one hiccup of a shared machine does not decide it); it passes
only when the source published every frame at that rate (a detector cannot wait: streamd's source ring uses the
`drop-newest` policy, so a consumer that falls behind makes frames go unpublished and
counted) and every consumer took its share with nothing missed. Rates come from one
grid (the E12 series, steps of about 20 %), so two runs that agree land on the same
values and "within noise" means within one step.

    ladder.py streamd --out FILE [--quick] [--seconds S]   rings, metadata, writers
    ladder.py pvapy --out FILE [--quick] [--seconds S] --python VENV/bin/python
    ladder.py python --out FILE [--quick] [--seconds S] --python VENV/bin/python
                     a Python passthrough stage (.venv) beside PvaPy's consumer (VENV)
    ladder.py table RESULT.json                             Markdown
    ladder.py compare A.json B.json                         two runs, rung by rung

Standard library only; the streamd binary is target/release/streamd.
"""
import argparse
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STREAMD = os.path.join(ROOT, "target", "release", "streamd")
# The interpreter of Python stages: the project's venv, where scripts/install-deps puts
# the streamd package.
STAGE_PYTHON = os.path.join(ROOT, ".venv", "bin", "python")
SIZES = [512, 1024, 2048, 4096]
E12 = [1.0, 1.2, 1.5, 1.8, 2.2, 2.7, 3.3, 3.9, 4.7, 5.6, 6.8, 8.2]
# PvaPy's own results (seeds/004: 96-core Xeon, 60 s runs), frames/s by (size, consumers).
PVAPY_PUBLISHED = {(512, 1): 10000, (1024, 1): 3200, (2048, 1): 700, (4096, 1): 150,
                   (512, 4): 20000, (1024, 4): 10000, (2048, 4): 2600, (4096, 4): 600}


def grid(i):
    """Rate number i of the grid: E12 values over the decades, 1 frame/s at i = 0."""
    return round(E12[i % 12] * 10 ** (i // 12), 6)


def grid_index(rate):
    return max(0, round(12 * math.log10(max(rate, 1.0))))


def search(test, guess, log):
    """The highest grid rate that passes `test` (which returns pass or fail and what
    failed), starting at `guess`: bracket in steps of two grid values (about ×1.45),
    then bisect. Returns the rate and what failed one step above it."""
    tried = {}

    def run(i):
        if i not in tried:
            tried[i] = test(grid(i))
            if not tried[i][0]:
                # A shared machine has hiccups: a rung fails only when it fails twice.
                tried[i] = test(grid(i))
            ok, why = tried[i]
            log(f"    {grid(i):>10g} frames/s: {'pass' if ok else 'FAIL: ' + why}")
        return tried[i][0]

    step = 2
    lo = hi = grid_index(guess)
    if run(lo):
        while run(hi + step):
            hi += step
        lo, hi = hi, hi + step
    else:
        while lo > 0 and not run(max(0, lo - step)):
            lo = max(0, lo - step)
        if lo == 0 or not run(max(0, lo - step)):
            return 0, tried[lo][1]
        lo, hi = max(0, lo - step), lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if run(mid):
            lo = mid
        else:
            hi = mid
    return grid(lo), tried[hi][1]


def sh(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, **kw)


def last_json(text):
    lines = [l for l in text.strip().splitlines() if l.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def memcpy_mb_per_s(frame_bytes):
    out = sh(["cargo", "bench", "--quiet", "--bench", "memcpy_ceiling", "--", str(frame_bytes), "2"], cwd=ROOT)
    return last_json(out.stdout)["memcpy_mb_per_s"]


def direct_write_mb_per_s(folder, megabytes):
    """The filesystem's O_DIRECT sequential write bandwidth (dd, 8 MiB blocks)."""
    path = os.path.join(folder, "dd-ceiling.bin")
    out = sh(["dd", "if=/dev/zero", f"of={path}", "bs=8M", f"count={max(1, megabytes // 8)}",
              "oflag=direct", "conv=fdatasync"])
    os.remove(path)
    words = out.stderr.strip().splitlines()[-1].split()
    return int(words[0]) / float(words[words.index("s,") - 1]) / 1e6


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = next((int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
    return {"cores": os.cpu_count(), "cpu": cpu, "memory_gib": round(mem / 2**20, 1),
            "kernel": platform.release(), "date": time.strftime("%Y-%m-%d")}


# ---- streamd rungs ------------------------------------------------------------------

# Ring slots per frame size: PvaPy's server queue sizes in its own throughput tables.
QUEUE = {512: 1000, 1024: 500, 2048: 200, 4096: 100}

# How long after the source's last frame the last consumer may finish, as a share of
# the rung's time: what the ring absorbs must be jitter, not a backlog.
CATCH_UP = 0.05


def streamd_rung(size, consumers, rate, seconds, tag):
    """`streamd sim` at `rate` with drop-newest, `consumers` × `streamd consume --read`
    (a group, one frame per turn, when more than one)."""
    ring = f"ladder{os.getpid()}-{tag}"
    group = ["--group", "ladder", "--batch", "1"] if consumers > 1 else []
    readers = [subprocess.Popen([STREAMD, "consume", "--ring", ring, "--read", "--json",
                                 "--attach-timeout", "30", *group],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(consumers)]
    sim = sh([STREAMD, "sim", "--ring", ring, "--nx", str(size), "--ny", str(size), "--dtype", "u8",
              "--fps", str(rate), "--runtime", str(seconds), "--policy", "drop-newest",
              "--slots", str(QUEUE[size]), "--wait-consumers", str(consumers), "--json"])
    outputs = [r.communicate(timeout=seconds + 120) for r in readers]
    results = [last_json(out) for out, _ in outputs]
    produced = last_json(sim.stdout)
    if produced is None or any(r is None for r in results):
        raise RuntimeError(f"a rung did not report: {sim.stderr} {[err for _, err in outputs]}")
    received = sum(r["received"] for r in results)
    missed = sum(r["missed"] for r in results)
    if produced["published"] + produced["dropped"] < 0.98 * rate * seconds:
        return False, "producer"
    if produced["dropped"] or missed or received != produced["published"]:
        return False, "consumers"
    # Each consumer's time from its first frame to the end of the stream.
    if any(r["received"] / r["fps"] > seconds * (1 + CATCH_UP) for r in results if r["fps"] > 0):
        return False, "consumers"
    return True, ""


def pipeline_text(name, size, rate, frames, consumers, kind, folder):
    """A pipeline: source at `rate` into a drop-newest ring, then `kind` with
    `consumers` workers (metadata: 6 channels; a writer: hdf5/bslz4/tiff)."""
    text = f"""name = "{name}"
[[ring]]
name = "raw"
slots = {QUEUE[size]}
full_policy = "drop-newest"
"""
    if kind == "metadata":
        text += """[[ring]]
name = "meta"
slots = 8192
full_policy = "drop-newest"
"""
    text += f"""[source]
ring = "raw"
nx = {size}
ny = {size}
dtype = "u8"
fps = {rate}
frames = {frames}
"""
    if kind == "metadata":
        text += 'metadata = { ring = "meta", channels = "a,b,c,d,e,f" }\n'
    text += f"""[[stage]]
name = "work"
input = "raw"
workers = {consumers}
batch = 1
"""
    if kind == "metadata":
        text += 'processor = "metadata"\nmetadata = "meta"\nargs = { channels = ["a", "b", "c", "d", "e", "f"], tolerance_us = 100 }\n'
    elif kind == "python":
        text += (f'processor = "python"\nargs = {{ python = "{STAGE_PYTHON}", '
                 f'file = "{os.path.join(ROOT, "scripts", "python_passthrough.py")}", class = "Passthrough" }}\n')
    else:
        compression = {"hdf5": "none", "hdf5-bslz4": "bslz4"}.get(kind)
        template = "{prefix}_w{worker}_{file:06}.h5" if compression else "{prefix}_w{worker}_{frame_id:06}.tiff"
        processor = "hdf5" if compression else "tiff"
        extra = f', compression = "{compression}"' if compression else ""
        text += f'processor = "{processor}"\nargs = {{ folder = "{folder}", prefix = "l", template = "{template}"{extra} }}\n'
    return text


def pipeline_rung(size, consumers, rate, seconds, kind, scratch, tag):
    frames = max(1, round(rate * seconds))
    name = f"lad{os.getpid() % 10000}{tag}"[:16]
    folder = os.path.join(scratch, "files")
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    path = os.path.join(scratch, "rung.toml")
    with open(path, "w") as f:
        f.write(pipeline_text(name, size, rate, frames, consumers, kind, folder))
    out = sh([STREAMD, "run", path, "--output", scratch, "--json"])
    shutil.rmtree(folder, ignore_errors=True)
    report = last_json(out.stdout)
    if report is None:
        raise RuntimeError(f"streamd run reported nothing: {out.stderr}")
    stages = {s["name"]: s for s in report["stages"]}
    work = stages["work"]
    source = stages["source"]
    ring_dropped = sum(r["dropped"] for r in report["rings"])
    # The rate the source held: its frames over the time from its first publication
    # to its last.
    span = source["workers"][0]["span_us"] / 1e6
    if frames > 1 and (span <= 0 or (frames - 1) / span < 0.98 * rate):
        return False, "producer"
    behind = max(w["span_us"] for w in work["workers"]) / 1e6 > span + CATCH_UP * seconds
    if (out.returncode != 0 or ring_dropped or work["missed"] or work["errors"] or behind
            or work["frames_in"] != frames or source["frames_out"] != frames):
        return False, {"metadata": "consumers", "python": "stage"}.get(kind, "writer")
    counters = [w["counters"] for w in work["workers"]]
    if kind == "metadata":
        matched = sum(c.get("a.matched", 0) for c in counters)
        unmatched = sum(c.get(f"{ch}.unmatched", 0) for c in counters for ch in "abcdef")
        if matched != frames or unmatched or source["workers"][0]["counters"].get("metadata_dropped", 1):
            return False, "metadata"
    elif kind != "python" and any(c.get("frames_not_written", 1) for c in counters):
        return False, "disk"
    return True, ""


def rings_ladder(sizes, counts, seconds, memcpy, log, tag):
    """Rows of the rings ladder; each cell's search starts from its neighbour's result."""
    rows = []
    for size in sizes:
        guess = memcpy[str(size)] * 1e6 / (size * size) * 0.6
        for consumers in counts:
            log(f"  {size}², rings, {consumers} consumer(s)")
            rate, limit = search(lambda f: streamd_rung(size, consumers, f, seconds, next(tag)), guess, log)
            rows.append({"size": size, "consumers": consumers, "fps": rate, "limit": limit})
            guess = rate or guess
    return rows


def run_streamd(args):
    log = lambda m: print(m, file=sys.stderr, flush=True)
    seconds = args.seconds or (1.5 if args.quick else 10.0)
    counts = [1, 2, 4]
    result = {"machine": machine(), "mode": "quick" if args.quick else "full", "seconds": seconds,
              "memcpy_mb_per_s": {}, "rings": [], "metadata": [], "writers": []}
    scratch = tempfile.mkdtemp(prefix="ladder-", dir=os.path.join(ROOT, "target"))
    tag = iter(range(10**6))
    for size in SIZES:
        result["memcpy_mb_per_s"][str(size)] = memcpy_mb_per_s(size * size)
        log(f"{size}²: memcpy {result['memcpy_mb_per_s'][str(size)]:.0f} MB/s")
    result["rings"] = rings_ladder(SIZES, counts, seconds, result["memcpy_mb_per_s"], log, tag)
    guess = 16000
    for size in SIZES:
        guess = guess * (512 / size) ** 2 if size == 512 else guess / 4
        for consumers in [1] if args.quick else counts:
            log(f"  {size}², metadata (6 channels), {consumers} consumer(s)")
            rate, limit = search(lambda f: pipeline_rung(size, consumers, f, seconds, "metadata", scratch, next(tag)), guess, log)
            result["metadata"].append({"size": size, "consumers": consumers, "fps": rate, "limit": limit})
            guess = rate or guess
    disk = direct_write_mb_per_s(scratch, 2048 if args.quick else 8192)
    result["direct_write_mb_per_s"] = disk
    log(f"disk: O_DIRECT {disk:.0f} MB/s")
    for kind, share in [("hdf5", 0.8), ("hdf5-bslz4", 1.5), ("tiff", 0.3)]:
        for size in [1024, 4096] if args.quick else SIZES:
            guess = disk * 1e6 / (size * size) * share
            for consumers in [1] if args.quick else counts:
                log(f"  {size}², {kind}, {consumers} writer(s)")
                rate, limit = search(lambda f: pipeline_rung(size, consumers, f, seconds, kind, scratch, next(tag)), guess, log)
                result["writers"].append({"size": size, "consumers": consumers, "writer": kind, "fps": rate, "limit": limit})
                guess = rate or guess
    shutil.rmtree(scratch, ignore_errors=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


# ---- PvaPy rungs --------------------------------------------------------------------

def pvapy_rung(python, size, consumers, rate, seconds, tag):
    """PvaPy's own test (seeds/004 "Throughput Tests"): pvapy-ad-sim-server at `rate`
    and pvapy-hpc-consumer with the base UserDataProcessor; a rung passes when the
    server held the rate and the consumers processed every published frame, with no
    frame missed, overrun or rejected (their counters)."""
    bin_dir = os.path.dirname(python)
    channel = f"ladder:{os.getpid()}:{tag}"
    queue = {512: 1000, 1024: 500, 2048: 200, 4096: 100}[size]
    # The server generates its frames, then waits this long before publishing: time
    # for the consumers to start and connect.
    start_delay = 3.0
    server = subprocess.Popen(
        [os.path.join(bin_dir, "pvapy-ad-sim-server"), "-cn", channel, "-nf", "20", "-dt", "uint8",
         "-rt", str(seconds), "-nx", str(size), "-ny", str(size), "-fps", f"{rate:g}",
         "-rp", str(max(1, round(rate))),
         "-std", str(start_delay), "-shd", "0.5", "-dc"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    served = ""
    for line in server.stdout:
        served += line
        if line.startswith("Expected data rate"):
            break
    distribution = ["--distributor-updates", "1"] if consumers > 1 else []
    consumer = sh([os.path.join(bin_dir, "pvapy-hpc-consumer"), "--input-channel", channel,
                   "--processor-class", "pvapy.hpc.userDataProcessor.UserDataProcessor",
                   "--report-period", "1000", "--server-queue-size", str(queue),
                   "--n-consumers", str(consumers), "--runtime", str(start_delay + seconds + 1.5),
                   "--disable-curses", *distribution], timeout=seconds + 120)
    served += server.communicate(timeout=seconds + 120)[0]
    published = re.search(r"Published frames:\s+(\d+)\s+@\s+([\d.]+) fps", served)
    if not published:
        raise RuntimeError(f"pvapy-ad-sim-server did not report: {served[-500:]}")
    frames, achieved = int(published.group(1)), float(published.group(2))
    # The consumer prints each consumer's statistics; the last block of each counts.
    finals = {}
    for m in re.finditer(r"'consumerId': (\d+),(.*?)'userStats'", consumer.stdout, re.S):
        text = m.group(2)
        get = lambda key: int(re.search(rf"'{key}': (\d+)", text).group(1)) if re.search(rf"'{key}': (\d+)", text) else 0
        finals[m.group(1)] = (get("nProcessed"), get("nMissed"), get("nOverruns"), get("nRejected"))
    processed = sum(v[0] for v in finals.values())
    lost = sum(v[1] + v[2] + v[3] for v in finals.values())
    if os.environ.get("LADDER_DEBUG"):
        print(f"      PvaPy {size}² at {rate}: served {frames} at {achieved} fps; consumers "
              f"(processed, missed, overruns, rejected) {finals}", file=sys.stderr)
    if achieved < 0.98 * rate:
        return False, "producer"
    if len(finals) != consumers or lost or processed < frames:
        return False, "consumers"
    return True, ""


def run_pvapy(args):
    """PvaPy's ladder and, in the same run, streamd's for the same cells."""
    log = lambda m: print(m, file=sys.stderr, flush=True)
    seconds = args.seconds or (3.0 if args.quick else 60.0)
    counts = [1] if args.quick else [1, 2, 4]
    version = sh([args.python, "-c", "import pvaccess; print(pvaccess.__version__)"]).stdout.strip()
    result = {"machine": machine(), "mode": "quick" if args.quick else "full", "seconds": seconds,
              "pvapy_version": version, "pvapy": [], "memcpy_mb_per_s": {}}
    tag = iter(range(10**6))
    for size in SIZES:
        guess = PVAPY_PUBLISHED[(size, 1)] / 4
        for consumers in counts:
            log(f"  PvaPy {size}², {consumers} consumer(s)")
            rate, limit = search(lambda f: pvapy_rung(args.python, size, consumers, f, seconds, next(tag)), guess, log)
            result["pvapy"].append({"size": size, "consumers": consumers, "fps": rate, "limit": limit})
            guess = rate or guess
    for size in SIZES:
        result["memcpy_mb_per_s"][str(size)] = memcpy_mb_per_s(size * size)
    result["streamd"] = rings_ladder(SIZES, counts, seconds, result["memcpy_mb_per_s"], log, tag)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


def run_python(args):
    """A Python passthrough stage (1 worker) and PvaPy's base UserDataProcessor consumer,
    through the same ladder at 512² and 4096² u8, in one run."""
    log = lambda m: print(m, file=sys.stderr, flush=True)
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    version = sh([args.python, "-c", "import pvaccess; print(pvaccess.__version__)"]).stdout.strip()
    result = {"machine": machine(), "mode": "quick" if args.quick else "full", "seconds": seconds,
              "pvapy_version": version, "rows": []}
    scratch = tempfile.mkdtemp(prefix="ladder-", dir=os.path.join(ROOT, "target"))
    tag = iter(range(10**6))
    for size in [512, 4096]:
        log(f"  PvaPy {size}², 1 consumer")
        pvapy, pvapy_limit = search(lambda f: pvapy_rung(args.python, size, 1, f, seconds, next(tag)),
                                    PVAPY_PUBLISHED[(size, 1)] / 4, log)
        log(f"  streamd Python stage {size}², 1 worker")
        ours, our_limit = search(lambda f: pipeline_rung(size, 1, f, seconds, "python", scratch, next(tag)),
                                 max(pvapy, 10), log)
        result["rows"].append({"size": size, "pvapy_fps": pvapy, "pvapy_limit": pvapy_limit,
                               "streamd_fps": ours, "streamd_limit": our_limit})
    shutil.rmtree(scratch, ignore_errors=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


# ---- tables -------------------------------------------------------------------------

def mb(size):
    return size * size / 1e6


def header(result):
    m = result["machine"]
    return (f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, Linux {m['kernel']}; "
            f"{m['date']}; {result['mode']} mode, {result['seconds']:g} s per rung.")


def table(args):
    s = json.load(open(args.result))
    if "rows" in s:
        return python_table(s)
    if "pvapy" in s:
        return pvapy_table(s)
    out = [header(s), "", "### Rings: simulator → consumers reading every byte (u8 frames)", "",
           "| frame | consumers | frames/s | MB/s | memcpy MB/s (same run) | ratio to memcpy | limit |",
           "|---|---:|---:|---:|---:|---:|---|"]
    for r in s["rings"]:
        ceiling = s["memcpy_mb_per_s"][str(r["size"])]
        rate = r["fps"] * mb(r["size"])
        out.append(f"| {r['size']}² | {r['consumers']} | {r['fps']:,.0f} | {rate:,.0f} | {ceiling:,.0f} | {rate / ceiling:.0%} | {r['limit']} |")
    out += ["", "### With the metadata processor (6 channels, every frame matched)", "",
            "| frame | consumers | frames/s | metadata values/s | MB/s | limit |", "|---|---:|---:|---:|---:|---|"]
    for r in s["metadata"]:
        out.append(f"| {r['size']}² | {r['consumers']} | {r['fps']:,.0f} | {6 * r['fps']:,.0f} | {r['fps'] * mb(r['size']):,.0f} | {r['limit']} |")
    disk = s["direct_write_mb_per_s"]
    out += ["", f"### With a writer at the end (disk: O_DIRECT sequential write {disk:,.0f} MB/s, same run)", "",
            "| writer | frame | writers | frames/s | MB/s (frame bytes) | ratio to O_DIRECT | limit |", "|---|---|---:|---:|---:|---:|---|"]
    for r in s["writers"]:
        rate = r["fps"] * mb(r["size"])
        out.append(f"| {r['writer']} | {r['size']}² | {r['consumers']} | {r['fps']:,.0f} | {rate:,.0f} | {rate / disk:.0%} | {r['limit']} |")
    print("\n".join(out))


def python_table(s):
    out = [header(s) + f" PvaPy {s['pvapy_version']}.", "",
           "| frame | PvaPy consumer, base UserDataProcessor (frames/s) | streamd Python passthrough stage (frames/s) | ratio | limits (PvaPy / streamd) |",
           "|---|---:|---:|---:|---|"]
    for r in s["rows"]:
        ratio = r["streamd_fps"] / r["pvapy_fps"] if r["pvapy_fps"] else float("inf")
        out.append(f"| {r['size']}² u8 | {r['pvapy_fps']:,.0f} | {r['streamd_fps']:,.0f} | {ratio:.1f}× | "
                   f"{r['pvapy_limit']} / {r['streamd_limit']} |")
    print("\n".join(out))


def pvapy_table(s):
    ours = {(r["size"], r["consumers"]): r["fps"] for r in s["streamd"]}
    out = [header(s) + f" PvaPy {s['pvapy_version']}.", "",
           "| frame | consumers | PvaPy frames/s | streamd frames/s | streamd ÷ PvaPy | streamd MB/s | memcpy MB/s | PvaPy published (96 cores) |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in s["pvapy"]:
        key = (r["size"], r["consumers"])
        mine = ours[key]
        factor = f"{mine / r['fps']:.1f}×" if r["fps"] else "∞"
        published = PVAPY_PUBLISHED.get(key)
        published = f"{published:,}" if published else "–"
        out.append(f"| {r['size']}² | {r['consumers']} | {r['fps']:,.0f} | {mine:,.0f} | {factor} | "
                   f"{mine * mb(r['size']):,.0f} | {s['memcpy_mb_per_s'][str(r['size'])]:,.0f} | {published} |")
    print("\n".join(out))


def compare(args):
    """Rung by rung: how many grid steps apart two runs are."""
    a, b = json.load(open(args.a)), json.load(open(args.b))
    worst = 0
    print("| ladder | frame | consumers | run A | run B | grid steps apart |")
    print("|---|---|---:|---:|---:|---:|")
    for section in ["rings", "metadata", "writers", "pvapy", "streamd"]:
        for x, y in zip(a.get(section, []), b.get(section, [])):
            if x["fps"] and y["fps"]:
                steps = abs(grid_index(x["fps"]) - grid_index(y["fps"]))
            else:
                steps = 0 if x["fps"] == y["fps"] else 99
            worst = max(worst, steps)
            what = section + (f" {x['writer']}" if "writer" in x else "")
            print(f"| {what} | {x['size']}² | {x['consumers']} | {x['fps']:,.0f} | {y['fps']:,.0f} | {steps} |")
    print(f"\nlargest difference: {worst} grid step(s); one step is about 20 %")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ["streamd", "pvapy", "python"]:
        p = sub.add_parser(name)
        p.add_argument("--out", required=True)
        p.add_argument("--quick", action="store_true")
        p.add_argument("--seconds", type=float)
        if name != "streamd":
            p.add_argument("--python", required=True)
    t = sub.add_parser("table")
    t.add_argument("result")
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    args = parser.parse_args()
    if args.command == "streamd":
        run_streamd(args)
    elif args.command == "pvapy":
        run_pvapy(args)
    elif args.command == "python":
        run_python(args)
    elif args.command == "table":
        table(args)
    else:
        compare(args)


if __name__ == "__main__":
    main()
