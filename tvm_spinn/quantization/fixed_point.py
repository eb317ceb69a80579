"""int16 fixed-point arithmetic: the rounding, saturation, requantisation and activation
the C kernels (``c_runtime``) implement, and the int16 parameters of a layer.

Scheme (the C kernels in ``c_runtime`` implement exactly this arithmetic):

* activations: int16, one symmetric scale per tensor from calibration data
  (``scale = max|x| / 32767``); tanh and sigmoid outputs use the fixed scale 1/32767;
* weights: int16, one symmetric scale per output row, clipped to +-32767;
* accumulation: exact, in int64 (int32 blocks whose bound is proved from the weights,
  see :mod:`tvm_spinn.tiling.dense`); bias is int64 in accumulator units;
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
from typing import Optional, Tuple

import numpy as np

from ..errors import ResourceError

Q_MAX = 32767
Q_MIN = -32768
ACT_CODES = {"none": 0, "relu": 1, "tanh": 2, "sigmoid": 3, "clip": 4, "leaky_relu": 5}  # spinn_fixed.h
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


def symmetric_scale(max_abs: float) -> float:
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


def quantize_weights(weight: np.ndarray, bias: Optional[np.ndarray], activation: str, in_scale: float,
                     out_range: float, name: str) -> dict:
    """int16 parameters of a layer with weights (dense (out, in) or conv (out, in, kh, kw)):
    weight / weight_scale per output channel, bias (int64, accumulator units), the
    requantisation multiplier / shift per output channel, out_scale and target_scale,
    and the proven accumulator bound with the multiplier's bit budget m_bits.
    out_range: the largest |output| the int16 scale must hold (calibration statistic times
    headroom, see :class:`tvm_spinn.quantization.quantize.CalibrationSettings`)."""
    w = np.asarray(weight, np.float64)
    n = w.shape[0]
    w_scale = np.array([symmetric_scale(v) for v in np.max(np.abs(w.reshape(n, -1)), axis=1)])
    wq = np.clip(np.floor(w / w_scale.reshape((-1,) + (1,) * (w.ndim - 1)) + 0.5), -Q_MAX, Q_MAX).astype(np.int16)
    acc_scale = in_scale * w_scale
    b = np.zeros(n) if bias is None else np.asarray(bias, np.float64)
    bias_q = np.floor(b / acc_scale + 0.5).astype(np.int64)
    if activation == "tanh":
        target, out_scale = 2.0 ** -TANH_INPUT_BITS, 1.0 / Q_MAX
    elif activation == "sigmoid":
        target, out_scale = 2.0 ** -(TANH_INPUT_BITS - 1), 1.0 / Q_MAX
    else:
        out_scale = target = symmetric_scale(out_range)
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


def exact_matmul(x_q: np.ndarray, w_q: np.ndarray) -> np.ndarray:
    """Integer x @ w.T, exact (see the module docstring), as int64."""
    if w_q.shape[1] >= 1 << 22:
        raise ValueError("exact_matmul: too many columns for exact float64 accumulation")
    return (x_q.astype(np.float64) @ w_q.astype(np.float64).T).astype(np.int64)


def requantize_activate(acc: np.ndarray, multiplier: np.ndarray, shift: np.ndarray, activation: str,
                        act_params: Optional[np.ndarray] = None) -> np.ndarray:
    """int64 accumulators (with bias) -> int16 outputs, as spinn_finish: v = round_shift(acc * M, S),
    then activation(sat16(v)); clip clamps v to its int16 bounds, leaky relu scales negative
    v (saturated to int32) by m / 2**s before the saturation. multiplier and shift broadcast
    against acc (one per output channel); act_params: int64 (lo, hi) or (m, s)."""
    v = round_shift(acc * multiplier, shift)
    if activation == "clip":
        return np.clip(v, int(act_params[0]), int(act_params[1])).astype(np.int64)
    if activation == "leaky_relu":
        leak = round_shift(np.clip(v, -(1 << 31), (1 << 31) - 1) * int(act_params[0]), int(act_params[1]))
        return sat16(np.where(v < 0, leak, v))
    return activate(activation, sat16(v))


def activation_params(activation: str, params, out_scale: float) -> Optional[np.ndarray]:
    """The integer parameters the kernels use (int64 (2,)): clip's bounds in output steps
    (inside int16), leaky relu's slope as m / 2**s with |m| < 2**15; None for the others."""
    if activation == "clip":
        lo, hi = (float(v) / out_scale for v in params)
        return np.array([max(Q_MIN, int(np.floor(lo + 0.5))), min(Q_MAX, int(np.floor(hi + 0.5)))], np.int64)
    if activation == "leaky_relu":
        alpha = float(params[0])
        if alpha == 0.0:
            return np.array([0, 0], np.int64)
        s = min(31, 14 - math.frexp(alpha)[1])  # alpha * 2**s in [2**13, 2**14)
        return np.array([int(round(alpha * 2.0 ** s)), s], np.int64)
    return None


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


