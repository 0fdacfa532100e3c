"""The forward pass as jaxvx's engine reads it: a traced program of operations (implementation and the choice of
mechanism: :mod:`jaxvx._program`).

Every method reads ``forward(video) -> logits`` this way, whatever wrote it (Flax linen, NNX, plain JAX). To see
what it sees::

    program = jaxvx.program.trace(forward, video)   # video float32 [B, T, H, W, C]
    print(jaxvx.program.describe(program))          # one line per operation: kind, path, output shape
    program.scopes()                                # the layer paths Grad-CAM & co. take ("Mixed_5c", "conv5b")
    program.layer("Mixed_5c")                       # the operation whose output is that layer's

Kinds (:data:`KINDS`): ``conv`` and ``dense`` (with the bias and BatchNorm that follow them folded in),
``activation``, ``max_pool``, ``sum``, ``scale``, ``structure`` and ``other`` (no LRP rule: refused by name).
"""

from jaxvx._program import KINDS, Call, Node, Program, describe, evaluate, layer_vjp, trace

__all__ = ["KINDS", "Node", "Program", "Call", "trace", "describe", "evaluate", "layer_vjp"]
