"""Extraction of the operator graph from Relax: one offloaded function (its composites)
-> the float ops it computes (:func:`extract_graph`), plus a numpy float reference
(:func:`forward_network`)."""
from __future__ import annotations

from collections import Counter
from typing import Optional, Sequence

import numpy as np
import tvm
from tvm import relax, tirx

from ..errors import UnsupportedError
from ..frontend.origin import origin_of
from ..partition.patterns import OP_TO_ACTIVATION, activation_params, channel_bias, is_call_to, resolve
from .network import OpGraph, graph_input
from .ops import Add, Concat, Conv2D, DenseLayer, Flatten, Op, Pool2D


def _func_name(func: relax.Function) -> str:
    if func.attrs is not None and "global_symbol" in func.attrs:
        return str(func.attrs["global_symbol"])
    return "<offloaded function>"


# The Relax op that names a composite's layer (the one its torch module emitted), by kind.
_PRINCIPAL = ("relax.matmul", "relax.nn.conv2d", "relax.nn.conv1d", "relax.nn.max_pool2d", "relax.nn.avg_pool2d",
              "relax.mean", "relax.concat", "relax.add", "relax.reshape", "relax.flatten")
# Per op family, the words a torch class name holds when the class is that op (Linear, Conv2d ...).
_WORDS = {"dense": ("linear",), "conv": ("conv",), "pool": ("pool",), "add": (), "flatten": ("flatten",),
          "concat": ()}


class LayerNamer:
    """Names layers as the user's model does: ``features.3 (Conv2d 16->32, 3x3)`` for an op
    imported from a torch module (its span, :mod:`tvm_spinn.frontend.origin`), else by its
    kind, numbered over the whole model in run order: ``conv2d #2 (16->32, 3x3)``. One namer
    for all offloaded functions of a model keeps the numbers and names unique."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()

    def name(self, origin: Optional[tuple], word: str, kind: str, details: str) -> str:
        """origin: (module path, class) or None; word: the op's word (conv2d, dense, maxpool,
        add ...); kind: its family (a key of _WORDS); details: "16->32, 3x3" or ""."""
        if origin is None:
            self.counts[word] += 1
            return f"{word} #{self.counts[word]}" + (f" ({details})" if details else "")
        path, cls = origin
        own = any(k in cls.lower() for k in _WORDS[kind])  # Conv2d says conv, Linear says dense
        label = cls if own else word
        name = f"{path} ({label}{(' ' if kind in ('dense', 'conv', 'pool') else ', ') + details if details else ''})"
        self.counts[name] += 1  # a module called twice in one model: features.3 ... #2
        return name if self.counts[name] == 1 else f"{name} #{self.counts[name]}"


def composite_origin(comp: relax.Function) -> Optional[tuple]:
    """(module path, class) of the torch module a composite's principal op came from, else None."""
    _, calls = _calls(comp)
    for op_name in _PRINCIPAL:
        if op_name in calls and origin_of(calls[op_name]) is not None:
            return origin_of(calls[op_name])
    return None


def describe_function(func: relax.Function) -> str:
    """A short readable name of an offloaded function: the torch modules of its first and
    last layers ("features.0 .. head"), else its first and last composites ("conv2d .. dense")."""
    comps = [b.value for b in _bindings(func.body) if isinstance(b.value, relax.Function)
             and b.value.attrs is not None and "Composite" in b.value.attrs]
    if not comps:
        return "no layers"
    ends = []
    for comp in (comps[0], comps[-1]):
        origin = composite_origin(comp)
        ends.append(origin[0] if origin else str(comp.attrs["Composite"]).split(".", 1)[-1].split("_")[0])
    return ends[0] if len(comps) == 1 or ends[0] == ends[1] else f"{ends[0]} .. {ends[1]}"


def _bindings(seq: relax.Expr) -> list:
    if not isinstance(seq, relax.SeqExpr):
        raise UnsupportedError(f"expected a function body of bindings, got {type(seq).__name__}")
    return [b for block in seq.blocks for b in block.bindings]


