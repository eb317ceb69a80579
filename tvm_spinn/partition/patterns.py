"""Pattern table and partitioning for the SpiNNaker BYOC backend.

The board runs dense layers ``y = act(x @ W.T + b)`` in float32 models (they
are quantised later) and, with ``convolutions=True``, the tensor operators of
:mod:`tvm_spinn.graph.ops` (conv, pooling, residual add, flatten). Each pattern's
composite name is ``spinnaker.<form>``:

======================================  ==========================================
composite                               matches
======================================  ==========================================
``spinnaker.dense``                     ``matmul(x, permute_dims(W))`` or ``matmul(x, W)``
``spinnaker.dense_bias``                the above, then ``add`` of a constant bias
                                        (either operand order, optional ``reshape``)
``spinnaker.dense_<act>``               ``dense`` then ``act``
``spinnaker.dense_bias_<act>``          ``dense_bias`` then ``act``
``spinnaker.conv2d[_pad][_bias][_act]`` ``[nn.pad ->] nn.conv2d [-> add(reshape(b))] [-> act]``
``spinnaker.conv1d[_pad][_bias][_act]`` the same with ``nn.conv1d``
``spinnaker.{max,avg}_pool2d[_pad]``    ``[nn.pad ->] nn.{max,avg}_pool2d``
``spinnaker.{max,avg}_pool1d[_pad]``    ``[nn.pad ->] expand_dims -> nn.*_pool2d -> squeeze``
``spinnaker.global_avg_pool2d``         ``mean(x, axis=[2, 3], keepdims=True)``
``spinnaker.flatten``                   ``reshape`` of (batch, C, H, W) / (batch, C, L)
                                        into (batch, C*H*W)
``spinnaker.add[_<act>]``               ``add(a, b) [-> act]`` of two on-board tensors
======================================  ==========================================

with ``<act>`` one of relu, tanh, sigmoid. What torch.export + the TVM 0.27
importer produce: ``nn.Linear`` is ``permute_dims(W, [1, 0]) -> matmul(x, .,
out_dtype="float32") -> add(b, .)``; ``x @ W`` with a (K, N) parameter is
``matmul(x, W)``; a conv with bias is ``conv -> add(., reshape(b, (1, C, 1[, 1])))``;
``padding="same"`` with an even kernel and ``F.pad`` are an ``nn.pad`` before the
conv; MaxPool adds ``zeros_like`` + a tuple for the indices (removed by
``CanonicalizeBindings`` + ``DeadCodeElimination`` before matching); 1D pooling
is ``expand_dims -> *_pool2d -> squeeze``; ``torch.flatten(x, 1)`` and
``x.view(n, -1)`` are ``reshape``; eval BatchNorm is ``nn.batch_norm`` + tuple
get item (folded into the preceding conv by :func:`fold_batch_norm`);
``AdaptiveAvgPool2d(1)`` is ``mean``. Note: the importer drops AvgPool's
``divisor_override`` silently, so such a pool is imported (and offloaded) as a
plain average.

The check functions refuse, so that the op stays on the host CPU: a weight or
bias that is not a constant, any dtype other than float32, non-static shapes
other than the batch, intermediate values used outside the match; for dense an
input that is not 2D ``(batch, K)``, a weight that is not 2D, a ``permute_dims``
that is not a plain 2D transpose, a bias that is not ``(N,)`` or ``(1, N)``; for
conv a dilation other than 1, groups other than 1 or depthwise (groups == in
channels, out channels a multiple of them), layouts other than NCHW/OIHW (NCW/OIW), a bias that is not one
value per output channel, a pad that is not a constant zero pad of the spatial
axes; for pooling a dilation other than 1, a layout other than NCHW, a pad that
the pool cannot absorb (max needs ``-inf``, avg needs 0 and must count padding);
for add operands that are constants, differ in shape, or are not both computed
on the board (outputs of other SpiNNaker composites); for flatten an input not
computed on the board (the host reshapes for free).

With ``convolutions=True`` a whole CNN (LeNet-5, ResNet-8, the 1D CNNs) becomes
one offloaded function. Three things would otherwise split it: MaxPool's index
tuple (cleaned up first), the flatten's symbolic target shape ``R.shape([n,
N])`` that FuseOpsByPattern turns into a second parameter of the function
(:func:`_own_flatten_shapes`); and a residual add must not read a host tensor
(a second input): adds and flatten run last, once the ops they read are
composites (see :func:`partition_for_spinnaker`).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import tvm
import tvm_ffi
from tvm import relax, tirx
from tvm.relax.backend.pattern_registry import get_patterns_with_prefix, register_patterns
from tvm.relax.dpl.pattern import DFPattern, is_op, is_tuple, wildcard
from tvm.relax.transform import FuseOpsByPattern, MergeCompositeFunctions, PatternCheckContext

from ..frontend.origin import with_span
from ..kernels import ADD_ACTIVATIONS

CODEGEN = "spinnaker"

# Activation name (as in tvm_spinn.graph.ops.ACTIVATIONS) -> Relax op.
ACTIVATION_OPS = {"relu": "relax.nn.relu", "tanh": "relax.tanh", "sigmoid": "relax.sigmoid", "clip": "relax.clip",
                  "leaky_relu": "relax.nn.leakyrelu"}

OP_TO_ACTIVATION = {op: name for name, op in ACTIVATION_OPS.items()}
MAX_CONCAT = 4  # operands of a concat the patterns match


def resolve(expr: relax.Expr, bindings) -> relax.Expr:
    """Follow ``Var -> bound value`` through ``bindings`` (a Mapping[Var, Expr])."""
    while isinstance(expr, relax.Var) and expr in bindings:
        expr = bindings[expr]
    return expr


def is_call_to(expr: relax.Expr, op_name: str) -> bool:
    """True if ``expr`` is a call of the Relax op ``op_name``."""
    return isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == op_name


def _static_int(dim) -> Optional[int]:
    return int(dim.value) if isinstance(dim, tirx.IntImm) else None


def _tensor_info(expr: relax.Expr) -> Optional[tuple[str, list]]:
    """(dtype, shape values) of a tensor with known rank and shape, else None."""
    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    shape = ty.shape
    if not isinstance(shape, relax.ShapeExpr):
        return None
    return str(ty.dtype), list(shape.values)


def _leaks(context: PatternCheckContext) -> bool:
    """True if a value inside the match (other than its result) is used outside it."""
    inside = set(context.matched_bindings.keys())
    out = context.value_to_bound_var[context.matched_expr]
    for var in inside:
        if var == out:
            continue
        if not isinstance(var, relax.DataflowVar):
            return True
        if any(user not in inside for user in context.var_usages.get(var, [])):
            return True
    return False


def _check_dense(context: PatternCheckContext) -> bool:
    """Refuse every dense the board cannot run, so it stays on the host."""
    if _leaks(context):
        return False
    bindings = context.matched_bindings
    matmul = context.annotated_expr["matmul"]
    data = matmul.args[0]

    # x: float32 (batch, K), K static, batch anything (symbolic is fine).
    info = _tensor_info(data)
    if info is None or info[0] != "float32" or len(info[1]) != 2:
        return False
    k = _static_int(info[1][1])
    # The product must be float32 too (the importer writes out_dtype="float32").
    out_info = _tensor_info(matmul)
    if out_info is None or out_info[0] != "float32" or len(out_info[1]) != 2:
        return False
    n = _static_int(out_info[1][1])
    if k is None or n is None:
        return False

    # Weight: a float32 constant, (N, K) behind a plain transpose or (K, N).
    rhs = resolve(matmul.args[1], bindings)
    transposed = is_call_to(rhs, "relax.permute_dims")
    if transposed:
        axes = rhs.attrs.axes
        if axes is not None and [int(a) for a in axes] != [1, 0]:
            return False
        rhs = resolve(rhs.args[0], bindings)
    if not isinstance(rhs, tvm.ir.GenericConst):
        return False
    w_info = _tensor_info(rhs)
    expected = [n, k] if transposed else [k, n]
    if w_info is None or w_info[0] != "float32":
        return False
    if [_static_int(d) for d in w_info[1]] != expected:
        return False

    if not _activation_ok(context):
        return False
    # Bias: a float32 constant with N elements, added as (N,) or (1, N).
    if "add" in context.annotated_expr:
        add = context.annotated_expr["add"]
        lhs, rhs_b = add.args
        # add is commutative in the pattern: the other operand is the bias.
        bias_operand = rhs_b if resolve(lhs, bindings).same_as(matmul) else lhs
        if not _bias_ok(bias_operand, bindings, n):
            return False
    return True


def _bias_ok(operand: relax.Expr, bindings, n: int) -> bool:
    op_info = _tensor_info(operand)
    if op_info is None or [_static_int(d) for d in op_info[1]] not in ([n], [1, n]):
        return False
    value = resolve(operand, bindings)
    if is_call_to(value, "relax.reshape"):
        value = resolve(value.args[0], bindings)
    if not isinstance(value, tvm.ir.GenericConst):
        return False
    b_info = _tensor_info(value)
    if b_info is None or b_info[0] != "float32":
        return False
    return [_static_int(d) for d in b_info[1]] in ([n], [1, n])


def _dense_pattern(with_bias: bool, activation: Optional[str]) -> tuple:
    """(name, pattern, annotations, check) of one dense form."""
    data, weight = wildcard(), wildcard()
    rhs = is_op("relax.permute_dims")(weight) | weight
    matmul = is_op("relax.matmul")(data, rhs)
    annotations: dict[str, DFPattern] = {"data": data, "matmul": matmul}
    out = matmul
    name = "dense"
    if with_bias:
        bias = wildcard()
        # relax.add matches commutatively: add(mm, b) and add(b, mm) both match.
        out = is_op("relax.add")(matmul, is_op("relax.reshape")(bias, wildcard()) | bias)
        annotations["add"] = out
        name += "_bias"
    name, out = _with_activation(name, out, activation, annotations)
    return (f"{CODEGEN}.{name}", out, annotations, _check_dense)


def _dense_patterns() -> list[tuple]:
    # Later entries have higher priority: most specific forms last, so that
    # bias and activation are fused whenever the check accepts them.
    acts: list[Optional[str]] = [None, *ACTIVATION_OPS]
    return [_dense_pattern(b, a) for b in (False, True) for a in acts]


# ---------------------------------------------------------------------------
# Tensor operators (only used with ``partition_for_spinnaker(convolutions=True)``).
# ---------------------------------------------------------------------------
def _feature_dims(expr: relax.Expr, rank: int) -> Optional[list[int]]:
    """Static dims after the batch of a float32 tensor of ``rank`` (batch may be symbolic)."""
    info = _tensor_info(expr)
    if info is None or info[0] != "float32" or len(info[1]) != rank:
        return None
    dims = [_static_int(d) for d in info[1][1:]]
    return None if any(d is None for d in dims) else dims


def _ints(values) -> list[int]:
    return [int(v) for v in values]


def _is_constant(expr: relax.Expr, bindings) -> bool:
    value = resolve(expr, bindings)
    if is_call_to(value, "relax.reshape"):
        value = resolve(value.args[0], bindings)
    return isinstance(value, tvm.ir.GenericConst)


def _pad_ok(pad: relax.Call, value: float) -> bool:
    """A constant pad of the spatial axes only (not batch / channels) with ``value``."""
    a = pad.attrs
    widths = _ints(a.pad_width)
    return (str(a.pad_mode) == "constant" and float(a.pad_value) == value
            and len(widths) >= 6 and widths[:4] == [0, 0, 0, 0] and min(widths) >= 0)


def channel_bias(operand: relax.Expr, bindings, channels: int, rank: int) -> Optional[np.ndarray]:
    """The per-channel bias a constant ``operand`` adds to a (batch, C, ...) tensor of ``rank``.

    The operand (possibly ``reshape(const)``) must broadcast along axis 1 only,
    e.g. (1, C, 1, 1) or (C, 1, 1) or a scalar; returns float32 (C,), else None.
    """
    info = _tensor_info(operand)
    if info is None or info[0] != "float32" or len(info[1]) > rank:
        return None
    shape = [_static_int(d) for d in info[1]]
    aligned = [1] * (rank - len(shape)) + shape
    if any(d != 1 for i, d in enumerate(aligned) if i != 1) or aligned[1] not in (1, channels):
        return None
    value = resolve(operand, bindings)
    if is_call_to(value, "relax.reshape"):
        value = resolve(value.args[0], bindings)
    if not isinstance(value, tvm.ir.GenericConst) or str(value.ty.dtype) != "float32":
        return None
    array = value.value.numpy().reshape(aligned)
    return np.ascontiguousarray(np.broadcast_to(array.reshape(-1), (channels,)), dtype=np.float32)


def _check_conv(context: PatternCheckContext) -> bool:
    """Refuse every conv the board cannot run (see the module docstring)."""
    if _leaks(context):
        return False
    ann, bindings = context.annotated_expr, context.matched_bindings
    conv = ann["conv"]
    dim = 1 if conv.op.name == "relax.nn.conv1d" else 2
    a = conv.attrs
    layouts = ("NCW", "OIW", "NCW") if dim == 1 else ("NCHW", "OIHW", "NCHW")
    if (str(a.data_layout), str(a.kernel_layout), str(a.out_layout)) != layouts:
        return False
    if any(d != 1 for d in _ints(a.dilation)):
        return False
    # float32 data, weight and result (so out_dtype, if given, is float32 too).
    x_dims, y_dims = _feature_dims(conv.args[0], dim + 2), _feature_dims(conv, dim + 2)
    if x_dims is None or y_dims is None or _is_constant(ann["data"], bindings):
        return False
    in_c, out_c = x_dims[0], y_dims[0]
    weight = resolve(conv.args[1], bindings)
    if not isinstance(weight, tvm.ir.GenericConst) or _feature_dims(weight, dim + 2) is None:
        return False
    groups = int(a.groups)
    # groups == 1, or depthwise with k filters per channel (out_c = k * in_c; what the board implements).
    if not (groups == 1 or (groups == in_c and out_c % in_c == 0)):
        return False
    if [_static_int(d) for d in weight.ty.shape.values[:2]] != [out_c, in_c // groups]:
        return False
    if "pad" in ann and (not _pad_ok(ann["pad"], 0.0) or _feature_dims(ann["data"], dim + 2) is None):
        return False
    if not _activation_ok(context):
        return False
    if "add" in ann:
        lhs, rhs = ann["add"].args
        operand = rhs if resolve(lhs, bindings).same_as(conv) else lhs
        if channel_bias(operand, bindings, out_c, dim + 2) is None:
            return False
    return True


def _check_pool(context: PatternCheckContext) -> bool:
    """Refuse every pooling the board cannot run (see the module docstring)."""
    if _leaks(context):
        return False
    ann, bindings = context.annotated_expr, context.matched_bindings
    pool = ann["pool"]
    if _feature_dims(pool.args[0], 4) is None or _feature_dims(pool, 4) is None:
        return False
    if _is_constant(ann["data"], bindings):
        return False
    if pool.op.name == "relax.mean":  # global average pooling
        axes = {int(ax) % 4 for ax in pool.attrs.axis} if pool.attrs.axis is not None else set()
        return axes == {2, 3} and bool(pool.attrs.keepdims)
    a = pool.attrs
    if str(a.layout) != "NCHW" or str(a.out_layout) != "NCHW" or any(d != 1 for d in _ints(a.dilation)):
        return False
    if "expand" in ann:  # 1D: (batch, C, L) -> (batch, C, 1, L) -> pool -> squeeze axis 2
        expand, squeeze = ann["expand"], ann["squeeze"]
        if _feature_dims(expand.args[0], 3) is None or _feature_dims(squeeze, 3) is None:
            return False
        if _ints(expand.attrs.axis) not in ([2], [-2]) or squeeze.attrs.axis is None \
                or _ints(squeeze.attrs.axis) not in ([2], [-2]):
            return False
    if "pad" in ann:
        rank = 3 if "expand" in ann else 4
        if _feature_dims(ann["data"], rank) is None:
            return False
        if pool.op.name == "relax.nn.max_pool2d":
            return _pad_ok(ann["pad"], float("-inf"))  # max ignores padding: -inf is the same
        # avg over explicitly padded zeros counts them: fold only into a pool that does too.
        return _pad_ok(ann["pad"], 0.0) and (bool(a.count_include_pad) or not any(_ints(a.padding)))
    return True


def _computed_by_composites(context: PatternCheckContext, operands, inputs_ok: bool = False) -> bool:
    """True if every operand is the result of a call to a function that an earlier
    pattern made (FuseOpsByPattern turns the accepted matches of each pattern into
    composite functions before the next pattern runs): that is, computed on the board.
    inputs_ok: an operand may also be a parameter of the function (the model's input,
    which reaches the board anyway), as long as one operand is computed on the board."""
    bound = {var: value for value, var in context.value_to_bound_var.items()}
    on_board = 0
    for operand in operands:
        producer = bound.get(operand)
        if isinstance(producer, relax.Call) and isinstance(producer.op, relax.GlobalVar):
            on_board += 1
        elif not (inputs_ok and producer is None and isinstance(operand, relax.Var)):
            return False
    return on_board > 0


def _check_flatten(context: PatternCheckContext) -> bool:
    """(batch, C, H, W) or (batch, C, L) -> (batch, C*H*W), batch kept, of a tensor
    computed on the board: a flatten of a host tensor (e.g. the network input of an
    MLP on images) stays a free host reshape rather than a board function of its own."""
    reshape = context.matched_expr
    data = reshape.args[0]
    in_info, out_info = _tensor_info(data), _tensor_info(reshape)
    if in_info is None or out_info is None or in_info[0] != "float32" or len(out_info[1]) != 2:
        return False
    dims = _feature_dims(data, len(in_info[1]))
    if len(in_info[1]) not in (3, 4) or dims is None:
        return False
    if _static_int(out_info[1][1]) != math.prod(dims):
        return False
    same_batch = tvm_ffi.structural_equal(in_info[1][0], out_info[1][0])
    return same_batch and _computed_by_composites(context, [data])


def _check_add(context: PatternCheckContext) -> bool:
    """A residual add: two tensors of the same shape, both computed on the board.

    The add patterns have the lowest priority, so conv, pool, dense and flatten
    composites exist when they run (see _computed_by_composites). An operand
    that the host computes refuses the add (it stays with the host op); the
    model's input is accepted (a residual around the input). Chains of adds need
    several rounds, see :func:`partition_for_spinnaker`.
    """
    if _leaks(context):
        return False
    lhs, rhs = context.annotated_expr["add"].args
    if lhs.same_as(rhs) or not _activation_ok(context):  # the add tile receives each source once
        return False
    shapes = []
    for operand in (lhs, rhs):
        info = _tensor_info(operand)
        if info is None or info[0] != "float32" or not 2 <= len(info[1]) <= 4:
            return False
        if _feature_dims(operand, len(info[1])) is None:
            return False
        shapes.append(operand.ty.shape)
    return tvm_ffi.structural_equal(shapes[0], shapes[1]) and _computed_by_composites(context, [lhs, rhs],
                                                                                       inputs_ok=True)


def _check_concat(context: PatternCheckContext) -> bool:
    """A channel concat (axis 1) of distinct (batch, C, L) or (batch, C, H, W) tensors, all
    computed on the board: a view the board gets by routing (as the adds, it runs late)."""
    if _leaks(context):
        return False
    concat = context.annotated_expr["concat"]
    fields = list(concat.args[0].fields)
    if any(fields[i].same_as(fields[j]) for i in range(len(fields)) for j in range(i)):
        return False
    infos = [_tensor_info(f) for f in fields]
    if any(i is None or i[0] != "float32" or len(i[1]) not in (3, 4) for i in infos):
        return False
    rank = len(infos[0][1])
    if int(concat.attrs.axis) not in (1, 1 - rank) or any(len(i[1]) != rank for i in infos):
        return False
    if any(_feature_dims(f, rank) is None for f in fields):
        return False
    return _computed_by_composites(context, fields, inputs_ok=True)


def _with_activation(name: str, out: DFPattern, activation: Optional[str],
                     annotations: dict) -> tuple[str, DFPattern]:
    if activation is not None:
        args = (wildcard(), wildcard()) if activation == "clip" else ()  # clip(x, lo, hi)
        out = annotations["activation"] = is_op(ACTIVATION_OPS[activation])(out, *args)
        name += "_" + activation
    annotations["root"] = out
    return name, out


def activation_params(call: relax.Call) -> Optional[tuple]:
    """The float parameters of an activation call the kernels compute: clip (lo, hi), leaky
    relu (alpha,), the others (); None if they are not constants the board can use."""
    if call.op.name == "relax.clip":
        bounds = []
        for arg in call.args[1:]:  # PrimExpr immediates (IntImm / FloatImm), possibly in a PrimValue
            value = getattr(arg, "value", None)
            value = getattr(value, "value", value)
            if not isinstance(value, (int, float)):
                return None
            bounds.append(float(value))
        lo, hi = bounds
        return (lo, hi) if np.isfinite(lo) and np.isfinite(hi) and lo < hi else None
    if call.op.name == "relax.nn.leakyrelu":
        alpha = float(call.attrs.alpha)
        return (alpha,) if 0.0 <= alpha <= 1.0 else None
    return ()


def _activation_ok(context: PatternCheckContext) -> bool:
    call = context.annotated_expr.get("activation")
    return call is None or activation_params(call) is not None


def _conv_pattern(dim: int, pad: bool, bias: bool, activation: Optional[str]) -> tuple:
    data = wildcard()
    annotations: dict[str, DFPattern] = {"data": data}
    x = data
    if pad:
        x = annotations["pad"] = is_op("relax.nn.pad")(data)
    out = annotations["conv"] = is_op(f"relax.nn.conv{dim}d")(x, wildcard())
    name = f"conv{dim}d" + ("_pad" if pad else "")
    if bias:
        b = wildcard()
        out = annotations["add"] = is_op("relax.add")(out, is_op("relax.reshape")(b, wildcard()) | b)
        name += "_bias"
    name, out = _with_activation(name, out, activation, annotations)
    return (f"{CODEGEN}.{name}", out, annotations, _check_conv)


def _pool_pattern(kind: str, dim: int, pad: bool) -> tuple:
    data = wildcard()
    annotations: dict[str, DFPattern] = {"data": data}
    x = data
    if pad:
        x = annotations["pad"] = is_op("relax.nn.pad")(data)
    if dim == 1:
        x = annotations["expand"] = is_op("relax.expand_dims")(x)
    out = annotations["pool"] = is_op(f"relax.nn.{kind}_pool2d")(x)
    if dim == 1:
        out = annotations["squeeze"] = is_op("relax.squeeze")(out)
    annotations["root"] = out
    name = f"{kind}_pool{dim}d" + ("_pad" if pad else "")
    return (f"{CODEGEN}.{name}", out, annotations, _check_pool)


def _tensor_patterns() -> list[tuple]:
    """Conv / pool / flatten / add patterns, lowest priority first."""
    acts: list[Optional[str]] = [None, *ACTIVATION_OPS]
    patterns = []
    for act in (a for a in acts if (a or "none") in ADD_ACTIVATIONS):  # lowest: after everything else
        add = is_op("relax.add")(wildcard(), wildcard())
        annotations = {"add": add}
        name, out = _with_activation("add", add, act, annotations)
        patterns.append((f"{CODEGEN}.{name}", out, annotations, _check_add))
    for n in range(2, MAX_CONCAT + 1):
        concat = is_op("relax.concat")(is_tuple([wildcard() for _ in range(n)]))
        patterns.append((f"{CODEGEN}.concat{n}", concat, {"concat": concat, "root": concat}, _check_concat))
    flatten = is_op("relax.reshape")(wildcard(), wildcard())
    patterns.append((f"{CODEGEN}.flatten", flatten, {}, _check_flatten))
    data = wildcard()
    mean = is_op("relax.mean")(data)
    patterns.append((f"{CODEGEN}.global_avg_pool2d", mean, {"data": data, "pool": mean, "root": mean},
                     _check_pool))
    patterns += [_pool_pattern(k, d, p) for p in (False, True) for d in (2, 1) for k in ("max", "avg")]
    # Most specific conv forms last (highest priority): pad, bias and activation fused.
    patterns += [_conv_pattern(d, p, b, a) for p in (False, True) for b in (False, True)
                 for a in acts for d in (2, 1)]
    return patterns


def fold_batch_norm(mod: tvm.IRModule, dense_only: bool = False) -> tvm.IRModule:
    """Fold per-channel affine ops into the conv or dense layer whose result they transform,
    as imported from torch, so that they run on the board as part of the layer:

    - eval-mode ``nn.batch_norm`` (``TupleGetItem(batch_norm(y, gamma, beta, mean, var), 0)``,
      BatchNorm1d/2d) with ``s = gamma / sqrt(var + eps)``, ``t = beta - mean * s``;
    - a constant per-channel scale and shift, ``y * s + t``, ``y * s`` (e.g. a folded
      LayerScale or an affine normalisation);

    where ``y`` is ``conv1d/conv2d(x, W)`` or ``matmul(x, permute_dims(W))`` (torch Linear),
    with or without a constant bias ``b``. The result is the layer with weights ``W * s``
    (per output channel) and bias ``(b * s) + t``, computed in float64 (numpy). Other
    batch norms and scales are left alone (they stay on the host). Dead code is not removed.
    dense_only: fold only into dense layers (convolutions stay as imported).
    """
    from tvm.relax.dpl import is_const, is_tuple_get_item, rewrite_call

    data, weight, bias = wildcard(), is_const(), is_const()
    conv2d = is_op("relax.nn.conv2d")(data, weight)
    conv1d = is_op("relax.nn.conv1d")(data, weight)
    transposed = is_op("relax.permute_dims")(weight)
    dense = is_op("relax.matmul")(data, transposed)
    layer = dense if dense_only else conv2d | conv1d | dense
    reshaped = is_op("relax.reshape")(bias, wildcard())
    biased = is_op("relax.add")(layer, reshaped | bias)
    y = biased | layer
    stats = [is_const() for _ in range(4)]
    bn = is_op("relax.nn.batch_norm")(y, *stats)
    scale, shift = is_const(), is_const()
    scaled = is_op("relax.multiply")(y, scale)
    affine = is_op("relax.add")(scaled, shift)

    def fold(matches, s: np.ndarray, t: np.ndarray) -> Optional[relax.Expr]:
        """The layer with weights W * s and bias b * s + t (s, t per output channel)."""
        call = next(matches[p] for p in (conv2d, conv1d, dense) if p in matches)
        is_dense = dense in matches
        rank = len(call.ty.shape.values) if isinstance(getattr(call.ty, "shape", None), relax.ShapeExpr) else 0
        if str(call.ty.dtype) != "float32" or (is_dense and rank != 2):
            return None
        if not is_dense and str(call.attrs.kernel_layout) not in ("OIHW", "OIW"):
            return None
        w = matches[weight].value.numpy().astype(np.float64)
        if is_dense and (w.ndim != 2 or [int(v) for v in matches[transposed].attrs.axes or [1, 0]] != [1, 0]):
            return None
        channels = w.shape[0]
        b = np.zeros(channels)
        if bias in matches:
            b32 = channel_bias(matches[reshaped] if reshaped in matches else matches[bias], {}, channels, rank)
            if b32 is None:
                return None
            b = b32.astype(np.float64)
        new_w = relax.const((w * s.reshape((-1,) + (1,) * (w.ndim - 1))).astype(np.float32))
        # The folded layer keeps the layer's span: the torch module it came from (frontend.origin).
        # Its input is the layer's own argument (a variable): the matched value may be the
        # expression bound to it, which the rewrite would bind anew, dropping the span.
        if is_dense:
            new_call = with_span(relax.op.matmul(call.args[0], relax.op.permute_dims(new_w, [1, 0])), call.span)
            new_b = relax.const((b * s + t).astype(np.float32))
        else:
            new_call = relax.Call(call.op, [call.args[0], new_w], call.attrs, None, call.span)
            new_b = relax.const((b * s + t).astype(np.float32).reshape((1, channels) + (1,) * (rank - 2)))
        return relax.op.add(new_call, new_b)

    def channels_of(matches) -> int:
        return next(matches[p] for p in (conv2d, conv1d, dense) if p in matches).ty.shape.values[1].value

    def bn_rewriter(expr: relax.Expr, matches) -> relax.Expr:
        attrs = matches[bn].attrs
        call = next(matches[p] for p in (conv2d, conv1d, dense) if p in matches)
        rank = len(call.ty.shape.values)
        if attrs.training or int(attrs.axis) not in (1, 1 - rank):
            return expr
        gamma, beta, mean, var = (matches[p].value.numpy().astype(np.float64) for p in stats)
        s = (gamma if attrs.scale else 1.0) / np.sqrt(var + float(attrs.epsilon))
        t = (beta if attrs.center else 0.0) - mean * s
        folded = fold(matches, s, t)
        return expr if folded is None else folded

    def affine_rewriter(expr: relax.Expr, matches) -> relax.Expr:
        call = next(matches[p] for p in (conv2d, conv1d, dense) if p in matches)
        rank = len(call.ty.shape.values)
        n = int(channels_of(matches))
        s = channel_bias(matches[scale], {}, n, rank)
        t = channel_bias(matches[shift], {}, n, rank) if shift in matches else np.zeros(n, np.float32)
        if s is None or t is None:
            return expr
        folded = fold(matches, s.astype(np.float64), t.astype(np.float64))
        return expr if folded is None else folded

    @relax.transform.function_pass(opt_level=0, name="SpiNNakerFoldAffine")
    def fold_pass(func: relax.Function, _mod: tvm.IRModule, _ctx) -> relax.Function:
        func = rewrite_call(is_tuple_get_item(bn, 0), bn_rewriter, func)
        func = rewrite_call(affine, affine_rewriter, func)
        return rewrite_call(scaled, affine_rewriter, func)

    return fold_pass(mod)


def pattern_names() -> list[str]:
    """Names of the registered SpiNNaker patterns, highest priority first."""
    return [p.name for p in get_patterns_with_prefix(CODEGEN)]


# The registry is process-global and the module may be reloaded: register once.
# Later entries win: dense first in priority, then conv, pool, flatten, add last.
if not get_patterns_with_prefix(CODEGEN):
    register_patterns(_tensor_patterns() + _dense_patterns())


def _is_dense(pattern) -> bool:
    return str(pattern.name).startswith(f"{CODEGEN}.dense")


def _is_add(pattern) -> bool:
    return str(pattern.name).startswith(f"{CODEGEN}.add")


def _own_flatten_shapes(mod: tvm.IRModule) -> tvm.IRModule:
    """Give each ``spinnaker.flatten`` composite a single (tensor) parameter.

    The target shape of a flatten with a symbolic batch, ``R.shape([n, N])``,
    is not a constant, so FuseOpsByPattern makes it a parameter of the
    composite (and MergeCompositeFunctions one of the offloaded function):
    the codegen and runtime would receive a shape as a second input. The
    shape is (batch of the input, N): rebuild the composite to compute it from
    its own input and drop the argument at the call sites.
    """
    builder = relax.BlockBuilder(mod)
    replaced = {}  # old GlobalVar -> new one (typed by the builder)
    for gv, func in mod.functions_items():
        if not isinstance(func, relax.Function) or func.attrs is None \
                or func.attrs.get("Composite") != f"{CODEGEN}.flatten" or len(func.params) != 2:
            continue
        x = func.params[0]
        shape = relax.ShapeExpr([x.ty.shape.values[0], func.ret_ty.shape.values[1]])
        out = relax.Var("gv", func.ret_ty)
        body = relax.SeqExpr([relax.DataflowBlock([relax.VarBinding(out, relax.op.reshape(x, shape))])], out)
        new_func = relax.Function([x], body, func.ret_ty, True, func.attrs)
        replaced[gv] = builder.add_func(new_func, gv.name_hint)
    if not replaced:
        return mod

    @relax.expr_functor.mutator
    class DropShapeArgs(relax.PyExprMutator):
        def visit_call_(self, call: relax.Call) -> relax.Expr:
            call = self.visit_expr_post_order(call)
            if isinstance(call.op, relax.GlobalVar) and call.op in replaced:
                return relax.Call(replaced[call.op], [call.args[0]])
            return call

    mutator = DropShapeArgs(builder.get())
    for gv, func in list(builder.get().functions_items()):
        if isinstance(func, relax.Function) and (func.attrs is None or "Composite" not in func.attrs):
            builder.update_func(gv, mutator.visit_expr(func))
    return tvm.IRModule({gv: f for gv, f in builder.get().functions_items() if gv not in replaced},
                        attrs=mod.attrs)


def partition_for_spinnaker(mod: tvm.IRModule, *, convolutions: bool = False) -> tvm.IRModule:
    """Partition the module, offloading SpiNNaker-supported subgraphs.

    Parameters
    ----------
    mod : tvm.ir.IRModule
        The module to partition, e.g. from :func:`tvm_spinn.frontend.from_torch`.
        Weights must be constants in the module (bind parameters with
        ``relax.transform.BindParams`` first if they are function inputs);
        a layer whose weight is not a constant stays on the host.
    convolutions : bool
        If False (default), only dense layers are offloaded. If True, also
        conv1d/conv2d (BatchNorm folded in first, see :func:`fold_batch_norm`),
        max/avg pooling, residual adds and flatten: a whole CNN (LeNet-5,
        ResNet-8, ...) becomes one offloaded function (read it with
        :func:`tvm_spinn.graph.extract.extract_graph`).

    Returns
    -------
    mod : tvm.ir.IRModule
        The module in which each maximal group of connected supported ops
        (``spinnaker.*`` composites, with bias and relu/tanh/sigmoid fused) is a
        function with attrs ``Codegen="spinnaker"`` and ``global_symbol``, called
        from ``main``. Everything else (softmax, other activations, non-float32 or
        non-constant weights, ...) stays in ``main`` for the host CPU. An op that
        stays on the host between two offloaded ones splits them into two
        offloaded functions.

    Examples
    --------
    ::

        import torch
        from tvm import relax
        from tvm_spinn.frontend import from_torch
        from tvm_spinn.partition import partition_for_spinnaker
        from tvm_spinn.graph.extract import extract_graph

        mod = from_torch(model, torch.randn(4, 784))
        partitioned = partition_for_spinnaker(mod)
        for gv, func in partitioned.functions.items():
            if func.attrs is not None and "Codegen" in func.attrs:
                print(gv.name_hint, [op.name for op in extract_graph(func).ops])
        # then RunCodegen() (the spinnaker codegen) and tvm.compile(..., target="llvm")
    """
    patterns = get_patterns_with_prefix(CODEGEN)
    if not convolutions:
        patterns = [p for p in patterns if _is_dense(p)]
        folded = fold_batch_norm(mod, dense_only=True)
        if not tvm_ffi.structural_equal(folded, mod):  # a BatchNorm1d after a Linear: drop the old one
            mod = relax.transform.DeadCodeElimination()(folded)
        mod = FuseOpsByPattern(patterns, bind_constants=True, annotate_codegen=False)(mod)
        return MergeCompositeFunctions()(mod)

    mod = fold_batch_norm(mod)
    # Drops MaxPool's index output (zeros_like + tuple + get item) and BatchNorm leftovers.
    mod = relax.transform.CanonicalizeBindings()(mod)
    mod = relax.transform.DeadCodeElimination()(mod)
    # Adds and flattens must read tensors computed on the board (_computed_by_composites):
    # they run after every other pattern.
    is_late = [_is_add(p) or str(p.name) == f"{CODEGEN}.flatten" or str(p.name).startswith(f"{CODEGEN}.concat")
               for p in patterns]
    # adds first: a concat or flatten reads the adds' results
    late = sorted((p for p, flag in zip(patterns, is_late) if flag), key=lambda p: not _is_add(p))
    mod = FuseOpsByPattern([p for p, flag in zip(patterns, is_late) if not flag], bind_constants=True,
                           annotate_codegen=False)(mod)
    # An add of adds (or a flatten of an add) is only accepted once the inner add
    # is fused. Run one late pattern at a time and restart from the highest
    # priority after every change, so that a plain add never takes an add that
    # the add_<act> pattern will accept once its operands are ready.
    late_passes = [FuseOpsByPattern([p], bind_constants=True, annotate_codegen=False) for p in late]
    i = 0
    while i < len(late_passes):
        before = len(mod.functions)
        mod = late_passes[i](mod)
        i = 0 if len(mod.functions) != before else i + 1
    return MergeCompositeFunctions()(_own_flatten_shapes(mod))


def offloaded_functions(mod: tvm.IRModule) -> dict[str, relax.Function]:
    """The functions of a partitioned module that go to the SpiNNaker codegen, by name."""
    return {
        gv.name_hint: func
        for gv, func in mod.functions.items()
        if isinstance(func, relax.Function)
        and func.attrs is not None
        and func.attrs.get("Codegen") == CODEGEN
    }
