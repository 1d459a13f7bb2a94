#!/usr/bin/env python3
"""Ingest from PvaPy's simulator: the highest loss-free frame rate of a streamd `pva`
source and of PvaPy's own consumer, both taking the same stream in the same run.

Each rung: `pvapy-ad-sim-server` publishes random u8 frames of SIZE² at RATE for S
seconds; a streamd pipeline (`[source] kind = "pva"` → a ring → a stage taking every
frame) and `pvapy-hpc-consumer` (the base UserDataProcessor) both monitor it, each with
the server queue PvaPy's own throughput tables use for that size. A side passes a rung
when it took every frame the server published, with nothing missed, overrun or rejected
by its own counters; the rung counts only if the server held the rate and both clients
were subscribed before its first frame. Rates climb the grid of scripts/ladder.py (steps
of about 20 %) until both sides have failed twice. Beside the rates: each side's CPU
time per frame (the streamd pipeline's processes together, PvaPy's consumer process),
from the lowest to the highest rung both passed, so start-up cancels out.

    scripts/bench-epics [--quick] [--seconds S] [--sizes 512,2048]
"""

import argparse
import json
import os
import re
import resource
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ladder import ROOT, grid, grid_index, machine  # noqa: E402

VENV = os.path.join(ROOT, ".venv", "bin")
STREAMD = os.path.join(ROOT, "target", "release", "streamd")
# PvaPy's server queue sizes in its throughput tables (seeds/004), for both clients.
QUEUE = {512: 1000, 1024: 500, 2048: 200, 4096: 100}
# The server waits this long after generating its frames before publishing: time for
# both clients to start (on a loaded 2-core machine, an interpreter importing p4p or
# PvaPy takes seconds) and subscribe.
START_DELAY = 8.0


def log(message):
    print(message, file=sys.stderr, flush=True)


def free_port(kind):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def epics_env():
    """pvAccess on loopback, on ports of this run only (other servers on the machine,
    and other rungs, stay out of it)."""
    broadcast, server = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    env = dict(os.environ)
    env.update({
        "PATH": f"{VENV}:{env.get('PATH', '')}",
        "EPICS_PVA_ADDR_LIST": "127.0.0.1", "EPICS_PVA_AUTO_ADDR_LIST": "NO",
        "EPICS_PVA_BROADCAST_PORT": str(broadcast), "EPICS_PVAS_BROADCAST_PORT": str(broadcast),
        "EPICS_PVA_SERVER_PORT": str(server), "EPICS_PVAS_SERVER_PORT": str(server),
        "EPICS_PVAS_INTF_ADDR_LIST": "127.0.0.1", "EPICS_PVAS_BEACON_ADDR_LIST": "127.0.0.1",
        "EPICS_PVAS_AUTO_BEACON_ADDR_LIST": "NO",
    })
    return env


def pipeline(folder, name, channel, size):
    path = os.path.join(folder, f"{name}.toml")
    with open(path, "w") as f:
        f.write(f'''name = "{name}"

[[ring]]
name = "raw"
slots = 64

[source]
kind = "pva"
ring = "raw"
channel = "{channel}"
queue_size = {QUEUE[size]}
until_disconnect = true
nx = {size}
ny = {size}
dtype = "u8"

[[stage]]
name = "take"
processor = "verify"
input = "raw"
args = {{ pattern = "none" }}
''')
    return path


def pvapy_finals(text):
    """pvapy-hpc-consumer's last statistics block: processed, missed, overruns, rejected."""
    blocks = re.findall(r"'consumerId': (\d+),(.*?)'userStats'", text, re.S)
    if not blocks:
        return None
    text = blocks[-1][1]

    def get(key):
        m = re.search(rf"'{key}': (\d+)", text)
        return int(m.group(1)) if m else 0

    return {k: get(k) for k in ("nProcessed", "nMissed", "nOverruns", "nRejected", "firstObjectId")}


