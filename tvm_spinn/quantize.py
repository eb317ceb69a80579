"""int16 fixed-point quantisation of dense networks and the numpy integer reference.

Scheme (the C kernels in ``c_runtime`` implement exactly this arithmetic):

* activations: int16, one symmetric scale per tensor from calibration data
  (``scale = max|x| / 32767``); tanh and sigmoid outputs use the fixed scale 1/32767;
* weights: int16, one symmetric scale per output row, clipped to +-32767;
* accumulation: exact, in int64 (int32 blocks whose bound is proved from the weights,
  see :mod:`tvm_spinn.decompose`); bias is int64 in accumulator units;
* requantisation: ``y = sat16(round_half_up(acc * M >> S))`` with ``M < 2**m_bits`` where
  ``m_bits`` is chosen per layer so that ``|acc * M| < 2**62`` for every reachable acc;
* tanh: ``acc`` is requantised to Q3.12 and looked up in a 513-entry table with linear
  interpolation; sigmoid uses ``sigmoid(x) = (1 + tanh(x / 2)) / 2``.

The reference uses float64 matmuls: every product of two int16 is below 2**30 and
every partial sum below 2**53, so each float64 operation is exact and the result
equals the integer sum bit for bit, at BLAS speed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

from .errors import CalibrationError, ResourceError
from .layers import DenseLayer

Q_MAX = 32767
Q_MIN = -32768
ACT_CODES = {"none": 0, "relu": 1, "tanh": 2, "sigmoid": 3}
TANH_INPUT_BITS = 12  # Q3.12: the table covers |x| < 8
TANH_STEP_BITS = 6
TANH_ENTRIES = 513
# Largest error of the tanh table path over every int16 input, in units of the
# output step 1/32767: interpolation (h**2/8 * max|tanh''| = 0.77) plus the table's
# and the interpolation's rounding; measured 1.63 over all 65,536 inputs
# (tests/test_quantize.py checks it exhaustively).
TANH_TABLE_ERROR_LSB = 2.0
PRODUCT_BITS_LIMIT = 62  # |acc * M| < 2**62 keeps int64 requantisation exact


def tanh_table() -> np.ndarray:
    """int16 table: entry i is round(32767 * tanh(i * 2**6 / 2**12)), i = 0..512."""
    x = np.arange(TANH_ENTRIES, dtype=np.float64) * (1 << TANH_STEP_BITS) / (1 << TANH_INPUT_BITS)
    return np.round(np.tanh(x) * Q_MAX).astype(np.int16)


def round_shift(v: np.ndarray, shift: np.ndarray | int) -> np.ndarray:
    """Round half up then arithmetic shift right, on int64 (as spinn_round_shift)."""
    v = np.asarray(v, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    half = np.where(shift > 0, np.left_shift(np.int64(1), np.maximum(shift - 1, 0)), 0)
    return np.right_shift(v + half, shift)


def sat16(v: np.ndarray) -> np.ndarray:
    return np.clip(v, Q_MIN, Q_MAX).astype(np.int64)


def tanh_q(v: np.ndarray, table: np.ndarray) -> np.ndarray:
    """tanh of Q3.12 int16 values, Q0.15 result (as spinn_tanh_q)."""
    v = np.asarray(v, dtype=np.int64)
    t = np.minimum(np.abs(v), Q_MAX)
    i = t >> TANH_STEP_BITS
    f = t & ((1 << TANH_STEP_BITS) - 1)
    tab = table.astype(np.int64)
    a, b = tab[i], tab[i + 1]
    y = a + (((b - a) * f + (1 << (TANH_STEP_BITS - 1))) >> TANH_STEP_BITS)
    return np.where(v < 0, -y, y)


def activate(activation: str, v: np.ndarray) -> np.ndarray:
    """Integer activation of requantised int16 values (as spinn_activate)."""
    if activation == "relu":
        return np.maximum(v, 0)
    if activation == "tanh":
        return tanh_q(v, tanh_table())
    if activation == "sigmoid":
        return (tanh_q(v, tanh_table()) + 32768) >> 1
    return v


def quantize_tensor(x: np.ndarray, scale: float) -> np.ndarray:
    """float -> int16: floor(x / scale + 0.5) (round half up), saturated."""
    q = np.floor(np.asarray(x, dtype=np.float64) / scale + 0.5)
    return np.clip(q, Q_MIN, Q_MAX).astype(np.int16)


def _symmetric_scale(max_abs: float) -> float:
    return float(max_abs) / Q_MAX if max_abs > 0 and np.isfinite(max_abs) else 1.0 / Q_MAX


def _multiplier_shift(m: float, m_bits: int, layer: str) -> tuple[int, int]:
    """M, S with M * 2**-S ~= m and 0 <= M < 2**m_bits, 0 <= S <= 62."""
    if m <= 0:
        return 0, 0
    exp = math.frexp(m)[1]  # m = f * 2**exp, 0.5 <= f < 1
    shift = m_bits - exp
    if shift > PRODUCT_BITS_LIMIT:
        shift = PRODUCT_BITS_LIMIT
    if shift < 0:
        raise ResourceError(
            f"{layer}: requantisation multiplier {m:.3g} is too large for int16 output "
            "(the calibrated output range is degenerate)")
    mult = int(round(m * 2.0 ** shift))
    if mult >= 1 << m_bits:  # rounding reached the next power of two
        mult >>= 1
        shift -= 1
    return mult, shift


@dataclass
class QuantLayer:
    """A dense layer in int16 fixed point. Arrays are per output row (n = out_features)."""

    float_layer: DenseLayer
    weight: np.ndarray  # int16 (out, in)
    weight_scale: np.ndarray  # float64 (out,)
    bias: np.ndarray  # int64 (out,), accumulator units
    multiplier: np.ndarray  # int64 (out,)
    shift: np.ndarray  # int64 (out,)
    in_scale: float
    out_scale: float  # scale of the int16 output
    target_scale: float  # scale requantisation targets (== out_scale unless tanh/sigmoid)
    acc_bound: int  # max |acc| over rows for any int16 input
    m_bits: int

    @property
    def name(self) -> str:
        return self.float_layer.name

    @property
    def activation(self) -> str:
        return self.float_layer.activation

    @property
    def act_code(self) -> int:
        return ACT_CODES[self.activation]


@dataclass
class QuantizedNetwork:
    """A chain of quantised dense layers: int16 in at ``input_scale``, int16 out at ``output_scale``."""

    layers: List[QuantLayer]
    input_scale: float
    input_max_abs: float  # calibrated range of the input (for the error bound)

    @property
    def output_scale(self) -> float:
        return self.layers[-1].out_scale

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        return quantize_tensor(x, self.input_scale)

    def dequantize_output(self, y: np.ndarray) -> np.ndarray:
        return (np.asarray(y, dtype=np.float32) * np.float32(self.output_scale)).astype(np.float32)

    def float_forward(self, x: np.ndarray) -> np.ndarray:
        for layer in self.layers:
            x = layer.float_layer.forward(x)
        return x


def quantize_weights(weight: np.ndarray, bias: Optional[np.ndarray], activation: str, in_scale: float,
                     y_calibration: np.ndarray, name: str) -> dict:
    """int16 parameters of a layer with weights (dense (out, in) or conv (out, in, kh, kw)):
    weight / weight_scale per output channel, bias (int64, accumulator units), the
    requantisation multiplier / shift per output channel, out_scale and target_scale,
    and the proven accumulator bound with the multiplier's bit budget m_bits.
    y_calibration: the layer's float outputs on the calibration data (for out_scale)."""
    w = np.asarray(weight, np.float64)
    n = w.shape[0]
    w_scale = np.array([_symmetric_scale(v) for v in np.max(np.abs(w.reshape(n, -1)), axis=1)])
    wq = np.clip(np.floor(w / w_scale.reshape((-1,) + (1,) * (w.ndim - 1)) + 0.5), -Q_MAX, Q_MAX).astype(np.int16)
    acc_scale = in_scale * w_scale
    b = np.zeros(n) if bias is None else np.asarray(bias, np.float64)
    bias_q = np.floor(b / acc_scale + 0.5).astype(np.int64)
    if activation == "tanh":
        target, out_scale = 2.0 ** -TANH_INPUT_BITS, 1.0 / Q_MAX
    elif activation == "sigmoid":
        target, out_scale = 2.0 ** -(TANH_INPUT_BITS - 1), 1.0 / Q_MAX
    else:
        out_scale = target = _symmetric_scale(float(np.max(np.abs(y_calibration))))
    # |acc| <= sum|W| * 32768 + |bias| for any int16 input; one more bit covers
    # the rounding of partial sums when the layer is cut into column tiles.
    acc_bound = int(np.max(np.abs(wq.reshape(n, -1).astype(np.int64)).sum(axis=1) * 32768 + np.abs(bias_q)))
    m_bits = min(31, PRODUCT_BITS_LIMIT - (acc_bound.bit_length() + 1))
    if m_bits < 8:
        raise ResourceError(
            f"{name}: accumulator bound 2**{acc_bound.bit_length()} leaves only {m_bits} bits "
            "for the requantisation multiplier (layer too wide for exact int64 arithmetic)")
    ms = [_multiplier_shift(a / target, m_bits, name) for a in acc_scale]
    return dict(weight=wq, weight_scale=w_scale, bias=bias_q,
                multiplier=np.array([m for m, _ in ms], dtype=np.int64),
                shift=np.array([sh for _, sh in ms], dtype=np.int64),
                out_scale=out_scale, target_scale=target, acc_bound=acc_bound, m_bits=m_bits)


