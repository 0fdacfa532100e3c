"""The README's I3D figure: deep Taylor relevance of i3d-kinetics400 on examples/arm_wrestling.mp4 (frames 132 to
147), summed over colour channels, drawn over the grey frames with a signed colour scale (PNG, and SVG beside it).

    python scripts/figures/readme_i3d.py docs/images/explain_i3d_arm_wrestling.png
"""

import sys

import matplotlib

matplotlib.use("Agg")
import jax  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import jaxvx  # noqa: E402
from jaxvx import explain, viz  # noqa: E402


def main(out: str) -> None:
    model, variables, card = jaxvx.checkpoints.load("i3d-kinetics400")
    clip = jaxvx.io.read_video("examples/arm_wrestling.mp4", max_frames=148)[132:148]
    x = jaxvx.io.preprocess(clip, **card["preprocess"])[None]
    method, model, variables = explain.build_method("deep_taylor", model, variables, card)
    forward = lambda v: model.apply(variables, v)  # noqa: E731
    rel = np.asarray(jax.jit(lambda v: method(forward, v, None))(x))[0].sum(-1)
    frames = np.asarray((x[0] + 1) / 2).clip(0, 1)
    scale = float(np.percentile(np.abs(rel), 99.5))
    with plt.rc_context({"font.size": 12}):  # 12 pt at 100 dpi: about 12 px cap height at the image's natural size
        fig, axes = plt.subplots(2, 8, figsize=(13, 4.0), dpi=100, constrained_layout=True)
        for t, ax in enumerate(axes.flat):
            ax.imshow(frames[t].mean(-1), cmap="gray", vmin=0, vmax=1)
            im = ax.imshow(rel[t], cmap="bwr", vmin=-scale, vmax=scale,
                           alpha=np.sqrt(np.clip(np.abs(rel[t]) / scale, 0, 1)))
            ax.set_title(f"frame {132 + t}", fontsize=12)
            ax.axis("off")
        bar = fig.colorbar(im, ax=axes, shrink=0.85, pad=0.01, ticks=[-scale, 0, scale])
        bar.ax.set_yticklabels([f"{-scale:+.2g}", "0", f"{scale:+.2g}"])
        bar.set_label("relevance, clipped at ±99.5th pct. of |R|")
        fig.suptitle(f"deep Taylor on i3d-kinetics400, target 'arm wrestling' (relevance sum {rel.sum():.2f}); "
                     "opacity grows with |R|", fontsize=13)
        for path in viz.save_figure(out, fig, also=("svg",)):
            print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "explain_i3d_arm_wrestling.png")
