"""The forward pass as a program of primitives, evaluated with backward passes of one's choosing.

Explanation methods receive ``forward(video) -> logits``, not a model. To reach every layer of any model -- a Flax
linen module, an NNX module made pure with ``nnx.split`` / ``nnx.merge`` (or wrapped by ``nnx.jit``), a plain JAX
function of ``lax.conv_general_dilated`` and ``jnp.dot`` -- jaxvx reads the program that ``forward`` computes.
:func:`trace` runs ``jax.make_jaxpr`` on it, inlines nested calls (``jit``, ``custom_jvp`` / ``custom_vjp``
functions such as ``nn.relu``, ``remat``) and groups the equations that depend on the video into :class:`Node` s,
one per operation a rule can be given:

==============  ===========================================================================================
``conv``        ``conv_general_dilated`` of the video path with a constant kernel, and
``dense``       ``dot_general`` likewise (one contracting and one free kernel axis); both with the elementwise
                affine maps by constants that follow them folded in: ``z = lin(x, W) * a + c`` becomes
                ``lin(x, W * a) + c`` when ``a`` and ``c`` vary along the output channels only. That is the
                bias, an inference-mode BatchNorm (any scale sign, zennit's canonizer), any per-channel scale
                and shift. The folded kernel has the layout ``[*spatial, I, O]`` (``[I, O]`` for dense).
``activation``  ``max`` / ``min`` with a constant (ReLU, ReLU6), ``tanh``, ``logistic``
``max_pool``    ``reduce_window_max`` (max pooling), ``reduce_max``
``sum``         ``reduce_sum``, ``reduce_window_sum`` (means, average pooling), ``add`` / ``sub`` of two
                video-path values (residual connections)
``scale``       an elementwise affine map by constants not folded into a linear layer (input
                normalisation, a BatchNorm before any convolution, the division that ends a mean)
``structure``   reshapes, transposes, broadcasts, slices, concatenation, padding, gathers, selections,
                dtype conversions: values move, and their ordinary gradient moves relevance with them
``other``       anything else on the video path: ``exp``, ``log``, ``rsqrt`` or ``integer_pow`` of an
                activation, products or quotients of two activations, ``dot_general`` of two activations,
                ``scan`` / ``while`` / ``cond``; that is, softmax, attention, LayerNorm, GELU, recurrent gates
==============  ===========================================================================================

A node's ``path`` is the JAX name stack of its (first) equation: Flax linen names each module call
(``"InceptionI3d/Mixed_4b/Branch_1/Conv3d_0b_3x3/Conv_0"``), ``jax.named_scope`` names anything; NNX modules and
plain functions without scopes have the empty path, and nodes are then told apart by ``index`` (forward order)
and ``kind``.

:func:`evaluate` runs a program equation by equation (``Primitive.bind``); a handler may replace the evaluation
of any node, typically by its ordinary output given a custom VJP (an LRP rule, guided backprop's ReLU, a faster
max-pool gradient). Convolutions are computed by :func:`jaxvx.models.conv_general_dilated` (oneDNN on the CPU
where available). Works under ``jax.jit`` and ``jax.vmap``: the trace happens where ``forward`` is called, and
the program's constants may be tracers of an enclosing transformation.

Why the primitives: module interception (``flax.linen.intercept_methods``) sees linen modules only; NNX has no
such hook, and operations written as functions (``nn.relu``, ``nn.max_pool``, ``jnp.concatenate``, ``x + y``,
``jnp.mean``) are invisible to it. Every model, however written, reaches XLA as the same few primitives, and a
rule attached there needs nothing from the user: no wrapping, renaming or folding.
"""

from __future__ import annotations

import fnmatch
import functools
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "KINDS",
    "Node",
    "Program",
    "Call",
    "trace",
    "evaluate",
    "layer_vjp",
    "path_matcher",
    "describe",
    "with_backward",
]

KINDS = ("conv", "dense", "activation", "max_pool", "sum", "scale", "structure", "other")

_INLINE = ("pjit", "jit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr",
           "remat", "checkpoint", "remat2", "custom_lin")
_ELEMENTWISE = {
    "add", "sub", "mul", "div", "neg", "max", "min", "abs", "sign", "exp", "exp2", "log", "log1p", "expm1", "sqrt",
    "rsqrt", "cbrt", "pow", "integer_pow", "square", "tanh", "logistic", "erf", "erfc", "sin", "cos",
    "convert_element_type", "copy", "copy_p", "select_n", "clamp", "reduce_precision", "floor", "ceil", "round",
    "is_finite", "nextafter", "atan2", "add_any", "stop_gradient",
}
_STRUCTURE = {
    "reshape", "broadcast_in_dim", "transpose", "squeeze", "expand_dims", "concatenate", "slice", "dynamic_slice",
    "gather", "rev", "pad", "convert_element_type", "copy", "copy_p", "select_n", "reduce_precision", "split",
    "dynamic_update_slice", "stop_gradient",
}
_AFFINE = {"add", "sub", "mul", "div", "neg", "add_any"}


