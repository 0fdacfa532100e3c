"""How fast the synthetic benchmark renders: clips per minute, one process and one process per core.

    python scripts/bench/bench_synthetic.py [--clips 200] [--size 112] [--frames 16]

Target (issue 2): thousands of 16x112x112 clips a minute on 2 cores.
"""

import argparse
import concurrent.futures
import os
import platform
import time

from jaxvx.data import SyntheticConfig, render_clip


def _render(args):
    config, start, count = args
    for i in range(start, start + count):
        render_clip(config, "train", i)
    return count


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--frames", type=int, default=16)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    print(f"machine: {platform.processor() or platform.machine()}, {cores} cores; "
          f"{args.clips} clips of {args.frames}x{args.size}x{args.size}")
    for flow in (True, False):
        config = SyntheticConfig(num_frames=args.frames, height=args.size, width=args.size, flow=flow)
        render_clip(config, "train", 0)
        start = time.perf_counter()
        _render((config, 0, args.clips))
        one = args.clips / (time.perf_counter() - start) * 60
        chunks = [(config, k * args.clips // cores, args.clips // cores) for k in range(cores)]
        start = time.perf_counter()
        with concurrent.futures.ProcessPoolExecutor(cores) as pool:
            done = sum(pool.map(_render, chunks))
        every = done / (time.perf_counter() - start) * 60
        print(f"flow={flow!s:5}  1 process: {one:7.0f} clips/min   {cores} processes: {every:7.0f} clips/min")


if __name__ == "__main__":
    main()
