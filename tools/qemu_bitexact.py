#!/usr/bin/env python3
"""Bit-exactness of the kernels on ARMv5TE against the host, without hardware.

    python tools/qemu_bitexact.py [--cases 300] [--tensor-cases 150] [--seed 1]

Builds ``c_runtime/tests/kernel_driver.c`` with the kernels twice: for the host
(gcc) and for ARMv5TE Linux (``arm-linux-gnueabi-gcc -mcpu=arm968e-s -marm -Os
-static``), run under ``qemu-arm -cpu arm946`` (an ARMv5TE model that traps
ARMv6-only instructions). Random dense-tile and dense-reduce configs (the
layouts of spinn_dense.h / spinn_rx.h, as tvm_spinn/machine/builder.py writes them),
random tensor-kernel configs (conv tiles final / partial / with a fused pool,
pool, add and conv reduce tiles, spinn_tensor.h, written by the encoders of
tvm_spinn/machine/configs/tensor.py) and shuffled packet streams go through both;
every packet sent must match. A third of the sources send 8-bit values, four a
packet (int8 or uint8 receive entries, as a live input does with input_bits=8).

The random values stay inside what the compiler proves for real layers (no
int32 block or int64 overflow: that would be undefined behaviour, not a
portability bug). Tools: ``apt-get install -y --no-install-recommends
gcc-arm-linux-gnueabi libc6-dev-armel-cross qemu-user``. Exit 0 when equal,
1 on a difference, 2 when a tool is missing.
"""
from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
INCLUDE = ROOT / "c_runtime" / "include"
DRIVER = ROOT / "c_runtime" / "tests" / "kernel_driver.c"
KERNEL_SOURCES = sorted((ROOT / "c_runtime" / "kernels").glob("*.c"))

HOST_CC = ["gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror"]
ARM_CC = ["arm-linux-gnueabi-gcc", "-std=c99", "-mcpu=arm968e-s", "-marm", "-Os", "-static",
          "-Wall", "-Wextra", "-Werror"]
QEMU = ["qemu-arm", "-cpu", "arm946"]
TOOLS = ("gcc", "arm-linux-gnueabi-gcc", "qemu-arm")
INSTALL_HINT = "apt-get install -y --no-install-recommends gcc-arm-linux-gnueabi libc6-dev-armel-cross qemu-user"

# spinn_dense.h / spinn_fixed.h constants
KIND_TILE, KIND_REDUCE = 0x5D01, 0x5D02
FINAL, PARTIAL = 0, 1
MAX_SLOTS = 16
M32 = 0xFFFFFFFF

Case = Tuple[int, List[int], List[Tuple[int, int]]]  # driver kind, config words, packets


def missing_tools() -> List[str]:
    return [t for t in TOOLS if shutil.which(t) is None]


def _bits(n: int) -> int:
    """Shift that makes room for indices 0..n-1 (log2 of the next power of two)."""
    return max(n - 1, 0).bit_length()


def _pack16(values: List[int]) -> List[int]:
    if len(values) % 2:
        values = values + [0]
    return [(values[i] & 0xFFFF) | ((values[i + 1] & 0xFFFF) << 16) for i in range(0, len(values), 2)]


def _pack8(values: List[int]) -> List[int]:
    """Four 8-bit values a word (their low bytes), the first in the low byte."""
    out = []
    for i in range(0, len(values), 4):
        out.append(sum((v & 0xFF) << (8 * j) for j, v in enumerate(values[i:i + 4])))
    return out


def _tanh_table() -> List[int]:
    return _pack16([round(32767 * math.tanh(i / 64)) for i in range(513)])


N_ACTS = 6  # none, relu, tanh, sigmoid, clip, leaky relu (spinn_fixed.h)


def _act_params(rng: random.Random, act: int) -> List[int]:
    """Random integer parameters of clip ({lo, hi} inside int16) or leaky relu ({m, s})."""
    if act == 4:
        lo = rng.randint(-32768, 32767)
        return [lo, rng.randint(lo, 32767)]
    if act == 5:
        return [rng.randint(0, 32767), rng.randint(0, 31)]
    return []


def _act_words(rng: random.Random, act: int) -> List[int]:
    """The activation's table words in a dense config (spinn_act_words)."""
    return _tanh_table() if act in (2, 3) else [v & M32 for v in _act_params(rng, act)]


