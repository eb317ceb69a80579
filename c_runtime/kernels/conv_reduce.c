/* Conv reduce kernel: adds the partial sums of a convolution's input-channel
 * groups for one output block, then bias, requantisation, activation; see
 * spinn_tensor.h. Portable C99, freestanding. */
#include "spinn_tensor.h"

enum { H_KIND, H_OC0, H_N_OC, H_OH0, H_N_OH, H_OUT_W, H_N_GROUPS, H_PARTIAL_SHIFT, H_ACTIVATION, H_N_SLOTS,
       H_IN_SLOT_SHIFT, H_IN_C_SHIFT, H_IN_H_SHIFT, H_OUT_KEY, H_OUT_SLOT_SHIFT, H_OUT_C_SHIFT, H_OUT_H_SHIFT,
       H_N_RX, H_WORDS };

#define RX_WORDS SPINN_CONV_REDUCE_RX_WORDS
#define PARAM_WORDS 4u

typedef struct {
    uint32_t params_at, table_at, keys_at, acc_bytes, stream_bytes;
    uint32_t workspace_bytes; /* the sum of the parts */
} layout_t;

static SPINN_COLD int reduce_layout(const uint32_t *cfg, uint32_t n_words, layout_t *l) {
    uint32_t i;
    uint64_t need, values;
    if (n_words < H_WORDS || cfg[H_KIND] != SPINN_KIND_CONV_REDUCE) return -1;
    for (i = H_OC0; i <= H_OUT_W; i++)
        if (cfg[i] > SPINN_MAX_DIM) return -1;
    if (cfg[H_N_OC] == 0u || cfg[H_N_OH] == 0u || cfg[H_OUT_W] == 0u || cfg[H_N_GROUPS] == 0u ||
        cfg[H_N_GROUPS] > SPINN_MAX_RX || cfg[H_N_RX] != cfg[H_N_GROUPS] || cfg[H_PARTIAL_SHIFT] > 32u ||
        cfg[H_ACTIVATION] > SPINN_ACT_LEAKY || cfg[H_N_SLOTS] == 0u || cfg[H_N_SLOTS] > SPINN_MAX_SLOTS)
        return -1;
    /* the partial tiles' fields (one value per key: a block twice as wide), then ours */
    if (!spinn_tensor_fields_ok(0u, cfg[H_N_SLOTS], cfg[H_IN_SLOT_SHIFT], cfg[H_IN_C_SHIFT], cfg[H_IN_H_SHIFT],
                                cfg[H_N_OC], cfg[H_N_OH], 2u * cfg[H_OUT_W]) ||
        !spinn_tensor_fields_ok(cfg[H_OUT_KEY], cfg[H_N_SLOTS], cfg[H_OUT_SLOT_SHIFT], cfg[H_OUT_C_SHIFT],
                                cfg[H_OUT_H_SHIFT], cfg[H_N_OC], cfg[H_N_OH], cfg[H_OUT_W]))
        return -1;
    need = (uint64_t)H_WORDS + (uint64_t)cfg[H_N_RX] * RX_WORDS;
    l->params_at = (uint32_t)need; /* < 2^18 */
    need += (uint64_t)cfg[H_N_OC] * PARAM_WORDS;
    l->table_at = (uint32_t)need;
    need += spinn_act_words(cfg[H_ACTIVATION]);
    if (need > n_words || !spinn_act_ok(cfg[H_ACTIVATION], cfg + l->table_at) ||
        !spinn_row_keys_ok(cfg + need, n_words - need, (uint64_t)cfg[H_N_OC] * cfg[H_N_OH], cfg[H_OUT_SLOT_SHIFT]))
        return -1;
    l->keys_at = (uint32_t)need;
    for (i = 0; i < cfg[H_N_OC]; i++)
        if (cfg[l->params_at + i * PARAM_WORDS + 3u] > 63u) return -1;
    /* an entry decodes the in_* fields only if its mask leaves them to the key */
    for (i = 0; i < cfg[H_N_RX]; i++) {
        const uint32_t *e = cfg + H_WORDS + i * RX_WORDS;
        if ((e[0] & ~e[1]) != 0u || (e[1] & ((1u << cfg[H_IN_SLOT_SHIFT]) - 1u)) != 0u) return -1;
    }
    values = (uint64_t)cfg[H_N_OC] * cfg[H_N_OH] * cfg[H_OUT_W]; /* per slot; < 2^48 */
    /* the stream's per-slot value count (n_groups per value) stays in uint32 */
    if (values * cfg[H_N_GROUPS] > SPINN_TENSOR_MAX_WORKSPACE) return -1;
    need = values * cfg[H_N_SLOTS] * 4u;
    if (need > SPINN_TENSOR_MAX_WORKSPACE) return -1;
    l->acc_bytes = spinn_align8((uint32_t)need);
    l->stream_bytes = spinn_align8(4u * spinn_stream_words(cfg[H_N_SLOTS], cfg[H_N_OH]));
    need = (uint64_t)l->acc_bytes + l->stream_bytes;
    if (need > SPINN_TENSOR_MAX_WORKSPACE) return -1;
    l->workspace_bytes = (uint32_t)need;
    return 0;
}

