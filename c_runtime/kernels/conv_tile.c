/* Conv tile kernel: see spinn_tensor.h. Portable C99, freestanding. */
#include "spinn_tensor.h"

enum { H_KIND, H_N_IC, H_IN_H, H_IN_W, H_IC0, H_IH0, H_N_IH, H_OC0, H_N_OC, H_OH0, H_N_OH, H_OUT_W,
       H_KH, H_KW, H_SH, H_SW, H_PAD_TOP, H_PAD_LEFT, H_DEPTHWISE, H_ACTIVATION, H_N_SLOTS, H_OUT_KEY,
       H_OUT_SLOT_SHIFT, H_OUT_C_SHIFT, H_OUT_H_SHIFT, H_N_RX, H_WORDS };

#define PARAM_WORDS 4u
#define INT31 0x7FFFFFFFu

typedef struct {
    uint32_t n_icpo, words_per_oc, weights_at, params_at, table_at;
    uint32_t inputs_bytes, wbuf_bytes, stream_bytes;
} layout_t;

static uint32_t align8(uint32_t bytes) { return (bytes + 7u) & ~7u; }

static int conv_layout(const uint32_t *cfg, uint32_t n_words, layout_t *l) {
    uint32_t i;
    uint64_t need, n_w;
    if (n_words < H_WORDS || cfg[H_KIND] != SPINN_KIND_CONV) return -1;
    for (i = H_N_IC; i <= H_PAD_LEFT; i++)
        if (cfg[i] > SPINN_MAX_DIM) return -1;
    if (cfg[H_N_IC] == 0u || cfg[H_IN_H] == 0u || cfg[H_IN_W] == 0u || cfg[H_N_IH] == 0u || cfg[H_N_OC] == 0u ||
        cfg[H_N_OH] == 0u || cfg[H_OUT_W] == 0u || cfg[H_KH] == 0u || cfg[H_KW] == 0u || cfg[H_SH] == 0u ||
        cfg[H_SW] == 0u || cfg[H_DEPTHWISE] > 1u || cfg[H_ACTIVATION] > SPINN_ACT_SIGMOID ||
        cfg[H_N_SLOTS] == 0u || cfg[H_N_SLOTS] > SPINN_MAX_SLOTS || cfg[H_N_RX] > SPINN_MAX_RX)
        return -1;
    if (cfg[H_IH0] + cfg[H_N_IH] > cfg[H_IN_H]) return -1;
    if (cfg[H_DEPTHWISE] && cfg[H_N_IC] != cfg[H_N_OC]) return -1;
    /* every window coordinate fits int32 */
    if ((uint64_t)(cfg[H_OH0] + cfg[H_N_OH]) * cfg[H_SH] + cfg[H_KH] > INT31 ||
        (uint64_t)cfg[H_OUT_W] * cfg[H_SW] + cfg[H_KW] > INT31)
        return -1;
    if (!spinn_tensor_fields_ok(cfg[H_OUT_KEY], cfg[H_N_SLOTS], cfg[H_OUT_SLOT_SHIFT], cfg[H_OUT_C_SHIFT],
                                cfg[H_OUT_H_SHIFT], cfg[H_N_OC], cfg[H_N_OH], cfg[H_OUT_W]))
        return -1;
    l->n_icpo = cfg[H_DEPTHWISE] ? 1u : cfg[H_N_IC];
    n_w = (uint64_t)l->n_icpo * cfg[H_KH] * cfg[H_KW]; /* < 2^48 */
    /* weights per channel and MACs per output row of a channel stay in uint32 */
    if (n_w * cfg[H_OUT_W] > SPINN_TENSOR_MAX_WORKSPACE) return -1;
    l->words_per_oc = (uint32_t)((n_w + 1u) >> 1);
    need = (uint64_t)H_WORDS + (uint64_t)cfg[H_N_RX] * SPINN_TRX_WORDS;
    l->weights_at = (uint32_t)need; /* < 2^21 */
    need += (uint64_t)cfg[H_N_OC] * l->words_per_oc;
    if (need > n_words) return -1;
    l->params_at = (uint32_t)need;
    need += (uint64_t)cfg[H_N_OC] * PARAM_WORDS;
    l->table_at = (uint32_t)need;
    if (cfg[H_ACTIVATION] >= SPINN_ACT_TANH) need += SPINN_TANH_WORDS;
    if (need > n_words) return -1;
    for (i = 0; i < cfg[H_N_OC]; i++)
        if (cfg[l->params_at + i * PARAM_WORDS + 3u] > 63u) return -1;
    need = (uint64_t)cfg[H_N_SLOTS] * cfg[H_N_IC] * cfg[H_N_IH] * cfg[H_IN_W] * 2u;
    if (need > SPINN_TENSOR_MAX_WORKSPACE) return -1;
    l->inputs_bytes = align8((uint32_t)need);
    l->wbuf_bytes = align8((uint32_t)n_w * 2u);
    l->stream_bytes = align8(4u * spinn_stream_words(cfg[H_N_SLOTS], cfg[H_N_IH]));
    if ((uint64_t)l->inputs_bytes + l->wbuf_bytes + l->stream_bytes > SPINN_TENSOR_MAX_WORKSPACE) return -1;
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
    return l.inputs_bytes + l.wbuf_bytes + l.stream_bytes;
}

