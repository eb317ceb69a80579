/*
 * Differential test of the tensor kernels' receive (spinn_tensor.h): the fast path
 * spinn_tensor_receive_rc, which remembers rows, against the general path
 * spinn_tensor_receive alone (the reference), on random receive tables and packet
 * orders. After every packet both must agree on everything the kernels read: the
 * returned slot, rx_slot, the buffers, the stream counts and the counters (but for
 * rx_general, which counts the general path). Exercises what the kernels' tests reach
 * only in part: producer blocks cut anywhere along w (odd src_w0, odd widths, widths
 * 1 and 2), buffer blocks that start or end mid-row (dst_w0 > src_w0: halos cut mid
 * pair either way), rows above and below the block, spare key bits, row fields that
 * hold fewer pairs than the row (the h_shift clamp), two buffers, 8-bit packing,
 * lost-value markers, strays, duplicates, slots emptied and reused (computes between
 * packets), producers interleaved, masks with holes in the row's fields (the keys with
 * such a bit set match no entry).
 *
 * Usage: trx_fuzz SEED ROUNDS; prints "ok N" (packets checked) or the first mismatch,
 * exit status 1.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spinn_tensor.h"

#define MAX_ENTRIES 24u /* also rows of the fast path, one per entry */
#define MAX_VALUES 4096u
#define MAX_ROWS 64u
#define MAX_PACKETS 20000u

static uint64_t rng_state;
static uint32_t rnd(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545F4914F6CDD1Dull) >> 32);
}
static uint32_t below(uint32_t n) { return n ? rnd() % n : 0u; }
static uint32_t log2up(uint32_t n) {
    uint32_t b = 0;
    while ((1u << b) < n) b++;
    return b;
}

typedef struct { /* a producer block and its key layout */
    uint32_t c0, nc, h0, nh, w0, nw, packing;
    uint32_t s_shift, c_shift, h_shift, key, mask;
    int ours; /* in the table */
} source_t;

typedef struct { /* one receiver's state: the stream and its buffers */
    spinn_stream_t st;
    uint32_t words[4u * MAX_ROWS + 12u];
    int16_t buf[2][MAX_VALUES];
    spinn_counters_t counters;
    spinn_trx_rows_t t;
    spinn_trx_row_t rows[MAX_ENTRIES];
    uint32_t n_out_rows;
} side_t;

/* Whether output row r of the slot may be computed: its input row r (mod the rows) is
 * complete, and, for every third r, the one after it too (rows needed out of order). */
static int row_ready(const void *kernel, uint32_t slot, uint32_t r) {
    const spinn_stream_t *st = &((const side_t *)kernel)->st;
    uint32_t a = r % st->n_rows, b = (r % 3u == 0u && a + 1u < st->n_rows) ? a + 2u : a + 1u;
    return spinn_stream_rows_complete(st, slot, a, b);
}

/* The kernels' compute of a slot, without the arithmetic: clear pending, then step its
 * output rows while ready; the last releases the slot (spinn_tensor_send's last). */
static void compute(side_t *s, uint32_t slot) {
    uint32_t r;
    s->st.pending[slot] = 0u;
    while ((r = s->st.next_row[slot]) < s->st.n_out_rows && row_ready(s, slot, r)) {
        if (r + 1u == s->st.n_out_rows) {
            spinn_stream_release(&s->st, slot);
            break;
        }
        s->st.next_row[slot] = r + 1u;
    }
}

static int same(const side_t *a, const side_t *b, uint32_t n_words) {
    return memcmp(a->words, b->words, n_words * 4u) == 0 && memcmp(a->buf, b->buf, sizeof(a->buf)) == 0 &&
           a->counters.packets_in == b->counters.packets_in && a->counters.dropped == b->counters.dropped &&
           a->st.rx_slot == b->st.rx_slot;
}

