/* Pool tile kernel (max / average): see spinn_tensor.h. Portable C99, freestanding. */
#include "spinn_tensor.h"

enum { H_KIND, H_N_C, H_IN_H, H_IN_W, H_C0, H_IH0, H_N_IH, H_OH0, H_N_OH, H_OUT_W, H_KH, H_KW, H_SH, H_SW,
       H_PAD_TOP, H_PAD_LEFT, H_PAD_BOTTOM, H_PAD_RIGHT, H_MODE, H_COUNT_INCLUDE_PAD, H_RECIP_SHIFT,
       H_N_SLOTS, H_OUT_KEY, H_OUT_SLOT_SHIFT, H_OUT_C_SHIFT, H_OUT_H_SHIFT, H_N_RX, H_WORDS };

#define INT31 0x7FFFFFFFu

typedef struct {
    uint32_t recip_at, inputs_bytes, stream_bytes;
} layout_t;

static uint32_t align8(uint32_t bytes) { return (bytes + 7u) & ~7u; }

/* [lo, hi) of window offsets whose coordinate start + k lies in [from, to). */
static void window_range(int32_t start, uint32_t k, int32_t from, int32_t to, uint32_t *lo, uint32_t *hi) {
    int32_t a = from - start, b = to - start;
    if (a < 0) a = 0;
    if (b > (int32_t)k) b = (int32_t)k;
    if (b < a) b = a;
    *lo = (uint32_t)a;
    *hi = (uint32_t)b;
}

static int pool_layout(const uint32_t *cfg, uint32_t n_words, layout_t *l) {
    uint32_t i;
    uint64_t need;
    if (n_words < H_WORDS || cfg[H_KIND] != SPINN_KIND_POOL) return -1;
    for (i = H_N_C; i <= H_PAD_RIGHT; i++)
        if (cfg[i] > SPINN_MAX_DIM) return -1;
    if (cfg[H_N_C] == 0u || cfg[H_IN_H] == 0u || cfg[H_IN_W] == 0u || cfg[H_N_IH] == 0u || cfg[H_N_OH] == 0u ||
        cfg[H_OUT_W] == 0u || cfg[H_KH] == 0u || cfg[H_KW] == 0u || cfg[H_SH] == 0u || cfg[H_SW] == 0u ||
        cfg[H_MODE] > SPINN_POOL_AVG || cfg[H_COUNT_INCLUDE_PAD] > 1u || cfg[H_RECIP_SHIFT] > 32u ||
        cfg[H_N_SLOTS] == 0u || cfg[H_N_SLOTS] > SPINN_MAX_SLOTS || cfg[H_N_RX] > SPINN_MAX_RX)
        return -1;
    if (cfg[H_IH0] + cfg[H_N_IH] > cfg[H_IN_H]) return -1;
    /* window sums fit int32 (|sum| <= 32768 * kh * kw) and coordinates int32 */
    if (cfg[H_KH] * cfg[H_KW] > 0xFFFFu) return -1;
    if ((uint64_t)(cfg[H_OH0] + cfg[H_N_OH]) * cfg[H_SH] + cfg[H_KH] + cfg[H_IN_H] + cfg[H_PAD_BOTTOM] > INT31 ||
        (uint64_t)cfg[H_OUT_W] * cfg[H_SW] + cfg[H_KW] + cfg[H_IN_W] + cfg[H_PAD_RIGHT] > INT31)
        return -1;
    if (!spinn_tensor_fields_ok(cfg[H_OUT_KEY], cfg[H_N_SLOTS], cfg[H_OUT_SLOT_SHIFT], cfg[H_OUT_C_SHIFT],
                                cfg[H_OUT_H_SHIFT], cfg[H_N_C], cfg[H_N_OH], cfg[H_OUT_W]))
        return -1;
    need = (uint64_t)H_WORDS + (uint64_t)cfg[H_N_RX] * SPINN_TRX_WORDS;
    l->recip_at = (uint32_t)need; /* < 2^21 */
    if (cfg[H_MODE] == SPINN_POOL_AVG) need += cfg[H_KH] * cfg[H_KW] + 1u;
    if (need > n_words) return -1;
    need = (uint64_t)cfg[H_N_SLOTS] * cfg[H_N_C] * cfg[H_N_IH] * cfg[H_IN_W] * 2u;
    if (need > SPINN_TENSOR_MAX_WORKSPACE) return -1;
    l->inputs_bytes = align8((uint32_t)need);
    l->stream_bytes = align8(4u * spinn_stream_words(cfg[H_N_SLOTS], cfg[H_N_IH]));
    if ((uint64_t)l->inputs_bytes + l->stream_bytes > SPINN_TENSOR_MAX_WORKSPACE) return -1;
    if (!spinn_window_band_ok(cfg[H_OH0], cfg[H_N_OH], cfg[H_SH], cfg[H_PAD_TOP], cfg[H_KH], cfg[H_IN_H],
                              cfg[H_IH0], cfg[H_N_IH]))
        return -1;
    if (!spinn_trx_valid(cfg + H_WORDS, cfg[H_N_RX], 1u) ||
        !spinn_trx_dst_is(cfg + H_WORDS, cfg[H_N_RX], 0u, cfg[H_C0], cfg[H_IH0], 0u, cfg[H_N_C], cfg[H_N_IH],
                          cfg[H_IN_W]))
        return -1;
    return 0;
}

