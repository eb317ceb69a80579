/* Pool tile kernel (max / average): see spinn_tensor.h. Portable C99, freestanding. */
#include "spinn_tensor.h"

enum { H_KIND, H_N_C, H_IN_H, H_IN_W, H_C0, H_IH0, H_N_IH, H_OH0, H_N_OH, H_OUT_W, H_KH, H_KW, H_SH, H_SW,
       H_PAD_TOP, H_PAD_LEFT, H_PAD_BOTTOM, H_PAD_RIGHT, H_MODE, H_COUNT_INCLUDE_PAD, H_RECIP_SHIFT,
       H_N_SLOTS, H_OUT_KEY, H_OUT_SLOT_SHIFT, H_OUT_C_SHIFT, H_OUT_H_SHIFT, H_N_RX, H_WORDS };

typedef struct {
    uint32_t recip_at, keys_at, inputs_bytes, stream_bytes, rows_bytes;
    uint32_t workspace_bytes; /* the sum of the parts */
} layout_t;

static SPINN_COLD int pool_layout(const uint32_t *cfg, uint32_t n_words, layout_t *l) {
    spinn_pool_params_t p;
    uint64_t need;
    if (n_words < H_WORDS || cfg[H_KIND] != SPINN_KIND_POOL) return -1;
    if (cfg[H_N_C] == 0u || cfg[H_N_C] > SPINN_MAX_DIM || cfg[H_C0] > SPINN_MAX_DIM || cfg[H_N_SLOTS] == 0u ||
        cfg[H_N_SLOTS] > SPINN_MAX_SLOTS || cfg[H_N_RX] > SPINN_MAX_RX)
        return -1;
    spinn_pool_params_read(&p, cfg[H_IN_H], cfg[H_IN_W], cfg + H_KH);
    if (!spinn_pool_params_ok(&p, cfg[H_IH0], cfg[H_N_IH], cfg[H_OH0], cfg[H_N_OH], cfg[H_OUT_W])) return -1;
    if (!spinn_tensor_fields_ok(cfg[H_OUT_KEY], cfg[H_N_SLOTS], cfg[H_OUT_SLOT_SHIFT], cfg[H_OUT_C_SHIFT],
                                cfg[H_OUT_H_SHIFT], cfg[H_N_C], cfg[H_N_OH], cfg[H_OUT_W]))
        return -1;
    need = (uint64_t)H_WORDS + (uint64_t)cfg[H_N_RX] * SPINN_TRX_WORDS;
    l->recip_at = (uint32_t)need; /* < 2^21 */
    need += spinn_pool_recip_words(&p);
    if (need > n_words ||
        !spinn_row_keys_ok(cfg + need, n_words - need, (uint64_t)cfg[H_N_C] * cfg[H_N_OH], cfg[H_OUT_SLOT_SHIFT]))
        return -1;
    l->keys_at = (uint32_t)need;
    need = (uint64_t)cfg[H_N_SLOTS] * cfg[H_N_C] * cfg[H_N_IH] * cfg[H_IN_W] * 2u;
    if (need > SPINN_TENSOR_MAX_WORKSPACE) return -1;
    l->inputs_bytes = spinn_align8((uint32_t)need);
    l->stream_bytes = spinn_align8(4u * spinn_stream_words(cfg[H_N_SLOTS], cfg[H_N_IH]));
    l->rows_bytes = spinn_trx_rows_bytes(cfg[H_N_RX]);
    need = (uint64_t)l->inputs_bytes + l->stream_bytes + l->rows_bytes;
    if (need > SPINN_TENSOR_MAX_WORKSPACE) return -1;
    l->workspace_bytes = (uint32_t)need;
    if (!spinn_trx_valid(cfg + H_WORDS, cfg[H_N_RX], 1u) ||
        !spinn_trx_dst_is(cfg + H_WORDS, cfg[H_N_RX], 0u, cfg[H_C0], cfg[H_IH0], 0u, cfg[H_N_C], cfg[H_N_IH],
                          cfg[H_IN_W]))
        return -1;
    return 0;
}

