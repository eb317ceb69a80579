"""Config regions of the tensor kernels (conv, conv reduce, pool, add).

The layouts are those of ``c_runtime/include/spinn_tensor.h``. Every encoder returns
``(config, fixups)``: ``config`` the uint32 words of the kernel's config region and
``fixups`` a list of ``(word index, "key" | "mask", rx entry index | "self")`` naming
the words the mapper fills in once the toolchain allocated keys (the key and mask of
receive entry i come from that entry's source vertex; ``"self"`` is the kernel's own
base key). The encoders leave those words 0 (``out_key`` may be given).

Keys of a producer's block (c0, nc) x (h0, nh) x (w0, nw) are
``base | slot << slot_shift | (c - c0) << c_shift | (h - h0) << h_shift | (w - w0) // 2``
with ``h_shift <= c_shift <= slot_shift``; :func:`block_key_layout` gives the minimal
shifts and the block then needs ``n_slots << slot_shift`` keys. A partial conv tile (one
input-channel group of a convolution) sends one int32 partial sum per key, the column
``w - w0`` in place of the pair (:func:`partial_key_layout`); a conv reduce tile adds the
groups' partial sums and finishes the convolution.
What the kernels compute is :mod:`tvm_spinn.quantization.reference`.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from ...kernels import ADD_ACTIVATIONS
from ...quantization.fixed_point import ACT_CODES, AVG_RECIP_SHIFT, avg_recip
from ...quantization.input_format import PACK_INT8, PACK_INT16, PACK_SHIFT, PACK_UINT8
from .dense import pack_int16, row_params, table_words

TRX_WORDS = 16
KIND_CONV, KIND_POOL, KIND_ADD, KIND_CONV_REDUCE = 0x5D03, 0x5D04, 0x5D05, 0x5D06  # spinn_tensor.h
CORE_CONV, CORE_POOL, CORE_ADD, CORE_CONV_REDUCE = 4, 5, 6, 7  # spinn_emulator.h
POOL_MAX, POOL_AVG = 0, 1
CONV_HEADER_WORDS, POOL_HEADER_WORDS, ADD_HEADER_WORDS, CONV_REDUCE_HEADER_WORDS = 29, 27, 17, 18
CONV_OUT_KEY_WORD, POOL_OUT_KEY_WORD, ADD_OUT_KEY_WORD, CONV_REDUCE_OUT_KEY_WORD = 21, 22, 12, 13
CONV_DEPTHWISE_WORD = 18  # the channel multiplier (0: not depthwise)
CONV_REDUCE_RX_WORDS = 2  # key, mask
CONV_FINAL, CONV_PARTIAL, CONV_POOLED = 0, 1, 2  # conv tile modes (header word 25)
CONV_MODE_WORD = 25
CONV_POOL_WORDS = 15  # the pooled mode's pool section (spinn_tensor.h SPINN_CONV_POOL_WORDS)
POOL_KEYS = ("conv_h", "ph0", "n_ph", "out_w", "kh", "kw", "sh", "sw", "pad_top", "pad_left", "pad_bottom",
             "pad_right", "mode", "count_include_pad")  # conv_config's pool dict (and recip_shift, optional)
MAX_PARTIAL_SHIFT, MAX_REDUCE_PARTIAL_SHIFT = 62, 32  # conv tile; conv reduce (shifted sum in int64)
PARTIAL_SUM_BITS = 30  # the planner keeps |whole accumulator| < 2**(30 + partial_shift)
MAX_DIM = 0xFFFF
MAX_SLOTS = 16
MAX_WORKSPACE = 0x10000000  # SPINN_TENSOR_MAX_WORKSPACE
FIX_KEY, FIX_MASK, FIX_SELF = "key", "mask", "self"  # as tvm_spinn.machine_graph

Fixups = List[Tuple[int, str, Union[int, str]]]
Pad = Union[int, Sequence[int]]


# ---------------------------------------------------------------------------
# keys and receive entries

def ceil_log2(n: int) -> int:
    """Bits needed to hold 0..n-1 (0 for n <= 1)."""
    return max(int(n) - 1, 0).bit_length()


def block_key_layout(nc: int, nh: int, nw: int, per_packet: int = 2) -> Tuple[int, int, int]:
    """Minimal (slot_shift, c_shift, h_shift) of a producer block of nc x nh x nw values,
    ``per_packet`` values a key (2 int16; 4 8-bit values of a live input, input_format)."""
    h_shift = ceil_log2(-(-int(nw) // int(per_packet)))
    c_shift = h_shift + ceil_log2(nh)
    return c_shift + ceil_log2(nc), c_shift, h_shift


def partial_key_layout(nc: int, nh: int, nw: int) -> Tuple[int, int, int]:
    """Minimal (slot_shift, c_shift, h_shift) of a partial conv tile's block of nc x nh x nw
    int32 partial sums, one per key: the fields of a block twice as wide."""
    return block_key_layout(nc, nh, 2 * int(nw))


def block_n_keys(slot_shift: int, n_slots: int) -> int:
    """Keys a producer block reserves (n_slots rounded up to a power of two)."""
    return (1 << ceil_log2(n_slots)) << int(slot_shift)


def _check_fields(what: str, slot_shift: int, c_shift: int, h_shift: int,
                  nc: Optional[int] = None, nh: Optional[int] = None, nw: Optional[int] = None,
                  n_slots: Optional[int] = None) -> None:
    if not 0 <= h_shift <= c_shift <= slot_shift <= 31:
        raise ValueError(f"{what}: key shifts must satisfy 0 <= h_shift <= c_shift <= slot_shift <= 31, "
                         f"got {(slot_shift, c_shift, h_shift)}")
    if nc is not None and (nc - 1) >> (slot_shift - c_shift):
        raise ValueError(f"{what}: {nc} channels do not fit {slot_shift - c_shift} channel key bits")
    if nh is not None and (nh - 1) >> (c_shift - h_shift):
        raise ValueError(f"{what}: {nh} rows do not fit {c_shift - h_shift} row key bits")
    if nw is not None and ((nw + 1) // 2 - 1) >> h_shift:
        raise ValueError(f"{what}: {nw} columns do not fit {h_shift} pair key bits")
    if n_slots is not None and (n_slots - 1) << slot_shift > 0xFFFFFFFF:
        raise ValueError(f"{what}: {n_slots} slots do not fit above slot_shift {slot_shift}")


def trx_entry(key: int, mask: int, slot_shift: int, c_shift: int, h_shift: int,
              src_c0: int, src_h0: int, src_w0: int, src_nw: int,
              dst_c0: int, dst_h0: int, dst_w0: int, dst_nc: int, dst_nh: int, dst_nw: int,
              buffer: int = 0, packing: int = PACK_INT16) -> List[int]:
    """One generic receive entry (SPINN_TRX_WORDS words, spinn_tensor.h order); ``packing``
    (quantization.input_format: 8-bit values from a live input) rides in the slot_shift word."""
    words = [int(v) for v in (key, mask, slot_shift, c_shift, h_shift, src_c0, src_h0, src_w0, src_nw,
                              dst_c0, dst_h0, dst_w0, dst_nc, dst_nh, dst_nw, buffer)]
    _check_fields("receive entry", words[2], words[3], words[4])
    if any(not 0 <= v <= MAX_DIM for v in words[5:15]):
        raise ValueError(f"receive entry: block coordinates and sizes must be in [0, {MAX_DIM}]: {words[5:15]}")
    if min(dst_nc, dst_nh, dst_nw) < 1 or buffer not in (0, 1):
        raise ValueError("receive entry: empty destination block or buffer not 0/1")
    if key & ~mask & 0xFFFFFFFF:
        raise ValueError("receive entry: key has bits outside mask")
    if packing not in (PACK_INT16, PACK_INT8, PACK_UINT8):
        raise ValueError(f"receive entry: unknown packing {packing}")
    words[2] |= int(packing) << PACK_SHIFT
    return [v & 0xFFFFFFFF for v in words]


def _entry_fixups(header: int, n_rx: int, entry_words: int, own_key_word: int) -> Fixups:
    """Fix-ups of n_rx receive entries starting with (key, mask) after the header, and of
    the kernel's own key."""
    fixups: Fixups = []
    for i in range(n_rx):
        at = header + entry_words * i
        fixups += [(at, FIX_KEY, i), (at + 1, FIX_MASK, i)]
    return fixups + [(own_key_word, FIX_KEY, FIX_SELF)]


