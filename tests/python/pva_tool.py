"""pvAccess client chores for tests/epics.rs, with p4p (the tests' independent client):

    pva_tool.py record CHANNEL FRAMES     # monitor until FRAMES frames; print what came
    pva_tool.py consumer-status PV FRAMES # wait until a pvapy-hpc-consumer's status shows
                                          # FRAMES processed; print its counters

Each prints one JSON object as its last line. Waits end on the event they wait for; the
test's hang guard covers one that never comes.
"""

import json
import sys
import threading

import numpy as np
from p4p.client.thread import Context


def record(channel, frames):
    """Every frame of the channel: its uniqueId, shape, dtype, NDAttributes, and whether
    its pixels are streamd's ramp of that id."""
    got, done = [], threading.Event()

    def update(value):
        if isinstance(value, Exception) or not value["dimension"]:
            return  # a disconnect, or the channel's empty value before the first frame
        uid = int(value["uniqueId"])
        shape = [int(d["size"]) for d in reversed(value["dimension"])]
        pixels = value["value"].reshape(shape)
        ramp = (uid + np.arange(pixels.size, dtype=np.uint64)) % (1 << (8 * pixels.itemsize))
        got.append({
            "id": uid,
            "shape": shape,
            "dtype": str(pixels.dtype),
            "ramp": bool(np.array_equal(pixels.reshape(-1).astype(np.uint64), ramp)),
            "attrs": {a["name"]: a["value"] for a in value["attribute"]},
        })
        if len(got) >= frames:
            done.set()

    with Context("pva", nt=False) as ctx:
        sub = ctx.monitor(channel, update, request="record[queueSize=10000]field()",
                          notify_disconnect=True)
        print("subscribed", flush=True)
        done.wait()
        sub.close()
    return {"frames": got}


def consumer_status(pv, frames):
    """A pvapy-hpc-consumer's counters once it has processed `frames` frames (its status
    channel is updated every report period)."""
    with Context("pva", nt=False) as ctx:
        seen = threading.Event()
        result = {}

        def update(value):
            if isinstance(value, Exception):
                return
            stats = value["processorStats"]
            if int(stats["nProcessed"]) >= frames:
                result.update(
                    nProcessed=int(stats["nProcessed"]),
                    nMissed=int(stats["nMissed"]),
                    nErrors=int(stats["nErrors"]),
                    firstObjectId=int(stats["firstObjectId"]),
                    lastObjectId=int(stats["lastObjectId"]),
                    nOverruns=int(value["receiverStats.nOverruns"]),
                )
                seen.set()

        sub = ctx.monitor(pv, update, notify_disconnect=True)
        seen.wait()
        sub.close()
    return result


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "record":
        out = record(args[0], int(args[1]))
    elif command == "consumer-status":
        out = consumer_status(args[0], int(args[1]))
    else:
        sys.exit(f"unknown command {command}")
    print(json.dumps(out))