def _row_params(rng: random.Random, rows: int, max_mult: int) -> List[int]:
    words = []
    for _ in range(rows):
        bias = rng.randint(-(1 << 40), 1 << 40) & ((1 << 64) - 1)
        words += [bias & M32, bias >> 32, rng.randint(1, max_mult), rng.randint(0, 50)]
    return words


PACK_SHIFT = 8  # spinn_rx.h SPINN_RX_PACK_SHIFT: 8-bit packing (1 int8, 2 uint8) above the slot shift


def _packing(rng: random.Random) -> int:
    """0 (int16 pairs) in two thirds of the sources, else 1 or 2 (four 8-bit values a key)."""
    return rng.choice((0, 0, 0, 0, 1, 2))


def _source_block(shift: int) -> int:
    """Keys a source reserves: MAX_SLOTS slots of 2^shift indices (power of two)."""
    return MAX_SLOTS << shift


def _rounds(rng: random.Random, n_slots: int, per_slot, rounds: int) -> List[Tuple[int, int]]:
    """Rounds of complete samples in random slots, shuffled within a round (a
    slot is reused only after it was computed), plus packets that match nothing."""
    packets: List[Tuple[int, int]] = []
    for _ in range(rounds):
        batch = [p for slot in rng.sample(range(n_slots), rng.randint(1, n_slots)) for p in per_slot(slot)]
        batch += [(0xFF000000 | rng.getrandbits(24), rng.getrandbits(32)) for _ in range(rng.randint(0, 3))]
        rng.shuffle(batch)
        packets += batch
    return packets


