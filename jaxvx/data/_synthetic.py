"""A procedural video benchmark with exact ground truth.

Every clip shows one *actor*, a textured "T"-shaped object, whose motion defines the class, over a static textured
background, with *distractors* (discs, squares and triangles) that perform the same kinds of motion at random.
Appearance alone cannot tell the classes apart: the actor looks the same in every class and a single frame shows
nothing of its motion; only the actor's motion over time does.

Variants:

- ``"motion"``: ten classes, ``right``, ``left``, ``up``, ``down`` (translation), ``circle_cw``, ``circle_ccw``
  (a circular path, clockwise as seen on screen), ``grow``, ``shrink`` (scaling in place), ``rotate_cw``,
  ``rotate_ccw`` (turning like a clock hand about the foot of the T's stem, which stays put).
- ``"walk_run"``: two classes, ``walk`` and ``run``: the same actor follows the same bobbing horizontal path (the
  path's shape is fixed in pixels), at about 2.5 times the speed when running. It mirrors the KTH walking/running
  setting; distractors cross the frame at walking and running speeds alike.

Ground truth of each clip (``T`` frames of ``H x W`` pixels), all drawn from the pixels actually rendered:

- ``boxes`` float32 ``[T, 4]``: the actor's tight box ``(x_min, y_min, x_max, y_max)`` in pixel indices (max
  inclusive); ``-1`` where ``present`` is False.
- ``present`` bool ``[T]``: the actor is visible in the frame.
- ``segment`` int64 ``[2]``: ``(start, end)``, end exclusive: the frames in which the action happens.
- ``actor`` bool ``[T, H, W]``: the actor's pixels; ``distractors`` bool ``[T, H, W]``: the distractors' pixels.
- ``motion`` bool ``[T, H, W]``: the pixels whose colour the actor changes between frame ``t`` and ``t + 1`` (the
  actor rendered alone over the background; for the last frame, the motion to the next frame the generator would
  draw). Empty where the actor is absent at ``t`` or ``t + 1``.
- ``flow`` float32 ``[T, H, W, 2]`` (when ``flow=True``): the true forward optical flow ``(dx, dy)`` of the actor's
  pixels from frame ``t`` to ``t + 1``; zero elsewhere.
- ``cue_box`` float32 ``[4]`` and ``cue_label`` int: the static context cue, ``-1`` when there is none.

Options (each off by default):

- ``context_cue=p``: a static coloured badge whose colour is that of the clip's class with probability ``p`` in the
  training split, and uniformly random otherwise and in every other split: a model that leans on it loses accuracy
  on the test split, which measures its spatial bias.
- ``title_frames=k``: the clip opens with ``k`` static title-card frames without the actor (the "lookahead"
  setting of Anders et al.); the action then fills the remaining frames.
- ``action_frames=D``: the action happens in ``D`` consecutive frames at a random place in the clip; around them
  the actor stands still (``surround="static"``) or the frames come from a clip of another class
  (``surround="other"``, the temporal-localisation setting of Li et al.).

Everything is deterministic in ``(seed, split, index)``; the random draws do not depend on the frame size, so the
same clip can be rendered at any resolution.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxvx._checks import check_int

__all__ = ["CLASS_NAMES", "SyntheticConfig", "SyntheticVideos", "synthetic", "render_clip"]

CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "motion": (
        "right", "left", "up", "down", "circle_cw", "circle_ccw", "grow", "shrink", "rotate_cw", "rotate_ccw",
    ),
    "walk_run": ("walk", "run"),
}
_SPLITS = {"train": 0, "test": 1, "validation": 2}
_DEFAULT_SIZES = {"train": 4000, "test": 1000, "validation": 1000}
_VARIANT_CODES = {"motion": 0, "walk_run": 1}
_SURROUNDS = ("static", "other")

# Sizes, in units of min(H, W).
_ACTOR_RADIUS = (0.10, 0.14)
_MARGIN = 1.15  # radii kept between an object's centre and the frame's edge (its own extent)
_DISTRACTOR_RADIUS = (0.06, 0.10)
_CUE_SIZE = 0.11
# walk_run: horizontal distance covered during the action, and the bobbing path (fixed in pixels for both classes).
_WALK_DISTANCE = (0.14, 0.22)
_RUN_DISTANCE = (0.42, 0.56)
_BOB_WAVELENGTH = 0.13
_BOB_HEIGHT = 0.05


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Settings of the synthetic benchmark; see the module docstring for what each option does.

    Attributes:
        variant: ``"motion"`` (10 classes) or ``"walk_run"`` (2 classes).
        num_frames, height, width: clip size ``T, H, W``.
        distractors: number of distractor objects.
        context_cue: ``None`` (no cue) or the rate in ``[0, 1]`` at which the cue's colour matches the class in the
            training split.
        title_frames: number of opening title-card frames (``0 <= k < T``).
        action_frames: ``None`` (the action fills every frame after the title) or the length of the action segment.
        surround: what fills the frames around a shorter action: ``"static"`` or ``"other"``.
        seed: the benchmark's seed.
        flow: also return the actor's true optical flow (``[T, H, W, 2]`` float32 per clip).
    """

    variant: str = "motion"
    num_frames: int = 16
    height: int = 112
    width: int = 112
    distractors: int = 2
    context_cue: float | None = None
    title_frames: int = 0
    action_frames: int | None = None
    surround: str = "static"
    seed: int = 0
    flow: bool = True

    def __post_init__(self):
        if self.variant not in CLASS_NAMES:
            raise ValueError(f"variant must be one of {sorted(CLASS_NAMES)}, got {self.variant!r}")
        for name, low in (("num_frames", 1), ("height", 8), ("width", 8), ("distractors", 0), ("title_frames", 0)):
            value = getattr(self, name)
            check_int(name, value, low)
        if self.title_frames >= self.num_frames:
            raise ValueError(
                f"title_frames must be < num_frames ({self.num_frames}) so that the action has frames, "
                f"got {self.title_frames}"
            )
        scene = self.num_frames - self.title_frames
        if self.action_frames is not None and not (1 <= self.action_frames <= scene):
            raise ValueError(
                f"action_frames must be None or in [1, num_frames - title_frames] = [1, {scene}], "
                f"got {self.action_frames}"
            )
        if self.surround not in _SURROUNDS:
            raise ValueError(f"surround must be one of {_SURROUNDS}, got {self.surround!r}")
        if self.context_cue is not None and not (0.0 <= float(self.context_cue) <= 1.0):
            raise ValueError(f"context_cue must be None or a rate in [0, 1], got {self.context_cue!r}")

    @property
    def class_names(self) -> tuple[str, ...]:
        return CLASS_NAMES[self.variant]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------------------------------