def _const(expr: relax.Expr, bindings: dict, what: str, where: str) -> np.ndarray:
    """numpy value of a constant, reached through an optional reshape."""
    value = resolve(expr, bindings)
    if is_call_to(value, "relax.reshape"):
        value = resolve(value.args[0], bindings)
    if not isinstance(value, tvm.ir.GenericConst):
        raise UnsupportedError(f"{where}: the {what} is not a constant")
    return value.value.numpy()


def _layer_from_composite(comp: relax.Function, namer: LayerNamer, where: str) -> DenseLayer:
    """Read weight, bias and activation from one ``spinnaker.dense*`` composite."""
    composite = str(comp.attrs["Composite"]) if comp.attrs is not None else "?"
    where = f"{where}, {composite}"
    if not composite.startswith("spinnaker.dense"):
        raise UnsupportedError(f"{where}: not a dense composite")
    if len(comp.params) != 1:  # the importer's reshape of (batch, T, K) to (batch * T, K) adds a shape
        raise UnsupportedError(f"{where}: a dense layer over several vectors per sample (e.g. a Linear on "
                               "(batch, T, K)); the board's dense layers take one vector per sample")
    bindings = {}
    matmul = add = None
    calls = {}
    for binding in _bindings(comp.body):
        value = binding.value
        bindings[binding.var] = value
        if is_call_to(value, "relax.matmul"):
            matmul = value
        elif is_call_to(value, "relax.add"):
            add = value
        elif isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
            calls[value.op.name] = value
    activation, act_params = _activation(calls)
    if matmul is None or not matmul.args[0].same_as(comp.params[0]):
        raise UnsupportedError(f"{where}: no matmul of the composite's input")

    rhs = resolve(matmul.args[1], bindings)
    if is_call_to(rhs, "relax.permute_dims"):
        # Linear as imported: the constant is already (out_features, in_features).
        weight = _const(rhs.args[0], bindings, "weight", where)
    else:
        # matmul(x, W) with W (in_features, out_features).
        weight = _const(rhs, bindings, "weight", where).T

    bias = None
    if add is not None:
        lhs, other = add.args
        operand = other if resolve(lhs, bindings).same_as(matmul) else lhs
        bias = _const(operand, bindings, "bias", where).reshape(-1)

    out_f, in_f = weight.shape
    act = "" if activation == "none" else f", {activation}"
    name = namer.name(composite_origin(comp), "dense", "dense", f"{in_f}->{out_f}{act}")
    return DenseLayer(weight, bias, activation, name=name, act_params=act_params)


def _ints(values) -> tuple:
    return tuple(int(v) for v in values)


def _calls(comp: relax.Function) -> tuple[dict, dict]:
    """(bindings var -> value, op name -> call) of a composite's body."""
    bindings, calls = {}, {}
    for binding in _bindings(comp.body):
        bindings[binding.var] = binding.value
        value = binding.value
        if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
            calls[value.op.name] = value
    return bindings, calls


def _activation(calls: dict) -> tuple[str, tuple]:
    """(name, float parameters) of the composite's activation (see activation_params)."""
    for op_name, act in OP_TO_ACTIVATION.items():
        if op_name in calls:
            return act, tuple(activation_params(calls[op_name]) or ())
    return "none", ()


def _spatial_pad(calls: dict) -> tuple:
    """(top, left, bottom, right) of an ``nn.pad`` of (N, C, H, W) or (N, C, L), else zeros."""
    if "relax.nn.pad" not in calls:
        return (0, 0, 0, 0)
    widths = _ints(calls["relax.nn.pad"].attrs.pad_width)
    if len(widths) == 6:  # (N, C, L): the pad is along W
        return (0, widths[4], 0, widths[5])
    return (widths[4], widths[6], widths[5], widths[7])


def _plus(a: tuple, b: tuple) -> tuple:
    return tuple(int(x) + int(y) for x, y in zip(a, b))