def _rx_words(rx: Sequence[Sequence[int]], header: int, own_key_word: int) -> Tuple[List[int], Fixups]:
    words: List[int] = []
    for i, e in enumerate(rx):
        if len(e) != TRX_WORDS:
            raise ValueError(f"receive entry {i} has {len(e)} words, not {TRX_WORDS}")
        words += [int(v) & 0xFFFFFFFF for v in e]
    return words, _entry_fixups(header, len(rx), TRX_WORDS, own_key_word)


def _check_rx_dst(rx: Sequence[Sequence[int]], buffer: int, block: Tuple[int, ...], what: str) -> None:
    for i, e in enumerate(rx):
        if int(e[15]) == buffer and tuple(int(v) for v in e[9:15]) != block:
            raise ValueError(f"{what}: receive entry {i}'s dst block {tuple(e[9:15])} is not the kernel's "
                             f"buffer block {block} (dst_c0, dst_h0, dst_w0, dst_nc, dst_nh, dst_nw)")


def _act(activation: Union[str, int]) -> Tuple[str, int]:
    if isinstance(activation, str):
        return activation, ACT_CODES[activation]
    name = {v: k for k, v in ACT_CODES.items()}[int(activation)]
    return name, int(activation)


def _align8(n_bytes: int) -> int:
    return (int(n_bytes) + 7) & ~7


