"""The operator graph: what one offloaded function computes, independent of Relax and of
the board. Shapes and the float32 forward pass (numpy) of a graph of ops.

Tensors are (C, H, W) per sample, float32; 1D tensors (C, L) are (C, 1, L); dense vectors
(N,) are (1, 1, N). A graph lists its ops in topological order; each op's ``inputs`` are
indices of earlier ops, or :func:`graph_input` (k) for the graph's input k
(``NETWORK_INPUT`` = input 0); empty means the previous op (the first input for op 0).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Sequence, Tuple, Union

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import UnsupportedError
from .ops import NETWORK_INPUT, Add, Concat, Conv2D, DenseLayer, Flatten, Op, Pool2D, apply_activation

Shape = Tuple[int, int, int]


def graph_input(k: int) -> int:
    """The index ops use to read the graph's input k (NETWORK_INPUT for k = 0)."""
    return NETWORK_INPUT - k


def input_number(index: int) -> int:
    """k of an op input index that names the graph's input k (index < 0)."""
    return NETWORK_INPUT - index


@dataclass
class OpGraph:
    """The ops of one offloaded function. input_shapes: (C, H, W) of each input (one sample);
    outputs: indices of the ops whose results the function returns, in order."""

    ops: List[Op]
    input_shapes: List[Shape]
    outputs: List[int] = field(default_factory=list)
    name: str = ""

    def __post_init__(self) -> None:
        if not self.outputs and self.ops:
            self.outputs = [len(self.ops) - 1]

    def shapes(self) -> List[Shape]:
        """Output shape of every op."""
        return shapes(self.ops, self.input_shapes)




def op_inputs(ops: Sequence[Op], i: int) -> Tuple[int, ...]:
    """Indices of op i's inputs (NETWORK_INPUT for the network input)."""
    ins = tuple(getattr(ops[i], "inputs", ()) or ())
    return ins if ins else ((i - 1) if i > 0 else NETWORK_INPUT,)


def out_shape(op: Op, in_shapes: Sequence[Shape]) -> Shape:
    c, h, w = in_shapes[0]
    if isinstance(op, Conv2D):
        oc, _, kh, kw = op.weight.shape
        pt, pl, pb, pr = op.padding
        return (oc, (h + pt + pb - kh) // op.stride[0] + 1, (w + pl + pr - kw) // op.stride[1] + 1)
    if isinstance(op, Pool2D):
        return (c, int(op.out_hw[0]), int(op.out_hw[1]))
    if isinstance(op, Add):
        if in_shapes[0] != in_shapes[1]:
            raise UnsupportedError(f"{op.name}: operands have shapes {in_shapes[0]} and {in_shapes[1]}")
        return in_shapes[0]
    if isinstance(op, Flatten):
        return (1, 1, c * h * w)
    if isinstance(op, Concat):
        if len({s[1:] for s in in_shapes}) != 1:
            raise UnsupportedError(f"{op.name}: operands have different heights / widths {list(in_shapes)}")
        return (sum(s[0] for s in in_shapes), h, w)
    if (c, h) != (1, 1) or w != op.in_features:
        raise UnsupportedError(f"{op.name}: expects a vector of {op.in_features}, got a tensor {in_shapes[0]}")
    return (1, 1, op.out_features)


def _input_list(inputs) -> list:
    """One input (a shape tuple or an array) or a list of them, as a list."""
    if isinstance(inputs, np.ndarray) or (isinstance(inputs, tuple) and all(isinstance(d, (int, np.integer))
                                                                             for d in inputs)):
        return [inputs]
    return list(inputs)


def shapes(ops: Sequence[Op], input_shapes) -> List[Shape]:
    """Output shape of every op; input_shapes: the (C, H, W) of the input, or a list, one per input."""
    given = [tuple(s) for s in _input_list(input_shapes)]
    result: List[Shape] = []
    for i, op in enumerate(ops):
        ins = [given[input_number(j)] if j < 0 else result[j] for j in op_inputs(ops, i)]
        result.append(out_shape(op, ins))
    return result


def _windows(x: np.ndarray, kh: int, kw: int, stride: Sequence[int], padding: Sequence[int],
             fill: float = 0.0) -> np.ndarray:
    """(n, C, OH, OW, kh, kw) windows of x (n, C, H, W) with constant padding."""
    pt, pl, pb, pr = padding
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=fill)
    return sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::stride[0], ::stride[1]]