# ------------------------------------------------------------------------------------------------- the program
@dataclass(frozen=True)
class _Lit:
    value: Any


@dataclass
class _Eqn:
    prim: Any
    params: dict
    ins: tuple  # var ids (int) or _Lit
    outs: tuple[int, ...]
    path: str
    avals: tuple  # of the outputs
    in_shapes: tuple = ()


@dataclass
class Node:
    """One operation on the video path (see the module docstring for the kinds).

    ``inputs``: ids of its video-path inputs; ``output``: id of its output; ``shape``: the output's shape;
    ``nonneg``: every video-path input is non-negative by construction (the output of a ReLU, and what pooling,
    moving or summing such outputs gives); ``relu``: the node is ``max(x, 0)``; ``folded``: the primitives folded
    into the node after its own (a linear layer's bias and BatchNorm, a mean's division).
    """

    kind: str
    path: str
    primitive: str
    index: int
    inputs: tuple[int, ...]
    output: int
    shape: tuple[int, ...]
    dtype: Any = None
    nonneg: bool = False
    relu: bool = False
    folded: tuple[str, ...] = ()
    eqns: tuple = field(default=(), repr=False)
    chain: tuple = field(default=(), repr=False)  # linear nodes: ((op, const ref, const on the left), ...)
    feature_axes: tuple[int, ...] = field(default=(), repr=False)

    @property
    def scopes(self) -> tuple[str, ...]:
        """The paths of every equation the node covers (a folded BatchNorm's among them)."""
        return tuple(dict.fromkeys((self.path,) + tuple(e.path for e in self._eqns[1:])))

    _eqns: tuple = field(default=(), repr=False)

    def describe(self) -> str:
        where = self.path or "<no name>"
        folded = f" + {'/'.join(self.folded)}" if self.folded else ""
        return f"#{self.index} {self.kind} {self.primitive}{folded} at {where} -> {list(self.shape)}"


@dataclass
class Program:
    """``forward`` traced for one input shape: flat equations, constants, and the :class:`Node` s on the video
    path in forward order."""

    eqns: list
    consts: dict
    inputs: tuple  # var ids of the input's leaves
    output: Any  # var id or _Lit
    nodes: list
    last_of: dict = field(repr=False, default_factory=dict)  # eqn index -> node evaluated there
    member: set = field(repr=False, default_factory=set)  # eqn indices evaluated as part of a node

    def find(self, kind: str | Sequence[str]) -> list:
        kinds = (kind,) if isinstance(kind, str) else tuple(kind)
        return [n for n in self.nodes if n.kind in kinds]

    def scopes(self) -> list[str]:
        """Every named scope of the program (each path and each of its prefixes), in forward order."""
        out: dict[str, None] = {}
        for n in self.nodes:
            for path in n.scopes:
                parts = [q for q in path.split("/") if q]
                for i in range(1, len(parts) + 1):
                    out.setdefault("/".join(parts[:i]), None)
        return list(out)

    def layer(self, spec: str, *, name: str = "layer") -> Node:
        """The node whose output is the output of the scope ``spec`` names: the last node (in forward order) with
        an equation inside it. ``spec`` is a path pattern matched against whole scopes or their trailing parts
        (``"Mixed_5c"``, ``"conv5b"``, ``"cnn/conv5_3"``, ``"layer4_*"``); it must name exactly one scope. A
        BatchNorm folded into a convolution is inside that convolution's node, so a convolution's output is taken
        after the BatchNorm that follows it."""
        if not isinstance(spec, str) or not spec:
            raise TypeError(f"{name}: expected a layer path such as 'conv5b' or 'Mixed_5c', got {spec!r}")
        match = path_matcher(spec)
        hits = [sc for sc in self.scopes() if match(sc)]
        # a scope inside another match ("Mixed_5c/Branch_0" inside "Mixed_5c") is not a second layer
        tops = [sc for sc in hits if not any(sc != h and sc.startswith(h + "/") for h in hits)]
        if not tops:
            listing = ", ".join(self.scopes()[:80]) or "(none: forward's operations carry no names)"
            raise ValueError(f"{name}: no operation of forward lies in a scope matching {spec!r}; its scopes are: "
                             f"{listing}")
        if len(tops) > 1:
            raise ValueError(f"{name}: {spec!r} matches {len(tops)} scopes ({', '.join(tops[:10])}); name one")
        scope = tops[0]
        inside = [n for n in self.nodes if any(p == scope or p.startswith(scope + "/") for p in n.scopes)]
        return inside[-1]


