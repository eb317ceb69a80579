"""The one integer reference: numpy code that computes exactly what the kernels compute,
bit for bit, op by op (dense, conv, pool, add, flatten) and for a whole graph.

Every function takes int16 tensors (n, C, H, W) (dense: (n, features)) and returns int16.
The accumulation cuts tiling chooses (:attr:`QOp.split`, ``partial_shift``) change the
rounding and are reproduced here.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from ..graph.network import input_number
from ..graph.windows import window_output_size
from .fixed_point import (ACT_CODES, AVG_RECIP_SHIFT, activate, avg_recip, exact_matmul, requantize_activate,
                          round_shift, sat16)

Pad = Union[int, Sequence[int]]


def _act_name(activation: Union[str, int]) -> str:
    if isinstance(activation, str):
        return activation
    return {v: k for k, v in ACT_CODES.items()}[int(activation)]


def dense_reference(x_q: np.ndarray, weight: np.ndarray, bias: np.ndarray, multiplier: np.ndarray,
                    shift: np.ndarray, activation: str = "none", split: Optional[Sequence[int]] = None,
                    partial_shift: int = 0, act_params: Optional[np.ndarray] = None) -> np.ndarray:
    """What the dense tiles compute: int16 (n, out) from int16 x_q (n, in), weight int16
    (out, in), bias int64 and multiplier / shift per output row.

    split: column tile bounds [0, c1, ..., in]; with more than one column tile each tile's
    partial sum is rounded by ``partial_shift`` bits and the reducer scales the sum back
    (see spinn_dense.h)."""
    if split is None or len(split) <= 2:
        acc = exact_matmul(x_q, weight)
    else:
        acc = np.zeros((x_q.shape[0], weight.shape[0]), dtype=np.int64)
        for c0, c1 in zip(split[:-1], split[1:]):
            acc += round_shift(exact_matmul(x_q[:, c0:c1], weight[:, c0:c1]), partial_shift)
        acc = acc << partial_shift
    return requantize_activate(acc + bias, multiplier, shift, activation, act_params).astype(np.int16)


def _pair(v: Union[int, Sequence[int]]) -> Tuple[int, int]:
    if np.isscalar(v):
        return int(v), int(v)
    a, b = v
    return int(a), int(b)


def _pads(padding: Pad) -> Tuple[int, int, int, int]:
    """(top, left, bottom, right) from an int, (ph, pw) or (top, left, bottom, right)."""
    if np.isscalar(padding):
        p = int(padding)
        return p, p, p, p
    padding = [int(v) for v in padding]
    if len(padding) == 2:
        return padding[0], padding[1], padding[0], padding[1]
    if len(padding) == 4:
        return tuple(padding)  # type: ignore[return-value]
    raise ValueError("padding must be an int, (ph, pw) or (top, left, bottom, right)")


def _windows(xp: np.ndarray, kh: int, kw: int, sh: int, sw: int, oh: int, ow: int) -> np.ndarray:
    """(..., oh, ow, kh, kw) windows of a padded (..., H, W) array."""
    v = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(-2, -1))
    return v[..., ::sh, ::sw, :, :][..., :oh, :ow, :, :]


def _pad_to(x: np.ndarray, top: int, left: int, oh: int, ow: int, kh: int, kw: int, sh: int, sw: int,
            fill) -> np.ndarray:
    """Pad (n, C, H, W) so every window of the oh x ow outputs is inside (fill outside)."""
    n, c, h, w = x.shape
    hp = max(h + top, (oh - 1) * sh + kh)
    wp = max(w + left, (ow - 1) * sw + kw)
    xp = np.full((n, c, hp, wp), fill, dtype=x.dtype)
    xp[:, :, top:top + h, left:left + w] = x
    return xp


def conv_accumulators(x_q: np.ndarray, w_q: np.ndarray, stride: Union[int, Sequence[int]] = 1,
                      padding: Pad = 0, groups: int = 1) -> np.ndarray:
    """Exact int64 sums (without bias) of a zero-padded conv2d: (n, OC, OH, OW).
    x_q int16 (n, C, H, W), w_q int16 (OC, C / groups, kh, kw)."""
    x = np.asarray(x_q)
    w = np.asarray(w_q)
    n, c, h, wd = x.shape
    oc, cg, kh, kw = w.shape
    sh, sw = _pair(stride)
    top, left, bottom, right = _pads(padding)
    if c != cg * groups or oc % groups:
        raise ValueError(f"conv: {c} input channels, weights {w.shape}, groups={groups} do not match")
    oh = window_output_size(h, kh, sh, top, bottom)
    ow = window_output_size(wd, kw, sw, left, right)
    exact_float = cg * kh * kw < 1 << 22  # every product < 2**30, every sum < 2**52: float64 is exact
    dt = np.float64 if exact_float else np.int64
    xp = _pad_to(x.astype(dt), top, left, oh, ow, kh, kw, sh, sw, 0)
    out = np.zeros((n, oc, oh, ow), np.int64)
    ocg = oc // groups
    for g in range(groups):
        win = _windows(xp[:, g * cg:(g + 1) * cg], kh, kw, sh, sw, oh, ow)  # (n, cg, oh, ow, kh, kw)
        cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, cg * kh * kw)
        wg = w[g * ocg:(g + 1) * ocg].reshape(ocg, -1).astype(dt)
        acc = cols @ wg.T if exact_float else np.einsum("pk,ok->po", cols, wg)
        out[:, g * ocg:(g + 1) * ocg] = acc.reshape(n, oh, ow, ocg).transpose(0, 3, 1, 2).astype(np.int64)
    return out


def _requant(acc: np.ndarray, multiplier, shift, activation: Union[str, int],
             act_params: Optional[np.ndarray] = None) -> np.ndarray:
    m = np.asarray(multiplier, np.int64).reshape(-1, 1, 1)
    s = np.asarray(shift, np.int64).reshape(-1, 1, 1)
    return requantize_activate(acc, m, s, _act_name(activation), act_params).astype(np.int16)


def conv_reference(x_q: np.ndarray, w_q: np.ndarray, bias: np.ndarray, multiplier: np.ndarray,
                   shift: np.ndarray, stride: Union[int, Sequence[int]] = 1, padding: Pad = 0,
                   groups: int = 1, activation: Union[str, int] = "none",
                   ic_bounds: Optional[Sequence[int]] = None, partial_shift: int = 0,
                   act_params: Optional[np.ndarray] = None) -> np.ndarray:
    """What the conv tiles compute: int16 (n, OC, OH, OW); padding int, (ph, pw) or
    (top, left, bottom, right); bias int64 and multiplier/shift per output channel.

    ic_bounds (0 = b0 < b1 < ... = C, groups 1): the input channels split into groups
    [b_g, b_g+1) whose partial conv tiles round their sums by partial_shift bits, added
    and shifted back by the conv reduce tiles (with partial_shift 0: the unsplit result)."""
    if ic_bounds is None:
        if partial_shift:
            raise ValueError("conv_reference: partial_shift needs ic_bounds")
        acc = conv_accumulators(x_q, w_q, stride, padding, groups)
    else:
        b = [int(v) for v in ic_bounds]
        if groups != 1 or len(b) < 2 or b[0] != 0 or b[-1] != np.shape(x_q)[1] or np.any(np.diff(b) < 1):
            raise ValueError(f"conv_reference: ic_bounds {b} must split the input channels (groups 1)")
        x, w = np.asarray(x_q), np.asarray(w_q)
        acc = sum(round_shift(conv_accumulators(x[:, g0:g1], w[:, g0:g1], stride, padding), partial_shift)
                  for g0, g1 in zip(b[:-1], b[1:])) << partial_shift
    acc = acc + np.asarray(bias, np.int64).reshape(1, -1, 1, 1)
    return _requant(acc, multiplier, shift, activation, act_params)


def pool_reference(x_q: np.ndarray, kernel: Union[int, Sequence[int]], stride: Union[int, Sequence[int]],
                   padding: Pad = 0, mode: str = "max", count_include_pad: bool = True,
                   ceil_mode: bool = False, out_size: Optional[Tuple[int, int]] = None,
                   recip_shift: int = AVG_RECIP_SHIFT) -> np.ndarray:
    """What the pool tiles compute: int16 (n, C, OH, OW). The output size is PyTorch's
    (floor or ceil mode) unless out_size is given."""
    x = np.asarray(x_q).astype(np.int64)
    n, c, h, w = x.shape
    kh, kw = _pair(kernel)
    sh, sw = _pair(stride)
    top, left, bottom, right = _pads(padding)
    if out_size is None:
        oh = window_output_size(h, kh, sh, top, bottom, ceil_mode)
        ow = window_output_size(w, kw, sw, left, right, ceil_mode)
    else:
        oh, ow = out_size
    inside = _windows(_pad_to(np.ones((1, 1, h, w), np.int64), top, left, oh, ow, kh, kw, sh, sw, 0),
                      kh, kw, sh, sw, oh, ow).sum((-1, -2))[0, 0]  # (oh, ow) input positions
    if mode == "max":
        low = -(1 << 20)
        m = _windows(_pad_to(x, top, left, oh, ow, kh, kw, sh, sw, low), kh, kw, sh, sw, oh, ow).max((-1, -2))
        return np.where(inside > 0, m, 0).astype(np.int16)
    if mode != "avg":
        raise ValueError("mode must be max or avg")
    s = _windows(_pad_to(x, top, left, oh, ow, kh, kw, sh, sw, 0), kh, kw, sh, sw, oh, ow).sum((-1, -2))
    if count_include_pad:
        ys = np.arange(oh) * sh - top
        xs = np.arange(ow) * sw - left
        ny = np.minimum(ys + kh, h + bottom) - np.maximum(ys, -top)
        nx = np.minimum(xs + kw, w + right) - np.maximum(xs, -left)
        cnt = np.maximum(ny, 0)[:, None] * np.maximum(nx, 0)[None, :]
    else:
        cnt = inside
    cnt = np.where(inside > 0, cnt, 0)
    recip = avg_recip(kh * kw, recip_shift).astype(np.int64)
    y = sat16(round_shift(s * recip[cnt], recip_shift))
    return y.astype(np.int16)


def add_reference(a_q: np.ndarray, b_q: np.ndarray, mult_a: int, mult_b: int, shift: int,
                  activation: Union[str, int] = "none", act_params: Optional[np.ndarray] = None) -> np.ndarray:
    """What the add tiles compute: act(sat16(round_shift(a * mult_a + b * mult_b, shift)))
    (clip and leaky relu before the saturation, see requantize_activate)."""
    acc = np.asarray(a_q, np.int64) * int(mult_a) + np.asarray(b_q, np.int64) * int(mult_b)
    return requantize_activate(acc, 1, int(shift), _act_name(activation), act_params).astype(np.int16)


def op_reference(q, ins: List[np.ndarray]) -> np.ndarray:
    """One quantised op (:class:`~tvm_spinn.quantization.quantize.QOp`) on int16 inputs
    (n, C, H, W); int16 (n, *q.out_shape)."""
    op, kind = q.op, q.kind
    n = ins[0].shape[0]
    if kind == "Conv2D":
        return conv_reference(ins[0], q.weight, q.bias, q.multiplier, q.shift, op.stride, op.padding, op.groups,
                              q.activation, ic_bounds=q.split, partial_shift=q.partial_shift, act_params=q.act_params)
    if kind == "Pool2D":
        return pool_reference(ins[0], op.kernel, op.stride, op.padding, op.kind, op.count_include_pad,
                              out_size=tuple(op.out_hw))
    if kind == "Add":
        return add_reference(ins[0], ins[1], int(q.multiplier[0]), int(q.multiplier[1]), int(q.shift[0]),
                             q.activation, q.act_params)
    if kind == "Flatten":
        return ins[0].reshape(n, 1, 1, -1)
    if kind == "Concat":
        return np.concatenate(ins, axis=1)
    if kind == "DenseLayer":
        y = dense_reference(ins[0].reshape(n, -1), q.weight, q.bias, q.multiplier, q.shift, q.activation,
                            q.split, q.partial_shift, q.act_params)
        return y.reshape(n, 1, 1, -1)
    raise TypeError(f"no integer reference for {kind}")


def graph_reference(ops: Sequence, inputs_q, input_shapes, outputs: Sequence[int]) -> List[np.ndarray]:
    """Integer results of a quantised graph: ``ops`` (QOps, tiling's cuts included) on
    int16 inputs_q (one array, or one per input; (n, ...) with the input's size per sample);
    int16 (n, *out_shape) per output."""
    given = [inputs_q] if isinstance(inputs_q, np.ndarray) else list(inputs_q)
    xs = [np.asarray(x, np.int16).reshape((np.shape(x)[0],) + tuple(s)) for x, s in zip(given, input_shapes)]
    outs: List[np.ndarray] = []
    for q in ops:
        outs.append(op_reference(q, [xs[input_number(j)] if j < 0 else outs[j] for j in q.inputs]))
    return [outs[i].astype(np.int16) for i in outputs]
