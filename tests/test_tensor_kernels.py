"""The tensor kernels (conv, pool, add tiles; c_runtime/kernels/*_tile.c) in the board
emulator, bit for bit against the numpy references of tvm_spinn.tensor_configs, the
references against float torch, row streaming at packet level, config rejection and
undefined-behaviour checking.

The programs are built by hand on one chip (0, 0): each producer (the live input and
every tile) gets its own key block and one routing entry sending its keys to the
cores that read them; the output gatherer decodes generic receive entries."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import pytest

from tvm_spinn.emulator import EmulatedBoard
from tvm_spinn.errors import EmulatorError
from tvm_spinn.tensor_configs import (AVG_RECIP_SHIFT, CORE_ADD, CORE_CONV, CORE_POOL, FIX_SELF, add_config,
                                      add_reference, avg_recip, avg_recip_errors, block_key_layout,
                                      block_n_keys, conv_accumulators, conv_config, conv_reference,
                                      pool_config, pool_reference, trx_entry, window_input_rows,
                                      window_output_size)

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

    def producer(self, label: str, tensor: str, block: Block) -> Producer:
        c0, nc, h0, nh, w0, nw = block
        s, c, h = block_key_layout(nc, nh, nw)
        if self.slack:
            eh, ec, es = (int(v) for v in self.rng.integers(0, 2, 3))
            s, c, h = s + eh + ec + es, c + eh + ec, h + eh
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
        self.cores.append({"label": label, "kind": kind, "placement": (0, 0, p), "config": config})
        for s in sources:
            self.routes[s].add(p)
        return p

    def program(self, in_shape: Tuple[int, int, int], out_tensor: str, out_shape: Tuple[int, int, int]) -> dict:
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
        return {
            "chips": [(0, 0)], "links": {}, "routing_tables": {(0, 0): np.array(table, np.uint32)},
            "cores": self.cores, "n_slots": N_SLOTS,
            "in_features": int(np.prod(in_shape)), "out_features": int(np.prod(out_shape)),
            "input": {"chip": (0, 0), "key": inp.key, "slot_shift": inp.shifts[0], "c_shift": inp.shifts[1],
                      "h_shift": inp.shifts[2], "shape": tuple(in_shape)},
            "output": {"placement": (0, 0, OUTPUT_P), "rx": np.array(rx, np.uint32), "trx": True},
        }


def cuts(n: int, parts: int, rng: np.random.Generator, must: Sequence[int] = ()) -> List[int]:
    """Bounds 0 = b0 < ... < bk = n of a split into at most `parts` pieces (plus `must` cuts)."""
    inner = set(int(v) for v in rng.choice(np.arange(1, n), size=min(parts - 1, n - 1), replace=False)) \
        if n > 1 and parts > 1 else set()
    return sorted(inner | set(must) | {0, n})


def pads4(pads) -> Tuple[int, int, int, int]:
    return tuple(int(v) for v in pads)  # top, left, bottom, right


# ---------------------------------------------------------------------------
# tilings

def add_conv_tiles(b: ProgramBuilder, name: str, x_tensor: str, in_shape, w_q, bias, mult, shift, stride,
                   pads, groups, act, oc_parts: int, oh_parts: int, out_tensor: str) -> Tuple[int, int, int]:
    C, H, W = in_shape
    OC, Cg, kh, kw = w_q.shape
    sh, sw = stride
    top, left, bottom, right = pads
    OH = window_output_size(H, kh, sh, top, bottom)
    OW = window_output_size(W, kw, sw, left, right)
    depthwise = groups == C and Cg == 1 and OC == C
    ocg = OC // groups
    oc_b = cuts(OC, oc_parts, b.rng, must=[] if depthwise else [g * ocg for g in range(1, groups)])
    oh_b = cuts(OH, oh_parts, b.rng)
    for i, (oc0, oc1) in enumerate(zip(oc_b[:-1], oc_b[1:])):
        for j, (oh0, oh1) in enumerate(zip(oh_b[:-1], oh_b[1:])):
            if depthwise:
                ic0, n_ic = oc0, oc1 - oc0
            else:
                g = oc0 // ocg
                ic0, n_ic = g * Cg, Cg
            ih0, n_ih = window_input_rows(oh0, oh1 - oh0, sh, top, kh, H)
            rx, sources = b.rx(x_tensor, (ic0, n_ic, ih0, n_ih, 0, W))
            label = f"{name}_{i}_{j}"
            p = b.producer(label, out_tensor, (oc0, oc1 - oc0, oh0, oh1 - oh0, 0, OW))
            cfg, fix = conv_config(
                n_ic=n_ic, in_h=H, in_w=W, ic0=ic0, ih0=ih0, n_ih=n_ih, oc0=oc0, oh0=oh0, n_oh=oh1 - oh0,
                out_w=OW, sh=sh, sw=sw, pad_top=top, pad_left=left, depthwise=depthwise, activation=act,
                n_slots=N_SLOTS, out_slot_shift=p.shifts[0], out_c_shift=p.shifts[1], out_h_shift=p.shifts[2],
                rx=rx, weights=w_q[oc0:oc1], bias=bias[oc0:oc1], multiplier=mult[oc0:oc1],
                shift=shift[oc0:oc1])
            b.add_core(label, CORE_CONV, cfg, fix, sources)
    return OC, OH, OW


def add_pool_tiles(b: ProgramBuilder, name: str, x_tensor: str, in_shape, kernel, stride, pads, mode,
                   count_include_pad, ceil_mode, c_parts: int, oh_parts: int, out_tensor: str):
    C, H, W = in_shape
    kh, kw = kernel
    sh, sw = stride
    top, left, bottom, right = pads
    OH = window_output_size(H, kh, sh, top, bottom, ceil_mode)
    OW = window_output_size(W, kw, sw, left, right, ceil_mode)
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
    sh, top = stride[0], pads[0]
    needs = [range(max(0, oh * sh - top), min(H, oh * sh - top + kh)) for oh in range(OH)]
    early = 0
    # samples 0 and 1 interleaved in slots 0 and 1, then samples 2 and 3 reuse the slots
    for first in (0, 2):
        pk = {s: _input_packets(inp, x[first + s], s) for s in (0, 1)}
        orders = {s: list(rng.permutation(H)) for s in (0, 1)}
        done = {s: set() for s in (0, 1)}
        sent = {s: [] for s in (0, 1)}
        for step in range(H):
            for s in (0, 1):
                h = orders[s][step]
                for c in range(C):
                    for key, payload in pk[s][(c, h)]:
                        sent[s] += list(board.core_packet("conv_0_0", key, payload))
                done[s].add(h)
                ready = 0
                while ready < OH and all(r in done[s] for r in needs[ready]):
                    ready += 1
                assert len(sent[s]) == ready * per_row, (step, s, ready)
                if step < H - 1 and ready:
                    early += 1
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
    tile = b.producers["conv_0_0"]
    x = random_input(rng, 12, (C, H, W))
    ref = conv_reference(x, w, bias, mult, shift, (3, 1), 0, 1, "none")
    for rnd in range(3):
        batch = range(4 * rnd, 4 * rnd + 4)
        packets = [(s, p) for s, i in enumerate(batch) for row in _input_packets(inp, x[i], s).values() for p in row]
        sent = {s: [] for s in range(4)}
        for j in rng.permutation(len(packets)):
            s, (key, payload) = packets[j]
            for k, v in board.core_packet("conv_0_0", key, payload):
                sent[(int(k) & ~tile.mask) >> tile.shifts[0]].append((k, v))
        for s, i in enumerate(batch):
            np.testing.assert_array_equal(_decode(np.array(sent[s]), tile, shape, s), ref[i])


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
    (25, 50),          # n_rx beyond the region
    (26 + 2, 32),      # rx slot_shift >= 32
    (26 + 3, 0),       # rx c_shift > h_shift ordering broken? (c_shift < h_shift)
    (26 + 12, 1),      # rx dst_nc not the buffer's
])
def test_corrupt_tensor_configs_are_rejected(word, value):
    rng = np.random.default_rng(1)
    program = _one_conv_program(rng)
    core = dict(program["cores"][0])
    cfg = core["config"].copy()
    cfg[word] = value
    if word == 18:
        cfg[8] = 1  # depthwise with n_oc != n_ic
    core["config"] = cfg
    program["cores"] = [core] + program["cores"][1:]
    with pytest.raises(EmulatorError, match="rejected its config"):
        EmulatedBoard(program)


def test_truncated_configs_of_every_kind_are_rejected():
    rng = np.random.default_rng(2)
    b = ProgramBuilder(rng)
    b.producer("input", "x", (0, 2, 0, 6, 0, 6))
    add_pool_tiles(b, "pool", "x", (2, 6, 6), (2, 2), (2, 2), (0, 0, 0, 0), "avg", True, False, 1, 1, "p")
    add_add_tiles(b, "add", "x", "p", (2, 3, 3), 1, 1, 1, "none", 1, 1, "y")
    for core in b.cores:
        for cut in (0, 5, len(core["config"]) - 1):
            bad = dict(core, config=core["config"][:cut])
            with pytest.raises(EmulatorError, match="rejected its config"):
                EmulatedBoard({"chips": [(0, 0)], "links": {}, "routing_tables": {}, "cores": [bad],
                               "n_slots": N_SLOTS, "in_features": 1, "out_features": 1,
                               "input": {"chip": (0, 0), "key": 0, "slot_shift": 1},
                               "output": {"placement": (0, 0, 17), "rx": np.zeros(5, np.uint32)}})


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


def test_dense_input_layout_still_accepted_by_the_tensor_injection():
    """A (1, 1, N) tensor program fed as a plain vector equals the dense key layout."""
    rng = np.random.default_rng(8)
    b = ProgramBuilder(rng, slack=False)
    b.producer("input", "x", (0, 1, 0, 1, 0, 9))
    add_pool_tiles(b, "pool", "x", (1, 1, 9), (1, 1), (1, 1), (0, 0, 0, 0), "max", True, False, 1, 1, "y")
    program = b.program((1, 1, 9), "y", (1, 1, 9))
    del program["input"]["shape"]  # the old format: a vector of in_features values
    x = random_input(rng, 5, (9,))
    np.testing.assert_array_equal(EmulatedBoard(program).run(x), x)


def test_no_undefined_behaviour_under_ubsan():
    script = textwrap.dedent("""
        import numpy as np
        import tests.test_tensor_kernels as t
        from tvm_spinn.emulator import EmulatedBoard
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
        print("ubsan ok")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900, cwd=str(ROOT))
    assert out.returncode == 0 and "ubsan ok" in out.stdout, out.stderr[-3000:]
    assert "runtime error" not in out.stderr
