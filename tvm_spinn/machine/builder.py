"""The one builder: a tiled operator graph -> a machine graph (vertices, edges, partitions,
keys and config regions).

A vertex's keys are ``base | slot << slot_shift | index`` (index: a pair of int16 values,
or one row's int32 partial sum); ``n_keys`` reserves ``N_SLOTS`` slots so several samples
are in flight. A receiver's config region holds receive entries (``spinn_rx.h``,
``spinn_tensor.h``) whose key and mask the mapper fills in from the toolchain's key
allocation (``key_fixups``).

Fan-out: a packet goes to every core of its multicast partition, and each costs that core
a packet interrupt even when it drops the packet. So a tensor kernel whose rows are read
by different cores sends on one partition per set of readers (a row band with its halos,
a channel group): the graph is built twice, the first time to learn which core reads
which rows of which sender, the second with those partitions (each with its own key from
the toolchain, the kernel's row-key table choosing it row by row).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Set, Tuple

import numpy as np

from ..errors import UnsupportedError
from ..quantization.input_format import PACK_SHIFT
from ..graph.network import input_number, op_inputs
from ..graph.ops import Concat, Conv2D, Pool2D
from ..tiling import resources as res
from ..tiling.dense import LayerPlan, next_pow2
from ..tiling.planner import GraphPlan
from ..tiling.tensor import MAX_PARTITIONS_PER_READER, FusedPool, acc_bounds
from .configs.dense import (CORE_DENSE_REDUCE, CORE_DENSE_TILE, KIND_DENSE_REDUCE, KIND_DENSE_TILE, TILE_FINAL,
                            TILE_PARTIAL, pack_int16, row_params, table_words)
from .configs.tensor import (CORE_ADD, CORE_CONV, CORE_CONV_REDUCE, CORE_POOL, add_config, block_key_layout,
                             conv_config, conv_reduce_config, depthwise_inputs, partial_key_layout, pool_config,
                             trx_entry)
from .graph import (FIX_KEY, FIX_MASK, INPUT, KERNEL, KERNEL_BINARIES, OUTPUT, MachineGraphSpec, PartitionSpec,
                    VertexSpec)

INPUT_LABEL = "input"
# The emulator's live inputs per program (c_runtime/include/spinn_emulator.h SPINN_EMU_MAX_INPUTS).
MAX_LIVE_INPUTS = 16
# One partition per set of readers (False: one per sender, as before issue 11; the fan-out
# benchmark compares the two).
SPLIT_PARTITIONS = True
# Vertices in the order of the rows they send (_placement_order; False: layer by layer).
PLACE_BY_ROWS = True
OUTPUT_LABEL = "output"
# Vertex labels: "<prefix>L<layer>_t<row>_<col>" (tiles), "<prefix>L<layer>_r<row>" (reducers),
# "<prefix>input", "<prefix>output"; the prefix tells functions sharing one board apart.


@dataclass
class Producer:
    """A vertex that emits one block of a (C, H, W) tensor as int16 pairs along w:
    channels [c0, c0 + nc) x rows [h0, h0 + nh) x columns [w0, w0 + nw), with keys
    ``base | slot << slot_shift | c_local << c_shift | h_local << h_shift | pair``."""

    label: str
    c0: int
    nc: int
    h0: int
    nh: int
    w0: int
    nw: int
    slot_shift: int
    c_shift: int
    h_shift: int
    tensor: Tuple[int, int, int]
    # the multicast partition of each row of the block (index c_local * nh + h_local); empty:
    # every row in partition 0
    parts: Tuple[int, ...] = field(default=())
    # a live input sending 8-bit values: four a key, the pair field counting quads
    # (quantization.input_format PACK_*); 0: int16 pairs
    packing: int = 0

    def part(self, c_local: int, h_local: int) -> int:
        """The partition that carries row (c_local, h_local) of the block."""
        return self.parts[c_local * self.nh + h_local] if self.parts else 0

    def rows_in(self, part: int) -> Set[int]:
        """The rows (c_local * nh + h_local) partition ``part`` carries."""
        n = self.nc * self.nh
        return set(range(n)) if not self.parts else {r for r in range(n) if self.parts[r] == part}

    @staticmethod
    def vector(label: str, start: int, stop: int, slot_shift: int, n: int) -> "Producer":
        """values[start:stop) of a vector of n values (a 1 x 1 x n tensor)."""
        return Producer(label, 0, 1, 0, 1, start, stop - start, slot_shift, slot_shift, slot_shift, (1, 1, n))

    def flat_rows(self):
        """(c_local, h_local, flat index of the row's first value) of every row of the block."""
        _, h_dim, w_dim = self.tensor
        for c in range(self.c0, self.c0 + self.nc):
            for h in range(self.h0, self.h0 + self.nh):
                yield c - self.c0, h - self.h0, (c * h_dim + h) * w_dim + self.w0

    def row_entry(self, c_local: int, h_local: int, dest_offset: int) -> List[int]:
        """A spinn_rx entry for one row of the block (key and mask still to OR in): the mask
        covers the row's channel/row key fields, so only its pairs and slots vary."""
        fields = (c_local << self.c_shift) | (h_local << self.h_shift)
        field_mask = ((1 << self.slot_shift) - 1) ^ ((1 << self.h_shift) - 1)
        return [fields, field_mask, self.slot_shift | self.packing << PACK_SHIFT, dest_offset & 0xFFFFFFFF, self.nw]


@dataclass
class GraphLayout:
    """What the runtime needs to know about the machine graph beyond the mapping.

    inputs: the live input vertices: per graph input one Producer of the whole tensor, or,
    when its rows go to different cores, one per block of rows that the same cores read
    (input_args: the graph input each belongs to).
    outputs: the producers of each distinct result op, in the order the output gatherer
    decodes them (one flat vector, result after result); result_offsets: where each of the
    graph's results starts in that vector (a result listed twice shares its values)."""

    spec: MachineGraphSpec
    core_kinds: Dict[str, int]  # kernel vertex label -> CORE_* kind
    inputs: List[Producer]
    output_label: str
    outputs: List[List[Producer]]
    result_offsets: List[int]
    out_features: int
    input_args: List[int] = field(default_factory=list)

    @property
    def in_features(self) -> int:
        return sum(p.nc * p.nh * p.nw for p in self.inputs)


def _slot_shift(n_indices: int) -> int:
    return next_pow2(n_indices).bit_length() - 1


def _n_keys(slot_shift: int) -> int:
    """Keys of a kernel's block: its slots, twice (the upper half carries lost-value markers,
    c_runtime/include/spinn_slots.h)."""
    return 2 * _lost_bit(slot_shift)


def _lost_bit(slot_shift: int) -> int:
    """The key bit of a kernel's lost-value markers: the slot field moved up by the slot span
    (N_SLOTS rounded up to a power of two, as spinn_slot_decode reads it)."""
    return (1 << (res.n_slots() - 1).bit_length()) << slot_shift


Fixup = Tuple[int, str, str, int]  # (config word, source label, FIX_KEY | FIX_MASK, partition)


class _Builder:
    """One pass of the builder. parts: label -> the partition of each row of its block (from
    the first pass's reads; None in the first pass: one partition per sender)."""

    def __init__(self, prefix: str, parts: Optional[Dict[str, Tuple[int, ...]]] = None) -> None:
        self.prefix = prefix
        self.parts = parts or {}
        self.vertices: List[VertexSpec] = []
        self.edges: List[Tuple[str, str]] = []
        self.core_kinds: Dict[str, int] = {}
        self.rows: Dict[str, int] = {}  # sender label -> rows of its block
        self.row_packets: Dict[str, int] = {}  # sender label -> packets a row of its block takes
        self.position: Dict[str, float] = {}  # sender label -> the middle of its rows, 0..1 of its tensor's height
        self.input_shapes: Dict[str, Tuple[int, int, int]] = {}  # graph input label -> (C, H, W)
        self.reads: Dict[str, Dict[str, Set[int]]] = {}  # sender -> reader -> rows read

    def producer(self, label: str, *args, packing: int = 0) -> Producer:
        """A Producer of vertex ``label`` (Producer's fields after the label), with its
        partitions; records its rows."""
        p = Producer(label, *args, parts=self.parts.get(label, ()), packing=packing)
        self.rows[label] = p.nc * p.nh
        self.position[label] = (p.h0 + p.nh / 2) / p.tensor[1]
        self.row_packets[label] = -(-p.nw // (4 if packing else 2))  # int16 pairs, or 8-bit quads
        return p

    def sends(self, label: str, packets: int, position: Optional[float] = None) -> None:
        """Record that vertex ``label`` sends one row of ``packets`` packets a sample (a vector,
        or partial sums), of the rows at ``position`` (0..1 of the tensor's height; None: all)."""
        self.rows[label], self.row_packets[label] = 1, packets
        if position is not None:
            self.position[label] = position

    def read(self, src: Producer, dst: str, c_local: int, h_local: int) -> int:
        """Record that ``dst`` reads row (c_local, h_local) of ``src``; its partition."""
        self.reads.setdefault(src.label, {}).setdefault(dst, set()).add(c_local * src.nh + h_local)
        return src.part(c_local, h_local)

    def receive_entries(self, label: str, sources: List[Producer], start: int, stop: int,
                        first_word: int) -> Tuple[List[int], List[Fixup]]:
        """Receive entries (and key fix-ups) for values[start:stop) of the flattened tensor the
        sources produce, one per source row that overlaps; adds the edges."""
        words: List[int] = []
        fixups: List[Fixup] = []
        for src in sources:
            used: Set[int] = set()
            for c_local, h_local, flat in src.flat_rows():
                if flat + src.nw <= start or flat >= stop:
                    continue
                part = self.read(src, label, c_local, h_local)
                at = first_word + len(words)
                fixups += [(at, src.label, FIX_KEY, part), (at + 1, src.label, FIX_MASK, part)]
                words += src.row_entry(c_local, h_local, flat - start)
                used.add(part)
            if not used:
                continue
            self.edges.append((src.label, label))
            read = self.reads[src.label][label]
            for part in sorted(used):  # a partition may bring rows this core does not read: accept and drop them
                if not src.rows_in(part) <= read:
                    at = first_word + len(words)
                    fixups += [(at, src.label, FIX_KEY, part), (at + 1, src.label, FIX_MASK, part)]
                    words += [0, 0, src.slot_shift, 0, 0]
        return words, fixups

    def add_kernel(self, label: str, kind: int, header: List[int], rx: List[int],
                   fixups: List[Fixup], body: List[np.ndarray], slot_shift: int) -> None:
        config = np.concatenate([np.array(header + rx, np.uint32)] + body).astype(np.uint32)
        self.vertices.append(VertexSpec(
            label=label, kind=KERNEL, n_keys=_n_keys(slot_shift), lost_bit=_lost_bit(slot_shift),
            binary=KERNEL_BINARIES[kind],
            config=config, key_fixups=fixups, sdram_bytes=4 * len(config)))
        self.core_kinds[label] = kind

    def add_layer(self, li: int, lp: LayerPlan, sources: List[Producer]) -> List[Producer]:
        layer = lp.layer
        producers: List[Producer] = []
        partial = lp.n_col_tiles > 1
        rows_b, cols_b = lp.row_bounds, lp.col_bounds
        for r, (r0, r1) in enumerate(zip(rows_b[:-1], rows_b[1:])):
            tile_outputs: List[Producer] = []
            for c, (c0, c1) in enumerate(zip(cols_b[:-1], cols_b[1:])):
                label = f"{self.prefix}L{li}_t{r}_{c}"
                shift = _slot_shift(r1 - r0 if partial else (r1 - r0 + 1) // 2)
                header = [KIND_DENSE_TILE, TILE_PARTIAL if partial else TILE_FINAL, r1 - r0, c1 - c0,
                          int(lp.acc_blocks[r, c]), 0, shift, layer.act_code, lp.partial_shift, res.n_slots(), 0]
                rx, fixups = self.receive_entries(label, sources, c0, c1, len(header))
                header[10] = len(rx) // 5
                fixups.append((5, label, FIX_KEY, 0))
                body = [pack_int16(layer.weight[r0:r1, c0:c1])]
                if not partial:
                    body += [row_params(lp.layer.bias[r0:r1], lp.layer.multiplier[r0:r1], lp.layer.shift[r0:r1]), table_words(layer.activation, layer.act_params)]
                self.add_kernel(label, CORE_DENSE_TILE, header, rx, fixups, body, shift)
                tile_outputs.append(Producer.vector(label, r0, r1, shift, layer.weight.shape[0]))
                self.sends(label, r1 - r0 if partial else (r1 - r0 + 1) // 2)  # partial sums: an int32 a key
            if not partial:
                producers += tile_outputs
                continue
            label = f"{self.prefix}L{li}_r{r}"
            shift = _slot_shift((r1 - r0 + 1) // 2)
            header = [KIND_DENSE_REDUCE, r1 - r0, lp.n_col_tiles, 0, shift, layer.act_code,
                      lp.partial_shift, res.n_slots(), lp.n_col_tiles]
            rx, fixups = self.receive_entries(label, tile_outputs, r0, r1, len(header))
            for i in range(lp.n_col_tiles):  # partial sums: one int32 per key, not pairs
                rx[5 * i + 3], rx[5 * i + 4] = 0, r1 - r0
            fixups.append((3, label, FIX_KEY, 0))
            self.add_kernel(label, CORE_DENSE_REDUCE, header, rx, fixups,
                            [row_params(lp.layer.bias[r0:r1], lp.layer.multiplier[r0:r1], lp.layer.shift[r0:r1]), table_words(layer.activation, layer.act_params)], shift)
            producers.append(Producer.vector(label, r0, r1, shift, layer.weight.shape[0]))
            self.sends(label, (r1 - r0 + 1) // 2)
        return producers


def merge_graphs(layouts: List[GraphLayout]) -> MachineGraphSpec:
    """One machine graph holding several networks (one board for a whole model). They share
    the live output gatherer (one IP tag for the board, whatever the number of networks):
    every layout names it OUTPUT_LABEL."""
    vertices = [v for lay in layouts for v in lay.spec.vertices if v.kind != OUTPUT]
    vertices.append(VertexSpec(label=OUTPUT_LABEL, kind=OUTPUT))
    return MachineGraphSpec(vertices, [e for lay in layouts for e in lay.spec.edges],
                            board_version=layouts[0].spec.board_version, boards=layouts[0].spec.boards,
                            partitions=[p for lay in layouts for p in lay.spec.partitions])


def output_receive_table(layout: GraphLayout, keys: Dict[str, List[Tuple[int, int]]], base: int = 0) -> np.ndarray:
    """Receive entries that decode the output producers' packets into one flat vector: the
    distinct results one after the other, each flattened c-major, from value ``base`` on.
    keys: label -> (key, mask) of each of its partitions (MappingResult.partition_keys)."""
    rows = []
    offset = base
    for producers in layout.outputs:
        for p in producers:
            for c_local, h_local, flat in p.flat_rows():
                key, mask = keys[p.label][p.part(c_local, h_local)]
                entry = p.row_entry(c_local, h_local, flat + offset)
                rows.append([entry[0] | key, entry[1] | mask] + entry[2:])
        offset += int(np.prod(producers[0].tensor))
    return np.array(rows, dtype=np.uint32).reshape(-1)




Source = Tuple[str, int]  # (sender label, partition)


def _trx_entries(b: "_Builder", reader: str, sources: List[Producer], dst: Tuple[int, int, int, int, int, int],
                 buffer: int) -> Tuple[List[List[int]], List[Source]]:
    """Generic receive entries (key and mask left 0) for the sources' blocks that overlap
    the destination block (c0, h0, w0, nc, nh, nw), one per partition of a source that
    carries rows of the overlap; returns them with their (source label, partition)."""
    c0, h0, w0, nc, nh, nw = dst
    entries, labels = [], []
    for s in sources:
        if (s.c0 >= c0 + nc or s.c0 + s.nc <= c0 or s.h0 >= h0 + nh or s.h0 + s.nh <= h0
                or s.w0 >= w0 + nw or s.w0 + s.nw <= w0):
            continue
        parts = {b.read(s, reader, c - s.c0, h - s.h0)
                 for c in range(max(c0, s.c0), min(c0 + nc, s.c0 + s.nc))
                 for h in range(max(h0, s.h0), min(h0 + nh, s.h0 + s.nh))}
        for part in sorted(parts):
            entries.append(trx_entry(0, 0, s.slot_shift, s.c_shift, s.h_shift, s.c0, s.h0, s.w0, s.nw,
                                     c0, h0, w0, nc, nh, nw, buffer, s.packing))
            labels.append((s.label, part))
    return entries, labels


def _tensor_fixups(fixups, labels: List[Source], own: str) -> List[Fixup]:
    """configs.tensor fix-ups (word, "key"|"mask", entry index|"self") -> mapper fix-ups (the
    kernel's own key: its partition 0)."""
    out: List[Fixup] = []
    for word, what, src in fixups:
        label, part = (own, 0) if src == "self" else labels[src]
        out.append((word, label, FIX_KEY if what == "key" else FIX_MASK, part))
    return out


def _add_vertex(b: "_Builder", label: str, kind: int, slot_shift: int, config: np.ndarray,
                fixups, labels: List[Source]) -> None:
    """A tensor kernel vertex, its edges from its sources and its mapper fix-ups."""
    for src in dict.fromkeys(src for src, _ in labels):
        b.edges.append((src, label))
    b.vertices.append(VertexSpec(label=label, kind=KERNEL, n_keys=_n_keys(slot_shift), lost_bit=_lost_bit(slot_shift),
                                 binary=KERNEL_BINARIES[kind],
                                 config=config, key_fixups=_tensor_fixups(fixups, labels, label),
                                 sdram_bytes=4 * len(config)))
    b.core_kinds[label] = kind


def _add_tensor_op(b: "_Builder", i: int, plan, inputs: List[List[Producer]]) -> List[Producer]:
    q = plan.qop
    op = q.op
    in_c, in_h, in_w = q.in_shapes[0]
    out_c, out_h, out_w = q.out_shape
    producers = []
    partials: List[str] = []  # partial-sum tiles of the current output block
    block_index = {blk: k for k, blk in enumerate(plan.blocks)}
    for t in plan.tiles:
        block = block_index[plan.block_of(t)]
        label = f"{b.prefix}L{i}_t{block}_{len(partials)}"
        slot_shift, c_shift, h_shift = block_key_layout(t.nc, t.nh, out_w)
        common = dict(n_slots=res.n_slots(), out_slot_shift=slot_shift, out_c_shift=c_shift, out_h_shift=h_shift)
        oc = slice(t.c0, t.c0 + t.nc)
        if isinstance(op, Conv2D):
            depthwise = op.channel_multiplier  # 0: dense
            ic0, n_ic = depthwise_inputs(t.c0, t.nc, depthwise) if depthwise else (t.ic0, t.nic or in_c)
            rx, labels = _trx_entries(b, label, inputs[0], (ic0, t.ih0, 0, n_ic, t.nih, in_w), 0)
            finish = dict(activation=op.activation, bias=q.bias[oc], multiplier=q.multiplier[oc], shift=q.shift[oc],
                          act_params=q.act_params)
            if plan.pool is not None:  # send the pool's rows [ph0, ph0 + nph) of these channels
                pool_op, (pool_c, pool_h, pool_w) = plan.pool.op, plan.pool.out_shape
                slot_shift, c_shift, h_shift = block_key_layout(t.nc, t.nph, pool_w)
                common.update(out_slot_shift=slot_shift, out_c_shift=c_shift, out_h_shift=h_shift)
                finish["pool"] = dict(
                    conv_h=out_h, ph0=t.ph0, n_ph=t.nph, out_w=pool_w, kh=pool_op.kernel[0], kw=pool_op.kernel[1],
                    sh=pool_op.stride[0], sw=pool_op.stride[1], pad_top=pool_op.padding[0],
                    pad_left=pool_op.padding[1], pad_bottom=pool_op.padding[2], pad_right=pool_op.padding[3],
                    mode=pool_op.kind, count_include_pad=pool_op.count_include_pad)
            if t.nic:  # partial sums of one input-channel group, one int32 per packet
                slot_shift, c_shift, h_shift = partial_key_layout(t.nc, t.nh, out_w)
                common.update(out_slot_shift=slot_shift, out_c_shift=c_shift, out_h_shift=h_shift)
                finish = dict(activation="none", bias=None, multiplier=None, shift=None,
                              partial_shift=plan.partial_shift, act_params=None)
            config, fixups = conv_config(
                n_ic=n_ic, in_h=in_h, in_w=in_w, ic0=ic0, ih0=t.ih0, n_ih=t.nih, oc0=t.c0, oh0=t.h0,
                n_oh=t.nh, out_w=out_w, sh=op.stride[0], sw=op.stride[1], pad_top=op.padding[0],
                pad_left=op.padding[1], depthwise=depthwise, rx=rx,
                weights=q.weight[oc] if depthwise else q.weight[oc, ic0:ic0 + n_ic],
                **finish, **common)
            kind = CORE_CONV
        elif isinstance(op, Pool2D):
            rx, labels = _trx_entries(b, label, inputs[0], (t.c0, t.ih0, 0, t.nc, t.nih, in_w), 0)
            config, fixups = pool_config(
                n_c=t.nc, in_h=in_h, in_w=in_w, c0=t.c0, ih0=t.ih0, n_ih=t.nih, oh0=t.h0, n_oh=t.nh,
                out_w=out_w, kh=op.kernel[0], kw=op.kernel[1], sh=op.stride[0], sw=op.stride[1],
                pad_top=op.padding[0], pad_left=op.padding[1], pad_bottom=op.padding[2],
                pad_right=op.padding[3], mode=op.kind, count_include_pad=op.count_include_pad, rx=rx, **common)
            kind = CORE_POOL
        else:  # Add
            dst = (t.c0, t.h0, 0, t.nc, t.nh, in_w)
            rx_a, labels_a = _trx_entries(b, label, inputs[0], dst, 0)
            rx_b, labels_b = _trx_entries(b, label, inputs[1], dst, 1)
            if {s for s, _ in labels_a} & {s for s, _ in labels_b}:  # a receive table matches each key once
                raise UnsupportedError(f"{q.name}: both operands come from the same cores ({labels_a[0][0]}); "
                                       "an add of a tensor to itself runs on the host")
            rx, labels = rx_a + rx_b, labels_a + labels_b
            config, fixups = add_config(
                c0=t.c0, n_c=t.nc, h=in_h, w=in_w, h0=t.h0, n_h=t.nh, activation=op.activation,
                mult_a=int(q.multiplier[0]), mult_b=int(q.multiplier[1]), shift=int(q.shift[0]), rx=rx,
                act_params=q.act_params, **common)
            kind = CORE_ADD
        _add_vertex(b, label, kind, slot_shift, config, fixups, labels)
        if t.nic:
            b.sends(label, t.nc * t.nh * out_w, (t.h0 + t.nh / 2) / out_h)  # partial sums: an int32 a key
            partials.append(label)
            if t.ic0 + t.nic < in_c:
                continue  # the block's other groups come next
            in_shifts = dict(zip(("in_slot_shift", "in_c_shift", "in_h_shift"), (slot_shift, c_shift, h_shift)))
            label = f"{b.prefix}L{i}_r{block}"
            slot_shift, c_shift, h_shift = block_key_layout(t.nc, t.nh, out_w)
            config, fixups = conv_reduce_config(
                oc0=t.c0, n_oc=t.nc, oh0=t.h0, n_oh=t.nh, out_w=out_w, n_groups=len(partials),
                partial_shift=plan.partial_shift, activation=op.activation, n_slots=res.n_slots(),
                out_slot_shift=slot_shift, out_c_shift=c_shift, out_h_shift=h_shift, n_rx=len(partials),
                bias=q.bias[oc], multiplier=q.multiplier[oc], shift=q.shift[oc],
                acc_bound=acc_bounds(q)[oc], act_params=q.act_params, **in_shifts)
            _add_vertex(b, label, CORE_CONV_REDUCE, slot_shift, config, fixups, [(p, 0) for p in partials])
            partials = []
        if plan.pool is not None:
            producers.append(b.producer(label, t.c0, t.nc, t.ph0, t.nph, 0, pool_w, slot_shift, c_shift, h_shift,
                                        (pool_c, pool_h, pool_w)))
        else:
            producers.append(b.producer(label, t.c0, t.nc, t.h0, t.nh, 0, out_w, slot_shift, c_shift, h_shift,
                                        (out_c, out_h, out_w)))
    return producers


def _concatenated(q, inputs: List[List[Producer]]) -> List[Producer]:
    """The producers of a channel concat: each operand's, shifted to its channel offset in
    the (C, H, W) result (their keys do not change: they are block-local)."""
    out, offset = [], 0
    labels = [p.label for producers in inputs for p in producers]
    if len(labels) != len(set(labels)):  # a receive table matches each key once
        raise UnsupportedError(f"{q.name}: the same values twice in one concat")
    for producers, shape in zip(inputs, q.in_shapes):
        out += [replace(p, c0=p.c0 + offset, tensor=tuple(q.out_shape)) for p in producers]
        offset += shape[0]
    return out


def _drop_unread(b: _Builder) -> None:
    """Drop kernel vertices whose values nothing reads (e.g. the rows between a strided
    reader's windows), then those that fed only them: the toolchain gives a vertex that
    sends on no edge no key, and its packets would have no route."""
    while True:
        senders = {pre for pre, _ in b.edges}
        dead = {v.label for v in b.vertices if v.kind == KERNEL and v.label not in senders}
        if not dead:
            return
        b.vertices = [v for v in b.vertices if v.label not in dead]
        b.edges = [(pre, post) for pre, post in b.edges if post not in dead]
        for label in dead:
            del b.core_kinds[label]


def _row_partitions(b: _Builder, kind: str = KERNEL) -> Dict[str, Tuple[int, ...]]:
    """label -> the partition of each row of its block, for every vertex of ``kind`` whose rows
    go to different sets of cores: one partition per set of readers, numbered in row order."""
    alive = {v.label: v.kind for v in b.vertices}
    parts: Dict[str, Tuple[int, ...]] = {}
    for src, n_rows in b.rows.items():
        if alive.get(src) != kind or n_rows <= 1:
            continue
        readers = {dst: rows for dst, rows in b.reads.get(src, {}).items() if dst in alive}
        dests = [frozenset(d for d, rows in readers.items() if r in rows) for r in range(n_rows)]
        # a row nothing reads still leaves the core (every packet needs a route): it rides
        # with the row before it
        last = next((d for d in dests if d), frozenset())
        for r, d in enumerate(dests):
            last = dests[r] = d or last
        index: Dict[frozenset, int] = {}
        row_parts = tuple(index.setdefault(d, len(index)) for d in dests)
        # the planner sized every reader's receive table for this many entries per producer
        fits = all(len({row_parts[r] for r in rows}) <= MAX_PARTITIONS_PER_READER for rows in readers.values())
        if len(index) > 1 and fits:
            parts[src] = row_parts
    return parts


def _input_blocks(row_parts: Tuple[int, ...], c: int, h: int) -> Optional[List[Tuple[int, int, int, int]]]:
    """The (c0, nc, h0, nh) block of each partition of a (c, h, *) input's rows (c-major), or
    None if one is not a block (the input then stays one vertex)."""
    blocks = []
    for k in range(max(row_parts) + 1):
        rows = [r for r, part in enumerate(row_parts) if part == k]
        cs, hs = sorted({r // h for r in rows}), sorted({r % h for r in rows})
        block = (cs[0], len(cs), hs[0], len(hs))
        if len(rows) != block[1] * block[3] or cs[-1] - cs[0] + 1 != len(cs) or hs[-1] - hs[0] + 1 != len(hs):
            return None
        blocks.append(block)
    return blocks


def _input_splits(b: _Builder, qgraph, max_inputs: int) -> Dict[str, List[Tuple[int, int, int, int]]]:
    """Graph input label -> the blocks of rows it is cut into: one live input vertex per set
    of readers (a row band with its halos, a channel group), so that each input packet goes
    only to the cores that read it, as a kernel's partitions do (a live input sends on one
    key: the toolchain's ReverseIPTagMulticastSource takes one partition). At most
    ``max_inputs`` live inputs in all."""
    splits = {}
    n_inputs = len(qgraph.input_shapes)
    for label, row_parts in _row_partitions(b, INPUT).items():
        c, h, _ = b.input_shapes[label]
        blocks = _input_blocks(row_parts, c, h)
        if not blocks:
            continue
        readers = [{d for d, rows in b.reads[label].items()
                    if any(row_parts[r] == k for r in rows)} for k in range(len(blocks))]
        blocks = _merge_blocks(blocks, readers, max_inputs - n_inputs + 1)
        if blocks and len(blocks) > 1:
            splits[label] = blocks
            n_inputs += len(blocks) - 1
    return splits


def _merge_blocks(blocks: List[Tuple[int, int, int, int]], readers: List[Set[str]], limit: int
                  ) -> Optional[List[Tuple[int, int, int, int]]]:
    """Merge neighbouring blocks (c0, nc, h0, nh) until at most ``limit`` remain, each time the
    pair whose merge delivers the fewest extra rows (a merged block goes to both blocks'
    readers); None if no two left can merge."""
    blocks, readers = list(blocks), [set(r) for r in readers]
    while len(blocks) > limit:
        best = None
        for i, (c0, nc, h0, nh) in enumerate(blocks):
            for j, (d0, nd, g0, ng) in enumerate(blocks):
                side = (c0 == d0 and nc == nd and h0 + nh == g0) or (h0 == g0 and nh == ng and c0 + nc == d0)
                if not side:
                    continue
                extra = nc * nh * len(readers[j] - readers[i]) + nd * ng * len(readers[i] - readers[j])
                if best is None or extra < best[0]:
                    best = (extra, i, j)
        if best is None:
            return None
        _, i, j = best
        (c0, nc, h0, nh), (d0, nd, g0, ng) = blocks[i], blocks[j]
        blocks[i] = (c0, nc, h0, nh + ng) if c0 == d0 and nc == nd else (c0, nc + nd, h0, nh)
        readers[i] |= readers[j]
        del blocks[j], readers[j]
    return blocks


def _build(plan: GraphPlan, prefix: str, parts: Optional[Dict[str, Tuple[int, ...]]],
           splits: Optional[Dict[str, List[Tuple[int, int, int, int]]]] = None):
    """One pass of the builder: (builder, graph inputs (a list of block Producers each),
    outputs of the distinct results, their start offsets, the offset of each result)."""
    qgraph = plan.qgraph
    b = _Builder(prefix, parts)
    graph_inputs: List[List[Producer]] = []
    for k, (c, h, w) in enumerate(qgraph.input_shapes):
        label = prefix + INPUT_LABEL + (str(k) if k else "")
        b.input_shapes[label] = (c, h, w)
        blocks = (splits or {}).get(label, [(0, c, 0, h)])
        fmt = qgraph.input_format(k)  # 8-bit input: four values a key
        graph_inputs.append([])
        for j, (c0, nc, h0, nh) in enumerate(blocks):
            block_label = label if j == 0 else f"{label}_b{j}"
            slot_shift, c_shift, h_shift = block_key_layout(nc, nh, w, fmt.values_per_packet)
            b.vertices.append(VertexSpec(label=block_label, kind=INPUT, n_keys=res.n_slots() << slot_shift))
            graph_inputs[k].append(b.producer(block_label, c0, nc, h0, nh, 0, w, slot_shift, c_shift, h_shift,
                                              (c, h, w), packing=fmt.packing))
    outputs: List[List[Producer]] = []
    for i, (q, p) in enumerate(zip(qgraph.ops, plan.plans)):
        inputs = [graph_inputs[input_number(j)] if j < 0 else outputs[j]
                  for j in op_inputs([x.op for x in qgraph.ops], i)]
        if isinstance(q.op, Concat):  # routing only: the operands' producers at channel offsets
            outputs.append(_concatenated(q, inputs))
        elif p is None:  # flatten: consumers read the producers' blocks as a flat vector
            outputs.append(inputs[0])
        elif isinstance(p, FusedPool):  # the convolution's tiles send this pool's output
            outputs.append(outputs[p.conv_index])
        elif isinstance(p, LayerPlan):
            outputs.append(b.add_layer(i, p, inputs[0]))
        else:
            outputs.append(_add_tensor_op(b, i, p, inputs))
    b.vertices.append(VertexSpec(label=OUTPUT_LABEL, kind=OUTPUT))  # the board's one gatherer (merge_graphs)
    distinct = list(dict.fromkeys(qgraph.outputs))
    starts = np.concatenate([[0], np.cumsum([int(np.prod(qgraph.ops[o].out_shape)) for o in distinct])])
    results = [outputs[o] for o in distinct]
    senders = [p.label for producers in results for p in producers]
    if len(senders) != len(set(senders)):  # the gatherer decodes each key into one place only
        raise UnsupportedError(f"{qgraph.name or 'offloaded function'}: two of its results are the same "
                               "values (e.g. a tensor and its flatten)")
    for producers in results:
        for p in producers:
            for c_local, h_local, _ in p.flat_rows():
                b.read(p, OUTPUT_LABEL, c_local, h_local)
    b.edges += [(label, OUTPUT_LABEL) for label in senders]
    _drop_unread(b)
    return b, graph_inputs, results, starts, [int(starts[distinct.index(o)]) for o in qgraph.outputs]


def _partition_specs(b: _Builder) -> List[PartitionSpec]:
    """Every sender's partitions and the cores each goes to; a kernel with several gets its
    row-key table (spinn_tensor.h spinn_block_keys_t) after its config."""
    alive = {v.label for v in b.vertices}
    edges: Dict[str, List[str]] = {}
    for pre, post in b.edges:
        edges.setdefault(pre, []).append(post)
    specs = []
    for v in b.vertices:
        if v.label not in edges:
            continue
        row_parts = b.parts.get(v.label)
        per_row = b.row_packets.get(v.label, 0)
        if not row_parts:
            specs.append(PartitionSpec(v.label, 0, list(dict.fromkeys(edges[v.label])), b.rows.get(v.label, 0) * per_row))
            continue
        reads = {dst: rows for dst, rows in b.reads[v.label].items() if dst in alive}
        for k in range(max(row_parts) + 1):
            rows = {r for r, part in enumerate(row_parts) if part == k}
            specs.append(PartitionSpec(v.label, k, [dst for dst in dict.fromkeys(edges[v.label])
                                                    if reads.get(dst, set()) & rows], len(rows) * per_row))
        at = len(v.config) + 1
        v.config = np.concatenate([v.config, np.zeros(1 + len(row_parts), np.uint32)])
        v.config[at - 1] = len(row_parts)
        v.key_fixups = v.key_fixups + [(at + r, v.label, FIX_KEY, part) for r, part in enumerate(row_parts)]
        v.sdram_bytes = 4 * len(v.config)
    return specs


def _placement_order(b: _Builder) -> List[VertexSpec]:
    """The vertices in the order the toolchain's placer should take them: the live inputs,
    then the kernels by the middle of the rows they send (0 the top of their tensor, 1 the
    bottom; those of all rows, such as dense tiles, in the middle), then the output. The
    placer (PACMAN's application placer) fills a chip, then its neighbours, in the order
    the vertices come: so a row band's tiles of consecutive layers share a chip or sit on
    neighbouring ones, and most of their packets cross no chip-to-chip link, where by layer
    the tiles of one layer fill a chip and all their packets leave it on one or two links.
    Ties keep the build order (layer by layer)."""
    order = {v.label: i for i, v in enumerate(b.vertices)}
    return sorted(b.vertices, key=lambda v: (v.kind != INPUT, v.kind == OUTPUT, b.position.get(v.label, 0.5),
                                             order[v.label]))


def build_machine_graph(plan: GraphPlan, prefix: str = "", max_inputs: int = MAX_LIVE_INPUTS) -> GraphLayout:
    """The machine graph of a tiled operator graph, with one live input vertex per graph
    input and the live output vertex; vertex labels start with ``prefix`` (functions
    sharing one board). Built twice: the first pass finds which cores read which rows of
    each kernel, the second sends each set of rows on its own partition. ``max_inputs``:
    live input vertices the graph inputs may be cut into (the emulator's limit per program,
    shared by the copies of a function), and at most the board's cores beyond the plan's
    (which counts one per graph input)."""
    parts = splits = None
    max_inputs = min(max_inputs, len(plan.qgraph.input_shapes) + max(0, plan.board.app_cores - plan.n_cores))
    with res.slots(plan.n_slots):
        if SPLIT_PARTITIONS:
            first = _build(plan, prefix, None)[0]
            parts, splits = _row_partitions(first), _input_splits(first, plan.qgraph, max_inputs)
        b, graph_inputs, results, starts, offsets = _build(plan, prefix, parts, splits)
    if PLACE_BY_ROWS:
        b.vertices = _placement_order(b)
    spec = MachineGraphSpec(b.vertices, b.edges, board_version=plan.board.version,
                            boards=plan.board.boards, partitions=_partition_specs(b))
    return GraphLayout(spec, b.core_kinds, [p for ps in graph_inputs for p in ps], OUTPUT_LABEL, results, offsets,
                       int(starts[-1]), [k for k, ps in enumerate(graph_inputs) for _ in ps])