int spinn_conv_tile_init(spinn_conv_tile_t *s, const uint32_t *cfg, uint32_t n_words, void *workspace) {
    layout_t l;
    uint32_t i, n_bytes;
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
    s->out_key = cfg[H_OUT_KEY];
    s->out_slot_shift = cfg[H_OUT_SLOT_SHIFT];
    s->out_c_shift = cfg[H_OUT_C_SHIFT];
    s->out_h_shift = cfg[H_OUT_H_SHIFT];
    s->n_rx = cfg[H_N_RX];
    s->n_icpo = l.n_icpo;
    s->words_per_oc = l.words_per_oc;
    s->rx = cfg + H_WORDS;
    s->weights = cfg + l.weights_at;
    s->params = cfg + l.params_at;
    s->table = s->activation >= SPINN_ACT_TANH ? cfg + l.table_at : 0;
    n_bytes = l.inputs_bytes + l.wbuf_bytes + l.stream_bytes;
    for (i = 0; i < n_bytes; i++) ws[i] = 0;
    s->inputs = (int16_t *)ws;
    s->wbuf = (int16_t *)(ws + l.inputs_bytes);
    spinn_stream_init(&s->st, (uint32_t *)(ws + l.inputs_bytes + l.wbuf_bytes), s->n_slots, s->n_ih,
                      s->n_ic * s->in_w, s->n_oh);
    for (i = 0; i < sizeof(s->counters) / 4u; i++) ((uint32_t *)&s->counters)[i] = 0;
    return 0;
}

/* Whether local output row r of the slot has all its input rows. */
static int row_ready(const void *kernel, uint32_t slot, uint32_t r) {
    const spinn_conv_tile_t *s = (const spinn_conv_tile_t *)kernel;
    return spinn_window_ready(&s->st, slot, s->oh0 + r, s->sh, s->pad_top, s->kh, s->in_h, s->ih0);
}

int32_t spinn_conv_tile_receive(spinn_conv_tile_t *s, uint32_t key, uint32_t payload) {
    int16_t *bufs[1];
    bufs[0] = s->inputs;
    return spinn_tensor_receive(s->rx, s->n_rx, key, payload, bufs, s->n_ic * s->n_ih * s->in_w, 0u, &s->st,
                                &s->counters, row_ready, s);
}

static void add_macs(spinn_counters_t *c, uint32_t macs) {
    c->macs_lo += macs;
    if (c->macs_lo < macs) c->macs_hi++;
}

/* Unpack output channel j's weights into wbuf (int16, (ic, ky, kx) order). */
static void unpack_weights(const spinn_conv_tile_t *s, uint32_t j) {
    const uint32_t *w = s->weights + j * s->words_per_oc;
    uint32_t i, n = s->n_icpo * s->kh * s->kw;
    for (i = 0; i + 1u < n; i += 2u, w++) {
        s->wbuf[i] = (int16_t)spinn_lo16(*w);
        s->wbuf[i + 1u] = (int16_t)spinn_hi16(*w);
    }
    if (i < n) s->wbuf[i] = (int16_t)spinn_lo16(*w);
}

/* acc + w . x over n int16: int32 products summed in int64 (SMLALBB on the
 * ARM968); a separate function keeps the accumulator in registers. */
