"""The tensor kernels (conv, pool, add tiles; c_runtime/kernels/*_tile.c; conv reduce tiles,
conv_reduce.c, finishing convolutions split by input channels) in the board emulator, bit
for bit against the numpy references of tvm_spinn.quantization.reference, the references against
float torch, row streaming at packet level, config rejection and undefined-behaviour
checking.

The programs are built by hand on one chip (0, 0): each producer (the live input and
every tile) gets its own key block and one routing entry sending its keys to the
cores that read them; the output gatherer decodes generic receive entries."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pytest

from tvm_spinn.runtime.emulator import EmulatedBoard
from tvm_spinn.errors import EmulatorError
from tvm_spinn.quantization.fixed_point import round_shift
from tvm_spinn.graph.windows import window_input_rows, window_output_size
from tvm_spinn.machine.configs.tensor import (CORE_ADD, CORE_CONV, CORE_CONV_REDUCE, CORE_POOL, FIX_SELF, add_config,
                                              block_key_layout, block_n_keys, conv_config, conv_reduce_config,
                                              depthwise_inputs, partial_key_layout, pool_config, trx_entry)
from tvm_spinn.program import BoardProgram, CoreProgram, InputEnd, OutputEnd
from tvm_spinn.quantization.fixed_point import AVG_RECIP_SHIFT, avg_recip, avg_recip_errors
from tvm_spinn.quantization.reference import add_reference, conv_accumulators, conv_reference, pool_reference

N_SLOTS = 4
OUTPUT_P = 17
ROOT = Path(__file__).resolve().parent.parent

Block = Tuple[int, int, int, int, int, int]  # c0, nc, h0, nh, w0, nw


@dataclass
class Producer:
    label: str
    tensor: str
    block: Block
    shifts: Tuple[int, int, int]  # slot, c, h
    key: int
    mask: int


class ProgramBuilder:
    """A one-chip program for EmulatedBoard from tensor kernel configs."""

    def __init__(self, rng: np.random.Generator, slack: bool = True) -> None:
        self.rng = rng
        self.slack = slack  # spare key bits between the fields (a non-minimal layout)
        self.producers: Dict[str, Producer] = {}
        self.cores: List[dict] = []
        self.routes: Dict[str, set] = {}

    def key_layout(self, nc: int, nh: int, nw: int, partial: bool = False) -> Tuple[int, int, int]:
        """(slot, c, h) shifts of a block: minimal, or with random spare bits (slack)."""
        s, c, h = (partial_key_layout if partial else block_key_layout)(nc, nh, nw)
        if self.slack:
            eh, ec, es = (int(v) for v in self.rng.integers(0, 2, 3))
            s, c, h = s + eh + ec + es, c + eh + ec, h + eh
        return s, c, h

    def producer(self, label: str, tensor: str, block: Block,
                 shifts: Optional[Tuple[int, int, int]] = None) -> Producer:
        c0, nc, h0, nh, w0, nw = block
        s, c, h = self.key_layout(nc, nh, nw) if shifts is None else shifts
        n_keys = block_n_keys(s, N_SLOTS)
        assert n_keys <= 1 << 24
        key = (len(self.producers) + 1) << 24
        p = Producer(label, tensor, block, (s, c, h), key, ~(n_keys - 1) & 0xFFFFFFFF)
        self.producers[label] = p
        self.routes[label] = set()
        return p

    def rx(self, tensor: str, dst: Block, buffer: int = 0) -> Tuple[List[List[int]], List[str]]:
        """Receive entries (key/mask left 0 for the fix-ups) of every producer of `tensor`
        overlapping the destination block."""
        c0, nc, h0, nh, w0, nw = dst
        entries, sources = [], []
        for p in self.producers.values():
            pc0, pnc, ph0, pnh, pw0, pnw = p.block
            if p.tensor != tensor or pc0 >= c0 + nc or pc0 + pnc <= c0 or ph0 >= h0 + nh or ph0 + pnh <= h0:
                continue
            entries.append(trx_entry(0, 0, *p.shifts, pc0, ph0, pw0, pnw, c0, h0, w0, nc, nh, nw, buffer))
            sources.append(p.label)
        return entries, sources

    def add_core(self, label: str, kind: int, config: np.ndarray, fixups, sources: List[str]) -> int:
        p = len(self.cores) + 1
        assert p < OUTPUT_P, "one chip holds 16 kernel cores here"
        config = config.copy()
        for word, what, ref in fixups:
            src = self.producers[label if ref == FIX_SELF else sources[ref]]
            config[word] = src.key if what == "key" else src.mask
        self.cores.append(CoreProgram(label, kind, (0, 0, p), config))
        for s in sources:
            self.routes[s].add(p)
        return p

    def program(self, in_shape: Tuple[int, int, int], out_tensor: str, out_shape: Tuple[int, int, int]) -> BoardProgram:
        inp = self.producers["input"]
        C, H, W = out_shape
        rx = []
        for p in self.producers.values():
            if p.tensor == out_tensor:
                c0, nc, h0, nh, w0, nw = p.block
                rx += trx_entry(p.key, p.mask, *p.shifts, c0, h0, w0, nw, 0, 0, 0, C, H, W, 0)
                self.routes[p.label].add(OUTPUT_P)
        table = []
        for label, cores in self.routes.items():
            p = self.producers[label]
            route = sum(1 << (6 + c) for c in cores)
            assert route, f"{label}'s packets go nowhere"
            table.append([p.key, p.mask, route])
        return BoardProgram(
            chips=[(0, 0)], links={}, routing_tables={(0, 0): np.array(table, np.uint32)},
            cores=self.cores, n_slots=N_SLOTS,
            in_features=int(np.prod(in_shape)), out_features=int(np.prod(out_shape)),
            inputs=[InputEnd((0, 0), inp.key, inp.shifts[0], inp.shifts[1], inp.shifts[2], tuple(in_shape))],
            output=OutputEnd((0, 0, OUTPUT_P), np.array(rx, np.uint32), trx=True))


def cuts(n: int, parts: int, rng: np.random.Generator, must: Sequence[int] = ()) -> List[int]:
    """Bounds 0 = b0 < ... < bk = n of a split into at most `parts` pieces (plus `must` cuts)."""
    inner = set(int(v) for v in rng.choice(np.arange(1, n), size=min(parts - 1, n - 1), replace=False)) \
        if n > 1 and parts > 1 else set()
    return sorted(inner | set(must) | {0, n})


def pads4(pads) -> Tuple[int, int, int, int]:
    return tuple(int(v) for v in pads)  # top, left, bottom, right


# ---------------------------------------------------------------------------
# tilings

def out_hw(in_shape, kernel, stride, pads, ceil_mode: bool = False) -> Tuple[int, int]:
    """(OH, OW) of a window op over a (C, H, W) input."""
    (_, H, W), (kh, kw), (sh, sw), (top, left, bottom, right) = in_shape, kernel, stride, pads
    return (window_output_size(H, kh, sh, top, bottom, ceil_mode),
            window_output_size(W, kw, sw, left, right, ceil_mode))


def add_conv_tiles(b: ProgramBuilder, name: str, x_tensor: str, in_shape, w_q, bias, mult, shift, stride,
                   pads, groups, act, oc_parts: int, oh_parts: int, out_tensor: str, pool: Optional[tuple] = None,
                   row_bounds: Optional[Sequence[int]] = None, extra_rows: int = 0) -> Tuple[int, int, int]:
    """Conv tiles of channel groups x row bands; the shape of the tensor they send.

    pool (kernel, stride, pads, mode, count_include_pad, ceil_mode): a pool fused into the
    tiles, which send the pooled tensor: the bands are pool-row bands, each tile computing
    the conv rows its band reads (and up to extra_rows more that no pool row reads).
    row_bounds: the bands' bounds instead of random cuts."""
    C, H, W = in_shape
    OC, Cg, kh, kw = w_q.shape
    sh, sw = stride
    top, left = pads[:2]
    OH, OW = out_hw(in_shape, (kh, kw), stride, pads)
    out_h, out_w = OH, OW
    if pool is not None:
        pk, ps, ppads, pmode, pcip, pceil = pool
        out_h, out_w = out_hw((OC, OH, OW), pk, ps, ppads, pceil)
    depthwise = OC // C if groups == C > 1 and Cg == 1 else 0  # the channel multiplier (0: not depthwise)
    ocg = OC // groups
    oc_b = cuts(OC, oc_parts, b.rng, must=[] if depthwise else [g * ocg for g in range(1, groups)])
    oh_b = cuts(out_h, oh_parts, b.rng) if row_bounds is None else list(row_bounds)
    for i, (oc0, oc1) in enumerate(zip(oc_b[:-1], oc_b[1:])):
        for j, (h0, h1) in enumerate(zip(oh_b[:-1], oh_b[1:])):
            if depthwise:
                ic0, n_ic = depthwise_inputs(oc0, oc1 - oc0, depthwise)
            else:
                g = oc0 // ocg
                ic0, n_ic = g * Cg, Cg
            fused = {}
            oh0, n_oh = h0, h1 - h0
            if pool is not None:  # the conv rows the pool rows [h0, h1) read
                oh0, n_oh = window_input_rows(h0, h1 - h0, ps[0], ppads[0], pk[0], OH)
                n_oh = min(n_oh + extra_rows, OH - oh0)
                fused = dict(pool=dict(conv_h=OH, ph0=h0, n_ph=h1 - h0, out_w=out_w, kh=pk[0], kw=pk[1], sh=ps[0],
                                       sw=ps[1], pad_top=ppads[0], pad_left=ppads[1], pad_bottom=ppads[2],
                                       pad_right=ppads[3], mode=pmode, count_include_pad=pcip))
            ih0, n_ih = window_input_rows(oh0, n_oh, sh, top, kh, H)
            rx, sources = b.rx(x_tensor, (ic0, n_ic, ih0, n_ih, 0, W))
            label = f"{name}_{i}_{j}"
            p = b.producer(label, out_tensor, (oc0, oc1 - oc0, h0, h1 - h0, 0, out_w))
            cfg, fix = conv_config(
                n_ic=n_ic, in_h=H, in_w=W, ic0=ic0, ih0=ih0, n_ih=n_ih, oc0=oc0, oh0=oh0, n_oh=n_oh,
                out_w=OW, sh=sh, sw=sw, pad_top=top, pad_left=left, depthwise=depthwise, activation=act,
                n_slots=N_SLOTS, out_slot_shift=p.shifts[0], out_c_shift=p.shifts[1], out_h_shift=p.shifts[2],
                rx=rx, weights=w_q[oc0:oc1], bias=bias[oc0:oc1], multiplier=mult[oc0:oc1],
                shift=shift[oc0:oc1], **fused)
            b.add_core(label, CORE_CONV, cfg, fix, sources)
    return OC, out_h, out_w


def add_split_conv_tiles(b: ProgramBuilder, name: str, x_tensor: str, in_shape, w_q, bias, mult, shift, stride,
                         pads, act, ic_bounds: Sequence[int], partial_shift: int, oc_parts: int, oh_parts: int,
                         out_tensor: str, acc_bound=None) -> Tuple[int, int, int]:
    """A convolution (groups 1) split by input channels: per output block (channels x row
    band) one partial conv tile per group [ic_bounds[g], ic_bounds[g + 1]) and a conv reduce
    tile that reads them all."""
    C, H, W = in_shape
    OC, _, kh, kw = w_q.shape
    sh, sw = stride
    top, left = pads[:2]
    OH, OW = out_hw(in_shape, (kh, kw), stride, pads)
    oc_b, oh_b = cuts(OC, oc_parts, b.rng), cuts(OH, oh_parts, b.rng)
    for i, (oc0, oc1) in enumerate(zip(oc_b[:-1], oc_b[1:])):
        for j, (oh0, oh1) in enumerate(zip(oh_b[:-1], oh_b[1:])):
            block = (oc0, oc1 - oc0, oh0, oh1 - oh0, 0, OW)
            ih0, n_ih = window_input_rows(oh0, oh1 - oh0, sh, top, kh, H)
            shifts = b.key_layout(oc1 - oc0, oh1 - oh0, OW, partial=True)  # shared by the block's groups
            parts = []
            for g, (ic0, ic1) in enumerate(zip(ic_bounds[:-1], ic_bounds[1:])):
                rx, sources = b.rx(x_tensor, (ic0, ic1 - ic0, ih0, n_ih, 0, W))
                label = f"{name}_{i}_{j}_g{g}"
                b.producer(label, f"{name}_{i}_{j}_partial", block, shifts)
                cfg, fix = conv_config(
                    n_ic=ic1 - ic0, in_h=H, in_w=W, ic0=ic0, ih0=ih0, n_ih=n_ih, oc0=oc0, oh0=oh0,
                    n_oh=oh1 - oh0, out_w=OW, sh=sh, sw=sw, pad_top=top, pad_left=left, depthwise=False,
                    activation="none", n_slots=N_SLOTS, out_slot_shift=shifts[0], out_c_shift=shifts[1],
                    out_h_shift=shifts[2], rx=rx, weights=w_q[oc0:oc1, ic0:ic1], partial_shift=partial_shift)
                b.add_core(label, CORE_CONV, cfg, fix, sources)
                parts.append(label)
            label = f"{name}_{i}_{j}"
            p = b.producer(label, out_tensor, block)
            cfg, fix = conv_reduce_config(
                oc0=oc0, n_oc=oc1 - oc0, oh0=oh0, n_oh=oh1 - oh0, out_w=OW, n_groups=len(parts),
                partial_shift=partial_shift, activation=act, n_slots=N_SLOTS, in_slot_shift=shifts[0],
                in_c_shift=shifts[1], in_h_shift=shifts[2], out_slot_shift=p.shifts[0], out_c_shift=p.shifts[1],
                out_h_shift=p.shifts[2], n_rx=len(parts), bias=bias[oc0:oc1], multiplier=mult[oc0:oc1],
                shift=shift[oc0:oc1], acc_bound=acc_bound)
            b.add_core(label, CORE_CONV_REDUCE, cfg, fix, parts)
    return OC, OH, OW


