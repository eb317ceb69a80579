/* Conv tile kernel: see spinn_tensor.h. Portable C99, freestanding. */
#include "spinn_tensor.h"
#include "spinn_dot.h"

enum { H_KIND, H_N_IC, H_IN_H, H_IN_W, H_IC0, H_IH0, H_N_IH, H_OC0, H_N_OC, H_OH0, H_N_OH, H_OUT_W,
       H_KH, H_KW, H_SH, H_SW, H_PAD_TOP, H_PAD_LEFT, H_DEPTHWISE, H_ACTIVATION, H_N_SLOTS, H_OUT_KEY,
       H_OUT_SLOT_SHIFT, H_OUT_C_SHIFT, H_OUT_H_SHIFT, H_MODE, H_PARTIAL_SHIFT, H_N_RX, H_BLOCK, H_WORDS };
/* the pooled mode's pool section: its input size is conv_h x out_w, then the pool's words */
enum { P_CONV_H, P_PH0, P_N_PH, P_OUT_W, P_PARAMS, P_WORDS = P_PARAMS + SPINN_POOL_PARAM_WORDS };

#define PARAM_WORDS 4u
#define INT31 0x7FFFFFFFu
/* sum |w| of an int32 accumulation block: sum |w| * 32768 <= 2^31 - 1 for any int16 input */
#define BLOCK_ABS_MAX 65535u
/* Shorter int32 blocks than this (in words) accumulate in int64 instead: SMLALxy costs
 * 2 cycles a MAC, an int32 block 1 a MAC plus about 25 to call and spill it (ARM968E-S,
 * tools/arm_cycles.py). Full-range int16 weights (the quantiser's per-channel scale)
 * prove blocks of one word. */
#define I32_MIN_BLOCK 4u

typedef struct {
    uint32_t n_icpo, phase0, words_per_oc, weights_at, params_at, table_at, pool_at, recip_at, keys_at, sent_nh;
    uint32_t inputs_bytes, cols_bytes, stream_bytes, conv_out_bytes, pool_next_bytes, rows_bytes;
    uint32_t workspace_bytes; /* the sum of the parts */
} layout_t;

/* Whether every aligned block of `block` words of every channel's weights has
 * sum |w| <= BLOCK_ABS_MAX (the encoder's proof, checked): its int32 sum of
 * products cannot overflow. block 0: int64 accumulation, nothing to prove. */
static int blocks_proved(const uint32_t *w, uint32_t n_oc, uint32_t words_per_oc, uint32_t block) {
    uint32_t j, b, k;
    if (block == 0u) return 1;
    for (j = 0; j < n_oc; j++, w += words_per_oc)
        for (b = 0; b < words_per_oc; b += block) {
            uint32_t sum = 0u; /* <= 2 * block * 32768 < 2^32 (block <= SPINN_MAX_DIM) */
            for (k = b; k < b + block && k < words_per_oc; k++) {
                int32_t lo = spinn_lo16(w[k]), hi = spinn_hi16(w[k]);
                sum += (uint32_t)(lo < 0 ? -lo : lo) + (uint32_t)(hi < 0 ? -hi : hi);
            }
            if (sum > BLOCK_ABS_MAX) return 0;
        }
    return 1;
}

