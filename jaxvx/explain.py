"""Explain one clip end to end: checkpoint, snippet, prediction, relevance, selective relevance, pictures, numbers.

This is the library behind ``jaxvx explain`` (and the README's first command):

    result = jaxvx.explain.explain_clip("c3d-small", frames, method="deep_taylor", selective_sigma=4.0)
    jaxvx.explain.write_outputs(result, "out/")

Methods are chosen by name, the entries of :data:`jaxvx.methods.REGISTRY`; :func:`build_method` turns a name into a
method for a given checkpoint, giving it what its entry needs from the model: the pixel bounds of the z^B rule from
the checkpoint's normalisation, the layer of the CAM methods (the model's ``cam_layer`` or its last convolution),
the layers of saliency tubes and contrastive EB from the model class, and the input size of the occlusion windows.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxvx._maps import channel_sum
from jaxvx._provenance import versions
from jaxvx.methods import EXTREMAL_AREA, method_names

__all__ = ["EXTREMAL_AREA", "LRP_METHODS", "METHODS", "Explanation", "build_method", "explain_clip", "model_input",
           "stream", "write_outputs"]

#: every method name (the keys of jaxvx.methods.REGISTRY)
METHODS: tuple[str, ...] = method_names()
#: the methods whose maps sum-decompose the logit (their relevance sum over the logit is a check)
LRP_METHODS: tuple[str, ...] = method_names(conserves=True)


def _pixel_bounds(card: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel bounds of preprocessed input: ``((0 - mean) / std, (1 - mean) / std)`` for pixels in [0, 1]."""
    pp = card.get("preprocess", {})
    mean = np.asarray(pp.get("mean", (0.0, 0.0, 0.0)), np.float32)
    std = np.asarray(pp.get("std", (1.0, 1.0, 1.0)), np.float32)
    return (0.0 - mean) / std, (1.0 - mean) / std


def _last_conv(forward: Callable, x) -> str:
    from jaxvx import _program

    convs = [n.path for n in _program.trace(forward, x).find("conv")]
    if not convs:
        raise ValueError("the model has no convolution: CAM methods need one (choose another --method)")
    if not convs[-1]:
        raise ValueError("the model's last convolution has no path (name its parameters or give the layer)")
    return convs[-1]


def _need(need: str, model, forward: Callable, card: Mapping):
    """What the model says of ``need`` (a key of :data:`jaxvx.methods.NEEDS`), or None where it says nothing."""
    if need == "bounds":
        return _pixel_bounds(card)
    if need == "input_shape":
        return tuple(int(n) for n in card["input_shape"][:3])
    if need == "layer":
        shape = (1, *card["input_shape"])
        return getattr(type(model), "cam_layer", None) or _last_conv(forward, jnp.zeros(shape, jnp.float32))
    return getattr(type(model), need, None)  # tube_layers, lstm_layers: said by the model class


def build_method(name: str, model, variables, card: Mapping) -> tuple[Callable, Any, Mapping]:
    """``(method, model, variables)`` for method ``name`` (an entry of :data:`jaxvx.methods.REGISTRY`) on this
    checkpoint: give the method ``functools.partial(model.apply, variables)`` as its ``forward`` (inside the jitted
    function, with ``variables`` an argument of it: closed-over parameters become constants that XLA folds at
    length).

    What the entry needs comes from the checkpoint: ``bounds`` (z^B of ``deep_taylor`` and ``epsilon_gamma_box``)
    are the per-channel bounds of preprocessed pixels in [0, 1]; ``layer`` (Grad-CAM, guided Grad-CAM, excitation
    backprop) is the model's ``cam_layer`` (the I3D's ``Mixed_5c``) or else its last convolution; ``tube_layers``
    and ``lstm_layers`` are said by the model class (:class:`jaxvx.models.R2Plus1D18`, :class:`jaxvx.models.
    CNNLSTM`); ``input_shape`` is the card's. A checkpoint that cannot give a need is a ValueError naming the method,
    the need and the model. Every method returns ``[B, T, H, W, C]`` or ``[B, T, H, W, 1]`` (the entry's
    ``channels``). LRP and excitation backprop fold BatchNorm themselves (they read the traced program).
    """
    from jaxvx.methods import NEEDS, REGISTRY, make

    if name not in REGISTRY:
        raise ValueError(f"method must be one of {list(REGISTRY)}, got {name!r}")
    forward = functools.partial(model.apply, variables)
    needs = {}
    for need in REGISTRY[name].needs:
        needs[need] = _need(need, model, forward, card)
        if needs[need] is None:
            raise ValueError(f"{name} by name needs {NEEDS[need]}; this checkpoint holds a {type(model).__name__}, "
                             f"which does not say it: call jaxvx.methods.{name}(...) with your model's layers")
    return make(name, **needs), model, variables


