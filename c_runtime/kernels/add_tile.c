/* Add tile kernel (residual add of two tensors): see spinn_tensor.h. Portable C99, freestanding. */
#include "spinn_tensor.h"

enum { H_KIND, H_C0, H_N_C, H_H, H_W, H_H0, H_N_H, H_ACTIVATION, H_MULT_A, H_MULT_B, H_SHIFT, H_N_SLOTS,
       H_OUT_KEY, H_OUT_SLOT_SHIFT, H_OUT_C_SHIFT, H_OUT_H_SHIFT, H_N_RX, H_WORDS };

typedef struct {
    uint32_t input_bytes, stream_bytes, rows_bytes, keys_at;
    uint32_t workspace_bytes; /* the sum of the parts */
} layout_t;

static SPINN_COLD int add_layout(const uint32_t *cfg, uint32_t n_words, layout_t *l) {
    uint32_t i;
    uint64_t need;
    if (n_words < H_WORDS || cfg[H_KIND] != SPINN_KIND_ADD) return -1;
    for (i = H_C0; i <= H_N_H; i++)
        if (cfg[i] > SPINN_MAX_DIM) return -1;
    if (cfg[H_N_C] == 0u || cfg[H_H] == 0u || cfg[H_W] == 0u || cfg[H_N_H] == 0u ||
        cfg[H_H0] + cfg[H_N_H] > cfg[H_H] || cfg[H_ACTIVATION] > SPINN_ACT_LEAKY || cfg[H_SHIFT] > 62u ||
        cfg[H_N_SLOTS] == 0u || cfg[H_N_SLOTS] > SPINN_MAX_SLOTS || cfg[H_N_RX] > SPINN_MAX_RX)
        return -1;
    if (!spinn_tensor_fields_ok(cfg[H_OUT_KEY], cfg[H_N_SLOTS], cfg[H_OUT_SLOT_SHIFT], cfg[H_OUT_C_SHIFT],
                                cfg[H_OUT_H_SHIFT], cfg[H_N_C], cfg[H_N_H], cfg[H_W]))
        return -1;
    need = (uint64_t)H_WORDS + (uint64_t)cfg[H_N_RX] * SPINN_TRX_WORDS;
    if (need + spinn_act_words(cfg[H_ACTIVATION]) > n_words ||
        !spinn_act_ok(cfg[H_ACTIVATION], cfg + (uint32_t)need))
        return -1;
    need += spinn_act_words(cfg[H_ACTIVATION]);
    if (!spinn_row_keys_ok(cfg + need, n_words - need, (uint64_t)cfg[H_N_C] * cfg[H_N_H], cfg[H_OUT_SLOT_SHIFT]))
        return -1;
    l->keys_at = (uint32_t)need;
    need = (uint64_t)cfg[H_N_SLOTS] * cfg[H_N_C] * cfg[H_N_H] * cfg[H_W] * 2u;
    if (2u * need > SPINN_TENSOR_MAX_WORKSPACE) return -1;
    l->input_bytes = spinn_align8((uint32_t)need);
    l->stream_bytes = spinn_align8(4u * spinn_stream_words(cfg[H_N_SLOTS], 2u * cfg[H_N_H]));
    l->rows_bytes = spinn_trx_rows_bytes(cfg[H_N_RX]);
    need = (uint64_t)2u * l->input_bytes + l->stream_bytes + l->rows_bytes;
    if (need > SPINN_TENSOR_MAX_WORKSPACE) return -1;
    l->workspace_bytes = (uint32_t)need;
    for (i = 0; i < 2u; i++)
        if (!spinn_trx_dst_is(cfg + H_WORDS, cfg[H_N_RX], i, cfg[H_C0], cfg[H_H0], 0u, cfg[H_N_C], cfg[H_N_H],
                              cfg[H_W]))
            return -1;
    return spinn_trx_valid(cfg + H_WORDS, cfg[H_N_RX], 2u) ? 0 : -1;
}

uint32_t spinn_add_tile_workspace(const uint32_t *cfg, uint32_t n_words) {
    layout_t l;
    if (add_layout(cfg, n_words, &l) != 0) return 0;
    return l.workspace_bytes;
}