static SPINN_COLD int conv_layout(const uint32_t *cfg, uint32_t n_words, layout_t *l) {
    uint32_t i, sent_nh, sent_nw;
    uint64_t need, n_w, cfg_end;
    l->phase0 = 0u;
    if (n_words < H_WORDS || cfg[H_KIND] != SPINN_KIND_CONV) return -1;
    for (i = H_N_IC; i <= H_DEPTHWISE; i++)
        if (cfg[i] > SPINN_MAX_DIM) return -1;
    if (cfg[H_N_IC] == 0u || cfg[H_IN_H] == 0u || cfg[H_IN_W] == 0u || cfg[H_N_IH] == 0u || cfg[H_N_OC] == 0u ||
        cfg[H_N_OH] == 0u || cfg[H_OUT_W] == 0u || cfg[H_KH] == 0u || cfg[H_KW] == 0u || cfg[H_SH] == 0u ||
        cfg[H_SW] == 0u || cfg[H_ACTIVATION] > SPINN_ACT_LEAKY ||
        cfg[H_N_SLOTS] == 0u || cfg[H_N_SLOTS] > SPINN_MAX_SLOTS || cfg[H_MODE] > SPINN_CONV_POOLED ||
        cfg[H_PARTIAL_SHIFT] > 62u || cfg[H_N_RX] > SPINN_MAX_RX || cfg[H_BLOCK] > SPINN_MAX_DIM)
        return -1;
    if (cfg[H_IH0] + cfg[H_N_IH] > cfg[H_IN_H]) return -1;
    if (cfg[H_DEPTHWISE]) {
        /* multiplier m: ic0 = oc0 / m (phase r0 = oc0 - ic0 * m < m) and the n_ic channels are
         * those outputs [oc0, oc0 + n_oc) read: (n_ic - 1) * m <= r0 + n_oc - 1 < n_ic * m
         * (every product < 2^32: all words <= SPINN_MAX_DIM) */
        uint32_t m = cfg[H_DEPTHWISE], first = cfg[H_IC0] * m, last;
        if (first > cfg[H_OC0] || cfg[H_OC0] - first >= m) return -1;
        last = cfg[H_OC0] - first + cfg[H_N_OC] - 1u;
        if ((cfg[H_N_IC] - 1u) * m > last || last >= cfg[H_N_IC] * m) return -1;
        l->phase0 = cfg[H_OC0] - first;
    }
    /* a partial sum is one input-channel group's share of a full convolution */
    if (cfg[H_MODE] == SPINN_CONV_PARTIAL && (cfg[H_DEPTHWISE] || cfg[H_ACTIVATION] != SPINN_ACT_NONE)) return -1;
    if (cfg[H_MODE] == SPINN_CONV_POOLED && cfg[H_PARTIAL_SHIFT] != 0u) return -1;
    /* every window coordinate fits int32 */
    if ((uint64_t)(cfg[H_OH0] + cfg[H_N_OH]) * cfg[H_SH] + cfg[H_KH] > INT31 ||
        (uint64_t)cfg[H_OUT_W] * cfg[H_SW] + cfg[H_KW] > INT31)
        return -1;
    l->n_icpo = cfg[H_DEPTHWISE] ? 1u : cfg[H_N_IC];
    n_w = (uint64_t)l->n_icpo * cfg[H_KH] * cfg[H_KW]; /* < 2^48 */
    /* weights per channel and MACs per output row of a channel stay in uint32 */
    if (n_w * cfg[H_OUT_W] > SPINN_TENSOR_MAX_WORKSPACE) return -1;
    l->words_per_oc = (uint32_t)((n_w + 1u) >> 1);
    need = (uint64_t)H_WORDS + (uint64_t)cfg[H_N_RX] * SPINN_TRX_WORDS;
    l->weights_at = (uint32_t)need; /* < 2^21 */
    need += (uint64_t)cfg[H_N_OC] * l->words_per_oc;
    if (need > n_words || !blocks_proved(cfg + l->weights_at, cfg[H_N_OC], l->words_per_oc, cfg[H_BLOCK]))
        return -1;
    l->params_at = l->table_at = (uint32_t)need;
    if (cfg[H_MODE] != SPINN_CONV_PARTIAL) {
        need += (uint64_t)cfg[H_N_OC] * PARAM_WORDS;
        l->table_at = (uint32_t)need;
        need += spinn_act_words(cfg[H_ACTIVATION]);
        if (need > n_words || !spinn_act_ok(cfg[H_ACTIVATION], cfg + l->table_at)) return -1;
        for (i = 0; i < cfg[H_N_OC]; i++)
            if (cfg[l->params_at + i * PARAM_WORDS + 3u] > 63u) return -1;
    }
    /* the block sent: partial, one value per key (the fields of a block twice as
     * wide); pooled, the pool's rows */
    sent_nh = cfg[H_N_OH];
    sent_nw = cfg[H_OUT_W] << (cfg[H_MODE] == SPINN_CONV_PARTIAL);
    l->pool_at = l->recip_at = (uint32_t)need;
    cfg_end = need;
    l->conv_out_bytes = l->pool_next_bytes = 0u;
    if (cfg[H_MODE] == SPINN_CONV_POOLED) {
        const uint32_t *ps = cfg + l->pool_at;
        spinn_pool_params_t p;
        need += P_WORDS;
        if (need > n_words) return -1;
        spinn_pool_params_read(&p, ps[P_CONV_H], cfg[H_OUT_W], ps + P_PARAMS);
        /* the pool's input rows are the conv rows this tile computes */
        if (!spinn_pool_params_ok(&p, cfg[H_OH0], cfg[H_N_OH], ps[P_PH0], ps[P_N_PH], ps[P_OUT_W])) return -1;
        l->recip_at = (uint32_t)need;
        need += spinn_pool_recip_words(&p);
        if (need > n_words) return -1;
        cfg_end = need;
        sent_nh = ps[P_N_PH];
        sent_nw = ps[P_OUT_W];
        need = (uint64_t)cfg[H_N_SLOTS] * cfg[H_N_OC] * cfg[H_N_OH] * cfg[H_OUT_W] * 2u;
        if (need > SPINN_TENSOR_MAX_WORKSPACE) return -1;
        l->conv_out_bytes = spinn_align8((uint32_t)need);
        l->pool_next_bytes = spinn_align8(4u * cfg[H_N_SLOTS]);
    }
    if (!spinn_tensor_fields_ok(cfg[H_OUT_KEY], cfg[H_N_SLOTS], cfg[H_OUT_SLOT_SHIFT], cfg[H_OUT_C_SHIFT],
                                cfg[H_OUT_H_SHIFT], cfg[H_N_OC], sent_nh, sent_nw) ||
        !spinn_row_keys_ok(cfg + cfg_end, n_words - cfg_end, (uint64_t)cfg[H_N_OC] * sent_nh, cfg[H_OUT_SLOT_SHIFT]))
        return -1;
    l->keys_at = (uint32_t)cfg_end;
    l->sent_nh = sent_nh;
    need = (uint64_t)cfg[H_N_SLOTS] * cfg[H_N_IC] * cfg[H_N_IH] * cfg[H_IN_W] * 2u;
    if (need > SPINN_TENSOR_MAX_WORKSPACE) return -1;
    l->inputs_bytes = spinn_align8((uint32_t)need);
    need = (uint64_t)cfg[H_OUT_W] * l->words_per_oc * 4u;
    if (need > SPINN_TENSOR_MAX_WORKSPACE) return -1;
    l->cols_bytes = spinn_align8((uint32_t)need);
    l->stream_bytes = spinn_align8(4u * spinn_stream_words(cfg[H_N_SLOTS], cfg[H_N_IH]));
    l->rows_bytes = spinn_trx_rows_bytes(cfg[H_N_RX]);
    need = (uint64_t)l->inputs_bytes + l->cols_bytes + l->stream_bytes + l->conv_out_bytes + l->pool_next_bytes +
           l->rows_bytes;
    if (need > SPINN_TENSOR_MAX_WORKSPACE) return -1;
    l->workspace_bytes = (uint32_t)need;
    /* every output row reads only buffered rows */
    if (!spinn_window_band_ok(cfg[H_OH0], cfg[H_N_OH], cfg[H_SH], cfg[H_PAD_TOP], cfg[H_KH], cfg[H_IN_H],
                              cfg[H_IH0], cfg[H_N_IH]))
        return -1;
    if (!spinn_trx_valid(cfg + H_WORDS, cfg[H_N_RX], 1u) ||
        !spinn_trx_dst_is(cfg + H_WORDS, cfg[H_N_RX], 0u, cfg[H_IC0], cfg[H_IH0], 0u, cfg[H_N_IC], cfg[H_N_IH],
                          cfg[H_IN_W]))
        return -1;
    return 0;
}

