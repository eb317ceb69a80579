"""Window arithmetic of sliding-window ops (convolution, pooling): which input rows an
output band reads, and output sizes (PyTorch's rules, ceil mode included)."""
from __future__ import annotations

from typing import Tuple


def window_input_rows(o0: int, n_o: int, stride: int, pad_before: int, k: int, in_size: int) -> Tuple[int, int]:
    """(first, count) of the input rows output rows [o0, o0 + n_o) of a window op read
    (at least one row, clamped into the input): a tile's ih0 and n_ih."""
    lo = max(0, o0 * stride - pad_before)
    hi = min(in_size, (o0 + n_o - 1) * stride - pad_before + k)
    lo = min(lo, in_size - 1)
    return lo, max(hi - lo, 1)


def window_output_size(in_size: int, k: int, stride: int, pad_before: int, pad_after: int,
                       ceil_mode: bool = False) -> int:
    """Output length of a window op (PyTorch's rule, including ceil mode: the last window
    must start inside the input or the leading padding)."""
    span = in_size + pad_before + pad_after - k
    if span < 0:
        raise ValueError("window larger than the padded input")
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    if (out - 1) * stride >= in_size + pad_before:
        out -= 1
    return out