# Drawing helpers. Objects are drawn by mapping every pixel into the object's local frame, where the shape is a fixed
# implicit set inside [-1, 1]^2: image = centre + radius * scale * Rot(angle) @ local. With y pointing down, a growing
# angle turns clockwise on screen.


def _hsv_colour(rng: np.random.Generator) -> np.ndarray:
    h, s, v = rng.uniform(0, 1), rng.uniform(0.55, 1.0), rng.uniform(0.7, 1.0)
    rgb = np.clip(np.abs(((h * 6 + np.array([0.0, 4.0, 2.0])) % 6) - 3) - 1, 0, 1)
    return (v * (1 - s + s * rgb) * 255).astype(np.float32)


def _palette(k: int) -> np.ndarray:
    hues = np.arange(k) / k
    rgb = np.clip(np.abs(((hues[:, None] * 6 + np.array([0.0, 4.0, 2.0])) % 6) - 3) - 1, 0, 1)
    return (rgb * 255).astype(np.float32)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A static, smooth, muted texture ``[H, W, 3]`` float32 in [0, 255]: bilinear-upsampled coarse noise plus grain."""
    coarse = rng.uniform(0, 1, size=(5, 5, 3)).astype(np.float32)
    yy = np.linspace(0, 4, h, dtype=np.float32)
    xx = np.linspace(0, 4, w, dtype=np.float32)
    y0 = np.minimum(yy.astype(int), 3)
    x0 = np.minimum(xx.astype(int), 3)
    fy = (yy - y0)[:, None, None]
    fx = (xx - x0)[None, :, None]
    top = coarse[y0][:, x0] * (1 - fx) + coarse[y0][:, x0 + 1] * fx
    bottom = coarse[y0 + 1][:, x0] * (1 - fx) + coarse[y0 + 1][:, x0 + 1] * fx
    smooth = top * (1 - fy) + bottom * fy
    base = rng.uniform(50, 110)
    # the grain's number of draws depends on the size: draw it from its own generator
    grain = np.random.default_rng(rng.integers(2**63)).normal(0, 6, size=(h, w, 1)).astype(np.float32)
    return np.clip(base + 70 * (smooth - 0.5) + grain, 0, 255).astype(np.float32)


def _title_card(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A dark card with a few rows of light 'words' (static), ``[H, W, 3]`` float32."""
    rng = np.random.default_rng(rng.integers(2**63))  # draws below depend on the size: keep them apart
    card = np.full((h, w, 3), rng.uniform(10, 40), dtype=np.float32)
    ys = np.arange(h)[:, None]
    xs = np.arange(w)[None, :]
    ink = np.zeros((h, w), dtype=bool)
    rows = rng.integers(2, 4)
    for row in range(rows):  # a handful of rectangles, not a per-pixel loop
        y0 = int(h * (0.25 + 0.5 * row / max(rows - 1, 1)) - 0.04 * h)
        x = int(w * rng.uniform(0.1, 0.25))
        while x < w * 0.85:
            length = int(w * rng.uniform(0.05, 0.16))
            ink |= (ys >= y0) & (ys < y0 + max(1, int(0.06 * h))) & (xs >= x) & (xs < min(x + length, int(w * 0.9)))
            x += length + max(1, int(0.03 * w))
    card[ink] = rng.uniform(180, 250)
    return card


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    if shape == "actor":  # a "T": a bar on top of a stem
        return ((np.abs(u) <= 1.0) & (v >= -1.0) & (v <= -0.4)) | ((np.abs(u) <= 0.32) & (v >= -1.0) & (v <= 1.0))
    if shape == "disc":
        return u * u + v * v <= 0.9
    if shape == "square":
        return (np.abs(u) <= 0.8) & (np.abs(v) <= 0.8)
    if shape == "triangle":
        return (v <= 0.8) & (v >= -1.0 + 1.8 * np.abs(u))
    raise AssertionError(shape)