def random_tile(rng: random.Random, rounds: int = 2) -> Case:
    mode = rng.choice((FINAL, PARTIAL))
    rows, cols = rng.randint(1, 24), rng.randint(1, 40)
    block_words = rng.choice((1, 1, 2, 4, 8, 16))
    # An int32 block of 2*block_words products must not overflow for any int16 input.
    wmax = 32767 if block_words == 1 else min(32767, (1 << 31) // (2 * block_words * 32768) - 1)
    act, n_slots = rng.randint(0, N_ACTS - 1), rng.randint(1, MAX_SLOTS)
    bound = cols * 32768 * wmax  # |row dot product|
    partial_shift = min(32, max(0, (bound.bit_length() + 1) - 31) + rng.randint(0, 3))
    out_shift = _bits(rows if mode == PARTIAL else (rows + 1) // 2)
    out_key = rng.getrandbits(8) << 24

    # Sources: contiguous producers covering [c0 - left, c0 + cols + right), keyed per pair.
    left, right = rng.randint(0, 7), rng.randint(0, 7)
    cuts = sorted(rng.sample(range(1, left + cols + right), min(rng.randint(0, 2), left + cols + right - 1)))
    bounds = [0] + cuts + [left + cols + right]
    rx, sources = [], []
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        packing = _packing(rng)  # a live input's 8-bit values, four a key, in a third of the sources
        per = 4 if packing else 2
        shift = _bits((b - a + per - 1) // per)
        base = (i + 1) << 20
        rx += [base, M32 & ~(_source_block(shift) - 1), shift | packing << PACK_SHIFT, (a - left) & M32, b - a]
        sources.append((base, shift, -(-(b - a) // per)))

    header = [KIND_TILE, mode, rows, cols, 2 * block_words, out_key, out_shift, act, partial_shift, n_slots,
              len(sources)]
    weights = []
    for _ in range(rows):
        weights += _pack16([rng.randint(-wmax, wmax) for _ in range(cols)])
    cfg = header + rx + weights
    if mode == FINAL:
        cfg += _row_params(rng, rows, (1 << 15) - 1) + _act_words(rng, act)

    def per_slot(slot):
        return [(base | slot << shift | j, rng.getrandbits(32)) for base, shift, n in sources for j in range(n)]

    return 1, cfg, _rounds(rng, n_slots, per_slot, rounds)


def random_reduce(rng: random.Random, rounds: int = 2) -> Case:
    rows, n_sources = rng.randint(1, 24), rng.randint(1, 4)
    act, n_slots = rng.randint(0, N_ACTS - 1), rng.randint(1, MAX_SLOTS)
    shift = _bits(rows)
    rx = []
    for i in range(n_sources):
        rx += [(i + 1) << 20, M32 & ~(_source_block(shift) - 1), shift, 0, rows]
    header = [KIND_REDUCE, rows, n_sources, rng.getrandbits(8) << 24, _bits((rows + 1) // 2), act,
              rng.randint(0, 16), n_slots, n_sources]
    # sum < 2^33, << 16, + bias < 2^41: times a multiplier < 2^12 stays below 2^62.
    cfg = header + rx + _row_params(rng, rows, (1 << 12) - 1) + _act_words(rng, act)

    def per_slot(slot):
        return [((i + 1) << 20 | slot << shift | r, rng.getrandbits(32))
                for i in range(n_sources) for r in range(rows)]

    return 2, cfg, _rounds(rng, n_slots, per_slot, rounds)


# ---------------------------------------------------------------------------
# tensor kernels: configs from tvm_spinn/machine/configs/tensor.py, random samples as packets

CONV, POOL, ADD, CONV_REDUCE = 3, 4, 5, 6  # driver kinds (kernel_driver.c)
TENSOR_CASES = ("conv_final", "conv_partial", "conv_pooled", "pool", "add", "conv_reduce")


def _tensor_configs():
    """The tensor kernels' config encoders (tvm_spinn.machine.configs.tensor) and the window
    arithmetic they need (tvm_spinn.graph.windows). The package imports TVM unless
    TVM_SPINN_LIGHT_IMPORT=1 (main sets it)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from types import SimpleNamespace

    from tvm_spinn.graph import windows
    from tvm_spinn.machine.configs import tensor
    return SimpleNamespace(**vars(tensor), window_input_rows=windows.window_input_rows,
                           window_output_size=windows.window_output_size)


def _np_rng(rng: random.Random):
    import numpy as np
    return np.random.default_rng(rng.getrandbits(32))


def _slack(rng: random.Random, shifts: Tuple[int, int, int]) -> Tuple[int, int, int]:
    """A key layout with random spare bits between the fields."""
    s, c, h = shifts
    eh, ec, es = rng.randint(0, 1), rng.randint(0, 1), rng.randint(0, 1)
    return s + eh + ec + es, c + eh + ec, h + eh


def _out_key(rng: random.Random, slot_shift: int) -> int:
    return rng.randint(1, 7) << 28 if slot_shift + 4 <= 28 else 0


class _Source:
    """A producer of channels [c0, c0 + nc) x rows [h0, h0 + nh) x all W columns of a
    tensor, with its own key block (index << 24)."""

    def __init__(self, rng: random.Random, tc, index: int, c0: int, nc: int, h0: int, nh: int, w: int) -> None:
        self.c0, self.nc, self.h0, self.nh, self.w = c0, nc, h0, nh, w
        self.packing = _packing(rng)
        self.shifts = _slack(rng, tc.block_key_layout(nc, nh, w, 4 if self.packing else 2))
        self.key = index << 24
        self.mask = ~(tc.block_n_keys(self.shifts[0], MAX_SLOTS) - 1) & M32

    def overlaps(self, c0: int, nc: int, h0: int, nh: int) -> bool:
        return self.c0 < c0 + nc and c0 < self.c0 + self.nc and self.h0 < h0 + nh and h0 < self.h0 + self.nh

    def entry(self, tc, c0: int, nc: int, h0: int, nh: int, buffer: int = 0) -> List[int]:
        return tc.trx_entry(self.key, self.mask, *self.shifts, self.c0, self.h0, 0, self.w, c0, h0, 0, nc, nh, self.w,
                            buffer, self.packing)

    def packets(self, x, slot: int) -> List[Tuple[int, int]]:
        """The packets of this block of one sample x (C, H, W) int16."""
        s, cs, hs = self.shifts
        out = []
        for c in range(self.nc):
            for h in range(self.nh):
                row = [int(v) for v in x[self.c0 + c, self.h0 + h]]
                words = _pack8(row) if self.packing else _pack16(row)
                out += [(self.key | slot << s | c << cs | h << hs | i, p) for i, p in enumerate(words)]
        return out


def _sources(rng: random.Random, tc, shape: Tuple[int, int, int], first_index: int) -> List[_Source]:
    """1 to 3 producers of a (C, H, W) tensor, split by channels or by rows."""
    C, H, W = shape
    by_rows = rng.random() < 0.5
    n = H if by_rows else C
    bounds = [0] + sorted(rng.sample(range(1, n), min(n - 1, rng.randint(0, 2)))) + [n]
    return [_Source(rng, tc, first_index + i, *((0, C, a, b - a) if by_rows else (a, b - a, 0, H)), W)
            for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))]


def _rx(tc, sources: Sequence[_Source], c0: int, nc: int, h0: int, nh: int, buffer: int = 0):
    """Receive entries of the sources overlapping a buffer block, and those sources."""
    used = [src for src in sources if src.overlaps(c0, nc, h0, nh)]
    return [src.entry(tc, c0, nc, h0, nh, buffer) for src in used], used


def _window(rng: random.Random, tc, size: int, k_max: int, s_max: int, ceil: bool = False):
    """(k, stride, pad_before, pad_after, out) of a random window op over `size`, or None."""
    k = rng.randint(1, k_max)
    stride, before, after = rng.randint(1, s_max), rng.randint(0, k - 1), rng.randint(0, k - 1)
    try:
        return k, stride, before, after, tc.window_output_size(size, k, stride, before, after, ceil)
    except ValueError:
        return None


def _window2d(rng: random.Random, tc, h: int, w: int, k_max: int, s_max: int, ceil: bool = False):
    """Rows' and columns' _window, retried until both fit."""
    while True:
        rows, cols = _window(rng, tc, h, k_max, s_max, ceil), _window(rng, tc, w, k_max, s_max, ceil)
        if rows and cols:
            return rows, cols


def _band(rng: random.Random, n: int) -> Tuple[int, int]:
    """A random (first, count) inside [0, n)."""
    first = rng.randint(0, n - 1)
    return first, rng.randint(1, n - first)


def _samples(rng: random.Random, sources: Sequence[_Source], shape) -> Callable[[int], List[Tuple[int, int]]]:
    """per_slot for _rounds: the packets of a fresh random sample from every source."""
    np_rng = _np_rng(rng)

    def per_slot(slot: int) -> List[Tuple[int, int]]:
        x = np_rng.integers(-32768, 32768, size=shape)
        return [p for src in sources for p in src.packets(x, slot)]

    return per_slot


def random_conv(rng: random.Random, mode: str, rounds: int = 2) -> Case:
    """A conv tile: mode "final", "partial" (one input-channel group) or "pooled"."""
    tc = _tensor_configs()
    np_rng = _np_rng(rng)
    C, H, W = rng.randint(1, 4), rng.randint(1, 8), rng.randint(1, 9)
    depthwise = rng.randint(1, 3) if mode != "partial" and rng.random() < 0.25 else 0  # channel multiplier
    dw3 = depthwise and W >= 2 and rng.random() < 0.5  # 3x3, stride 1 along the row: conv_tile.c's dw3 paths
    while True:
        (kh, sh, top, _, OH), (kw, sw, left, _, OW) = _window2d(rng, tc, H, W, 3, 2)
        if not dw3 or (kh, kw, sw) == (3, 3, 1):
            break
    OC = C * depthwise if depthwise else rng.randint(1, 4)
    oc0, n_oc = _band(rng, OC)
    ic0, n_ic = tc.depthwise_inputs(oc0, n_oc, depthwise) if depthwise else \
        _band(rng, C) if mode == "partial" else (0, C)
    extra = {}
    if mode == "pooled":
        ceil = rng.random() < 0.5
        (pkh, psh, ptop, pbottom, PH), (pkw, psw, pleft, pright, PW) = _window2d(rng, tc, OH, OW, 3, 3, ceil)
        ph0, n_ph = _band(rng, PH)
        oh0, n_oh = tc.window_input_rows(ph0, n_ph, psh, ptop, pkh, OH)
        n_oh = min(n_oh + rng.choice((0, 0, 1)), OH - oh0)  # sometimes a conv row no pool row reads
        extra["pool"] = dict(conv_h=OH, ph0=ph0, n_ph=n_ph, out_w=PW, kh=pkh, kw=pkw, sh=psh, sw=psw, pad_top=ptop,
                             pad_left=pleft, pad_bottom=pbottom, pad_right=pright, mode=rng.choice(("max", "avg")),
                             count_include_pad=rng.random() < 0.5, recip_shift=rng.choice((32, 32, 24)))
        shifts = tc.block_key_layout(n_oc, n_ph, PW)
    else:
        oh0, n_oh = _band(rng, OH)
        shifts = (tc.partial_key_layout if mode == "partial" else tc.block_key_layout)(n_oc, n_oh, OW)
    ih0, n_ih = tc.window_input_rows(oh0, n_oh, sh, top, kh, H)
    shape = (n_oc, 1 if depthwise else n_ic, kh, kw)
    if mode == "partial":
        w = np_rng.integers(-32768, 32768, size=shape)
        worst = int(abs(w).reshape(n_oc, -1).sum(1).max()) * 32768
        need = next(p for p in range(63) if 2 * worst + (1 << p) < 1 << (32 + p))
        extra.update(activation="none", partial_shift=min(62, need + rng.randint(0, 2)))
    else:
        # full-range weights (the quantiser's per-channel scale: int32 blocks of one word,
        # int64 accumulation) or small ones (longer int32 blocks)
        w_abs = rng.choice((4096, 32767))
        w = np_rng.integers(-w_abs, w_abs + 1, size=shape)
        act = rng.randint(0, N_ACTS - 1)
        extra.update(activation=act, act_params=_act_params(rng, act) or None,
                     bias=np_rng.integers(-(1 << 28), 1 << 28, size=n_oc),
                     multiplier=np_rng.integers(1, 1 << 20, size=n_oc), shift=np_rng.integers(24, 41, size=n_oc))
    n_slots = rng.randint(1, MAX_SLOTS)
    out = _slack(rng, shifts)
    sources = _sources(rng, tc, (C, H, W), 1)
    rx, used = _rx(tc, sources, ic0, n_ic, ih0, n_ih)
    cfg, _ = tc.conv_config(n_ic=n_ic, in_h=H, in_w=W, ic0=ic0, ih0=ih0, n_ih=n_ih, oc0=oc0, oh0=oh0, n_oh=n_oh,
                            out_w=OW, sh=sh, sw=sw, pad_top=top, pad_left=left, depthwise=depthwise,
                            n_slots=n_slots, out_slot_shift=out[0], out_c_shift=out[1], out_h_shift=out[2], rx=rx,
                            weights=w, out_key=_out_key(rng, out[0]), **extra)
    return CONV, [int(v) for v in cfg], _rounds(rng, n_slots, _samples(rng, used, (C, H, W)), rounds)


def random_pool(rng: random.Random, rounds: int = 2) -> Case:
    tc = _tensor_configs()
    C, H, W = rng.randint(1, 4), rng.randint(1, 8), rng.randint(1, 11)
    ceil = rng.random() < 0.5
    (kh, sh, top, bottom, OH), (kw, sw, left, right, OW) = _window2d(rng, tc, H, W, 4, 3, ceil)
    c0, n_c = _band(rng, C)
    oh0, n_oh = _band(rng, OH)
    ih0, n_ih = tc.window_input_rows(oh0, n_oh, sh, top, kh, H)
    n_slots = rng.randint(1, MAX_SLOTS)
    out = _slack(rng, tc.block_key_layout(n_c, n_oh, OW))
    sources = _sources(rng, tc, (C, H, W), 1)
    rx, used = _rx(tc, sources, c0, n_c, ih0, n_ih)
    cfg, _ = tc.pool_config(n_c=n_c, in_h=H, in_w=W, c0=c0, ih0=ih0, n_ih=n_ih, oh0=oh0, n_oh=n_oh, out_w=OW, kh=kh,
                            kw=kw, sh=sh, sw=sw, pad_top=top, pad_left=left, pad_bottom=bottom, pad_right=right,
                            mode=rng.choice(("max", "avg")), count_include_pad=rng.random() < 0.5, n_slots=n_slots,
                            out_slot_shift=out[0], out_c_shift=out[1], out_h_shift=out[2], rx=rx,
                            recip_shift=rng.choice((32, 32, 20)), out_key=_out_key(rng, out[0]))
    return POOL, [int(v) for v in cfg], _rounds(rng, n_slots, _samples(rng, used, (C, H, W)), rounds)


def random_add(rng: random.Random, rounds: int = 2) -> Case:
    tc = _tensor_configs()
    C, H, W = rng.randint(1, 4), rng.randint(1, 6), rng.randint(1, 9)
    c0, n_c = _band(rng, C)
    h0, n_h = _band(rng, H)
    n_slots = rng.randint(1, MAX_SLOTS)
    out = _slack(rng, tc.block_key_layout(n_c, n_h, W))
    a_src = _sources(rng, tc, (C, H, W), 1)
    b_src = _sources(rng, tc, (C, H, W), 1 + len(a_src))
    rx_a, used_a = _rx(tc, a_src, c0, n_c, h0, n_h, 0)
    rx_b, used_b = _rx(tc, b_src, c0, n_c, h0, n_h, 1)
    act = rng.randint(0, N_ACTS - 1)
    cfg, _ = tc.add_config(c0=c0, n_c=n_c, h=H, w=W, h0=h0, n_h=n_h, activation=act,
                           act_params=_act_params(rng, act) or None,
                           mult_a=rng.randint(-(1 << 31), (1 << 31) - 1), mult_b=rng.randint(-(1 << 31), (1 << 31) - 1),
                           shift=rng.randint(0, 40), n_slots=n_slots, out_slot_shift=out[0], out_c_shift=out[1],
                           out_h_shift=out[2], rx=rx_a + rx_b, out_key=_out_key(rng, out[0]))
    return ADD, [int(v) for v in cfg], _rounds(rng, n_slots, _samples(rng, used_a + used_b, (C, H, W)), rounds)


def random_conv_reduce(rng: random.Random, rounds: int = 2) -> Case:
    tc = _tensor_configs()
    np_rng = _np_rng(rng)
    n_oc, n_oh, out_w, G = rng.randint(1, 4), rng.randint(1, 5), rng.randint(1, 7), rng.randint(1, 4)
    p, act, n_slots = rng.randint(0, 8), rng.randint(0, N_ACTS - 1), rng.randint(1, MAX_SLOTS)
    s, cs, hs = _slack(rng, tc.partial_key_layout(n_oc, n_oh, out_w))
    out = _slack(rng, tc.block_key_layout(n_oc, n_oh, out_w))
    keys = [(g + 1) << 24 for g in range(G)]
    mask = ~(tc.block_n_keys(s, MAX_SLOTS) - 1) & M32
    cfg, fixups = tc.conv_reduce_config(
        oc0=rng.randint(0, 60), n_oc=n_oc, oh0=rng.randint(0, 60), n_oh=n_oh, out_w=out_w, n_groups=G,
        partial_shift=p, activation=act, n_slots=n_slots, in_slot_shift=s, in_c_shift=cs, in_h_shift=hs,
        out_slot_shift=out[0], out_c_shift=out[1], out_h_shift=out[2], n_rx=G,
        bias=np_rng.integers(-(1 << 30), 1 << 30, size=n_oc), multiplier=np_rng.integers(1, 1 << 20, size=n_oc),
        shift=np_rng.integers(20, 41, size=n_oc), out_key=_out_key(rng, out[0]), act_params=_act_params(rng, act) or None)
    cfg = [int(v) for v in cfg]
    for word, what, ref in fixups:
        if ref != "self":
            cfg[word] = keys[ref] if what == "key" else mask
    bound = (1 << 30) // G - 1  # the planner's guarantee: the groups' sums add up below 2**30

    def per_slot(slot: int) -> List[Tuple[int, int]]:
        v = np_rng.integers(-bound, bound + 1, size=(G, n_oc, n_oh, out_w))
        return [(keys[g] | slot << s | c << cs | h << hs | x, int(v[g, c, h, x]) & M32)
                for g in range(G) for c in range(n_oc) for h in range(n_oh) for x in range(out_w)]

    return CONV_REDUCE, cfg, _rounds(rng, n_slots, per_slot, rounds)


def random_tensor_case(rng: random.Random, which: str, rounds: int = 2) -> Case:
    """A random case of one of TENSOR_CASES."""
    if which.startswith("conv_") and which != "conv_reduce":
        return random_conv(rng, which[len("conv_"):], rounds)
    return {"pool": random_pool, "add": random_add, "conv_reduce": random_conv_reduce}[which](rng, rounds)


def write_cases(path: Path, cases: Sequence[Case]) -> None:
    lines = []
    for kind, cfg, packets in cases:
        lines.append(f"{kind:x} {len(cfg):x}")
        lines.append(" ".join(f"{w & M32:x}" for w in cfg))
        lines.append(f"{len(packets):x}")
        lines.append(" ".join(f"{k & M32:x} {p & M32:x}" for k, p in packets))
    path.write_text("\n".join(lines) + "\n")


def build(workdir: Path) -> Tuple[Path, Path]:
    """The driver for the host and for ARMv5TE; raises CalledProcessError with the compiler output."""
    srcs = [str(DRIVER)] + [str(s) for s in KERNEL_SOURCES]
    host, arm = workdir / "driver_host", workdir / "driver_arm"
    for cc, out in ((HOST_CC, host), (ARM_CC, arm)):
        subprocess.run(cc + [f"-I{INCLUDE}", *srcs, "-o", str(out)], check=True, capture_output=True, text=True)
    return host, arm


def compare(n_cases: int = 300, seed: int = 1, n_tensor_cases: Optional[int] = None) -> dict:
    """Run n_cases random dense cases and n_tensor_cases (default n_cases // 2) random tensor
    cases (TENSOR_CASES in turn) on both builds; a summary with the first difference, if any."""
    rng = random.Random(seed)
    cases = [random_tile(rng) if i % 3 else random_reduce(rng) for i in range(n_cases)]
    n_tensor = n_cases // 2 if n_tensor_cases is None else n_tensor_cases
    trng = random.Random(seed + 1)
    labels = ["dense_reduce" if i % 3 == 0 else "dense_tile" for i in range(n_cases)]
    labels += [TENSOR_CASES[i % len(TENSOR_CASES)] for i in range(n_tensor)]
    cases += [random_tensor_case(trng, label) for label in labels[n_cases:]]
    with tempfile.TemporaryDirectory(prefix="qemu_bitexact_") as tmp:
        work = Path(tmp)
        host, arm = build(work)
        cases_file = work / "cases.txt"
        write_cases(cases_file, cases)
        out_host = subprocess.run([str(host), str(cases_file)], check=True, capture_output=True, text=True).stdout
        out_arm = subprocess.run(QEMU + [str(arm), str(cases_file)], check=True, capture_output=True,
                                 text=True).stdout
    h, a = out_host.splitlines(), out_arm.splitlines()
    diff: Optional[str] = None
    if h != a:
        i = next((i for i, (x, y) in enumerate(zip(h, a)) if x != y), min(len(h), len(a)))
        case = next((l for l in reversed(h[: i + 1]) if l.startswith("case ")), "?")
        diff = f"line {i} ({case}): host {h[i] if i < len(h) else '<end>'!r} arm {a[i] if i < len(a) else '<end>'!r}"
    sent_by_kind = dict.fromkeys(labels, 0)  # packets sent per kind of case
    case_no = -1
    for line in h:
        if line.startswith("case "):
            case_no += 1
        elif len(line) == 17 and line[8] == " ":
            sent_by_kind[labels[case_no]] += 1
    return {
        "equal": diff is None,
        "cases": n_cases + n_tensor,
        "tensor_cases": n_tensor,
        "init_failures": sum(1 for l in h if l.startswith("case ") and not l.endswith("init=0")),
        "computes": sum(1 for l in h if l.startswith("slot ")),
        "packets_sent": sum(1 for l in h if len(l) == 17 and l[8] == " "),
        "packets_sent_by_kind": sent_by_kind,
        "first_difference": diff,
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=300, help="dense-kernel cases")
    ap.add_argument("--tensor-cases", type=int, default=None, help="tensor-kernel cases (default: cases / 2)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    if "tvm_spinn" not in sys.modules:  # the encoders, without TVM (as the mapping worker imports them)
        os.environ.setdefault("TVM_SPINN_LIGHT_IMPORT", "1")
    missing = missing_tools()
    if missing:
        print(f"qemu_bitexact: {', '.join(missing)} not found; install with:\n    {INSTALL_HINT}", file=sys.stderr)
        return 2
    try:
        r = compare(args.cases, args.seed, args.tensor_cases)
    except subprocess.CalledProcessError as e:
        print(f"qemu_bitexact: {' '.join(map(str, e.cmd[:3]))}... failed:\n{e.stderr}", file=sys.stderr)
        return 1
    print(f"{r['cases']} cases, {r['computes']} computes, {r['packets_sent']} packets sent, "
          f"{r['init_failures']} configs rejected: "
          + ("host and ARMv5TE (qemu arm946) bit-identical" if r["equal"] else f"DIFFER at {r['first_difference']}"))
    return 0 if r["equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