uint32_t spinn_pool_tile_workspace(const uint32_t *cfg, uint32_t n_words) {
    layout_t l;
    if (pool_layout(cfg, n_words, &l) != 0) return 0;
    return l.inputs_bytes + l.stream_bytes;
}

int spinn_pool_tile_init(spinn_pool_tile_t *s, const uint32_t *cfg, uint32_t n_words, void *workspace) {
    layout_t l;
    uint32_t i, n_bytes;
    uint8_t *ws = (uint8_t *)workspace;
    if (pool_layout(cfg, n_words, &l) != 0) return -1;
    s->n_c = cfg[H_N_C];
    s->in_h = cfg[H_IN_H];
    s->in_w = cfg[H_IN_W];
    s->c0 = cfg[H_C0];
    s->ih0 = cfg[H_IH0];
    s->n_ih = cfg[H_N_IH];
    s->oh0 = cfg[H_OH0];
    s->n_oh = cfg[H_N_OH];
    s->out_w = cfg[H_OUT_W];
    s->kh = cfg[H_KH];
    s->kw = cfg[H_KW];
    s->sh = cfg[H_SH];
    s->sw = cfg[H_SW];
    s->pad_top = cfg[H_PAD_TOP];
    s->pad_left = cfg[H_PAD_LEFT];
    s->pad_bottom = cfg[H_PAD_BOTTOM];
    s->pad_right = cfg[H_PAD_RIGHT];
    s->mode = cfg[H_MODE];
    s->count_include_pad = cfg[H_COUNT_INCLUDE_PAD];
    s->recip_shift = cfg[H_RECIP_SHIFT];
    s->n_slots = cfg[H_N_SLOTS];
    s->out_key = cfg[H_OUT_KEY];
    s->out_slot_shift = cfg[H_OUT_SLOT_SHIFT];
    s->out_c_shift = cfg[H_OUT_C_SHIFT];
    s->out_h_shift = cfg[H_OUT_H_SHIFT];
    s->n_rx = cfg[H_N_RX];
    s->rx = cfg + H_WORDS;
    s->recip = s->mode == SPINN_POOL_AVG ? cfg + l.recip_at : 0;
    n_bytes = l.inputs_bytes + l.stream_bytes;
    for (i = 0; i < n_bytes; i++) ws[i] = 0;
    s->inputs = (int16_t *)ws;
    spinn_stream_init(&s->st, (uint32_t *)(ws + l.inputs_bytes), s->n_slots, s->n_ih, s->n_c * s->in_w, s->n_oh);
    for (i = 0; i < sizeof(s->counters) / 4u; i++) ((uint32_t *)&s->counters)[i] = 0;
    return 0;
}

static int row_ready(const void *kernel, uint32_t slot, uint32_t r) {
    const spinn_pool_tile_t *s = (const spinn_pool_tile_t *)kernel;
    return spinn_window_ready(&s->st, slot, s->oh0 + r, s->sh, s->pad_top, s->kh, s->in_h, s->ih0);
}

