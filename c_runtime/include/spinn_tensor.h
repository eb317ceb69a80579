/*
 * Tensor kernels (convolution, the reduction of a convolution split by input
 * channels, pooling, residual add) and the generic receive entry every kernel
 * that consumes tensors uses. Portable C99, freestanding, no floating point,
 * no division; state in explicit structs.
 *
 * Tensors are (C, H, W) int16 per sample, stored c-major: ((c * H) + h) * W + w.
 * 1D tensors are (C, 1, L); dense vectors are (1, 1, N).
 *
 * Every producer vertex emits one block of its output tensor: channels
 * [c0, c0 + nc) x rows [h0, h0 + nh) x columns [w0, w0 + nw), two int16
 * values per packet along w. Its keys are
 *     base | slot << slot_shift | c_local << c_shift | h_local << h_shift | pair
 * (c_local = c - c0, h_local = h - h0, pair = (w - w0) / 2; the odd last value
 * of a row travels with a zero in the high half). The fields lie in this order
 * from the top: h_shift <= c_shift <= slot_shift < 32, so the pair field is
 * h_shift bits wide, the row field c_shift - h_shift bits and the channel field
 * slot_shift - c_shift bits (a zero-width field: that coordinate is always 0).
 * Minimal choice (tvm_spinn/machine/configs/tensor.py block_key_layout):
 *     h_shift = ceil_log2(ceil(nw / 2)), c_shift = h_shift + ceil_log2(nh),
 *     slot_shift = c_shift + ceil_log2(nc),
 * and the block reserves n_slots << slot_shift keys (n_slots rounded up to a
 * power of two; base aligned to that, so base has no bit below slot_shift: the
 * kernels reject an out_key that has). A partial conv tile (below) sends one
 * int32 per packet instead, the column in place of the pair: its fields are
 * those of a block twice as wide, and only a conv reduce tile reads them.
 *
 * Generic receive entry (SPINN_TRX_WORDS uint32 words), one per source:
 *     key, mask, slot_shift | packing << SPINN_RX_PACK_SHIFT, c_shift, h_shift,
 *     src_c0, src_h0, src_w0, src_nw,          (the source's block)
 *     dst_c0, dst_h0, dst_w0, dst_nc, dst_nh, dst_nw,  (this core's buffer block)
 *     buffer                                   (input index: 0, or 1 for add's b)
 * A packet matches the first entry with (key & mask) == entry key. A value
 * (c, h, w) of the source (w - src_w0 < src_nw; the zero that pads an odd row
 * is not a value) lands in the buffer at
 *     ((c - dst_c0) * dst_nh + (h - dst_h0)) * dst_nw + (w - dst_w0)
 * if it lies inside the buffer block; other values are not this core's.
 * packing (spinn_rx.h): SPINN_PACK_INT16, a key carries the pair w = 2 * index
 * + {0, 1} (the fields above); SPINN_PACK_INT8 / UINT8 (a live input sending
 * 8-bit values), four values w = 4 * index + {0..3}, so h_shift =
 * ceil_log2(ceil(nw / 4)), stored as int16. 8-bit packets of a whole quad take the
 * remembered rows' path out of line (spinn_tensor_receive_other_rows), never the inline
 * checks of int16 pairs.
 * Entries are valid (spinn_trx_valid) when the shifts are ordered as above and
 * below 32, key has no bit outside mask, every coordinate and size is at most
 * SPINN_MAX_DIM, the dst sizes are nonzero and buffer < the kernel's number of
 * inputs. Each kernel also requires every entry's dst block to be exactly its
 * buffer block for that input (the dst sizes are the buffer's layout).
 * Rows are counted per (slot, input, h - dst_h0) so a kernel can start on an
 * output row as soon as the input rows it needs are complete (streaming).
 *
 * Streaming contract of the tensor kernels (spinn_stream_t below):
 * receive stores the values and, when an input row of a slot becomes complete,
 * returns the slot if the slot's next output row is now computable and no
 * compute of the slot is pending (it then marks one pending: the board binding
 * triggers one user event per returned slot); otherwise -1. compute(slot)
 * clears the pending mark first, then computes and sends every ready output
 * row in order (so a row completed during a compute is either picked up by it
 * or returns the slot again: none is lost; a compute with nothing ready is a
 * no-op). A slot is free for the next sample once all its output rows have
 * been sent and all its buffered input values have arrived (rows that no
 * output needs, e.g. with stride > kernel, still arrive and are counted);
 * whichever of receive or compute sees both resets the slot's counts, just
 * before the tile's last packet is sent. If a send fails, compute abandons the
 * rest of that sample (its slot still recovers) and returns -1.
 */
#ifndef SPINN_TENSOR_H
#define SPINN_TENSOR_H

#include <stdint.h>

#include "spinn_dense.h"
#include "spinn_fixed.h"
#include "spinn_rx.h"

#define SPINN_TRX_WORDS 16u
enum {
    SPINN_TRX_KEY, SPINN_TRX_MASK, SPINN_TRX_SLOT_SHIFT, SPINN_TRX_C_SHIFT, SPINN_TRX_H_SHIFT,
    SPINN_TRX_SRC_C0, SPINN_TRX_SRC_H0, SPINN_TRX_SRC_W0, SPINN_TRX_SRC_NW,
    SPINN_TRX_DST_C0, SPINN_TRX_DST_H0, SPINN_TRX_DST_W0, SPINN_TRX_DST_NC, SPINN_TRX_DST_NH,
    SPINN_TRX_DST_NW, SPINN_TRX_BUFFER
};

#define SPINN_KIND_CONV 0x5D03u
#define SPINN_KIND_POOL 0x5D04u
#define SPINN_KIND_ADD 0x5D05u
#define SPINN_KIND_CONV_REDUCE 0x5D06u

#define SPINN_POOL_MAX 0u
#define SPINN_POOL_AVG 1u

/* Conv tile modes (config word 25) and the pooled mode's pool section. */
#define SPINN_CONV_FINAL 0u
#define SPINN_CONV_PARTIAL 1u
#define SPINN_CONV_POOLED 2u
#define SPINN_CONV_POOL_WORDS 15u

/* Largest workspace a tensor kernel accepts (a bound that keeps every size
 * below inside uint32; DTCM is 64 KB anyway, the emulator may use more).
 * Every size, coordinate, stride and pad word of the configs below is at most
 * SPINN_MAX_DIM; n_slots is 1..SPINN_MAX_SLOTS; init rejects anything else,
 * and configs shorter than their layout. */
#define SPINN_TENSOR_MAX_WORKSPACE 0x10000000u

/*
 * Conv tile: output channels [oc0, oc0 + n_oc) x output rows [oh0, oh0 + n_oh) x
 * all out_w columns, from input channels [ic0, ic0 + n_ic) (all of them, or for
 * depthwise the channels the outputs read) whose rows [ih0, ih0 + n_ih) it
 * buffers per slot. Config words:
 *   0 kind, 1 n_ic, 2 in_h, 3 in_w, 4 ic0, 5 ih0, 6 n_ih, 7 oc0, 8 n_oc, 9 oh0,
 *   10 n_oh, 11 out_w, 12 kh, 13 kw, 14 sh, 15 sw, 16 pad_top, 17 pad_left,
 *   18 depthwise (0 dense, else the channel multiplier m), 19 activation,
 *   20 n_slots, 21 out_key, 22 out_slot_shift, 23 out_c_shift, 24 out_h_shift,
 *   25 mode (SPINN_CONV_FINAL 0, SPINN_CONV_PARTIAL 1 partial sums,
 *   SPINN_CONV_POOLED 2 final then pooled), 26 partial_shift,
 *   27 n_rx, then n_rx receive entries,
 *   then weights: per output channel, (depthwise ? 1 : n_ic) * kh * kw int16
 *   in (ic, ky, kx) order, packed two per word, each channel padded to a word;
 *   then (final, pooled) per output channel {bias lo, bias hi, multiplier, shift};
 *   then (final, pooled) the tanh table (SPINN_TANH_WORDS) if activation is
 *   tanh or sigmoid;
 *   then (pooled only) the pool section of SPINN_CONV_POOL_WORDS words
 *     0 conv_h, 1 ph0, 2 n_ph, 3 pool_out_w, 4 kh, 5 kw, 6 sh, 7 sw, 8 pad_top,
 *     9 pad_left, 10 pad_bottom, 11 pad_right, 12 mode (max/avg),
 *     13 count_include_pad, 14 recip_shift
 *   (words 4..14 as the pool tile's words 10..20), then (avg only) the pool's
 *   recip table of kh*kw + 1 words, exactly as the pool tile has it.
 * Output value (oc, oh, ow) = activate(requantize(bias + sum over ic, ky, kx of
 *   w[oc][ic][ky][kx] * x[ic][oh*sh - pad_top + ky][ow*sw - pad_left + kx])),
 * with x = 0 outside the input (zero padding). Accumulation is exact (int64).
 * Partial mode (one input-channel group of a convolution whose channels are
 * split; a conv reduce tile finishes it): depthwise 0, activation none, no
 * per-channel params or table; each output is the int32
 *   sat32(round_shift(sum over ic, ky, kx of w * x, partial_shift)),
 * partial_shift <= 62 (the producer proves it never saturates), sent one value
 * per packet: payload (uint32)value, key out_key | slot << out_slot_shift |
 * c_local << out_c_shift | h_local << out_h_shift | ow (the low field holds
 * the column, not a pair: the fields are those of a block nw = 2 * out_w wide;
 * tvm_spinn/machine/configs/tensor.py partial_key_layout).
 * Depthwise with channel multiplier m = word 18 >= 1 (groups == C, m * C output
 * channels; CHANGED: word 18 was a 0/1 flag, 1 still means m = 1): output
 * channel oc reads input channel oc / m only. A tile's input channels are
 * exactly those its outputs read: ic0 = oc0 / m, n_ic = (oc0 + n_oc - 1) / m -
 * ic0 + 1 (m = 1: ic0 = oc0, n_ic = n_oc); the kernel checks this by
 * multiplication, the phase of its first output r0 = oc0 - ic0 * m < m coming
 * from words 4, 7 and 18 (no extra word), and walks output j's input channel
 * (r0 + j) / m as a running counter (no division). m <= SPINN_MAX_DIM.
 * Grouped convolutions: one tile per group (or part of one), non-depthwise,
 * ic0/n_ic = that group's channels.
 * Pooled mode (a pool fused into the tile that produces its input): the tile
 * computes its output rows [oh0, oh0 + n_oh) exactly as a final tile but sends
 * none of them: it stores them (int16) per slot (n_slots x n_oc x n_oh x out_w)
 * and sends instead rows [ph0, ph0 + n_ph) x pool_out_w columns of a pool (the
 * pool tile's semantics, kh x kw etc. of the pool section) over the whole conv
 * output, conv_h rows x out_w columns, channel by channel (pool channel j =
 * conv channel oc0 + j). Every pool row's window rows (clipped to [0, conv_h))
 * lie in [oh0, oh0 + n_oh), oh0 + n_oh <= conv_h, partial_shift == 0.
 * Sent: block (oc0, n_oc) x (ph0, n_ph) x (0, pool_out_w) with the out_* key
 * fields. Conv rows are computed in order as they become computable; once conv
 * row oh0 + r is stored for all channels, every next pool row whose window's
 * last conv row is <= oh0 + r is sent (in order; per-slot state; a window
 * wholly in the padding reads no conv row), except the last pool row, which
 * waits for the tile's last conv row so that the tile's last packet is sent by
 * the last row's compute, as in the other modes. The pool words are checked
 * as the pool tile's (spinn_pool_params_ok, the conv rows [oh0, oh0 + n_oh)
 * being its buffered input rows). Outputs counted: conv values and pool values.
 * Sent (final): block (oc0, n_oc) x (oh0, n_oh) x (0, out_w) with the out_* key
 * fields.
 * Output row oh is computed once input rows max(0, oh*sh - pad_top) ..
 * min(in_h, oh*sh - pad_top + kh) - 1 are complete (n_ic * in_w values each);
 * these must lie in [ih0, ih0 + n_ih), and ih0 + n_ih <= in_h, n_ih >= 1.
 * Input buffer block (every rx entry, buffer 0): (ic0, ih0, 0, n_ic, n_ih, in_w).
 * Per-channel shift <= 63; the producer keeps |acc * multiplier| < 2^63.
 */