SPINN_COLD int spinn_add_tile_init(spinn_add_tile_t *s, const uint32_t *cfg, uint32_t n_words, void *workspace) {
    layout_t l;
    uint8_t *ws = (uint8_t *)workspace;
    if (add_layout(cfg, n_words, &l) != 0) return -1;
    s->c0 = cfg[H_C0];
    s->n_c = cfg[H_N_C];
    s->h = cfg[H_H];
    s->w = cfg[H_W];
    s->h0 = cfg[H_H0];
    s->n_h = cfg[H_N_H];
    s->activation = cfg[H_ACTIVATION];
    s->mult_a = (int32_t)cfg[H_MULT_A];
    s->mult_b = (int32_t)cfg[H_MULT_B];
    s->shift = cfg[H_SHIFT];
    s->n_slots = cfg[H_N_SLOTS];
    spinn_block_keys_read(&s->out, cfg + H_OUT_KEY);
    spinn_block_keys_rows(&s->out, cfg + l.keys_at, n_words - l.keys_at, s->n_h);
    s->n_rx = cfg[H_N_RX];
    s->rx = cfg + H_WORDS;
    s->table = spinn_act_words(s->activation) ? s->rx + s->n_rx * SPINN_TRX_WORDS : 0;
    spinn_tensor_clear(ws, l.workspace_bytes, &s->counters);
    s->inputs[0] = (int16_t *)ws;
    s->inputs[1] = (int16_t *)(ws + l.input_bytes);
    spinn_stream_init(&s->st, (uint32_t *)(ws + 2u * l.input_bytes), s->n_slots, 2u * s->n_h, s->n_c * s->w,
                      s->n_h);
    spinn_trx_prepare(&s->rxr, s->rx, s->n_rx, s->inputs, 2u, s->n_c * s->n_h * s->w, s->n_h,
                      (spinn_trx_row_t *)(ws + 2u * l.input_bytes + l.stream_bytes));
    return 0;
}

/* Output row r needs row r of a (stream row r) and of b (stream row n_h + r). */
static int row_ready(const void *kernel, uint32_t slot, uint32_t r) {
    const spinn_add_tile_t *s = (const spinn_add_tile_t *)kernel;
    return spinn_stream_rows_complete(&s->st, slot, r, r + 1u) &&
           spinn_stream_rows_complete(&s->st, slot, s->n_h + r, s->n_h + r + 1u);
}

int32_t spinn_add_tile_receive(spinn_add_tile_t *s, uint32_t key, uint32_t payload) {
    return spinn_tensor_receive_rc(&s->rxr, &s->st, &s->counters, key, payload, row_ready, s);
}

static int32_t add_value(spinn_add_tile_t *s, int32_t a, int32_t b) {
    /* |a * mult| < 2^46 each: exact in int64 */
    int64_t acc = (int64_t)a * s->mult_a + (int64_t)b * s->mult_b;
    return spinn_finish(s->activation, s->table, acc, 1, s->shift, &s->counters.saturated);
}

/* Compute local row r of the slot and send it (see conv_row in conv_tile.c). */
static int add_row(void *kernel, uint32_t slot, uint32_t r, spinn_send_fn send, void *ctx) {
    spinn_add_tile_t *s = (spinn_add_tile_t *)kernel;
    uint32_t slot_off = slot * (s->n_c * s->n_h * s->w), c_stride = s->n_h * s->w;
    int last_row = r + 1u == s->n_h;
    uint32_t j, k;
    for (j = 0; j < s->n_c; j++) {
        uint32_t off = slot_off + j * c_stride + r * s->w;
        const int16_t *a = s->inputs[0] + off, *b = s->inputs[1] + off;
        uint32_t key = spinn_tensor_key(&s->out, slot, j, r);
        for (k = 0; k < s->w; k += 2u) {
            int32_t lo = add_value(s, a[k], b[k]);
            int32_t hi = k + 1u < s->w ? add_value(s, a[k + 1u], b[k + 1u]) : 0;
            if (spinn_tensor_send(&s->st, slot, last_row && j + 1u == s->n_c && k + 2u >= s->w, key | (k >> 1),
                                  spinn_pack16(lo, hi), send, ctx, &s->counters) != 0)
                return -1;
        }
        s->counters.outputs += s->w;
    }
    return 0;
}

int spinn_add_tile_compute(spinn_add_tile_t *s, uint32_t slot, spinn_send_fn send, void *ctx) {
    return spinn_tensor_compute(&s->st, slot, row_ready, add_row, s, send, ctx, &s->counters);
}

SPINN_STREAM_SLOT_HOOKS(add_tile)