uint32_t spinn_conv_reduce_workspace(const uint32_t *cfg, uint32_t n_words) {
    layout_t l;
    if (reduce_layout(cfg, n_words, &l) != 0) return 0;
    return l.workspace_bytes;
}

SPINN_COLD int spinn_conv_reduce_init(spinn_conv_reduce_t *s, const uint32_t *cfg, uint32_t n_words, void *workspace) {
    layout_t l;
    uint8_t *ws = (uint8_t *)workspace;
    if (reduce_layout(cfg, n_words, &l) != 0) return -1;
    s->oc0 = cfg[H_OC0];
    s->n_oc = cfg[H_N_OC];
    s->oh0 = cfg[H_OH0];
    s->n_oh = cfg[H_N_OH];
    s->out_w = cfg[H_OUT_W];
    s->n_groups = cfg[H_N_GROUPS];
    s->partial_shift = cfg[H_PARTIAL_SHIFT];
    s->activation = cfg[H_ACTIVATION];
    s->n_slots = cfg[H_N_SLOTS];
    s->in_slot_shift = cfg[H_IN_SLOT_SHIFT];
    s->in_c_shift = cfg[H_IN_C_SHIFT];
    s->in_h_shift = cfg[H_IN_H_SHIFT];
    spinn_block_keys_read(&s->out, cfg + H_OUT_KEY);
    spinn_block_keys_rows(&s->out, cfg + l.keys_at, n_words - l.keys_at, s->n_oh);
    s->n_rx = cfg[H_N_RX];
    s->rx = cfg + H_WORDS;
    s->params = cfg + l.params_at;
    s->table = spinn_act_words(s->activation) ? cfg + l.table_at : 0;
    spinn_tensor_clear(ws, l.workspace_bytes, &s->counters);
    s->acc = (uint32_t *)ws;
    spinn_stream_init(&s->st, (uint32_t *)(ws + l.acc_bytes), s->n_slots, s->n_oh,
                      s->n_groups * s->n_oc * s->out_w, s->n_oh);
    return 0;
}

/* Output row r needs input row r from every group. */
static int row_ready(const void *kernel, uint32_t slot, uint32_t r) {
    const spinn_conv_reduce_t *s = (const spinn_conv_reduce_t *)kernel;
    return spinn_stream_rows_complete(&s->st, slot, r, r + 1u);
}

/* acc[slot][c][h][0]: the block is c-major, as the tensors. */
static uint32_t *acc_row(const spinn_conv_reduce_t *s, uint32_t slot, uint32_t c, uint32_t h) {
    return s->acc + ((slot * s->n_oc + c) * s->n_oh + h) * s->out_w;
}

