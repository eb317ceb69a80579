"""The tensor strategy of the tiling planner: conv, pool and add ops cut into tiles.

A tile computes output channels [c0, c0 + nc) x output rows [h0, h0 + nh) x every
column, buffering the input rows its band needs (the halo included) for
``N_SLOTS`` samples. Channel groups x row bands are chosen to use the fewest cores
that fit DTCM and the per-core cycle budget (the calibrated tiling.cycle_model). A convolution
whose single output channel x row does not fit a core is also cut by input-channel
groups: each group's tile sends int32 partial sums (after a proven-safe rounding
shift) and one reducer per output block adds them and finishes the layer. Dense layers
(also after a flatten) are tiled by :mod:`.dense`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..errors import ResourceError
from ..graph.ops import Add, Conv2D, Pool2D
from ..graph.windows import window_input_rows
from ..quantization.quantize import QOp
from . import resources as res
from .cycle_model import cost, mean_scan, receive_lookups
from .dense import TANH_TABLE_BYTES

# a receive entry (SPINN_TRX_WORDS) and its row in the workspace (spinn_trx_row_t on the ARM)
TRX_ENTRY_BYTES = 16 * 4 + 16 * 4
CONV_HEADER_BYTES = 29 * 4
REDUCE_HEADER_BYTES = 18 * 4
REDUCE_RX_BYTES = 2 * 4
POOL_HEADER_BYTES = 25 * 4
ADD_HEADER_BYTES = 17 * 4
CHANNEL_PARAM_BYTES = 16
Block = Tuple[int, int, int, int]  # (c0, nc, h0, nh) of a producer's output block


@dataclass
class TensorTile:
    """Output block of one core: channels [c0, c0 + nc), rows [h0, h0 + nh), all columns;
    input rows [ih0, ih0 + nih) of the input tensor(s) it buffers; for a convolution cut
    by input channels, the group [ic0, ic0 + nic) whose partial sums it computes."""

    c0: int
    nc: int
    h0: int
    nh: int
    ih0: int
    nih: int
    ic0: int = 0
    nic: int = 0  # 0: not cut by input channels
    ph0: int = 0  # rows [ph0, ph0 + nph) of the fused pool's output it sends
    nph: int = 0  # 0: no fused pool (it sends rows [h0, h0 + nh) of its own output)


@dataclass
class TensorOpPlan:
    """The tiles of one op. ``ic_bounds`` (convolutions cut by input channels): group
    bounds [0, ..., in_c]; then every output block has one tile per group plus a reducer,
    and ``partial_shift`` is the rounding shift that keeps every partial sum in int32."""

    qop: QOp
    tiles: List[TensorTile]
    ic_bounds: Optional[List[int]] = None
    partial_shift: int = 0
    pool: Optional[QOp] = None  # a pool computed by these tiles from their own output rows

    @property
    def n_col_tiles(self) -> int:
        """Input-channel groups: the column tiles of the convolution's im2col matrix."""
        return 1 if self.ic_bounds is None else len(self.ic_bounds) - 1

    @property
    def blocks(self) -> List[Block]:
        """Output blocks (c0, nc, h0, nh), one per producer vertex (tile or reducer); with a
        fused pool, blocks of the pool's output."""
        return list(dict.fromkeys(self.block_of(t) for t in self.tiles))

    def block_of(self, t: TensorTile) -> Block:
        """The output block a tile contributes to (its own, its reducer's or its pool's)."""
        return (t.c0, t.nc, t.ph0, t.nph) if self.pool is not None else (t.c0, t.nc, t.h0, t.nh)

    @property
    def n_cores(self) -> int:
        return len(self.tiles) + (len(self.blocks) if self.ic_bounds is not None else 0)

    @property
    def tiled_qop(self) -> QOp:
        """The op with tiling's cut of its accumulation (input-channel groups, partial shift)."""
        return self.qop.with_split(self.ic_bounds, self.partial_shift)


@dataclass
class FusedPool:
    """The plan of a pool computed by the tiles of the convolution that produces its input."""

    conv: TensorOpPlan
    conv_index: int
    n_cores = 0  # the convolution's tiles do the work

    @property
    def blocks(self) -> List[Block]:
        return self.conv.blocks