def _dims(what: str, **values: int) -> None:
    for k, v in values.items():
        if not 0 <= int(v) <= MAX_DIM:
            raise ValueError(f"{what}: {k}={v} outside [0, {MAX_DIM}]")


def _check_rows(what: str, oh0: int, n_oh: int, sh: int, pad_top: int, kh: int, in_h: int,
                ih0: int, n_ih: int) -> None:
    if n_ih < 1 or ih0 + n_ih > in_h:
        raise ValueError(f"{what}: buffered rows [{ih0}, {ih0 + n_ih}) not inside the input's {in_h} rows")
    for oh in range(oh0, oh0 + n_oh):
        lo, hi = max(0, oh * sh - pad_top), min(in_h, oh * sh - pad_top + kh)
        if hi > lo and (lo < ih0 or hi > ih0 + n_ih):
            raise ValueError(f"{what}: output row {oh} reads input rows [{lo}, {hi}), not all buffered "
                             f"([{ih0}, {ih0 + n_ih}))")


# ---------------------------------------------------------------------------
# encoders

def _finish_params(what: str, n: int, bias: Optional[np.ndarray], multiplier: Optional[np.ndarray],
                   shift: Optional[np.ndarray], acc_bound: Sequence[int]) -> np.ndarray:
    """The per-channel {bias lo, bias hi, multiplier, shift} words of a tile that requantises
    its n channels, after checking |(acc + bias) * multiplier| < 2**62 for every |acc| up to
    the channel's acc_bound (exact int64 requantisation)."""
    if bias is None or multiplier is None or shift is None:
        raise ValueError(f"{what}: bias, multiplier and shift are needed to requantise")
    bias = np.asarray(bias, np.int64).reshape(-1)
    multiplier = np.asarray(multiplier, np.int64).reshape(-1)
    shift = np.asarray(shift, np.int64).reshape(-1)
    if not (len(bias) == len(multiplier) == len(shift) == n):
        raise ValueError(f"{what}: bias, multiplier and shift need one value per output channel ({n})")
    if np.any(shift < 0) or np.any(shift > 63) or np.any(np.abs(multiplier) >= 1 << 31):
        raise ValueError(f"{what}: shift must be in [0, 63] and multiplier int32")
    if any((abs(int(b)) + int(a)) * abs(int(m)) >= 1 << 62 for b, a, m in zip(bias, acc_bound, multiplier)):
        raise ValueError(f"{what}: |acc * multiplier| may reach 2**62 (int64 requantisation overflow)")
    return row_params(bias, multiplier, shift)


def depthwise_inputs(oc0: int, n_oc: int, multiplier: int) -> Tuple[int, int]:
    """(ic0, n_ic): the input channels output channels [oc0, oc0 + n_oc) of a depthwise conv
    with channel multiplier k read (output channel oc reads input channel oc // k)."""
    ic0 = oc0 // multiplier
    return ic0, (oc0 + n_oc - 1) // multiplier - ic0 + 1


BLOCK_ABS_MAX = (2**31 - 1) // 32768  # sum |w| of an int32 block: sum |w| * 32768 <= 2**31 - 1