def quantize_network(layers: Sequence[DenseLayer], calibration: Optional[np.ndarray]) -> QuantizedNetwork:
    """Choose scales from calibration data and quantise every layer.

    ``calibration``: float array (samples, in_features) of inputs to the first layer.
    """
    if calibration is None:
        raise CalibrationError(
            "SpiNNaker needs calibration data to choose int16 scales: pass calibration=<array of "
            "representative inputs, first axis = samples> to tvm_spinn.build or the 'spinnaker' pipeline")
    x = np.asarray(calibration, dtype=np.float32)
    k0 = layers[0].in_features
    if x.ndim != 2 or x.shape[1] != k0 or x.shape[0] == 0:
        raise CalibrationError(
            f"calibration data for {layers[0].name} must have shape (samples, {k0}), got {tuple(x.shape)}")
    if not np.all(np.isfinite(x)):
        raise CalibrationError("calibration data contains NaN or infinity")
    input_max = float(np.max(np.abs(x)))
    in_scale = _symmetric_scale(input_max)
    result: List[QuantLayer] = []
    for layer in layers:
        y = layer.forward(x)
        q = quantize_weights(layer.weight, layer.bias, layer.activation, in_scale, y, layer.name)
        out_scale = q["out_scale"]
        result.append(QuantLayer(float_layer=layer, in_scale=in_scale, **q))
        x, in_scale = y, out_scale
    return QuantizedNetwork(result, result[0].in_scale, input_max)