int main(int argc, char **argv) {
    uint32_t round, rounds, checked = 0u;
    uint64_t total_general = 0u, total_in = 0u;
    static uint32_t table[MAX_ENTRIES * SPINN_TRX_WORDS];
    static source_t src[MAX_ENTRIES + 1u];
    static uint32_t keys[MAX_PACKETS], payloads[MAX_PACKETS];
    static side_t ref, fast;
    if (argc != 3) return 2;
    rng_state = strtoull(argv[1], 0, 10) * 2654435761ull + 88172645463325252ull;
    rounds = (uint32_t)strtoul(argv[2], 0, 10);
    for (round = 0; round < rounds; round++) {
        /* a tensor C x H x W, cut into producer blocks; the receiver's buffer block(s) */
        uint32_t C = 1u + below(4), H = 1u + below(8), W = 1u + below(17);
        uint32_t n_buffers = 1u + below(2), n_slots = 1u + below(4), span = spinn_slot_span(n_slots);
        uint32_t whole = below(2), dc0 = whole ? 0u : below(C), dnc = whole ? C : 1u + below(C - dc0);
        uint32_t dh0 = whole ? 0u : below(H), dnh = whole ? H : 1u + below(H - dh0);
        uint32_t dw0 = below(3) ? 0u : below(W), dnw = (below(3) ? W - dw0 : 1u + below(W - dw0));
        uint32_t n_src = 0u, n_rx = 0u, b, i, j, n_pk = 0u, n_words, rows_per_buffer = dnh;
        uint32_t row_values = dnc * dnw, cuts_w[16], n_cw = 1u, w, cut_w = below(3) != 0;
        int8_t pack8 = below(8) == 0; /* an 8-bit live input */
        int16_t *bufs_ref[2], *bufs_fast[2];
        if (dnh * n_buffers > MAX_ROWS || n_slots * dnc * dnh * dnw > MAX_VALUES) continue;
        /* the w cuts: anywhere (odd starts and widths) */
        cuts_w[0] = 0u;
        for (w = 1u; w < W; w++)
            if (cut_w && below(4) == 0 && n_cw < 15u) cuts_w[n_cw++] = w;
        cuts_w[n_cw] = W;
        for (b = 0; b < n_buffers; b++) {
            /* per input: channel and row cuts, the w cuts above */
            uint32_t ch = 1u + below(2), rh = 1u + below(3), c, h;
            for (c = 0; c < C; c += ch)
                for (h = 0; h < H; h += rh)
                    for (w = 0; w < n_cw; w++) {
                        source_t *p = &src[n_src];
                        uint32_t slack = below(2), pairs;
                        if (n_src == MAX_ENTRIES) break;
                        p->c0 = c, p->nc = c + ch > C ? C - c : ch;
                        p->h0 = h, p->nh = h + rh > H ? H - h : rh;
                        p->w0 = cuts_w[w], p->nw = cuts_w[w + 1] - cuts_w[w];
                        p->packing = pack8 && b == 0u ? (below(2) ? SPINN_PACK_INT8 : SPINN_PACK_UINT8) : 0u;
                        pairs = p->packing ? (p->nw + 3u) / 4u : (p->nw + 1u) / 2u;
                        p->h_shift = log2up(pairs) + slack * below(2);
                        if (p->h_shift > 0u && below(8) == 0) p->h_shift--; /* a row field too narrow */
                        p->c_shift = p->h_shift + log2up(p->nh) + slack * below(2);
                        p->s_shift = p->c_shift + log2up(p->nc) + slack * below(2);
                        p->key = (n_src + 1u) << 24;
                        p->mask = ~((2u * span << p->s_shift) - 1u); /* room for the markers */
                        if (p->c_shift > 0u && below(10) == 0) /* a mask with a hole in the row's fields */
                            p->mask |= 1u << below(p->c_shift);
                        n_src++;
                        p->ours = 0;
                        if (!(p->c0 < dc0 + dnc && p->c0 + p->nc > dc0 && p->h0 < dh0 + dnh && p->h0 + p->nh > dh0) &&
                            below(4) != 0)
                            continue; /* not ours: not in the table (mostly) */
                        {
                            uint32_t *e = table + n_rx * SPINN_TRX_WORDS;
                            e[SPINN_TRX_KEY] = p->key;
                            e[SPINN_TRX_MASK] = p->mask;
                            e[SPINN_TRX_SLOT_SHIFT] = p->s_shift | p->packing << SPINN_RX_PACK_SHIFT;
                            e[SPINN_TRX_C_SHIFT] = p->c_shift;
                            e[SPINN_TRX_H_SHIFT] = p->h_shift;
                            e[SPINN_TRX_SRC_C0] = p->c0;
                            e[SPINN_TRX_SRC_H0] = p->h0;
                            e[SPINN_TRX_SRC_W0] = p->w0;
                            e[SPINN_TRX_SRC_NW] = p->nw;
                            e[SPINN_TRX_DST_C0] = dc0;
                            e[SPINN_TRX_DST_H0] = dh0;
                            e[SPINN_TRX_DST_W0] = dw0;
                            e[SPINN_TRX_DST_NC] = dnc;
                            e[SPINN_TRX_DST_NH] = dnh;
                            e[SPINN_TRX_DST_NW] = dnw;
                            e[SPINN_TRX_BUFFER] = b;
                            n_rx++;
                            p->ours = 1;
                        }
                    }
        }
        if (!spinn_trx_valid(table, n_rx, n_buffers)) {
            printf("invalid table in round %u\n", round);
            return 1;
        }
        /* the packets: each source's rows, slots in turn; sources interleaved in runs,
         * shuffled in part or wholly; plus markers, strays, duplicates */
        {
            uint32_t mode = below(4), n_samples = 1u + below(2 * n_slots), sample;
            int rows_outer = below(4) != 0; /* the kernels' order: a row of each channel, then the next */
            for (sample = 0; sample < n_samples; sample++) {
                uint32_t slot = sample % n_slots, first = n_pk, k;
                for (i = 0; i < n_src; i++) {
                    source_t *p = &src[i];
                    uint32_t per = p->packing ? 4u : 2u, pairs = (p->nw + per - 1u) / per, c, h, q;
                    if (!p->ours && below(4) != 0) continue;
                    if (pairs > 1u << p->h_shift) pairs = 1u << p->h_shift; /* what the entry can decode */
                    uint32_t a, b2;
                    for (a = 0; a < (rows_outer ? p->nh : p->nc); a++)
                        for (b2 = 0; b2 < (rows_outer ? p->nc : p->nh); b2++)
                            for (q = 0, c = rows_outer ? b2 : a, h = rows_outer ? a : b2; q < pairs && n_pk < MAX_PACKETS; q++) {
                                uint32_t s = slot + (below(40) == 0 ? span : 0u); /* now and then a marker */
                                keys[n_pk] = p->key | s << p->s_shift | c << p->c_shift | h << p->h_shift | q;
                                payloads[n_pk++] = rnd();
                            }
                }
                if (mode == 1) { /* interleave the sources' runs: row by row, round robin (a riffle) */
                    for (k = first; k + 1u < n_pk; k++) {
                        uint32_t o = k + below(n_pk - k < 8u ? n_pk - k : 8u);
                        uint32_t tk = keys[k], tp = payloads[k];
                        keys[k] = keys[o], payloads[k] = payloads[o], keys[o] = tk, payloads[o] = tp;
                    }
                } else if (mode == 2) { /* wholly shuffled */
                    for (k = n_pk - 1u; k > first; k--) {
                        uint32_t o = first + below(k - first + 1u);
                        uint32_t tk = keys[k], tp = payloads[k];
                        keys[k] = keys[o], payloads[k] = payloads[o], keys[o] = tk, payloads[o] = tp;
                    }
                } else if (mode == 3 && n_pk > first) { /* sources in blocks of rows, interleaved */
                    uint32_t n = n_pk - first, run = 1u + below(6), a;
                    static uint32_t tk[MAX_PACKETS], tp[MAX_PACKETS];
                    uint32_t m = 0u;
                    for (a = 0; a < run; a++)
                        for (k = first + a; k < n_pk; k += run) tk[m] = keys[k], tp[m++] = payloads[k];
                    memcpy(keys + first, tk, n * 4u);
                    memcpy(payloads + first, tp, n * 4u);
                }
            }
            /* strays: a duplicate, a key of no entry, pairs beyond the row, another field's bit */
            for (i = 0; i < n_pk / 20u && n_pk + 1u < MAX_PACKETS; i++) {
                uint32_t at = below(n_pk), what = below(5), k = keys[below(n_pk)];
                uint32_t from = (k >> 24) - 1u;
                const source_t *p = &src[from < n_src ? from : 0u];
                if (what == 1) k = (k & 0xFFFFFFu) | 0x7F000000u;
                if (what == 2) k |= 0xFFu;
                if (what == 3) k ^= 1u << (8u + below(16));
                if (what == 4 && from < n_src) /* the pair after the row's last */
                    k = (k & ~((1u << p->h_shift) - 1u)) | ((p->nw + (p->packing ? 3u : 1u)) / (p->packing ? 4u : 2u));
                memmove(keys + at + 1, keys + at, (n_pk - at) * 4u);
                memmove(payloads + at + 1, payloads + at, (n_pk - at) * 4u);
                keys[at] = k, payloads[at] = rnd();
                n_pk++;
            }
        }
        /* both sides from zero */
        n_words = spinn_stream_words(n_slots, dnh * n_buffers);
        memset(&ref, 0, sizeof(ref));
        memset(&fast, 0, sizeof(fast));
        for (i = 0; i < 2u; i++) {
            side_t *s = i ? &fast : &ref;
            int16_t **bufs = i ? bufs_fast : bufs_ref;
            bufs[0] = s->buf[0];
            bufs[1] = s->buf[1];
            s->n_out_rows = 1u + below(2 * dnh * n_buffers);
            spinn_stream_init(&s->st, s->words, n_slots, dnh * n_buffers, row_values, 1u);
            spinn_trx_prepare(&s->t, table, n_rx, bufs, n_buffers, dnc * dnh * dnw, rows_per_buffer, s->rows);
        }
        fast.st.n_out_rows = ref.st.n_out_rows = fast.n_out_rows = ref.n_out_rows;
        for (j = 0; j < n_pk; j++) {
            int32_t a = spinn_tensor_receive(table, n_rx, keys[j], payloads[j], bufs_ref, dnc * dnh * dnw,
                                             rows_per_buffer, &ref.st, &ref.counters, row_ready, &ref, 0);
            int32_t f = spinn_tensor_receive_rc(&fast.t, &fast.st, &fast.counters, keys[j], payloads[j],
                                                row_ready, &fast);
            if (a != f || !same(&ref, &fast, n_words)) {
                printf("mismatch: round %u packet %u key 0x%08x: returned %d (general path %d), rx_slot %d (%d),"
                       " packets_in %u (%u), dropped %u (%u); C H W %u %u %u, block c %u+%u h %u+%u w %u+%u,"
                       " %u buffer(s), %u slot(s)\n",
                       round, j, keys[j], f, a, fast.st.rx_slot, ref.st.rx_slot, fast.counters.packets_in,
                       ref.counters.packets_in, fast.counters.dropped, ref.counters.dropped, C, H, W, dc0, dnc, dh0,
                       dnh, dw0, dnw, n_buffers, n_slots);
                return 1;
            }
            checked++;
            if (a >= 0 || below(8) == 0) { /* a compute, now or later: the same on both sides */
                uint32_t slot = a >= 0 ? (uint32_t)a : below(n_slots);
                if (a >= 0 || ref.st.pending[slot]) {
                    compute(&ref, slot);
                    compute(&fast, slot);
                }
            }
        }
        total_general += fast.counters.rx_general;
        total_in += fast.counters.packets_in;
        if (fast.counters.rx_general > fast.counters.packets_in) {
            printf("rx_general %u > packets_in %u\n", fast.counters.rx_general, fast.counters.packets_in);
            return 1;
        }
    }
    printf("ok %u packets, %" PRIu64 " of %" PRIu64 " on the general path\n", checked, total_general, total_in);
    return 0;
}