def _conv_from_composite(calls: dict, bindings: dict, where: str) -> Conv2D:
    conv = calls.get("relax.nn.conv2d", calls.get("relax.nn.conv1d"))
    if conv is None:
        raise UnsupportedError(f"{where}: no conv in the composite")
    a = conv.attrs
    weight = _const(conv.args[1], bindings, "weight", where).astype(np.float32)
    if weight.ndim == 3:  # conv1d (O, I, K) on (C, 1, L)
        weight = weight[:, :, None, :]
        stride = (1,) + _ints(a.strides)
        l, r = _ints(a.padding)
        padding = (0, l, 0, r)
    else:
        stride = _ints(a.strides)
        padding = _ints(a.padding)  # Relax order: top, left, bottom, right
    padding = _plus(padding, _spatial_pad(calls))
    bias = None
    if "relax.add" in calls:
        add = calls["relax.add"]
        lhs, rhs = add.args
        operand = rhs if resolve(lhs, bindings).same_as(conv) else lhs
        bias = channel_bias(operand, bindings, weight.shape[0], 4 if conv.op.name.endswith("2d") else 3)
        if bias is None:
            raise UnsupportedError(f"{where}: the conv bias is not one constant per channel")
    return Conv2D(weight, bias, stride=stride, padding=padding, groups=int(a.groups),
                  activation=_activation(calls)[0], act_params=_activation(calls)[1])


def _pool_from_composite(calls: dict, where: str) -> Pool2D:
    if "relax.mean" in calls:  # global average pooling: one window over the whole map
        mean = calls["relax.mean"]
        h, w = (int(d) for d in mean.args[0].ty.shape.values[2:])
        return Pool2D("avg", (h, w), (h, w), (0, 0, 0, 0), (1, 1), True)
    pool = calls.get("relax.nn.max_pool2d", calls.get("relax.nn.avg_pool2d"))
    if pool is None:
        raise UnsupportedError(f"{where}: no pooling in the composite")
    a = pool.attrs
    kind = "max" if pool.op.name == "relax.nn.max_pool2d" else "avg"
    explicit = _spatial_pad(calls)
    out_hw = tuple(int(d) for d in pool.ty.shape.values[2:])
    # Zeros padded explicitly before an average pool are inputs it counts (the
    # check only accepts that pad before a pool that counts padding or has none).
    include = bool(a.count_include_pad) or any(explicit)
    return Pool2D(kind, _ints(a.pool_size), _ints(a.strides), _plus(_ints(a.padding), explicit), out_hw,
                  include if kind == "avg" else False)


def _window(kernel: tuple, stride: tuple, one_d: bool) -> str:
    """ "3x3" (or "3" in 1D), with ", stride 2" (or "2x1") when it is not 1."""
    size = f"{kernel[1]}" if one_d else f"{kernel[0]}x{kernel[1]}"
    if tuple(stride) == (1, 1):
        return size
    return f"{size}, stride {stride[1] if one_d or stride[0] == stride[1] else f'{stride[0]}x{stride[1]}'}"


def _op_from_composite(comp: relax.Function, namer: LayerNamer, where: str) -> Op:
    """One op of layers.py from a ``spinnaker.*`` composite function, named by ``namer``."""
    composite = str(comp.attrs["Composite"]) if comp.attrs is not None else "?"
    kind = composite.split(".", 1)[-1]
    if kind.startswith("dense"):
        return _layer_from_composite(comp, namer, where)
    where = f"{where}, {composite}"
    bindings, calls = _calls(comp)
    origin = composite_origin(comp)
    if kind.startswith("conv"):
        op = _conv_from_composite(calls, bindings, where)
        oc, ic, kh, kw = op.weight.shape
        extra = "" if op.activation == "none" else f", {op.activation}"
        k = op.channel_multiplier
        dw = "" if not k else ", depthwise" if k == 1 else f", depthwise x{k}"
        one_d = kind.startswith("conv1d")
        details = f"{ic * op.groups}->{oc}, {_window((kh, kw), op.stride, one_d)}{dw}{extra}"
        op.name = namer.name(origin, "conv1d" if one_d else "conv2d", "conv", details)
        return op
    if "pool" in kind:
        op = _pool_from_composite(calls, where)
        details = "global" if "global" in kind else _window(op.kernel, op.stride, "pool1d" in kind)
        op.name = namer.name(origin, f"{op.kind}pool", "pool", details)
        return op
    if kind.startswith("add"):
        activation, params = _activation(calls)
        return Add(activation, name=namer.name(origin, "add", "add", "" if activation == "none" else activation),
                   act_params=params)
    if kind == "flatten":
        return Flatten(name=namer.name(origin, "flatten", "flatten", ""))
    if kind.startswith("concat"):
        return Concat(name=namer.name(origin, "concat", "concat", ""))
    raise UnsupportedError(f"{where}: unknown composite")