def conv_accumulation_block(w: np.ndarray) -> int:
    """The conv tile's int32 accumulation block, in weight words (int16 pairs): a block
    length b such that every aligned block of b words of every channel's (n_oc, n) weights
    (padded to an even n) has sum |w| <= BLOCK_ABS_MAX, so that its sum of products cannot
    overflow int32 for any int16 input (the kernel checks it again). The whole row when it
    is provable, else the longest b from 1 up before one fails; 0 (int64 accumulation)
    when not even one word is."""
    a = np.abs(np.asarray(w, np.int64))
    if a.shape[1] % 2:
        a = np.concatenate([a, np.zeros((a.shape[0], 1), np.int64)], axis=1)
    pairs = a[:, 0::2] + a[:, 1::2]
    words = pairs.shape[1]
    prefix = np.concatenate([np.zeros((a.shape[0], 1), np.int64), np.cumsum(pairs, axis=1)], axis=1)

    def proved(b: int) -> bool:
        starts = np.arange(0, words, b)
        return bool((prefix[:, np.minimum(starts + b, words)] - prefix[:, starts]).max() <= BLOCK_ABS_MAX)

    if proved(words):
        return words
    best = 0
    for b in range(1, words):
        if not proved(b):
            break
        best = b
    return best


def conv_config(*, n_ic: int, in_h: int, in_w: int, ic0: int, ih0: int, n_ih: int, oc0: int, oh0: int,
                n_oh: int, out_w: int, sh: int, sw: int, pad_top: int, pad_left: int, depthwise: Union[bool, int],
                activation: Union[str, int], n_slots: int, out_slot_shift: int, out_c_shift: int,
                out_h_shift: int, rx: Sequence[Sequence[int]], weights: np.ndarray,
                bias: Optional[np.ndarray] = None, multiplier: Optional[np.ndarray] = None,
                shift: Optional[np.ndarray] = None, out_key: int = 0,
                n_oc: Optional[int] = None, kh: Optional[int] = None, kw: Optional[int] = None,
                partial_shift: Optional[int] = None, pool: Optional[dict] = None,
                act_params: Optional[np.ndarray] = None) -> Tuple[np.ndarray, Fixups]:
    """Conv tile config. weights int16 (n_oc, depthwise ? 1 : n_ic, kh, kw) of this tile's
    output channels; bias int64, multiplier and shift per output channel (n_oc,).

    depthwise: False/0 dense over the n_ic input channels; True/1 or an int k >= 1 a depthwise
    conv with channel multiplier k (output channel oc reads input channel oc // k): the tile's
    input channels must be those its outputs read, (ic0, n_ic) = :func:`depthwise_inputs`.

    partial_shift None: a final tile (requantised int16 outputs). An int: a partial tile of
    one input-channel group [ic0, ic0 + n_ic) sending the int32 partial sums
    round_shift(acc, partial_shift) to a conv reduce tile (:func:`conv_reduce_config`); it
    needs no bias, multiplier or shift (ignored), activation "none", not depthwise, the key
    fields of :func:`partial_key_layout`, and a partial_shift that keeps every rounded sum
    inside int32 for any int16 input (checked).

    pool (a dict, final tiles only): a pool fused into the tile (mode 2, "final then pooled").
    The tile computes its conv rows [oh0, oh0 + n_oh) as a final tile, keeps them, and sends
    instead rows [ph0, ph0 + n_ph) x out_w of a pool over the whole conv output (conv_h rows x
    this tile's out_w columns) of its channels, with the pool tile's semantics. Keys: conv_h,
    ph0, n_ph, out_w (the pool's output width), kh, kw, sh, sw, pad_top, pad_left, pad_bottom,
    pad_right, mode ("max"/"avg" or POOL_MAX/POOL_AVG), count_include_pad, and optionally
    recip_shift (AVG_RECIP_SHIFT). Every pool row's window must read only the tile's conv rows
    (:func:`window_input_rows` gives them), and the out_* key fields describe the block sent:
    n_oc x n_ph x the pool's out_w (:func:`block_key_layout`)."""
    w = np.asarray(weights)
    if w.ndim != 4:
        raise ValueError("conv weights must be (n_oc, n_ic_per_oc, kh, kw)")
    if np.any(w < -32768) or np.any(w > 32767):
        raise ValueError("conv weights must be int16")
    w = w.astype(np.int16)
    n_oc_w, n_icpo, kh_w, kw_w = w.shape
    n_oc = n_oc_w if n_oc is None else int(n_oc)
    kh = kh_w if kh is None else int(kh)
    kw = kw_w if kw is None else int(kw)
    m = int(depthwise)
    if not 0 <= m <= MAX_DIM:
        raise ValueError(f"conv tile: channel multiplier {m} outside [0, {MAX_DIM}]")
    if (n_oc, kh, kw) != (n_oc_w, kh_w, kw_w) or n_icpo != (1 if m else n_ic):
        raise ValueError(f"conv weights shape {w.shape} does not match n_oc={n_oc}, "
                         f"{'1 (depthwise)' if m else f'n_ic={n_ic}'}, kh={kh}, kw={kw}")
    partial, pooled = partial_shift is not None, pool is not None
    what = f"{'partial ' if partial else ''}conv tile{' (fused pool)' if pooled else ''} " \
           f"(oc0={oc0}, oh0={oh0}, ic0={ic0})"
    if partial and pooled:
        raise ValueError(f"{what}: a fused pool needs a final tile (no partial_shift)")
    _dims(what, n_ic=n_ic, in_h=in_h, in_w=in_w, ic0=ic0, ih0=ih0, n_ih=n_ih, oc0=oc0, n_oc=n_oc, oh0=oh0,
          n_oh=n_oh, out_w=out_w, kh=kh, kw=kw, sh=sh, sw=sw, pad_top=pad_top, pad_left=pad_left)
    if min(n_ic, in_h, in_w, n_oc, n_oh, out_w, kh, kw, sh, sw) < 1 or not 1 <= n_slots <= MAX_SLOTS:
        raise ValueError(f"{what}: sizes, strides and n_slots must be positive (n_slots <= {MAX_SLOTS})")
    if m and (ic0, n_ic) != depthwise_inputs(oc0, n_oc, m):
        raise ValueError(f"{what}: depthwise x{m} outputs [{oc0}, {oc0 + n_oc}) read the input channels "
                         f"(ic0, n_ic) = {depthwise_inputs(oc0, n_oc, m)}, not ({ic0}, {n_ic})")
    _check_rows(what, oh0, n_oh, sh, pad_top, kh, in_h, ih0, n_ih)
    pool_parts: List[np.ndarray] = []
    sent = (n_oh, 2 * out_w if partial else out_w)  # rows and columns of the block sent
    if pooled:
        pool_parts, sent = _fused_pool(what, pool, oh0, n_oh, out_w)
    _check_fields(what, out_slot_shift, out_c_shift, out_h_shift, n_oc, *sent, n_slots)
    name, code = _act(activation)
    _check_rx_dst(rx, 0, (ic0, ih0, 0, n_ic, n_ih, in_w), what)
    # |acc| <= sum |w| * 32768 per output channel, for any int16 input
    w_bound = [int(v) * 32768 for v in np.abs(w.astype(np.int64)).reshape(n_oc, -1).sum(1)]
    if partial:
        p = int(partial_shift)
        if m or name != "none" or not 0 <= p <= MAX_PARTIAL_SHIFT:
            raise ValueError(f"{what}: a partial tile is not depthwise, has activation none and "
                             f"partial_shift in [0, {MAX_PARTIAL_SHIFT}]")
        # round_shift(acc, p) = floor(acc / 2**p + 1/2) fits int32 iff |acc| / 2**p + 1/2 < 2**31
        worst = max(w_bound)
        if 2 * worst + (1 << p) >= 1 << (32 + p):
            raise ValueError(f"{what}: partial sums up to {worst} do not fit int32 after a rounding shift of "
                             f"{p} (needs at least {max(0, worst.bit_length() - 30)})")
        body = []
    else:
        p = 0
        body = [_finish_params(what, n_oc, bias, multiplier, shift, w_bound), table_words(name, act_params)]
    header = [KIND_CONV, n_ic, in_h, in_w, ic0, ih0, n_ih, oc0, n_oc, oh0, n_oh, out_w, kh, kw, sh, sw,
              pad_top, pad_left, m, code, n_slots, int(out_key), out_slot_shift,
              out_c_shift, out_h_shift, CONV_POOLED if pooled else CONV_PARTIAL if partial else CONV_FINAL, p,
              len(rx), conv_accumulation_block(w.reshape(n_oc, -1))]
    assert len(header) == CONV_HEADER_WORDS
    rx_words, fixups = _rx_words(rx, CONV_HEADER_WORDS, CONV_OUT_KEY_WORD)
    body = [pack_int16(w.reshape(n_oc, -1))] + body + pool_parts
    config = np.concatenate([np.array([int(v) & 0xFFFFFFFF for v in header + rx_words], np.uint32)] +
                            [np.asarray(b, np.uint32) for b in body])
    return config, fixups