def model_input(frames: np.ndarray, card: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """The checkpoint's view of a snippet: ``(x, view)``.

    ``x`` float32 ``[T, H, W, C]`` is the model input (``jaxvx.io.preprocess`` with the card's settings);
    ``view`` uint8 ``[T, H, W, 3]`` is the same resize and crop without normalisation, to draw relevance on.
    """
    from jaxvx.io import preprocess

    pp = dict(card.get("preprocess", {}))
    x = np.asarray(preprocess(frames, **pp))
    view = preprocess(frames, **{**pp, "mean": (0.0, 0.0, 0.0), "std": (1 / 255, 1 / 255, 1 / 255)})
    return x, np.clip(np.asarray(view).round(), 0, 255).astype(np.uint8)


@dataclasses.dataclass
class Explanation:
    """Everything :func:`explain_clip` computed for one snippet (numpy arrays; maps ``[T, H, W]`` channel-summed)."""

    checkpoint: str
    method: str
    view: np.ndarray
    relevance: np.ndarray
    selective: np.ndarray | None
    selective_sigma: float | None
    logits: np.ndarray
    class_names: list[str]
    target: int
    frame_share: np.ndarray
    fits: dict[str, np.ndarray]
    numbers: dict[str, Any]


def explain_clip(checkpoint: str, frames: np.ndarray, *, method: str = "deep_taylor",
                 selective_sigma: float | None = 4.0, target: int | None = None,
                 ground_truth: Mapping | None = None, clip: Any = None) -> Explanation:
    """Predict and explain one snippet ``frames`` (uint8 ``[T, H, W, 3]``, T = the model's frames).

    Args:
        checkpoint: a shipped checkpoint name or a path (:func:`jaxvx.checkpoints.load`).
        frames: the snippet, any frame size (resized and cropped as the checkpoint's card says).
        method: one of :data:`METHODS` (the names of :data:`jaxvx.methods.REGISTRY`).
        selective_sigma: also compute selective relevance with this threshold (``None``: skip).
        target: the class to explain (default: the predicted class).
        ground_truth: a synthetic record (``boxes``, ``present``, ``segment``, ``motion``) to score the map with
            the pointing games and motion precision; it must be at the model's input size.
        clip: what ``frames`` are (e.g. ``{"path": ..., "frames": [indices]}``), recorded in ``numbers["clip"]``
            beside the checkpoint's SHA-256 and the versions of jaxvx, jax, jaxlib and flax.

    Returns:
        An :class:`Explanation`; ``numbers`` holds the prediction, timings, the relevance sum against the logit,
        ``P_t`` and its fits' coefficients (border effect B, lookahead L) and, with ground truth, the metrics.
    """
    from jaxvx import checkpoints, metrics, transforms

    model, variables, card = checkpoints.load(checkpoint)
    t_model = int(card["input_shape"][0])
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    if frames.shape[0] != t_model:
        raise ValueError(f"frames must have the model's {t_model} frames, got {frames.shape[0]} "
                         "(sample a snippet with jaxvx.io.snippet_indices)")
    x, view = model_input(frames, card)
    explain, model, variables = build_method(method, model, variables, card)
    video = jnp.asarray(x)[None]

    predict = jax.jit(model.apply)
    logits = np.asarray(predict(variables, video))[0]
    if not np.all(np.isfinite(logits)):
        raise ValueError(f"the logits of checkpoint {checkpoint!r} hold NaN or inf for a finite input: its weights "
                         "hold NaN or inf, or overflow float32")
    chosen = int(np.argmax(logits)) if target is None else int(target)
    num_classes = logits.shape[-1]
    if not 0 <= chosen < num_classes:
        raise ValueError(f"target must be in [0, {num_classes}), got {chosen}")
    run = jax.jit(lambda w, v, t: explain(functools.partial(model.apply, w), v, t))
    target_arr = jnp.asarray([chosen], jnp.int32)
    run(variables, video, target_arr).block_until_ready()  # compile
    start = time.perf_counter()
    relevance = np.asarray(run(variables, video, target_arr).block_until_ready())[0]
    seconds = time.perf_counter() - start
    if not np.all(np.isfinite(relevance)):
        raise ValueError(f"method {method!r} returned a map that holds NaN or inf for checkpoint {checkpoint!r}")
    start = time.perf_counter()
    predict(variables, video).block_until_ready()
    forward_seconds = time.perf_counter() - start

    summed = np.asarray(channel_sum(relevance[None]))[0]
    selected = None
    if selective_sigma is not None:
        selected = np.asarray(transforms.selective(selective_sigma)(jnp.asarray(summed)[None]))[0]
    share = np.asarray(transforms.frame_share()(jnp.asarray(summed)[None]))[0]
    t = np.arange(share.shape[0], dtype=np.float64)
    quad = np.polyfit(t, share, 2)
    lin = np.polyfit(t, share, 1)
    fits = {f"quadratic (B={quad[0]:+.2e})": np.polyval(quad, t), f"linear (L={lin[0]:+.2e})": np.polyval(lin, t)}
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    names = list(card.get("class_names") or [str(i) for i in range(num_classes)])
    top = np.argsort(-probs)[:5]
    numbers: dict[str, Any] = {
        "checkpoint": checkpoint,
        "checkpoint_sha256": card.get("sha256"),
        "clip": clip,
        "versions": versions(),
        "method": method,
        "predicted": {"class": int(np.argmax(logits)), "name": names[int(np.argmax(logits))],
                      "probability": float(probs.max())},
        "target": {"class": chosen, "name": names[chosen], "logit": float(logits[chosen])},
        "top5": [{"class": int(i), "name": names[int(i)], "probability": float(probs[i])} for i in top],
        "relevance_sum": float(summed.sum()),
        "relevance_sum_over_logit": float(summed.sum() / logits[chosen]) if logits[chosen] != 0 else None,
        "frame_share": share.tolist(),
        "border_effect_B": float(quad[0]),
        "lookahead_L": float(lin[0]),
        "seconds": {"explanation": seconds, "forward": forward_seconds, "ratio": seconds / max(forward_seconds, 1e-9)},
        "input_shape": list(x.shape),
    }
    if selected is not None:
        kept = metrics.selectivity(jnp.asarray(selected)[None], jnp.asarray(summed)[None])
        numbers["selective"] = {"sigma": selective_sigma, "kept_positions": float(kept.positions[0]),
                                "kept_relevance": float(kept.relevance[0])}
    if ground_truth is not None:
        numbers["ground_truth"] = _score(summed, selected, ground_truth, metrics)
    return Explanation(checkpoint, method, view, summed, selected, selective_sigma, logits, names, chosen, share,
                       fits, numbers)


def _score(summed, selected, gt: Mapping, metrics) -> dict:
    boxes = jnp.asarray(gt["boxes"])[None]
    maps = {"relevance": summed} if selected is None else {"relevance": summed, "selective": selected}
    out = {"label": int(gt["label"]) if "label" in gt else None}
    for key, value in maps.items():
        r = jnp.asarray(value)[None]
        spatial = metrics.spatial_pointing_game(r, boxes, present=jnp.asarray(gt["present"])[None])
        temporal = metrics.temporal_pointing_game(r, jnp.asarray(gt["segment"])[None])
        out[key] = {
            "spatial_pointing": float(spatial.clip_scores()[0]),
            "temporal_pointing": float(temporal.clip_scores()[0]),
            "motion_precision": float(np.asarray(metrics.motion_precision(r, jnp.asarray(gt["motion"])[None]))[0]),
        }
    return out


#: Where the colour scale of the written pictures ends, in percent of ``|R|`` (larger values saturate): relevance
#: maps of real models are heavy-tailed (see :mod:`jaxvx.viz`).
_DISPLAY_PERCENTILE = 99.5


def _display_size(view: np.ndarray) -> np.ndarray:
    """Model-input frames ``[T, h, w, 3]`` enlarged by an integer factor (pixel repetition) to at least 224 pixels on
    their longer side, with even sides (video encoders need them): small inputs such as 32 x 32 stay visible."""
    zoom = max(1, int(np.ceil(224 / max(view.shape[1:3]))))
    big = view.repeat(zoom, axis=1).repeat(zoom, axis=2)
    return big[:, : big.shape[1] // 2 * 2, : big.shape[2] // 2 * 2]


def write_outputs(result: Explanation, out: str | os.PathLike, *, fps: float = 8.0) -> dict[str, str]:
    """Write the pictures and numbers of an explanation into folder ``out``; returns ``{kind: path}``.

    - ``overlay.mp4``: the signed relevance over the frames (diverging colour map, its opacity growing with
      ``|R|``, scaled to the 99.5th percentile of ``|R|`` over the clip), enlarged to at least 224 pixels;
    - ``sheet.png`` and ``sheet.svg``: frames, then relevance and (if computed) selective relevance over the grey
      frames, one row each, with a colour bar of each map's symmetric scale (``±`` the 99.5th percentile of
      ``|R|``; beyond it the colour saturates);
    - ``frame_share.png`` and ``frame_share.svg``: ``P_t`` with its quadratic (border effect B) and linear
      (lookahead L) fits, a panel each;
    - ``explanation.json``: the numbers, strict JSON (an undefined number, such as the motion precision of a
      selective map that kept nothing, is ``null``, as in the pipeline's rows); ``relevance.npy``: the
      channel-summed map ``[T, H, W]``.
    """
    from jaxvx._json import jsonable
    from jaxvx.io import write_video
    from jaxvx.viz import explanation_figure, frame_share_figure, overlay, save_figure

    out = os.fspath(out)
    os.makedirs(out, exist_ok=True)
    paths = {}
    big_view = _display_size(result.view)
    paths["overlay"] = os.path.join(out, "overlay.mp4")
    write_video(paths["overlay"], overlay(big_view, result.relevance, weight="relevance",
                                          percentile=_DISPLAY_PERCENTILE), fps)
    rows = {f"{result.method} (target: {result.class_names[result.target]})": result.relevance}
    if result.selective is not None:
        rows[f"selective, sigma={result.selective_sigma:g}"] = result.selective
    title = (f"{result.checkpoint}: predicted {result.numbers['predicted']['name']} "
             f"(p={result.numbers['predicted']['probability']:.2f})")
    sheet = explanation_figure(result.view, rows, title=title, percentile=_DISPLAY_PERCENTILE)
    paths["sheet"], paths["sheet_svg"] = save_figure(os.path.join(out, "sheet.png"), sheet, also=("svg",))
    paths["frame_share"], paths["frame_share_svg"] = save_figure(
        os.path.join(out, "frame_share.png"), frame_share_figure(result.frame_share, fits=result.fits), also=("svg",))
    paths["relevance"] = os.path.join(out, "relevance.npy")
    np.save(paths["relevance"], result.relevance)
    paths["json"] = os.path.join(out, "explanation.json")
    tmp = paths["json"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(jsonable({**result.numbers, "files": paths}), f, indent=2, allow_nan=False)
    os.replace(tmp, paths["json"])
    return paths


def _camera_frames(index: int):
    """``(frames, fps)``: an iterator of RGB frames ``[H, W, 3]`` from camera ``index``, and its frame rate."""
    import cv2

    from jaxvx import VideoError

    capture = cv2.VideoCapture(index)
    if not capture.isOpened():
        raise VideoError(f"{index}: cannot open this camera")

    def frames():
        try:
            while True:
                ok, bgr = capture.read()
                if not ok:
                    return
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        finally:
            capture.release()

    return frames(), capture.get(cv2.CAP_PROP_FPS)


def stream(checkpoint: str, source, out: str | os.PathLike, *, method: str = "deep_taylor",
           selective_sigma: float | None = None, max_frames: int | None = None, fps: float | None = None,
           progress: bool = True) -> dict[str, Any]:
    """Hiley et al.'s real-time use: explain a sliding window of the model's T frames as each new frame arrives.

    Frames are read one at a time from ``source`` (a video path, or a camera index as an int or a digit string);
    once T frames are buffered, every new frame triggers one explanation of the last T frames (one jitted call,
    batch 1), and the relevance of the newest frame is drawn over it (signed heatmap over grey, its opacity growing
    with ``|R|``, scaled to the 99.5th percentile of that frame's own ``|R|``: frames of a stream do not share a
    scale) and written to ``out`` (mp4 or avi) at the input frame rate. The first T - 1 frames are written without
    overlay.

    Returns ``{"frames": n, "explained": m, "seconds": s, "fps": n / s, "explained_fps": m / s, "out": path}``
    (frames per second achieved, reading and writing included; compilation happens before the clock starts).
    """
    import collections

    from jaxvx import VideoError, checkpoints, transforms
    from jaxvx.io import VideoWriter, iter_frames, preprocess, video_info
    from jaxvx.viz import overlay

    model, variables, card = checkpoints.load(checkpoint)
    t_model = int(card["input_shape"][0])
    explain, model, variables = build_method(method, model, variables, card)
    select = transforms.selective(selective_sigma) if selective_sigma else None

    def step(w, window, target):
        r = explain(functools.partial(model.apply, w), window, target)
        r = r.sum(axis=-1)
        return (select(r) if select is not None else r)[0, -1]

    step = jax.jit(step)
    predict = jax.jit(model.apply)
    zeros = jnp.zeros((1, *card["input_shape"]), jnp.float32)  # compile before the clock starts
    step(variables, zeros, jnp.zeros((1,), jnp.int32)).block_until_ready()
    predict(variables, zeros).block_until_ready()
    pp = dict(card.get("preprocess", {}))
    view_pp = {**pp, "mean": (0.0, 0.0, 0.0), "std": (1 / 255, 1 / 255, 1 / 255)}
    camera = isinstance(source, int) or (isinstance(source, str) and source.isdigit())
    if camera:
        frames, rate = _camera_frames(int(source))
    else:  # jaxvx.io's readers: uncompressed AVI with numpy (OpenCV corrupts its heap on some), the rest with OpenCV
        frames, rate = iter_frames(source), video_info(source).fps
    rate = fps or rate or 25.0
    out = os.fspath(out)
    tmp = os.path.join(os.path.dirname(os.path.abspath(out)), "." + os.path.basename(out) + ".part"
                       + os.path.splitext(out)[1])
    window: collections.deque = collections.deque(maxlen=t_model)
    writer = None
    n = explained = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc="jaxvx stream", unit="frame")
    start = time.perf_counter()
    failed = True
    try:
        for frame_rgb in frames:
            if max_frames is not None and n >= max_frames:
                break
            rgb = frame_rgb[None]
            window.append(np.asarray(preprocess(rgb, **pp))[0])
            view = _display_size(np.clip(np.asarray(preprocess(rgb, **view_pp)).round(), 0, 255).astype(np.uint8))
            if len(window) == t_model:
                clip = jnp.asarray(np.stack(window))[None]
                target = jnp.argmax(predict(variables, clip), axis=-1).astype(jnp.int32)
                frame = overlay(view, np.asarray(step(variables, clip, target))[None], weight="relevance",
                                percentile=_DISPLAY_PERCENTILE)[0]
                explained += 1
            else:
                frame = view[0]
            if writer is None:
                writer = VideoWriter(tmp, float(rate))  # H.264 for mp4 where imageio-ffmpeg is installed
            writer.write(frame)
            n += 1
            if bar is not None:
                bar.update(1)
        failed = False
    finally:
        frames.close()
        if writer is not None:
            writer.abort() if failed else writer.close()  # an error leaves no partial file behind
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start
    if n == 0:
        raise VideoError(f"{source}: no frame could be read")
    if explained == 0:
        os.remove(tmp)
        raise VideoError(f"{source}: {n} frame(s) read, fewer than the {t_model} the model explains at once: no "
                         "window to explain")
    os.replace(tmp, out)
    return {"frames": n, "explained": explained, "seconds": seconds, "fps": n / seconds,
            "explained_fps": explained / seconds, "out": out}