uint32_t spinn_conv_tile_workspace(const uint32_t *cfg, uint32_t n_words) {
    layout_t l;
    if (conv_layout(cfg, n_words, &l) != 0) return 0;
    return l.workspace_bytes;
}

SPINN_COLD int spinn_conv_tile_init(spinn_conv_tile_t *s, const uint32_t *cfg, uint32_t n_words, void *workspace) {
    layout_t l;
    uint8_t *ws = (uint8_t *)workspace;
    if (conv_layout(cfg, n_words, &l) != 0) return -1;
    s->n_ic = cfg[H_N_IC];
    s->in_h = cfg[H_IN_H];
    s->in_w = cfg[H_IN_W];
    s->ic0 = cfg[H_IC0];
    s->ih0 = cfg[H_IH0];
    s->n_ih = cfg[H_N_IH];
    s->oc0 = cfg[H_OC0];
    s->n_oc = cfg[H_N_OC];
    s->oh0 = cfg[H_OH0];
    s->n_oh = cfg[H_N_OH];
    s->out_w = cfg[H_OUT_W];
    s->kh = cfg[H_KH];
    s->kw = cfg[H_KW];
    s->sh = cfg[H_SH];
    s->sw = cfg[H_SW];
    s->pad_top = cfg[H_PAD_TOP];
    s->pad_left = cfg[H_PAD_LEFT];
    s->depthwise = cfg[H_DEPTHWISE];
    s->activation = cfg[H_ACTIVATION];
    s->n_slots = cfg[H_N_SLOTS];
    spinn_block_keys_read(&s->out, cfg + H_OUT_KEY);
    spinn_block_keys_rows(&s->out, cfg + l.keys_at, n_words - l.keys_at, l.sent_nh);
    s->mode = cfg[H_MODE];
    s->partial_shift = cfg[H_PARTIAL_SHIFT];
    s->n_rx = cfg[H_N_RX];
    s->n_icpo = l.n_icpo;
    s->phase0 = l.phase0;
    s->words_per_oc = l.words_per_oc;
    s->block = cfg[H_BLOCK];
    /* 3x3 stride-1 depthwise: three zero-padded input rows (out_w + 3 values, rounded up
     * to words) in the cols buffer, two outputs' int64 sums at a time (dw3_pair64) */
    s->dw3_words = (s->out_w + 4u) >> 1;
    if (!(s->depthwise && s->kh == 3u && s->kw == 3u && s->sw == 1u && 3u * s->dw3_words * 4u <= l.cols_bytes))
        s->dw3_words = 0u;
    s->kx_total = 0u;
    {
        uint32_t ow, kx_lo, kx_hi;
        for (ow = 0; ow < s->out_w; ow++) {
            spinn_window_range((int32_t)(ow * s->sw) - (int32_t)s->pad_left, s->kw, 0, (int32_t)s->in_w, &kx_lo,
                               &kx_hi);
            if (kx_hi > kx_lo) s->kx_total += kx_hi - kx_lo;
        }
    }
    /* [ow_in_lo, ow_in_hi): the output columns whose windows lie inside the input row */
    s->ow_in_lo = s->ow_in_hi = 0u;
    {
        uint32_t ow;
        int32_t ix0;
        for (ow = 0; ow < s->out_w; ow++) {
            ix0 = (int32_t)(ow * s->sw) - (int32_t)s->pad_left;
            if (ix0 < 0) s->ow_in_lo = ow + 1u;
            else if (ix0 + (int32_t)s->kw <= (int32_t)s->in_w) s->ow_in_hi = ow + 1u;
        }
        if (s->ow_in_hi < s->ow_in_lo) s->ow_in_hi = s->ow_in_lo;
    }
    s->rx = cfg + H_WORDS;
    s->weights = cfg + l.weights_at;
    s->params = s->mode == SPINN_CONV_PARTIAL ? 0 : cfg + l.params_at;
    s->table = s->mode != SPINN_CONV_PARTIAL && spinn_act_words(s->activation) ? cfg + l.table_at : 0;
    s->ph0 = s->n_ph = s->pool_out_w = 0u;
    if (s->mode == SPINN_CONV_POOLED) {
        spinn_pool_params_read(&s->pool, cfg[l.pool_at + P_CONV_H], s->out_w, cfg + l.pool_at + P_PARAMS);
        s->ph0 = cfg[l.pool_at + P_PH0];
        s->n_ph = cfg[l.pool_at + P_N_PH];
        s->pool_out_w = cfg[l.pool_at + P_OUT_W];
        if (s->pool.mode == SPINN_POOL_AVG) s->pool.recip = cfg + l.recip_at;
    }
    spinn_tensor_clear(ws, l.workspace_bytes, &s->counters);
    s->inputs = (int16_t *)ws;
    ws += l.inputs_bytes;
    s->cols = (int16_t *)ws; /* 8-aligned; its padding halves stay 0 */
    ws += l.cols_bytes;
    spinn_stream_init(&s->st, (uint32_t *)ws, s->n_slots, s->n_ih, s->n_ic * s->in_w, s->n_oh);
    ws += l.stream_bytes;
    s->conv_out = (int16_t *)ws; /* pooled mode only (else no bytes) */
    s->pool_next = (uint32_t *)(ws + l.conv_out_bytes);
    spinn_trx_prepare(&s->rxr, s->rx, s->n_rx, &s->inputs, 1u, s->n_ic * s->n_ih * s->in_w, 0u,
                      (spinn_trx_row_t *)(ws + l.conv_out_bytes + l.pool_next_bytes));
    return 0;
}