/*
 * Conv reduce tile: adds the partial sums of n_groups partial conv tiles (one
 * per input-channel group) of one output block, channels [oc0, oc0 + n_oc) x
 * rows [oh0, oh0 + n_oh) x out_w columns, and finishes them as a final conv
 * tile does. Config words:
 *   0 kind, 1 oc0, 2 n_oc, 3 oh0, 4 n_oh, 5 out_w, 6 n_groups, 7 partial_shift,
 *   8 activation, 9 n_slots, 10 in_slot_shift, 11 in_c_shift, 12 in_h_shift,
 *   13 out_key, 14 out_slot_shift, 15 out_c_shift, 16 out_h_shift, 17 n_rx,
 *   then n_rx = n_groups receive entries {key, mask} (SPINN_CONV_REDUCE_RX_WORDS,
 *   one per partial tile: all share the in_* key layout of the block, whose
 *   fields are those of a partial tile's output above),
 *   then per output channel {bias lo, bias hi, multiplier, shift},
 *   then the tanh table (SPINN_TANH_WORDS) if activation is tanh or sigmoid.
 * A packet matches the first entry with (key & mask) == entry key (a key bit
 * outside the mask, or a mask bit below in_slot_shift, is rejected at init);
 * its value (int32 payload) is added to acc[slot][c][h][w] (uint32 arithmetic:
 * wraps instead of overflowing; the producer proves the true sum fits int32:
 * tvm_spinn.tiling.tensor.partial_shift keeps every channel's whole |acc|
 * below 2^(30 + partial_shift), so the G rounded partials add to less than
 * 2^30 + G / 2). A slot >= n_slots or a coordinate outside the block is
 * dropped (counted). Row h of a slot is complete when n_groups * n_oc * out_w
 * values arrived for it; output row h is then, per channel j and column w,
 *   activate(requantize(acc * 2^partial_shift + bias_j, multiplier_j, shift_j))
 * sent as int16 pairs along w: block (oc0, n_oc) x (oh0, n_oh) x (0, out_w)
 * with the out_* key fields, as a final conv tile. partial_shift <= 32 (the
 * shifted sum stays inside int64), per-channel shift <= 63; the producer keeps
 * |(acc * 2^partial_shift + bias) * multiplier| < 2^63.
 */
/*
 * Pool tile: channels [c0, c0 + n_c) x output rows [oh0, oh0 + n_oh) x out_w,
 * buffering input rows [ih0, ih0 + n_ih). Config words (CHANGED from the first
 * draft: pad_bottom and pad_right added after pad_left):
 *   0 kind, 1 n_c, 2 in_h, 3 in_w, 4 c0, 5 ih0, 6 n_ih, 7 oh0, 8 n_oh, 9 out_w,
 *   10 kh, 11 kw, 12 sh, 13 sw, 14 pad_top, 15 pad_left, 16 pad_bottom,
 *   17 pad_right, 18 mode (max/avg), 19 count_include_pad, 20 recip_shift,
 *   21 n_slots, 22 out_key, 23 out_slot_shift, 24 out_c_shift, 25 out_h_shift,
 *   26 n_rx, then n_rx receive entries, then (avg) kh*kw + 1 words
 *   recip[n] = min(ceil(2^recip_shift / n), 2^32 - 1) (recip[0] = 0),
 *   recip_shift <= 32 (tvm_spinn/quantization/fixed_point.py avg_recip: 32).
 * Window of (oh, ow): rows oh*sh - pad_top + [0, kh), columns ow*sw - pad_left
 * + [0, kw); out_h/out_w may exceed the floor formula (ceil mode): windows may
 * hang past in_h + pad_bottom / in_w + pad_right.
 * max: the largest input inside the window (padding never wins);
 * avg: round_shift(sum * recip[n], recip_shift), sum over the window's inputs,
 *      n = the number of window positions inside the padded input
 *      [-pad_top, in_h + pad_bottom) x [-pad_left, in_w + pad_right) if
 *      count_include_pad (kh*kw unless a ceil-mode window hangs over: PyTorch's
 *      divisor), else the number of positions inside the input.
 *      The result is saturated to int16.
 *      With recip_shift = 32 this is round-half-up(sum / n) exactly for every
 *      |sum| <= 32768 n and n <= 256 (and every larger n with n * j <= 65536,
 *      j = -2^32 mod n), except at exact negative ties (sum / n = t - 1/2,
 *      t <= 0, possible only for even n that is not a power of two), which
 *      round down (half away from zero): no multiplier is exact at ties of
 *      both signs there. Otherwise the result differs by at most 1 LSB
 *      (proof in quantization.fixed_point.avg_recip; checked exhaustively in the tests).
 * A window with no input position gives 0 (max and avg).
 * Output scale = input scale. Channel c0 + j of the output reads input
 * channel c0 + j. Rows stream as for the conv tile; buffer block (every rx
 * entry, buffer 0): (c0, ih0, 0, n_c, n_ih, in_w). kh * kw <= 65535.
 * The computation is spinn_pool_send_row below, shared with the pooled mode
 * of the conv tile (whose pool section carries words 10..20 above), and so
 * are the checks (spinn_pool_params_ok).
 */
/*
 * Add tile: channels [c0, c0 + n_c) x rows [h0, h0 + n_h) x all w of two tensors
 * a (buffer 0) and b (buffer 1) of shape (*, h, w). Config words:
 *   0 kind, 1 c0, 2 n_c, 3 h, 4 w, 5 h0, 6 n_h, 7 activation, 8 mult_a,
 *   9 mult_b, 10 shift, 11 n_slots, 12 out_key, 13 out_slot_shift,
 *   14 out_c_shift, 15 out_h_shift, 16 n_rx, then n_rx receive entries, then
 *   for tanh / sigmoid the SPINN_TANH_WORDS table.
 * y = activate(sat16(round_shift(a * mult_a + b * mult_b, shift))) (any
 * activation: for tanh / sigmoid the rescaling targets Q3.12 of x or x / 2;
 * mult_a, mult_b are int32; shift <= 62), computed row by row,
 * in order, once both inputs' row is complete. Buffer blocks (rx entries with
 * buffer 0 and 1): (c0, h0, 0, n_c, n_h, w) each. Sent: block (c0, n_c) x
 * (h0, n_h) x (0, w). As the first matching entry wins, one producer feeds only
 * one of a and b (x + x is a single input with mult_a + mult_b).
 */

/* ---- workspace ------------------------------------------------------------ */

/* Bytes of a workspace part, rounded up so the next part stays 8-byte aligned. */
static inline uint32_t spinn_align8(uint32_t bytes) { return (bytes + 7u) & ~7u; }

/* At init: buffers, sums, stream counts and counters all start at 0. */
static inline void spinn_tensor_clear(void *workspace, uint32_t n_bytes, spinn_counters_t *counters) {
    uint8_t *ws = (uint8_t *)workspace;
    uint32_t i;
    for (i = 0; i < n_bytes; i++) ws[i] = 0;
    for (i = 0; i < sizeof(*counters) / 4u; i++) ((uint32_t *)counters)[i] = 0;
}

/* ---- generic receive entries ------------------------------------------- */

/* Entries a kernel can use safely (see the rules above). */
static inline int spinn_trx_valid(const uint32_t *table, uint32_t n_entries, uint32_t n_buffers) {
    uint32_t i, j;
    for (i = 0; i < n_entries; i++) {
        const uint32_t *e = table + i * SPINN_TRX_WORDS;
        uint32_t s_shift = e[SPINN_TRX_SLOT_SHIFT] & SPINN_RX_SHIFT_MASK;
        if (s_shift > 31u || spinn_rx_packing(e[SPINN_TRX_SLOT_SHIFT]) > SPINN_PACK_UINT8 ||
            e[SPINN_TRX_C_SHIFT] > s_shift ||
            e[SPINN_TRX_H_SHIFT] > e[SPINN_TRX_C_SHIFT] || (e[SPINN_TRX_KEY] & ~e[SPINN_TRX_MASK]) != 0u ||
            e[SPINN_TRX_BUFFER] >= n_buffers)
            return 0;
        for (j = SPINN_TRX_SRC_C0; j <= SPINN_TRX_DST_NW; j++)
            if (e[j] > SPINN_MAX_DIM) return 0;
        if (e[SPINN_TRX_DST_NC] == 0u || e[SPINN_TRX_DST_NH] == 0u || e[SPINN_TRX_DST_NW] == 0u) return 0;
    }
    return 1;
}