def _shade(shape: str, u: np.ndarray, v: np.ndarray, stripe_angle: float) -> np.ndarray:
    """Brightness factor of an object's texture at local coordinates ``u, v`` (the texture moves with the object)."""
    if shape == "actor":  # a checker of 0.4-unit cells: every motion changes the interior
        odd = (np.floor(2.5 * u) + np.floor(2.5 * v)) % 2
        return (1.0 - 0.45 * odd).astype(np.float32)
    w = np.cos(stripe_angle) * u + np.sin(stripe_angle) * v
    return (0.6 + 0.4 * (np.floor(3.0 * w) % 2)).astype(np.float32)


@dataclasses.dataclass
class _Path:
    """Per-frame pose of an object over ``T + 1`` frames (the extra frame defines the last frame's motion)."""

    cx: np.ndarray
    cy: np.ndarray
    scale: np.ndarray
    angle: np.ndarray


def _progress(num: int, start: int, length: int) -> np.ndarray:
    """tau(t) = clip((t - start) / length, 0, 1) for t = 0..num-1: the action moves in frames [start, start+length)."""
    return np.clip((np.arange(num, dtype=np.float64) - start) / length, 0.0, 1.0)


def _motion_path(kind: str, rng: np.random.Generator, tau: np.ndarray, radius: float, h: int, w: int,
                 walk_run_speed: str | None = None) -> _Path:
    """Pose of an object doing ``kind`` with progress ``tau`` in [0, 1]; stays inside the frame.

    Units: pixels. All random draws happen in a fixed order and in units of min(H, W), so that the same rng gives
    the same clip at any resolution.
    """
    s = min(h, w)
    angle0 = rng.uniform(0, 2 * np.pi)
    u1, u2 = rng.uniform(0, 1), rng.uniform(0, 1)  # where the path sits in the frame
    a, b = rng.uniform(0, 1), rng.uniform(0, 1)  # two shape parameters of the path
    ones = np.ones_like(tau)
    margin = _MARGIN * radius

    def place(lo_x, hi_x, lo_y, hi_y):
        # lo/hi: the extent of the path around its anchor; choose the anchor so the path stays in frame
        x_min, x_max = margin - lo_x, w - 1 - margin - hi_x
        y_min, y_max = margin - lo_y, h - 1 - margin - hi_y
        cx = x_min + u1 * max(x_max - x_min, 0) if x_max >= x_min else (w - 1) / 2 - (lo_x + hi_x) / 2
        cy = y_min + u2 * max(y_max - y_min, 0) if y_max >= y_min else (h - 1) / 2 - (lo_y + hi_y) / 2
        return cx, cy

    if kind in ("right", "left", "up", "down"):
        d = (0.35 + 0.2 * a) * s
        ex, ey = {"right": (1, 0), "left": (-1, 0), "up": (0, -1), "down": (0, 1)}[kind]
        off = tau - 0.5
        cx, cy = place(min(ex * -0.5 * d, ex * 0.5 * d), max(ex * -0.5 * d, ex * 0.5 * d),
                       min(ey * -0.5 * d, ey * 0.5 * d), max(ey * -0.5 * d, ey * 0.5 * d))
        return _Path(cx + ex * d * off, cy + ey * d * off, ones, angle0 * ones)
    if kind in ("circle_cw", "circle_ccw"):
        rho = (0.13 + 0.08 * a) * s
        travel = (1.2 + 0.6 * b) * np.pi * (1 if kind == "circle_cw" else -1)
        phase = angle0
        cx, cy = place(-rho, rho, -rho, rho)
        theta = phase + travel * tau
        return _Path(cx + rho * np.cos(theta), cy + rho * np.sin(theta), ones, angle0 * ones)
    if kind in ("grow", "shrink"):
        lo, hi = 0.55 + 0.15 * a, 1.3 + 0.2 * b
        start, end = (lo, hi) if kind == "grow" else (hi, lo)
        scale = np.exp(np.log(start) + tau * (np.log(end) - np.log(start)))
        ext = radius * (hi - 1)
        cx, cy = place(-ext, ext, -ext, ext)
        return _Path(cx * ones, cy * ones, scale, angle0 * ones)
    if kind in ("rotate_cw", "rotate_ccw"):
        # A clock hand: the object turns about the point (u, v) = (0, 1) of its own frame (the foot of the T's
        # stem), which stays put. Turning about its centre instead, C3D and R(2+1)D at width 1/8 stayed at chance
        # on the pair (our reading: the mirror-symmetric T's edges then move the same ways both ways round).
        travel = (0.6 + 0.6 * a) * np.pi * (1 if kind == "rotate_cw" else -1)
        angle = angle0 + travel * tau
        ext = (np.sqrt(5.0) - _MARGIN) * radius  # the T's bar corners (+-1, -1) lie sqrt(5) radii from its foot
        px, py = place(-ext, ext, -ext, ext)
        # centre = pivot - R(angle) (0, radius): the foot stays at (px, py)
        return _Path(px + radius * np.sin(angle), py - radius * np.cos(angle), ones, angle)
    if kind == "walk_run":
        lo_d, hi_d = _RUN_DISTANCE if walk_run_speed == "run" else _WALK_DISTANCE
        d = (lo_d + (hi_d - lo_d) * a) * s
        direction = 1 if b < 0.5 else -1
        lam, bob = _BOB_WAVELENGTH * s, _BOB_HEIGHT * s
        x_rel = direction * d * (tau - 0.5)
        y_rel = -bob * np.abs(np.sin(np.pi * (x_rel - x_rel[0]) / lam))
        cx, cy = place(-0.5 * d, 0.5 * d, -bob, 0.0)
        upright = rng.uniform(-0.25, 0.25)  # walkers stay roughly upright
        return _Path(cx + x_rel, cy + y_rel, ones, upright * ones)
    raise AssertionError(kind)


