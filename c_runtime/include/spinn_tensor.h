/*
 * Tensor kernels (convolution, pooling, residual add) and the generic receive
 * entry every kernel that consumes tensors uses. Portable C99, freestanding,
 * no floating point, no division; state in explicit structs.
 *
 * Tensors are (C, H, W) int16 per sample, stored c-major: ((c * H) + h) * W + w.
 * 1D tensors are (C, 1, L); dense vectors are (1, 1, N).
 *
 * Every producer vertex emits one block of its output tensor: channels
 * [c0, c0 + nc) x rows [h0, h0 + nh) x columns [w0, w0 + nw), two int16
 * values per packet along w. Its keys are
 *     base | slot << slot_shift | c_local << c_shift | h_local << h_shift | pair
 * (pair = (w - w0) / 2; each field a power of two wide; the odd last value of a
 * row travels with a zero).
 *
 * Generic receive entry (SPINN_TRX_WORDS uint32 words), one per source:
 *     key, mask, slot_shift, c_shift, h_shift,
 *     src_c0, src_h0, src_w0, src_nw,          (the source's block)
 *     dst_c0, dst_h0, dst_w0, dst_nc, dst_nh, dst_nw,  (this core's buffer block)
 *     buffer                                   (input index: 0, or 1 for add's b)
 * A value (c, h, w) of the source lands in the buffer at
 *     ((c - dst_c0) * dst_nh + (h - dst_h0)) * dst_nw + (w - dst_w0)
 * if it lies inside the buffer block; other values are not this core's.
 * Rows are counted per (slot, h - dst_h0) so a kernel can start on an output
 * row as soon as the input rows it needs are complete (streaming).
 */
#ifndef SPINN_TENSOR_H
#define SPINN_TENSOR_H

#include <stdint.h>

#include "spinn_dense.h"
#include "spinn_fixed.h"

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

#define SPINN_POOL_MAX 0u
#define SPINN_POOL_AVG 1u

/*
 * Conv tile: output channels [oc0, oc0 + n_oc) x output rows [oh0, oh0 + n_oh) x
 * all out_w columns, from input channels [ic0, ic0 + n_ic) (all of them, or for
 * depthwise the same channels as the outputs) whose rows [ih0, ih0 + n_ih) it
 * buffers per slot. Config words:
 *   0 kind, 1 n_ic, 2 in_h, 3 in_w, 4 ic0, 5 ih0, 6 n_ih, 7 oc0, 8 n_oc, 9 oh0,
 *   10 n_oh, 11 out_w, 12 kh, 13 kw, 14 sh, 15 sw, 16 pad_top, 17 pad_left,
 *   18 depthwise, 19 activation, 20 n_slots, 21 out_key, 22 out_slot_shift,
 *   23 out_c_shift, 24 out_h_shift, 25 n_rx, then n_rx receive entries,
 *   then weights: per output channel, (depthwise ? 1 : n_ic) * kh * kw int16
 *   in (ic, ky, kx) order, packed two per word, each channel padded to a word;
 *   then per output channel {bias lo, bias hi, multiplier, shift};
 *   then the tanh table (SPINN_TANH_WORDS) if activation is tanh or sigmoid.
 * Output value (oc, oh, ow) = activate(requantize(bias + sum over ic, ky, kx of
 *   w[oc][ic][ky][kx] * x[ic][oh*sh - pad_top + ky][ow*sw - pad_left + kx])),
 * with x = 0 outside the input (zero padding). Accumulation is exact (int64).
 * Output row oh is computed once input rows max(0, oh*sh - pad_top) ..
 * min(in_h, oh*sh - pad_top + kh) - 1 are complete (n_ic * in_w values each).
 */
/*
 * Pool tile: channels [c0, c0 + n_c) x output rows [oh0, oh0 + n_oh) x out_w,
 * buffering input rows [ih0, ih0 + n_ih). Config words:
 *   0 kind, 1 n_c, 2 in_h, 3 in_w, 4 c0, 5 ih0, 6 n_ih, 7 oh0, 8 n_oh, 9 out_w,
 *   10 kh, 11 kw, 12 sh, 13 sw, 14 pad_top, 15 pad_left, 16 mode (max/avg),
 *   17 count_include_pad, 18 recip_shift, 19 n_slots, 20 out_key,
 *   21 out_slot_shift, 22 out_c_shift, 23 out_h_shift, 24 n_rx, then n_rx
 *   receive entries, then (avg) kh*kw + 1 words recip[n] ~ 2^recip_shift / n.
 * max: the largest input inside the window (padding never wins);
 * avg: round_shift(sum * recip[n], recip_shift), n = kh*kw if count_include_pad
 *      else the number of window positions inside the input.
 * Output scale = input scale. Rows stream as for the conv tile.
 */
/*
 * Add tile: channels [c0, c0 + n_c) x rows [h0, h0 + n_h) x all w of two tensors
 * a (buffer 0) and b (buffer 1) of shape (*, h, w). Config words:
 *   0 kind, 1 c0, 2 n_c, 3 h, 4 w, 5 h0, 6 n_h, 7 activation, 8 mult_a,
 *   9 mult_b, 10 shift, 11 n_slots, 12 out_key, 13 out_slot_shift,
 *   14 out_c_shift, 15 out_h_shift, 16 n_rx, then n_rx receive entries.
 * y = activate(sat16(round_shift(a * mult_a + b * mult_b, shift))) (relu only),
 * computed row by row once both inputs' row is complete.
 */

#endif /* SPINN_TENSOR_H */