/* 1 if every entry whose buffer is `buffer` has exactly this dst block. */
static inline int spinn_trx_dst_is(const uint32_t *table, uint32_t n_entries, uint32_t buffer, uint32_t c0,
                                   uint32_t h0, uint32_t w0, uint32_t nc, uint32_t nh, uint32_t nw) {
    uint32_t i;
    for (i = 0; i < n_entries; i++) {
        const uint32_t *e = table + i * SPINN_TRX_WORDS;
        if (e[SPINN_TRX_BUFFER] != buffer) continue;
        if (e[SPINN_TRX_DST_C0] != c0 || e[SPINN_TRX_DST_H0] != h0 || e[SPINN_TRX_DST_W0] != w0 ||
            e[SPINN_TRX_DST_NC] != nc || e[SPINN_TRX_DST_NH] != nh || e[SPINN_TRX_DST_NW] != nw)
            return 0;
    }
    return 1;
}

/* Index of the first entry whose (key, mask) matches, or -1 (as spinn_rx_match). */
static inline int32_t spinn_trx_match(const uint32_t *table, uint32_t n_entries, uint32_t key) {
    return spinn_match_entry(table, n_entries, SPINN_TRX_WORDS, key);
}

/* Store the int16 pair (packed: the four 8-bit values) carried by (key,
 * payload) as `entry` says (a valid entry). buffers[entry buffer] is slot 0 of
 * that input; a slot's values are slot_stride apart. Returns -1 if the key's
 * slot is >= n_slots (nothing stored), else how many values (0..4) landed in
 * the buffer block; when > 0, *slot gets the slot and *row the destination row
 * h - dst_h0. Shifts, masks and multiplications only; the packing is checked
 * once per packet. */
static inline int32_t spinn_trx_store(const uint32_t *entry, uint32_t key, uint32_t payload,
                                      int16_t *const *buffers, uint32_t slot_stride, uint32_t n_slots,
                                      uint32_t *slot, uint32_t *row, uint32_t *lost) {
    uint32_t local = key & ~entry[SPINN_TRX_MASK];
    uint32_t s_shift = entry[SPINN_TRX_SLOT_SHIFT] & SPINN_RX_SHIFT_MASK, c_shift = entry[SPINN_TRX_C_SHIFT];
    uint32_t packing = spinn_rx_packing(entry[SPINN_TRX_SLOT_SHIFT]);
    uint32_t h_shift = entry[SPINN_TRX_H_SHIFT];
    uint32_t s = local >> s_shift;
    uint32_t c = entry[SPINN_TRX_SRC_C0] + ((local >> c_shift) & ((1u << (s_shift - c_shift)) - 1u));
    uint32_t h = entry[SPINN_TRX_SRC_H0] + ((local >> h_shift) & ((1u << (c_shift - h_shift)) - 1u));
    /* value index in the source row */
    uint32_t v = (local & ((1u << h_shift) - 1u)) << (packing ? 2u : 1u);
    uint32_t dc = c - entry[SPINN_TRX_DST_C0], dh = h - entry[SPINN_TRX_DST_H0];
    uint32_t nw = entry[SPINN_TRX_DST_NW], stored = 0u, j;
    int16_t *buf;
    int marker = spinn_slot_decode(&s, n_slots);
    if (marker < 0) return -1;
    *lost = (uint32_t)marker;
    /* unsigned differences: coordinates below the block wrap to large values */
    if (dc >= entry[SPINN_TRX_DST_NC] || dh >= entry[SPINN_TRX_DST_NH]) return 0;
    buf = buffers[entry[SPINN_TRX_BUFFER]] + s * slot_stride + (dc * entry[SPINN_TRX_DST_NH] + dh) * nw;
    if (packing) {
        uint32_t sign = spinn_pack8_sign(packing);
        for (j = 0; j < 4u; j++, v++) {
            uint32_t dw = entry[SPINN_TRX_SRC_W0] + v - entry[SPINN_TRX_DST_W0];
            if (v < entry[SPINN_TRX_SRC_NW] && dw < nw) {
                buf[dw] = spinn_unpack8(payload, j, sign);
                stored++;
            }
        }
    } else {
        for (j = 0; j < 2u; j++, v++) {
            uint32_t dw = entry[SPINN_TRX_SRC_W0] + v - entry[SPINN_TRX_DST_W0];
            if (v < entry[SPINN_TRX_SRC_NW] && dw < nw) {
                buf[dw] = (int16_t)(j ? spinn_hi16(payload) : spinn_lo16(payload));
                stored++;
            }
        }
    }
    *slot = s;
    *row = dh;
    return (int32_t)stored;
}

/* ---- row streaming state shared by the tensor kernels ------------------- */

/* Written by receive (packet interrupt) and compute (user event): volatile. */
typedef struct {
    uint32_t n_slots;
    uint32_t n_rows;       /* input rows counted per slot (all inputs) */
    uint32_t row_values;   /* values that complete one input row */
    uint32_t total_values; /* n_rows * row_values */
    uint32_t n_out_rows;
    volatile uint32_t *counts;   /* n_slots x n_rows values received */
    volatile uint32_t *received; /* per slot: values received */
    volatile uint32_t *next_row; /* per slot: next output row to compute */
    volatile uint32_t *pending;  /* per slot: a compute is due */
    int32_t rx_slot;             /* slot of the last packet received, or -1 */
} spinn_stream_t;

/* uint32 words of workspace the stream state needs. */
static inline uint32_t spinn_stream_words(uint32_t n_slots, uint32_t n_rows) {
    return n_slots * n_rows + 3u * n_slots;
}

/* Point the state into `words` (zeroed by the caller). */
static inline void spinn_stream_init(spinn_stream_t *st, uint32_t *words, uint32_t n_slots, uint32_t n_rows,
                                     uint32_t row_values, uint32_t n_out_rows) {
    st->n_slots = n_slots;
    st->n_rows = n_rows;
    st->row_values = row_values;
    st->total_values = n_rows * row_values;
    st->n_out_rows = n_out_rows;
    st->counts = words;
    st->received = words + n_slots * n_rows;
    st->next_row = st->received + n_slots;
    st->pending = st->next_row + n_slots;
}

/* Count n values of input row `row` of `slot`; 1 if that completed the row. */
static inline int spinn_stream_add(spinn_stream_t *st, uint32_t slot, uint32_t row, uint32_t n) {
    volatile uint32_t *c = st->counts + slot * st->n_rows + row;
    *c += n;
    st->received[slot] += n;
    return *c == st->row_values;
}

/* 1 if input rows [lo, hi) of the slot are complete (lo >= hi: none needed). */
static inline int spinn_stream_rows_complete(const spinn_stream_t *st, uint32_t slot, uint32_t lo, uint32_t hi) {
    const volatile uint32_t *c = st->counts + slot * st->n_rows;
    for (; lo < hi; lo++)
        if (c[lo] != st->row_values) return 0;
    return 1;
}

/* Reset the slot if its sample is done (all outputs sent, all inputs in). */
static inline void spinn_stream_finish_if_done(spinn_stream_t *st, uint32_t slot) {
    uint32_t i;
    volatile uint32_t *c;
    if (st->next_row[slot] != st->n_out_rows || st->received[slot] != st->total_values) return;
    c = st->counts + slot * st->n_rows;
    for (i = 0; i < st->n_rows; i++) c[i] = 0u;
    st->received[slot] = 0u;
    st->next_row[slot] = 0u;
}

/* After receive counted a value: returns the slot if `ready` (whether the
 * slot's next output row is computable, evaluated by the kernel) and none is
 * pending, marking it pending; else -1. */
static inline int32_t spinn_stream_trigger(spinn_stream_t *st, uint32_t slot, int ready) {
    if (!ready || st->pending[slot]) return -1;
    st->pending[slot] = 1u;
    return (int32_t)slot;
}

/* Input rows [*lo, *hi) (clipped to the input) that output row oh of a window
 * op (conv, pool) reads; *hi <= *lo when the window lies in the padding. */
static inline void spinn_window_rows(uint32_t oh, uint32_t sh, uint32_t pad_top, uint32_t kh, uint32_t in_h,
                                     int32_t *lo, int32_t *hi) {
    int32_t y0 = (int32_t)(oh * sh) - (int32_t)pad_top;
    *lo = y0 < 0 ? 0 : y0;
    *hi = y0 + (int32_t)kh;
    if (*hi > (int32_t)in_h) *hi = (int32_t)in_h;
}

/* 1 if every input row output row oh reads is complete in the slot (rows are
 * buffered from ih0). */
static inline int spinn_window_ready(const spinn_stream_t *st, uint32_t slot, uint32_t oh, uint32_t sh,
                                     uint32_t pad_top, uint32_t kh, uint32_t in_h, uint32_t ih0) {
    int32_t lo, hi;
    spinn_window_rows(oh, sh, pad_top, kh, in_h, &lo, &hi);
    if (hi <= lo) return 1;
    return spinn_stream_rows_complete(st, slot, (uint32_t)lo - ih0, (uint32_t)hi - ih0);
}

/* 1 if rows [ih0, ih0 + n_ih) hold every input row output rows [oh0, oh0 + n_oh) read. */
static inline int spinn_window_band_ok(uint32_t oh0, uint32_t n_oh, uint32_t sh, uint32_t pad_top, uint32_t kh,
                                       uint32_t in_h, uint32_t ih0, uint32_t n_ih) {
    uint32_t i;
    for (i = 0; i < n_oh; i++) {
        int32_t lo, hi;
        spinn_window_rows(oh0 + i, sh, pad_top, kh, in_h, &lo, &hi);
        if (hi > lo && (lo < (int32_t)ih0 || hi > (int32_t)(ih0 + n_ih))) return 0;
    }
    return 1;
}

/* A kernel's test of whether output row r of the slot can be computed. */
typedef int (*spinn_row_ready_fn)(const void *kernel, uint32_t slot, uint32_t r);

