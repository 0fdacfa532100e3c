"""Several processes (one per host of a TPU slice or GPU cluster, or several on one machine) with JAX's runtime.

:func:`initialize` starts JAX's multi-process runtime (``jax.distributed.initialize``) the way a batch job needs it:

- a SIGTERM (a scheduler's stop, ``kill``) raises :class:`Terminated` in the main thread, so that the pipeline
  writes the batch in flight and stops; JAX's preemption service, which would take SIGTERM over and let the
  process run on, is turned off;
- each process publishes ``pid@host`` so that a process that loses a peer can name the peers in its error;
- short heartbeat and shutdown timeouts (20 s, 30 s) instead of JAX's 100 s and 300 s.

The host-side collectives the pipeline uses (:func:`allgather_json`, :func:`barrier`) raise :class:`PeerLost`,
naming the peers (and which of them on this host are gone), when another process has died, instead of hanging.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import jax
import numpy as np

__all__ = ["PeerLost", "Terminated", "allgather_json", "barrier", "initialize", "peers"]

_KEY = "jaxvx/process/"


class Terminated(BaseException):
    """The process received SIGTERM (a ``BaseException``, as ``KeyboardInterrupt``: ``except Exception`` lets it
    through)."""


class PeerLost(RuntimeError):
    """Another process of the run died or cannot be reached."""


def _terminate(signum, frame):
    raise Terminated(f"received signal {signal.Signals(signum).name}")


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, heartbeat_timeout_s: int = 20, shutdown_timeout_s: int = 30,
               **kwargs) -> None:
    """Start JAX's multi-process runtime; the arguments as ``jax.distributed.initialize`` (all ``None``: what the
    cluster environment says: TPU metadata, SLURM, Open MPI, or ``JAX_COORDINATOR_ADDRESS`` /
    ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``)."""
    jax.config.update("jax_enable_preemption_service", False)
    jax.distributed.initialize(coordinator_address, num_processes, process_id,
                               heartbeat_timeout_seconds=heartbeat_timeout_s,
                               shutdown_timeout_seconds=shutdown_timeout_s, **kwargs)
    signal.signal(signal.SIGTERM, _terminate)
    client = _client()
    if client is not None:
        client.key_value_set(f"{_KEY}{jax.process_index()}", f"{os.getpid()}@{socket.gethostname()}")


def _client():
    from jax._src import distributed

    return distributed.global_state.client


def peers() -> str:
    """The other processes as ``process q (pid P on host H[, gone])``, from what each published at start."""
    client = _client()
    me = jax.process_index()
    parts = []
    for q in range(jax.process_count()):
        if q == me:
            continue
        where = None
        try:
            where = client.key_value_try_get(f"{_KEY}{q}") if client is not None else None
        except Exception:  # noqa: BLE001 - the coordinator may be the one that died
            pass
        if not where:
            parts.append(f"process {q}")
            continue
        pid, _, host = where.partition("@")
        gone = ", gone" if host == socket.gethostname() and _gone(pid) else ""
        parts.append(f"process {q} (pid {pid} on {host}{gone})")
    return ", ".join(parts)


def _gone(pid: str, wait_s: float = 2.0) -> bool:
    """Whether process ``pid`` of this host has exited (or is a zombie), waiting up to ``wait_s`` for it to."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            os.kill(int(pid), 0)
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().rsplit(")", 1)[-1].split()[0] == "Z":
                    return True
        except ProcessLookupError:
            return True
        except (OSError, ValueError):  # no /proc (not Linux), or another user's process: alive as far as we know
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def _lost(what: str, err: Exception) -> PeerLost:
    return PeerLost(f"process {jax.process_index()} of {jax.process_count()} lost contact with the others during "
                    f"{what}: {peers()}. Every process stops; rerun them all to resume. ({str(err).splitlines()[0]})")


def allgather_json(obj) -> list:
    """``obj`` (JSON-able) of every process, in process order; a host collective every process must call."""
    from jax.experimental import multihost_utils

    data = np.frombuffer(json.dumps(obj).encode(), np.uint8)
    try:
        sizes = np.asarray(multihost_utils.process_allgather(np.array([data.size], np.int64))).reshape(-1)
        padded = np.zeros(int(sizes.max()), np.uint8)
        padded[: data.size] = data
        every = np.asarray(multihost_utils.process_allgather(padded)).reshape(len(sizes), -1)
    except jax.errors.JaxRuntimeError as err:
        raise _lost("an exchange of batch plans", err) from None
    return [json.loads(bytes(row[:n]).decode()) for row, n in zip(every, sizes)]


def barrier(name: str) -> None:
    """Wait until every process reaches ``barrier(name)``."""
    from jax.experimental import multihost_utils

    try:
        multihost_utils.sync_global_devices(name)
    except jax.errors.JaxRuntimeError as err:
        raise _lost(f"barrier {name!r}", err) from None
