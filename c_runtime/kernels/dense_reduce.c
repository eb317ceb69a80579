/* Dense reduce kernel: adds the partial sums of a layer's column tiles for
 * one block of rows, then bias, requantisation, activation; see spinn_dense.h. */
#include "spinn_dense.h"
#include "spinn_rx.h"

enum { H_KIND, H_ROWS, H_N_SOURCES, H_OUT_KEY, H_OUT_SLOT_SHIFT, H_ACTIVATION, H_PARTIAL_SHIFT,
       H_N_SLOTS, H_N_RX, H_WORDS };

#define ROW_PARAM_WORDS 4u

static uint32_t align8(uint32_t bytes) { return (bytes + 7u) & ~7u; }

static SPINN_COLD int reduce_layout(const uint32_t *cfg, uint32_t n_words, uint32_t *params_at, uint32_t *table_at) {
    uint32_t need;
    if (n_words < H_WORDS || cfg[H_KIND] != SPINN_KIND_DENSE_REDUCE) return -1;
    if (cfg[H_ROWS] == 0u || cfg[H_ROWS] > SPINN_MAX_DIM || cfg[H_N_SOURCES] == 0u ||
        cfg[H_N_SOURCES] > SPINN_MAX_RX || cfg[H_N_SLOTS] == 0u ||
        cfg[H_N_SLOTS] > SPINN_MAX_SLOTS || cfg[H_ACTIVATION] > SPINN_ACT_LEAKY ||
        cfg[H_PARTIAL_SHIFT] > 32u || cfg[H_OUT_SLOT_SHIFT] > 24u || cfg[H_N_RX] != cfg[H_N_SOURCES])
        return -1;
    *params_at = H_WORDS + cfg[H_N_RX] * SPINN_RX_WORDS;
    *table_at = *params_at + cfg[H_ROWS] * ROW_PARAM_WORDS;
    need = *table_at + spinn_act_words(cfg[H_ACTIVATION]);
    if (need > n_words || !spinn_act_ok(cfg[H_ACTIVATION], cfg + *table_at)) return -1;
    return spinn_rx_valid(cfg + H_WORDS, cfg[H_N_RX]) ? 0 : -1;
}

uint32_t spinn_dense_reduce_workspace(const uint32_t *cfg, uint32_t n_words) {
    uint32_t p_at, t_at;
    if (reduce_layout(cfg, n_words, &p_at, &t_at) != 0) return 0;
    return align8(cfg[H_N_SLOTS] * cfg[H_ROWS] * 8u) + align8(cfg[H_N_SLOTS] * 4u);
}

SPINN_COLD int spinn_dense_reduce_init(spinn_dense_reduce_t *s, const uint32_t *cfg, uint32_t n_words, void *workspace) {
    uint32_t p_at, t_at, i, n_bytes;
    uint8_t *ws = (uint8_t *)workspace;
    if (reduce_layout(cfg, n_words, &p_at, &t_at) != 0) return -1;
    s->rows = cfg[H_ROWS];
    s->n_sources = cfg[H_N_SOURCES];
    s->out_key = cfg[H_OUT_KEY];
    s->out_slot_shift = cfg[H_OUT_SLOT_SHIFT];
    s->activation = cfg[H_ACTIVATION];
    s->partial_shift = cfg[H_PARTIAL_SHIFT];
    s->n_slots = cfg[H_N_SLOTS];
    s->n_rx = cfg[H_N_RX];
    s->rx = cfg + H_WORDS;
    s->row_params = cfg + p_at;
    s->table = spinn_act_words(s->activation) ? cfg + t_at : 0;
    s->sums = (int64_t *)ws;
    s->counts = (uint32_t *)(ws + align8(s->n_slots * s->rows * 8u));
    n_bytes = spinn_dense_reduce_workspace(cfg, n_words);
    for (i = 0; i < n_bytes; i++) ws[i] = 0;
    for (i = 0; i < sizeof(s->counters) / 4u; i++) ((uint32_t *)&s->counters)[i] = 0;
    return 0;
}

int32_t spinn_dense_reduce_receive(spinn_dense_reduce_t *s, uint32_t key, uint32_t payload) {
    int32_t e = spinn_rx_match(s->rx, s->n_rx, key);
    const uint32_t *entry;
    uint32_t local, slot, row;
    int lost;
    s->counters.packets_in++;
    s->rx_slot = -1;
    if (e < 0) {
        s->counters.dropped++;
        return -1;
    }
    entry = s->rx + (uint32_t)e * SPINN_RX_WORDS;
    local = key & ~entry[SPINN_RX_MASK];
    slot = local >> entry[SPINN_RX_SLOT_SHIFT];
    row = local & ((1u << entry[SPINN_RX_SLOT_SHIFT]) - 1u);
    lost = spinn_slot_decode(&slot, s->n_slots);
    if (lost < 0 || row >= s->rows) {
        s->counters.dropped++;
        return -1;
    }
    s->rx_slot = (int32_t)(slot | (lost ? SPINN_SLOT_LOST : 0u));
    s->sums[slot * s->rows + row] += (int32_t)payload;
    s->counts[slot]++;
    return s->counts[slot] == s->rows * s->n_sources ? (int32_t)slot : -1;
}

int spinn_dense_reduce_compute(spinn_dense_reduce_t *s, uint32_t slot, spinn_send_fn send, void *ctx) {
    int64_t *sums = s->sums + slot * s->rows;
    uint32_t key_base = s->out_key | (slot << s->out_slot_shift);
    uint32_t n;
    int32_t pending = 0;
    s->counts[slot] = 0;
    for (n = 0; n < s->rows; n++) {
        const uint32_t *p = s->row_params + n * ROW_PARAM_WORDS;
        /* Undo the tiles' rounding shift, then finish exactly like a final tile. */
        int64_t acc = sums[n] * ((int64_t)1 << s->partial_shift) + spinn_read_i64(p);
        int32_t y = spinn_finish(s->activation, s->table, acc, (int32_t)p[2], p[3], &s->counters.saturated);
        sums[n] = 0;
        if (n & 1u) {
            if (send(ctx, key_base | (n >> 1), spinn_pack16(pending, y)) != 0) return -1;
            s->counters.packets_out++;
        } else {
            pending = y;
        }
    }
    if (s->rows & 1u) {
        if (send(ctx, key_base | (s->rows >> 1), spinn_pack16(pending, 0)) != 0) return -1;
        s->counters.packets_out++;
    }
    s->counters.computes++;
    s->counters.outputs += s->rows;
    return 0;
}

int32_t spinn_dense_reduce_rx_slot(const spinn_dense_reduce_t *s) { return s->rx_slot; }

int spinn_dense_reduce_busy(const spinn_dense_reduce_t *s, uint32_t slot) { return s->counts[slot] != 0u; }

int32_t spinn_dense_reduce_release(spinn_dense_reduce_t *s, uint32_t slot) {
    if (slot >= s->n_slots || s->counts[slot] == 0u) return -1;
    s->counts[slot] = s->rows * s->n_sources;
    return (int32_t)slot;
}