int32_t spinn_conv_reduce_receive(spinn_conv_reduce_t *s, uint32_t key, uint32_t payload) {
    int32_t e = spinn_match_entry(s->rx, s->n_rx, RX_WORDS, key);
    uint32_t local, slot, c, h, w;
    int lost;
    int32_t r;
    s->counters.packets_in++;
    s->st.rx_slot = -1;
    if (e < 0) {
        s->counters.dropped++;
        return -1;
    }
    local = key & ~s->rx[(uint32_t)e * RX_WORDS + 1u];
    slot = local >> s->in_slot_shift;
    c = (local >> s->in_c_shift) & ((1u << (s->in_slot_shift - s->in_c_shift)) - 1u);
    h = (local >> s->in_h_shift) & ((1u << (s->in_c_shift - s->in_h_shift)) - 1u);
    w = local & ((1u << s->in_h_shift) - 1u);
    lost = spinn_slot_decode(&slot, s->n_slots);
    if (lost < 0 || c >= s->n_oc || h >= s->n_oh || w >= s->out_w) {
        s->counters.dropped++;
        return -1;
    }
    /* int32 addition as uint32: wraps, never undefined. A slot whose outputs are
     * all out (only after a failed send: the sample is abandoned) counts its
     * stragglers but keeps its sums clear for the next sample. */
    if (s->st.next_row[slot] < s->n_oh) acc_row(s, slot, c, h)[w] += payload;
    r = spinn_stream_received(&s->st, slot, h, 1u, row_ready, s);
    if (lost) s->st.rx_slot |= SPINN_SLOT_LOST;
    return r;
}

/* Zero the slot's sums of rows [r, n_oh) (after a failed send: the slot is
 * reused, and its sums must start from 0). */
static void clear_rows(spinn_conv_reduce_t *s, uint32_t slot, uint32_t r) {
    uint32_t c, i;
    for (c = 0; c < s->n_oc; c++) {
        uint32_t *a = acc_row(s, slot, c, r);
        for (i = 0; i < (s->n_oh - r) * s->out_w; i++) a[i] = 0u;
    }
}

/* Finish local output row r of the slot and send it (see conv_row in
 * conv_tile.c). Each sum is zeroed as it is read, before the packet that
 * carries it: the tile's last packet frees the slot for the next sample. */
static int reduce_row(void *kernel, uint32_t slot, uint32_t r, spinn_send_fn send, void *ctx) {
    spinn_conv_reduce_t *s = (spinn_conv_reduce_t *)kernel;
    int last_row = r + 1u == s->n_oh;
    uint32_t j, ow;
    for (j = 0; j < s->n_oc; j++) {
        const uint32_t *p = s->params + j * PARAM_WORDS;
        int64_t bias = spinn_read_i64(p);
        uint32_t *a = acc_row(s, slot, j, r);
        uint32_t key = spinn_tensor_key(&s->out, slot, j, r);
        int32_t pending = 0;
        for (ow = 0; ow < s->out_w; ow++) {
            /* undo the tiles' rounding shift (a multiplication: the sum may be negative) */
            int64_t acc = (int64_t)(int32_t)a[ow] * ((int64_t)1 << s->partial_shift) + bias;
            int32_t y = spinn_finish(s->activation, s->table, acc, (int32_t)p[2], p[3], &s->counters.saturated);
            int last = last_row && j + 1u == s->n_oc && ow + 1u == s->out_w;
            a[ow] = 0u;
            if (spinn_tensor_send16(&s->st, slot, last, key, ow, s->out_w, y, &pending, send, ctx, &s->counters) !=
                0) {
                if (!last) clear_rows(s, slot, r); /* after the last packet the slot is already clear */
                return -1;
            }
        }
        s->counters.outputs += s->out_w;
    }
    return 0;
}

int spinn_conv_reduce_compute(spinn_conv_reduce_t *s, uint32_t slot, spinn_send_fn send, void *ctx) {
    return spinn_tensor_compute(&s->st, slot, row_ready, reduce_row, s, send, ctx, &s->counters);
}

SPINN_STREAM_SLOT_HOOKS(conv_reduce)
