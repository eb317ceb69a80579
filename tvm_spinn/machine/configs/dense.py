"""Config words shared by every kernel (packed int16, per-row requantisation parameters,
the tanh table) and the dense kernels' constants (``c_runtime/include/spinn_dense.h``)."""
from __future__ import annotations

import numpy as np

from ...quantization.fixed_point import tanh_table

KIND_DENSE_TILE = 0x5D01  # must match spinn_dense.h
KIND_DENSE_REDUCE = 0x5D02
CORE_DENSE_TILE = 1  # must match spinn_emulator.h
CORE_DENSE_REDUCE = 2
TILE_FINAL, TILE_PARTIAL = 0, 1


def pack_int16(a: np.ndarray) -> np.ndarray:
    """int16 (rows, cols) -> uint32 words, rows padded to an even length."""
    a = np.asarray(a, dtype=np.int16)
    if a.shape[-1] % 2:
        a = np.concatenate([a, np.zeros(a.shape[:-1] + (1,), np.int16)], axis=-1)
    return np.ascontiguousarray(a).view(np.uint32).reshape(-1)


def row_params(bias: np.ndarray, multiplier: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """The {bias lo, bias hi, multiplier, shift} words of each output row (channel) a
    finishing core requantises."""
    bias = np.asarray(bias).astype(np.int64)
    words = np.zeros((len(bias), 4), np.uint32)
    words[:, 0] = (bias & 0xFFFFFFFF).astype(np.uint32)
    words[:, 1] = ((bias >> 32) & 0xFFFFFFFF).astype(np.uint32)
    words[:, 2] = np.asarray(multiplier).astype(np.uint32)
    words[:, 3] = np.asarray(shift).astype(np.uint32)
    return words.reshape(-1)


def table_words(activation: str, act_params=None) -> np.ndarray:
    """The activation's table words after a finishing core's parameters (spinn_act_words):
    the tanh table (tanh, sigmoid), the int (lo, hi) of clip or (m, s) of leaky relu."""
    if activation in ("tanh", "sigmoid"):
        return pack_int16(tanh_table())
    if activation in ("clip", "leaky_relu"):
        if act_params is None or len(act_params) != 2:
            raise ValueError(f"{activation} needs its two integer parameters")
        return np.array([int(v) & 0xFFFFFFFF for v in act_params], np.uint32)
    return np.zeros(0, np.uint32)
