"""The one error model: a worst-case bound on |int16 result * scale - float32 result|.

For inputs whose every tensor stays inside its calibrated range, the bound is propagated
op by op, per value (an error array and a range array per tensor, broadcastable to its
(C, H, W)):

* dense / conv: the input's error through sum|W| of what each output reads, weight
  rounding over the input's range, bias rounding (half an accumulator step), the
  rounding of partial sums when tiling cut the accumulation, multiplier rounding, the
  output rounding, the activation's slope (1 for none / relu / tanh, 1/4 for sigmoid)
  and the tanh table's error;
* max pool: unchanged (per channel); average pool: + 1 output step (rounding, negative
  ties included);
* add: both inputs' errors + the rescaling's multiplier rounding + half an output step;
* flatten, concat: unchanged (reshaped, stacked).

It is a bound, not an estimate: typical errors are far smaller (and deep networks make
it vacuous, so tests also check the measured error).
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

from ..graph.network import input_number
from .fixed_point import Q_MAX, TANH_TABLE_ERROR_LSB


def _channels(v: np.ndarray, shape) -> np.ndarray:
    """Per channel maximum (C,) of a value broadcastable to (C, H, W)."""
    return np.broadcast_to(v, shape).reshape(shape[0], -1).max(axis=1)


def _finish(q, pre: np.ndarray, acc_scale: np.ndarray, acc_max: np.ndarray, y_max: np.ndarray):
    """Error and range of a layer's output from its pre-requantisation error."""
    m_true = acc_scale / q.target_scale
    m_used = q.multiplier * 2.0 ** (-q.shift.astype(np.float64))
    pre = pre + np.abs(m_used - m_true) / np.maximum(m_true, 1e-300) * acc_max + q.target_scale / 2
    e_out, y_max = _activation_error(q, pre, y_max)
    return e_out, np.minimum(y_max, q.out_scale * Q_MAX) + e_out


def _activation_error(q, pre: np.ndarray, y_max: np.ndarray):
    """Error after the activation from the error before it (pre, in value units), and the
    output's largest |value|: the activation's slope, its table's error, the rounding of
    its integer parameters."""
    if q.activation == "sigmoid":
        return pre / 4 + (TANH_TABLE_ERROR_LSB + 1) / Q_MAX, np.ones_like(y_max)
    if q.activation == "tanh":
        return pre + (TANH_TABLE_ERROR_LSB + 0.5) / Q_MAX, np.ones_like(y_max)
    if q.activation == "clip":  # slope 1; its bounds rounded to the output step
        lo, hi = q.op.act_params
        return pre + q.out_scale / 2, np.minimum(y_max, max(abs(lo), abs(hi)))
    if q.activation == "leaky_relu":  # slope <= 1; the slope's rounding and the leak's rounding
        m, s = (int(v) for v in q.act_params)
        alpha = q.op.act_params[0]
        return pre + abs(alpha - m * 2.0 ** -s) * y_max + q.out_scale / 2, y_max
    return pre, y_max


def _weighted(q, e_in: np.ndarray, x_in: np.ndarray):
    """(sum |w| e, sum |w - w_q| x, sum |w| x) per output of a dense or conv op."""
    op = q.op
    w = op.weight.astype(np.float64)
    wq = q.weight.astype(np.float64) * q.weight_scale.reshape((-1,) + (1,) * (w.ndim - 1))
    if q.kind == "DenseLayer":
        e = np.broadcast_to(e_in, q.in_shapes[0]).reshape(-1)
        x = np.broadcast_to(x_in, q.in_shapes[0]).reshape(-1)
        return np.abs(w) @ e, np.abs(w - wq) @ x, np.abs(w) @ x
    # conv: per input channel (the largest error / range of any of its positions)
    oc, icg = w.shape[:2]
    group = np.arange(oc) // (oc // op.groups)
    e = _channels(e_in, q.in_shapes[0]).reshape(op.groups, icg)[group]
    x = _channels(x_in, q.in_shapes[0]).reshape(op.groups, icg)[group]
    wa, wd = np.abs(w).sum(axis=(2, 3)), np.abs(w - wq).sum(axis=(2, 3))
    return (wa * e).sum(1), (wd * x).sum(1), (wa * x).sum(1)


def error_bound(ops: Sequence, input_scales: Sequence[float], input_max_abs: Sequence[float],
                outputs: Sequence[int]) -> List[np.ndarray]:
    """Worst-case absolute error (float64, one value per element, c-major) of each output
    of a quantised graph (``ops``: QOps with tiling's cuts), for inputs inside the
    calibrated range (input k: |x| <= input_max_abs[k], quantised at input_scales[k])."""
    err: Dict[int, np.ndarray] = {}
    rng: Dict[int, np.ndarray] = {}

    def get(table, j):
        if j < 0:
            k = input_number(j)
            half = input_scales[k] / 2
            return np.float64(half) if table is err else np.float64(input_max_abs[k] + half)
        return table[j]

    for i, q in enumerate(ops):
        e_in, x_in = get(err, q.inputs[0]), get(rng, q.inputs[0])
        kind = q.kind
        if kind in ("DenseLayer", "Conv2D"):
            acc_scale = q.in_scales[0] * q.weight_scale
            from_input, from_weights, reach = _weighted(q, e_in, x_in)
            pre = from_input + from_weights + acc_scale / 2
            if q.n_splits > 1 and q.partial_shift > 0:
                pre = pre + acc_scale * q.n_splits * 2.0 ** (q.partial_shift - 1)
            bias = 0.0 if q.op.bias is None else np.abs(q.op.bias.astype(np.float64))
            acc_max = reach + np.abs(q.bias) * acc_scale
            e, x = _finish(q, pre, acc_scale, acc_max, reach + bias)
            shape = (1, 1, -1) if kind == "DenseLayer" else (-1, 1, 1)
            e, x = e.reshape(shape), x.reshape(shape)
        elif kind == "Pool2D":
            c = q.in_shapes[0][0]
            rounding = q.out_scale if q.op.kind == "avg" else 0.0
            e = _channels(e_in, q.in_shapes[0]).reshape(c, 1, 1) + rounding
            x = _channels(x_in, q.in_shapes[0]).reshape(c, 1, 1) + rounding
        elif kind == "Add":
            e_b, x_b = get(err, q.inputs[1]), get(rng, q.inputs[1])
            used = q.multiplier * 2.0 ** -float(q.shift[0])
            true = np.array(q.in_scales) / q.target_scale
            rel = np.abs(used - true) / true
            pre = e_in + e_b + rel[0] * x_in + rel[1] * x_b + q.target_scale / 2
            e, y_max = _activation_error(q, pre, np.broadcast_to(x_in + x_b, np.shape(pre)).astype(np.float64))
            x = np.minimum(y_max, q.out_scale * Q_MAX) + e
        elif kind == "Concat":
            e = np.concatenate([np.broadcast_to(get(err, j), s) for j, s in zip(q.inputs, q.in_shapes)])
            x = np.concatenate([np.broadcast_to(get(rng, j), s) for j, s in zip(q.inputs, q.in_shapes)])
        else:  # Flatten
            e = np.broadcast_to(e_in, q.in_shapes[0]).reshape(1, 1, -1)
            x = np.broadcast_to(x_in, q.in_shapes[0]).reshape(1, 1, -1)
        err[i], rng[i] = e, x
    return [np.broadcast_to(err[o], ops[o].out_shape).reshape(-1).astype(np.float64) for o in outputs]
