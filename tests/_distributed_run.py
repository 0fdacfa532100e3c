"""One process of a multi-process pipeline run on localhost (started by tests/test_pipeline_distributed.py).

    python tests/_distributed_run.py OUT PROCESS_ID NUM_PROCESSES PORT [--die-at CLIP] [--clips N]

``NUM_PROCESSES`` 1 runs without ``jax.distributed``. ``--die-at CLIP``: the process sends itself SIGTERM when asked
for that clip (a scheduler stopping it mid-run). Prints ``computed N`` on success.
"""

import argparse
import os
import signal
import sys

import jax
import jax.numpy as jnp
import numpy as np

from jaxvx import pipeline
from jaxvx.data import synthetic

T, S, K = 4, 16, 10


def apply(variables, video):
    b = video.shape[0]
    pooled = video.reshape(b, T, 4, 4, 4, 4, 3).mean(axis=(3, 5))
    return pooled.reshape(b, -1) @ variables["w"]


def grad_x_input(forward, video, target=None, *, key=None):
    g = jax.grad(lambda v: jnp.take_along_axis(forward(v), target[:, None], axis=1).sum())(video)
    return video * g


class Dying:
    """The source, except that asking for clip ``die_at`` sends SIGTERM to this process."""

    def __init__(self, source, die_at):
        self.source, self.die_at = source, die_at

    def __repr__(self):
        return repr(self.source)

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        if i == self.die_at:
            os.kill(os.getpid(), signal.SIGTERM)
        return self.source[i]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("process_id", type=int)
    parser.add_argument("num_processes", type=int)
    parser.add_argument("port", type=int)
    parser.add_argument("--die-at", type=int, default=None)
    parser.add_argument("--clips", type=int, default=24)
    args = parser.parse_args()
    if args.num_processes > 1:
        pipeline.initialize(f"127.0.0.1:{args.port}", args.num_processes, args.process_id, heartbeat_timeout_s=10,
                            shutdown_timeout_s=10)
    source = synthetic("test", num_clips=args.clips, num_frames=T, height=S, width=S, distractors=1, flow=False)
    if args.die_at is not None:
        source = Dying(source, args.die_at)
    rng = np.random.default_rng(0)
    variables = {"w": jnp.asarray(rng.normal(size=(T * 4 * 4 * 3, K)).astype(np.float32))}
    try:
        res = pipeline.run(source, apply, {"gxi": grad_x_input}, variables=variables,
                           sampling=pipeline.Sampling(length=T), batch_size=2,
                           out=args.out, progress=False, metrics=["spatial_pointing_game", "frame_share"])
    except (pipeline.PeerLost, pipeline.Terminated) as err:
        print(f"stopped: {type(err).__name__}: {err}", flush=True)
        os._exit(3)  # JAX's shutdown barrier would wait for the lost peer
    print(f"computed {res.computed}", flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
