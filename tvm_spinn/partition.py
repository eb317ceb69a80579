"""Pattern table and partitioning for the SpiNNaker BYOC backend.

The board runs dense layers ``y = act(x @ W.T + b)`` in float32 models (they
are quantised later). Each pattern's composite name is ``spinnaker.<form>``:

======================================  ==========================================
composite                               matches
======================================  ==========================================
``spinnaker.dense``                     ``matmul(x, permute_dims(W))`` or ``matmul(x, W)``
``spinnaker.dense_bias``                the above, then ``add`` of a constant bias
                                        (either operand order, optional ``reshape``)
``spinnaker.dense_<act>``               ``dense`` then ``act``
``spinnaker.dense_bias_<act>``          ``dense_bias`` then ``act``
======================================  ==========================================

with ``<act>`` one of relu, tanh, sigmoid. torch's ``nn.Linear`` imports as
``permute_dims(W, [1, 0]) -> matmul(x, ., out_dtype="float32") -> add(b, .)``;
``x @ W`` with a (K, N) parameter as ``matmul(x, W)``.

The check function refuses, so that the op stays on the host CPU: a weight or
bias that is not a constant, any dtype other than float32, an input that is
not 2D ``(batch, K)`` with static K (batch may be symbolic), a weight that is
not 2D, a ``permute_dims`` that is not a plain 2D transpose, a bias that is
not ``(N,)`` or ``(1, N)``, and intermediate values used outside the match.
"""
from __future__ import annotations

from typing import Optional

import tvm
from tvm import relax, tirx
from tvm.relax.backend.pattern_registry import get_patterns_with_prefix, register_patterns
from tvm.relax.dpl.pattern import DFPattern, is_op, wildcard
from tvm.relax.transform import FuseOpsByPattern, MergeCompositeFunctions, PatternCheckContext

CODEGEN = "spinnaker"

# Activation name (as in tvm_spinn.layers.ACTIVATIONS) -> Relax op.
ACTIVATION_OPS = {"relu": "relax.nn.relu", "tanh": "relax.tanh", "sigmoid": "relax.sigmoid"}
OP_TO_ACTIVATION = {op: name for name, op in ACTIVATION_OPS.items()}


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
    if activation is not None:
        out = is_op(ACTIVATION_OPS[activation])(out)
        name += "_" + activation
    annotations["root"] = out
    return (f"{CODEGEN}.{name}", out, annotations, _check_dense)


def _dense_patterns() -> list[tuple]:
    # Later entries have higher priority: most specific forms last, so that
    # bias and activation are fused whenever the check accepts them.
    acts: list[Optional[str]] = [None, *ACTIVATION_OPS]
    return [_dense_pattern(b, a) for b in (False, True) for a in acts]


def pattern_names() -> list[str]:
    """Names of the registered SpiNNaker patterns, highest priority first."""
    return [p.name for p in get_patterns_with_prefix(CODEGEN)]


# The registry is process-global and the module may be reloaded: register once.
if not get_patterns_with_prefix(CODEGEN):
    register_patterns(_dense_patterns())


def partition_for_spinnaker(mod: tvm.IRModule) -> tvm.IRModule:
    """Partition the module, offloading SpiNNaker-supported subgraphs.

    Parameters
    ----------
    mod : tvm.ir.IRModule
        The module to partition, e.g. from :func:`tvm_spinn.frontend.from_torch`.
        Weights must be constants in the module (bind parameters with
        ``relax.transform.BindParams`` first if they are function inputs);
        a dense layer whose weight is not a constant stays on the host.

    Returns
    -------
    mod : tvm.ir.IRModule
        The module in which each maximal group of connected dense layers
        (``spinnaker.dense*`` composites, with bias and relu/tanh/sigmoid
        fused) is a function with attrs ``Codegen="spinnaker"`` and
        ``global_symbol``, called from ``main``. Everything else (softmax,
        reshapes, other activations, non-float32 or non-constant matmuls)
        stays in ``main`` for the host CPU. An op between two dense layers that
        stays on the host splits them into two offloaded functions.

    Examples
    --------
    ::

        import torch
        from tvm import relax
        from tvm_spinn.frontend import from_torch
        from tvm_spinn.partition import partition_for_spinnaker
        from tvm_spinn.extract import extract_layers

        mod = from_torch(model, torch.randn(4, 784))
        partitioned = partition_for_spinnaker(mod)
        for gv, func in partitioned.functions.items():
            if func.attrs is not None and "Codegen" in func.attrs:
                print(gv.name_hint, [layer.name for layer in extract_layers(func)])
        # then RunCodegen() (the spinnaker codegen) and tvm.compile(..., target="llvm")
    """
    patterns = get_patterns_with_prefix(CODEGEN)
    mod = FuseOpsByPattern(patterns, bind_constants=True, annotate_codegen=False)(mod)
    mod = MergeCompositeFunctions()(mod)
    return mod


def offloaded_functions(mod: tvm.IRModule) -> dict[str, relax.Function]:
    """The functions of a partitioned module that go to the SpiNNaker codegen, by name."""
    return {
        gv.name_hint: func
        for gv, func in mod.functions.items()
        if isinstance(func, relax.Function)
        and func.attrs is not None
        and func.attrs.get("Codegen") == CODEGEN
    }