def float_op(op: Op, inputs: List[np.ndarray]) -> np.ndarray:
    """Float forward of one op on (n, C, H, W) inputs."""
    x = inputs[0]
    if isinstance(op, DenseLayer):
        return op.forward(x.reshape(x.shape[0], -1)).reshape(x.shape[0], 1, 1, -1)
    if isinstance(op, Flatten):
        return x.reshape(x.shape[0], 1, 1, -1)
    if isinstance(op, Concat):
        return np.concatenate(inputs, axis=1)
    if isinstance(op, Add):
        return apply_activation(op.activation, op.act_params, inputs[0] + inputs[1]).astype(np.float32)
    if isinstance(op, Conv2D):
        oc, icg, kh, kw = op.weight.shape
        win = _windows(x.astype(np.float64), kh, kw, op.stride, op.padding)
        w = op.weight.astype(np.float64)
        if op.groups == 1:
            y = np.einsum("nchwij,ocij->nohw", win, w, optimize=True)  # BLAS: ~10x faster
        else:  # depthwise, output channel c * k + m reads input channel c
            y = np.einsum("nchwij,cmij->ncmhw", win, w.reshape(x.shape[1], -1, kh, kw), optimize=True)
            y = y.reshape(y.shape[0], oc, *y.shape[3:])
        if op.bias is not None:
            y = y + op.bias[None, :, None, None]
        return apply_activation(op.activation, op.act_params, y).astype(np.float32)
    kh, kw = op.kernel
    oh, ow = op.out_hw
    fill = -np.inf if op.kind == "max" else 0.0
    pt, pl = op.padding[0], op.padding[1]
    # Pad enough for ceil_mode windows that run past the bottom/right edge.
    pb = max(op.padding[2], (oh - 1) * op.stride[0] + kh - x.shape[2] - pt)
    pr = max(op.padding[3], (ow - 1) * op.stride[1] + kw - x.shape[3] - pl)
    win = _windows(x.astype(np.float64), kh, kw, op.stride, (pt, pl, pb, pr), fill)[:, :, :oh, :ow]
    if op.kind == "max":
        return win.max(axis=(4, 5)).astype(np.float32)
    if op.count_include_pad:  # torch: padded positions count, positions past the padding do not
        count = _pad_count(x.shape[2:], op, pb, pr)
    else:
        ones = _windows(np.ones((1, 1) + x.shape[2:]), kh, kw, op.stride, (pt, pl, pb, pr))[:, :, :oh, :ow]
        count = ones.sum(axis=(4, 5))
    return (win.sum(axis=(4, 5)) / count).astype(np.float32)


def _pad_count(hw: Tuple[int, int], op: Pool2D, pb: int, pr: int) -> np.ndarray:
    """torch's divisor with count_include_pad: window positions inside input + declared padding."""
    h, w = hw
    pt, pl, pb0, pr0 = op.padding
    region = np.zeros((h + pt + pb, w + pl + pr))
    region[: h + pt + pb0, : w + pl + pr0] = 1
    win = sliding_window_view(region, op.kernel)[:: op.stride[0], :: op.stride[1]]
    return win.sum(axis=(2, 3))[: op.out_hw[0], : op.out_hw[1]]


def float_forward(ops: Sequence[Op], x) -> List[np.ndarray]:
    """Float outputs of every op, for x (n, C, H, W), or a list of such arrays, one per input."""
    given = _input_list(x)
    outs: List[np.ndarray] = []
    for i, op in enumerate(ops):
        outs.append(float_op(op, [given[input_number(j)] if j < 0 else outs[j] for j in op_inputs(ops, i)]))
    return outs