/* The receive path every tensor kernel shares: match the key, store its values
 * into the entry's buffer of the slot, count them against their input row (the
 * rows of buffer 1 follow buffer 0's: + rows_per_buffer), and return the slot if
 * its next output row became computable and no compute is pending for it (see
 * spinn_stream_trigger); else -1. */
/* After n values of input row `row` of the slot were stored: count them, reset
 * the slot if its sample is done, and return the slot if its next output row
 * became computable and no compute is pending for it (spinn_stream_trigger);
 * else -1. The tail of every tensor kernel's receive. */
static inline int32_t spinn_stream_received(spinn_stream_t *st, uint32_t slot, uint32_t row, uint32_t n,
                                            spinn_row_ready_fn row_ready, const void *kernel) {
    uint32_t next;
    int ready = 0;
    st->rx_slot = (int32_t)slot;
    if (spinn_stream_add(st, slot, row, n)) {
        next = st->next_row[slot];
        ready = next < st->n_out_rows && row_ready(kernel, slot, next);
    }
    spinn_stream_finish_if_done(st, slot);
    return spinn_stream_trigger(st, slot, ready);
}

/* A row spinn_tensor_receive_rc's fast path stores pairs of (spinn_trx_row_fill): a key
 * k of the row stores both its values at base + 2 (k - key) if k - key < pn (key: the
 * row's key of its first such pair; unsigned: other keys give pn or more), and, if half
 * is 1, the pair k - key == pn its low value only (an odd row's last pair, or one the
 * block's right edge cuts). A row of 8-bit values (a live input's: four a key) has pn and
 * half 0, so the pair checks pass it by, and packed = quads << 16 | sign << 8 (sign:
 * spinn_pack8_sign): a key k with k - key < quads stores its
 * four values, sign- or zero-extended (spinn_unpack8), at base + 4 (k - key).
 * Each receive entry (a producer's block) has one such row, which follows the order every
 * producer sends in (a row of each of its channels in turn, then the next row: the
 * tensor kernels' computes and the live inputs all do): after a row comes the same row of
 * the next channel (the keys cstep further, cstride values further in the buffer, the same
 * count), one of the c_left channels after it that lie in the block and the key field;
 * after the last, the next row of the sweep's first channel (key0, base0: the row the
 * sweep began at; the keys step further, nw values further, the next count), one of the
 * `rows` rows after it that lie in the block and key field. The producer's next sample
 * begins where this one began (the row filled first, spinn_trx_row_fill): its key is
 * key_o with the slot field (bits from s_shift) its slot's, and its row the same, in that
 * slot's buffer (spinn_trx_row_restart). */
typedef struct {
    uint32_t key, pn, half, step, rows, nw, slot;
    uint32_t packed; /* a row of 8-bit values: quads << 16 | sign << 8 (quads >= 1); else 0 */
    /* values from the receive's first buffer (spinn_trx_rows_t rx_buffers[0]) and the
     * stream's count of the row (st->counts[count]): numbers, not pointers, so that a row
     * has the same size on the ARM and on a 64-bit host (the workspace is the same) */
    int32_t base;
    uint32_t count;
    uint32_t key0, cstep, cstride, c_left, c_left0;
    int32_t base0;
    uint32_t key_o, rows_o;        /* where a sample begins: key and rows (slot 0), */
    uint32_t s_shift;              /* the key's slot field */
    int32_t base_o;                /* ... its base and count (slot 0) */
    uint32_t count_o;
} spinn_trx_row_t;

#define SPINN_TRX_MAP 64u /* slots of spinn_trx_rows_t's map: a power of two, entries below 255 */

/* tvm_spinn/tiling/tensor.py TRX_ENTRY_BYTES counts a row of this size in DTCM per entry */
typedef char spinn_trx_row_bytes[sizeof(spinn_trx_row_t) == 84u ? 1 : -1];

/* The receive state of spinn_tensor_receive_rc (conv, pool and add tiles), set
 * by spinn_trx_prepare. */
typedef struct {
    const uint32_t *rx;          /* the receive entries */
    uint32_t rx_n, rx_disjoint;  /* entries; no key can match two of them */
    int16_t *rx_buffers[2];      /* each input's slot 0 (copied: a kernel's state may move) */
    uint32_t rx_slot_stride;     /* int16 values per slot of an input */
    uint32_t rx_rows_per_buffer; /* stream rows of each input */
    spinn_trx_row_t *rc;         /* per entry, the row its producer sends now (workspace) */
    uint32_t rc_last;            /* the entry of the last packet the rows took */
    /* the entry a key is likely of: map[(key >> map_shift) % SPINN_TRX_MAP], the shift that
     * gives the fewest entries a slot of another (spinn_trx_map); the first keeps it; a key
     * of no entry finds one too: the rows check */
    uint32_t map_shift;
    uint8_t map[SPINN_TRX_MAP];
} spinn_trx_rows_t;

/* Workspace bytes of the rows of n_rx entries (8-aligned, as every workspace part). */
static inline uint32_t spinn_trx_rows_bytes(uint32_t n_rx) {
    return spinn_align8((n_rx ? n_rx : 1u) * (uint32_t)sizeof(spinn_trx_row_t)); /* rc_last's, when none */
}

/* Fill t->map with shift s (entries of up to 254; the others only by lookup): each entry
 * takes the slots of its keys (key >> s, and the values its free key bits, the mask's
 * trailing zeros, add to it), those no earlier entry took. Returns the entries that found a
 * slot of theirs taken. */
static SPINN_COLD __attribute__((unused)) uint32_t spinn_trx_map_with(spinn_trx_rows_t *t, uint32_t s) {
    uint32_t i, j, bad = 0u, n = t->rx_n < 255u ? t->rx_n : 254u;
    for (i = 0; i < SPINN_TRX_MAP; i++) t->map[i] = 0xFFu;
    for (i = 0; i < n; i++) {
        uint32_t key = t->rx[i * SPINN_TRX_WORDS + SPINN_TRX_KEY], mask = t->rx[i * SPINN_TRX_WORDS + SPINN_TRX_MASK];
        uint32_t free = 0u, span = 1u, clash = 0u;
        while (free < 32u && !((mask >> free) & 1u)) free++;
        if (free > s) span = free - s >= 6u ? SPINN_TRX_MAP : 1u << (free - s);
        for (j = 0; j < span; j++) {
            uint8_t *slot = &t->map[((key >> s) + j) & (SPINN_TRX_MAP - 1u)];
            if (*slot == 0xFFu)
                *slot = (uint8_t)i;
            else
                clash = 1u;
        }
        bad += clash;
    }
    return bad + (t->rx_n - n);
}

/* The map of spinn_trx_rows_t: the shift between the entries' fewest and most free key bits
 * with the fewest entries clashing (once, at start-up); empty slots name entry 0. */
static SPINN_COLD __attribute__((unused)) void spinn_trx_map(spinn_trx_rows_t *t) {
    uint32_t i, s, lo = 32u, hi = 0u, best = 0u, best_bad = 0xFFFFFFFFu;
    for (i = 0; i < t->rx_n; i++) {
        uint32_t mask = t->rx[i * SPINN_TRX_WORDS + SPINN_TRX_MASK], free = 0u;
        while (free < 32u && !((mask >> free) & 1u)) free++;
        if (free < lo) lo = free;
        if (free > hi) hi = free;
    }
    for (s = lo; s <= hi && s < 32u; s++) {
        uint32_t bad = spinn_trx_map_with(t, s);
        if (bad < best_bad) best_bad = bad, best = s;
    }
    t->map_shift = best;
    (void)spinn_trx_map_with(t, best);
    for (i = 0; i < SPINN_TRX_MAP; i++)
        if (t->map[i] == 0xFFu) t->map[i] = 0u;
}

/* Receive entries rx[0 .. n_rx) (valid) for spinn_tensor_receive_rc. buffers:
 * each input's slot 0 (n_buffers of them, 1 or 2); slot_stride: int16 values per
 * slot of an input; rows_per_buffer: stream rows of each input; rows: workspace of
 * spinn_trx_rows_bytes(n_rx) bytes. */
static inline void spinn_trx_prepare(spinn_trx_rows_t *t, const uint32_t *rx, uint32_t n_rx,
                                     int16_t *const *buffers, uint32_t n_buffers, uint32_t slot_stride,
                                     uint32_t rows_per_buffer, spinn_trx_row_t *rows) {
    uint32_t i;
    t->rx = rx;
    t->rx_n = n_rx;
    t->rx_buffers[0] = buffers[0];
    t->rx_buffers[1] = n_buffers > 1u ? buffers[1] : buffers[0];
    t->rx_slot_stride = slot_stride;
    t->rx_rows_per_buffer = rows_per_buffer;
    t->rx_disjoint = spinn_match_disjoint(rx, n_rx, SPINN_TRX_WORDS);
    t->rc = rows;
    spinn_trx_map(t);
    for (i = 0; i < (n_rx ? n_rx : 1u); i++) {
        spinn_trx_row_t *r = &rows[i];
        r->pn = 0u; /* no row yet: matches no key */
        r->key = r->half = r->packed = r->step = r->rows = r->nw = r->slot = 0u;
        r->key0 = r->cstep = r->cstride = r->c_left = r->c_left0 = 0u;
        r->key_o = r->rows_o = r->s_shift = 0u;
        r->base = r->base0 = r->base_o = 0;
        r->count = r->count_o = 0u;
    }
    t->rc_last = 0u;
}

/* Make r (the entry's row) the row (slot, channel, row of the entry) of a key that matched
 * `entry` (of a disjoint table whose mask leaves the row and pair fields free: then every
 * key of the row matches only it), if the row is a value row inside the buffer block:
 * which of its pairs store both values, and where, and which channels and rows follow it.
 * Returns 1, or 0 (r is left as it was). */