def _fused_pool(what: str, pool: dict, oh0: int, n_oh: int, out_w: int) -> Tuple[List[np.ndarray], Tuple[int, int]]:
    """The pool section (and recip table) of a conv tile with a fused pool over its conv rows
    [oh0, oh0 + n_oh) x out_w, and the (rows, columns) of the block it sends."""
    missing = [k for k in POOL_KEYS if k not in pool]
    unknown = sorted(set(pool) - set(POOL_KEYS) - {"recip_shift"})
    if missing or unknown:
        raise ValueError(f"{what}: pool needs the keys {list(POOL_KEYS)} (and optionally recip_shift); "
                         f"missing {missing}, unknown {unknown}")
    q = {k: pool[k] if k in ("mode", "count_include_pad") else int(pool[k]) for k in POOL_KEYS}
    conv_h, ph0, n_ph, pool_w = q["conv_h"], q["ph0"], q["n_ph"], q["out_w"]
    words, recip = _pool_words(f"{what}, its pool (input: the conv's {conv_h} rows)", in_h=conv_h, in_w=out_w,
                               ih0=oh0, n_ih=n_oh, oh0=ph0, n_oh=n_ph, out_w=pool_w,
                               recip_shift=int(pool.get("recip_shift", AVG_RECIP_SHIFT)),
                               **{k: q[k] for k in POOL_KEYS[4:]})
    section = np.array([conv_h, ph0, n_ph, pool_w] + words, np.uint32)
    assert len(section) == CONV_POOL_WORDS
    return [section] + recip, (n_ph, pool_w)