def add_pool_tiles(b: ProgramBuilder, name: str, x_tensor: str, in_shape, kernel, stride, pads, mode,
                   count_include_pad, ceil_mode, c_parts: int, oh_parts: int, out_tensor: str):
    C, H, W = in_shape
    kh, kw = kernel
    sh, sw = stride
    top, left, bottom, right = pads
    OH, OW = out_hw(in_shape, kernel, stride, pads, ceil_mode)
    c_b, oh_b = cuts(C, c_parts, b.rng), cuts(OH, oh_parts, b.rng)
    for i, (c0, c1) in enumerate(zip(c_b[:-1], c_b[1:])):
        for j, (oh0, oh1) in enumerate(zip(oh_b[:-1], oh_b[1:])):
            ih0, n_ih = window_input_rows(oh0, oh1 - oh0, sh, top, kh, H)
            rx, sources = b.rx(x_tensor, (c0, c1 - c0, ih0, n_ih, 0, W))
            label = f"{name}_{i}_{j}"
            p = b.producer(label, out_tensor, (c0, c1 - c0, oh0, oh1 - oh0, 0, OW))
            cfg, fix = pool_config(
                n_c=c1 - c0, in_h=H, in_w=W, c0=c0, ih0=ih0, n_ih=n_ih, oh0=oh0, n_oh=oh1 - oh0, out_w=OW,
                kh=kh, kw=kw, sh=sh, sw=sw, pad_top=top, pad_left=left, pad_bottom=bottom, pad_right=right,
                mode=mode, count_include_pad=count_include_pad, n_slots=N_SLOTS, out_slot_shift=p.shifts[0],
                out_c_shift=p.shifts[1], out_h_shift=p.shifts[2], rx=rx)
            b.add_core(label, CORE_POOL, cfg, fix, sources)
    return C, OH, OW


def add_add_tiles(b: ProgramBuilder, name: str, a_tensor: str, b_tensor: str, shape, mult_a, mult_b, shift,
                  act, c_parts: int, h_parts: int, out_tensor: str):
    C, H, W = shape
    c_b, h_b = cuts(C, c_parts, b.rng), cuts(H, h_parts, b.rng)
    for i, (c0, c1) in enumerate(zip(c_b[:-1], c_b[1:])):
        for j, (h0, h1) in enumerate(zip(h_b[:-1], h_b[1:])):
            dst = (c0, c1 - c0, h0, h1 - h0, 0, W)
            rx_a, src_a = b.rx(a_tensor, dst, 0)
            rx_b, src_b = b.rx(b_tensor, dst, 1)
            label = f"{name}_{i}_{j}"
            p = b.producer(label, out_tensor, dst)
            cfg, fix = add_config(c0=c0, n_c=c1 - c0, h=H, w=W, h0=h0, n_h=h1 - h0, activation=act, mult_a=mult_a,
                                  mult_b=mult_b, shift=shift, n_slots=N_SLOTS, out_slot_shift=p.shifts[0],
                                  out_c_shift=p.shifts[1], out_h_shift=p.shifts[2], rx=rx_a + rx_b)
            b.add_core(label, CORE_ADD, cfg, fix, src_a + src_b)
    return shape


# ---------------------------------------------------------------------------
# random layers

def random_input(rng, n, shape, extremes=True) -> np.ndarray:
    x = rng.integers(-32768, 32768, size=(n,) + tuple(shape)).astype(np.int16)
    if extremes and n > 2:
        x[0] = 32767
        x[1] = -32768
    return x


def random_conv(rng, C, OC, Cg, kh, kw, act="none"):
    w = rng.integers(-4096, 4097, size=(OC, Cg, kh, kw)).astype(np.int16)
    bias = rng.integers(-(1 << 28), 1 << 28, size=OC).astype(np.int64)
    k = Cg * kh * kw
    shift = np.full(OC, 30, np.int64)
    scale = 3 * 2.0 ** 17 / np.sqrt(k) * rng.uniform(0.3, 3, OC)
    mult = np.maximum(1, scale).astype(np.int64)
    return w, bias, mult, shift


CONV_CASES = [
    # C, OC, H, W, (kh, kw), (sh, sw), (top, left, bottom, right), groups, act, oc_parts, oh_parts
    (3, 5, 9, 11, (3, 3), (1, 1), (1, 1, 1, 1), 1, "relu", 2, 3),
    (2, 4, 10, 7, (5, 5), (2, 2), (2, 1, 0, 2), 1, "none", 3, 2),
    (4, 6, 8, 8, (2, 3), (2, 1), (0, 2, 1, 0), 2, "tanh", 2, 2),
    (5, 5, 7, 9, (3, 3), (1, 2), (1, 1, 1, 1), 5, "relu", 3, 3),       # depthwise
    (6, 6, 6, 6, (5, 5), (2, 2), (2, 2, 2, 2), 6, "sigmoid", 2, 2),     # depthwise 5x5 stride 2
    (3, 6, 7, 8, (3, 3), (1, 1), (1, 1, 1, 1), 3, "relu", 4, 2),       # depthwise x2
    (3, 9, 8, 6, (3, 3), (2, 1), (1, 1, 1, 1), 3, "tanh", 4, 3),       # depthwise x3 stride (2, 1)
    (2, 6, 5, 7, (2, 3), (1, 1), (0, 1, 1, 1), 2, "none", 6, 2),       # depthwise x3, one channel per tile
    (3, 4, 1, 23, (1, 5), (1, 1), (0, 2, 0, 2), 1, "relu", 2, 1),       # 1D
    (2, 3, 1, 17, (1, 3), (1, 2), (0, 0, 0, 1), 1, "none", 3, 1),       # 1D stride 2
    (4, 3, 12, 5, (1, 1), (2, 2), (0, 0, 0, 0), 1, "none", 1, 4),       # stride > kernel: unread rows
    (1, 7, 5, 5, (4, 2), (1, 1), (3, 1, 3, 0), 1, "relu", 3, 5),        # pads up to k-1
    (3, 2, 13, 13, (3, 3), (2, 2), (1, 1, 1, 1), 1, "none", 1, 6),      # many row bands (halos)
]