def _var_types():
    from jax.extend import core

    return core.Literal, core.Var


def _flatten(jaxpr, consts, in_refs, prefix, eqns, const_values, counter):
    Literal, _ = _var_types()
    env = {}

    def new():
        counter[0] += 1
        return counter[0]

    def read(v):
        if isinstance(v, Literal):
            return _Lit(v.val)
        return env[v]

    for v, c in zip(jaxpr.constvars, consts):
        i = new()
        const_values[i] = c
        env[v] = i
    for v, r in zip(jaxpr.invars, in_refs):
        env[v] = r
    for e in jaxpr.eqns:
        ins = tuple(read(a) for a in e.invars)
        stack = str(e.source_info.name_stack)
        path = "/".join(p for p in (prefix, stack) if p)
        inner = _inner_jaxpr(e)
        if inner is not None:
            sub, sub_consts = inner
            outs = _flatten(sub, sub_consts, ins, path, eqns, const_values, counter)
            for o, r in zip(e.outvars, outs):
                env[o] = r
            continue
        outs = tuple(new() for _ in e.outvars)
        for o, i in zip(e.outvars, outs):
            env[o] = i
        eqns.append(_Eqn(e.primitive, dict(e.params), ins, outs, path, tuple(o.aval for o in e.outvars),
                         tuple(tuple(a.aval.shape) for a in e.invars)))
    return tuple(read(v) for v in jaxpr.outvars)


def _inner_jaxpr(e):
    if e.primitive.name not in _INLINE:
        return None
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        j = e.params.get(key)
        if j is None:
            continue
        if hasattr(j, "jaxpr"):  # ClosedJaxpr
            return j.jaxpr, j.consts
        return j, ()
    return None


def _is_float(aval) -> bool:
    return jnp.issubdtype(aval.dtype, jnp.inexact)


def trace(forward: Callable, x) -> Program:
    """``forward`` at ``x`` as a :class:`Program` (abstract: nothing is computed but what the trace computes).

    ``forward`` must return one float array (the logits); ``x`` is its only argument (an array, or a pytree of
    arrays whose leaves are all on the path).
    """
    from jaxvx.models._layers import plain_convolutions

    roots: set[str] = set()
    with plain_convolutions(), nn.intercept_methods(_root_recorder(roots)):
        # a fresh function: jax caches traces by function, and a trace made outside this block (the rewritten
        # convolutions, no root names) must not be reused
        closed, out_shape = jax.make_jaxpr(lambda v: forward(v), return_shape=True)(x)
    if not isinstance(out_shape, jax.ShapeDtypeStruct):
        raise ValueError(f"forward must return one array (the logits [B, K]), got {jax.tree.structure(out_shape)}; "
                         "for a model returning (logits, extras), pass lambda v: model.apply(variables, v)[0]")
    eqns, const_values = [], {}
    n_in = len(closed.jaxpr.invars)
    input_ids = tuple(range(1, n_in + 1))
    counter = [n_in]
    (output,) = _flatten(closed.jaxpr, closed.consts, input_ids, "", eqns, const_values, counter)
    for e in eqns:  # linen's name stack holds the root's class name and "Module.method" calls: paths are module paths
        e.path = _module_path(e.path, roots)
    program = Program(eqns, const_values, input_ids, output, [])
    _analyse(program)
    _name_by_parameters(program, _parameter_paths(forward))
    return program