static inline int spinn_trx_row_fill(spinn_trx_row_t *r, const spinn_trx_rows_t *t, const spinn_stream_t *st,
                                     const uint32_t *entry, uint32_t key) {
    uint32_t local = key & ~entry[SPINN_TRX_MASK];
    uint32_t s_shift = entry[SPINN_TRX_SLOT_SHIFT] & SPINN_RX_SHIFT_MASK, c_shift = entry[SPINN_TRX_C_SHIFT];
    uint32_t packing = spinn_rx_packing(entry[SPINN_TRX_SLOT_SHIFT]);
    uint32_t h_shift = entry[SPINN_TRX_H_SHIFT], p_mask = (1u << h_shift) - 1u;
    /* a mask covering a bit of the row and pair fields (valid, though no builder makes one):
     * keys of the row would match no entry, the general path only */
    if (entry[SPINN_TRX_MASK] & ((1u << c_shift) - 1u)) return 0;
    uint32_t s = local >> s_shift, nw = entry[SPINN_TRX_DST_NW], b = entry[SPINN_TRX_BUFFER];
    uint32_t c_max = (1u << (s_shift - c_shift)) - 1u, c_local = (local >> c_shift) & c_max;
    uint32_t dc = entry[SPINN_TRX_SRC_C0] + c_local - entry[SPINN_TRX_DST_C0];
    uint32_t h_max = (1u << (c_shift - h_shift)) - 1u, h_local = (local >> h_shift) & h_max;
    uint32_t dh = entry[SPINN_TRX_SRC_H0] + h_local - entry[SPINN_TRX_DST_H0];
    /* values: all at most SPINN_MAX_DIM, so int32 holds every step */
    int32_t w_off = (int32_t)entry[SPINN_TRX_SRC_W0] - (int32_t)entry[SPINN_TRX_DST_W0];
    int32_t room = (int32_t)nw - 2 - w_off, lo, hi, half;
    uint32_t packed = 0u;
    if (s >= st->n_slots || dc >= entry[SPINN_TRX_DST_NC] || dh >= entry[SPINN_TRX_DST_NH]) return 0;
    if (packing) { /* quad q stores its four values iff 4q + 3 < src_nw and 0 <= 4q + w_off <= nw - 4 */
        room = (int32_t)nw - 4 - w_off;
        lo = w_off >= 0 ? 0 : (3 - w_off) >> 2;
        hi = room < 0 ? 0 : (room >> 2) + 1;
        if (hi > (int32_t)(entry[SPINN_TRX_SRC_NW] >> 2)) hi = (int32_t)(entry[SPINN_TRX_SRC_NW] >> 2);
        if (h_shift < 16u && hi > (int32_t)(1u << h_shift)) hi = (int32_t)(1u << h_shift);
        if (hi <= lo) return 0;
        packed = (uint32_t)(hi - lo) << 16 | spinn_pack8_sign(packing) << 8;
        half = 0;
        lo <<= 1; /* the buffer offset below counts pairs: a quad is two */
        hi = lo;  /* pn 0: the pair checks take no key of it */
    } else {
    /* pair p stores both values iff 2p + 1 < src_nw and 0 <= 2p + w_off <= nw - 2 */
    lo = w_off >= 0 ? 0 : (1 - w_off) >> 1;
    hi = room < 0 ? 0 : (room >> 1) + 1;
    if (hi > (int32_t)(entry[SPINN_TRX_SRC_NW] >> 1)) hi = (int32_t)(entry[SPINN_TRX_SRC_NW] >> 1);
    /* the pair after the last whole one stores its low value only if that is a source value
     * inside the block (its high value is not both, or the pair would be whole) */
    half = 2 * hi < (int32_t)entry[SPINN_TRX_SRC_NW] && 2 * hi + w_off >= 0 && 2 * hi + w_off <= (int32_t)nw - 1;
    /* pairs the field holds (so no key of another row is within rc_pn + half of rc_key) */
    if (h_shift < 16u && hi + half > (int32_t)(1u << h_shift)) {
        if (hi > (int32_t)(1u << h_shift)) hi = (int32_t)(1u << h_shift);
        half = 0;
    }
    if (hi <= lo) return 0; /* no pair of the row is whole in the block */
    }
    r->key = (key & ~p_mask) + (uint32_t)(packing ? lo >> 1 : lo);
    r->pn = (uint32_t)(hi - lo);
    r->half = (uint32_t)half;
    r->packed = packed;
    r->step = p_mask + 1u;
    /* rows after this one of the block whose row field does not carry */
    r->rows = entry[SPINN_TRX_DST_NH] - 1u - dh;
    if (r->rows > h_max - h_local) r->rows = h_max - h_local;
    r->nw = nw;
    r->slot = s;
    r->base = (int32_t)(t->rx_buffers[b] - t->rx_buffers[0]) +
              (int32_t)(s * t->rx_slot_stride + (dc * entry[SPINN_TRX_DST_NH] + dh) * nw) + 2 * lo + w_off;
    r->count = s * st->n_rows + dh + b * t->rx_rows_per_buffer;
    /* channels after this one in the block whose channel field does not carry */
    r->c_left = entry[SPINN_TRX_DST_NC] - 1u - dc;
    if (r->c_left > c_max - c_local) r->c_left = c_max - c_local;
    r->c_left0 = r->c_left;
    r->cstep = 1u << c_shift;
    r->cstride = entry[SPINN_TRX_DST_NH] * nw;
    r->key0 = r->key;
    r->base0 = r->base;
    /* where the producer's samples begin (taken to be here; a wrong guess costs a fill) */
    r->s_shift = s_shift;
    r->key_o = r->key - (s << s_shift);
    r->rows_o = r->rows;
    r->base_o = r->base - (int32_t)(s * t->rx_slot_stride);
    r->count_o = r->count - s * st->n_rows;
    return 1;
}

/* 1 if the key (of a sample's slot, not a marker) is of a row of the entry outside the
 * buffer block (values a producer sends to other cores too): the general path would store
 * nothing of it. */
static inline int spinn_trx_not_ours(const uint32_t *entry, uint32_t key, uint32_t n_slots) {
    uint32_t local = key & ~entry[SPINN_TRX_MASK];
    uint32_t s_shift = entry[SPINN_TRX_SLOT_SHIFT] & SPINN_RX_SHIFT_MASK, c_shift = entry[SPINN_TRX_C_SHIFT];
    uint32_t h_shift = entry[SPINN_TRX_H_SHIFT];
    uint32_t c = entry[SPINN_TRX_SRC_C0] + ((local >> c_shift) & ((1u << (s_shift - c_shift)) - 1u));
    uint32_t h = entry[SPINN_TRX_SRC_H0] + ((local >> h_shift) & ((1u << (c_shift - h_shift)) - 1u));
    return (local >> s_shift) < n_slots &&
           (c - entry[SPINN_TRX_DST_C0] >= entry[SPINN_TRX_DST_NC] || h - entry[SPINN_TRX_DST_H0] >= entry[SPINN_TRX_DST_NH]);
}

/* The key begins a sample of the row's producer in slot s < n_slots (spinn_trx_row_t): make
 * r that row, as spinn_trx_row_fill would, and return 1; else 0. */
static inline int spinn_trx_row_restart(spinn_trx_row_t *r, const spinn_trx_rows_t *t, const spinn_stream_t *st,
                                        uint32_t key) {
    uint32_t d = key - r->key_o, s = d >> r->s_shift;
    if (r->pn + r->half + (r->packed >> 16) == 0u || s << r->s_shift != d || s >= st->n_slots) return 0;
    r->slot = s;
    r->key = r->key0 = key;
    r->rows = r->rows_o;
    r->c_left = r->c_left0;
    r->base = r->base0 = r->base_o + (int32_t)(s * t->rx_slot_stride);
    r->count = r->count_o + s * st->n_rows;
    return 1;
}

/* The receive path every tensor kernel shares, for a key that matched entry e of rx (-1:
 * none): store its values into the entry's buffer of the slot (spinn_trx_store), count
 * them against their input row (the rows of buffer 1 follow buffer 0's: +
 * rows_per_buffer), and return the slot if its next output row became computable and no
 * compute is pending for it (spinn_stream_trigger); else -1. With a spinn_trx_prepare'd
 * t (else 0) whose table is disjoint, the entry's row becomes the packet's row
 * (spinn_trx_row_fill) first, for spinn_tensor_receive_rc. */
static inline int32_t spinn_tensor_receive_at(const uint32_t *rx, int32_t e, uint32_t key, uint32_t payload,
                                              int16_t *const *buffers, uint32_t slot_stride,
                                              uint32_t rows_per_buffer, spinn_stream_t *st,
                                              spinn_counters_t *counters, spinn_row_ready_fn row_ready,
                                              const void *kernel, spinn_trx_rows_t *t) {
    int32_t n, r;
    const uint32_t *entry;
    uint32_t slot, row, lost = 0u;
    counters->packets_in++;
    st->rx_slot = -1;
    if (e < 0) {
        counters->dropped++;
        return -1;
    }
    entry = rx + (uint32_t)e * SPINN_TRX_WORDS;
    if (t && t->rx_disjoint && spinn_trx_row_fill(&t->rc[e], t, st, entry, key)) t->rc_last = (uint32_t)e;
    n = spinn_trx_store(entry, key, payload, buffers, slot_stride, st->n_slots, &slot, &row, &lost);
    if (n < 0) {
        counters->dropped++;
        return -1;
    }
    if (n == 0) return -1;
    r = spinn_stream_received(st, slot, row + entry[SPINN_TRX_BUFFER] * rows_per_buffer, (uint32_t)n, row_ready,
                              kernel);
    if (lost) st->rx_slot |= SPINN_SLOT_LOST;
    return r;
}

/* spinn_tensor_receive_at of the first entry of rx[0 .. n_rx) the key matches (the
 * reference the fast path is tested against: c_runtime/tests/trx_fuzz.c). */
static inline int32_t spinn_tensor_receive(const uint32_t *rx, uint32_t n_rx, uint32_t key, uint32_t payload,
                                           int16_t *const *buffers, uint32_t slot_stride,
                                           uint32_t rows_per_buffer, spinn_stream_t *st,
                                           spinn_counters_t *counters, spinn_row_ready_fn row_ready,
                                           const void *kernel, spinn_trx_rows_t *t) {
    return spinn_tensor_receive_at(rx, spinn_trx_match(rx, n_rx, key), key, payload, buffers, slot_stride,
                                   rows_per_buffer, st, counters, row_ready, kernel, t);
}

/* The general path of spinn_tensor_receive_rc, entry e (-1: none) looked up: a producer's
 * first packet of a run, strays. Not inlined (the lookup's frame stays small), and cold
 * (compiled for size: ITCM). */