/* Whether local output row r of the slot has all its input rows. */
static int row_ready(const void *kernel, uint32_t slot, uint32_t r) {
    const spinn_conv_tile_t *s = (const spinn_conv_tile_t *)kernel;
    return spinn_window_ready(&s->st, slot, s->oh0 + r, s->sh, s->pad_top, s->kh, s->in_h, s->ih0);
}

int32_t spinn_conv_tile_receive(spinn_conv_tile_t *s, uint32_t key, uint32_t payload) {
    return spinn_tensor_receive_rc(&s->rxr, &s->st, &s->counters, key, payload, row_ready, s);
}

static void add_macs(spinn_counters_t *c, uint32_t macs) {
    c->macs_lo += macs;
    if (c->macs_lo < macs) c->macs_hi++;
}

/* Output column ow's window values kx < kw along one input row xr (0 outside
 * the row: the padding). */
static void window_edge(const spinn_conv_tile_t *s, const int16_t *xr, uint32_t ow, int16_t *c) {
    int32_t ix = (int32_t)(ow * s->sw) - (int32_t)s->pad_left;
    uint32_t kx;
    for (kx = 0; kx < s->kw; kx++, ix++) c[kx] = ix >= 0 && ix < (int32_t)s->in_w ? xr[ix] : 0;
}