def _rasterise(shape: str, path: _Path, radius: float, ys: np.ndarray, xs: np.ndarray):
    """Local coordinates ``u, v`` ``[N, H, W]`` of every pixel in the object's frame and its mask."""
    ca = np.cos(path.angle).astype(np.float32)[:, None, None]
    sa = np.sin(path.angle).astype(np.float32)[:, None, None]
    dx = xs[None] - path.cx.astype(np.float32)[:, None, None]
    dy = ys[None] - path.cy.astype(np.float32)[:, None, None]
    inv = (1.0 / (radius * path.scale)).astype(np.float32)[:, None, None]
    u = (ca * dx + sa * dy) * inv
    v = (-sa * dx + ca * dy) * inv
    return u, v, _shape_mask(shape, u, v)


def _draw_distractors(rng, cfg: SyntheticConfig, frames, occupied, tau, ys, xs):
    h, w, s = cfg.height, cfg.width, min(cfg.height, cfg.width)
    kinds = CLASS_NAMES["motion"] + ("walk_run", "walk_run")
    for _ in range(cfg.distractors):
        shape = ("disc", "square", "triangle")[rng.integers(3)]
        kind = kinds[rng.integers(len(kinds))]
        speed = ("walk", "run")[rng.integers(2)]
        colour = _hsv_colour(rng)
        stripe = rng.uniform(0, np.pi)
        radius = rng.uniform(*_DISTRACTOR_RADIUS) * s
        path = _motion_path(kind, rng, tau, radius, h, w, walk_run_speed=speed)
        u, v, mask = _rasterise(shape, path, radius, ys, xs)
        frames[mask] = colour * _shade(shape, u[mask], v[mask], stripe)[:, None]
        occupied |= mask