uint32_t spinn_pool_tile_workspace(const uint32_t *cfg, uint32_t n_words) {
    layout_t l;
    if (pool_layout(cfg, n_words, &l) != 0) return 0;
    return l.workspace_bytes;
}

SPINN_COLD int spinn_pool_tile_init(spinn_pool_tile_t *s, const uint32_t *cfg, uint32_t n_words, void *workspace) {
    layout_t l;
    uint8_t *ws = (uint8_t *)workspace;
    if (pool_layout(cfg, n_words, &l) != 0) return -1;
    s->n_c = cfg[H_N_C];
    s->c0 = cfg[H_C0];
    s->ih0 = cfg[H_IH0];
    s->n_ih = cfg[H_N_IH];
    s->oh0 = cfg[H_OH0];
    s->n_oh = cfg[H_N_OH];
    s->out_w = cfg[H_OUT_W];
    s->n_slots = cfg[H_N_SLOTS];
    spinn_block_keys_read(&s->out, cfg + H_OUT_KEY);
    spinn_block_keys_rows(&s->out, cfg + l.keys_at, n_words - l.keys_at, s->n_oh);
    s->n_rx = cfg[H_N_RX];
    s->rx = cfg + H_WORDS;
    spinn_pool_params_read(&s->pool, cfg[H_IN_H], cfg[H_IN_W], cfg + H_KH);
    s->pool.recip = s->pool.mode == SPINN_POOL_AVG ? cfg + l.recip_at : 0;
    spinn_tensor_clear(ws, l.workspace_bytes, &s->counters);
    s->inputs = (int16_t *)ws;
    spinn_stream_init(&s->st, (uint32_t *)(ws + l.inputs_bytes), s->n_slots, s->n_ih, s->n_c * s->pool.in_w,
                      s->n_oh);
    spinn_trx_prepare(&s->rxr, s->rx, s->n_rx, &s->inputs, 1u, s->n_c * s->n_ih * s->pool.in_w, 0u,
                      (spinn_trx_row_t *)(ws + l.inputs_bytes + l.stream_bytes));
    return 0;
}

static int row_ready(const void *kernel, uint32_t slot, uint32_t r) {
    const spinn_pool_tile_t *s = (const spinn_pool_tile_t *)kernel;
    return spinn_window_ready(&s->st, slot, s->oh0 + r, s->pool.sh, s->pool.pad_top, s->pool.kh, s->pool.in_h,
                              s->ih0);
}

int32_t spinn_pool_tile_receive(spinn_pool_tile_t *s, uint32_t key, uint32_t payload) {
    return spinn_tensor_receive_rc(&s->rxr, &s->st, &s->counters, key, payload, row_ready, s);
}

/* Compute local output row r of the slot and send it (see conv_row). */
static int pool_row(void *kernel, uint32_t slot, uint32_t r, spinn_send_fn send, void *ctx) {
    spinn_pool_tile_t *s = (spinn_pool_tile_t *)kernel;
    uint32_t c_stride = s->n_ih * s->pool.in_w, j;
    const int16_t *x = s->inputs + slot * (s->n_c * c_stride);
    int last_row = r + 1u == s->n_oh;
    for (j = 0; j < s->n_c; j++) {
        uint32_t key = spinn_tensor_key(&s->out, slot, j, r);
        if (spinn_pool_send_row(&s->pool, x + j * c_stride, s->ih0, s->oh0 + r, s->out_w, &s->st, slot,
                                last_row && j + 1u == s->n_c, key, send, ctx, &s->counters) != 0)
            return -1;
    }
    return 0;
}

int spinn_pool_tile_compute(spinn_pool_tile_t *s, uint32_t slot, spinn_send_fn send, void *ctx) {
    return spinn_tensor_compute(&s->st, slot, row_ready, pool_row, s, send, ctx, &s->counters);
}

SPINN_STREAM_SLOT_HOOKS(pool_tile)
