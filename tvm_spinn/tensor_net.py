"""Networks of tensor operators (conv, pool, add, flatten, dense): shapes, float
forward pass, and int16 quantisation. Tensors are (C, H, W) per sample.

Quantisation follows :mod:`tvm_spinn.quantize`: int16 activations with one scale per
tensor (from calibration), int16 weights with one scale per output channel, exact
int64 accumulation, integer requantisation. Pooling and flatten keep their input's
scale; a residual add rescales both inputs to its output scale with integer
multipliers and one shift.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .errors import CalibrationError, ResourceError, UnsupportedError
from .layers import NETWORK_INPUT, Add, Conv2D, DenseLayer, Flatten, Pool2D
from .quantize import PRODUCT_BITS_LIMIT, Q_MAX, _symmetric_scale, quantize_tensor, quantize_weights

Op = Union[DenseLayer, Conv2D, Pool2D, Add, Flatten]
Shape = Tuple[int, int, int]


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
    if (c, h) != (1, 1) or w != op.in_features:
        raise UnsupportedError(f"{op.name}: expects a vector of {op.in_features}, got a tensor {in_shapes[0]}")
    return (1, 1, op.out_features)


def shapes(ops: Sequence[Op], input_shape: Shape) -> List[Shape]:
    result: List[Shape] = []
    for i, op in enumerate(ops):
        ins = [input_shape if j == NETWORK_INPUT else result[j] for j in op_inputs(ops, i)]
        result.append(out_shape(op, ins))
    return result


def _activation(name: str, y: np.ndarray) -> np.ndarray:
    if name == "relu":
        return np.maximum(y, 0)
    if name == "tanh":
        return np.tanh(y)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-y))
    return y


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
    if isinstance(op, Add):
        return _activation(op.activation, inputs[0] + inputs[1]).astype(np.float32)
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
        return _activation(op.activation, y).astype(np.float32)
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


def float_forward(ops: Sequence[Op], x: np.ndarray) -> List[np.ndarray]:
    """Float outputs of every op, for x (n, C, H, W)."""
    outs: List[np.ndarray] = []
    for i, op in enumerate(ops):
        outs.append(float_op(op, [x if j == NETWORK_INPUT else outs[j] for j in op_inputs(ops, i)]))
    return outs


@dataclass
class QOp:
    """An op in int16 fixed point. in_scales: scale of each input; out_scale: of the output.

    For Conv2D / DenseLayer: weight (int16), bias (int64, accumulator units), multiplier,
    shift (int64 per output channel), target_scale, acc_bound, m_bits (as QuantLayer).
    For Add: multiplier (2,) and shift (1,) rescaling a and b to out_scale.
    """

    op: Op
    inputs: Tuple[int, ...]
    in_shapes: List[Shape]
    out_shape: Shape
    in_scales: List[float]
    out_scale: float
    weight: Optional[np.ndarray] = None
    weight_scale: Optional[np.ndarray] = None
    bias: Optional[np.ndarray] = None
    multiplier: Optional[np.ndarray] = None
    shift: Optional[np.ndarray] = None
    target_scale: float = 0.0
    acc_bound: int = 0
    m_bits: int = 0

    @property
    def name(self) -> str:
        return self.op.name

    @property
    def activation(self) -> str:
        return getattr(self.op, "activation", "none")

    @property
    def act_code(self) -> int:
        from .quantize import ACT_CODES

        return ACT_CODES[self.activation]


@dataclass
class QuantizedTensorNetwork:
    ops: List[QOp]
    input_shape: Shape
    input_scale: float
    input_max_abs: float

    @property
    def output_scale(self) -> float:
        return self.ops[-1].out_scale

    @property
    def output_shape(self) -> Shape:
        return self.ops[-1].out_shape

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        return quantize_tensor(np.asarray(x).reshape((-1,) + self.input_shape), self.input_scale)


ADD_MULTIPLIER_BITS = 30


def add_multipliers(scale_a: float, scale_b: float, out_scale: float) -> Tuple[np.ndarray, np.ndarray]:
    """(mult_a, mult_b), shift with mult_x * 2**-shift ~= scale_x / out_scale, both < 2**30,
    so |a * mult_a + b * mult_b| < 2**46: exact in int64."""
    ratio = max(scale_a, scale_b) / out_scale
    shift = ADD_MULTIPLIER_BITS - math.frexp(ratio)[1]
    shift = min(max(shift, 0), PRODUCT_BITS_LIMIT - 16)
    mults = np.array([int(round(s / out_scale * 2.0 ** shift)) for s in (scale_a, scale_b)], np.int64)
    if mults.max() >= 1 << 31:
        raise ResourceError("add: input scales too far above the output scale for int16 rescaling")
    return mults, np.array([shift], np.int64)


def quantize_tensor_network(ops: Sequence[Op], input_shape: Shape,
                            calibration: Optional[np.ndarray]) -> QuantizedTensorNetwork:
    """Scales from calibration data (samples, *input_shape or flat) and int16 parameters."""
    if calibration is None:
        raise CalibrationError("SpiNNaker needs calibration data to choose int16 scales: pass calibration=...")
    x = np.asarray(calibration, np.float32)
    n_values = int(np.prod(input_shape))
    if x.ndim < 2 or x.shape[0] == 0 or int(np.prod(x.shape[1:])) != n_values:
        raise CalibrationError(f"calibration data for {ops[0].name} must have shape (samples, "
                               f"{', '.join(map(str, input_shape))}), got {tuple(x.shape)}")
    if not np.all(np.isfinite(x)):
        raise CalibrationError("calibration data contains NaN or infinity")
    x = x.reshape((-1,) + tuple(input_shape))
    outs = float_forward(ops, x)
    all_shapes = shapes(ops, tuple(input_shape))
    input_max = float(np.max(np.abs(x)))
    input_scale = _symmetric_scale(input_max)
    qops: List[QOp] = []
    for i, op in enumerate(ops):
        ins = op_inputs(ops, i)
        in_scales = [input_scale if j == NETWORK_INPUT else qops[j].out_scale for j in ins]
        in_shapes = [tuple(input_shape) if j == NETWORK_INPUT else all_shapes[j] for j in ins]
        q = QOp(op, ins, in_shapes, all_shapes[i], in_scales, in_scales[0])
        if isinstance(op, (Conv2D, DenseLayer)):
            for key, value in quantize_weights(op.weight, op.bias, op.activation, in_scales[0], outs[i],
                                               op.name).items():
                setattr(q, key, value)
        elif isinstance(op, Add):
            q.out_scale = _symmetric_scale(float(np.max(np.abs(outs[i]))))
            q.multiplier, q.shift = add_multipliers(in_scales[0], in_scales[1], q.out_scale)
        qops.append(q)
    return QuantizedTensorNetwork(qops, tuple(input_shape), input_scale, input_max)


def error_bound(qnet: QuantizedTensorNetwork, plans: Sequence[object]) -> float:
    """Worst-case |int16 output * output_scale - float32 output| over all outputs, for inputs
    whose every tensor stays inside its calibrated range (as quantize.error_bound, with one
    scalar error and one range per tensor).

    conv / dense: input error through sum|W| of the receptive field, weight, bias,
    partial-sum, multiplier and output rounding, activation slope, tanh table;
    max pool: unchanged; avg pool: + 1 LSB (rounding, negative ties included);
    add: both inputs' errors + the rescaling's rounding; flatten: unchanged.
    """
    from .quantize import TANH_TABLE_ERROR_LSB

    err = {NETWORK_INPUT: qnet.input_scale / 2}
    rng = {NETWORK_INPUT: qnet.input_max_abs + qnet.input_scale / 2}
    for i, (q, plan) in enumerate(zip(qnet.ops, plans)):
        e_in, x_in = err[q.inputs[0]], rng[q.inputs[0]]
        op = q.op
        if isinstance(op, (Conv2D, DenseLayer)):
            w = op.weight.astype(np.float64).reshape(op.weight.shape[0], -1)
            wq = q.weight.astype(np.float64).reshape(w.shape) * q.weight_scale[:, None]
            acc_scale = q.in_scales[0] * q.weight_scale
            pre = np.abs(w).sum(1) * e_in + np.abs(w - wq).sum(1) * x_in + acc_scale / 2
            n_cols, p = getattr(plan, "n_col_tiles", 1), getattr(plan, "partial_shift", 0)
            if n_cols > 1 and p > 0:
                pre += acc_scale * n_cols * 2.0 ** (p - 1)
            m_true = acc_scale / q.target_scale
            m_used = q.multiplier * 2.0 ** (-q.shift.astype(np.float64))
            bias = 0 if op.bias is None else np.abs(op.bias.astype(np.float64))
            acc_max = np.abs(w).sum(1) * x_in + bias
            pre += np.abs(m_used - m_true) / np.maximum(m_true, 1e-300) * acc_max + q.target_scale / 2
            if op.activation == "sigmoid":
                e_out = pre / 4 + (TANH_TABLE_ERROR_LSB + 1) / Q_MAX
            elif op.activation == "tanh":
                e_out = pre + (TANH_TABLE_ERROR_LSB + 0.5) / Q_MAX
            else:
                e_out = pre
            e, x = float(e_out.max()), (1.0 if op.activation in ("tanh", "sigmoid")
                                        else min(float(acc_max.max()), q.out_scale * Q_MAX))
        elif isinstance(op, Pool2D):
            e, x = e_in + (q.out_scale if op.kind == "avg" else 0.0), x_in
        elif isinstance(op, Add):
            e_b, x_b = err[q.inputs[1]], rng[q.inputs[1]]
            used = q.multiplier * 2.0 ** -float(q.shift[0])
            true = np.array(q.in_scales) / q.out_scale
            rescale = float(np.sum(np.abs(used - true) / true * np.array([x_in, x_b])))
            e = e_in + e_b + rescale + q.out_scale / 2
            x = min(x_in + x_b, q.out_scale * Q_MAX)
        else:  # Flatten
            e, x = e_in, x_in
        err[i], rng[i] = e, x + e
    return err[len(qnet.ops) - 1]