def render_clip(config: SyntheticConfig, split: str, index: int, *, label: int | None = None) -> dict[str, Any]:
    """Render clip ``index`` of ``split``; see the module docstring for the record's keys.

    ``label`` overrides the class (used for the other-class surround); otherwise it is drawn so that every block
    of ``num_classes`` consecutive indices holds each class once.
    """
    cfg = config
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {sorted(_SPLITS)}, got {split!r}")
    t_all, h, w = cfg.num_frames, cfg.height, cfg.width
    k = cfg.num_classes
    if label is None:
        block = np.random.default_rng([cfg.seed, _SPLITS[split], _VARIANT_CODES[cfg.variant], index // k, 7])
        label = int(block.permutation(k)[index % k])
    rng = np.random.default_rng([cfg.seed, _SPLITS[split], _VARIANT_CODES[cfg.variant], index, label])
    s = min(h, w)
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]
    n = t_all + 1  # render one frame past the end: it defines the last frame's motion and flow

    title = cfg.title_frames
    scene_len = t_all - title
    if cfg.action_frames is None:
        seg_start, seg_len = title, scene_len
    else:
        seg_len = cfg.action_frames
        seg_start = title + int(rng.integers(0, scene_len - seg_len + 1))
    segment = np.array([seg_start, seg_start + seg_len], dtype=np.int64)

    background = _background(rng, h, w)
    frames = np.broadcast_to(background, (n, h, w, 3)).copy()

    cue_box = np.full(4, -1.0, dtype=np.float32)
    cue_label = -1
    if cfg.context_cue is not None:
        match = split == "train" and rng.uniform() < cfg.context_cue
        cue_label = label if match else int(rng.integers(k))
        size = max(2, int(round(_CUE_SIZE * s)))
        y0 = min(int(rng.uniform() * (h - size + 1)), h - size)
        x0 = min(int(rng.uniform() * (w - size + 1)), w - size)
        frames[:, y0:y0 + size, x0:x0 + size] = 255.0
        frames[:, y0 + 1:y0 + size - 1, x0 + 1:x0 + size - 1] = _palette(k)[cue_label]
        cue_box = np.array([x0, y0, x0 + size - 1, y0 + size - 1], dtype=np.float32)

    distractors = np.zeros((n, h, w), dtype=bool)
    tau_scene = _progress(n, title, scene_len)
    _draw_distractors(rng, cfg, frames, distractors, tau_scene, ys, xs)

    # the actor
    actor_colour = _hsv_colour(rng)
    radius = rng.uniform(*_ACTOR_RADIUS) * s
    kind = "walk_run" if cfg.variant == "walk_run" else cfg.class_names[label]
    speed = cfg.class_names[label] if cfg.variant == "walk_run" else None
    path = _motion_path(kind, rng, _progress(n, seg_start, seg_len), radius, h, w, walk_run_speed=speed)
    u, v, actor = _rasterise("actor", path, radius, ys, xs)
    visible = np.ones(n, dtype=bool)
    visible[:title] = False

    if cfg.surround == "other" and (seg_start > title or seg_start + seg_len < t_all):
        other_label = int((label + 1 + rng.integers(k - 1)) % k)
        other_cfg = dataclasses.replace(cfg, action_frames=None, surround="static", flow=False)
        other = render_clip(other_cfg, split, index, label=other_label)
        outside = np.ones(n, dtype=bool)
        outside[seg_start:seg_start + seg_len] = False
        outside[:title] = False
        visible &= ~outside
        frames[:t_all][outside[:t_all]] = other["video"][outside[:t_all]]
        # the other clip's actor is not the target: count it with the distractors
        others = other["distractors"] | other["actor"]
        distractors[:t_all][outside[:t_all]] = others[outside[:t_all]]
        distractors[t_all] = False  # the frame past the end (if outside) is not drawn from the other clip
    actor &= visible[:, None, None]

    actor_pixels = actor_colour * _shade("actor", u[actor], v[actor], 0.0)[:, None]
    # actor over the background alone: defines the motion mask
    alone = np.broadcast_to(background, frames.shape).copy()
    alone[actor] = actor_pixels
    changed = np.any(alone[:-1] != alone[1:], axis=-1)
    both = visible[:-1] & visible[1:]
    motion = changed & both[:, None, None]

    frames[actor] = actor_pixels
    if title:
        frames[:title] = _title_card(rng, h, w)
        distractors[:title] = False

    video = np.clip(np.round(frames[:t_all]), 0, 255).astype(np.uint8)
    actor_out = actor[:t_all]
    present = actor_out.any(axis=(1, 2))
    rows = actor_out.any(axis=2)
    cols = actor_out.any(axis=1)
    boxes = np.stack([
        np.argmax(cols, axis=1), np.argmax(rows, axis=1),
        w - 1 - np.argmax(cols[:, ::-1], axis=1), h - 1 - np.argmax(rows[:, ::-1], axis=1),
    ], axis=1).astype(np.float32)
    boxes[~present] = -1.0

    record = {
        "video": video,
        "label": int(label),
        "boxes": boxes,
        "present": present,
        "segment": segment,
        "actor": actor_out,
        "distractors": distractors[:t_all] & ~actor_out,
        "motion": motion,
        "cue_box": cue_box,
        "cue_label": int(cue_label),
        "index": int(index),
    }
    if cfg.flow:
        # where each actor pixel's material point (u, v) lies in the next frame
        nxt = _Path(path.cx[1:], path.cy[1:], path.scale[1:], path.angle[1:])
        ca = np.cos(nxt.angle)[:, None, None]
        sa = np.sin(nxt.angle)[:, None, None]
        rs = (radius * nxt.scale)[:, None, None]
        x1 = nxt.cx[:, None, None] + rs * (ca * u[:-1] - sa * v[:-1])
        y1 = nxt.cy[:, None, None] + rs * (sa * u[:-1] + ca * v[:-1])
        flow = np.stack([x1 - xs[None], y1 - ys[None]], axis=-1)
        keep = (actor_out & both[:, None, None])[..., None]
        record["flow"] = np.where(keep, flow, 0.0).astype(np.float32)
    return record


class SyntheticVideos(Sequence):
    """An in-memory source over the synthetic benchmark: ``len``, ``__getitem__`` and ``batch``.

    Clips are rendered on access and are deterministic in ``(config.seed, split, index)``.
    """

    def __init__(self, config: SyntheticConfig, split: str = "train", num_clips: int | None = None):
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {sorted(_SPLITS)}, got {split!r}")
        num_clips = _DEFAULT_SIZES[split] if num_clips is None else num_clips
        if not isinstance(num_clips, (int, np.integer)) or num_clips < 1:
            raise ValueError(f"num_clips must be a positive int, got {num_clips!r}")
        self.config = config
        self.split = split
        self.num_clips = int(num_clips)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.config.class_names

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def __len__(self) -> int:
        return self.num_clips

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be an int or a slice, got {type(index).__name__}")
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} clips")
        return render_clip(self.config, self.split, int(index))

    def batch(self, indices, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Records ``indices`` stacked along a new leading axis: ``{"video": uint8 [N, T, H, W, 3], ...}``.

        ``keys`` limits the result to those keys (rendering still draws everything).
        """
        records = [self[int(i)] for i in indices]
        if not records:
            raise ValueError("indices must not be empty")
        keys = list(records[0]) if keys is None else list(keys)
        missing = [key for key in keys if key not in records[0]]
        if missing:
            raise KeyError(f"unknown keys {missing}; records have {sorted(records[0])}")
        return {key: np.stack([np.asarray(r[key]) for r in records]) for key in keys}

    def __repr__(self) -> str:
        return f"SyntheticVideos(split={self.split!r}, num_clips={self.num_clips}, config={self.config})"


def synthetic(split: str = "train", *, num_clips: int | None = None, **config) -> SyntheticVideos:
    """The synthetic benchmark's ``split`` as an in-memory source.

    Args:
        split: ``"train"``, ``"test"`` or ``"validation"``.
        num_clips: number of clips (defaults: 4000 train, 1000 test, 1000 validation).
        **config: fields of :class:`SyntheticConfig` (``variant``, ``num_frames``, ``height``, ``width``,
            ``distractors``, ``context_cue``, ``title_frames``, ``action_frames``, ``surround``, ``seed``, ``flow``).

    Returns:
        A :class:`SyntheticVideos`; each record is a dict with ``video`` uint8 ``[T, H, W, 3]``, ``label`` int and the
        ground truth listed in the module docstring.
    """
    unknown = set(config) - {f.name for f in dataclasses.fields(SyntheticConfig)}
    if unknown:
        raise TypeError(
            f"unknown synthetic option(s) {sorted(unknown)}; options are "
            f"{[f.name for f in dataclasses.fields(SyntheticConfig)]}"
        )
    return SyntheticVideos(SyntheticConfig(**config), split, num_clips)
