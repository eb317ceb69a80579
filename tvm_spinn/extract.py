"""Turn one offloaded Relax function into the float chain of DenseLayers it computes."""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, tirx

from .errors import UnsupportedError
from .layers import DenseLayer
from .partition import OP_TO_ACTIVATION, is_call_to, resolve


def _func_name(func: relax.Function) -> str:
    if func.attrs is not None and "global_symbol" in func.attrs:
        return str(func.attrs["global_symbol"])
    return "<offloaded function>"


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


def _layer_from_composite(comp: relax.Function, index: int, where: str) -> DenseLayer:
    """Read weight, bias and activation from one ``spinnaker.dense*`` composite."""
    composite = str(comp.attrs["Composite"]) if comp.attrs is not None else "?"
    where = f"{where}, {composite}"
    if not composite.startswith("spinnaker.dense") or len(comp.params) != 1:
        raise UnsupportedError(f"{where}: not a dense composite with one (data) input")
    bindings = {}
    matmul = add = None
    activation = "none"
    for binding in _bindings(comp.body):
        value = binding.value
        bindings[binding.var] = value
        if is_call_to(value, "relax.matmul"):
            matmul = value
        elif is_call_to(value, "relax.add"):
            add = value
        elif isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
            activation = OP_TO_ACTIVATION.get(value.op.name, activation)
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
    return DenseLayer(weight, bias, activation, name=f"dense{index} ({in_f}->{out_f}{act})")


def extract_layers(func: relax.Function) -> list[DenseLayer]:
    """The dense layers of one offloaded function, in execution order.

    ``func`` is a function with the ``Codegen="spinnaker"`` attr, as produced by
    :func:`tvm_spinn.partition.partition_for_spinnaker` and handed to the
    codegen by ``RunCodegen``: its body binds local composite functions
    (attr ``Composite``) and calls them.

    Returns a list of :class:`tvm_spinn.layers.DenseLayer` with float32
    weights (out_features, in_features), biases (out_features,) or None and
    the fused activation; ``layers[i].forward`` chained gives the function's
    result.

    Raises :class:`tvm_spinn.errors.UnsupportedError` unless the function is a
    single chain: one input, one output, each layer feeding exactly the next.
    """
    where = _func_name(func)
    if len(func.params) != 1:
        raise UnsupportedError(
            f"{where}: has {len(func.params)} inputs; the board runs a chain with one input"
        )
    local_funcs: dict = {}
    layers: list[DenseLayer] = []
    current: relax.Expr = func.params[0]  # the value the next layer must consume
    for binding in _bindings(func.body):
        value = binding.value
        if isinstance(value, relax.Function):
            local_funcs[binding.var] = value
            continue
        if isinstance(value, relax.Var) and value.same_as(current):
            current = binding.var  # an alias (``gv = lv``) of the chain's head
            continue
        if isinstance(value, relax.Call):
            comp = local_funcs.get(value.op, value.op)
            if isinstance(comp, relax.Function) and comp.attrs is not None and "Composite" in comp.attrs:
                if len(value.args) != 1 or not value.args[0].same_as(current):
                    raise UnsupportedError(
                        f"{where}: layer {len(layers)} does not take the previous layer's "
                        "output as its only input; the offloaded subgraph is not a single chain"
                    )
                layers.append(_layer_from_composite(comp, len(layers), where))
                current = binding.var
                continue
        raise UnsupportedError(
            f"{where}: unexpected binding {binding.var.name} ({type(value).__name__}); "
            "the offloaded subgraph is not a single chain of dense layers "
            "(several outputs or branches)"
        )
    result = resolve(func.body.body, {})
    if not layers or not result.same_as(current):
        raise UnsupportedError(
            f"{where}: the output is not the last layer's result; "
            "the offloaded subgraph is not a single chain with one output"
        )
    for prev, nxt in zip(layers, layers[1:]):
        if prev.out_features != nxt.in_features:  # cannot happen in a well-typed module
            raise UnsupportedError(f"{where}: {prev.name} does not feed {nxt.name}")
    return layers


def function_signature(func: relax.Function) -> tuple[int, int]:
    """(in_features, out_features) of an offloaded function ``(batch, K) -> (batch, N)``.

    The batch dimension may be symbolic. Raises UnsupportedError if the
    function does not have one 2D input and one 2D output with static feature sizes.
    """
    where = _func_name(func)
    types = [p.ty for p in func.params]
    if len(types) != 1:
        raise UnsupportedError(f"{where}: has {len(types)} inputs, expected 1")
    types.append(func.ret_ty)
    dims = []
    for ty in types:
        shape = getattr(ty, "shape", None)
        if not isinstance(ty, relax.TensorType) or not isinstance(shape, relax.ShapeExpr) \
                or len(shape.values) != 2 or not isinstance(shape.values[1], tirx.IntImm):
            raise UnsupportedError(f"{where}: {ty} is not a (batch, features) tensor")
        dims.append(int(shape.values[1].value))
    return dims[0], dims[1]
