"""Follows a running pipeline's ring and prints live statistics once a second (with
matplotlib installed and --plot, also plots the mean intensity).

    python examples/python/follow.py demo.raw [--seconds 10] [--plot]

It reads lossy, so it never holds the pipeline back: frames it is too slow for are
counted as missed, not waited for.
"""

import argparse
import time

import streamd


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ring", help="a ring of a running pipeline, e.g. demo.raw (see `streamd rings`)")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long")
    parser.add_argument("--plot", action="store_true", help="plot the mean intensity (needs matplotlib)")
    args = parser.parse_args()
    plot = None
    if args.plot:
        try:
            import matplotlib.pyplot as plt

            plt.ion()
            plot = (plt, [])
        except ImportError:
            print("matplotlib is not installed; printing only")
    consumer = streamd.Consumer(args.ring, delivery="lossy", timeout=5.0)
    started = last = time.monotonic()
    frames = 0
    mean = peak = 0.0
    for frame in consumer:
        with frame:
            image = frame.array
            mean, peak = float(image.mean()), float(image.max())
            del image
        frames += 1
        now = time.monotonic()
        if now - last >= 1.0:
            counters = consumer.counters()
            print(
                f"frame {frame.id}: {frames / (now - last):.1f} frames/s, mean {mean:.1f}, max {peak:.0f}, "
                f"received {counters['received']}, missed {counters['missed']}",
                flush=True,
            )
            if plot:
                plt, means = plot
                means.append(mean)
                plt.clf()
                plt.plot(means)
                plt.pause(0.001)
            frames, last = 0, now
        if args.seconds is not None and now - started >= args.seconds:
            break
    print(f"done: {consumer.ended or 'stopped'}; {consumer.counters()}")


if __name__ == "__main__":
    main()