/* The im2row of an output row whose input rows start at iy0 (kernel rows
 * [ky_lo, ky_hi) inside the input): for every output column ow, its window over
 * the n_icpo input channels from xj in (ic, ky, kx) order (the weights' order) at
 * cols + ow * 2 * words_per_oc. Positions in the padding are 0, so every output
 * value is one dot product of words_per_oc int16 pairs. One kernel row of every
 * window at a time: the columns [ow_in_lo, ow_in_hi) whose windows lie inside
 * the row copy without bounds checks. */
static void build_cols(const spinn_conv_tile_t *s, const int16_t *xj, int32_t iy0, uint32_t ky_lo, uint32_t ky_hi) {
    const uint32_t ic_stride = s->n_ih * s->in_w, kw = s->kw, sw = s->sw, lw = 2u * s->words_per_oc;
    const uint32_t out_w = s->out_w, lo = s->ow_in_lo, hi = s->ow_in_hi;
    uint32_t ic, ky, ow, kx;
    int16_t *c0 = s->cols; /* kernel row (ic, ky) of window 0 */
    for (ic = 0; ic < s->n_icpo; ic++) {
        for (ky = 0; ky < s->kh; ky++, c0 += kw) {
            const int16_t *xr, *xp;
            int16_t *c;
            if (ky < ky_lo || ky >= ky_hi) {
                for (ow = 0, c = c0; ow < out_w; ow++, c += lw)
                    for (kx = 0; kx < kw; kx++) c[kx] = 0;
                continue;
            }
            xr = xj + ic * ic_stride + ((uint32_t)(iy0 + (int32_t)ky) - s->ih0) * s->in_w;
            for (ow = 0, c = c0; ow < lo; ow++, c += lw) window_edge(s, xr, ow, c);
            xp = xr + (lo * sw - s->pad_left);
            if (kw == 3u) { /* the common case */
                for (; ow < hi; ow++, c += lw, xp += sw) {
                    int16_t v0 = xp[0], v1 = xp[1], v2 = xp[2];
                    c[0] = v0;
                    c[1] = v1;
                    c[2] = v2;
                }
            } else {
                for (; ow < hi; ow++, c += lw, xp += sw)
                    for (kx = 0; kx < kw; kx++) c[kx] = xp[kx];
            }
            for (; ow < out_w; ow++, c += lw) window_edge(s, xr, ow, c);
        }
    }
}

/* The three input rows of a 3x3 stride-1 depthwise output row from channel
 * xc (rows [ky_lo, ky_hi) inside the input), each as dw3_words words: value i is
 * input column i - pad_left, 0 in the padding. */
static void build_rows3(const spinn_conv_tile_t *s, const int16_t *xc, int32_t iy0, uint32_t ky_lo, uint32_t ky_hi) {
    uint32_t n = 2u * s->dw3_words, ky, i;
    int16_t *d = s->cols;
    for (ky = 0; ky < 3u; ky++, d += n) {
        if (ky < ky_lo || ky >= ky_hi) {
            for (i = 0; i < n; i++) d[i] = 0;
        } else {
            const int16_t *xr = xc + ((uint32_t)(iy0 + (int32_t)ky) - s->ih0) * s->in_w;
            uint32_t lo, hi; /* [lo, hi): the positions inside the input row */
            spinn_window_range(-(int32_t)s->pad_left, n, 0, (int32_t)s->in_w, &lo, &hi);
            for (i = 0; i < lo; i++) d[i] = 0;
            if (hi > lo) xr += lo - s->pad_left; /* lo = pad_left: input column 0 */
            for (; i < hi; i++) d[i] = *xr++;
            for (; i < n; i++) d[i] = 0;
        }
    }
}

/* The sums of outputs ow and ow + 1 of a 3x3 stride-1 depthwise row (r0: the padded
 * rows' word ow / 2), its five weight words w00 w01|w02 w10|w11 w12|w20 w21|w22 in
 * registers, in int64: SMLALxy on the ARM968 (the quantiser's full-range weights prove
 * no int32 block of an output's 9 products; SMLALxy costs 1 cycle a MAC more than an
 * int32 product, small beside an output's requantise and send). */