def rung(size, rate, seconds, folder, tag):
    env = epics_env()
    channel = f"benchepics:{os.getpid()}:{tag}"
    name = f"be{os.getpid() % 10000}x{tag}"
    server = subprocess.Popen(
        [os.path.join(VENV, "pvapy-ad-sim-server"), "-cn", channel, "-nf", "20", "-dt", "uint8",
         "-nx", str(size), "-ny", str(size), "-fps", f"{rate:g}", "-rt", str(seconds),
         "-rp", str(max(1, round(rate))), "-std", str(START_DELAY), "-shd", "0.5", "-dc"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    served = ""
    for line in server.stdout:
        served += line
        if line.startswith("Expected data rate"):
            break  # frames generated; the start delay runs from here
    run = subprocess.Popen([STREAMD, "run", pipeline(folder, name, channel, size), "--json",
                            "--output", folder],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    consumer = subprocess.Popen(
        [os.path.join(VENV, "pvapy-hpc-consumer"), "--input-channel", channel,
         "--processor-class", "pvapy.hpc.userDataProcessor.UserDataProcessor",
         "--report-period", "1000", "--server-queue-size", str(QUEUE[size]),
         "--runtime", str(START_DELAY + seconds + 1.5), "--disable-curses"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    limit = seconds + 120
    # CPU time of each client, from the rusage of reaped children (a child's includes the
    # children it reaped: streamd run's, its workers and its check).
    cpu = lambda: (lambda r: r.ru_utime + r.ru_stime)(resource.getrusage(resource.RUSAGE_CHILDREN))
    served += server.communicate(timeout=limit)[0]
    before = cpu()
    try:
        # The source ends when the server goes away, if it ever connected.
        streamd_out, streamd_err = run.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        run.terminate()
        streamd_out, streamd_err = run.communicate(timeout=limit)
    streamd_cpu = cpu() - before
    before = cpu()
    pvapy_out = consumer.communicate(timeout=limit)[0]
    pvapy_cpu = cpu() - before
    published = re.search(r"Published frames:\s+(\d+)\s+@\s+([\d.]+) fps", served)
    if not published:
        raise RuntimeError(f"pvapy-ad-sim-server did not report: {served[-500:]}")
    frames, achieved = int(published.group(1)), float(published.group(2))
    result = {"size": size, "rate": rate, "published": frames, "achieved_fps": achieved,
              "producer_held": achieved >= 0.98 * rate,
              "cpu_s": {"streamd": streamd_cpu, "pvapy": pvapy_cpu}}
    try:
        report = json.loads(streamd_out.strip().splitlines()[-1])
        stages = {s["name"]: s for s in report["stages"]}
        source, take = stages["source"], stages["take"]
        counters = source["workers"][0]["counters"]
        result["streamd"] = {"taken": source["frames_out"], "missed": source["missed"],
                             "dropped": source["dropped"], "stage_frames": take["frames_in"]}
        # It saw the channel's empty value: it subscribed before the first frame.
        result["streamd_late"] = counters.get("empty_updates", 0) == 0
        result["streamd_ok"] = (source["missed"] == 0 and source["dropped"] == 0
                                and source["frames_out"] == frames and take["frames_in"] == frames)
    except (IndexError, KeyError, ValueError):
        result["streamd"] = {"error": streamd_err.strip()[-300:]}
        result["streamd_ok"] = False
        result["streamd_late"] = False
    finals = pvapy_finals(pvapy_out)
    result["pvapy"] = finals or {"error": pvapy_out[-300:]}
    result["pvapy_ok"] = bool(finals) and finals["nProcessed"] == frames and not (
        finals["nMissed"] or finals["nOverruns"] or finals["nRejected"])
    result["pvapy_late"] = bool(finals) and finals["firstObjectId"] > 1
    # A rung says something only when the server held the rate and both clients were
    # subscribed before its first frame (a loaded machine can delay either).
    result["valid"] = result["producer_held"] and not (result["streamd_late"] or result["pvapy_late"])
    return result


def ladder(size, seconds, folder, guess, tags):
    """Climbs the grid from `guess` until both sides failed twice (each failure retried
    once: the machine is shared) or the server cannot hold the rate."""
    best = {"streamd": 0, "pvapy": 0}
    # The highest rate the server really published that a side took whole, held or not.
    achieved = {"streamd": 0.0, "pvapy": 0.0}
    failed = {"streamd": 0, "pvapy": 0}
    rungs, limit = [], ""
    i = grid_index(guess)
    while min(failed.values()) < 2:
        rate = grid(i)
        r = rung(size, rate, seconds, folder, next(tags))
        for _ in range(2):
            if r["valid"]:
                break
            log(f"  {size}² at {rate:g}/s: again (server at {r['achieved_fps']:.0f}/s, "
                f"late: streamd {r['streamd_late']}, PvaPy {r['pvapy_late']})")
            r = rung(size, rate, seconds, folder, next(tags))
        for side in best:
            if r["valid"] and not r[f"{side}_ok"] and failed[side] < 2:
                retry = rung(size, rate, seconds, folder, next(tags))
                if retry["valid"] and retry[f"{side}_ok"]:
                    r[f"{side}_ok"], r[side] = True, retry[side]
        rungs.append(r)
        log(f"  {size}² at {rate:g}/s: published {r['published']} at {r['achieved_fps']:.0f}/s; "
            f"streamd {'pass' if r['streamd_ok'] else 'FAIL'} {r['streamd']}; "
            f"PvaPy {'pass' if r['pvapy_ok'] else 'FAIL'} {r['pvapy']}")
        for side in achieved:
            if r[f"{side}_ok"] and not r[f"{side}_late"]:
                achieved[side] = max(achieved[side], r["achieved_fps"])
        if not r["valid"]:
            limit = "producer" if not r["producer_held"] else "a client subscribed late"
            break
        for side in best:
            if r[f"{side}_ok"]:
                best[side] = rate
                failed[side] = 0
            else:
                failed[side] += 1
        i += 1
    # CPU per frame between the lowest and the highest rung both sides passed: the
    # difference cancels what starting up costs each side.
    both = [r for r in rungs if r["valid"] and r["streamd_ok"] and r["pvapy_ok"]]
    cpu = {"streamd": 0.0, "pvapy": 0.0}
    if len(both) >= 2 and both[-1]["published"] > both[0]["published"]:
        frames = both[-1]["published"] - both[0]["published"]
        cpu = {side: 1e3 * (both[-1]["cpu_s"][side] - both[0]["cpu_s"][side]) / frames
               for side in cpu}
    return {"size": size, "streamd_fps": best["streamd"], "pvapy_fps": best["pvapy"],
            "cpu_ms_per_frame": cpu,
            "streamd_achieved_fps": achieved["streamd"], "pvapy_achieved_fps": achieved["pvapy"],
            "limit": limit, "rungs": rungs}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="3 s rungs")
    p.add_argument("--seconds", type=float, help="seconds per rung (default 10; 3 with --quick)")
    p.add_argument("--sizes", default="512,2048")
    p.add_argument("--out", default=os.path.join(ROOT, "target", "bench-epics.json"))
    args = p.parse_args()
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    version = subprocess.run([os.path.join(VENV, "python"), "-c",
                              "from importlib.metadata import version; print(version('pvapy'), version('p4p'))"],
                             capture_output=True, text=True).stdout.split()
    result = {"machine": machine(), "seconds": seconds, "pvapy_version": version[0],
              "p4p_version": version[1], "sizes": []}
    tags = iter(range(10**6))
    # Low enough that the first rung passes on a small machine; the ladder climbs from it.
    start = {512: 150, 1024: 60, 2048: 15, 4096: 5}
    with tempfile.TemporaryDirectory(prefix="bench-epics-", dir=os.path.join(ROOT, "target")) as folder:
        for size in (int(s) for s in args.sizes.split(",")):
            log(f"{size}²:")
            result["sizes"].append(ladder(size, seconds, folder, start[size], tags))
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    m = result["machine"]
    print(f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, Linux {m['kernel']}; "
          f"{m['date']}; PvaPy {result['pvapy_version']}, p4p {result['p4p_version']}; "
          f"{seconds:g} s per rung.\n")
    print("| frame (u8) | server queue | streamd `pva` source frames/s | pvapy-hpc-consumer frames/s | streamd ÷ PvaPy | streamd MB/s | CPU ms per frame: streamd pipeline / PvaPy consumer | limit above |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for s in result["sizes"]:
        ratio = f"{s['streamd_fps'] / s['pvapy_fps']:.2f}×" if s["pvapy_fps"] else "—"
        mbs = s["streamd_fps"] * s["size"] ** 2 / 1e6
        cpu = s["cpu_ms_per_frame"]
        print(f"| {s['size']}² | {QUEUE[s['size']]} | {s['streamd_fps']:,.0f} | {s['pvapy_fps']:,.0f} | "
              f"{ratio} | {mbs:,.0f} | {cpu['streamd']:.2f} / {cpu['pvapy']:.2f} | "
              f"{s['limit'] or 'both clients'} |")


if __name__ == "__main__":
    main()