def _parameter_paths(forward) -> dict[int, str]:
    """``id(array) -> path`` of the arrays that ``forward`` closes over, names as a global or is partially applied to
    (Flax variables, an NNX ``State`` or ``Module``, a dict of parameters): ``"stem/kernel"``, ``"params"`` and
    ``"value"`` left out."""
    paths: dict[int, str] = {}
    seen: set[int] = set()

    def key_name(k):
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                return str(getattr(k, attr))
        return str(k)

    def collect(obj, depth):
        if id(obj) in seen or depth > 4:
            return
        seen.add(id(obj))
        if callable(obj) and not hasattr(obj, "shape"):
            visit(obj, depth + 1)
            return
        try:
            from flax import nnx

            if isinstance(obj, nnx.Module):
                obj = nnx.state(obj)
        except Exception:  # noqa: BLE001 - no NNX, or not a module: take the object as it is
            pass
        try:
            leaves = jax.tree_util.tree_leaves_with_path(obj)
        except Exception:  # noqa: BLE001 - not a pytree
            return
        for path, leaf in leaves:
            if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
                names = [key_name(k) for k in path]
                names = [n for n in names if n != "value"]
                if names and names[0] in ("params", "batch_stats"):
                    names = names[1:]
                paths.setdefault(id(leaf), "/".join(names))

    def visit(fn, depth):
        if depth > 4:
            return
        if isinstance(fn, functools.partial):
            collect(fn.func, depth)
            for a in tuple(fn.args) + tuple(fn.keywords.values()):
                collect(a, depth)
            return
        wrapped = getattr(fn, "__wrapped__", None)
        if wrapped is not None:
            collect(wrapped, depth)
        for cell in getattr(fn, "__closure__", None) or ():
            try:
                collect(cell.cell_contents, depth)
            except ValueError:  # an empty cell
                pass
        # the globals it names: a ``lambda v: nnx.merge(graphdef, state)(v)`` written at a script's or notebook's top
        # level holds ``state`` as a global, not in a closure
        code, namespace = getattr(fn, "__code__", None), getattr(fn, "__globals__", None)
        if code is not None and isinstance(namespace, dict):
            for name in code.co_names:
                obj = namespace.get(name)
                if obj is not None and not isinstance(obj, (type, types.ModuleType)):
                    collect(obj, depth)

    visit(forward, 0)
    return paths


def _name_by_parameters(program: Program, paths: dict[int, str]):
    """Give unnamed linear nodes the path of their kernel's owner (``"stem"`` for ``stem/kernel``)."""
    if not paths:
        return
    for node in program.nodes:
        if node.kind not in ("conv", "dense") or node.path:
            continue
        e = program.eqns[node.eqns[0]]
        ref = next((r for r in e.ins if not (isinstance(r, int) and r in node.inputs)), None)
        while isinstance(ref, int) and ref not in program.consts and ref in program.producer:
            src = program.eqns[program.producer[ref]]
            if src.prim.name not in ("convert_element_type", "transpose", "reshape", "copy", "copy_p"):
                break
            ref = src.ins[0]
        if isinstance(ref, int) and ref in program.consts:
            owner = paths.get(id(program.consts[ref]))
            if owner:
                node.path = owner.rsplit("/", 1)[0] if "/" in owner else owner


def _module_path(stack: str, roots: set) -> str:
    """A linen name stack as a module path: ``"CNNLSTM.step_logits/CNNLSTM.frame_features/cnn/conv1"`` ->
    ``"cnn/conv1"`` (a method call ``"name.method"`` is the module ``name``; the root module is left out)."""
    if not roots:
        return stack
    parts = []
    for part in stack.split("/"):
        name = part.split(".", 1)[0] if "." in part else part
        if name in roots and not parts:
            continue
        if not parts or parts[-1] != name or "." not in part:
            parts.append(name)
    return "/".join(parts)


def _root_recorder(roots: set):
    """A linen interceptor that records the class names of root modules (``module.path == ()``)."""
    def record(next_fun, args, kwargs, context):
        module = context.module
        try:
            if context.method_name == "__call__" and not tuple(module.path):
                roots.add(type(module).__name__)
        except Exception:  # noqa: BLE001 - an unbound module has no path: nothing to record
            pass
        return next_fun(*args, **kwargs)

    return record


# ------------------------------------------------------------------------------------------------- the analysis
def _analyse(program: Program):
    eqns = program.eqns
    producer: dict[int, int] = {}
    consumers: dict[int, list] = {}
    active: set[int] = set(program.inputs)
    for k, e in enumerate(eqns):
        for o in e.outs:
            producer[o] = k
        for r in e.ins:
            if isinstance(r, int):
                consumers.setdefault(r, []).append(k)
        if any(isinstance(r, int) and r in active for r in e.ins):
            for o, a in zip(e.outs, e.avals):
                if _is_float(a):
                    active.add(o)
    if isinstance(program.output, int):
        consumers.setdefault(program.output, []).append(-1)

    def is_active(r):
        return isinstance(r, int) and r in active

    nonneg: set[int] = set()
    absorbed: set[int] = set()
    nodes = []
    for k, e in enumerate(eqns):
        if k in absorbed or not any(is_active(o) for o in e.outs):
            continue
        act = tuple(is_active(r) for r in e.ins)
        if not any(act):  # a float output computed from integers derived from the video: nothing to propagate
            continue
        kind = _kind(e, act)
        node = Node(kind, e.path, e.prim.name, len(nodes), tuple(r for r, a in zip(e.ins, act) if a), e.outs[0],
                    tuple(e.avals[0].shape), e.avals[0].dtype, eqns=(k,))
        if kind in ("conv", "dense"):
            _absorb_chain(node, e, eqns, producer, consumers, is_active, absorbed, program)
        elif e.prim.name in ("reduce_sum", "reduce_window_sum"):
            _absorb_scale(node, eqns, consumers, is_active, absorbed)
        node.nonneg = all(r in nonneg for r in node.inputs)
        node.relu = _is_relu(e, node)
        node._eqns = tuple(eqns[j] for j in node.eqns)
        if _makes_nonneg(node, e, nonneg):
            nonneg.add(node.output)
        program.last_of[node.eqns[-1]] = node
        program.member.update(node.eqns)
        nodes.append(node)
    program.nodes = nodes
    program.producer = producer