static void dw3_pair64(const uint32_t *w, const spinn_pair_t *r0, uint32_t n_words, int64_t *s) {
    const spinn_pair_t *r1 = r0 + n_words, *r2 = r1 + n_words;
    uint32_t wa = w[0], wb = w[1], a0 = r0[0].w, a1 = r0[1].w;
    int64_t t0 = s[0], t1 = s[1];
    t0 += (int64_t)spinn_lo16(wa) * spinn_lo16(a0);
    t1 += (int64_t)spinn_lo16(wa) * spinn_hi16(a0);
    t0 += (int64_t)spinn_hi16(wa) * spinn_hi16(a0);
    t1 += (int64_t)spinn_hi16(wa) * spinn_lo16(a1);
    t0 += (int64_t)spinn_lo16(wb) * spinn_lo16(a1);
    t1 += (int64_t)spinn_lo16(wb) * spinn_hi16(a1);
    a0 = r1[0].w;
    a1 = r1[1].w;
    t0 += (int64_t)spinn_hi16(wb) * spinn_lo16(a0);
    t1 += (int64_t)spinn_hi16(wb) * spinn_hi16(a0);
    wa = w[2];
    wb = w[3];
    t0 += (int64_t)spinn_lo16(wa) * spinn_hi16(a0);
    t1 += (int64_t)spinn_lo16(wa) * spinn_lo16(a1);
    t0 += (int64_t)spinn_hi16(wa) * spinn_lo16(a1);
    t1 += (int64_t)spinn_hi16(wa) * spinn_hi16(a1);
    a0 = r2[0].w;
    a1 = r2[1].w;
    wa = w[4];
    t0 += (int64_t)spinn_lo16(wb) * spinn_lo16(a0);
    t1 += (int64_t)spinn_lo16(wb) * spinn_hi16(a0);
    t0 += (int64_t)spinn_hi16(wb) * spinn_hi16(a0);
    t1 += (int64_t)spinn_hi16(wb) * spinn_lo16(a1);
    t0 += (int64_t)spinn_lo16(wa) * spinn_lo16(a1);
    t1 += (int64_t)spinn_lo16(wa) * spinn_hi16(a1);
    s[0] = t0;
    s[1] = t1;
}

/* *a0 += w . x0 and *a1 += w . x1 over n words of int16 pairs (SMLAxy on the
 * ARM968), the two output columns sharing each weight load. Exact: int32 sums of
 * `block` words (the encoder proved, and init checked, that no aligned block of
 * any channel's weights can overflow int32 for any int16 input) added to the
 * int64 sums; block 0: every product added in int64 (SMLALxy). */