def _extract(func: relax.Function, where: Optional[str] = None, namer: Optional[LayerNamer] = None
             ) -> tuple[list[Op], list[int]]:
    """(ops, output op indices) of one offloaded function (see :func:`extract_graph`)."""
    where = where or _func_name(func)
    namer = namer or LayerNamer()
    local_funcs: dict = {}
    index: dict = {p: graph_input(k) for k, p in enumerate(func.params)}  # value -> op producing it
    tuples: dict = {}
    ops: list[Op] = []
    for binding in _bindings(func.body):
        value = binding.value
        if isinstance(value, relax.Function):
            local_funcs[binding.var] = value
            continue
        if isinstance(value, relax.Var) and value in index:
            index[binding.var] = index[value]  # an alias (``gv = lv``)
            continue
        if isinstance(value, relax.Tuple) and all(f in index for f in value.fields):
            tuples[binding.var] = list(value.fields)  # the function's results
            continue
        comp = local_funcs.get(value.op, value.op) if isinstance(value, relax.Call) else None
        if not (isinstance(comp, relax.Function) and comp.attrs is not None and "Composite" in comp.attrs):
            what = value.op.name if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) \
                else type(value).__name__
            raise UnsupportedError(f"{where}: unexpected binding {binding.var.name} ({what}); "
                                   "the board runs only SpiNNaker composites")
        if any(arg not in index for arg in value.args):
            raise UnsupportedError(f"{where}: a composite reads a value that is not a tensor of the network")
        op = _op_from_composite(comp, namer, where)
        arg_of = {param: index[arg] for param, arg in zip(comp.params, value.args)}
        if isinstance(op, Add):
            # Operand order of the add itself (one param if both operands are the same value).
            add = _calls(comp)[1]["relax.add"]
            op.inputs = tuple(arg_of[operand] for operand in add.args)
        elif isinstance(op, Concat):
            op.inputs = tuple(arg_of[f] for f in _calls(comp)[1]["relax.concat"].args[0].fields)
        else:
            op.inputs = (arg_of[comp.params[0]],)
        ops.append(op)
        index[binding.var] = len(ops) - 1
    result = func.body.body
    fields = list(result.fields) if isinstance(result, relax.Tuple) else tuples.get(result, [result])
    outputs = [index.get(f) for f in fields]
    if not ops or any(o is None for o in outputs):
        raise UnsupportedError(f"{where}: a result is not computed by the function's ops")
    if any(o < 0 for o in outputs):
        raise UnsupportedError(f"{where}: a result is one of the function's inputs, passed through unchanged")
    return ops, outputs


def extract_network(func: relax.Function) -> list[Op]:
    """The ops of one offloaded function, in topological (execution) order.

    ``func`` is a function with the ``Codegen="spinnaker"`` attr, as produced by
    :func:`tvm_spinn.partition.partition_for_spinnaker` (``convolutions=True``
    or not): its body binds local composite functions and calls them.

    Returns a list of :class:`~tvm_spinn.graph.ops.DenseLayer`,
    :class:`~tvm_spinn.graph.ops.Conv2D`, :class:`~tvm_spinn.graph.ops.Pool2D`,
    :class:`~tvm_spinn.graph.ops.Add` and :class:`~tvm_spinn.graph.ops.Flatten`,
    each with ``inputs`` set explicitly: indices of earlier ops, or
    :func:`~tvm_spinn.graph.network.graph_input` (k) for the function's input k
    (``NETWORK_INPUT`` for the first). Tensors are (C, H, W) per sample, 1D tensors
    (C, 1, L) (a conv1d weight is (O, I, 1, K)). :func:`extract_graph` also gives
    which ops are the function's results; :func:`forward_network` runs the list.

    Raises :class:`tvm_spinn.errors.UnsupportedError` unless the function contains only
    SpiNNaker composites and every result is computed by them.
    """
    return _extract(func)[0]


