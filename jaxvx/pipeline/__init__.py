"""Explanation methods over a dataset: sampling, preprocessing, model, methods, transforms, metrics, results.

    source ─▶ snippet sampling + preprocessing (host) ─▶ batches sharded over all devices ─▶ one jitted step:
    model ─▶ each method (+ transforms) ─▶ metrics ─▶ rows written to results.jsonl as they come ─▶ summary

:func:`run` is the library entry point behind ``jaxvx run``. What it guarantees:

- **Compiled once per shape.** The step (forward, every method, transforms and metrics) is one ``jax.jit``
  function; batches keep one shape (the last is padded with copies of its last clip, marked invalid), so a run over
  equally sized clips compiles once. Clips of another shape (e.g. with ``resize="none"``) start a new batch.
- **Sharded over all devices.** A ``Mesh`` over every device with one ``"data"`` axis; the step is a
  ``shard_map`` over it: each device explains its own clips with the replicated variables, with no communication.
  The batch size is rounded up to a multiple of the local device count.
- **Several processes** (one per host of a TPU slice or GPU cluster, or several on one machine; start each with
  :func:`initialize`, then the same ``run``): process ``p`` of ``n`` reads only clips ``p, p + n, ...`` and writes
  ``results.<p>.jsonl``. The processes run the step in lockstep: before each step they exchange what they hold
  (clips, shapes, an error), one that has no clips left computes zeros it does not write, so shares of unequal size
  (a resume, skipped files) never hang; every batch must have one shape across processes. An error in one process
  (a clip that does not fit) stops every process with it; a process that dies stops the others at the next exchange
  with :class:`PeerLost` naming it; SIGTERM raises :class:`Terminated` after the batch in flight is written. After a
  barrier, process 0 summarises every process's rows (read from ``out``: a shared file system; else
  :func:`summarize_folder`, ``jaxvx summarize OUT``, merges the files). A folder holds the rows of one number of
  processes. See ``docs/scaling.md``.
- **Results as they are computed.** ``out/results.jsonl`` (a header line, then one JSON object per clip with its
  metrics), flushed and fsynced after every batch; optionally each clip's maps as ``out/maps/<method>/<clip>.npy``.
  One batch is computed while the host prepares the next (JAX dispatches asynchronously); on an exception or
  Ctrl-C the batch in flight is still written, so only the clips being assembled are lost; running again with ``resume=True`` skips the clips
  already written (a line cut short is dropped).
- **A summary.** Per method and metric, the mean over clips with a percentile-bootstrap CI, as
  ``out/summary.md`` (a Markdown table) and ``out/summary.json``.
- **Errors name the clip.** Input that does not fit (a video that is not ``[T, H, W, 3]``, too few frames with
  ``pad="error"``, a label outside the model's classes, NaN or inf in the input) stops the run with a ValueError
  naming the clip and the problem, after computing and writing the clips before it. A file a folder source cannot
  decode (:class:`jaxvx.VideoError`) is skipped with a warning and recorded as a row with ``"status": "skipped"``.

Example::

    model, variables, card = jaxvx.checkpoints.load("c3d-small")
    results = jaxvx.pipeline.run(
        jaxvx.data.synthetic("test", num_clips=200), model,
        {"gradient": jaxvx.methods.gradient(), "selective": jaxvx.chain(jaxvx.methods.gradient(), jaxvx.transforms.selective(4.0))},
        variables=variables, preprocess=card["preprocess"], out="runs/gradient")
    print(results.markdown)

The settings that belong together are small frozen records, checked when made: :class:`Sampling` (which frames),
:class:`MetricOptions` (the built-in metrics' settings), :class:`OutputOptions` (maps, summary, provenance)::

    jaxvx.pipeline.run(source, model, method, variables=variables, out="runs/step2",
                       sampling=jaxvx.pipeline.Sampling(length=16, step=2, pad="edge"),
                       metric_options=jaxvx.pipeline.MetricOptions(tolerance=15),
                       output=jaxvx.pipeline.OutputOptions(save_maps=True))

Methods return maps ``[B, T, H, W, C]`` (``C`` may be 1), as every method of :mod:`jaxvx.methods` does.

:func:`sweep` runs the same over several snippet steps and offsets (Anders et al.'s accuracy and border B over the
step, lookahead L over the offset), one resumable run per setting, and :func:`jaxvx.viz.plot_sweep` draws it::

    source = jaxvx.data.synthetic("test", num_clips=200, num_frames=64, height=64, width=64)
    sw = jaxvx.pipeline.sweep(source, model, jaxvx.methods.lrp(jaxvx.lrp.deep_taylor(-3.0, 3.0)),
                              steps=["1/4", "1/2", 1, 2, 4], variables=variables,
                              preprocess=card["preprocess"], out="runs/steps")
    print(sw.markdown)
    jaxvx.viz.save_png("steps.png", jaxvx.viz.plot_sweep(sw))

The package, bottom to top: :mod:`._options` (the option records), :mod:`._metrics` (the per-clip metrics) and
:mod:`._results` (the results file and its summary statistics); :mod:`._clips` (records to model input, on the
host), :mod:`._step` (the jitted step), :mod:`._folder` (the output folder, :class:`Results`), :mod:`._lockstep`
(several processes); :mod:`._run` (:func:`run`); :mod:`._sweep` (:func:`sweep`, which runs :func:`run` per
setting). No module imports one above it.
"""

from jaxvx._distributed import PeerLost, Terminated, initialize
from jaxvx.pipeline._folder import RESULTS_FILE, SUMMARY_FILE, Results, results_paths, summarize_folder
from jaxvx.pipeline._options import MetricOptions, OutputOptions, Sampling
from jaxvx.pipeline._results import ResultsLocked
from jaxvx.pipeline._run import run
from jaxvx.pipeline._sweep import SWEEP_FILE, SWEEP_METRICS, Sweep, step_label, sweep

__all__ = ["run", "Sampling", "MetricOptions", "OutputOptions", "summarize_folder", "results_paths", "initialize",
           "PeerLost", "Terminated", "Results", "ResultsLocked", "RESULTS_FILE", "SUMMARY_FILE", "sweep", "Sweep",
           "SWEEP_FILE", "SWEEP_METRICS", "step_label"]