#if defined(__GNUC__)
__attribute__((noinline))
#endif
static void dot2(const uint32_t *w, const spinn_pair_t *x0, const spinn_pair_t *x1, uint32_t n, uint32_t block,
                 int64_t *a0, int64_t *a1) {
#if defined(__arm__) && defined(__ARM_FEATURE_DSP) && !defined(__thumb__)
    /* the dense tile's assembly (spinn_dot.h), the two windows as its two rows */
    const uint32_t *u0 = (const uint32_t *)(const void *)x0, *u1 = (const uint32_t *)(const void *)x1;
    const spinn_pair_t *wp = (const spinn_pair_t *)(const void *)w;
    if (block < I32_MIN_BLOCK) { /* SMLALxy over the whole window */
        int64_t sums[2];
        spinn_dense_dot2_i64(u0, u1, wp, n, sums);
        *a0 += sums[0];
        *a1 += sums[1];
        return;
    }
    {
        int64_t s0 = *a0, s1 = *a1;
        uint32_t b, m;
        for (b = 0; b < n; b += m) {
            uint64_t sums;
            m = n - b < block ? n - b : block;
            sums = spinn_dense_dot2_i32(u0 + b, u1 + b, wp + b, m);
            s0 += (int32_t)(uint32_t)sums;
            s1 += (int32_t)(uint32_t)(sums >> 32);
        }
        *a0 = s0;
        *a1 = s1;
        return;
    }
#endif
#if defined(SPINN_DOT2_EXACT)
    { /* the host's vector units: exact sums, whatever the blocks (spinn_dot.h) */
        int64_t sums[2];
        (void)block;
        spinn_dot2_exact((const uint32_t *)(const void *)x0, (const uint32_t *)(const void *)x1,
                         (const spinn_pair_t *)(const void *)w, n, sums);
        *a0 += sums[0];
        *a1 += sums[1];
        return;
    }
#endif
    if (block == 0u) {
        int64_t s0 = *a0, s1 = *a1;
        for (; n; n--, w++, x0++, x1++) {
            uint32_t wv = *w, u = x0->w, v = x1->w;
            s0 += (int64_t)(spinn_lo16(wv) * spinn_lo16(u));
            s1 += (int64_t)(spinn_lo16(wv) * spinn_lo16(v));
            s0 += (int64_t)(spinn_hi16(wv) * spinn_hi16(u));
            s1 += (int64_t)(spinn_hi16(wv) * spinn_hi16(v));
        }
        *a0 = s0;
        *a1 = s1;
        return;
    }
    {
        const uint32_t *end = w + n;
        int64_t s0 = *a0, s1 = *a1;
        while (w < end) {
            const uint32_t *be = (uint32_t)(end - w) > block ? w + block : end;
            int32_t t0 = 0, t1 = 0;
            while (w + 3 < be) { /* four words: immediate offsets, the pointers stepped once */
                uint32_t wa = w[0], ua = x0[0].w, va = x1[0].w, wb = w[1], ub = x0[1].w, vb = x1[1].w;
                t0 += spinn_lo16(wa) * spinn_lo16(ua);
                t1 += spinn_lo16(wa) * spinn_lo16(va);
                t0 += spinn_hi16(wa) * spinn_hi16(ua);
                t1 += spinn_hi16(wa) * spinn_hi16(va);
                wa = w[2], ua = x0[2].w, va = x1[2].w;
                t0 += spinn_lo16(wb) * spinn_lo16(ub);
                t1 += spinn_lo16(wb) * spinn_lo16(vb);
                t0 += spinn_hi16(wb) * spinn_hi16(ub);
                t1 += spinn_hi16(wb) * spinn_hi16(vb);
                wb = w[3], ub = x0[3].w, vb = x1[3].w;
                t0 += spinn_lo16(wa) * spinn_lo16(ua);
                t1 += spinn_lo16(wa) * spinn_lo16(va);
                t0 += spinn_hi16(wa) * spinn_hi16(ua);
                t1 += spinn_hi16(wa) * spinn_hi16(va);
                t0 += spinn_lo16(wb) * spinn_lo16(ub);
                t1 += spinn_lo16(wb) * spinn_lo16(vb);
                t0 += spinn_hi16(wb) * spinn_hi16(ub);
                t1 += spinn_hi16(wb) * spinn_hi16(vb);
                w += 4;
                x0 += 4;
                x1 += 4;
            }
            while (w < be) {
                uint32_t wa = *w++, ua = (x0++)->w, va = (x1++)->w;
                t0 += spinn_lo16(wa) * spinn_lo16(ua);
                t1 += spinn_lo16(wa) * spinn_lo16(va);
                t0 += spinn_hi16(wa) * spinn_hi16(ua);
                t1 += spinn_hi16(wa) * spinn_hi16(va);
            }
            s0 += t0;
            s1 += t1;
        }
        *a0 = s0;
        *a1 = s1;
    }
}

/* Pooled mode, after conv row r of the slot is stored for every channel: send
 * the next pool rows whose windows' conv rows are all stored (the last pool
 * row only with the tile's last conv row: its last packet frees the slot). The
 * slot's next pool row goes back to 0 before the last row is sent, and after
 * a failed send (the rest of the sample is abandoned). */
static int send_pool_rows(spinn_conv_tile_t *s, uint32_t slot, uint32_t r, spinn_send_fn send, void *ctx) {
    uint32_t ch_stride = s->n_oh * s->out_w, ph, j;
    const int16_t *y = s->conv_out + slot * (s->n_oc * ch_stride);
    uint32_t *next = s->pool_next + slot;
    while ((ph = *next) < s->n_ph) {
        int last_row = ph + 1u == s->n_ph;
        int32_t lo, hi;
        spinn_window_rows(s->ph0 + ph, s->pool.sh, s->pool.pad_top, s->pool.kh, s->pool.in_h, &lo, &hi);
        if (last_row ? r + 1u < s->n_oh : hi > lo && hi > (int32_t)(s->oh0 + r + 1u)) return 0;
        *next = last_row ? 0u : ph + 1u;
        for (j = 0; j < s->n_oc; j++) {
            uint32_t key = spinn_tensor_key(&s->out, slot, j, ph);
            if (spinn_pool_send_row(&s->pool, y + j * ch_stride, s->oh0, s->ph0 + ph, s->pool_out_w, &s->st, slot,
                                    last_row && j + 1u == s->n_oc, key, send, ctx, &s->counters) != 0) {
                *next = 0u;
                return -1;
            }
        }
        if (last_row) return 0;
    }
    return 0;
}