@pytest.mark.parametrize("case", range(len(CONV_CASES)))
def test_conv_tiles_match_the_reference_bit_for_bit(case):
    C, OC, H, W, k, stride, pads, groups, act, ocp, ohp = CONV_CASES[case]
    rng = np.random.default_rng(100 + case)
    w, bias, mult, shift = random_conv(rng, C, OC, C // groups, *k, act)
    b = ProgramBuilder(rng, slack=case % 2 == 0)
    b.producer("input", "x", (0, C, 0, H, 0, W))
    shape = add_conv_tiles(b, "conv", "x", (C, H, W), w, bias, mult, shift, stride, pads, groups, act, ocp, ohp,
                           "y")
    board = EmulatedBoard(b.program((C, H, W), "y", shape))
    x = random_input(rng, 13, (C, H, W))
    y = board.run(x).reshape((-1,) + shape)
    ref = conv_reference(x, w, bias, mult, shift, stride, pads, groups, act)
    np.testing.assert_array_equal(y, ref)
    assert 0 < np.mean((ref != 32767) & (ref != -32768))  # not all saturated
    if groups == C > 1 and OC > C:  # depthwise with a channel multiplier: some tile starts off phase 0
        assert any(c.config[7] % c.config[18] for c in b.cores)
    # the cycle-model counters: every tile's MACs are the valid window positions
    counters = board.core_counters()
    ones = np.ones((1, C, H, W), np.int16)
    valid = conv_accumulators(ones, np.ones((OC, C // groups) + k, np.int16), stride, pads, groups)
    assert sum(c["macs"] for c in counters.values()) == int(valid.sum()) * len(x)
    assert sum(c["outputs"] for c in counters.values()) == int(np.prod(shape)) * len(x)
    assert all(c["computes"] == len(x) and c["dropped"] == 0 for c in counters.values())


def test_conv_reference_accumulators_equal_torch_float64():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(5)
    for C, OC, H, W, k, stride, pads, groups, _, _, _ in CONV_CASES:
        w, _, _, _ = random_conv(rng, C, OC, C // groups, *k)
        x = random_input(rng, 3, (C, H, W))
        top, left, bottom, right = pads
        xt = F.pad(torch.tensor(x, dtype=torch.float64), (left, right, top, bottom))
        want = F.conv2d(xt, torch.tensor(w, dtype=torch.float64), stride=stride, groups=groups).numpy()
        got = conv_accumulators(x, w, stride, pads, groups)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, want.astype(np.int64))
        assert np.all(np.abs(want) < 2 ** 52)


# ---------------------------------------------------------------------------
# convolutions split by input channels: partial conv tiles + conv reduce tiles

def acc_bound(w_q) -> int:
    """Largest |accumulator| of any output channel for any int16 input (the planner's B)."""
    return int(np.abs(w_q.astype(np.int64)).reshape(len(w_q), -1).sum(1).max()) * 32768


def planner_shift(w_q) -> int:
    """The rounding shift the planner picks (tvm_spinn.tiling.tensor.partial_shift)."""
    return max(0, acc_bound(w_q).bit_length() - 30)


def small_split_conv(rng, C, OC, kh, kw):
    """random_conv with weights small enough that partial_shift 0 is provably safe (B < 2**31)."""
    w, bias, mult, shift = random_conv(rng, C, OC, C, kh, kw)
    wmax = min(4096, ((1 << 31) - 1) // 32768 // (C * kh * kw))
    return rng.integers(-wmax, wmax + 1, size=w.shape).astype(np.int16), bias, mult, shift


SPLIT_CASES = [
    # C, OC, H, W, (kh, kw), (sh, sw), (top, left, bottom, right), act, n_groups, oc_parts, oh_parts
    (5, 4, 9, 8, (3, 3), (1, 1), (1, 1, 1, 1), "relu", 2, 2, 2),
    (7, 3, 10, 7, (5, 3), (2, 1), (2, 1, 1, 1), "none", 3, 1, 3),
    (6, 5, 8, 9, (3, 3), (2, 2), (1, 1, 1, 1), "tanh", 3, 2, 2),
    (4, 6, 7, 7, (2, 2), (1, 1), (0, 0, 1, 1), "sigmoid", 2, 2, 2),
    (3, 4, 1, 19, (1, 5), (1, 2), (0, 2, 0, 2), "relu", 3, 2, 1),     # 1D
    (8, 2, 6, 5, (1, 1), (2, 2), (0, 0, 0, 0), "none", 2, 1, 2),      # stride > kernel: unread rows
]


def _run_split(case: int, w, bias, mult, shift, ic_bounds, p, x, bound=None, slack=True):
    C, OC, H, W, k, stride, pads, act, _, ocp, ohp = SPLIT_CASES[case]
    b = ProgramBuilder(np.random.default_rng(400 + case), slack=slack)
    b.producer("input", "x", (0, C, 0, H, 0, W))
    shape = add_split_conv_tiles(b, "split", "x", (C, H, W), w, bias, mult, shift, stride, pads, act, ic_bounds, p,
                                 ocp, ohp, "y", acc_bound=bound)
    board = EmulatedBoard(b.program((C, H, W), "y", shape))
    return board.run(x).reshape((-1,) + shape), board.core_counters()


@pytest.mark.parametrize("case", range(len(SPLIT_CASES)))
def test_split_conv_matches_the_reference_bit_for_bit(case):
    C, OC, H, W, k, stride, pads, act, G, _, _ = SPLIT_CASES[case]
    rng = np.random.default_rng(500 + case)
    w, bias, mult, shift = small_split_conv(rng, C, OC, *k)
    ic_bounds = cuts(C, G, rng)
    assert len(ic_bounds) == G + 1
    x = random_input(rng, 9, (C, H, W))
    p = planner_shift(w) + 2  # more than needed: every partial sum is rounded
    y, counters = _run_split(case, w, bias, mult, shift, ic_bounds, p, x, acc_bound(w), slack=case % 2 == 0)
    ref = conv_reference(x, w, bias, mult, shift, stride, pads, 1, act, ic_bounds=ic_bounds, partial_shift=p)
    np.testing.assert_array_equal(y, ref)
    assert 0 < np.mean((ref != 32767) & (ref != -32768) & (ref != 0))  # not all saturated or zero
    # the partial tiles do the MACs of the whole convolution, once
    ones = np.ones((1, C, H, W), np.int16)
    valid = conv_accumulators(ones, np.ones((OC, C) + k, np.int16), stride, pads)
    assert sum(c["macs"] for c in counters.values()) == int(valid.sum()) * len(x)
    outputs = {kind: sum(c["outputs"] for label, c in counters.items() if ("_g" in label) == (kind == "partial"))
               for kind in ("partial", "reduce")}
    assert outputs == {"partial": G * y[0].size * len(x), "reduce": y[0].size * len(x)}
    assert all(c["computes"] == len(x) and c["dropped"] == 0 for c in counters.values())
    # without rounding the split is exactly the unsplit convolution
    y0, _ = _run_split(case, w, bias, mult, shift, ic_bounds, 0, x, acc_bound(w), slack=case % 2 == 1)
    np.testing.assert_array_equal(y0, conv_reference(x, w, bias, mult, shift, stride, pads, 1, act))


def test_split_conv_of_large_weights_needs_the_planners_shift():
    """Weights near full scale: the partial sums only fit int32 after a rounding shift."""
    rng = np.random.default_rng(31)
    C, OC, H, W, G = 16, 3, 6, 6, 3
    w = rng.integers(-32768, 32768, size=(OC, C, 3, 3)).astype(np.int16)
    w[0] = 32767  # a channel at the bound
    bias = rng.integers(-(1 << 30), 1 << 30, size=OC).astype(np.int64)
    mult = rng.integers(1 << 19, 1 << 21, size=OC).astype(np.int64)
    shift = np.full(OC, 40, np.int64)
    p = planner_shift(w)
    assert p >= 7
    ic_bounds = cuts(C, G, rng)
    x = random_input(rng, 6, (C, H, W))  # x[0] = 32767 drives channel 0's accumulator to its bound
    case = dict(stride=(1, 1), pads=(1, 1, 1, 1))
    b = ProgramBuilder(rng)
    b.producer("input", "x", (0, C, 0, H, 0, W))
    shape = add_split_conv_tiles(b, "split", "x", (C, H, W), w, bias, mult, shift, case["stride"], case["pads"],
                                 "relu", ic_bounds, p, 1, 2, "y")  # acc_bound None: the planner's guarantee
    y = EmulatedBoard(b.program((C, H, W), "y", shape)).run(x).reshape((-1,) + shape)
    ref = conv_reference(x, w, bias, mult, shift, 1, 1, 1, "relu", ic_bounds=ic_bounds, partial_shift=p)
    np.testing.assert_array_equal(y, ref)
    assert np.any((ref > 0) & (ref < 32767))
    # the first group's tile cannot go without a shift
    g1 = ic_bounds[1]
    tile = dict(n_ic=g1, in_h=H, in_w=W, ic0=0, ih0=0, n_ih=H, oc0=0, oh0=0, n_oh=H, out_w=W, sh=1, sw=1,
                pad_top=1, pad_left=1, depthwise=False, activation="none", n_slots=4, out_slot_shift=8,
                out_c_shift=6, out_h_shift=3, rx=[], weights=w[:, :g1])
    with pytest.raises(ValueError, match="do not fit int32"):
        conv_config(**tile, partial_shift=0)
    worst = acc_bound(w[:, :g1])  # |round_shift(acc, need)| <= worst / 2**need + 1/2 < 2**31
    need = next(s for s in range(63) if 2 * worst + (1 << s) < 1 << (32 + s))
    assert 0 < need <= p
    conv_config(**tile, partial_shift=need)
    with pytest.raises(ValueError, match="partial conv tile \\(oc0=0, oh0=0, ic0=0\\)"):
        conv_config(**tile, partial_shift=need - 1)


def test_split_reference_rounds_each_group():
    rng = np.random.default_rng(12)
    w, bias, mult, shift = random_conv(rng, 6, 4, 6, 3, 3)
    x = random_input(rng, 3, (6, 5, 5))
    want = conv_reference(x, w, bias, mult, shift, 1, 1, 1, "relu")
    np.testing.assert_array_equal(conv_reference(x, w, bias, mult, shift, 1, 1, 1, "relu", [0, 1, 4, 6], 0), want)
    np.testing.assert_array_equal(conv_reference(x, w, bias, mult, shift, 1, 1, 1, "relu", [0, 6], 0), want)
    acc = sum(round_shift(conv_accumulators(x[:, a:b], w[:, a:b], 1, 1), 3) for a, b in ((0, 2), (2, 6))) << 3
    acc = (acc + bias.reshape(1, -1, 1, 1)) * mult.reshape(1, -1, 1, 1)
    np.testing.assert_array_equal(conv_reference(x, w, bias, mult, shift, 1, 1, 1, "none", [0, 2, 6], 3),
                                  np.clip(round_shift(acc, 30), -32768, 32767))
    for bad in ([0, 3, 3, 6], [1, 6], [0, 5], [6]):
        with pytest.raises(ValueError):
            conv_reference(x, w, bias, mult, shift, 1, 1, 1, "none", bad, 0)
    with pytest.raises(ValueError):
        conv_reference(x, w, bias, mult, shift, 1, 1, 1, "none", None, 2)
    with pytest.raises(ValueError):
        conv_reference(x, w[:, :3], bias, mult, shift, 1, 1, 2, "none", [0, 3, 6], 0)


POOL_CASES = [
    # C, H, W, kernel, stride, pads, mode, count_include_pad, ceil_mode, c_parts, oh_parts
    (3, 9, 11, (3, 3), (2, 2), (1, 1, 1, 1), "max", True, False, 2, 3),
    (4, 8, 8, (2, 2), (2, 2), (0, 0, 0, 0), "max", True, True, 3, 2),
    (2, 10, 9, (3, 3), (2, 2), (1, 1, 1, 1), "avg", True, True, 2, 3),
    (2, 10, 9, (3, 3), (2, 2), (1, 1, 1, 1), "avg", False, True, 1, 4),
    (3, 7, 7, (3, 2), (1, 2), (1, 0, 1, 0), "avg", False, False, 3, 2),
    (5, 6, 13, (2, 3), (2, 3), (1, 1, 1, 1), "avg", True, False, 2, 2),
    (2, 11, 11, (5, 5), (3, 3), (2, 2, 2, 2), "max", True, True, 2, 2),
    (2, 11, 11, (5, 5), (3, 3), (2, 2, 2, 2), "avg", True, True, 2, 2),
    (3, 1, 20, (1, 4), (1, 3), (0, 2, 0, 2), "avg", True, True, 2, 1),  # 1D, ceil mode
    (3, 1, 20, (1, 3), (1, 2), (0, 1, 0, 1), "max", True, False, 3, 1),  # 1D
]


@pytest.mark.parametrize("case", range(len(POOL_CASES)))
def test_pool_tiles_match_the_reference_bit_for_bit(case):
    C, H, W, k, stride, pads, mode, cip, ceil, cp, ohp = POOL_CASES[case]
    rng = np.random.default_rng(200 + case)
    for asym in (False, True):
        p = pads4(pads)
        if asym:  # the kernels take any padding; torch only symmetric (tested below)
            p = (p[0], p[1], max(p[2] - 1, 0), p[3] + 1)
        b = ProgramBuilder(rng, slack=case % 2 == 1)
        b.producer("input", "x", (0, C, 0, H, 0, W))
        shape = add_pool_tiles(b, "pool", "x", (C, H, W), k, stride, p, mode, cip, ceil, cp, ohp, "y")
        board = EmulatedBoard(b.program((C, H, W), "y", shape))
        x = random_input(rng, 11, (C, H, W))
        y = board.run(x).reshape((-1,) + shape)
        np.testing.assert_array_equal(y, pool_reference(x, k, stride, p, mode, cip, ceil))


def test_pool_reference_against_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(9)
    for C, H, W, k, stride, pads, mode, cip, ceil, _, _ in POOL_CASES:
        padding = (pads[0], pads[1])
        x = random_input(rng, 4, (C, H, W))
        # small values make exact ties (sum / n = t + 1/2) frequent
        x[2:] = rng.integers(-3, 4, size=x[2:].shape)
        xt = torch.tensor(x, dtype=torch.float64)
        got = pool_reference(x, k, stride, pads, mode, cip, ceil)
        if mode == "max":
            want = F.max_pool2d(xt, k, stride, padding, ceil_mode=ceil).numpy()
            np.testing.assert_array_equal(got, want)
            continue
        avg = F.avg_pool2d(xt, k, stride, padding, ceil_mode=ceil, count_include_pad=cip).numpy()
        half_up = np.floor(avg + 0.5)
        neg_tie = (avg < 0) & (avg + 0.5 == half_up)
        # round half up, except that exact negative ties may round down (spinn_tensor.h)
        assert np.all((got == half_up) | (neg_tie & (got == half_up - 1))), (k, stride, pads, mode, cip, ceil)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 16, 20, 25, 27, 49, 64, 81, 121, 181, 256])
def test_avg_reciprocal_is_exact_but_for_negative_ties(n):
    r = avg_recip_errors(n)
    assert r["only_negative_ties"] and r["max_abs_error"] <= 1
    if n & (n - 1) == 0 or n % 2:
        assert r["mismatches"] == 0


def test_avg_reciprocal_large_windows_stay_within_one_lsb():
    for n in (257, 300, 625):
        assert avg_recip_errors(n)["max_abs_error"] <= 1
    t = avg_recip(65535)
    assert t.dtype == np.uint32 and t[0] == 0 and t[1] == 0xFFFFFFFF and t[2] == 1 << 31
    assert AVG_RECIP_SHIFT == 32


ADD_CASES = [
    # C, H, W, conv kernel, mult_a, mult_b, shift, act, c_parts, h_parts
    (4, 7, 9, 3, 1 << 14, 3 << 12, 15, "relu", 2, 3),
    (3, 6, 5, 1, -(1 << 13), 1 << 15, 15, "none", 3, 2),
    (2, 1, 19, 3, 12345, 23456, 15, "relu", 2, 1),  # 1D
]


@pytest.mark.parametrize("case", range(len(ADD_CASES)))
def test_residual_add_after_a_conv(case):
    """y = act(x * ma + conv(x) * mb): the add reads the live input and the conv tiles."""
    C, H, W, k, ma, mb, sft, act, cp, hp = ADD_CASES[case]
    rng = np.random.default_rng(300 + case)
    kh = min(k, H)
    pads = (kh // 2, k // 2, kh // 2, k // 2)
    w, bias, mult, shift = random_conv(rng, C, C, C, kh, k)
    b = ProgramBuilder(rng)
    b.producer("input", "x", (0, C, 0, H, 0, W))
    add_conv_tiles(b, "conv", "x", (C, H, W), w, bias, mult, shift, (1, 1), pads, 1, "none", 2, 2, "c")
    add_add_tiles(b, "add", "x", "c", (C, H, W), ma, mb, sft, act, cp, hp, "y")
    board = EmulatedBoard(b.program((C, H, W), "y", (C, H, W)))
    x = random_input(rng, 9, (C, H, W))
    y = board.run(x).reshape(-1, C, H, W)
    c = conv_reference(x, w, bias, mult, shift, 1, pads, 1, "none")
    np.testing.assert_array_equal(y, add_reference(x, c, ma, mb, sft, act))
    ref_float = np.asarray(x, np.float64) * ma + np.asarray(c, np.float64) * mb
    want = np.clip(np.floor(ref_float / 2 ** sft + 0.5), -32768, 32767)
    if act == "relu":
        want = np.maximum(want, 0)
    np.testing.assert_array_equal(y, want)


def test_conv_pool_pipeline_streams_between_kernels():
    """conv (row bands) -> max pool (other row bands) -> output, several samples in flight."""
    rng = np.random.default_rng(77)
    C, OC, H, W = 3, 4, 14, 10
    w, bias, mult, shift = random_conv(rng, C, OC, C, 3, 3)
    b = ProgramBuilder(rng)
    b.producer("input", "x", (0, C, 0, H, 0, W))
    cs = add_conv_tiles(b, "conv", "x", (C, H, W), w, bias, mult, shift, (1, 1), (1, 1, 1, 1), 1, "relu", 2, 4,
                        "c")
    ps = add_pool_tiles(b, "pool", "c", cs, (3, 3), (2, 2), (1, 1, 1, 1), "avg", False, True, 2, 3, "y")
    board = EmulatedBoard(b.program((C, H, W), "y", ps))
    x = random_input(rng, 20, (C, H, W))
    y = board.run(x).reshape((-1,) + ps)
    c = conv_reference(x, w, bias, mult, shift, 1, 1, 1, "relu")
    np.testing.assert_array_equal(y, pool_reference(c, 3, 2, 1, "avg", False, True))
    # batching does not change anything
    np.testing.assert_array_equal(np.concatenate([board.run(x[i:i + 3]) for i in range(0, 20, 3)]),
                                  y.reshape(20, -1))


# ---------------------------------------------------------------------------
# streaming at packet level

def _input_packets(inp: Producer, x: np.ndarray, slot: int) -> Dict[Tuple[int, int], List[Tuple[int, int]]]:
    """(c, h) -> the packets of that row of one sample."""
    s, cs, hs = inp.shifts
    C, H, W = x.shape
    rows = {}
    for c in range(C):
        for h in range(H):
            r = x[c, h].astype(np.int64) & 0xFFFF
            if W % 2:
                r = np.append(r, 0)
            rows[(c, h)] = [(inp.key | slot << s | c << cs | h << hs | i, int(r[2 * i] | r[2 * i + 1] << 16))
                            for i in range(len(r) // 2)]
    return rows


def _decode(packets: np.ndarray, prod: Producer, shape, slot: int) -> np.ndarray:
    """Output packets of one tile and slot -> its block (nc, nh, nw) (-1 where missing)."""
    c0, nc, h0, nh, w0, nw = prod.block
    s, cs, hs = prod.shifts
    out = np.full((nc, nh, nw + 1), -99999, np.int64)
    for key, payload in packets:
        local = int(key) & ~prod.mask
        assert local >> s == slot
        c = (local >> cs) & ((1 << (s - cs)) - 1)
        h = (local >> hs) & ((1 << (cs - hs)) - 1)
        i = local & ((1 << hs) - 1)
        out[c, h, 2 * i] = ((int(payload) & 0xFFFF) ^ 0x8000) - 0x8000
        out[c, h, 2 * i + 1] = ((int(payload) >> 16) ^ 0x8000) - 0x8000
    return out[:, :, :nw]


def _window_needs(o0: int, n_o: int, stride: int, pad_before: int, k: int, in_size: int) -> List[range]:
    """The input rows each output row o0 .. o0 + n_o - 1 of a window op reads."""
    return [range(max(0, o * stride - pad_before), min(in_size, o * stride - pad_before + k))
            for o in range(o0, o0 + n_o)]


def _prefix(n: int, ok) -> int:
    """How many of 0, 1, ..., n - 1 satisfy ok before the first that does not."""
    i = 0
    while i < n and ok(i):
        i += 1
    return i


def _stream_two_samples(board, label: str, inp: Producer, x2, orders, per_row: int, rows_ready):
    """The input rows of two samples x2 into the tile `label`, in slots 0 and 1 interleaved:
    at each step row orders[s][step] (every channel) of slot s. After each row the tile must
    have sent rows_ready(the slot's rows in) output rows of per_row packets. Returns the
    packets sent per slot and how often rows had left before the sample's last input row."""
    C, H = x2[0].shape[:2]
    packets = {s: _input_packets(inp, x2[s], s) for s in (0, 1)}
    done = {s: set() for s in (0, 1)}
    sent = {s: [] for s in (0, 1)}
    early = 0
    for step in range(H):
        for s in (0, 1):
            h = orders[s][step]
            for c in range(C):
                for key, payload in packets[s][(c, h)]:
                    sent[s] += list(board.core_packet(label, key, payload))
            done[s].add(h)
            ready = rows_ready(done[s])
            assert len(sent[s]) == ready * per_row, (label, step, s, ready)
            early += step < H - 1 and ready > 0
    return sent, early


@pytest.mark.parametrize("stride,pads,kernel", [((1, 1), (1, 1, 1, 1), (3, 3)), ((2, 1), (2, 0, 1, 1), (5, 3)),
                                                ((3, 1), (0, 0, 0, 0), (1, 2))])
def test_conv_rows_stream_out_before_the_input_is_complete(stride, pads, kernel):
    rng = np.random.default_rng(sum(stride) + sum(pads))
    C, OC, H, W = 2, 3, 11, 7
    kh, kw = kernel
    w, bias, mult, shift = random_conv(rng, C, OC, C, kh, kw)
    b = ProgramBuilder(rng)
    inp = b.producer("input", "x", (0, C, 0, H, 0, W))
    shape = add_conv_tiles(b, "conv", "x", (C, H, W), w, bias, mult, shift, stride, pads, 1, "none", 1, 1, "y")
    board = EmulatedBoard(b.program((C, H, W), "y", shape))
    tile = b.producers["conv_0_0"]
    OC, OH, OW = shape
    per_row = OC * ((OW + 1) // 2)
    x = random_input(rng, 4, (C, H, W))
    ref = conv_reference(x, w, bias, mult, shift, stride, pads, 1, "none")
    needs = _window_needs(0, OH, stride[0], pads[0], kh, H)
    early = 0
    # samples 0 and 1 interleaved in slots 0 and 1, then samples 2 and 3 reuse the slots
    for first in (0, 2):
        orders = {s: list(rng.permutation(H)) for s in (0, 1)}
        sent, e = _stream_two_samples(board, "conv_0_0", inp, x[first:first + 2], orders, per_row,
                                      lambda done: _prefix(OH, lambda r: set(needs[r]) <= done))
        early += e
        for s in (0, 1):
            np.testing.assert_array_equal(_decode(np.array(sent[s]), tile, shape, s), ref[first + s])
    assert early > 0  # rows left before the last input row arrived
    counters = board.core_counters()["conv_0_0"]
    assert counters["computes"] == 4 and counters["dropped"] == 0


def test_shuffled_packets_and_unneeded_rows_keep_slots_consistent():
    """Every packet of several samples in random order (stride 3, kernel 1: two rows in
    three are never read, and may arrive after the last output row)."""
    rng = np.random.default_rng(4)
    C, OC, H, W = 2, 2, 9, 5
    w, bias, mult, shift = random_conv(rng, C, OC, C, 1, 1)
    b = ProgramBuilder(rng)
    inp = b.producer("input", "x", (0, C, 0, H, 0, W))
    shape = add_conv_tiles(b, "conv", "x", (C, H, W), w, bias, mult, shift, (3, 1), (0, 0, 0, 0), 1, "none", 1, 1,
                           "y")
    board = EmulatedBoard(b.program((C, H, W), "y", shape))
    x = random_input(rng, 12, (C, H, W))
    ref = conv_reference(x, w, bias, mult, shift, (3, 1), 0, 1, "none")
    _shuffled_rounds(rng, board, b, "conv_0_0", x, ref, shape)


def _shuffled_rounds(rng, board, b: ProgramBuilder, label: str, x, ref, shape, rounds: int = 3) -> None:
    """Rounds of four samples in the four slots: every input packet of a round in random
    order into the tile `label`, whose output per slot must be the reference's."""
    inp, tile = b.producers["input"], b.producers[label]
    for rnd in range(rounds):
        batch = range(4 * rnd, 4 * rnd + 4)
        packets = [(s, p) for s, i in enumerate(batch) for row in _input_packets(inp, x[i], s).values() for p in row]
        sent = {s: [] for s in range(4)}
        for j in rng.permutation(len(packets)):
            s, (key, payload) = packets[j]
            for k, v in board.core_packet(label, key, payload):
                sent[(int(k) & ~tile.mask) >> tile.shifts[0]].append((k, v))
        for s, i in enumerate(batch):
            np.testing.assert_array_equal(_decode(np.array(sent[s]), tile, shape, s), ref[i])


def _reduce_setup(rng, G=3, slack=True):
    """One output block of a split conv (C=5 -> OC=3, 8 x 5, 3x3, pad 1) and its reducer,
    whose partial inputs the tests hand over packet by packet."""
    C, OC, H, W = 5, 3, 8, 5
    w, bias, mult, shift = small_split_conv(rng, C, OC, 3, 3)
    ic_bounds, p = cuts(C, G, rng), 2
    b = ProgramBuilder(rng, slack=slack)
    b.producer("input", "x", (0, C, 0, H, 0, W))
    shape = add_split_conv_tiles(b, "split", "x", (C, H, W), w, bias, mult, shift, (1, 1), (1, 1, 1, 1), "tanh",
                                 ic_bounds, p, 1, 1, "y")
    board = EmulatedBoard(b.program((C, H, W), "y", shape))
    x = random_input(rng, 8, (C, H, W))
    ref = conv_reference(x, w, bias, mult, shift, 1, 1, 1, "tanh", ic_bounds=ic_bounds, partial_shift=p)
    partials = [round_shift(conv_accumulators(x[:, g0:g1], w[:, g0:g1], 1, 1), p)
                for g0, g1 in zip(ic_bounds[:-1], ic_bounds[1:])]
    groups = [b.producers[f"split_0_0_g{g}"] for g in range(G)]
    return board, b.producers["split_0_0"], groups, partials, ref, shape


def _partial_packets(prod: Producer, part: np.ndarray, slot: int) -> Dict[int, List[Tuple[int, int]]]:
    """h -> the packets of row h of one group's partial sums (n_oc, n_oh, out_w) of one sample."""
    s, cs, hs = prod.shifts
    nc, nh, nw = part.shape
    return {h: [(prod.key | slot << s | c << cs | h << hs | w, int(part[c, h, w]) & 0xFFFFFFFF)
                for c in range(nc) for w in range(nw)] for h in range(nh)}


def test_conv_reduce_streams_rows_and_reuses_slots():
    """Each output row leaves once every group's partial sums of that row are in, whatever
    the row order; samples interleave in two slots, then the next two reuse them."""
    rng = np.random.default_rng(21)
    board, out, groups, partials, ref, (OC, OH, OW) = _reduce_setup(rng)
    per_row = OC * ((OW + 1) // 2)
    for first in (0, 2, 4):
        sent = {s: [] for s in (0, 1)}
        orders = {s: list(rng.permutation(OH)) for s in (0, 1)}
        done = {s: set() for s in (0, 1)}
        for step in range(OH):
            for s in (0, 1):
                h = orders[s][step]
                row = [pk for g, prod in enumerate(groups)
                       for pk in _partial_packets(prod, partials[g][first + s], s)[h]]
                for j in rng.permutation(len(row)):
                    sent[s] += list(board.core_packet("split_0_0", *row[j]))
                done[s].add(h)
                ready = 0
                while ready < OH and ready in done[s]:
                    ready += 1
                assert len(sent[s]) == ready * per_row, (first, step, s)
        for s in (0, 1):
            np.testing.assert_array_equal(_decode(np.array(sent[s]), out, None, s), ref[first + s])
    counters = board.core_counters()["split_0_0"]
    assert counters["computes"] == 6 and counters["dropped"] == 0 and counters["outputs"] == 6 * ref[0].size


def test_conv_reduce_shuffled_packets_and_strays():
    """All packets of four samples in four slots in random order, rounds reusing the slots;
    values outside the block are dropped and counted, and change nothing."""
    rng = np.random.default_rng(22)
    board, out, groups, partials, ref, (OC, OH, OW) = _reduce_setup(rng, G=2, slack=False)
    s_shift, c_shift, h_shift = groups[0].shifts
    assert OC < 1 << (s_shift - c_shift) and OW < 1 << h_shift  # room for the strays below
    strays = 0
    for rnd in range(2):
        batch = range(4 * rnd, 4 * rnd + 4)
        packets = [pk for s, i in enumerate(batch) for g, prod in enumerate(groups)
                   for row in _partial_packets(prod, partials[g][i], s).values() for pk in row]
        base = groups[1].key | rnd << s_shift
        packets += [(base | OC << c_shift, 12345), (base | OW, 0xFFFFFFFF)]  # channel, column outside
        strays += 2
        sent = {s: [] for s in range(4)}
        for j in rng.permutation(len(packets)):
            for k, v in board.core_packet("split_0_0", *packets[j]):
                sent[(int(k) & ~out.mask) >> out.shifts[0]].append((k, v))
        for s, i in enumerate(batch):
            np.testing.assert_array_equal(_decode(np.array(sent[s]), out, None, s), ref[i])
    assert board.core_counters()["split_0_0"]["dropped"] == strays


class _DrivenKernel:
    """A tensor kernel (spinn_<prefix>_*) of the emulator library driven directly, whose
    send fails once, at the fail_at-th attempt (the emulator's sends never fail)."""

    def __init__(self, prefix: str, cfg: np.ndarray, fail_at: int) -> None:
        import ctypes

        from tvm_spinn._native import emulator_library

        lib = emulator_library()
        u32p = ctypes.POINTER(ctypes.c_uint32)
        send_fn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32)
        self.fn = {name: getattr(lib, f"spinn_{prefix}_{name}") for name in ("workspace", "init", "receive",
                                                                             "compute")}
        self.fn["workspace"].restype = ctypes.c_uint32
        self.fn["workspace"].argtypes = [u32p, ctypes.c_uint32]
        self.fn["init"].argtypes = [ctypes.c_void_p, u32p, ctypes.c_uint32, ctypes.c_void_p]
        self.fn["receive"].restype = ctypes.c_int32
        self.fn["receive"].argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32]
        self.fn["compute"].argtypes = [ctypes.c_void_p, ctypes.c_uint32, send_fn, ctypes.c_void_p]
        self.cfg = np.ascontiguousarray(cfg, np.uint32)
        words = self.cfg.ctypes.data_as(u32p)
        self.state = ctypes.create_string_buffer(4096)  # the kernel structs are a few hundred bytes
        self.workspace = (ctypes.c_uint64 * (self.fn["workspace"](words, len(self.cfg)) // 8))()
        assert self.fn["init"](self.state, words, len(self.cfg), self.workspace) == 0
        self.sent: List[Tuple[int, int]] = []
        self.attempts = 0

        @send_fn
        def send(ctx, key, payload):
            self.attempts += 1
            if self.attempts - 1 == fail_at:
                return -1
            self.sent.append((key, payload))
            return 0

        self.send = send

    def packet(self, key: int, payload: int) -> bool:
        """Receive a packet and compute the slot it returns, if any; whether a compute failed."""
        slot = self.fn["receive"](self.state, key, payload)
        return slot >= 0 and self.fn["compute"](self.state, slot, self.send, None) != 0


def test_conv_reduce_recovers_its_slot_after_a_failed_send():
    """A send fails mid-sample: the rest of that sample still arrives, and the next samples
    in the same slot come out exact (their sums start from 0). Drives the kernel itself
    (the emulator's sends never fail)."""
    rng = np.random.default_rng(23)
    C, OC, H, W = 5, 3, 8, 5
    w, bias, mult, shift = small_split_conv(rng, C, OC, 3, 3)
    ic_bounds, p = [0, 2, 5], 2
    b = ProgramBuilder(rng, slack=False)
    b.producer("input", "x", (0, C, 0, H, 0, W))
    add_split_conv_tiles(b, "split", "x", (C, H, W), w, bias, mult, shift, (1, 1), (1, 1, 1, 1), "relu", ic_bounds,
                         p, 1, 1, "y")
    cfg = np.ascontiguousarray(next(c.config for c in b.cores if c.label == "split_0_0"), np.uint32)
    out, groups = b.producers["split_0_0"], [b.producers[f"split_0_0_g{g}"] for g in range(2)]
    x = random_input(rng, 3, (C, H, W))
    ref = conv_reference(x, w, bias, mult, shift, 1, 1, 1, "relu", ic_bounds=ic_bounds, partial_shift=p)
    parts = [round_shift(conv_accumulators(x[:, g0:g1], w[:, g0:g1], 1, 1), p)
             for g0, g1 in zip(ic_bounds[:-1], ic_bounds[1:])]

    kernel = _DrivenKernel("conv_reduce", cfg, fail_at=4)  # the fifth packet of the first sample
    for i in range(3):
        failed = False
        for h in range(ref.shape[2]):
            for g, prod in enumerate(groups):
                for key, payload in _partial_packets(prod, parts[g][i], 1)[h]:
                    failed |= kernel.packet(key, payload)
        assert failed == (i == 0)
        if i:
            np.testing.assert_array_equal(_decode(np.array(kernel.sent), out, None, 1), ref[i])
        kernel.sent.clear()


# ---------------------------------------------------------------------------
# conv tiles with a fused pool (mode 2): the conv rows stay in the tile, the pool's rows leave

FUSED_CASES = [
    # C, OC, H, W, conv kernel, conv stride, conv pads, groups, act,
    #     pool kernel, pool stride, pool pads, mode, count_include_pad, ceil_mode, oc_parts, ph_parts
    (3, 4, 8, 10, (3, 3), (1, 1), (1, 1, 1, 1), 1, "relu", (2, 2), (2, 2), (0, 0, 0, 0), "max", True, False, 2, 2),
    (2, 5, 9, 9, (3, 3), (1, 1), (1, 1, 1, 1), 1, "none", (3, 3), (2, 2), (1, 1, 1, 1), "avg", True, False, 3, 3),
    (3, 3, 10, 9, (3, 3), (1, 1), (1, 1, 1, 1), 1, "tanh", (3, 3), (2, 2), (1, 1, 1, 1), "avg", False, True, 2, 3),
    (2, 4, 7, 7, (3, 3), (1, 1), (1, 1, 1, 1), 1, "sigmoid", (2, 2), (2, 2), (0, 0, 0, 0), "max", True, True, 2, 2),
    (2, 4, 7, 7, (3, 3), (1, 1), (1, 1, 1, 1), 1, "relu", (2, 2), (2, 2), (0, 0, 0, 0), "avg", True, True, 1, 3),
    (2, 3, 7, 9, (3, 3), (1, 1), (1, 1, 1, 1), 1, "tanh", (3, 3), (2, 2), (1, 1, 1, 1), "avg", True, True, 2, 2),
    (4, 4, 8, 8, (3, 3), (1, 1), (1, 1, 1, 1), 4, "relu", (3, 3), (2, 2), (1, 1, 1, 1), "max", True, False, 2, 2),
    (3, 4, 1, 23, (1, 5), (1, 1), (0, 2, 0, 2), 1, "relu", (1, 3), (1, 2), (0, 1, 0, 1), "avg", False, True, 2, 1),
    (2, 3, 1, 17, (1, 3), (1, 1), (0, 1, 0, 1), 1, "sigmoid", (1, 3), (1, 2), (0, 0, 0, 0), "max", True, False, 3, 1),
    (2, 3, 13, 11, (3, 3), (2, 2), (1, 1, 1, 1), 1, "none", (3, 3), (2, 2), (1, 1, 1, 1), "avg", True, True, 2, 4),
    (3, 2, 12, 9, (3, 3), (1, 1), (1, 1, 1, 1), 1, "relu", (2, 2), (3, 3), (0, 0, 0, 0), "max", True, False, 1, 3),
    (2, 3, 13, 13, (3, 3), (1, 1), (1, 1, 1, 1), 1, "sigmoid", (3, 3), (2, 2), (1, 1, 1, 1), "max", True, False, 2, 7),
    (3, 6, 8, 8, (3, 3), (1, 1), (1, 1, 1, 1), 3, "relu", (2, 2), (2, 2), (0, 0, 0, 0), "max", True, False, 3, 2),
    (2, 6, 9, 7, (3, 3), (1, 1), (1, 1, 1, 1), 2, "none", (3, 3), (2, 2), (1, 1, 1, 1), "avg", True, True, 4, 2),
]


def _fused_pool_arg(case: int, asym: bool) -> tuple:
    *_, pk, ps, pads, mode, cip, ceil, _, _ = FUSED_CASES[case]
    if asym:  # the kernels take any padding (torch only symmetric)
        pads = (pads[0], pads[1], max(pads[2] - 1, 0), pads[3] + 1)
    return pk, ps, pads, mode, cip, ceil


def _fused_reference(case: int, x, w, bias, mult, shift, pool: tuple, shape) -> np.ndarray:
    C, OC, H, W, k, stride, pads, groups, act, *_ = FUSED_CASES[case]
    pk, ps, ppads, mode, cip, ceil = pool
    c = conv_reference(x, w, bias, mult, shift, stride, pads, groups, act)
    return pool_reference(c, pk, ps, ppads, mode, cip, ceil, out_size=shape[1:])


@pytest.mark.parametrize("case", range(len(FUSED_CASES)))
def test_fused_pool_conv_tiles_match_the_reference_bit_for_bit(case):
    C, OC, H, W, k, stride, pads, groups, act, *_, ocp, php = FUSED_CASES[case]
    rng = np.random.default_rng(600 + case)
    w, bias, mult, shift = random_conv(rng, C, OC, C // groups, *k, act)
    for asym in (False, True):
        pool = _fused_pool_arg(case, asym)
        b = ProgramBuilder(rng, slack=(case + asym) % 2 == 0)
        b.producer("input", "x", (0, C, 0, H, 0, W))
        shape = add_conv_tiles(b, "fused", "x", (C, H, W), w, bias, mult, shift, stride, pads, groups, act, ocp,
                               php, "y", pool=pool)
        assert all(c.config[25] == 2 for c in b.cores)
        board = EmulatedBoard(b.program((C, H, W), "y", shape))
        x = random_input(rng, 7, (C, H, W))
        y = board.run(x).reshape((-1,) + shape)
        ref = _fused_reference(case, x, w, bias, mult, shift, pool, shape)
        np.testing.assert_array_equal(y, ref)
        assert 0 < np.mean((ref != 32767) & (ref != -32768) & (ref != 0))  # not all saturated or zero
        # counters: the conv MACs and values of each tile's conv rows, plus the pool values
        counters = board.core_counters()
        ones = np.ones((1, C, H, W), np.int16)
        valid = conv_accumulators(ones, np.ones((OC, C // groups) + k, np.int16), stride, pads, groups)[0]
        OW = valid.shape[2]
        tiles = [(int(c.config[7]), int(c.config[8]), int(c.config[9]), int(c.config[10]))
                 for c in b.cores]  # oc0, n_oc, oh0, n_oh
        assert sum(c["macs"] for c in counters.values()) == \
            sum(int(valid[o0:o0 + no, h0:h0 + nh].sum()) for o0, no, h0, nh in tiles) * len(x)
        assert sum(c["outputs"] for c in counters.values()) == \
            (sum(no * nh * OW for _, no, _, nh in tiles) + int(np.prod(shape))) * len(x)
        assert all(c["computes"] == len(x) and c["dropped"] == 0 for c in counters.values())


def test_fused_pool_reference_against_torch():
    """What the fused tests compare with: the conv reference, then torch's pool (symmetric pads)."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(13)
    for case, (C, OC, H, W, k, stride, pads, groups, act, *_) in enumerate(FUSED_CASES):
        w, bias, mult, shift = random_conv(rng, C, OC, C // groups, *k, act)
        pk, ps, ppads, mode, cip, ceil = pool = _fused_pool_arg(case, False)
        x = random_input(rng, 3, (C, H, W))
        c = conv_reference(x, w, bias, mult, shift, stride, pads, groups, act)
        ct = torch.tensor(c, dtype=torch.float64)
        if mode == "max":
            want = F.max_pool2d(ct, pk, ps, ppads[:2], ceil_mode=ceil).numpy()
        else:
            want = np.floor(F.avg_pool2d(ct, pk, ps, ppads[:2], ceil_mode=ceil,
                                         count_include_pad=cip).numpy() + 0.5)
        got = _fused_reference(case, x, w, bias, mult, shift, pool, (OC,) + want.shape[2:])
        assert np.max(np.abs(got - want)) <= (0 if mode == "max" else 1), case


def _fused_tile(rng, case: int, row_bounds=None, slack=True, extra_rows=0):
    """One channel group of a FUSED_CASES layer as tiles of the given pool-row bands; the
    board, its builder, the weights and the shape sent."""
    C, OC, H, W, k, stride, pads, groups, act, *_ = FUSED_CASES[case]
    w, bias, mult, shift = random_conv(rng, C, OC, C // groups, *k, act)
    pool = _fused_pool_arg(case, False)
    b = ProgramBuilder(rng, slack=slack)
    inp = b.producer("input", "x", (0, C, 0, H, 0, W))
    shape = add_conv_tiles(b, "fused", "x", (C, H, W), w, bias, mult, shift, stride, pads, groups, act, 1, 1, "y",
                           pool=pool, row_bounds=row_bounds, extra_rows=extra_rows)
    board = EmulatedBoard(b.program((C, H, W), "y", shape))
    return board, b, inp, (w, bias, mult, shift), pool, shape


@pytest.mark.parametrize("case,row_bounds,extra", [(1, None, 0), (2, (0, 2, 5), 0), (2, (0, 2, 5), 2),
                                                   (9, (0, 1, 3, 4), 0), (10, (0, 2, 4), 1), (7, None, 0)])
def test_fused_pool_rows_stream_out_as_their_conv_rows_complete(case, row_bounds, extra):
    """Input rows in random order (slot 0) or nearly in order (slot 1), two samples
    interleaved in two slots, then two more reusing them: after each input row the tile
    has sent exactly the pool rows whose conv rows are all computable (the last one only
    with the tile's last conv row, also when the tile computes conv rows beyond the pool's:
    extra)."""
    C, OC, H, W, k, stride, pads, *_ = FUSED_CASES[case]
    rng = np.random.default_rng(700 + case)
    board, b, inp, params, pool, shape = _fused_tile(rng, case, row_bounds, extra_rows=extra)
    pk, ps, ppads = pool[:3]
    OH = out_hw((C, H, W), k, stride, pads)[0]
    x = random_input(rng, 4, (C, H, W))
    ref = _fused_reference(case, x, *params, pool, shape)
    early = 0
    for label, core in zip([c.label for c in b.cores], b.cores):
        tile = b.producers[label]
        oc0, n_oc, ph0, n_ph = tile.block[:4]
        oh0, n_oh = int(core.config[9]), int(core.config[10])
        per_row = n_oc * ((shape[2] + 1) // 2)
        conv_needs = _window_needs(oh0, n_oh, stride[0], pads[0], k[0], H)
        # the pool rows' last conv rows (+ 1, local)
        pool_last = [r[-1] + 1 - oh0 if len(r) else 0 for r in _window_needs(ph0, n_ph, ps[0], ppads[0], pk[0], OH)]

        def pool_ready(done):
            conv_ready = _prefix(n_oh, lambda r: set(conv_needs[r]) <= done)
            return _prefix(n_ph, lambda r: pool_last[r] <= conv_ready and (r + 1 < n_ph or conv_ready == n_oh))

        for first in (0, 2):
            swap = int(rng.integers(0, H - 1)) if H > 1 else 0
            orders = {0: list(rng.permutation(H)), 1: list(range(H))}
            orders[1][swap:swap + 2] = orders[1][swap:swap + 2][::-1]
            sent, e = _stream_two_samples(board, label, inp, x[first:first + 2], orders, per_row, pool_ready)
            early += e
            for s in (0, 1):
                got = _decode(np.array(sent[s]), tile, shape, s)
                np.testing.assert_array_equal(got, ref[first + s, oc0:oc0 + n_oc, ph0:ph0 + n_ph])
        assert board.core_counters()[label]["computes"] == 4
    assert early > 0 or H == 1  # pool rows left before the last input row arrived


@pytest.mark.parametrize("case", [1, 10])
def test_fused_pool_shuffled_packets_keep_slots_consistent(case):
    """Every packet of four samples in four slots in random order, rounds reusing the slots
    (case 10: pool stride > kernel, conv rows the pool never reads are not computed)."""
    C, OC, H, W, *_ = FUSED_CASES[case]
    rng = np.random.default_rng(800 + case)
    board, b, inp, params, pool, shape = _fused_tile(rng, case, slack=False)
    x = random_input(rng, 12, (C, H, W))
    _shuffled_rounds(rng, board, b, "fused_0_0", x, _fused_reference(case, x, *params, pool, shape), shape)
    assert board.core_counters()["fused_0_0"]["computes"] == 12


@pytest.mark.parametrize("fail_at", [0, 3, 5, -1])
def test_fused_pool_recovers_its_slot_after_a_failed_send(fail_at):
    """A send of the first sample fails (-1: its last packet): the rest of that sample still
    arrives, and the next samples in the same slot come out exact (the slot's next pool row
    starts from 0 again). Drives the kernel itself (the emulator's sends never fail)."""
    case = 1
    C, OC, H, W, *_ = FUSED_CASES[case]
    rng = np.random.default_rng(29)
    _, b, inp, params, pool, shape = _fused_tile(rng, case, slack=False)
    tile = b.producers["fused_0_0"]
    cfg = b.cores[0].config
    x = random_input(rng, 3, (C, H, W))
    ref = _fused_reference(case, x, *params, pool, shape)
    n_packets = OC * shape[1] * ((shape[2] + 1) // 2)

    kernel = _DrivenKernel("conv_tile", cfg, fail_at=fail_at % n_packets)
    for i in range(3):
        failed = False
        for row in _input_packets(inp, x[i], 0).values():
            for key, payload in row:
                failed |= kernel.packet(key, payload)
        assert failed == (i == 0)
        if i == 0:
            assert len(kernel.sent) == fail_at % n_packets  # the sample was abandoned at the failed send
        else:
            np.testing.assert_array_equal(_decode(np.array(kernel.sent), tile, shape, 0), ref[i])
        kernel.sent.clear()


# ---------------------------------------------------------------------------
# rejection and undefined behaviour

def _one_conv_program(rng, **over):
    C, OC, H, W = 2, 2, 6, 6
    w, bias, mult, shift = random_conv(rng, C, OC, C, 3, 3)
    b = ProgramBuilder(rng, slack=False)
    b.producer("input", "x", (0, C, 0, H, 0, W))
    shape = add_conv_tiles(b, "conv", "x", (C, H, W), w, bias, mult, shift, (1, 1), (1, 1, 1, 1), 1, "none", 1, 2,
                           "y")
    return b.program((C, H, W), "y", shape)


@pytest.mark.parametrize("word,value", [
    (1, 0),            # n_ic = 0
    (5, 3),            # ih0 moved: rows the outputs read are not buffered
    (12, 0x10000),     # kh beyond SPINN_MAX_DIM
    (18, 1),           # depthwise with n_ic == n_oc is fine, so also break n_oc below
    (20, 17),          # n_slots > SPINN_MAX_SLOTS
    (22, 2),           # out_slot_shift below the fields it must clear
    (24, 40),          # out_h_shift >= 32
    (25, 2),           # partial neither 0 nor 1
    (26, 63),          # partial_shift > 62
    (27, 50),          # n_rx beyond the region
    (28, 0x10000),     # int32 accumulation block beyond SPINN_MAX_DIM
    (29 + 2, 32),      # rx slot_shift >= 32
    (29 + 3, 0),       # rx c_shift > h_shift ordering broken? (c_shift < h_shift)
    (29 + 12, 1),      # rx dst_nc not the buffer's
])
def test_corrupt_tensor_configs_are_rejected(word, value):
    rng = np.random.default_rng(1)
    program = _one_conv_program(rng)
    core = replace(program.cores[0])
    cfg = core.config.copy()
    cfg[word] = value
    if word == 18:
        cfg[8] = 1  # depthwise with n_oc != n_ic
    core.config = cfg
    program.cores = [core] + program.cores[1:]
    with pytest.raises(EmulatorError, match="rejected its config"):
        EmulatedBoard(program)


def test_truncated_configs_of_every_kind_are_rejected():
    rng = np.random.default_rng(2)
    b = ProgramBuilder(rng)
    b.producer("input", "x", (0, 2, 0, 6, 0, 6))
    add_pool_tiles(b, "pool", "x", (2, 6, 6), (2, 2), (2, 2), (0, 0, 0, 0), "avg", True, False, 1, 1, "p")
    add_add_tiles(b, "add", "x", "p", (2, 3, 3), 1, 1, 1, "none", 1, 1, "y")
    w, bias, mult, shift = random_conv(rng, 2, 2, 2, 3, 3)
    add_split_conv_tiles(b, "split", "x", (2, 6, 6), w, bias, mult, shift, (1, 1), (1, 1, 1, 1), "tanh", [0, 1, 2], 3,
                         1, 1, "s")  # two partial conv tiles and a conv reduce tile
    for mode in ("avg", "max"):  # conv tiles with a fused pool: cut in the recip table, in the pool section
        add_conv_tiles(b, f"fused_{mode}", "x", (2, 6, 6), w, bias, mult, shift, (1, 1), (1, 1, 1, 1), 1, "sigmoid", 1,
                       1, f"f_{mode}", pool=((3, 3), (2, 2), (1, 1, 1, 1), mode, False, True))
    assert sum(c.config[25] == 2 for c in b.cores if c.kind == CORE_CONV) == 2
    for core in b.cores:
        for cut in (0, 5, len(core.config) - 1):
            bad = replace(core, config=core.config[:cut])
            with pytest.raises(EmulatorError, match="rejected its config"):
                EmulatedBoard(BoardProgram(chips=[(0, 0)], links={}, routing_tables={}, cores=[bad],
                                           n_slots=N_SLOTS, in_features=1, out_features=1,
                                           inputs=[InputEnd((0, 0), 0, 1)],
                                           output=OutputEnd((0, 0, 17), np.zeros(5, np.uint32))))


def test_encoders_refuse_inconsistent_tiles():
    rng = np.random.default_rng(3)
    w, bias, mult, shift = random_conv(rng, 2, 2, 2, 3, 3)
    base = dict(n_ic=2, in_h=8, in_w=8, ic0=0, ih0=0, n_ih=8, oc0=0, oh0=0, n_oh=8, out_w=8, sh=1, sw=1,
                pad_top=1, pad_left=1, depthwise=False, activation="relu", n_slots=4, out_slot_shift=10,
                out_c_shift=5, out_h_shift=2, rx=[], weights=w, bias=bias, multiplier=mult, shift=shift)
    cfg, fix = conv_config(**base)
    assert cfg.dtype == np.uint32 and (21, "key", "self") in fix
    for over in [{"n_ih": 4}, {"out_c_shift": 3}, {"out_h_shift": 1}, {"depthwise": True},
                 {"multiplier": mult << 32},  # not int32
                 {"bias": np.full(2, 1 << 40), "multiplier": np.full(2, 1 << 30)},  # |acc * M| >= 2**62
                 {"rx": [trx_entry(0, 0, 5, 5, 2, 0, 0, 0, 8, 0, 1, 0, 2, 7, 8, 0)]}]:  # dst is not the buffer
        with pytest.raises(ValueError):
            conv_config(**dict(base, **over))
    with pytest.raises(ValueError):
        trx_entry(1, 0, 5, 6, 0, 0, 0, 0, 4, 0, 0, 0, 1, 1, 4, 0)  # c_shift > slot_shift, key outside mask


def test_depthwise_multiplier_tiles_are_checked():
    """Depthwise x k tiles (word 18 = k): the encoder and the kernel take only the input
    channels [oc0 // k, (oc0 + n_oc - 1) // k] of the tile's outputs."""
    rng = np.random.default_rng(8)
    w = rng.integers(-300, 300, size=(2, 1, 3, 3)).astype(np.int16)
    tile = dict(n_ic=2, in_h=8, in_w=8, ic0=1, ih0=0, n_ih=8, oc0=3, oh0=0, n_oh=8, out_w=8, sh=1, sw=1,
                pad_top=1, pad_left=1, depthwise=2, activation="relu", n_slots=4, out_slot_shift=10,
                out_c_shift=5, out_h_shift=2, rx=[], weights=w, bias=np.zeros(2), multiplier=np.ones(2),
                shift=np.zeros(2))
    assert conv_config(**tile)[0][18] == 2  # outputs 3, 4 read inputs 1, 2
    assert conv_config(**dict(tile, oc0=2, ic0=0, depthwise=3))[0][18] == 3  # outputs 2, 3 read inputs 0, 1
    assert conv_config(**dict(tile, ic0=3, oc0=3, depthwise=True))[0][18] == 1
    assert depthwise_inputs(5, 4, 3) == (1, 2) and depthwise_inputs(6, 1, 3) == (2, 1)
    for over in [{"ic0": 0}, {"n_ic": 3}, {"oc0": 2}, {"depthwise": 3}, {"depthwise": -1},
                 {"depthwise": 0x10000}, {"weights": np.zeros((2, 2, 3, 3), np.int16)},  # 1 input per output
                 {"partial_shift": 0}]:  # a partial tile is not depthwise
        with pytest.raises(ValueError):
            conv_config(**dict(tile, **over))
    # the kernel: one tile, outputs [0, 6) of a depthwise x2 conv over 3 channels
    C, OC, H, W = 3, 6, 6, 6
    wq, bias, mult, shift = random_conv(rng, C, OC, 1, 3, 3)
    b = ProgramBuilder(rng, slack=False)
    b.producer("input", "x", (0, C, 0, H, 0, W))
    shape = add_conv_tiles(b, "conv", "x", (C, H, W), wq, bias, mult, shift, (1, 1), (1, 1, 1, 1), C, "none", 1, 1,
                           "y")
    program = b.program((C, H, W), "y", shape)
    x = random_input(rng, 3, (C, H, W))
    ref = conv_reference(x, wq, bias, mult, shift, 1, 1, C, "none")
    np.testing.assert_array_equal(EmulatedBoard(program).run(x).reshape((-1,) + shape), ref)
    core = program.cores[0]
    assert list(core.config[[1, 4, 7, 8, 18]]) == [3, 0, 0, 6, 2]
    for word, value in [(18, 1),         # x1: 6 outputs read 6 channels
                        (18, 3),         # x3: 6 outputs read 2 channels
                        (18, 0x10000),   # beyond SPINN_MAX_DIM
                        (7, 1),          # outputs [1, 7) read 4 channels
                        (7, 2)]:         # oc0 = 2 is not in input channel ic0 = 0's outputs [0, 2)
        cfg = core.config.copy()
        cfg[word] = value
        with pytest.raises(EmulatorError, match="rejected its config"):
            EmulatedBoard(replace(program, cores=[replace(core, config=cfg)] + program.cores[1:]))


def _fused_program(rng):
    """FUSED_CASES[1] (avg 3x3/2 pad 1 over a 9 x 9 conv output) in two pool-row bands:
    tile 0 sends pool rows [0, 2) from conv rows [0, 4), tile 1 rows [2, 5) from [3, 9)."""
    C, OC, H, W, k, stride, pads, groups, act, *_ = FUSED_CASES[1]
    w, bias, mult, shift = random_conv(rng, C, OC, C, *k, act)
    b = ProgramBuilder(rng, slack=False)
    b.producer("input", "x", (0, C, 0, H, 0, W))
    shape = add_conv_tiles(b, "fused", "x", (C, H, W), w, bias, mult, shift, stride, pads, groups, act, 1, 1, "y",
                           pool=_fused_pool_arg(1, False), row_bounds=(0, 2, 5))
    return b.program((C, H, W), "y", shape)


POOL_AT = -15 - 10  # the pool section of an avg 3x3 pool: 15 words, then the recip table (10)


@pytest.mark.parametrize("word,value", [
    (25, 3),               # mode beyond pooled
    (26, 1),               # partial_shift in the pooled mode
    (10, 3),               # conv rows [0, 3): pool row 1 reads conv row 3
    (POOL_AT + 0, 3),      # conv_h below oh0 + n_oh
    (POOL_AT + 1, 1),      # ph0 = 1: pool row 2 reads conv row 4, not computed
    (POOL_AT + 2, 0),      # n_ph = 0
    (POOL_AT + 3, 0),      # pool out_w = 0
    (POOL_AT + 3, 0x10000),  # pool out_w beyond SPINN_MAX_DIM
    (POOL_AT + 4, 0),      # pool kh = 0
    (POOL_AT + 5, 0x10000),  # pool kw beyond SPINN_MAX_DIM
    (POOL_AT + 6, 0),      # pool sh = 0
    (POOL_AT + 10, 0x10000),  # pad_bottom beyond SPINN_MAX_DIM
    (POOL_AT + 12, 2),     # pool mode neither max nor avg
    (POOL_AT + 13, 2),     # count_include_pad neither 0 nor 1
    (POOL_AT + 14, 33),    # recip_shift > 32
    (POOL_AT + 4, 5),      # kh 5: the recip table is too short (and row 1 reads conv row 4)
    (23, 5),               # out_c_shift == out_h_shift: no row bits for the 2 pool rows
    (24, 1),               # out_h_shift 1: 5 pool columns (3 pairs) need 2 bits
])
def test_corrupt_fused_pool_configs_are_rejected(word, value):
    program = _fused_program(np.random.default_rng(14))
    EmulatedBoard(program)  # the uncorrupted program is fine
    cores = [replace(c) for c in program.cores]
    cfg = cores[0].config = cores[0].config.copy()
    assert list(cfg[POOL_AT:POOL_AT + 4]) == [9, 0, 2, 5] and cfg[9] == 0 and cfg[10] == 4 and cfg[24] == 2
    cfg[word] = value
    with pytest.raises(EmulatorError, match="rejected its config"):
        EmulatedBoard(replace(program, cores=cores))


def test_fused_pool_encoder_layout_and_refusals():
    rng = np.random.default_rng(15)
    w, bias, mult, shift = random_conv(rng, 2, 3, 2, 3, 3)
    # conv 9 x 9 (3x3 pad 1), pool 3x3/2 pad 1 ceil: 5 x 5; pool rows [2, 5) read conv rows [3, 9)
    pool = dict(conv_h=9, ph0=2, n_ph=3, out_w=5, kh=3, kw=3, sh=2, sw=2, pad_top=1, pad_left=1, pad_bottom=1,
                pad_right=1, mode="avg", count_include_pad=False)
    tile = dict(n_ic=2, in_h=9, in_w=9, ic0=0, ih0=2, n_ih=7, oc0=0, oh0=3, n_oh=6, out_w=9, sh=1, sw=1,
                pad_top=1, pad_left=1, depthwise=False, activation="tanh", n_slots=4, out_slot_shift=6,
                out_c_shift=4, out_h_shift=2, rx=[], weights=w, bias=bias, multiplier=mult, shift=shift, pool=pool)
    assert window_input_rows(2, 3, 2, 1, 3, 9) == (3, 6)
    cfg, fix = conv_config(**tile)
    final, _ = conv_config(**dict(tile, pool=None, out_slot_shift=8, out_c_shift=6, out_h_shift=3))
    assert cfg[25] == 2 and cfg[26] == 0 and final[25] == 0 and (21, "key", "self") in fix
    n = len(final)  # the final tile's words (header, weights, params, tanh table), then the pool section
    same = np.ones(n, bool)
    same[22:26] = False  # the key shifts and the mode
    np.testing.assert_array_equal(cfg[:n][same], final[same])
    assert [int(v) for v in cfg[n:n + 15]] == [9, 2, 3, 5, 3, 3, 2, 2, 1, 1, 1, 1, 1, 0, AVG_RECIP_SHIFT]
    np.testing.assert_array_equal(cfg[n + 15:], avg_recip(9))
    cfg_max, _ = conv_config(**dict(tile, pool=dict(pool, mode="max", count_include_pad=True, recip_shift=20)))
    assert len(cfg_max) == n + 15 and [int(v) for v in cfg_max[n + 12:]] == [0, 1, 20]
    # the fields are those of the block sent: 3 channels x 3 pool rows (not 6 conv rows) x 4 columns
    conv_config(**dict(tile, out_slot_shift=5, out_c_shift=3, out_h_shift=1, pool=dict(pool, out_w=4)))
    for over, msg in [({"partial_shift": 0}, "fused pool needs a final tile"),
                      ({"n_oh": 5}, "reads input rows"),                       # pool row 4 reads conv row 8
                      ({"oh0": 4, "ih0": 3, "n_ih": 6, "n_oh": 5}, "reads input rows"),  # row 2 reads conv row 3
                      ({"pool": dict(pool, conv_h=8)}, "not inside the input's 8 rows"),
                      ({"out_slot_shift": 5, "out_c_shift": 3, "out_h_shift": 1}, "5 columns"),
                      ({"out_c_shift": 3}, "3 rows"),
                      ({"out_slot_shift": 5}, "3 channels"),
                      ({"pool": dict(pool, mode="min")}, "max or avg"),
                      ({"pool": dict(pool, kh=0)}, "positive"),
                      ({"pool": dict(pool, kh=256, kw=257)}, "65535"),
                      ({"pool": dict(pool, recip_shift=33)}, "recip_shift"),
                      ({"pool": dict(pool, sh=0x10000)}, "outside"),
                      ({"pool": {k: v for k, v in pool.items() if k != "pad_right"}}, "missing \\['pad_right'\\]"),
                      ({"pool": dict(pool, stride=2)}, "unknown \\['stride'\\]")]:
        with pytest.raises(ValueError, match=msg):
            conv_config(**dict(tile, **over))
    with pytest.raises(ValueError, match="conv tile \\(fused pool\\) \\(oc0=0, oh0=3, ic0=0\\)"):
        conv_config(**dict(tile, n_oh=5))


def _split_program(rng):
    """A split conv (C = 4 in two groups of 2 = OC) on one block: cores g0, g1 and the reducer."""
    w, bias, mult, shift = small_split_conv(rng, 4, 2, 3, 3)
    b = ProgramBuilder(rng, slack=False)
    b.producer("input", "x", (0, 4, 0, 6, 0, 6))
    shape = add_split_conv_tiles(b, "split", "x", (4, 6, 6), w, bias, mult, shift, (1, 1), (1, 1, 1, 1), "relu",
                                 [0, 2, 4], 1, 1, 1, "y")
    return b.program((4, 6, 6), "y", shape)


@pytest.mark.parametrize("core,word,value", [
    (0, 18, 1),            # partial and depthwise (n_ic == n_oc: only the partial mode forbids it)
    (0, 19, 1),            # partial with an activation
    (0, 26, 63),           # partial_shift > 62
    (0, 24, 2),            # out_h_shift too narrow for 6 values per row, one per key (3 pairs would fit)
    (2, 0, 0x5D03),        # kind
    (2, 2, 0),             # n_oc = 0
    (2, 5, 0x10000),       # out_w beyond SPINN_MAX_DIM
    (2, 6, 3),             # n_groups != n_rx
    (2, 7, 33),            # partial_shift > 32
    (2, 8, 4),             # activation
    (2, 9, 17),            # n_slots > SPINN_MAX_SLOTS
    (2, 10, 2),            # in_slot_shift below the fields
    (2, 12, 1),            # in_h_shift too narrow for out_w columns
    (2, 13, 1),            # out_key inside its fields
    (2, 16, 40),           # out_h_shift >= 32
    (2, 17, 3),            # n_rx != n_groups
    (2, 18, 0xFFFFFFFF),   # entry key outside its mask
    (2, 19, 0xFFFFFFFF),   # entry mask over the in_* fields
    (2, 18 + 4 + 3, 64),   # channel 0's shift > 63
])
def test_corrupt_split_conv_configs_are_rejected(core, word, value):
    program = _split_program(np.random.default_rng(6))
    EmulatedBoard(program)  # the uncorrupted program is fine
    cores = [replace(c) for c in program.cores]
    assert [c.kind for c in cores] == [CORE_CONV, CORE_CONV, CORE_CONV_REDUCE]
    cores[core].config = cores[core].config.copy()
    cores[core].config[word] = value
    with pytest.raises(EmulatorError, match="rejected its config"):
        EmulatedBoard(replace(program, cores=cores))


@pytest.mark.parametrize("kernel", [(1, 3), (3, 3)])
def test_conv_of_extreme_weights_and_inputs_is_exact(kernel):
    """The host build's vector dot products (spinn_dot.h: PMADDWD, whose int16 pair sum
    overflows int32 when both products are (-32768)^2) give the exact sums: weights and
    inputs of only -32768 and 32767, where no int32 block is proved (block 0). 4 x 1 x 3
    values are 6 words (the SSE2 loop and a tail), 4 x 3 x 3 are 18 (the AVX2 loop where
    the CPU has it)."""
    from tvm_spinn.machine.configs.tensor import conv_accumulation_block
    rng = np.random.default_rng(11)
    C, OC, H, W = 4, 3, 5, 9
    w = rng.choice(np.array([-32768, 32767], np.int16), size=(OC, C) + kernel)
    w[0] = -32768  # every pair of channel 0 overflows PMADDWD on the -32768 inputs
    assert conv_accumulation_block(w.reshape(OC, -1).astype(np.int64)) == 0
    bias = np.zeros(OC, np.int64)
    mult, shift = np.full(OC, 1 << 20, np.int64), np.full(OC, 41, np.int64)  # |acc| < 2^36: |y| < 2^15
    b = ProgramBuilder(rng)
    b.producer("input", "x", (0, C, 0, H, 0, W))
    pads = (kernel[0] // 2, 1, kernel[0] // 2, 1)
    shape = add_conv_tiles(b, "conv", "x", (C, H, W), w, bias, mult, shift, (1, 1), pads, 1, "none", 1, 1, "y")
    board = EmulatedBoard(b.program((C, H, W), "y", shape))
    x = rng.choice(np.array([-32768, 32767], np.int16), size=(4, C, H, W))
    x[0] = -32768
    y = board.run(x).reshape((-1,) + shape)
    ref = conv_reference(x, w, bias, mult, shift, (1, 1), pads, 1, "none")
    np.testing.assert_array_equal(y, ref)
    acc = conv_accumulators(x[:1], w, (1, 1), pads, 1)
    assert acc[0, 0].max() > 2 ** 31  # the overflowing pairs were summed
    assert len(np.unique(ref)) > 3


def test_conv_int32_block_is_proved_and_checked():
    """The encoder's int32 accumulation block (header word 28) keeps every aligned block's
    sum |w| * 32768 within int32; a config claiming a longer block than its weights allow is
    rejected by the kernel (an overflow would be silently wrong)."""
    from tvm_spinn.machine.configs.tensor import BLOCK_ABS_MAX, conv_accumulation_block
    w = np.full((2, 18), 4000, np.int64)  # 8000 per word: 8 words per block
    assert conv_accumulation_block(w) == 8
    assert conv_accumulation_block(np.full((1, 4), 32768)) == 0  # one pair can reach 2**31
    assert conv_accumulation_block(np.full((1, 5), 1)) == 3  # odd length: padded, one block
    rng = np.random.default_rng(1)
    program = _one_conv_program(rng)
    core = replace(program.cores[0])
    cfg = core.config.copy()
    n_words = (2 * 3 * 3 + 1) // 2
    w_at = 29 + int(cfg[27]) * 16
    assert 1 <= cfg[28] <= n_words
    cfg[w_at:w_at + n_words] = 0x7FFF7FFF  # sum |w| of one word already 65534 <= BLOCK_ABS_MAX
    cfg[28] = 1
    core.config = cfg
    EmulatedBoard(replace(program, cores=[core] + program.cores[1:]))
    cfg = cfg.copy()
    cfg[28] = 2  # 131068 > BLOCK_ABS_MAX: unproved
    assert 4 * 32767 > BLOCK_ABS_MAX
    core.config = cfg
    with pytest.raises(EmulatorError, match="rejected its config"):
        EmulatedBoard(replace(program, cores=[core] + program.cores[1:]))


def test_split_encoders_refuse_inconsistent_tiles():
    rng = np.random.default_rng(7)
    w = rng.integers(-300, 300, size=(2, 2, 3, 3)).astype(np.int16)
    tile = dict(n_ic=2, in_h=8, in_w=8, ic0=2, ih0=0, n_ih=8, oc0=0, oh0=0, n_oh=8, out_w=8, sh=1, sw=1,
                pad_top=1, pad_left=1, depthwise=False, activation="none", n_slots=4, out_slot_shift=9,
                out_c_shift=8, out_h_shift=3, rx=[], weights=w)
    cfg, fix = conv_config(**tile, partial_shift=0)
    assert len(cfg) == 29 + 2 * 9  # header, weights: no params, no table
    assert cfg[25] == 1 and cfg[26] == 0 and cfg[27] == 0 and (21, "key", "self") in fix
    assert cfg[28] == 9  # |w| < 300: a channel's 18 weights sum below 65536, one int32 block
    final = dict(tile, bias=np.zeros(2), multiplier=np.ones(2), shift=np.zeros(2))
    assert conv_config(**dict(final, out_h_shift=2))[0][25] == 0  # pairs: 4 keys per row suffice
    for over in [{"depthwise": True, "weights": w[:, :1]},  # depthwise partial
                 {"activation": "relu"}, {"partial_shift": 63}, {"out_h_shift": 2}]:  # 8 columns need 3 bits
        with pytest.raises(ValueError):
            conv_config(**{**tile, "partial_shift": 0, **over})
    with pytest.raises(ValueError, match="bias, multiplier and shift"):
        conv_config(**tile)  # a final tile requantises

    red = dict(oc0=4, n_oc=3, oh0=2, n_oh=5, out_w=7, n_groups=3, partial_shift=4, activation="sigmoid",
               n_slots=4, in_slot_shift=8, in_c_shift=6, in_h_shift=3, out_slot_shift=8, out_c_shift=6,
               out_h_shift=3, n_rx=3, bias=np.array([1, -2, 3]), multiplier=np.array([1 << 20] * 3),
               shift=np.array([30, 31, 32]), out_key=0x5000)
    cfg, fix = conv_reduce_config(**red)
    assert cfg.dtype == np.uint32 and len(cfg) == 18 + 2 * 3 + 4 * 3 + 257
    assert list(cfg[:18]) == [0x5D06, 4, 3, 2, 5, 7, 3, 4, 3, 4, 8, 6, 3, 0x5000, 8, 6, 3, 3]
    assert fix == [(18, "key", 0), (19, "mask", 0), (20, "key", 1), (21, "mask", 1), (22, "key", 2),
                   (23, "mask", 2), (13, "key", "self")]
    assert not cfg[18:24].any() and list(cfg[24:28]) == [1, 0, 1 << 20, 30]
    assert list(cfg[28:32]) == [0xFFFFFFFE, 0xFFFFFFFF, 1 << 20, 31]
    for over in [{"n_rx": 2},                                   # one entry per group
                 {"n_groups": 0, "n_rx": 0},
                 {"in_h_shift": 2},                             # 7 columns, one value per key: 3 bits
                 {"in_c_shift": 5},                             # 5 rows need 3 bits
                 {"out_c_shift": 4},                            # out fields too narrow
                 {"partial_shift": 33},
                 {"n_slots": 17},
                 {"shift": np.array([30, 31, 64])},
                 {"bias": np.array([1, 2])},                    # one per channel
                 {"multiplier": np.array([1 << 31] * 3)},       # not int32
                 {"acc_bound": 1 << 35},                        # the sum of partials may leave int32
                 {"acc_bound": 1 << 33, "multiplier": np.array([1 << 29] * 3)},  # |acc * M| >= 2**62
                 {"n_oc": 64, "bias": np.zeros(64), "multiplier": np.ones(64), "shift": np.zeros(64),
                  "n_oh": 1024, "out_w": 1024, "in_slot_shift": 31, "in_c_shift": 21, "in_h_shift": 11,
                  "out_slot_shift": 31, "out_c_shift": 20, "out_h_shift": 10}]:  # block too large for a core
        with pytest.raises(ValueError):
            conv_reduce_config(**dict(red, **over))
    # the default accumulator bound is the planner's 2**(30 + partial_shift)
    conv_reduce_config(**dict(red, multiplier=np.array([(1 << 27) - 1] * 3)))
    with pytest.raises(ValueError, match="2\\*\\*62"):
        conv_reduce_config(**dict(red, multiplier=np.array([1 << 28] * 3)))


def test_dense_input_layout_still_accepted_by_the_tensor_injection():
    """A (1, 1, N) tensor program fed as a plain vector equals the dense key layout."""
    rng = np.random.default_rng(8)
    b = ProgramBuilder(rng, slack=False)
    b.producer("input", "x", (0, 1, 0, 1, 0, 9))
    add_pool_tiles(b, "pool", "x", (1, 1, 9), (1, 1), (1, 1), (0, 0, 0, 0), "max", True, False, 1, 1, "y")
    program = b.program((1, 1, 9), "y", (1, 1, 9))
    program.input.shape = None  # a plain vector of in_features values
    x = random_input(rng, 5, (9,))
    np.testing.assert_array_equal(EmulatedBoard(program).run(x), x)


def test_no_undefined_behaviour_under_ubsan():
    script = textwrap.dedent("""
        import numpy as np
        import tests.test_tensor_kernels as t
        from tvm_spinn.runtime.emulator import EmulatedBoard
        t.EmulatedBoard = lambda program: EmulatedBoard(program, ubsan=True)
        for case in range(len(t.CONV_CASES)):
            t.test_conv_tiles_match_the_reference_bit_for_bit(case)
        for case in range(len(t.POOL_CASES)):
            t.test_pool_tiles_match_the_reference_bit_for_bit(case)
        for case in range(len(t.ADD_CASES)):
            t.test_residual_add_after_a_conv(case)
        t.test_conv_pool_pipeline_streams_between_kernels()
        t.test_conv_rows_stream_out_before_the_input_is_complete((2, 1), (2, 0, 1, 1), (5, 3))
        t.test_shuffled_packets_and_unneeded_rows_keep_slots_consistent()
        for case in range(len(t.SPLIT_CASES)):
            t.test_split_conv_matches_the_reference_bit_for_bit(case)
        t.test_split_conv_of_large_weights_needs_the_planners_shift()
        t.test_conv_reduce_streams_rows_and_reuses_slots()
        t.test_conv_reduce_shuffled_packets_and_strays()
        for case in range(len(t.FUSED_CASES)):
            t.test_fused_pool_conv_tiles_match_the_reference_bit_for_bit(case)
        t.test_fused_pool_rows_stream_out_as_their_conv_rows_complete(2, (0, 2, 5), 2)
        t.test_fused_pool_rows_stream_out_as_their_conv_rows_complete(10, (0, 2, 4), 1)
        for case in (1, 10):
            t.test_fused_pool_shuffled_packets_keep_slots_consistent(case)
        t.test_truncated_configs_of_every_kind_are_rejected()
        for word, value in [(25, 3), (26, 1), (t.POOL_AT + 1, 1), (t.POOL_AT + 4, 5), (t.POOL_AT + 5, 0x10000)]:
            t.test_corrupt_fused_pool_configs_are_rejected(word, value)
        print("ubsan ok")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900, cwd=str(ROOT))
    assert out.returncode == 0 and "ubsan ok" in out.stdout, out.stderr[-3000:]
    assert "runtime error" not in out.stderr


@pytest.mark.parametrize("width", [6, 5])
def test_a_row_stream_in_producer_order_takes_the_fast_path_but_for_its_first_packet(width):
    """The receive's general path (counted: rx_general, charged its extra cycles by the
    model) is taken, packets coming in one producer's order (a row of each channel, then
    the next row), only by the producer's first packet: the next channel's row, the next
    row, the next sample's first row, the packets completing a row and an odd row's half
    pair (half padding) take its entry's row, and the values are the reference's."""

    rng = np.random.default_rng(31 + width)
    C, OC, H = 3, 2, 6
    w, bias, mult, shift = random_conv(rng, C, OC, C, 3, 3)
    b = ProgramBuilder(rng, slack=False)
    b.producer("input", "x", (0, C, 0, H, 0, width))
    shape = add_conv_tiles(b, "conv", "x", (C, H, width), w, bias, mult, shift, (1, 1), (1, 1, 1, 1), 1, "none",
                           1, 1, "y")
    board = EmulatedBoard(b.program((C, H, width), "y", shape))
    x = random_input(rng, 5, (C, H, width))
    y = board.run(x).reshape((-1,) + shape)
    np.testing.assert_array_equal(y, conv_reference(x, w, bias, mult, shift, (1, 1), (1, 1, 1, 1), 1, "none"))
    (counters,) = board.core_counters().values()
    assert counters["packets_in"] == len(x) * C * H * ((width + 1) // 2)
    assert counters["rx_general"] == 1  # the producer's first packet: its next samples restart its row


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_receives_fast_path_stores_and_counts_as_its_general_path(seed, tmp_path):
    """c_runtime/tests/trx_fuzz.c: spinn_tensor_receive_rc (remembered rows, half pairs,
    the next row) against spinn_tensor_receive alone on random receive tables and packet
    orders: blocks cut anywhere along w (odd starts and widths, widths 1 and 2, halos cut
    mid pair either way), rows outside the block, spare key bits, row fields too narrow,
    two buffers, 8-bit packing, markers, strays, duplicates, slots reused, producers
    interleaved, masks with holes in the row's fields. After every packet: the same
    returned slot, rx_slot, buffers, stream counts and counters."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("no host gcc")
    exe = tmp_path / "trx_fuzz"
    subprocess.run([gcc, "-std=c99", "-O1", "-Wall", "-Wextra", "-Werror", "-pedantic",
                    f"-I{ROOT / 'c_runtime' / 'include'}", str(ROOT / "c_runtime" / "tests" / "trx_fuzz.c"),
                    "-o", str(exe)], check=True, capture_output=True, text=True)
    out = subprocess.run([str(exe), str(seed), "1500"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    checked, general = (int(v) for v in re.match(r"ok (\d+) packets, (\d+) of", out.stdout).groups())
    assert checked > 100000 and general < 0.9 * checked  # the fast path was taken, often