def _kind(e: _Eqn, act: tuple[bool, ...]) -> str:
    name = e.prim.name
    if len(e.outs) != 1 and name not in ("split",):
        return "other"
    if name == "conv_general_dilated":
        return "conv" if act == (True, False) else "other"
    if name == "dot_general":
        if sum(act) != 1:
            return "other"
        return "dense" if _dense_layout(e, act.index(True)) is not None else "other"
    if name in ("add", "sub", "add_any"):
        return "sum" if all(act) else "scale"
    if name == "mul":
        return "other" if all(act) else "scale"
    if name == "div":
        return "scale" if act == (True, False) else "other"
    if name == "neg":
        return "scale"
    if name in ("max", "min"):
        return "other" if all(act) else "activation"
    if name in ("tanh", "logistic"):
        return "activation"
    if name in ("reduce_window_max", "reduce_max"):
        return "max_pool"
    if name in ("reduce_sum", "reduce_window_sum", "cumsum"):
        return "sum"
    if name in _STRUCTURE:
        if name == "select_n" and act[0]:
            return "other"
        if name == "pad" and act[1]:
            return "other"
        return "structure"
    return "other"


def _is_relu(e: _Eqn, node: Node) -> bool:
    """``max(x, 0)`` with the zero a literal (``nn.relu``, ``jax.nn.relu``, ``jnp.maximum(x, 0)``)."""
    if node.kind != "activation" or e.prim.name != "max":
        return False
    c = [r for r in e.ins if not (isinstance(r, int) and r in node.inputs)]
    return len(c) == 1 and isinstance(c[0], _Lit) and np.all(np.asarray(c[0].value) == 0)


def _makes_nonneg(node: Node, e: _Eqn, nonneg: set) -> bool:
    if node.kind == "activation" and e.prim.name == "max":
        c = [r for r in e.ins if not (isinstance(r, int) and r in node.inputs)]
        return len(c) == 1 and isinstance(c[0], _Lit) and np.all(np.asarray(c[0].value) >= 0)
    if node.kind in ("max_pool", "structure") or (node.kind == "sum" and e.prim.name != "sub"):
        return node.nonneg and all(isinstance(r, int) and r in node.inputs for r in e.ins
                                   if not (e.prim.name in ("pad", "select_n", "gather", "dynamic_slice")))
    return False


def _dense_layout(e: _Eqn, x_pos: int):
    """``(x contracting axis, kernel contracting axis, kernel free axis)`` of a ``dot_general`` that a dense layer
    computes (one contracting axis, no batch axes, a rank-2 kernel), else None."""
    (lc, rc), (lb, rb) = e.params["dimension_numbers"]
    if lb or rb or len(lc) != 1:
        return None
    k_pos = 1 - x_pos
    kernel_rank = len(_aval_shape(e, k_pos))
    if kernel_rank != 2:
        return None
    xc, kc = (lc[0], rc[0]) if x_pos == 0 else (rc[0], lc[0])
    return xc, kc, 1 - kc


def _aval_shape(e: _Eqn, pos: int):
    return e.in_shapes[pos]


def _absorb_chain(node, e, eqns, producer, consumers, is_active, absorbed, program):
    """Fold the elementwise affine maps by per-channel constants that follow a linear node into it."""
    out_rank = len(node.shape)
    if node.kind == "conv":
        feature = (e.params["dimension_numbers"].out_spec[1],)
    else:
        x_pos = 0 if is_active(e.ins[0]) else 1
        feature = (out_rank - 1,) if x_pos == 0 else (0,)
    node.feature_axes = feature
    current = node.output
    chain, folded = [], []
    while True:
        users = consumers.get(current, [])
        if len(users) != 1 or users[0] < 0:
            break
        k = users[0]
        f = eqns[k]
        if f.prim.name not in _AFFINE or not f.avals[0].shape == node.shape:
            break
        pos = [i for i, r in enumerate(f.ins) if r == current]
        others = [r for r in f.ins if r != current]
        if len(pos) != 1 or any(is_active(r) for r in others):
            break
        if f.prim.name == "div" and pos[0] != 0:
            break
        if others and not set(_varying(others[0], eqns, producer, program)) <= set(feature):
            break
        chain.append((f.prim.name, others[0] if others else None, pos[0] == 1))
        folded.append(f.prim.name)
        absorbed.add(k)
        node.eqns = node.eqns + (k,)
        current = f.outs[0]
    node.chain = tuple(chain)
    node.folded = tuple(folded)
    node.output = current