def conv_reduce_config(*, oc0: int, n_oc: int, oh0: int, n_oh: int, out_w: int, n_groups: int,
                       partial_shift: int, activation: Union[str, int], n_slots: int, in_slot_shift: int,
                       in_c_shift: int, in_h_shift: int, out_slot_shift: int, out_c_shift: int,
                       out_h_shift: int, n_rx: int, bias: np.ndarray, multiplier: np.ndarray,
                       shift: np.ndarray, out_key: int = 0,
                       acc_bound: Union[int, Sequence[int], None] = None,
                       act_params: Optional[np.ndarray] = None) -> Tuple[np.ndarray, Fixups]:
    """Conv reduce tile config: adds the int32 partial sums of the n_groups partial conv tiles
    (one receive entry each, key and mask left to the fix-ups) of the output block
    (oc0, n_oc) x (oh0, n_oh) x out_w, whose keys have the fields in_* (:func:`partial_key_layout`),
    then finishes it as a final conv tile: activate(requantize(sum * 2**partial_shift + bias)).

    acc_bound: the largest |exact accumulator| (all groups, without bias) of any output channel
    (or one per channel), e.g. sum |w| * 32768; None: the planner's guarantee
    2**(30 + partial_shift) (tvm_spinn.tiling.tensor.partial_shift). The encoder proves from it
    that the groups' rounded sums add up inside int32 and that requantisation stays exact."""
    what = f"conv reduce tile (oc0={oc0}, oh0={oh0})"
    _dims(what, oc0=oc0, n_oc=n_oc, oh0=oh0, n_oh=n_oh, out_w=out_w)
    if min(n_oc, n_oh, out_w, n_groups) < 1 or not 1 <= n_slots <= MAX_SLOTS or n_groups > MAX_DIM:
        raise ValueError(f"{what}: sizes and n_groups must be positive and n_slots in [1, {MAX_SLOTS}]")
    if n_rx != n_groups:
        raise ValueError(f"{what}: {n_rx} receive entries for {n_groups} groups (one entry per partial tile)")
    p = int(partial_shift)
    if not 0 <= p <= MAX_REDUCE_PARTIAL_SHIFT:
        raise ValueError(f"{what}: partial_shift must be in [0, {MAX_REDUCE_PARTIAL_SHIFT}]")
    values = n_oc * n_oh * out_w
    workspace = _align8(4 * values * n_slots) + _align8(4 * (n_slots * n_oh + 3 * n_slots))  # sums, stream
    if values * n_groups > MAX_WORKSPACE or workspace > MAX_WORKSPACE:
        raise ValueError(f"{what}: {n_groups} groups of {n_oc} x {n_oh} x {out_w} sums exceed the kernel's "
                         f"limits ({MAX_WORKSPACE} values or workspace bytes)")
    _check_fields(f"{what} input", in_slot_shift, in_c_shift, in_h_shift, n_oc, n_oh, 2 * out_w, n_slots)
    _check_fields(what, out_slot_shift, out_c_shift, out_h_shift, n_oc, n_oh, out_w, n_slots)
    name, code = _act(activation)
    if acc_bound is None:
        acc_bound = (1 << (PARTIAL_SUM_BITS + p)) - 1
    bounds = [int(v) for v in np.broadcast_to(np.asarray(acc_bound, dtype=object), (n_oc,))]
    # G rounded partials add up to at most acc_bound / 2**p + G / 2 in magnitude
    if any(2 * b + (n_groups << p) >= 1 << (32 + p) for b in bounds):
        raise ValueError(f"{what}: the sum of {n_groups} partial sums may leave int32 "
                         f"(accumulator bound {max(bounds)}, partial_shift {p})")
    acc_bounds = [b + ((n_groups << p) >> 1) for b in bounds]
    header = [KIND_CONV_REDUCE, oc0, n_oc, oh0, n_oh, out_w, n_groups, p, code, n_slots, in_slot_shift,
              in_c_shift, in_h_shift, int(out_key), out_slot_shift, out_c_shift, out_h_shift, n_rx]
    assert len(header) == CONV_REDUCE_HEADER_WORDS
    fixups = _entry_fixups(CONV_REDUCE_HEADER_WORDS, n_rx, CONV_REDUCE_RX_WORDS, CONV_REDUCE_OUT_KEY_WORD)
    body = [np.zeros(n_rx * CONV_REDUCE_RX_WORDS, np.uint32),
            _finish_params(what, n_oc, bias, multiplier, shift, acc_bounds), table_words(name, act_params)]
    config = np.concatenate([np.array([int(v) & 0xFFFFFFFF for v in header], np.uint32)] +
                            [np.asarray(b, np.uint32) for b in body])
    return config, fixups


