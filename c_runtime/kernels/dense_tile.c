/* Dense tile kernel: see spinn_dense.h. Portable C99, freestanding. */
#include "spinn_dense.h"
#include "spinn_rx.h"
#include "spinn_dot.h"

enum { H_KIND, H_MODE, H_ROWS, H_COLS, H_BLOCK, H_OUT_KEY, H_OUT_SLOT_SHIFT, H_ACTIVATION,
       H_PARTIAL_SHIFT, H_N_SLOTS, H_N_RX, H_WORDS };

#define ROW_PARAM_WORDS 4u

static uint32_t align8(uint32_t bytes) { return (bytes + 7u) & ~7u; }

/* Check the header and compute where each part of the config lies. */
static SPINN_COLD int tile_layout(const uint32_t *cfg, uint32_t n_words, uint32_t *words_per_row,
                       uint32_t *weights_at, uint32_t *params_at, uint32_t *table_at) {
    uint32_t need;
    if (n_words < H_WORDS || cfg[H_KIND] != SPINN_KIND_DENSE_TILE) return -1;
    if (cfg[H_MODE] > SPINN_TILE_PARTIAL || cfg[H_ROWS] == 0u || cfg[H_COLS] == 0u) return -1;
    /* Bounds that keep every size computed below inside uint32 (a corrupt region must not wrap). */
    if (cfg[H_ROWS] > SPINN_MAX_DIM || cfg[H_COLS] > SPINN_MAX_DIM || cfg[H_N_RX] > SPINN_MAX_RX) return -1;
    if (cfg[H_BLOCK] < 2u || (cfg[H_BLOCK] & 1u) || cfg[H_N_SLOTS] == 0u ||
        cfg[H_N_SLOTS] > SPINN_MAX_SLOTS || cfg[H_ACTIVATION] > SPINN_ACT_LEAKY ||
        cfg[H_PARTIAL_SHIFT] > 32u || cfg[H_OUT_SLOT_SHIFT] > 24u)
        return -1;
    *words_per_row = (cfg[H_COLS] + 1u) >> 1;
    *weights_at = H_WORDS + cfg[H_N_RX] * SPINN_RX_WORDS;
    *params_at = *weights_at + cfg[H_ROWS] * *words_per_row;
    *table_at = *params_at;
    if (cfg[H_MODE] == SPINN_TILE_FINAL) *table_at += cfg[H_ROWS] * ROW_PARAM_WORDS;
    need = *table_at;
    if (cfg[H_MODE] == SPINN_TILE_FINAL) need += spinn_act_words(cfg[H_ACTIVATION]);
    if (need > n_words) return -1;
    if (cfg[H_MODE] == SPINN_TILE_FINAL && !spinn_act_ok(cfg[H_ACTIVATION], cfg + *table_at)) return -1;
    return spinn_rx_valid_packed(cfg + H_WORDS, cfg[H_N_RX]) ? 0 : -1; /* a first layer may take 8-bit input */
}

static uint32_t inputs_bytes(const uint32_t *cfg, uint32_t words_per_row) {
    return align8(cfg[H_N_SLOTS] * words_per_row * 4u);
}

uint32_t spinn_dense_tile_workspace(const uint32_t *cfg, uint32_t n_words) {
    uint32_t wpr, w_at, p_at, t_at;
    if (tile_layout(cfg, n_words, &wpr, &w_at, &p_at, &t_at) != 0) return 0;
    return inputs_bytes(cfg, wpr) + align8(cfg[H_N_SLOTS] * 4u);
}

