"""The README's I3D figure: deep Taylor relevance of i3d-kinetics400 on examples/arm_wrestling.mp4 (frames 132 to
147), summed over colour channels, drawn over the frames with a signed colour scale.

    python scripts/figures/readme_i3d.py docs/images/explain_i3d_arm_wrestling.png
"""

import sys

import matplotlib

matplotlib.use("Agg")
import jax  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import jaxvx  # noqa: E402
from jaxvx import explain  # noqa: E402


def main(out: str) -> None:
    model, variables, card = jaxvx.checkpoints.load("i3d-kinetics400")
    clip = jaxvx.io.read_video("examples/arm_wrestling.mp4", max_frames=148)[132:148]
    x = jaxvx.io.preprocess(clip, **card["preprocess"])[None]
    method, model, variables = explain.build_method("deep_taylor", model, variables, card)
    forward = lambda v: model.apply(variables, v)  # noqa: E731
    rel = np.asarray(jax.jit(lambda v: method(forward, v, None))(x))[0].sum(-1)
    frames = np.asarray((x[0] + 1) / 2).clip(0, 1)
    scale = np.percentile(np.abs(rel), 99.5)
    fig, axes = plt.subplots(2, 8, figsize=(13, 3.8), constrained_layout=True)
    for t, ax in enumerate(axes.flat):
        ax.imshow(frames[t].mean(-1), cmap="gray", vmin=0, vmax=1)
        im = ax.imshow(rel[t], cmap="bwr", vmin=-scale, vmax=scale, alpha=np.sqrt(np.clip(np.abs(rel[t]) / scale, 0, 1)))
        ax.set_title(f"frame {132 + t}", fontsize=9)
        ax.axis("off")
    bar = fig.colorbar(im, ax=axes, shrink=0.8, pad=0.01)
    bar.set_label("relevance (clipped at the 99.5th percentile of |R|)", fontsize=9)
    fig.suptitle(f"deep Taylor on i3d-kinetics400, target 'arm wrestling' (relevance sum {rel.sum():.2f})",
                 fontsize=11)
    fig.savefig(out, dpi=80)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "explain_i3d_arm_wrestling.png")