def _pool_words(what: str, *, in_h: int, in_w: int, ih0: int, n_ih: int, oh0: int, n_oh: int, out_w: int,
                kh: int, kw: int, sh: int, sw: int, pad_top: int, pad_left: int, pad_bottom: int, pad_right: int,
                mode: Union[str, int], count_include_pad: bool, recip_shift: int) -> Tuple[List[int], List[np.ndarray]]:
    """The checks of a pool over an in_h x in_w input computing output rows [oh0, oh0 + n_oh) x out_w
    from the buffered input rows [ih0, ih0 + n_ih) (the kernels' spinn_pool_params_ok), shared by the
    pool tile and the conv tile's fused pool; returns the pool's 11 words (kh .. recip_shift) and the
    recip table (avg) as a list of config parts."""
    mode = {"max": POOL_MAX, "avg": POOL_AVG}.get(mode, mode) if isinstance(mode, str) else int(mode)
    if mode not in (POOL_MAX, POOL_AVG):
        raise ValueError(f"{what}: mode must be max or avg")
    _dims(what, in_h=in_h, in_w=in_w, ih0=ih0, n_ih=n_ih, oh0=oh0, n_oh=n_oh, out_w=out_w, kh=kh, kw=kw, sh=sh,
          sw=sw, pad_top=pad_top, pad_left=pad_left, pad_bottom=pad_bottom, pad_right=pad_right)
    if min(in_h, in_w, n_oh, out_w, kh, kw, sh, sw) < 1:
        raise ValueError(f"{what}: sizes and strides must be positive")
    if kh * kw > 0xFFFF or not 0 <= recip_shift <= 32:
        raise ValueError(f"{what}: kh * kw must be <= 65535 and recip_shift in [0, 32]")
    _check_rows(what, oh0, n_oh, sh, pad_top, kh, in_h, ih0, n_ih)
    words = [kh, kw, sh, sw, pad_top, pad_left, pad_bottom, pad_right, mode, int(bool(count_include_pad)),
             recip_shift]
    return words, [avg_recip(kh * kw, recip_shift)] if mode == POOL_AVG else []