int32_t spinn_pool_tile_receive(spinn_pool_tile_t *s, uint32_t key, uint32_t payload) {
    int16_t *bufs[1];
    bufs[0] = s->inputs;
    return spinn_tensor_receive(s->rx, s->n_rx, key, payload, bufs, s->n_c * s->n_ih * s->in_w, 0u, &s->st,
                                &s->counters, row_ready, s);
}

/* Compute local output row r of the slot and send it (see conv_row). */
static int pool_row(void *kernel, uint32_t slot, uint32_t r, spinn_send_fn send, void *ctx) {
    spinn_pool_tile_t *s = (spinn_pool_tile_t *)kernel;
    const int16_t *x = s->inputs + slot * (s->n_c * s->n_ih * s->in_w);
    uint32_t c_stride = s->n_ih * s->in_w;
    int32_t iy0 = (int32_t)((s->oh0 + r) * s->sh) - (int32_t)s->pad_top;
    int last_row = r + 1u == s->n_oh;
    uint32_t j, ow, ky, kx, ky_lo, ky_hi, py_lo, py_hi;
    window_range(iy0, s->kh, 0, (int32_t)s->in_h, &ky_lo, &ky_hi);
    window_range(iy0, s->kh, -(int32_t)s->pad_top, (int32_t)(s->in_h + s->pad_bottom), &py_lo, &py_hi);
    for (j = 0; j < s->n_c; j++) {
        const int16_t *xj = x + j * c_stride;
        uint32_t key = spinn_tensor_key(s->out_key, s->out_slot_shift, s->out_c_shift, s->out_h_shift, slot, j, r);
        int32_t pending = 0;
        for (ow = 0; ow < s->out_w; ow++) {
            int32_t ix0 = (int32_t)(ow * s->sw) - (int32_t)s->pad_left, y = 0;
            uint32_t kx_lo, kx_hi;
            window_range(ix0, s->kw, 0, (int32_t)s->in_w, &kx_lo, &kx_hi);
            if (kx_hi > kx_lo && ky_hi > ky_lo) {
                if (s->mode == SPINN_POOL_MAX) {
                    int32_t m = SPINN_Q_MIN;
                    for (ky = ky_lo; ky < ky_hi; ky++) {
                        const int16_t *xr = xj + ((uint32_t)(iy0 + (int32_t)ky) - s->ih0) * s->in_w +
                                            (uint32_t)(ix0 + (int32_t)kx_lo);
                        for (kx = 0; kx < kx_hi - kx_lo; kx++)
                            if (xr[kx] > m) m = xr[kx];
                    }
                    y = m;
                } else {
                    int32_t sum = 0;
                    uint32_t n;
                    for (ky = ky_lo; ky < ky_hi; ky++) {
                        const int16_t *xr = xj + ((uint32_t)(iy0 + (int32_t)ky) - s->ih0) * s->in_w +
                                            (uint32_t)(ix0 + (int32_t)kx_lo);
                        for (kx = 0; kx < kx_hi - kx_lo; kx++) sum += xr[kx];
                    }
                    if (s->count_include_pad) {
                        uint32_t px_lo, px_hi;
                        window_range(ix0, s->kw, -(int32_t)s->pad_left, (int32_t)(s->in_w + s->pad_right), &px_lo,
                                     &px_hi);
                        n = (py_hi - py_lo) * (px_hi - px_lo);
                    } else {
                        n = (ky_hi - ky_lo) * (kx_hi - kx_lo);
                    }
                    /* |sum| <= 2^31, recip < 2^32: the product fits int64 */
                    y = spinn_sat16(spinn_round_shift((int64_t)sum * (int64_t)s->recip[n], s->recip_shift));
                }
            }
            if (!(ow & 1u) && ow + 1u < s->out_w) {
                pending = y;
                continue;
            }
            if (spinn_tensor_send(&s->st, slot, last_row && j + 1u == s->n_c && ow + 1u == s->out_w, key | (ow >> 1),
                                  (ow & 1u) ? spinn_pack16(pending, y) : spinn_pack16(y, 0), send, ctx, &s->counters) != 0)
                return -1;
        }
        s->counters.outputs += s->out_w;
    }
    return 0;
}

int spinn_pool_tile_compute(spinn_pool_tile_t *s, uint32_t slot, spinn_send_fn send, void *ctx) {
    return spinn_tensor_compute(&s->st, slot, row_ready, pool_row, s, send, ctx, &s->counters);
}