SPINN_COLD int spinn_dense_tile_init(spinn_dense_tile_t *s, const uint32_t *cfg, uint32_t n_words, void *workspace) {
    uint32_t wpr, w_at, p_at, t_at, i, n_bytes;
    uint8_t *ws = (uint8_t *)workspace;
    if (tile_layout(cfg, n_words, &wpr, &w_at, &p_at, &t_at) != 0) return -1;
    s->mode = cfg[H_MODE];
    s->rows = cfg[H_ROWS];
    s->cols = cfg[H_COLS];
    s->words_per_row = wpr;
    s->block_words = cfg[H_BLOCK] >> 1;
    s->out_key = cfg[H_OUT_KEY];
    s->out_slot_shift = cfg[H_OUT_SLOT_SHIFT];
    s->activation = cfg[H_ACTIVATION];
    s->partial_shift = cfg[H_PARTIAL_SHIFT];
    s->n_slots = cfg[H_N_SLOTS];
    s->n_rx = cfg[H_N_RX];
    s->rx = cfg + H_WORDS;
    s->rx_last = 0;
    s->rx_cache = spinn_rx_disjoint(s->rx, s->n_rx);
    s->weights = cfg + w_at;
    s->row_params = cfg + p_at;
    /* Blocks per row, counted once here: the kernels never divide. */
    s->blocks_per_row = 0;
    for (i = 0; i < wpr; i += s->block_words) s->blocks_per_row++;
    s->table = (s->mode == SPINN_TILE_FINAL && spinn_act_words(s->activation)) ? cfg + t_at : 0;
    s->inputs = (int16_t *)ws;
    s->counts = (uint32_t *)(ws + inputs_bytes(cfg, wpr));
    /* Zero the workspace: the padding column of an odd tile must read 0. */
    n_bytes = spinn_dense_tile_workspace(cfg, n_words);
    for (i = 0; i < n_bytes; i++) ws[i] = 0;
    for (i = 0; i < sizeof(s->counters) / 4u; i++) ((uint32_t *)&s->counters)[i] = 0;
    return 0;
}

/* A packet through the receive table and spinn_rx_store_pair: any entry, markers,
 * values partly outside the tile, 8-bit packed input (never cached for the fast
 * path below, which takes int16 pairs only). */
static __attribute__((noinline)) int32_t receive_any(spinn_dense_tile_t *s, uint32_t key, uint32_t payload) {
    int32_t e = spinn_rx_match(s->rx, s->n_rx, key);
    const uint32_t *entry;
    uint32_t slot, stored, lost = 0u;
    s->rx_slot = -1;
    if (e < 0) {
        s->counters.dropped++;
        return -1;
    }
    entry = s->rx + (uint32_t)e * SPINN_RX_WORDS;
    if (s->rx_cache && !spinn_rx_packing(entry[SPINN_RX_SLOT_SHIFT])) s->rx_last = entry;
    stored = spinn_rx_store_pair(entry, key, payload, s->inputs, s->cols, s->n_slots, s->words_per_row << 1, &slot,
                                 &lost);
    if (stored == 0u) return -1;
    s->rx_slot = (int32_t)(slot | (lost ? SPINN_SLOT_LOST : 0u));
    s->counts[slot] += stored;
    return s->counts[slot] == s->cols ? (int32_t)slot : -1;
}

int32_t spinn_dense_tile_receive(spinn_dense_tile_t *s, uint32_t key, uint32_t payload) {
    const uint32_t *entry = s->rx_last;
    s->counters.packets_in++;
    /* The usual packet: the entry the last one matched, a value (not a marker) of a
     * slot, both of its values ours and word-aligned in the slot: one word store. */
    if (entry != 0 && (key & entry[SPINN_RX_MASK]) == entry[SPINN_RX_KEY]) {
        uint32_t local = key & ~entry[SPINN_RX_MASK], shift = entry[SPINN_RX_SLOT_SHIFT];
        uint32_t slot = local >> shift, index = (local & ((1u << shift) - 1u)) << 1;
        uint32_t pos = entry[SPINN_RX_DEST_OFFSET] + index; /* int32 offset: negative wraps past cols */
        if (slot < s->n_slots && index + 1u < entry[SPINN_RX_N_VALUES] && !(pos & 1u) && pos + 1u < s->cols) {
            spinn_pair_t *buf = (spinn_pair_t *)(void *)(s->inputs + slot * (s->words_per_row << 1));
            uint32_t n;
            buf[pos >> 1].w = payload;
            s->rx_slot = (int32_t)slot;
            n = s->counts[slot] + 2u;
            s->counts[slot] = n;
            return n == s->cols ? (int32_t)slot : -1;
        }
    }
    return receive_any(s, key, payload);
}