static SPINN_COLD __attribute__((noinline, unused)) int32_t spinn_tensor_receive_general(
    spinn_trx_rows_t *t, int32_t e, spinn_stream_t *st, spinn_counters_t *counters, uint32_t key, uint32_t payload,
    spinn_row_ready_fn row_ready, const void *kernel) {
    counters->rx_general++; /* the cycle model charges these their longer path */
    return spinn_tensor_receive_at(t->rx, e, key, payload, t->rx_buffers, t->rx_slot_stride, t->rx_rows_per_buffer,
                                   st, counters, row_ready, kernel, t);
}

/* The fast path's packet completed its row (or its slot's sample): n values of row r,
 * stored; count them as the general path does (spinn_stream_received). Not inlined: once
 * per row, off the common path. */
static SPINN_COLD __attribute__((noinline, unused)) int32_t spinn_trx_row_complete(spinn_stream_t *st,
                                                                       const spinn_trx_row_t *r, uint32_t n,
                                                                       spinn_row_ready_fn row_ready,
                                                                       const void *kernel) {
    uint32_t row = r->count - r->slot * st->n_rows;
    return spinn_stream_received(st, r->slot, row, n, row_ready, kernel);
}

#define SPINN_TRX_NOT_MINE (-2) /* spinn_trx_row_take: the key is not of the row */

/* What spinn_trx_row_take takes of a row: */
#define SPINN_TRX_FAST 0  /* pairs and half pairs completing neither their row nor their slot's sample (inline) */
#define SPINN_TRX_PAIRS 1 /* pairs and half pairs, whatever they complete */
#define SPINN_TRX_QUADS 2 /* 8-bit quads, whatever they complete (a row with packed set) */

/* A key of row r (or of the row its producer sends after it, which r then moves on to:
 * spinn_trx_row_t) of the kind `mode` takes: stored and counted; returns what the general
 * path would (spinn_stream_received: the slot to compute, or -1); SPINN_TRX_NOT_MINE for
 * other keys (the row is left as it is, but for a move to the row after it). `mode` is a
 * constant at every call: each inlined copy is only its own case. */
static inline __attribute__((always_inline)) int32_t spinn_trx_row_take(const spinn_trx_rows_t *t,
                                                                       spinn_trx_row_t *r, spinn_stream_t *st,
                                                                       spinn_counters_t *counters, uint32_t key,
                                                                       uint32_t payload, spinn_row_ready_fn row_ready,
                                                                       const void *kernel, const int mode) {
    uint32_t p = key - r->key, vals = mode == SPINN_TRX_QUADS ? 4u : 2u, q;
    uint32_t span = mode == SPINN_TRX_QUADS ? r->packed >> 16 : r->pn + r->half;
    if (p >= span) {
        if (r->c_left != 0u && (q = p - r->cstep) < span) { /* the same row of the next channel */
            p = q;
            r->key += r->cstep;
            r->base += (int32_t)r->cstride;
            r->c_left--;
        } else if (mode != SPINN_TRX_FAST && r->rows != 0u && (q = key - r->key0 - r->step) < span) { /* the sweep's next row */
            p = q;
            r->key = r->key0 += r->step;
            r->base = r->base0 += (int32_t)r->nw;
            r->c_left = r->c_left0;
            r->rows--;
            r->count++;
        } else {
            return SPINN_TRX_NOT_MINE;
        }
    }
    {
        uint32_t slot = r->slot, n = mode == SPINN_TRX_QUADS ? 4u : p < r->pn ? 2u : 1u, j;
        volatile uint32_t *c = st->counts + r->count;
        uint32_t count = *c + n, received = st->received[slot] + n;
        int16_t *b;
        if (mode == SPINN_TRX_FAST && (count == st->row_values || received == st->total_values))
            return SPINN_TRX_NOT_MINE;
        b = t->rx_buffers[0] + r->base + (int32_t)(p * vals);
        if (n == 4u) {
            uint32_t sign = (r->packed >> 8) & 0x80u;
            for (j = 0; j < 4u; j++) b[j] = spinn_unpack8(payload, j, sign);
        } else {
            b[0] = (int16_t)spinn_lo16(payload);
            if (n == 2u) b[1] = (int16_t)spinn_hi16(payload);
        }
        counters->packets_in++;
        if (count != st->row_values && received != st->total_values) {
            st->rx_slot = (int32_t)slot;
            *c = count;
            st->received[slot] = received;
            return -1; /* ready 0: spinn_stream_trigger's -1 */
        }
        return spinn_trx_row_complete(st, r, n, row_ready, kernel);
    }
}

/* A packet the inline fast path did not take: a pair of its entry's row (or of the row
 * after it) that completes a row, its half pair, a quad of 8-bit values, or a pair of a
 * row whose entry the map did not name; else the general path (the entry's row becomes the
 * packet's). Its entry: the map's if the key matches it, else the first that matches.
 * Not inlined: one copy (ITCM), off the common path. */
static __attribute__((noinline, unused)) int32_t spinn_tensor_receive_other_rows(
    spinn_trx_rows_t *t, spinn_stream_t *st, spinn_counters_t *counters, uint32_t key, uint32_t payload,
    spinn_row_ready_fn row_ready, const void *kernel) {
    uint32_t m = t->map[(key >> t->map_shift) & (SPINN_TRX_MAP - 1u)];
    const uint32_t *at = t->rx + m * SPINN_TRX_WORDS;
    int32_t e, r;
    counters->rx_lookups++; /* the cycle model charges these a lookup and each entry compared */
    if (t->rx_disjoint && m < t->rx_n && (key & at[SPINN_TRX_MASK]) == at[SPINN_TRX_KEY]) {
        e = (int32_t)m; /* the map's entry: the only one the key matches */
        counters->rx_scanned++;
    } else {
        e = spinn_trx_match(t->rx, t->rx_n, key);
        counters->rx_scanned += e >= 0 ? (uint32_t)e + 1u : t->rx_n;
    }
    if (e >= 0 && t->rx_disjoint) {
        spinn_trx_row_t *row = &t->rc[e];
        uint32_t tries = 2u; /* the row, then its producer's next sample's first row */
        do {
            r = row->packed ? spinn_trx_row_take(t, row, st, counters, key, payload, row_ready, kernel, SPINN_TRX_QUADS)
                            : spinn_trx_row_take(t, row, st, counters, key, payload, row_ready, kernel, SPINN_TRX_PAIRS);
        } while (r == SPINN_TRX_NOT_MINE && --tries && spinn_trx_row_restart(row, t, st, key));
        if (r != SPINN_TRX_NOT_MINE) {
            t->rc_last = (uint32_t)e;
            return r;
        }
        /* a row outside the buffer block (values the producer sends to other cores too):
         * as the general path takes it (nothing stored, no row), but not as long */
        if (spinn_trx_not_ours(t->rx + (uint32_t)e * SPINN_TRX_WORDS, key, st->n_slots)) {
            counters->packets_in++;
            st->rx_slot = -1;
            return -1;
        }
    }
    return spinn_tensor_receive_general(t, e, st, counters, key, payload, row_ready, kernel);
}

/* spinn_tensor_receive after spinn_trx_prepare, with a fast path: a pair of the row of the
 * entry the last packet took, or of the row its producer sends next (a run of one
 * producer's packets comes together), both values in the block (all others take
 * spinn_tensor_receive_other_rows; the packet completing a row counts it as the general
 * path does). */
static inline __attribute__((always_inline)) int32_t spinn_tensor_receive_rc(spinn_trx_rows_t *t,
                                                                             spinn_stream_t *st,
                                                                             spinn_counters_t *counters,
                                                                             uint32_t key, uint32_t payload,
                                                                             spinn_row_ready_fn row_ready,
                                                                             const void *kernel) {
    uint32_t e;
    if (spinn_trx_row_take(t, &t->rc[t->rc_last], st, counters, key, payload, row_ready, kernel, SPINN_TRX_FAST) !=
        SPINN_TRX_NOT_MINE)
        return -1;
    /* producers sending at once: the row of the entry the key is likely of */
    e = t->map[(key >> t->map_shift) & (SPINN_TRX_MAP - 1u)];
    if (e != t->rc_last &&
        spinn_trx_row_take(t, &t->rc[e], st, counters, key, payload, row_ready, kernel, SPINN_TRX_FAST) !=
            SPINN_TRX_NOT_MINE) {
        t->rc_last = e;
        return -1;
    }
    return spinn_tensor_receive_other_rows(t, st, counters, key, payload, row_ready, kernel);
}

/* The sample in the slot has left this tile: free the slot for the next one. */
static inline void spinn_stream_release(spinn_stream_t *st, uint32_t slot) {
    st->next_row[slot] = st->n_out_rows;
    spinn_stream_finish_if_done(st, slot);
}

/* The slot holds part of a sample (inputs in, or outputs still to send). */
static inline int spinn_stream_busy(const spinn_stream_t *st, uint32_t slot) {
    return st->received[slot] != 0u || st->next_row[slot] != 0u;
}

/* Lost samples (spinn_slots.h): force a partly filled slot complete. Its rows
 * count as arrived (their stale values are never sent as values: the slot's
 * outputs leave as lost markers); returns the slot for compute, or -1 if it
 * holds nothing or has nothing left to compute. */
static inline int32_t spinn_stream_force(spinn_stream_t *st, uint32_t slot) {
    uint32_t i;
    volatile uint32_t *c;
    if (slot >= st->n_slots || !spinn_stream_busy(st, slot)) return -1;
    c = st->counts + slot * st->n_rows;
    for (i = 0; i < st->n_rows; i++) c[i] = st->row_values;
    st->received[slot] = st->total_values;
    if (st->next_row[slot] >= st->n_out_rows) {
        spinn_stream_finish_if_done(st, slot);
        return -1;
    }
    return spinn_stream_trigger(st, slot, 1);
}

/* The three lost-sample hooks of a tensor kernel whose state is s->st. */
#define SPINN_STREAM_SLOT_HOOKS(name)                                                                     \
    int32_t spinn_##name##_rx_slot(const spinn_##name##_t *s) { return s->st.rx_slot; }                   \
    int spinn_##name##_busy(const spinn_##name##_t *s, uint32_t slot) {                                    \
        return spinn_stream_busy(&s->st, slot);                                                            \
    }                                                                                                      \
    SPINN_COLD int32_t spinn_##name##_release(spinn_##name##_t *s, uint32_t slot) { return spinn_stream_force(&s->st, slot); }