def exact_matmul(x_q: np.ndarray, w_q: np.ndarray) -> np.ndarray:
    """Integer x @ w.T, exact (see the module docstring), as int64."""
    if w_q.shape[1] >= 1 << 22:
        raise ValueError("exact_matmul: too many columns for exact float64 accumulation")
    return (x_q.astype(np.float64) @ w_q.astype(np.float64).T).astype(np.int64)


def requantize_activate(layer: QuantLayer, acc: np.ndarray) -> np.ndarray:
    """int64 accumulators (with bias) -> int16 outputs of the layer."""
    y = sat16(round_shift(acc * layer.multiplier, layer.shift))
    return activate(layer.activation, y)


def reference_layer(layer: QuantLayer, x_q: np.ndarray, col_bounds: Sequence[int], partial_shift: int) -> np.ndarray:
    """One layer exactly as the kernels compute it.

    col_bounds: column tile boundaries [0, c1, ..., in_features]; with more than one
    column tile each tile's partial sum is rounded by ``partial_shift`` bits and the
    reducer scales the sum back (see spinn_dense.h).
    """
    if len(col_bounds) == 2:
        acc = exact_matmul(x_q, layer.weight)
    else:
        acc = np.zeros((x_q.shape[0], layer.weight.shape[0]), dtype=np.int64)
        for c0, c1 in zip(col_bounds[:-1], col_bounds[1:]):
            acc += round_shift(exact_matmul(x_q[:, c0:c1], layer.weight[:, c0:c1]), partial_shift)
        acc = acc << partial_shift
    return requantize_activate(layer, acc + layer.bias).astype(np.int16)


def error_bound(qnet: QuantizedNetwork, partial_shifts: Sequence[int], col_tiles: Sequence[int]) -> np.ndarray:
    """Worst-case |int16 result * output_scale - float32 result| per output, for inputs
    inside the calibrated range.

    Propagates, layer by layer: the input's rounding (half a step), weight rounding,
    bias rounding, partial-sum rounding, multiplier rounding and the output rounding,
    through the activation's slope (1 for none/relu/tanh, 1/4 for sigmoid) plus the
    tanh table's error. It is a bound, not an estimate: typical errors are far smaller.
    """
    e_in = np.full(qnet.layers[0].weight.shape[1], qnet.input_scale / 2)
    x_max = np.full(qnet.layers[0].weight.shape[1], qnet.input_max_abs + qnet.input_scale / 2)
    for layer, p, n_cols in zip(qnet.layers, partial_shifts, col_tiles):
        w = layer.float_layer.weight.astype(np.float64)
        w_err = np.abs(w - layer.weight.astype(np.float64) * layer.weight_scale[:, None])
        acc_scale = layer.in_scale * layer.weight_scale
        pre = np.abs(w) @ e_in + w_err @ x_max + acc_scale / 2
        if n_cols > 1 and p > 0:
            pre += acc_scale * n_cols * 2.0 ** (p - 1)
        m_true = acc_scale / layer.target_scale
        m_used = layer.multiplier * 2.0 ** (-layer.shift.astype(np.float64))
        acc_max = np.abs(w) @ x_max + np.abs(layer.bias) * acc_scale
        pre += np.abs(m_used - m_true) / np.maximum(m_true, 1e-300) * acc_max + layer.target_scale / 2
        if layer.activation == "sigmoid":
            e_out = pre / 4 + (TANH_TABLE_ERROR_LSB + 1) / Q_MAX
        elif layer.activation == "tanh":
            e_out = pre + (TANH_TABLE_ERROR_LSB + 0.5) / Q_MAX
        else:
            e_out = pre
        y_max = np.abs(w) @ x_max + (0 if layer.float_layer.bias is None else np.abs(layer.float_layer.bias))
        if layer.activation in ("tanh", "sigmoid"):
            y_max = np.ones_like(y_max)
        e_in, x_max = e_out, np.minimum(y_max, layer.out_scale * Q_MAX) + e_out
    return e_in