/* Rows wa and wb (wb may be wa) of W times the slot's inputs, exact in int64:
 * blocks of block_words pairs in int32, spilled to int64. */
static void rows_dot(const spinn_dense_tile_t *s, const uint32_t *wa, const uint32_t *wb, const int16_t *x16,
                     int64_t *acc) {
    /* the slot's inputs start on a word boundary: workspace 8-aligned, 2 * words_per_row per slot */
    const spinn_pair_t *x = (const spinn_pair_t *)(const void *)x16;
    uint32_t b, end, wpr = s->words_per_row;
    if (s->block_words == 1u) {
        spinn_dense_dot2_i64(wa, wb, x, wpr, acc);
        return;
    }
    acc[0] = acc[1] = 0;
    for (b = 0; b < wpr; b = end) {
        uint64_t sums;
        end = b + s->block_words;
        if (end > wpr) end = wpr;
        sums = spinn_dense_dot2_i32(wa + b, wb + b, x + b, end - b);
        acc[0] += (int32_t)(uint32_t)sums;
        acc[1] += (int32_t)(uint32_t)(sums >> 32);
    }
}

int spinn_dense_tile_compute(spinn_dense_tile_t *s, uint32_t slot, spinn_send_fn send, void *ctx) {
    const int16_t *x = s->inputs + slot * (s->words_per_row << 1);
    uint32_t key_base = s->out_key | (slot << s->out_slot_shift);
    uint32_t n, macs = s->rows * (s->words_per_row << 1);
    int32_t pending = 0;
    int64_t accs[2];
    s->counts[slot] = 0;
    for (n = 0; n < s->rows; n++) {
        int64_t acc;
        if (!(n & 1u)) { /* rows n and n + 1 together (the last one twice when rows is odd) */
            const uint32_t *wa = s->weights + n * s->words_per_row;
            rows_dot(s, wa, n + 1u < s->rows ? wa + s->words_per_row : wa, x, accs);
        }
        acc = accs[n & 1u];
        if (s->mode == SPINN_TILE_PARTIAL) {
            /* The partial sum fits int32 after this shift (proved at compile time). */
            int32_t part = (int32_t)spinn_round_shift(acc, s->partial_shift);
            if (send(ctx, key_base | n, (uint32_t)part) != 0) return -1;
            s->counters.packets_out++;
        } else {
            const uint32_t *p = s->row_params + n * ROW_PARAM_WORDS;
            int32_t y = spinn_finish(s->activation, s->table, acc + spinn_read_i64(p), (int32_t)p[2], p[3],
                                     &s->counters.saturated);
            if (n & 1u) {
                if (send(ctx, key_base | (n >> 1), spinn_pack16(pending, y)) != 0) return -1;
                s->counters.packets_out++;
            } else {
                pending = y;
            }
        }
    }
    if (s->mode == SPINN_TILE_FINAL && (s->rows & 1u)) {
        if (send(ctx, key_base | (s->rows >> 1), spinn_pack16(pending, 0)) != 0) return -1;
        s->counters.packets_out++;
    }
    s->counters.computes++;
    s->counters.outputs += s->rows;
    if (s->block_words > 1u) s->counters.blocks += s->rows * s->blocks_per_row;
    s->counters.macs_lo += macs;
    if (s->counters.macs_lo < macs) s->counters.macs_hi++;
    return 0;
}

int32_t spinn_dense_tile_rx_slot(const spinn_dense_tile_t *s) { return s->rx_slot; }

int spinn_dense_tile_busy(const spinn_dense_tile_t *s, uint32_t slot) { return s->counts[slot] != 0u; }

int32_t spinn_dense_tile_release(spinn_dense_tile_t *s, uint32_t slot) {
    if (slot >= s->n_slots || s->counts[slot] == 0u) return -1;
    s->counts[slot] = s->cols;
    return (int32_t)slot;
}