def pool_config(*, n_c: int, in_h: int, in_w: int, c0: int, ih0: int, n_ih: int, oh0: int, n_oh: int,
                out_w: int, kh: int, kw: int, sh: int, sw: int, pad_top: int, pad_left: int, pad_bottom: int,
                pad_right: int, mode: Union[str, int], count_include_pad: bool, n_slots: int,
                out_slot_shift: int, out_c_shift: int, out_h_shift: int, rx: Sequence[Sequence[int]],
                recip_shift: int = AVG_RECIP_SHIFT, out_key: int = 0) -> Tuple[np.ndarray, Fixups]:
    """Pool tile config (mode "max"/"avg" or POOL_MAX/POOL_AVG)."""
    what = "pool tile"
    _dims(what, n_c=n_c, c0=c0)
    if n_c < 1 or not 1 <= n_slots <= MAX_SLOTS:
        raise ValueError(f"{what}: n_c and n_slots must be positive (n_slots <= {MAX_SLOTS})")
    words, recip = _pool_words(what, in_h=in_h, in_w=in_w, ih0=ih0, n_ih=n_ih, oh0=oh0, n_oh=n_oh, out_w=out_w,
                               kh=kh, kw=kw, sh=sh, sw=sw, pad_top=pad_top, pad_left=pad_left,
                               pad_bottom=pad_bottom, pad_right=pad_right, mode=mode,
                               count_include_pad=count_include_pad, recip_shift=recip_shift)
    _check_fields(what, out_slot_shift, out_c_shift, out_h_shift, n_c, n_oh, out_w, n_slots)
    _check_rx_dst(rx, 0, (c0, ih0, 0, n_c, n_ih, in_w), what)
    header = [KIND_POOL, n_c, in_h, in_w, c0, ih0, n_ih, oh0, n_oh, out_w] + words + \
        [n_slots, int(out_key), out_slot_shift, out_c_shift, out_h_shift, len(rx)]
    assert len(header) == POOL_HEADER_WORDS
    rx_words, fixups = _rx_words(rx, POOL_HEADER_WORDS, POOL_OUT_KEY_WORD)
    parts = [np.array([int(v) & 0xFFFFFFFF for v in header + rx_words], np.uint32)]
    return np.concatenate(parts + recip), fixups


def add_config(*, c0: int, n_c: int, h: int, w: int, h0: int, n_h: int, activation: Union[str, int],
               mult_a: int, mult_b: int, shift: int, n_slots: int, out_slot_shift: int, out_c_shift: int,
               out_h_shift: int, rx: Sequence[Sequence[int]], out_key: int = 0,
               act_params: Optional[np.ndarray] = None) -> Tuple[np.ndarray, Fixups]:
    """Add tile config: y = act(sat16(round_shift(a * mult_a + b * mult_b, shift))); rx
    entries with buffer 0 feed a, buffer 1 feed b; tanh / sigmoid append the tanh table (the
    multipliers then target Q3.12 of x, or of x / 2)."""
    what = "add tile"
    _dims(what, c0=c0, n_c=n_c, h=h, w=w, h0=h0, n_h=n_h)
    if min(n_c, h, w, n_h) < 1 or h0 + n_h > h or not 1 <= n_slots <= MAX_SLOTS:
        raise ValueError(f"{what}: bad sizes, rows [{h0}, {h0 + n_h}) of {h}, or n_slots")
    name, code = _act(activation)
    if name not in ADD_ACTIVATIONS:
        raise ValueError(f"{what}: activation must be one of {ADD_ACTIVATIONS}")
    if not all(-(1 << 31) <= int(m) < 1 << 31 for m in (mult_a, mult_b)) or not 0 <= shift <= 62:
        raise ValueError(f"{what}: multipliers must be int32 and shift in [0, 62]")
    _check_fields(what, out_slot_shift, out_c_shift, out_h_shift, n_c, n_h, w, n_slots)
    for b in (0, 1):
        _check_rx_dst(rx, b, (c0, h0, 0, n_c, n_h, w), what)
    header = [KIND_ADD, c0, n_c, h, w, h0, n_h, code, int(mult_a) & 0xFFFFFFFF, int(mult_b) & 0xFFFFFFFF,
              shift, n_slots, int(out_key), out_slot_shift, out_c_shift, out_h_shift, len(rx)]
    assert len(header) == ADD_HEADER_WORDS
    rx_words, fixups = _rx_words(rx, ADD_HEADER_WORDS, ADD_OUT_KEY_WORD)
    words = np.array([int(v) & 0xFFFFFFFF for v in header + rx_words], np.uint32)
    return np.concatenate([words, table_words(name, act_params)]), fixups
