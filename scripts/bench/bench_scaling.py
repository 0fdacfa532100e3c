"""Throughput of ``jaxvx run`` on 1, 2 and 4 processes of this machine (jax.distributed on localhost).

    python scripts/bench/bench_scaling.py [--processes 1 2 4] [--clips 32] [--method gradient]

Each setting runs twice, with C and 2C synthetic clips into fresh folders; the marginal throughput
C / (wall(2C) - wall(C)) leaves out what both runs pay once (start, checkpoint load, compilation). On one CPU
machine the processes share its cores: the ratio to one process says what the distribution costs (the lockstep
exchanges, the processes' duplicated work), not what more accelerators would give.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wall(n: int, clips: int, method: str, batch: int) -> float:
    """Seconds from starting ``n`` processes of ``jaxvx run`` to the last one's exit."""
    out = tempfile.mkdtemp(prefix="jaxvx-scaling-")
    base = [sys.executable, "-m", "jaxvx", "run", "--checkpoint", "c3d-small", "--method", method, "--num-clips",
            str(clips), "--batch-size", str(batch), "--out", out]
    port = free_port()
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    start = time.perf_counter()
    if n == 1:
        procs = [subprocess.Popen(base, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)]
    else:
        procs = [subprocess.Popen([*base, "--coordinator", f"127.0.0.1:{port}", "--num-processes", str(n),
                                   "--process-id", str(p)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  env=env) for p in range(n)]
    codes = [p.wait() for p in procs]
    seconds = time.perf_counter() - start
    if any(codes):
        raise SystemExit(f"{n} processes, {clips} clips: exit codes {codes}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--method", default="gradient")
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    print(f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} CPUs; c3d-small, {args.method}, "
          f"batch {args.batch_size} per process, {args.clips} and {2 * args.clips} clips")
    print("| processes | wall C (s) | wall 2C (s) | marginal clips/s | ratio to 1 process |")
    print("|---:|---:|---:|---:|---:|")
    first = None
    for n in args.processes:
        a = wall(n, args.clips, args.method, args.batch_size)
        b = wall(n, 2 * args.clips, args.method, args.batch_size)
        rate = args.clips / max(b - a, 1e-9)
        first = first or rate
        print(f"| {n} | {a:.1f} | {b:.1f} | {rate:.2f} | {rate / first:.2f} |", flush=True)


if __name__ == "__main__":
    main()