#if defined(__GNUC__)
__attribute__((noinline))
#endif
static int64_t dot16(int64_t acc, const int16_t *w, const int16_t *x, uint32_t n) {
    uint32_t k;
    for (k = 0; k < n; k++) acc += (int64_t)((int32_t)w[k] * (int32_t)x[k]);
    return acc;
}

/* [lo, hi) of kernel offsets whose input coordinate start + k lies in [0, n). */
static void kernel_range(int32_t start, uint32_t k, uint32_t n, uint32_t *lo, uint32_t *hi) {
    int32_t a = start < 0 ? -start : 0, b = (int32_t)n - start;
    if (b > (int32_t)k) b = (int32_t)k;
    if (b < a) b = a;
    *lo = (uint32_t)a;
    *hi = (uint32_t)b;
}

/* Compute local output row r of the slot and send it. On the tile's last row
 * the slot is released just before its last packet. Returns 0 or -1; after a
 * failed send the rest of the sample is abandoned (the slot still recovers). */
static int conv_row(void *kernel, uint32_t slot, uint32_t r, spinn_send_fn send, void *ctx) {
    spinn_conv_tile_t *s = (spinn_conv_tile_t *)kernel;
    const int16_t *x = s->inputs + slot * (s->n_ic * s->n_ih * s->in_w);
    uint32_t ic_stride = s->n_ih * s->in_w, kk = s->kh * s->kw;
    int32_t iy0 = (int32_t)((s->oh0 + r) * s->sh) - (int32_t)s->pad_top;
    int last_row = r + 1u == s->n_oh;
    uint32_t j, ow, ic, ky, ky_lo, ky_hi;
    kernel_range(iy0, s->kh, s->in_h, &ky_lo, &ky_hi);
    for (j = 0; j < s->n_oc; j++) {
        const uint32_t *p = s->params + j * PARAM_WORDS;
        const int16_t *xj = x + (s->depthwise ? j * ic_stride : 0u);
        int64_t bias = spinn_read_i64(p);
        uint32_t key = spinn_tensor_key(s->out_key, s->out_slot_shift, s->out_c_shift, s->out_h_shift, slot, j, r);
        uint32_t macs = 0;
        int32_t pending = 0;
        unpack_weights(s, j);
        for (ow = 0; ow < s->out_w; ow++) {
            int32_t ix0 = (int32_t)(ow * s->sw) - (int32_t)s->pad_left;
            uint32_t kx_lo, kx_hi;
            int64_t acc = bias;
            int32_t y;
            kernel_range(ix0, s->kw, s->in_w, &kx_lo, &kx_hi);
            if (kx_hi > kx_lo && ky_hi > ky_lo) {
                uint32_t n = kx_hi - kx_lo;
                for (ic = 0; ic < s->n_icpo; ic++) {
                    for (ky = ky_lo; ky < ky_hi; ky++) {
                        const int16_t *xr = xj + ic * ic_stride +
                                            ((uint32_t)(iy0 + (int32_t)ky) - s->ih0) * s->in_w +
                                            (uint32_t)(ix0 + (int32_t)kx_lo);
                        const int16_t *wr = s->wbuf + ic * kk + ky * s->kw + kx_lo;
                        acc = dot16(acc, wr, xr, n);
                    }
                }
                macs += s->n_icpo * (ky_hi - ky_lo) * n;
            }
            y = spinn_requantize(acc, (int32_t)p[2], p[3]);
            y = spinn_activate(s->activation, s->table, y);
            if (!(ow & 1u) && ow + 1u < s->out_w) {
                pending = y;
                continue;
            }
            if (spinn_tensor_send(&s->st, slot, last_row && j + 1u == s->n_oc && ow + 1u == s->out_w, key | (ow >> 1),
                                  (ow & 1u) ? spinn_pack16(pending, y) : spinn_pack16(y, 0), send, ctx, &s->counters) != 0)
                return -1;
        }
        add_macs(&s->counters, macs);
        s->counters.outputs += s->out_w;
    }
    return 0;
}

int spinn_conv_tile_compute(spinn_conv_tile_t *s, uint32_t slot, spinn_send_fn send, void *ctx) {
    return spinn_tensor_compute(&s->st, slot, row_ready, conv_row, s, send, ctx, &s->counters);
}