def input_rows(op, oh0: int, noh: int, in_h: int) -> Tuple[int, int]:
    """Input rows [first, first + n) that output rows [oh0, oh0 + noh) read (clipped). A band
    whose windows lie wholly in the padding still buffers one row: its arrival is what
    makes the tile compute (and send) those rows."""
    if isinstance(op, Add):
        return oh0, noh
    kh = op.weight.shape[2] if isinstance(op, Conv2D) else op.kernel[0]
    return window_input_rows(oh0, noh, op.stride[0], op.padding[0], kh, in_h)



# A producer whose rows go to different cores sends them on several multicast partitions
# (machine.builder); a reader gets one receive entry per partition it receives, and the
# builder keeps that at most this many per producer.
MAX_PARTITIONS_PER_READER = 3


def _middle_blocks(blocks: Sequence[Block], n_c: int, n_rows: int, in_h: int) -> List[Block]:
    """The producer blocks a tile reading channels [0, n_c) and a band of n_rows input rows
    in the middle of the tensor overlaps (the worst band, roughly)."""
    h_lo = max(0, (in_h - n_rows) // 2)
    return [b for b in blocks if b[0] < n_c and b[2] < h_lo + n_rows and b[2] + b[3] > h_lo]


def overlapping(blocks: Sequence[Block], n_c: int, n_rows: int, in_h: int) -> int:
    """Receive entries of a tile reading channels [0, n_c) and a band of n_rows input rows in
    the middle of the tensor: one per partition of each producer block it overlaps (the
    worst band, roughly)."""
    return MAX_PARTITIONS_PER_READER * max(1, len(_middle_blocks(blocks, n_c, n_rows, in_h)))


def _tile_input(qop: QOp, nc: int, noh: int, n_ic: Optional[int] = None) -> Tuple[int, int, str]:
    """(input channels it buffers, input rows it buffers, its cycle-model kind) of a conv,
    pool or add tile with nc channels x noh rows (n_ic: a convolution's input-channel group,
    None: all)."""
    op = qop.op
    in_c, in_h = qop.in_shapes[0][:2]
    if isinstance(op, Conv2D):
        k = op.channel_multiplier
        # depthwise: at most ceil((nc - 1) / k) + 1 input channels (any phase of the first output)
        n_buf = min(in_c, (nc + k - 2) // k + 1) if k else (in_c if n_ic is None else n_ic)
        return n_buf, min(in_h, (noh - 1) * op.stride[0] + op.weight.shape[2]), \
            "conv_tile_depthwise" if k else "conv_tile"
    if isinstance(op, Pool2D):
        return nc, min(in_h, (noh - 1) * op.stride[0] + op.kernel[0]), "pool_tile"
    return nc, noh, "add_tile"


def row_keys_bytes(nc: int, nh: int) -> int:
    """The row-key table after the config of a tile that sends nc x nh rows on several
    partitions (spinn_tensor.h spinn_block_keys_t): a count, then a key per row."""
    return 4 * (1 + nc * nh)


def _finish_bytes(qop: QOp, nc: int) -> int:
    """Per-channel requantisation parameters and the activation table of a finishing core."""
    return nc * CHANNEL_PARAM_BYTES + (TANH_TABLE_BYTES if qop.activation in ("tanh", "sigmoid") else 0)


def _align8(n: int) -> int:
    return (n + 7) & ~7


def tile_cost(qop: QOp, nc: int, noh: int, sources: Sequence[Block],
              n_ic: Optional[int] = None) -> Tuple[int, float]:
    """(DTCM bytes, modelled cycles per sample) of a tile with nc channels x noh rows;
    sources: the blocks of the producers of its input(s); n_ic: the input-channel group
    of a convolution tile that sends partial sums (None: all channels, finished outputs)."""
    op = qop.op
    in_h, in_w = qop.in_shapes[0][1:]
    out_w = qop.out_shape[2]
    out_pairs = nc * noh * ((out_w + 1) // 2)
    if isinstance(op, Conv2D):
        kh, kw = op.weight.shape[2:]
        partial = n_ic is not None
        k = op.channel_multiplier
        n_buf, nih, kind = _tile_input(qop, nc, noh, n_ic)
        n_ic = 1 if k else n_buf  # input channels per output channel
        n_sources = overlapping(sources, n_buf, nih, in_h)
        config = (CONV_HEADER_BYTES + n_sources * TRX_ENTRY_BYTES + nc * 2 * ((n_ic * kh * kw + 1) // 2) * 2
                  + (0 if partial else _finish_bytes(qop, nc)))
        # input rows per slot, and the im2row of one output row (conv_tile.c cols: out_w windows
        # of n_ic * kh * kw int16, each padded to whole words)
        buffers = res.n_slots() * n_buf * nih * in_w * 2 + _align8(out_w * ((n_ic * kh * kw + 1) // 2) * 4)
        macs = nc * noh * out_w * n_ic * kh * kw
        model = cost(kind)
        cycles = model.cycles(macs=macs, outputs=nc * noh * out_w, computes=1)
        in_values = n_buf * nih * in_w
        if partial:  # one int32 partial sum per packet
            out_pairs = nc * noh * out_w
    elif isinstance(op, Pool2D):
        kh, kw = op.kernel
        _, nih, kind = _tile_input(qop, nc, noh)
        n_buf = nc
        config = POOL_HEADER_BYTES + overlapping(sources, nc, nih, in_h) * TRX_ENTRY_BYTES + (kh * kw + 1) * 4
        buffers = res.n_slots() * nc * nih * in_w * 2
        # calibrated on 2x2 windows: a window's share scales with its size
        model = cost(kind)
        cycles = model.cycles(outputs=nc * noh * out_w * max(1.0, kh * kw / 4), computes=1)
        in_values = nc * nih * in_w
    else:
        nih = noh
        n_buf = nc
        config = ADD_HEADER_BYTES + overlapping(sources, nc, noh, in_h) * TRX_ENTRY_BYTES + \
            (TANH_TABLE_BYTES if qop.activation in ("tanh", "sigmoid") else 0)
        buffers = 2 * res.n_slots() * nc * noh * in_w * 2
        model = cost("add_tile")
        cycles = model.cycles(outputs=nc * noh * out_w, computes=1)
        in_values = 2 * nc * noh * in_w
    # spinn_stream_words: per slot a count per input row, then received, next_row, pending;
    # each workspace part is 8-byte aligned (up to 3 parts of 4 bytes of padding)
    counts = res.n_slots() * (nih * (2 if isinstance(op, Add) else 1) + 3) * 4 + 3 * 4
    config += row_keys_bytes(nc, noh)
    # a user event per output row; a producer's moves to its next row and next sample and the
    # packets completing a row look their entry up (its first packet of a run takes the
    # receive's longer path: once, not a sample)
    packets_in = (in_values + 1) // 2
    inputs = 2 if isinstance(op, Add) else 1
    entries = inputs * overlapping(sources, n_buf, nih, in_h)
    lookups = receive_lookups(inputs * nih, len(_middle_blocks(sources, n_buf, nih, in_h)), entries)
    cycles += model.cycles(packets_in=packets_in, packets_out=out_pairs, events=noh, lookups=lookups,
                           scanned=lookups * mean_scan(entries))
    return config + buffers + counts + res.DTCM_RESERVED_BYTES, cycles


def producers_send_cycles(qop: QOp, nc: int, noh: int, sources: Sequence[Block]) -> float:
    """Cycles a sample the producers of a tile with nc channels x noh rows (in the middle of
    the tensor, the worst band, as :func:`overlapping` takes it) take to send their packets
    when it paces them (machine.send_gaps): the senders of a reader, all sending at once,
    send no faster than it takes packets in, and a sender's pace holds for every packet it
    sends, also those to other cores. Producers that each cover every row of the tensor
    (channel groups) then send all their rows at its pace: the tile's input of a sample is
    only part of what they send."""
    in_h, in_w = qop.in_shapes[0][1:]
    n_c, nih, kind = _tile_input(qop, nc, noh)
    blocks = _middle_blocks(sources, n_c, nih, in_h)
    packets = sum(bc * bh * ((in_w + 1) // 2) for _, bc, _, bh in blocks)
    return packets * cost(kind).packet_in_among(len(blocks), overlapping(sources, n_c, nih, in_h))


def reducer_cost(qop: QOp, nc: int, noh: int, n_groups: int) -> Tuple[int, float]:
    """(DTCM bytes, modelled cycles per sample) of the reducer of an nc x noh output block
    whose partial sums come from n_groups input-channel groups (int32 accumulators)."""
    out_w = qop.out_shape[2]
    values = nc * noh * out_w
    config = REDUCE_HEADER_BYTES + n_groups * REDUCE_RX_BYTES + _finish_bytes(qop, nc) + row_keys_bytes(nc, noh)
    buffers = res.n_slots() * values * 4 + res.n_slots() * (noh + 3) * 4
    cycles = cost("conv_reduce").cycles(packets_in=n_groups * values, outputs=values, computes=1, events=noh,
                                        packets_out=nc * noh * ((out_w + 1) // 2))
    return config + buffers + res.DTCM_RESERVED_BYTES, cycles


POOL_SECTION_BYTES = 15 * 4


def _pooled_conv_rows(conv: QOp, pool: QOp, nph: int) -> int:
    """The conv rows nph rows of the pool's output need (a band of them, at most)."""
    return min(conv.out_shape[1], (nph - 1) * pool.op.stride[0] + pool.op.kernel[0])


def fused_cost(conv: QOp, pool: QOp, nc: int, nph: int, sources: Sequence[Block]) -> Tuple[int, float]:
    """(DTCM bytes, modelled cycles per sample) of a conv tile that computes the conv rows
    nph rows of the pool's output need and sends the pooled rows only."""
    conv_w = conv.out_shape[2]
    pool_w = pool.out_shape[2]
    kh, kw = pool.op.kernel
    nch = _pooled_conv_rows(conv, pool, nph)
    dtcm, cycles = tile_cost(conv, nc, nch, sources)
    dtcm += res.n_slots() * nc * nch * conv_w * 2 + POOL_SECTION_BYTES + (kh * kw + 1) * 4
    conv_model, pool_model = cost("conv_tile"), cost("pool_tile")
    cycles -= conv_model.cycles(packets_out=nc * nch * ((conv_w + 1) // 2))
    cycles += pool_model.cycles(outputs=nc * nph * pool_w * max(1.0, kh * kw / 4),
                                packets_out=nc * nph * ((pool_w + 1) // 2))
    return dtcm, cycles


def plan_fused(conv: QOp, pool: QOp, sources: Sequence[Block], cycle_budget: Optional[float],
               out_rows: Optional[int] = None) -> Optional[TensorOpPlan]:
    """Channel groups x pool-row bands of a conv with its pool fused (fewest cores), or None
    if no such tile fits."""
    out_c, pool_h, _ = pool.out_shape
    pool_h = pool_h if out_rows is None else out_rows
    conv_h, in_h = conv.out_shape[1], conv.in_shapes[0][1]
    best = _paced_fewest_cores(
        out_c, pool_h, lambda nc, nph: _fits(fused_cost(conv, pool, nc, nph, sources), cycle_budget),
        lambda nc, nph: producers_send_cycles(conv, nc, _pooled_conv_rows(conv, pool, nph), sources), cycle_budget)
    if best is None:
        return None
    _, groups, bands = best
    p = pool.op
    tiles = []
    for c0, nc in _bounds(out_c, groups):
        for ph0, nph in _bounds(pool_h, bands):
            h0, nh = window_input_rows(ph0, nph, p.stride[0], p.padding[0], p.kernel[0], conv_h)
            ih0, nih = input_rows(conv.op, h0, nh, in_h)
            tiles.append(TensorTile(c0, nc, h0, nh, ih0, nih, ph0=ph0, nph=nph))
    return TensorOpPlan(conv, tiles, pool=pool)


def acc_bounds(qop: QOp) -> np.ndarray:
    """Per output channel, the largest |accumulator| (without bias): sum|w| * 32768."""
    return np.abs(qop.weight.astype(np.int64)).reshape(qop.weight.shape[0], -1).sum(1) * 32768


def partial_shift(qop: QOp) -> int:
    """Rounding shift that keeps every input-channel group's partial sum, and the reducer's
    sum of them, inside int32: the full accumulator's bound over 2**shift stays below 2**30
    (G rounded partials then add to less than 2**30 + G / 2)."""
    return max(0, int(acc_bounds(qop).max()).bit_length() - 30)


def _bounds(n: int, parts: int) -> List[Tuple[int, int]]:
    cuts = [round(i * n / parts) for i in range(parts + 1)]
    return [(a, b - a) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def _fewest_cores(out_c: int, out_h: int, fits, per_block: int = 1) -> Optional[Tuple[int, int, int]]:
    """(cores, channel groups, row bands) with the fewest cores whose nc x noh blocks
    fits(nc, noh), each block taking per_block cores; None if none fits."""
    best = None
    for groups in range(1, out_c + 1):
        nc = -(-out_c // groups)
        for bands in range(1, out_h + 1):
            if fits(nc, -(-out_h // bands)):
                if best is None or groups * bands * per_block < best[0]:
                    best = (groups * bands * per_block, groups, bands)
                break  # more bands only cost more cores for this channel grouping
        if best is not None and groups * per_block > best[0]:
            break
    return best


def _paced_fewest_cores(out_c: int, out_h: int, fits, send_cycles, cycle_budget: Optional[float]
                        ) -> Optional[Tuple[int, int, int]]:
    """:func:`_fewest_cores` of the blocks that fit and whose producers, paced by them, still
    send a sample within the cycle budget (:func:`producers_send_cycles`); if none does (the
    producers' own cut decides), of the blocks that fit."""
    if cycle_budget is not None:
        best = _fewest_cores(out_c, out_h, lambda nc, noh: fits(nc, noh) and send_cycles(nc, noh) <= cycle_budget)
        if best is not None:
            return best
    return _fewest_cores(out_c, out_h, fits)


def _fits(cost: Tuple[int, float], cycle_budget: Optional[float]) -> bool:
    return cost[0] <= res.DTCM_BYTES and (cycle_budget is None or cost[1] <= cycle_budget)


def plan_tensor_op(qop: QOp, sources: Sequence[Block], cycle_budget: Optional[float],
                   out_rows: Optional[int] = None) -> TensorOpPlan:
    """Channel groups x row bands with the fewest cores that fit DTCM and the cycle budget;
    for a convolution that does not fit even one output channel x row per core, also
    input-channel groups (partial sums and one reducer per output block). out_rows: the
    output rows its readers read (default all): rows after them are not computed."""
    out_c, out_h, _ = qop.out_shape
    out_h = out_h if out_rows is None else out_rows
    in_c, in_h = qop.in_shapes[0][:2]
    best = _paced_fewest_cores(out_c, out_h, lambda nc, noh: _fits(tile_cost(qop, nc, noh, sources), cycle_budget),
                               lambda nc, noh: producers_send_cycles(qop, nc, noh, sources), cycle_budget)
    ic_bounds = None
    op = qop.op
    if best is None and isinstance(op, Conv2D) and op.groups == 1:
        for n_groups in range(2, in_c + 1):
            if best is not None and n_groups + 1 > best[0]:
                break
            n_ic = -(-in_c // n_groups)
            if -(-in_c // n_ic) < n_groups:
                continue  # the same group size as a smaller count
            found = _fewest_cores(out_c, out_h, lambda nc, noh: (
                _fits(tile_cost(qop, nc, noh, sources, n_ic), cycle_budget)
                and _fits(reducer_cost(qop, nc, noh, n_groups), cycle_budget)), n_groups + 1)
            if found is not None and (best is None or found[0] < best[0]):
                best, ic_bounds = found, [b for b, _ in _bounds(in_c, n_groups)] + [in_c]
    if best is None:
        dtcm, cycles = tile_cost(qop, 1, 1, sources, 1 if isinstance(op, Conv2D) and op.groups == 1 else None)
        limit = "DTCM" if dtcm > res.DTCM_BYTES else "cycle budget"
        what = "one input channel x one output channel x one row" if isinstance(op, Conv2D) and op.groups == 1 \
            else "one output channel x one row"
        raise ResourceError(f"{qop.name}: even {what} needs {dtcm} bytes of DTCM "
                            f"(limit {res.DTCM_BYTES}) and {cycles:.0f} cycles per sample: the {limit} is exceeded")
    _, groups, bands = best
    return tensor_plan(qop, groups, bands, out_rows, ic_bounds)


def tensor_plan(qop: QOp, groups: int, bands: int, out_rows: Optional[int] = None,
                ic_bounds: Optional[List[int]] = None) -> TensorOpPlan:
    """The plan of ``groups`` output-channel groups x ``bands`` row bands (x the input-channel
    groups of ic_bounds, if given) of a tensor op, its first out_rows output rows (default
    all). plan_tensor_op chooses the counts; this cuts the tiles."""
    out_c, out_h, _ = qop.out_shape
    out_h = out_h if out_rows is None else out_rows
    in_h = qop.in_shapes[0][1]
    tiles = []
    groups_ic = [(0, 0)] if ic_bounds is None else list(zip(ic_bounds[:-1], np.diff(ic_bounds).tolist()))
    for c0, nc in _bounds(out_c, groups):
        for h0, nh in _bounds(out_h, bands):
            ih0, nih = input_rows(qop.op, h0, nh, in_h)
            tiles += [TensorTile(c0, nc, h0, nh, ih0, nih, ic0, nic) for ic0, nic in groups_ic]
    if ic_bounds is None:
        return TensorOpPlan(qop, tiles)
    return TensorOpPlan(qop, tiles, ic_bounds, partial_shift(qop))