/* Send one packet of an output row. last: the sample's last packet from this
 * tile, so the slot is released first (the next sample's inputs may already be
 * arriving). A failed send releases the slot too (the sample is lost
 * downstream and the host reports it). Returns 0 or -1. */
static inline int spinn_tensor_send(spinn_stream_t *st, uint32_t slot, int last, uint32_t key, uint32_t payload,
                                    spinn_send_fn send, void *ctx, spinn_counters_t *counters) {
    if (last) spinn_stream_release(st, slot);
    if (send(ctx, key, payload) != 0) {
        if (!last) spinn_stream_release(st, slot);
        return -1;
    }
    counters->packets_out++;
    return 0;
}

/* Send the int16 output y of column ow of a row of out_w values whose packets
 * have key `key` (pair index to be OR-ed in): an even column waits in *pending
 * for its odd neighbour, the pair (or an odd row's last value with a zero in
 * the high half) leaves as one packet. last: see spinn_tensor_send. */
static inline int spinn_tensor_send16(spinn_stream_t *st, uint32_t slot, int last, uint32_t key, uint32_t ow,
                                      uint32_t out_w, int32_t y, int32_t *pending, spinn_send_fn send, void *ctx,
                                      spinn_counters_t *counters) {
    if (!(ow & 1u) && ow + 1u < out_w) {
        *pending = y;
        return 0;
    }
    return spinn_tensor_send(st, slot, last, key | (ow >> 1),
                             (ow & 1u) ? spinn_pack16(*pending, y) : spinn_pack16(y, 0), send, ctx, counters);
}

/* A kernel's computation and sending of its output row r of the slot. */
typedef int (*spinn_row_fn)(void *kernel, uint32_t slot, uint32_t r, spinn_send_fn send, void *ctx);

/* The compute every tensor kernel shares: clear the pending flag first (a row
 * completing meanwhile triggers again), then compute every ready row in order. */
static inline int spinn_tensor_compute(spinn_stream_t *st, uint32_t slot, spinn_row_ready_fn row_ready,
                                       spinn_row_fn row, void *kernel, spinn_send_fn send, void *ctx,
                                       spinn_counters_t *counters) {
    uint32_t r;
    st->pending[slot] = 0u;
    while ((r = st->next_row[slot]) < st->n_out_rows && row_ready(kernel, slot, r)) {
        if (row(kernel, slot, r, send, ctx) != 0) return -1;
        if (r + 1u == st->n_out_rows) {
            counters->computes++;
            break;
        }
        st->next_row[slot] = r + 1u;
    }
    return 0;
}

/* The key fields of the block a kernel sends: its config words out_key,
 * out_slot_shift, out_c_shift, out_h_shift (consecutive in every tensor kernel).
 * A sender whose rows go to different cores has one multicast partition per
 * set of readers (tvm_spinn.machine.builder), each with its own key: its config
 * then ends with a row-key table, n_rows and one key per row of its block
 * (row c_local * n_h + h_local), which replaces out_key row by row. */
typedef struct {
    uint32_t key, slot_shift, c_shift, h_shift;
    uint32_t n_h;              /* rows per channel of the block (the table's stride) */
    const uint32_t *row_keys;  /* 0: every row sends with key */
} spinn_block_keys_t;

static inline void spinn_block_keys_read(spinn_block_keys_t *k, const uint32_t *words) {
    k->key = words[0];
    k->slot_shift = words[1];
    k->c_shift = words[2];
    k->h_shift = words[3];
    k->n_h = 0u;
    k->row_keys = 0;
}

/* 1 if the n_tail words after a config are empty or a row-key table of n_rows
 * keys whose fields (below slot_shift) are clear. */
static inline int spinn_row_keys_ok(const uint32_t *tail, uint64_t n_tail, uint64_t n_rows, uint32_t slot_shift) {
    uint32_t i, fields = slot_shift > 31u ? 0xFFFFFFFFu : (1u << slot_shift) - 1u;
    if (n_tail == 0u) return 1;
    if (n_tail != n_rows + 1u || tail[0] != n_rows) return 0;
    for (i = 1u; i <= (uint32_t)n_rows; i++)
        if (tail[i] & fields) return 0;
    return 1;
}

/* Use the row-key table of a checked tail (n_tail 0: none). */
static inline void spinn_block_keys_rows(spinn_block_keys_t *k, const uint32_t *tail, uint32_t n_tail, uint32_t n_h) {
    k->n_h = n_h;
    k->row_keys = n_tail ? tail + 1 : 0;
}

/* The kernels' output key for (slot, c_local, h_local), pair to be OR-ed in. */
static inline uint32_t spinn_tensor_key(const spinn_block_keys_t *k, uint32_t slot, uint32_t c_local,
                                        uint32_t h_local) {
    uint32_t base = k->row_keys ? k->row_keys[c_local * k->n_h + h_local] : k->key;
    return base | (slot << k->slot_shift) | (c_local << k->c_shift) | (h_local << k->h_shift);
}

/* 1 if a block of nc x nh x nw values and n_slots slots fits the key fields
 * (shifts ordered, out_key clear of them). */
static inline int spinn_tensor_fields_ok(uint32_t out_key, uint32_t n_slots, uint32_t slot_shift, uint32_t c_shift,
                                         uint32_t h_shift, uint32_t nc, uint32_t nh, uint32_t nw) {
    if (slot_shift > 31u || c_shift > slot_shift || h_shift > c_shift) return 0;
    if (((nc - 1u) >> (slot_shift - c_shift)) != 0u || ((nh - 1u) >> (c_shift - h_shift)) != 0u ||
        ((((nw + 1u) >> 1) - 1u) >> h_shift) != 0u)
        return 0;
    if (((n_slots - 1u) >> (31u - slot_shift)) > 1u) return 0; /* slot field overflows the key */
    return (out_key & ((1u << slot_shift) - 1u)) == 0u;
}

/* ---- pooling: the pool tile and the pooled mode of the conv tile ---------- */

/* A pool over an input of in_h x in_w values per channel (the pool tile's spec). */
typedef struct {
    uint32_t in_h, in_w, kh, kw, sh, sw, pad_top, pad_left, pad_bottom, pad_right;
    uint32_t mode, count_include_pad, recip_shift;
    const uint32_t *recip; /* avg: recip[0 .. kh * kw]; max: 0 */
} spinn_pool_params_t;

/* Config words of a pool after its input size: kh, kw, sh, sw, pad_top,
 * pad_left, pad_bottom, pad_right, mode, count_include_pad, recip_shift. */
#define SPINN_POOL_PARAM_WORDS 11u

/* Read the SPINN_POOL_PARAM_WORDS words at w; recip stays 0 (set by the caller). */
static inline void spinn_pool_params_read(spinn_pool_params_t *p, uint32_t in_h, uint32_t in_w, const uint32_t *w) {
    p->in_h = in_h;
    p->in_w = in_w;
    p->kh = w[0];
    p->kw = w[1];
    p->sh = w[2];
    p->sw = w[3];
    p->pad_top = w[4];
    p->pad_left = w[5];
    p->pad_bottom = w[6];
    p->pad_right = w[7];
    p->mode = w[8];
    p->count_include_pad = w[9];
    p->recip_shift = w[10];
    p->recip = 0;
}

/* 1 if output rows [oh0, oh0 + n_oh) x out_w of the pool can be computed safely
 * from the buffered input rows [ih0, ih0 + n_ih): every size, coordinate,
 * stride and pad at most SPINN_MAX_DIM, sizes and strides nonzero, mode and
 * count_include_pad valid, recip_shift <= 32, kh * kw <= 65535 (window sums fit
 * int32), window coordinates fit int32, ih0 + n_ih <= in_h and every output
 * row's window rows buffered. */
static inline int spinn_pool_params_ok(const spinn_pool_params_t *p, uint32_t ih0, uint32_t n_ih, uint32_t oh0,
                                       uint32_t n_oh, uint32_t out_w) {
    uint32_t dims[15], i;
    dims[0] = p->in_h;
    dims[1] = p->in_w;
    dims[2] = p->kh;
    dims[3] = p->kw;
    dims[4] = p->sh;
    dims[5] = p->sw;
    dims[6] = p->pad_top;
    dims[7] = p->pad_left;
    dims[8] = p->pad_bottom;
    dims[9] = p->pad_right;
    dims[10] = ih0;
    dims[11] = n_ih;
    dims[12] = oh0;
    dims[13] = n_oh;
    dims[14] = out_w;
    for (i = 0; i < 15u; i++)
        if (dims[i] > SPINN_MAX_DIM) return 0;
    if (p->in_h == 0u || p->in_w == 0u || p->kh == 0u || p->kw == 0u || p->sh == 0u || p->sw == 0u || n_ih == 0u ||
        n_oh == 0u || out_w == 0u || p->mode > SPINN_POOL_AVG || p->count_include_pad > 1u || p->recip_shift > 32u)
        return 0;
    if (ih0 + n_ih > p->in_h || p->kh * p->kw > 0xFFFFu) return 0;
    if ((uint64_t)(oh0 + n_oh) * p->sh + p->kh + p->in_h + p->pad_bottom > 0x7FFFFFFFu ||
        (uint64_t)out_w * p->sw + p->kw + p->in_w + p->pad_right > 0x7FFFFFFFu)
        return 0;
    return spinn_window_band_ok(oh0, n_oh, p->sh, p->pad_top, p->kh, p->in_h, ih0, n_ih);
}

/* Words of the pool's recip table (avg: kh * kw + 1; max: none); after spinn_pool_params_ok. */
static inline uint32_t spinn_pool_recip_words(const spinn_pool_params_t *p) {
    return p->mode == SPINN_POOL_AVG ? p->kh * p->kw + 1u : 0u;
}