def extract_graph(func: relax.Function, name: Optional[str] = None, namer: Optional[LayerNamer] = None) -> OpGraph:
    """The operator graph of one offloaded function: its ops (:func:`extract_network`), the
    (C, H, W) of each input (:func:`input_shapes`) and the ops whose results it returns (in
    order: a tuple result gives several).

    name: how errors name the function (default: its global symbol); namer: the
    :class:`LayerNamer` shared by all functions of a model (default: a new one), which names
    each op as the user's model does (``features.3 (Conv2d 16->32, 3x3)``).

    Raises :class:`tvm_spinn.errors.UnsupportedError` as those two do."""
    ops, outputs = _extract(func, name, namer)
    return OpGraph(ops, input_shapes(func), outputs, name=name or _func_name(func))


def input_shapes(func: relax.Function) -> list[tuple[int, int, int]]:
    """(C, H, W) of one sample of each of an offloaded function's inputs (see :func:`input_shape`)."""
    return [_sample_shape(func, p) for p in func.params]


def input_shape(func: relax.Function) -> tuple[int, int, int]:
    """(C, H, W) of one sample of an offloaded function's input.

    A (batch, C, L) input is (C, 1, L), a (batch, N) vector (1, 1, N). Raises
    UnsupportedError unless there is one input with static dims after the batch.
    """
    if len(func.params) != 1:
        raise UnsupportedError(f"{_func_name(func)}: has {len(func.params)} inputs, expected 1")
    return _sample_shape(func, func.params[0])


def sample_dims(ty, where: str) -> tuple[int, ...]:
    """The static sizes after the batch axis of a (batch, ...) tensor type; UnsupportedError
    if it is not a tensor with a batch axis and static sizes."""
    shape = getattr(ty, "shape", None)
    if not isinstance(ty, relax.TensorType) or not isinstance(shape, relax.ShapeExpr) or len(shape.values) < 1 \
            or not all(isinstance(d, tirx.IntImm) for d in shape.values[1:]):
        raise UnsupportedError(f"{where}: {ty} is not a (batch, ...) tensor with static sizes")
    return tuple(int(d.value) for d in shape.values[1:])


def _sample_shape(func: relax.Function, param: relax.Var) -> tuple[int, int, int]:
    where = _func_name(func)
    dims = sample_dims(param.ty, f"{where}: input")
    if not 1 <= len(dims) <= 3:
        raise UnsupportedError(f"{where}: input {param.ty} is not a (batch, C[, H], W) tensor")
    if len(dims) == 1:
        return (1, 1, dims[0])
    if len(dims) == 2:
        return (dims[0], 1, dims[1])
    return (dims[0], dims[1], dims[2])


def forward_network(ops: Sequence[Op], x: np.ndarray) -> np.ndarray:
    """Float reference of a network of ops (as from :func:`extract_network`), in numpy.

    ``x`` is (n, C, H, W); (n, C, L) is taken as (n, C, 1, L) and (n, N) as a
    vector. Returns the last op's output as float32: (n, C, H, W) for a tensor,
    (n, N) for a vector (after Flatten or a dense layer).
    """
    from .network import float_forward

    x = np.asarray(x, np.float32)
    if x.ndim == 3:
        x = x[:, :, None, :]
    elif x.ndim == 2:
        x = x[:, None, None, :]
    y = float_forward(ops, x)[-1]
    vector = isinstance(ops[-1], (DenseLayer, Flatten))
    return (y.reshape(y.shape[0], -1) if vector else y).astype(np.float32)