def _absorb_scale(node, eqns, consumers, is_active, absorbed):
    """Take the multiplications and divisions by constants that follow a sum into it (a mean, an average pooling:
    its rule then sees the average, as it sees an average-pooling module)."""
    current = node.output
    while True:
        users = consumers.get(current, [])
        if len(users) != 1 or users[0] < 0:
            break
        f = eqns[users[0]]
        if f.prim.name not in ("mul", "div") or tuple(f.avals[0].shape) != node.shape:
            break
        others = [r for r in f.ins if r != current]
        if len(others) != 1 or is_active(others[0]) or (f.prim.name == "div" and f.ins[0] != current):
            break
        absorbed.add(users[0])
        node.eqns = node.eqns + (users[0],)
        node.folded = node.folded + (f.prim.name,)
        current = f.outs[0]
    node.output = current


def _varying(ref, eqns, producer, program, depth=0) -> tuple[int, ...]:
    """The axes along which the constant ``ref`` (a value of the program's output rank or a scalar) varies."""
    shape = np.shape(ref.value) if isinstance(ref, _Lit) else _shape_of(ref, eqns, producer, program)
    everywhere = tuple(i for i, s in enumerate(shape) if s != 1)
    if isinstance(ref, _Lit) or ref not in producer or depth > 64:
        return everywhere
    e = eqns[producer[ref]]
    name = e.prim.name
    if name == "broadcast_in_dim":
        src = e.ins[0]
        inner = _varying(src, eqns, producer, program, depth + 1)
        dims = e.params["broadcast_dimensions"]
        return tuple(sorted(dims[i] for i in inner))
    if name == "reshape":
        src = e.ins[0]
        src_shape = np.shape(src.value) if isinstance(src, _Lit) else _shape_of(src, eqns, producer, program)
        if [s for s in src_shape if s != 1] == [s for s in shape if s != 1]:
            inner = _varying(src, eqns, producer, program, depth + 1)
            big_src = [i for i, s in enumerate(src_shape) if s != 1]
            big_out = [i for i, s in enumerate(shape) if s != 1]
            return tuple(o for i, o in zip(big_src, big_out) if i in inner)
        return everywhere
    if name in _ELEMENTWISE:
        out = set()
        for r in e.ins:
            r_shape = np.shape(r.value) if isinstance(r, _Lit) else _shape_of(r, eqns, producer, program)
            if len(r_shape) == len(shape):
                out.update(_varying(r, eqns, producer, program, depth + 1))
            elif len(r_shape) != 0:
                return everywhere
        return tuple(sorted(out & set(everywhere)))
    return everywhere


def _shape_of(ref, eqns, producer, program):
    if ref in producer:
        e = eqns[producer[ref]]
        return tuple(e.avals[e.outs.index(ref)].shape)
    return tuple(np.shape(program.consts[ref]))


# ------------------------------------------------------------------------------------------------- evaluation
def _bind(e: _Eqn, vals):
    if e.prim.name == "conv_general_dilated":
        return [_conv(vals[0], vals[1], e.params)]
    out = e.prim.bind(*vals, **e.params)
    return list(out) if e.prim.multiple_results else [out]


def _conv(x, w, params):
    from jaxvx.models._layers import conv_general_dilated

    return conv_general_dilated(x, w, params["window_strides"], params["padding"], params["lhs_dilation"],
                                params["rhs_dilation"], params["dimension_numbers"], params["feature_group_count"],
                                params["batch_group_count"], params["precision"],
                                params["preferred_element_type"])


@dataclass
class Call:
    """A node being evaluated: its ``inputs`` (the video-path values) and what a handler needs to rebuild it.

    ``forward()``: the node's ordinary output. ``layer()``: ``(fn, variables)`` with ``fn(variables, *inputs)``
    the node's output as a pure function of its video-path inputs; for linear nodes ``variables`` is
    ``{"params": {"kernel": W, "bias": b}}`` with the affine chain folded in (kernel ``[*spatial, I, O]`` or
    ``[I, O]``; ``bias`` shaped to broadcast against the output), otherwise ``{"params": {}}``.
    """

    node: Node
    inputs: tuple
    _read: Callable = field(repr=False)
    _program: Program = field(repr=False)
    _layer: Any = field(default=None, repr=False)

    def forward(self):
        fn, variables = self.layer()
        return fn(variables, *self.inputs)

    def layer(self):
        if self._layer is None:
            self._layer = _linear_layer(self) if self.node.kind in ("conv", "dense") else _plain_layer(self)
        return self._layer