# Average pooling divides by a multiply with a reciprocal table and a rounding shift.
AVG_RECIP_SHIFT = 32


def avg_recip(n_max: int, recip_shift: int = AVG_RECIP_SHIFT) -> np.ndarray:
    """Reciprocal table of the average pool: recip[n] = min(ceil(2**k / n), 2**32 - 1),
    recip[0] = 0, for n = 0..n_max (uint32).

    Why ceil, and k = 32: with r = 2**k / n + e, e = j / n (j = -2**k mod n) the kernel
    computes floor(v + d) where v = sum / n + 1/2 and d = sum * j / (n * 2**k).
    round-half-up(sum / n) is floor(v). v is a multiple of 1 / (2n); when it is not an
    integer, floor(v + d) = floor(v) as long as -1/(2n) <= d < 1/(2n), which holds for
    |sum| <= 32768 n whenever n * j <= 2**(k - 16) = 65536: always for n <= 256
    (j < n), and for k = 32, n = 1 (r = 2**32 - 1, |d| < 2**-17). When v is an integer
    (a tie, only possible for even n), d must be >= 0: with j > 0 that fails exactly for
    negative sums, which then round down (half away from zero). j = 0 only for powers
    of two (exact everywhere); for any other even n every multiplier gets the ties of
    one sign wrong, so no table is exact there. For larger n, |d| < 32768 n / 2**32 < 1/2
    and the error is at most 1 LSB. :func:`avg_recip_errors` checks a given n exhaustively.
    """
    if not 1 <= n_max <= 0xFFFF or not 0 <= recip_shift <= 32:
        raise ValueError("avg_recip: n_max must be in [1, 65535] and recip_shift in [0, 32]")
    n = np.arange(1, n_max + 1, dtype=object)
    r = [min(-((-(1 << recip_shift)) // int(k)), 0xFFFFFFFF) for k in n]
    return np.array([0] + r, dtype=np.uint32)


def avg_recip_errors(n: int, recip_shift: int = AVG_RECIP_SHIFT) -> dict:
    """Exhaustive check of the average of n values over every sum in [-32768 n, 32767 n]:
    the kernel's round_shift(sum * recip[n], k) against round-half-up(sum / n)."""
    r = int(avg_recip(n, recip_shift)[n])
    max_err, mismatches, only_neg_ties = 0, 0, True
    lo, hi = -32768 * n, 32767 * n + 1
    for start in range(lo, hi, 1 << 22):
        s = np.arange(start, min(start + (1 << 22), hi), dtype=np.int64)
        diff = round_shift(s * r, recip_shift) - np.floor_divide(2 * s + n, 2 * n)
        bad = diff != 0
        ties = (2 * s + n) % (2 * n) == 0
        max_err = max(max_err, int(np.abs(diff).max()))
        mismatches += int(bad.sum())
        only_neg_ties &= bool(np.all(ties[bad] & (s[bad] < 0)))
    return {"n": n, "max_abs_error": max_err, "mismatches": mismatches, "only_negative_ties": only_neg_ties}