/* [lo, hi) of window offsets k < n_k whose coordinate start + k lies in [from, to). */
static inline void spinn_window_range(int32_t start, uint32_t n_k, int32_t from, int32_t to, uint32_t *lo,
                                      uint32_t *hi) {
    int32_t a = from - start, b = to - start;
    if (a < 0) a = 0;
    if (b > (int32_t)n_k) b = (int32_t)n_k;
    if (b < a) b = a;
    *lo = (uint32_t)a;
    *hi = (uint32_t)b;
}

/* Compute output row oh (out_w values) of one channel of the pool and send it
 * as int16 pairs with the row's key (spinn_tensor_send16; last: the row ends
 * the tile's sample, see spinn_tensor_send). x: the channel's input rows from
 * row ih0 on, in_w values each (every row the windows read). Counts the
 * outputs. Returns 0 or -1 (a failed send). */
static inline int spinn_pool_send_row(const spinn_pool_params_t *p, const int16_t *x, uint32_t ih0, uint32_t oh,
                                      uint32_t out_w, spinn_stream_t *st, uint32_t slot, int last, uint32_t key,
                                      spinn_send_fn send, void *ctx, spinn_counters_t *counters) {
    int32_t iy0 = (int32_t)(oh * p->sh) - (int32_t)p->pad_top;
    uint32_t ow, ky, kx, ky_lo, ky_hi, py_lo, py_hi;
    int32_t pending = 0;
    spinn_window_range(iy0, p->kh, 0, (int32_t)p->in_h, &ky_lo, &ky_hi);
    spinn_window_range(iy0, p->kh, -(int32_t)p->pad_top, (int32_t)(p->in_h + p->pad_bottom), &py_lo, &py_hi);
    for (ow = 0; ow < out_w; ow++) {
        int32_t ix0 = (int32_t)(ow * p->sw) - (int32_t)p->pad_left, y = 0;
        uint32_t kx_lo, kx_hi;
        spinn_window_range(ix0, p->kw, 0, (int32_t)p->in_w, &kx_lo, &kx_hi);
        if (kx_hi > kx_lo && ky_hi > ky_lo) {
            int32_t m = SPINN_Q_MIN, sum = 0;
            uint32_t n;
            for (ky = ky_lo; ky < ky_hi; ky++) {
                const int16_t *xr =
                    x + ((uint32_t)(iy0 + (int32_t)ky) - ih0) * p->in_w + (uint32_t)(ix0 + (int32_t)kx_lo);
                for (kx = 0; kx < kx_hi - kx_lo; kx++) {
                    if (xr[kx] > m) m = xr[kx];
                    sum += xr[kx];
                }
            }
            if (p->mode == SPINN_POOL_MAX) {
                y = m;
            } else {
                if (p->count_include_pad) {
                    uint32_t px_lo, px_hi;
                    spinn_window_range(ix0, p->kw, -(int32_t)p->pad_left, (int32_t)(p->in_w + p->pad_right),
                                       &px_lo, &px_hi);
                    n = (py_hi - py_lo) * (px_hi - px_lo);
                } else {
                    n = (ky_hi - ky_lo) * (kx_hi - kx_lo);
                }
                /* |sum| <= 2^31, recip < 2^32: the product fits int64 */
                y = spinn_sat16(spinn_round_shift((int64_t)sum * (int64_t)p->recip[n], p->recip_shift));
            }
        }
        if (spinn_tensor_send16(st, slot, last && ow + 1u == out_w, key, ow, out_w, y, &pending, send, ctx,
                                counters) != 0)
            return -1;
    }
    counters->outputs += out_w;
    return 0;
}

/* ---- kernels ------------------------------------------------------------- */

typedef struct {
    uint32_t n_ic, in_h, in_w, ic0, ih0, n_ih, oc0, n_oc, oh0, n_oh, out_w, kh, kw, sh, sw;
    uint32_t pad_top, pad_left, depthwise, activation, n_slots; /* depthwise: multiplier m, 0 dense */
    uint32_t mode, partial_shift, n_rx;
    spinn_block_keys_t out; /* the block it sends */
    uint32_t n_icpo;       /* input channels per output channel: depthwise ? 1 : n_ic */
    uint32_t phase0;       /* depthwise: oc0 - ic0 * depthwise, the first output's phase */
    uint32_t words_per_oc; /* weight words per output channel */
    uint32_t block;        /* int32 accumulation block in weight words (proved by the encoder), 0: int64 */
    uint32_t dw3_words;    /* 3x3 stride-1 depthwise: words per padded input row, else 0 */
    uint32_t kx_total;     /* in-row kernel columns summed over the output columns (the MACs counted) */
    uint32_t ow_in_lo, ow_in_hi; /* the output columns whose windows lie inside the input row */
    const uint32_t *rx, *weights, *params, *table; /* params, table: 0 if partial */
    int16_t *inputs;       /* n_slots x n_ic x n_ih x in_w */
    int16_t *cols;         /* im2row of one output row: out_w x 2 * words_per_oc, zero-padded windows */
    /* pooled mode only: */
    uint32_t ph0, n_ph, pool_out_w;
    spinn_pool_params_t pool; /* in_h = conv_h, in_w = out_w */
    int16_t *conv_out;        /* n_slots x n_oc x n_oh x out_w conv outputs */
    uint32_t *pool_next;      /* per slot: next local pool row to send */
    spinn_stream_t st;
    spinn_trx_rows_t rxr; /* spinn_tensor_receive_rc */
    spinn_counters_t counters;
} spinn_conv_tile_t;

typedef struct {
    uint32_t n_c, c0, ih0, n_ih, oh0, n_oh, out_w, n_slots;
    uint32_t n_rx;
    spinn_block_keys_t out; /* the block it sends */
    spinn_pool_params_t pool;
    const uint32_t *rx;
    int16_t *inputs; /* n_slots x n_c x n_ih x in_w */
    spinn_stream_t st;
    spinn_trx_rows_t rxr; /* spinn_tensor_receive_rc */
    spinn_counters_t counters;
} spinn_pool_tile_t;

typedef struct {
    uint32_t c0, n_c, h, w, h0, n_h, activation, shift, n_slots;
    int32_t mult_a, mult_b;
    uint32_t n_rx;
    spinn_block_keys_t out; /* the block it sends */
    const uint32_t *rx, *table; /* table: tanh / sigmoid only */
    int16_t *inputs[2]; /* a and b: n_slots x n_c x n_h x w each */
    spinn_stream_t st;  /* rows: a's n_h then b's n_h */
    spinn_trx_rows_t rxr; /* spinn_tensor_receive_rc */
    spinn_counters_t counters;
} spinn_add_tile_t;

#define SPINN_CONV_REDUCE_RX_WORDS 2u /* key, mask */

typedef struct {
    uint32_t oc0, n_oc, oh0, n_oh, out_w, n_groups, partial_shift, activation, n_slots;
    uint32_t in_slot_shift, in_c_shift, in_h_shift;
    uint32_t n_rx;
    spinn_block_keys_t out; /* the block it sends */
    const uint32_t *rx, *params, *table;
    uint32_t *acc;     /* n_slots x n_oc x n_oh x out_w int32 sums, added as uint32 */
    spinn_stream_t st; /* rows: the n_oh output rows */
    spinn_counters_t counters;
} spinn_conv_reduce_t;

/* The same contracts as the dense kernels (spinn_dense.h); receive returns a
 * slot with a computable output row (see the streaming contract above). */
uint32_t spinn_conv_tile_workspace(const uint32_t *cfg, uint32_t n_words);
int spinn_conv_tile_init(spinn_conv_tile_t *s, const uint32_t *cfg, uint32_t n_words, void *workspace);
int32_t spinn_conv_tile_receive(spinn_conv_tile_t *s, uint32_t key, uint32_t payload);
int spinn_conv_tile_compute(spinn_conv_tile_t *s, uint32_t slot, spinn_send_fn send, void *ctx);
int32_t spinn_conv_tile_rx_slot(const spinn_conv_tile_t *s);
int spinn_conv_tile_busy(const spinn_conv_tile_t *s, uint32_t slot);
int32_t spinn_conv_tile_release(spinn_conv_tile_t *s, uint32_t slot);

uint32_t spinn_pool_tile_workspace(const uint32_t *cfg, uint32_t n_words);
int spinn_pool_tile_init(spinn_pool_tile_t *s, const uint32_t *cfg, uint32_t n_words, void *workspace);
int32_t spinn_pool_tile_receive(spinn_pool_tile_t *s, uint32_t key, uint32_t payload);
int spinn_pool_tile_compute(spinn_pool_tile_t *s, uint32_t slot, spinn_send_fn send, void *ctx);
int32_t spinn_pool_tile_rx_slot(const spinn_pool_tile_t *s);
int spinn_pool_tile_busy(const spinn_pool_tile_t *s, uint32_t slot);
int32_t spinn_pool_tile_release(spinn_pool_tile_t *s, uint32_t slot);

uint32_t spinn_add_tile_workspace(const uint32_t *cfg, uint32_t n_words);
int spinn_add_tile_init(spinn_add_tile_t *s, const uint32_t *cfg, uint32_t n_words, void *workspace);
int32_t spinn_add_tile_receive(spinn_add_tile_t *s, uint32_t key, uint32_t payload);
int spinn_add_tile_compute(spinn_add_tile_t *s, uint32_t slot, spinn_send_fn send, void *ctx);
int32_t spinn_add_tile_rx_slot(const spinn_add_tile_t *s);
int spinn_add_tile_busy(const spinn_add_tile_t *s, uint32_t slot);
int32_t spinn_add_tile_release(spinn_add_tile_t *s, uint32_t slot);

uint32_t spinn_conv_reduce_workspace(const uint32_t *cfg, uint32_t n_words);
int spinn_conv_reduce_init(spinn_conv_reduce_t *s, const uint32_t *cfg, uint32_t n_words, void *workspace);
int32_t spinn_conv_reduce_receive(spinn_conv_reduce_t *s, uint32_t key, uint32_t payload);
int spinn_conv_reduce_compute(spinn_conv_reduce_t *s, uint32_t slot, spinn_send_fn send, void *ctx);
int32_t spinn_conv_reduce_rx_slot(const spinn_conv_reduce_t *s);
int spinn_conv_reduce_busy(const spinn_conv_reduce_t *s, uint32_t slot);
int32_t spinn_conv_reduce_release(spinn_conv_reduce_t *s, uint32_t slot);

#endif /* SPINN_TENSOR_H */