/* Compute local output row r of the slot and send it (pooled: store it, then
 * send the pool rows it completes). On the tile's last row the slot is
 * released just before its last packet. Returns 0 or -1; after a failed send
 * the rest of the sample is abandoned (the slot still recovers). */
static int conv_row(void *kernel, uint32_t slot, uint32_t r, spinn_send_fn send, void *ctx) {
    spinn_conv_tile_t *s = (spinn_conv_tile_t *)kernel;
    const int16_t *x = s->inputs + slot * (s->n_ic * s->n_ih * s->in_w);
    const spinn_pair_t *cols = (const spinn_pair_t *)(const void *)s->cols; /* 8-aligned, even rows */
    int32_t iy0 = (int32_t)((s->oh0 + r) * s->sh) - (int32_t)s->pad_top;
    int last_row = r + 1u == s->n_oh;
    /* depthwise: output j reads local input channel ic = (phase0 + j) / m, phase = (phase0 + j) % m */
    uint32_t j, ow, ky_lo, ky_hi, ic = 0u, phase = s->phase0, lw = s->words_per_oc, macs;
    spinn_window_range(iy0, s->kh, 0, (int32_t)s->in_h, &ky_lo, &ky_hi);
    /* the MACs inside the input (the padding's zeros are not counted) */
    macs = ky_hi > ky_lo ? s->n_icpo * (ky_hi - ky_lo) * s->kx_total : 0u;
    if (s->dw3_words)
        build_rows3(s, x, iy0, ky_lo, ky_hi);
    else
        build_cols(s, x, iy0, ky_lo, ky_hi);
    for (j = 0; j < s->n_oc; j++) {
        const uint32_t *p = s->mode == SPINN_CONV_PARTIAL ? 0 : s->params + j * PARAM_WORDS;
        const uint32_t *w = s->weights + j * lw;
        int16_t *stored =
            s->mode == SPINN_CONV_POOLED ? s->conv_out + ((slot * s->n_oc + j) * s->n_oh + r) * s->out_w : 0;
        int64_t bias = p ? spinn_read_i64(p) : 0, acc[2] = {0, 0};
        uint32_t key = spinn_tensor_key(&s->out, slot, j, r);
        int32_t pending = 0;
        for (ow = 0; ow < s->out_w; ow++) {
            if (ow & 1u) {
            } else if (s->dw3_words) {
                acc[0] = acc[1] = bias;
                dw3_pair64(w, cols + (ow >> 1), s->dw3_words, acc);
            } else { /* columns ow and ow + 1 (the last column of an odd row twice) */
                uint32_t ow1 = ow + 1u < s->out_w ? ow + 1u : ow;
                acc[0] = acc[1] = bias;
                dot2(w, cols + ow * lw, cols + ow1 * lw, lw, s->block, &acc[0], &acc[1]);
            }
            int last = last_row && j + 1u == s->n_oc && ow + 1u == s->out_w, rc = 0;
            if (s->mode == SPINN_CONV_PARTIAL) {
                /* the encoder proved the rounded sum fits int32: saturation is a safety net */
                uint32_t v = (uint32_t)spinn_sat32(spinn_round_shift(acc[ow & 1u], s->partial_shift));
                rc = spinn_tensor_send(&s->st, slot, last, key | ow, v, send, ctx, &s->counters);
            } else {
                int32_t y = spinn_finish(s->activation, s->table, acc[ow & 1u], (int32_t)p[2], p[3],
                                         &s->counters.saturated);
                if (s->mode == SPINN_CONV_POOLED)
                    stored[ow] = (int16_t)y;
                else
                    rc = spinn_tensor_send16(&s->st, slot, last, key, ow, s->out_w, y, &pending, send, ctx,
                                             &s->counters);
            }
            if (rc != 0) return -1;
        }
        add_macs(&s->counters, macs);
        s->counters.outputs += s->out_w;
        if (s->depthwise && ++phase == s->depthwise) {
            phase = 0u;
            ic++;
            if (j + 1u == s->n_oc) {
            } else if (s->dw3_words) {
                build_rows3(s, x + ic * s->n_ih * s->in_w, iy0, ky_lo, ky_hi);
            } else {
                build_cols(s, x + ic * s->n_ih * s->in_w, iy0, ky_lo, ky_hi);
            }
        }
    }
    return s->mode == SPINN_CONV_POOLED ? send_pool_rows(s, slot, r, send, ctx) : 0;
}

int spinn_conv_tile_compute(spinn_conv_tile_t *s, uint32_t slot, spinn_send_fn send, void *ctx) {
    return spinn_tensor_compute(&s->st, slot, row_ready, conv_row, s, send, ctx, &s->counters);
}

SPINN_STREAM_SLOT_HOOKS(conv_tile)
