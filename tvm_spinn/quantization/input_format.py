"""How a graph input's values travel from the host: int16, or 8-bit (``tvm_spinn.build(...,
input_bits=8)``), which halves the packets and bytes per sample on the host link.

A multicast packet's 32-bit payload carries two int16 values, or four 8-bit ones; the
receiving kernel stores 8-bit values as int16 (``c_runtime/include/spinn_rx.h``, the
packing of a receive entry), so everything after the receive, and the integer reference,
is the same arithmetic on int16 values that happen to lie in the 8-bit range.

8-bit input takes one of two formats, chosen from the calibration values:

* ``uint8`` (0..255, zero-extended) when no calibration value is negative: image data
  (pixels 0..255, or ``ToTensor``'s k / 255) whose calibrated maximum is the format's
  maximum is then quantised without any loss (one step per pixel level);
* ``int8`` (-128..127, sign-extended) otherwise, at 1/127 of the calibrated range (one
  symmetric scale, no zero point: normalised data that is not centred loses a bit).

An 8-bit input's range is its calibrated ``percentile`` of |x| *without* the headroom:
8-bit data is bounded by its format (a pixel never exceeds 255), and a headroom would cost
one of its 8 bits. A fresh value beyond the calibrated range saturates and is counted, as
every saturation is.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import numpy as np

# spinn_rx.h SPINN_PACK_*: a receive entry's packing
PACK_INT16, PACK_INT8, PACK_UINT8 = 0, 1, 2
PACK_SHIFT = 8  # SPINN_RX_PACK_SHIFT: the packing's bits in an entry's slot_shift word
INPUT_BITS = (16, 8)


@dataclass(frozen=True)
class InputFormat:
    """One way a graph input travels: int16 values in [q_min, q_max] at ``packing``."""

    name: str
    q_min: int
    q_max: int
    packing: int

    @property
    def values_per_packet(self) -> int:
        """Values one multicast packet (one EIEIO key + payload event) carries: 2 or 4."""
        return 4 if self.packing else 2

    def scale(self, max_abs: float) -> float:
        """The scale that maps |x| <= max_abs onto the format (value = q * scale)."""
        return float(max_abs) / self.q_max if max_abs > 0 and np.isfinite(max_abs) else 1.0 / self.q_max

    def quantize(self, x: np.ndarray, scale: float) -> np.ndarray:
        """float -> int16 values of the format: floor(x / scale + 0.5), saturated to
        [q_min, q_max]."""
        q = np.floor(np.asarray(x, dtype=np.float64) / scale + 0.5)
        return np.clip(q, self.q_min, self.q_max).astype(np.int16)

    def saturated(self, x: np.ndarray, scale: float) -> int:
        """How many values of x the format clips (beyond [q_min - 0.5, q_max + 0.5] steps)."""
        q = np.asarray(x, dtype=np.float64) / scale
        return int(np.count_nonzero((q >= self.q_max + 0.5) | (q < self.q_min - 0.5)))

    def off_grid(self, x: np.ndarray, scale: float) -> float:
        """The largest distance, in steps, of a value of x (inside the format's range) from
        the format's grid: about 0 for data that is 8-bit (pixels k / 255), up to 0.5 for
        data the format rounds."""
        q = np.asarray(x, dtype=np.float64) / scale
        inside = q[(q >= self.q_min) & (q <= self.q_max)]
        return float(np.max(np.abs(inside - np.rint(inside)))) if inside.size else 0.0

    def packets(self, n_values_per_row: int) -> int:
        """Packets of one row of n values (a row's last packet is padded)."""
        return -(-int(n_values_per_row) // self.values_per_packet)


INT16 = InputFormat("int16", -32768, 32767, PACK_INT16)
INT8 = InputFormat("int8", -128, 127, PACK_INT8)
UINT8 = InputFormat("uint8", 0, 255, PACK_UINT8)
FORMATS: Dict[int, InputFormat] = {f.packing: f for f in (INT16, INT8, UINT8)}


def of_packing(packing: int) -> InputFormat:
    """The format of a receive entry's / live input's packing (ValueError if unknown)."""
    try:
        return FORMATS[int(packing)]
    except KeyError:
        raise ValueError(f"unknown input packing {packing!r}: spinn_rx.h knows {sorted(FORMATS)}") from None


def choose(bits: int, calibration: np.ndarray) -> InputFormat:
    """The format of an input of ``bits`` (16 or 8) with these calibration values: int16;
    for 8 bits uint8 when none is negative, else int8."""
    if bits == 16:
        return INT16
    if bits != 8:
        raise ValueError(f"input_bits={bits!r}: pass 16 or 8")
    return UINT8 if float(np.min(calibration)) >= 0.0 else INT8