def _plain_layer(call: Call):
    """The node's equations in order, its video-path inputs as arguments, everything else as read now."""
    node, program = call.node, call._program
    eqns = [program.eqns[k] for k in node.eqns]
    inside = set(node.inputs) | {o for e in eqns for o in e.outs}
    consts = {(j, i): call._read(r) for j, e in enumerate(eqns) for i, r in enumerate(e.ins)
              if not (isinstance(r, int) and r in inside)}

    def fn(variables, *inputs):
        env = dict(zip(node.inputs, inputs))
        for j, e in enumerate(eqns):
            vals = [consts[j, i] if (j, i) in consts else env[r] for i, r in enumerate(e.ins)]
            env.update(zip(e.outs, _bind(e, vals)))
        return env[node.output]

    return fn, {"params": {}}


def _linear_layer(call: Call):
    node = call.node
    e = call._program.eqns[node.eqns[0]]
    x_pos = 0 if (isinstance(e.ins[0], int) and e.ins[0] in node.inputs) else 1
    kernel = jnp.asarray(call._read(e.ins[1 - x_pos]))
    shape_r = tuple(s if i in node.feature_axes else 1 for i, s in enumerate(node.shape))
    scale, offset = _fold(node, shape_r, call._read, kernel.dtype)
    if node.kind == "conv":
        dn = e.params["dimension_numbers"]
        rhs = dn.rhs_spec
        nd = len(rhs)
        kernel = jnp.transpose(kernel, tuple(rhs[2:]) + (rhs[1], rhs[0]))  # [*spatial, I, O]
        canon = lax.ConvDimensionNumbers(dn.lhs_spec, (nd - 1, nd - 2) + tuple(range(nd - 2)), dn.out_spec)
        conv_params = dict(e.params, dimension_numbers=canon)

        def lin(x, w):
            return _conv(x, w, conv_params)
    else:
        xc, kc, kf = _dense_layout(e, x_pos)
        if kc != 0:
            kernel = kernel.T  # [I, O]
        out_rank = len(node.shape)

        def lin(x, w):
            y = lax.dot_general(x, w, (((xc,), (0,)), ((), ())), precision=e.params.get("precision"),
                                preferred_element_type=e.params.get("preferred_element_type"))
            return y if x_pos == 0 else jnp.moveaxis(y, out_rank - 1, 0)
    if scale is not None:
        kernel = kernel * scale.reshape(-1).astype(kernel.dtype)
    params = {"kernel": kernel}
    if offset is not None:
        params["bias"] = offset

    def fn(variables, x):
        p = variables["params"]
        y = lin(x, p["kernel"])
        return y + p["bias"].astype(y.dtype) if "bias" in p else y

    return fn, {"params": params}


def _fold(node: Node, shape_r, read, dtype):
    """``(a, c)`` with the node's affine chain ``y -> a * y + c`` on per-channel arrays of shape ``shape_r``
    (``None`` for a = 1 and for c = 0)."""
    a, c = None, None
    for op, ref, left in node.chain:
        k = None if ref is None else _reduced(jnp.asarray(read(ref), dtype), shape_r)
        if op in ("add", "add_any"):
            c = k if c is None else c + k
        elif op == "sub":
            if left:  # k - y
                a = -jnp.ones(shape_r, dtype) if a is None else -a
                c = k if c is None else k - c
            else:
                c = -k if c is None else c - k
        elif op == "mul":
            a = k if a is None else a * k
            c = None if c is None else c * k
        elif op == "div":
            a = 1 / k if a is None else a / k
            c = None if c is None else c / k
        elif op == "neg":
            a = -jnp.ones(shape_r, dtype) if a is None else -a
            c = None if c is None else -c
    if a is not None:
        a = jnp.broadcast_to(a, shape_r)
    if c is not None:
        c = jnp.broadcast_to(c, shape_r)
    return a, c


def _reduced(k, shape_r):
    """``k`` (constant along every axis where ``shape_r`` is 1) cut to one entry along those axes."""
    if k.ndim == 0:
        return k
    index = tuple(slice(0, 1) if r == 1 and s != 1 else slice(None) for s, r in zip(k.shape, shape_r))
    return k[index]


def evaluate(program: Program, x, handler: Callable | None = None, *, taps: dict | None = None):
    """The program's output at ``x``; ``handler(call) -> output | None`` may replace any node's evaluation
    (``None``: the ordinary one). ``taps``: ``{node index: delta}``; each such node's output gets ``delta`` added
    (zeros whose cotangent is the gradient there) and the result is ``(output, {node index: its output})``."""
    env = dict(program.consts)
    leaves = jax.tree.leaves(x)
    if len(leaves) != len(program.inputs):
        raise ValueError(f"evaluate: the program takes {len(program.inputs)} input arrays, got {len(leaves)}")
    env.update(zip(program.inputs, leaves))
    captured: dict = {}

    def read(r):
        return jnp.asarray(r.value) if isinstance(r, _Lit) else env[r]

    for k, e in enumerate(program.eqns):
        node = program.last_of.get(k)
        if node is not None and len(e.outs) == 1:
            call = Call(node, tuple(env[i] for i in node.inputs), read, program)
            out = handler(call) if handler is not None else None
            out = call.forward() if out is None else out
            if taps is not None and node.index in taps:
                out = out + jnp.asarray(taps[node.index]).astype(out.dtype)
                captured[node.index] = out
            env[node.output] = out
            continue
        if k in program.member and node is None:
            continue
        for o, v in zip(e.outs, _bind(e, [read(r) for r in e.ins])):
            env[o] = v
    if taps is not None:
        return read(program.output), captured
    return read(program.output)


def layer_vjp(forward: Callable, x, layers: Sequence[str], *, handler: Callable | None = None,
              name: str = "layer"):
    """Logits, the outputs of ``layers`` (scopes, :meth:`Program.layer`) and a pull-back from logit cotangents to
    those outputs, in one forward pass: ``(logits, activations, pullback)``.

    ``handler``: ``program -> (call -> output | None)`` (rules attached to the backward pass: the cotangent is then
    the relevance reaching each layer), or None for the ordinary gradient.
    """
    program = trace(forward, x)
    nodes = [program.layer(spec, name=name) for spec in layers]
    h = handler(program) if handler is not None else None

    def f(deltas):
        out, captured = evaluate(program, x, h, taps={n.index: d for n, d in zip(nodes, deltas)})
        return out, [captured[n.index] for n in nodes]

    zeros = [jnp.zeros(n.shape, n.dtype) for n in nodes]
    logits, pull, acts = jax.vjp(f, zeros, has_aux=True)
    return logits, acts, lambda ct: pull(ct)[0]


def with_backward(backward: Callable, inputs: tuple, output, extras=()):
    """``output`` unchanged, with the VJP ``backward(inputs, output, extras, cotangent) -> input cotangents``.

    ``inputs``: a tuple of the module's array inputs; ``output``: its (already computed) array output;
    ``extras``: a pytree of float arrays the backward needs (parameters, bounds). The ordinary gradient through
    whatever computed ``output`` is cut (``stop_gradient``), so the module's own backward is never built; the
    extras get zero cotangents. ``backward`` must return one cotangent per input, shaped like it.
    """
    inputs = tuple(inputs)

    @jax.custom_vjp
    def attach(inputs, output, extras):
        return output

    def fwd(inputs, output, extras):
        return output, (inputs, output, extras)

    def bwd(res, ct):
        ins, out, ext = res
        grads = tuple(backward(ins, out, ext, ct))
        if len(grads) != len(ins):
            raise ValueError(f"backward returned {len(grads)} cotangents for {len(ins)} inputs")
        grads = tuple(jnp.asarray(g, dtype=i.dtype).reshape(i.shape) for g, i in zip(grads, ins))
        return grads, jnp.zeros_like(out), jax.tree.map(jnp.zeros_like, ext)

    attach.defvjp(fwd, bwd)
    return attach(inputs, jax.lax.stop_gradient(output), extras)


# --------------------------------------------------------------------------------------------------- matching
def path_matcher(pattern: str) -> Callable[[str], bool]:
    """``path -> bool``: the whole path or a trailing part of it on ``/`` boundaries matches the shell pattern
    (``"conv5b"`` matches ``"C3D/conv5b"``; ``"Mixed_5c/*"`` everything inside ``Mixed_5c``)."""

    def match(path: str) -> bool:
        if fnmatch.fnmatchcase(path, pattern):
            return True
        parts = path.split("/")
        return any(fnmatch.fnmatchcase("/".join(parts[i:]), pattern) for i in range(1, len(parts)))

    return match


def describe(program: Program, nodes=None, limit: int = 80) -> str:
    """One line per node (``#index kind primitive at path -> shape``), at most ``limit`` of them."""
    nodes = program.nodes if nodes is None else nodes
    lines = [n.describe() for n in nodes[:limit]]
    if len(nodes) > limit:
        lines.append(f"... ({len(nodes) - limit} more)")
    return "\n".join(lines)
