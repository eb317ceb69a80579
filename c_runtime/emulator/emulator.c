/* Host emulator of a SpiNNaker board: see spinn_emulator.h. */
#include "spinn_emulator.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spinn_dense.h"
#include "spinn_rx.h"
#include "spinn_slots.h"
#include "spinn_tensor.h"
#include "timing.h"

/* The packet and lost-sample paths of every kernel, exactly as the spin1 binding has them. */
SPINN_SLOT_OPS(dense_tile)
SPINN_SLOT_OPS(dense_reduce)
SPINN_SLOT_OPS(conv_tile)
SPINN_SLOT_OPS(pool_tile)
SPINN_SLOT_OPS(add_tile)
SPINN_SLOT_OPS(conv_reduce)

#define LOCAL (-1) /* packet sent by a core of the chip, not arriving on a link */
#define MAX_HOPS 256u

typedef struct spinn_emu spinn_emu_s;

/* Routing tables indexed for lookup: an entry (key, mask) matches a packet iff
 * packet_key & mask == key, so per chip and per distinct mask a hash of
 * (mask, key) -> lowest entry index finds the first matching entry exactly. */
typedef struct {
    uint32_t chip1; /* chip + 1; 0 = empty slot */
    uint32_t mask, key, index;
} route_slot_t;

/* What the lookup found for a chip and a key's bits under the chip's union mask (the
 * OR of its table's masks: keys equal there match the same entries), cached: most
 * packets of a stream share those bits. */
typedef struct {
    uint32_t chip1; /* chip + 1; 0 = empty */
    uint32_t key;   /* key & union mask */
    uint32_t route;
    uint32_t found;
} route_cache_t;

#define ROUTE_CACHE 4096u /* entries, a power of two */

typedef struct core core_t;

/* A kernel kind's entry points (KERNEL_OPS). */
typedef struct {
    uint32_t (*workspace)(const uint32_t *cfg, uint32_t n_words);
    int (*init)(core_t *c, uint32_t n_words);
    int (*packet)(core_t *c, uint32_t key, uint32_t payload, int marker, spinn_send_fn send, spinn_send_fn send_lost,
                  void *ctx);
    uint32_t (*release)(core_t *c);
    spinn_counters_t *(*counters)(core_t *c);
    int32_t (*rx_slot)(core_t *c); /* slot of the last packet received (SPINN_SLOT_LOST marked), or -1 */
    int (*busy)(core_t *c, uint32_t slot);
} kernel_ops_t;

#define SPINN_EMU_KINDS 8u /* core kinds are 1..7 (spinn_emulator.h) */

struct core {
    spinn_emu_s *emu; /* back pointer: the send callback's context is the core */
    const kernel_ops_t *ops;
    uint32_t kind, chip, p;
    uint32_t *cfg;
    void *workspace;
    spinn_slots_t slots;
    uint32_t lost_bit; /* marker key bit (spinn_fixed.h); 0: markers go without payload */
    int stopped;       /* fault injection: the core takes no more packets */
    tm_core_t tm;      /* its clock (timed runs) */
    spinn_counters_t *counters; /* the kernel's work counters */
    union {
        spinn_dense_tile_t tile;
        spinn_dense_reduce_t reduce;
        spinn_conv_tile_t conv;
        spinn_pool_tile_t pool;
        spinn_add_tile_t add;
        spinn_conv_reduce_t conv_reduce;
    } k;
};

static int core_send_lost(void *ctx, uint32_t key, uint32_t payload);

typedef struct {
    uint32_t chip, key, slot_shift, c_shift, h_shift, c, h, w;
    uint32_t packing; /* spinn_rx.h SPINN_PACK_*: 2 int16 or 4 8-bit values per packet */
    uint32_t copy;    /* the copy of the function it feeds (spinn_emu_set_copies) */
} input_t;

struct spinn_emu {
    uint32_t n_chips;
    int32_t *links;
    uint32_t *table_offsets, *tables;
    route_slot_t *route_index;      /* open addressing, route_index_mask + 1 slots */
    uint32_t route_index_mask;
    uint32_t *mask_offsets, *masks; /* per chip: its distinct masks */
    uint32_t *union_mask;           /* per chip: the OR of its masks */
    route_cache_t *route_cache;     /* ROUTE_CACHE entries */
    int32_t *core_at; /* n_chips * 18 -> core index or -1 */
    core_t *cores;
    uint32_t n_cores, cap_cores;
    /* packet queue: a growable ring */
    packet_t *queue;
    uint32_t q_head, q_len, q_cap;
    /* live IO: each input is a (c, h, w) tensor, keys key | slot << slot_shift |
     * c << c_shift | h << h_shift | pair (dense: c = h = 1); a sample is the inputs'
     * values one after the other (in_n in all) */
    input_t inputs[SPINN_EMU_MAX_INPUTS];
    uint32_t n_inputs, in_n;
    int32_t out_core_chip, out_core_p;
    uint32_t *out_rx, out_n_rx, out_n, out_trx; /* out_trx: spinn_tensor.h entries, else spinn_rx.h */
    /* copies of the function: a sample holds one per copy, copy after copy, in and out; a
     * sample may carry fewer (the first `live`): the others get no packets, and the sample
     * is complete when the live copies' out_n / copies values each are in */
    uint32_t copies;
    uint64_t injected; /* packets the host put on the board (counted until reset) */
    /* per run */
    int16_t *y;
    int16_t *out_buf; /* n_slots x out_n */
    uint32_t out_counts[SPINN_MAX_SLOTS];
    uint32_t out_expect[SPINN_MAX_SLOTS]; /* values the slot's sample returns (its live copies') */
    int64_t slot_sample[SPINN_MAX_SLOTS];
    uint32_t completed_slots[SPINN_MAX_SLOTS], n_completed;
    uint8_t out_lost[SPINN_MAX_SLOTS];
    /* a lost sample's slot rests until the network is quiet (its stragglers, dropped at the
     * gatherer as the host drops them, never count into a new sample), as the host's live IO
     * rests it (runtime/board/live_io.py) */
    uint8_t resting[SPINN_MAX_SLOTS];
    uint32_t run_slots; /* samples in flight of the current run */
    int settling;       /* after a run: stragglers of lost samples drain away */
    /* raw output mode (board double): packets reaching the gatherer are captured */
    int raw;
    uint32_t *raw_out, raw_cap, raw_n;
    /* fault injection and its counts */
    uint64_t routed, drop_at[SPINN_EMU_MAX_DROPS]; /* sorted; drop_next .. n_drops pending */
    uint32_t drop_next, n_drops;
    uint64_t faults_dropped, faults_stopped;
    /* timed runs (timing.h) */
    tm_t tm;
    tm_queue_t tq;
    int timed;               /* the current run is timed */
    uint64_t now;            /* time of the event being processed */
    core_t *sending;         /* the core whose handler runs: its sends are held until it ends */
    uint32_t *pend, n_pend, cap_pend; /* (key, payload, marker) of the held sends */
    uint64_t *pend_t;
    uint8_t done_pending[SPINN_MAX_SLOTS]; /* complete at the gatherer, not yet at the host */
    uint64_t slot_done_t[SPINN_MAX_SLOTS], slot_start_t[SPINN_MAX_SLOTS];
    uint64_t *sample_start_t, *sample_done_t;
    uint64_t inject_at;                          /* the host may start the sample being encoded */
    uint32_t inject_left[SPINN_EMU_MAX_INPUTS]; /* its packets still to come, per input */
    /* statistics */
    uint64_t *chip_packets, *link_packets;
    char error[512];
    int failed;
    /* set by another thread (the host's Ctrl-C): a run stops taking samples, settles and
     * returns 1; read with __atomic builtins, as is the samples-done count of the run */
    uint32_t cancel, progress;
};

static void fail(spinn_emu_t *emu, const char *msg) {
    if (!emu->failed) {
        snprintf(emu->error, sizeof(emu->error), "%s", msg);
        emu->failed = 1;
    }
}

static int build_route_index(spinn_emu_t *emu, uint32_t n_entries);

spinn_emu_t *spinn_emu_create(uint32_t n_chips, const int32_t *links, const uint32_t *table_offsets,
                              const uint32_t *table_entries) {
    spinn_emu_t *emu = calloc(1, sizeof(*emu));
    uint32_t n_entries = table_offsets[n_chips], i;
    if (!emu) return NULL;
    emu->n_chips = n_chips;
    emu->links = malloc(sizeof(int32_t) * n_chips * SPINN_LINKS);
    emu->table_offsets = malloc(sizeof(uint32_t) * (n_chips + 1u));
    emu->tables = malloc(sizeof(uint32_t) * 3u * (n_entries ? n_entries : 1u));
    emu->core_at = malloc(sizeof(int32_t) * n_chips * SPINN_CORES_PER_CHIP);
    emu->chip_packets = calloc(n_chips, sizeof(uint64_t));
    emu->link_packets = calloc((size_t)n_chips * SPINN_LINKS, sizeof(uint64_t));
    emu->q_cap = 1024;
    emu->queue = malloc(sizeof(packet_t) * emu->q_cap);
    if (tm_init(&emu->tm, n_chips) != 0) emu->queue = (free(emu->queue), NULL);
    if (!emu->links || !emu->table_offsets || !emu->tables || !emu->core_at || !emu->chip_packets ||
        !emu->link_packets || !emu->queue) {
        spinn_emu_destroy(emu);
        return NULL;
    }
    memcpy(emu->links, links, sizeof(int32_t) * n_chips * SPINN_LINKS);
    memcpy(emu->table_offsets, table_offsets, sizeof(uint32_t) * (n_chips + 1u));
    memcpy(emu->tables, table_entries, sizeof(uint32_t) * 3u * n_entries);
    if (build_route_index(emu, n_entries) != 0) {
        spinn_emu_destroy(emu);
        return NULL;
    }
    for (i = 0; i < n_chips * SPINN_CORES_PER_CHIP; i++) emu->core_at[i] = -1;
    emu->out_core_chip = -1;
    emu->copies = 1u;
    return emu;
}

void spinn_emu_destroy(spinn_emu_t *emu) {
    uint32_t i;
    if (!emu) return;
    for (i = 0; i < emu->n_cores; i++) {
        free(emu->cores[i].cfg);
        free(emu->cores[i].workspace);
        free(emu->cores[i].tm.rx_start);
    }
    free(emu->cores);
    free(emu->links);
    free(emu->table_offsets);
    free(emu->tables);
    free(emu->core_at);
    free(emu->queue);
    free(emu->route_index);
    free(emu->mask_offsets);
    free(emu->masks);
    free(emu->union_mask);
    free(emu->route_cache);
    free(emu->out_rx);
    free(emu->chip_packets);
    free(emu->link_packets);
    tm_free(&emu->tm);
    tm_queue_free(&emu->tq);
    free(emu->pend);
    free(emu->pend_t);
    free(emu);
}

/* Each kernel kind's entry points, for a core: workspace and init (its config
 * and workspace are the core's), a packet in (receive, then compute what it
 * completed, with lost-sample markers as the binding's drain), the lost-sample
 * timeout (the emulator has no time: it fires when nothing is in flight, for
 * every slot) and its counters. One table instead of a switch per use. */
#define EMU_KERNEL(name, member)                                                                          \
    static uint32_t workspace_##name(const uint32_t *cfg, uint32_t n) { return spinn_##name##_workspace(cfg, n); } \
    static int init_##name(core_t *c, uint32_t n) {                                                       \
        return spinn_##name##_init(&c->k.member, c->cfg, n, c->workspace);                                \
    }                                                                                                     \
    static int packet_##name(core_t *c, uint32_t key, uint32_t payload, int marker, spinn_send_fn send,   \
                             spinn_send_fn send_lost, void *ctx) {                                        \
        return spinn_##name##_packet(&c->k.member, &c->slots, key, payload, marker, send, send_lost, ctx); \
    }                                                                                                     \
    static uint32_t release_##name(core_t *c) {                                                           \
        return spinn_##name##_release_stale(&c->k.member, &c->slots, 0u, core_send_lost, c);              \
    }                                                                                                     \
    static spinn_counters_t *counters_##name(core_t *c) { return &c->k.member.counters; }                 \
    static int32_t rx_slot_##name(core_t *c) { return spinn_##name##_rx_slot(&c->k.member); }             \
    static int busy_##name(core_t *c, uint32_t slot) { return spinn_##name##_busy(&c->k.member, slot); }

EMU_KERNEL(dense_tile, tile)
EMU_KERNEL(dense_reduce, reduce)
EMU_KERNEL(conv_tile, conv)
EMU_KERNEL(pool_tile, pool)
EMU_KERNEL(add_tile, add)
EMU_KERNEL(conv_reduce, conv_reduce)

#define EMU_OPS(name)                                                                                      \
    {workspace_##name, init_##name, packet_##name, release_##name, counters_##name, rx_slot_##name, busy_##name}
static const kernel_ops_t KERNEL_OPS[SPINN_EMU_KINDS] = {
    [SPINN_CORE_DENSE_TILE] = EMU_OPS(dense_tile), [SPINN_CORE_DENSE_REDUCE] = EMU_OPS(dense_reduce),
    [SPINN_CORE_CONV] = EMU_OPS(conv_tile),        [SPINN_CORE_POOL] = EMU_OPS(pool_tile),
    [SPINN_CORE_ADD] = EMU_OPS(add_tile),          [SPINN_CORE_CONV_REDUCE] = EMU_OPS(conv_reduce),
};

int32_t spinn_emu_add_core(spinn_emu_t *emu, uint32_t chip, uint32_t p, uint32_t kind, const uint32_t *cfg,
                           uint32_t n_words) {
    core_t *c;
    const kernel_ops_t *ops;
    uint32_t ws_bytes;
    int ok;
    if (chip >= emu->n_chips || p >= SPINN_CORES_PER_CHIP || emu->core_at[chip * SPINN_CORES_PER_CHIP + p] >= 0) {
        fail(emu, "add_core: bad or occupied core location");
        return -1;
    }
    if (emu->n_cores == emu->cap_cores) {
        uint32_t cap = emu->cap_cores ? emu->cap_cores * 2u : 64u;
        core_t *cores = realloc(emu->cores, sizeof(core_t) * cap);
        if (!cores) return -1;
        emu->cores = cores;
        emu->cap_cores = cap;
    }
    c = &emu->cores[emu->n_cores];
    memset(c, 0, sizeof(*c));
    c->emu = emu;
    c->kind = kind;
    c->chip = chip;
    c->p = p;
    c->cfg = malloc(sizeof(uint32_t) * (n_words ? n_words : 1u));
    if (!c->cfg) return -1;
    memcpy(c->cfg, cfg, sizeof(uint32_t) * n_words);
    ops = kind < SPINN_EMU_KINDS ? &KERNEL_OPS[kind] : NULL;
    if (ops == NULL || ops->workspace == NULL) {
        ok = 0;
    } else {
        ws_bytes = ops->workspace(c->cfg, n_words);
        c->workspace = ws_bytes ? malloc(ws_bytes) : NULL;
        ok = c->workspace && ops->init(c, n_words) == 0;
    }
    c->ops = ops;
    if (!ok) {
        char msg[128];
        snprintf(msg, sizeof(msg), "core (chip %u, p %u): kernel rejected its config region", chip, p);
        free(c->cfg);
        free(c->workspace);
        fail(emu, msg);
        return -1;
    }
    emu->core_at[chip * SPINN_CORES_PER_CHIP + p] = (int32_t)emu->n_cores;
    return (int32_t)emu->n_cores++;
}

int spinn_emu_add_input_tensor(spinn_emu_t *emu, uint32_t chip, uint32_t key, uint32_t slot_shift,
                               uint32_t c_shift, uint32_t h_shift, uint32_t n_c, uint32_t n_h, uint32_t n_w) {
    input_t *in;
    if (emu->n_inputs >= SPINN_EMU_MAX_INPUTS) return -1;
    if (chip >= emu->n_chips || slot_shift > 31u || c_shift > slot_shift || h_shift > c_shift) return -1;
    if (n_c == 0u || n_h == 0u || n_w == 0u || (uint64_t)n_c * n_h * n_w + emu->in_n > 0x7FFFFFFFu) return -1;
    in = &emu->inputs[emu->n_inputs++];
    in->chip = chip;
    in->key = key;
    in->slot_shift = slot_shift;
    in->c_shift = c_shift;
    in->h_shift = h_shift;
    in->c = n_c;
    in->h = n_h;
    in->w = n_w;
    in->packing = SPINN_PACK_INT16;
    in->copy = 0u;
    emu->in_n += n_c * n_h * n_w;
    return 0;
}

int spinn_emu_set_input_packing(spinn_emu_t *emu, uint32_t input, uint32_t packing) {
    if (input >= emu->n_inputs || packing > SPINN_PACK_UINT8) return -1;
    emu->inputs[input].packing = packing;
    return 0;
}

/* Packets of one row of an input: ceil(w / 2), or ceil(w / 4) packed 8-bit. */
static uint32_t input_row_packets(const input_t *in) {
    return in->packing ? (in->w + 3u) >> 2 : (in->w + 1u) >> 1;
}

int spinn_emu_set_input_tensor(spinn_emu_t *emu, uint32_t chip, uint32_t key, uint32_t slot_shift,
                               uint32_t c_shift, uint32_t h_shift, uint32_t n_c, uint32_t n_h, uint32_t n_w) {
    emu->n_inputs = 0;
    emu->in_n = 0;
    return spinn_emu_add_input_tensor(emu, chip, key, slot_shift, c_shift, h_shift, n_c, n_h, n_w);
}

int spinn_emu_set_input(spinn_emu_t *emu, uint32_t chip, uint32_t key, uint32_t slot_shift, uint32_t n_values) {
    return spinn_emu_set_input_tensor(emu, chip, key, slot_shift, slot_shift, slot_shift, 1u, 1u, n_values);
}

int spinn_emu_set_copies(spinn_emu_t *emu, uint32_t copies, const uint32_t *copy_of_input, uint32_t n) {
    uint32_t i;
    if (copies == 0u || copies > 255u || n != emu->n_inputs) return -1;
    for (i = 0; i < n; i++)
        if (copy_of_input[i] >= copies) return -1;
    for (i = 0; i < n; i++) emu->inputs[i].copy = copy_of_input[i];
    emu->copies = copies;
    return 0;
}

/* Values a sample of `live` copies returns (all copies: the whole output). */
static uint32_t live_out_n(const spinn_emu_t *emu, uint32_t live) {
    return live >= emu->copies ? emu->out_n : live * (emu->out_n / emu->copies);
}

static int set_output(spinn_emu_t *emu, uint32_t chip, uint32_t p, const uint32_t *rx, uint32_t n_rx,
                      uint32_t n_values, uint32_t trx) {
    uint32_t words = trx ? SPINN_TRX_WORDS : SPINN_RX_WORDS, i;
    if (chip >= emu->n_chips || p >= SPINN_CORES_PER_CHIP) return -1;
    if (trx) {
        /* every entry decodes into the whole output tensor: its dst block is the layout */
        if (!spinn_trx_valid(rx, n_rx, 1u)) return -1;
        for (i = 0; i < n_rx; i++) {
            const uint32_t *e = rx + i * SPINN_TRX_WORDS;
            if ((uint64_t)e[SPINN_TRX_DST_NC] * e[SPINN_TRX_DST_NH] * e[SPINN_TRX_DST_NW] != n_values) return -1;
        }
    } else if (!spinn_rx_valid_packed(rx, n_rx)) { /* a result may be an 8-bit input itself */
        return -1;
    }
    free(emu->out_rx);
    emu->out_rx = malloc(sizeof(uint32_t) * words * (n_rx ? n_rx : 1u));
    if (!emu->out_rx) return -1;
    memcpy(emu->out_rx, rx, sizeof(uint32_t) * words * n_rx);
    emu->out_trx = trx;
    emu->out_n_rx = n_rx;
    emu->out_n = n_values;
    emu->out_core_chip = (int32_t)chip;
    emu->out_core_p = (int32_t)p;
    return 0;
}

int spinn_emu_set_output(spinn_emu_t *emu, uint32_t chip, uint32_t p, const uint32_t *rx, uint32_t n_rx,
                         uint32_t n_values) {
    return set_output(emu, chip, p, rx, n_rx, n_values, 0u);
}

int spinn_emu_set_output_trx(spinn_emu_t *emu, uint32_t chip, uint32_t p, const uint32_t *rx, uint32_t n_rx,
                             uint32_t n_values) {
    return set_output(emu, chip, p, rx, n_rx, n_values, 1u);
}

/* An event joins the queue: a FIFO ring, or in a timed run a heap on (t, seq). */
static int enqueue(spinn_emu_t *emu, packet_t *pk) {
    if (emu->q_len == emu->q_cap) {
        /* grow the ring, unrolling it so q_head becomes 0 (a heap has q_head 0 already) */
        uint32_t cap = emu->q_cap * 2u, i;
        packet_t *q = malloc(sizeof(packet_t) * cap);
        if (!q) {
            fail(emu, "out of memory for the packet queue");
            return -1;
        }
        for (i = 0; i < emu->q_len; i++) q[i] = emu->queue[(emu->q_head + i) & (emu->q_cap - 1u)];
        free(emu->queue);
        emu->queue = q;
        emu->q_cap = cap;
        emu->q_head = 0;
    }
    if (emu->timed) {
        if (tm_queue_push(&emu->tq, pk) != 0) {
            fail(emu, "out of memory for the event queue");
            return -1;
        }
    } else {
        emu->queue[(emu->q_head + emu->q_len) & (emu->q_cap - 1u)] = *pk;
    }
    emu->q_len++;
    return 0;
}

/* A packet enters chip's router (at time t in a timed run). */
static int push(spinn_emu_t *emu, uint32_t chip, int32_t arrival_link, uint32_t key, uint32_t payload,
                uint32_t hops, uint32_t marker, uint64_t t) {
    packet_t pk;
    pk.t = t;
    pk.tick = 0u;
    pk.chip = chip;
    pk.arrival_link = (int8_t)arrival_link;
    pk.key = key;
    pk.payload = payload;
    pk.hops = (uint16_t)hops; /* <= MAX_HOPS + 1 */
    pk.marker = marker ? 1u : 0u;
    return enqueue(emu, &pk);
}

/* The gatherer's timer tick at t (timed runs). */
static int push_tick(spinn_emu_t *emu, uint64_t t) {
    packet_t pk;
    memset(&pk, 0, sizeof(pk));
    pk.t = t;
    pk.tick = 1u;
    return enqueue(emu, &pk);
}

/* The next event: the oldest (FIFO) or the earliest (timed). */
static packet_t pop(spinn_emu_t *emu) {
    packet_t pk;
    if (emu->timed) {
        pk = tm_queue_pop(&emu->tq);
        emu->now = pk.t;
        if (emu->tq.oom) fail(emu, "out of memory for the event queue");
    } else {
        pk = emu->queue[emu->q_head];
        emu->q_head = (emu->q_head + 1u) & (emu->q_cap - 1u);
    }
    emu->q_len--;
    return pk;
}

/* A core sends: the packet enters its own chip's router. In a timed run the sends of
 * a packet handler are held until it ends (their times depend on its whole work);
 * others (lost-sample timeouts) leave when the core is next free. */
static int send_from(core_t *c, uint32_t key, uint32_t payload, uint32_t marker) {
    spinn_emu_t *emu = c->emu;
    if (emu->timed && emu->sending == c) {
        if (emu->n_pend == emu->cap_pend) {
            uint32_t cap = emu->cap_pend ? emu->cap_pend * 2u : 256u;
            uint32_t *pend = realloc(emu->pend, sizeof(uint32_t) * 3u * cap);
            uint64_t *pend_t = pend ? realloc(emu->pend_t, sizeof(uint64_t) * cap) : NULL;
            if (pend) emu->pend = pend;
            if (pend_t) emu->pend_t = pend_t;
            if (!pend || !pend_t) {
                fail(emu, "out of memory for a core's sends");
                return -1;
            }
            emu->cap_pend = cap;
        }
        emu->pend[3u * emu->n_pend] = key;
        emu->pend[3u * emu->n_pend + 1u] = payload;
        emu->pend[3u * emu->n_pend + 2u] = marker;
        emu->n_pend++;
        return 0;
    }
    return push(emu, c->chip, LOCAL, key, payload, 0, marker,
                emu->timed && c->tm.cpu_free > emu->now ? c->tm.cpu_free : emu->now);
}

/* Send callback handed to kernels. */
static int core_send(void *ctx, uint32_t key, uint32_t payload) {
    return send_from((core_t *)ctx, key, payload, 0u);
}

/* A lost sample's outputs: the marker keys, payload 0 (as spin1_binding.h sends them). */
static int core_send_lost(void *ctx, uint32_t key, uint32_t payload) {
    core_t *c = (core_t *)ctx;
    (void)payload;
    if (c->lost_bit == 0u) return send_from(c, key, 0u, 1u);
    return send_from(c, key | c->lost_bit, 0u, 0u);
}

/* Decode one output packet into bufs (SPINN_MAX_SLOTS x out_n int16), counting
 * the values per slot and marking a slot lost on a marker. Returns the slot,
 * SPINN_MAX_SLOTS for values outside the output (none of ours), or -1 with
 * *why set for a key no output owns or a bad slot. */
static int32_t decode_output(const spinn_emu_t *emu, uint32_t key, uint32_t payload, uint32_t marker,
                             uint32_t n_slots, int16_t *bufs, uint32_t *counts, uint8_t *lost, const char **why) {
    uint32_t keyed_lost = 0u;
    int32_t e = emu->out_trx ? spinn_trx_match(emu->out_rx, emu->out_n_rx, key)
                             : spinn_rx_match(emu->out_rx, emu->out_n_rx, key);
    uint32_t slot = SPINN_MAX_SLOTS, stored, row;
    if (e < 0) {
        *why = "no output vertex owns the key";
        return -1;
    }
    if (emu->out_trx) {
        int16_t *b[1];
        int32_t n;
        b[0] = bufs;
        n = spinn_trx_store(emu->out_rx + (uint32_t)e * SPINN_TRX_WORDS, key, payload, b, emu->out_n,
                            n_slots, &slot, &row, &keyed_lost);
        if (n == 0) return SPINN_MAX_SLOTS;
        if (n < 0) slot = SPINN_MAX_SLOTS + 1u;
        stored = n > 0 ? (uint32_t)n : 0u;
    } else {
        stored = spinn_rx_store_pair(emu->out_rx + (uint32_t)e * SPINN_RX_WORDS, key, payload, bufs, emu->out_n,
                                     n_slots, emu->out_n, &slot, &keyed_lost);
    }
    if (slot >= SPINN_MAX_SLOTS) {
        *why = "its slot is out of range";
        return -1;
    }
    counts[slot] += stored;
    if (marker || keyed_lost) lost[slot] = 1u;
    return (int32_t)slot;
}

/* The output gatherer decodes int16 pairs into the slot's output buffer. */
/* The gatherer's buffered events reach the host at t (timed runs): samples whose last
 * value was among them are complete there. */
static void flush_output(spinn_emu_t *emu, uint64_t t) {
    uint64_t at = tm_gatherer_flush(&emu->tm, t);
    uint32_t s;
    for (s = 0; s < SPINN_MAX_SLOTS; s++) {
        if (!emu->done_pending[s]) continue;
        emu->done_pending[s] = 0u;
        emu->slot_done_t[s] = at;
        emu->completed_slots[emu->n_completed++] = s;
    }
}

static void deliver_output(spinn_emu_t *emu, uint32_t key, uint32_t payload, uint32_t marker, uint64_t t) {
    const char *why = "";
    int32_t slot;
    char msg[160];
    uint64_t t_flush = 0;
    int full = 0;
    if (emu->raw) { /* the board double's live packet gatherer sends them on as they are */
        if (emu->raw_n < emu->raw_cap) {
            emu->raw_out[3u * emu->raw_n] = key;
            emu->raw_out[3u * emu->raw_n + 1u] = payload;
            emu->raw_out[3u * emu->raw_n + 2u] = marker;
        }
        emu->raw_n++;
        return;
    }
    if (emu->timed) {
        full = tm_gatherer_event(&emu->tm, t, &t_flush);
        if (!full && t_flush && push_tick(emu, t_flush) != 0) return;
    }
    slot = decode_output(emu, key, payload, marker, emu->run_slots, emu->out_buf, emu->out_counts, emu->out_lost,
                         &why);
    if (slot != (int32_t)SPINN_MAX_SLOTS && !emu->settling) {
        if (slot >= 0 && emu->slot_sample[slot] < 0 && emu->resting[slot]) return; /* a straggler */
        if (slot < 0 || emu->slot_sample[slot] < 0) {
            snprintf(msg, sizeof(msg), "output gatherer received key 0x%08x: %s", key,
                     slot < 0 ? why : "its slot holds no sample");
            fail(emu, msg);
            return;
        }
        if (emu->out_counts[slot] == emu->out_expect[slot]) {
            if (emu->timed)
                emu->done_pending[slot] = 1u;
            else
                emu->completed_slots[emu->n_completed++] = (uint32_t)slot;
        }
    }
    if (full) flush_output(emu, t_flush);
}

/* After a packet (timed runs): a slot that held part of a sample and waited longer than
 * the binding's lost-sample timeout for this packet would have been released as lost on
 * a board (the binding checks on its timer tick while its ring is empty: approximated by
 * the gap between the two packets' processing). */
static void track_slot(spinn_emu_t *emu, core_t *c) {
    int32_t at = c->ops->rx_slot(c);
    uint32_t s, bit;
    if (at < 0) return;
    s = (uint32_t)at & ~(uint32_t)SPINN_SLOT_LOST;
    if (s >= SPINN_MAX_SLOTS) return;
    bit = 1u << s;
    if ((c->tm.slot_open & bit) && c->tm.t0 - c->tm.slot_last[s] > emu->tm.p[SPINN_TM_LOST_TIMEOUT_PS])
        c->tm.timed_out++;
    c->tm.slot_last[s] = c->tm.t0;
    if (c->ops->busy(c, s))
        c->tm.slot_open |= bit;
    else
        c->tm.slot_open &= ~bit;
}

static void deliver(spinn_emu_t *emu, uint32_t chip, uint32_t p, uint32_t key, uint32_t payload, uint32_t marker,
                    uint64_t t) {
    int32_t idx = emu->core_at[chip * SPINN_CORES_PER_CHIP + p];
    core_t *c;
    char msg[160];
    uint32_t j;
    int rc;
    if ((int32_t)chip == emu->out_core_chip && (int32_t)p == emu->out_core_p) {
        deliver_output(emu, key, payload, marker, t);
        return;
    }
    if (idx < 0) {
        snprintf(msg, sizeof(msg), "key 0x%08x routed to core (chip %u, p %u), which runs nothing", key, chip, p);
        fail(emu, msg);
        return;
    }
    c = &emu->cores[idx];
    if (c->stopped) {
        emu->faults_stopped++;
        return;
    }
    if (!emu->timed) {
        rc = c->ops->packet(c, key, payload, (int)marker, core_send, core_send_lost, c);
    } else {
        /* the handler runs on the core's clock; its sends leave spread over its compute */
        tm_core_begin(&emu->tm, &c->tm, t, c->counters);
        emu->sending = c;
        emu->n_pend = 0;
        rc = c->ops->packet(c, key, payload, (int)marker, core_send, core_send_lost, c);
        emu->sending = NULL;
        tm_core_end(&c->tm, c->counters, emu->n_pend, emu->pend_t);
        track_slot(emu, c);
        for (j = 0; j < emu->n_pend && rc == 0; j++)
            rc = push(emu, c->chip, LOCAL, emu->pend[3u * j], emu->pend[3u * j + 1u], 0, emu->pend[3u * j + 2u],
                      emu->pend_t[j]);
    }
    if (rc != 0) {
        snprintf(msg, sizeof(msg), "core (chip %u, p %u) could not send", chip, p);
        fail(emu, msg);
    }
}

/* One router step: look the key up in this chip's table (first match wins,
 * as in the router's TCAM), else default-route a link arrival straight on. */
/* murmur3's finaliser over the three words: keys are block aligned (low bits
 * zero), so every output bit must depend on every input bit. */
static uint32_t route_hash(uint32_t chip, uint32_t mask, uint32_t key) {
    uint32_t h = key ^ (mask * 0x85EBCA6Bu) ^ (chip * 0xC2B2AE35u);
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    h ^= h >> 16;
    return h;
}

/* Build the index (after the tables were copied). Returns 0, or -1 (no memory). */
static int build_route_index(spinn_emu_t *emu, uint32_t n_entries) {
    uint32_t size = 1024u, c, i, j, n_masks = 0;
    while (size < 2u * n_entries) size <<= 1;
    emu->route_index = calloc(size, sizeof(route_slot_t));
    emu->route_index_mask = size - 1u;
    emu->mask_offsets = malloc(sizeof(uint32_t) * (emu->n_chips + 1u));
    emu->masks = malloc(sizeof(uint32_t) * (n_entries ? n_entries : 1u));
    emu->union_mask = calloc(emu->n_chips ? emu->n_chips : 1u, sizeof(uint32_t));
    emu->route_cache = calloc(ROUTE_CACHE, sizeof(route_cache_t));
    if (!emu->route_index || !emu->mask_offsets || !emu->masks || !emu->union_mask || !emu->route_cache) return -1;
    for (c = 0; c < emu->n_chips; c++) {
        emu->mask_offsets[c] = n_masks;
        for (i = emu->table_offsets[c]; i < emu->table_offsets[c + 1u]; i++) {
            const uint32_t *t = emu->tables + 3u * i;
            uint32_t h;
            route_slot_t *slot;
            if (t[0] & ~t[1]) continue; /* a key bit outside its mask: matches nothing */
            for (j = emu->mask_offsets[c]; j < n_masks && emu->masks[j] != t[1]; j++) {
            }
            if (j == n_masks) emu->masks[n_masks++] = t[1];
            emu->union_mask[c] |= t[1];
            for (h = route_hash(c, t[1], t[0]);; h++) {
                slot = &emu->route_index[h & emu->route_index_mask];
                if (slot->chip1 == 0u) {
                    slot->chip1 = c + 1u;
                    slot->mask = t[1];
                    slot->key = t[0];
                    slot->index = i; /* entries come in table order: the first one stays */
                    break;
                }
                if (slot->chip1 == c + 1u && slot->mask == t[1] && slot->key == t[0]) break;
            }
        }
    }
    emu->mask_offsets[emu->n_chips] = n_masks;
    return 0;
}

/* The route word of the first entry of the chip's table matching key (as the
 * router's TCAM); *found = 0 if none matches. */
static uint32_t table_search(const spinn_emu_t *emu, uint32_t chip, uint32_t key, int *found) {
    uint32_t best = 0xFFFFFFFFu, m, h;
    for (m = emu->mask_offsets[chip]; m < emu->mask_offsets[chip + 1u]; m++) {
        uint32_t mask = emu->masks[m], k = key & mask;
        for (h = route_hash(chip, mask, k);; h++) {
            const route_slot_t *slot = &emu->route_index[h & emu->route_index_mask];
            if (slot->chip1 == 0u) break;
            if (slot->chip1 == chip + 1u && slot->mask == mask && slot->key == k) {
                if (slot->index < best) best = slot->index;
                break;
            }
        }
    }
    *found = best != 0xFFFFFFFFu;
    return *found ? emu->tables[3u * best + 2u] : 0u;
}

/* table_search through the cache (the same answer). */
static uint32_t table_lookup(spinn_emu_t *emu, uint32_t chip, uint32_t key, int *found) {
    uint32_t k = key & emu->union_mask[chip];
    route_cache_t *e = &emu->route_cache[route_hash(chip, 0u, k) & (ROUTE_CACHE - 1u)];
    if (e->chip1 != chip + 1u || e->key != k) {
        int f;
        e->route = table_search(emu, chip, k, &f); /* k matches the entries key does */
        e->found = (uint32_t)f;
        e->chip1 = chip + 1u;
        e->key = k;
    }
    *found = (int)e->found;
    return e->route;
}

static void route(spinn_emu_t *emu, const packet_t *pk) {
    uint32_t route_word, l, p, cores;
    int found;
    char msg[200];
    uint64_t t_out = pk->t;
    if (pk->tick) { /* the gatherer's timer tick: it flushes what it holds */
        emu->tm.tick_pending = 0;
        if (emu->tm.lpg_count) flush_output(emu, pk->t);
        return;
    }
    if (emu->drop_next < emu->n_drops && emu->routed == emu->drop_at[emu->drop_next]) {
        /* fault injection: the router drops it */
        emu->routed++;
        emu->drop_next++;
        emu->faults_dropped++;
        return;
    }
    emu->routed++;
    emu->chip_packets[pk->chip]++;
    route_word = table_lookup(emu, pk->chip, pk->key, &found);
    if (!found) {
        if (pk->arrival_link == LOCAL) {
            snprintf(msg, sizeof(msg), "packet key 0x%08x sent on chip %u matches no routing entry: dropped",
                     pk->key, pk->chip);
            fail(emu, msg);
            return;
        }
        route_word = 1u << (((uint32_t)pk->arrival_link + 3u) % SPINN_LINKS);
    }
    if (emu->timed) t_out = tm_router(&emu->tm, pk->chip, pk->t);
    if (pk->hops > MAX_HOPS) {
        snprintf(msg, sizeof(msg), "packet key 0x%08x still travelling after %u hops: routing loop", pk->key,
                 MAX_HOPS);
        fail(emu, msg);
        return;
    }
    for (l = 0; l < SPINN_LINKS; l++) {
        if (route_word & (1u << l)) {
            int32_t next = emu->links[pk->chip * SPINN_LINKS + l];
            if (next < 0) {
                snprintf(msg, sizeof(msg), "packet key 0x%08x leaves chip %u on link %u, which goes nowhere",
                         pk->key, pk->chip, l);
                fail(emu, msg);
                return;
            }
            emu->link_packets[pk->chip * SPINN_LINKS + l]++;
            if (push(emu, (uint32_t)next, (int32_t)((l + 3u) % SPINN_LINKS), pk->key, pk->payload, pk->hops + 1u,
                     pk->marker, emu->timed ? tm_link(&emu->tm, pk->chip, l, t_out, pk->marker) : 0u))
                return;
        }
    }
    for (cores = (route_word >> SPINN_LINKS) & ((1u << SPINN_CORES_PER_CHIP) - 1u); cores; cores &= cores - 1u) {
        p = (uint32_t)__builtin_ctz(cores);
        deliver(emu, pk->chip, p, pk->key, pk->payload, pk->marker, t_out);
    }
}

/* The packets of one sample, input by input, each from its input chip: row by
 * row in (h, c) order (so rows complete early and downstream tiles stream),
 * pairs along w, or for an 8-bit input four values per packet (byte j of the
 * payload value 4 * index + j; the values must be in the input's 8-bit range:
 * the host quantised them so, and the bytes keep their low 8 bits).
 * Only the inputs of the first `live` copies send (spinn_emu_set_copies).
 * emit(ctx, input index, chip, key, payload) takes each. */
typedef int (*emit_fn)(void *ctx, uint32_t input, uint32_t chip, uint32_t key, uint32_t payload);

static int encode(const spinn_emu_t *emu, const int16_t *x, uint32_t slot, uint32_t live, emit_fn emit,
                  void *ctx) {
    uint32_t i, c, h, pair;
    for (i = 0; i < emu->n_inputs; i++) {
        const input_t *in = &emu->inputs[i];
        uint32_t w = in->w;
        for (h = 0; h < in->h && in->copy < live; h++) { /* a copy without a sample gets nothing */
            for (c = 0; c < in->c; c++) {
                const int16_t *row = x + ((size_t)c * in->h + h) * w;
                uint32_t base = in->key | (slot << in->slot_shift) | (c << in->c_shift) | (h << in->h_shift);
                if (in->packing) {
                    for (pair = 0; 4u * pair < w; pair++) {
                        uint32_t payload = 0u, j;
                        for (j = 0; j < 4u && 4u * pair + j < w; j++)
                            payload |= ((uint32_t)row[4u * pair + j] & 0xFFu) << (8u * j);
                        if (emit(ctx, i, in->chip, base | pair, payload)) return -1;
                    }
                    continue;
                }
                for (pair = 0; 2u * pair < w; pair++) {
                    int32_t lo = row[2u * pair], hi = (2u * pair + 1u < w) ? row[2u * pair + 1u] : 0;
                    if (emit(ctx, i, in->chip, base | pair, spinn_pack16(lo, hi))) return -1;
                }
            }
        }
        x += (size_t)in->c * in->h * in->w;
    }
    return 0;
}

static int emit_push(void *ctx, uint32_t input, uint32_t chip, uint32_t key, uint32_t payload) {
    spinn_emu_t *emu = (spinn_emu_t *)ctx;
    uint64_t t = 0;
    emu->injected++;
    if (emu->timed) t = tm_input_packet(&emu->tm, input, emu->inject_left[input]--, emu->inject_at);
    return push(emu, chip, LOCAL, key, payload, 0, 0u, t);
}

/* One sample (of `live` copies) enters the board (timed: the host starts sending it no
 * earlier than at; returns when its first message starts, in *start). */
static int inject(spinn_emu_t *emu, const int16_t *x, uint32_t slot, uint32_t live, uint64_t at, uint64_t *start) {
    uint32_t i, first = 0;
    for (i = 0; i < emu->n_inputs; i++)
        emu->inject_left[i] = emu->inputs[i].c * emu->inputs[i].h * input_row_packets(&emu->inputs[i]);
    while (first + 1u < emu->n_inputs && emu->inputs[first].copy >= live) first++;
    emu->inject_at = at;
    {
        uint64_t free0 = emu->tm.in_free[emu->tm.host_of_input[first]]; /* the first message's stream */
        *start = at > free0 ? at : free0;
    }
    return encode(emu, x, slot, live, emit_push, emu);
}

/* Route packets until none is in flight or a slot completes. */
static void route_some(spinn_emu_t *emu) {
    while (emu->q_len && !emu->failed && emu->n_completed == 0) {
        packet_t pk = pop(emu);
        route(emu, &pk);
    }
}

/* The lost-sample timeout fires on every core (the network is quiet). */
static uint32_t release_all(spinn_emu_t *emu) {
    uint32_t i, n = 0;
    for (i = 0; i < emu->n_cores; i++)
        if (!emu->cores[i].stopped) n += emu->cores[i].ops->release(&emu->cores[i]);
    return n;
}

/* A run starts every clock at 0 (timing on) and every slot free at 0. */
static int start_clocks(spinn_emu_t *emu) {
    uint32_t i;
    emu->timed = emu->tm.on;
    emu->now = 0;
    memset(emu->slot_done_t, 0, sizeof(emu->slot_done_t));
    memset(emu->done_pending, 0, sizeof(emu->done_pending));
    if (!emu->timed) return 0;
    tm_reset(&emu->tm);
    tm_queue_free(&emu->tq); /* what a failed run left */
    for (i = 0; i < emu->n_cores; i++) {
        core_t *c = &emu->cores[i];
        c->counters = c->ops->counters(c); /* the cores array is final now */
        uint64_t cost[SPINN_COST_WORDS], *rx_start = c->tm.rx_start;
        if (!rx_start && !(rx_start = malloc(sizeof(uint64_t) * TM_RX_RING))) {
            fail(emu, "out of memory for the core clocks");
            return -1;
        }
        memcpy(cost, c->tm.cost, sizeof(cost));
        memset(&c->tm, 0, sizeof(tm_core_t));
        memcpy(c->tm.cost, cost, sizeof(cost));
        c->tm.rx_start = rx_start;
        c->tm.min_rx = cost[SPINN_COST_FIQ] + cost[SPINN_COST_RECEIVE];
        c->tm.fiq_ps = cost[SPINN_COST_FIQ];
        c->tm.event_ps = cost[SPINN_COST_EVENT];
    }
    return 0;
}

int spinn_emu_run(spinn_emu_t *emu, const int16_t *x, uint32_t n_samples, int16_t *y, uint32_t n_slots,
                  uint8_t *lost, const uint8_t *live) {
    uint32_t next = 0, done = 0, s, i;
    char msg[200];
    emu->failed = 0;
    if (emu->out_core_chip < 0 || emu->n_inputs == 0 || n_slots == 0 || n_slots > SPINN_MAX_SLOTS || emu->raw ||
        emu->out_n % emu->copies != 0u) {
        fail(emu, "run: input or output not configured, raw output mode, bad slot count, or an output that does "
                  "not split into its copies");
        return -1;
    }
    for (i = 0; live && i < n_samples; i++) {
        if (live[i] == 0u || live[i] > emu->copies) {
            snprintf(msg, sizeof(msg), "run: sample %u carries %u copies, the program has %u", i, live[i],
                     emu->copies);
            fail(emu, msg);
            return -1;
        }
    }
    emu->run_slots = n_slots;
    emu->out_buf = calloc((size_t)SPINN_MAX_SLOTS * (emu->out_n ? emu->out_n : 1u), sizeof(int16_t));
    if (!emu->out_buf) return -1;
    for (s = 0; s < SPINN_MAX_SLOTS; s++) {
        emu->slot_sample[s] = -1;
        emu->out_counts[s] = 0;
        emu->out_lost[s] = 0;
        emu->resting[s] = 0;
    }
    if (lost) memset(lost, 0, n_samples);
    __atomic_store_n(&emu->progress, 0u, __ATOMIC_RELAXED);
    emu->n_completed = 0;
    emu->q_head = emu->q_len = 0;
    if (start_clocks(emu) != 0) return -1;
    while (done < n_samples && !emu->failed) {
        __atomic_store_n(&emu->progress, done, __ATOMIC_RELAXED);
        if (__atomic_load_n(&emu->cancel, __ATOMIC_RELAXED)) break; /* what is in flight settles below */
        /* Keep the window full: the host streams the next sample as soon as its slot is free. */
        while (next < n_samples && emu->slot_sample[next % n_slots] < 0 && !emu->resting[next % n_slots]) {
            uint64_t start;
            s = next % n_slots;
            emu->slot_sample[s] = next;
            emu->out_counts[s] = 0; /* what stragglers of a lost sample left */
            emu->out_lost[s] = 0;
            emu->done_pending[s] = 0;
            emu->out_expect[s] = live_out_n(emu, live ? live[next] : emu->copies);
            if (inject(emu, x + (size_t)next * emu->in_n, s, live ? live[next] : emu->copies, emu->slot_done_t[s],
                       &start))
                break;
            if (emu->sample_start_t) emu->sample_start_t[next] = start;
            next++;
        }
        if (emu->q_len == 0 && release_all(emu) == 0 && emu->q_len == 0) {
            int rested = 0;
            for (s = 0; s < n_slots; s++) {
                rested |= emu->resting[s];
                emu->resting[s] = 0;
            }
            if (rested) continue; /* quiet: resting slots take samples again */
            /* Quiet, nothing to release: what is still outstanding never arrives
             * (a core stopped); the host's own timeout names those samples. */
            for (s = 0; s < n_slots; s++) {
                if (emu->slot_sample[s] < 0) continue;
                if (!lost) {
                    snprintf(msg, sizeof(msg), "sample %lld never completed: %u of %u output values arrived",
                             (long long)emu->slot_sample[s], emu->out_counts[s], emu->out_expect[s]);
                    fail(emu, msg);
                    break;
                }
                lost[emu->slot_sample[s]] = 1u;
                memset(y + (size_t)emu->slot_sample[s] * emu->out_n, 0, sizeof(int16_t) * emu->out_n);
                if (emu->sample_done_t) emu->sample_done_t[emu->slot_sample[s]] = emu->now;
                emu->slot_done_t[s] = emu->now;
                emu->slot_sample[s] = -1;
                emu->out_counts[s] = 0;
                emu->out_lost[s] = 0;
                done++;
            }
            continue;
        }
        route_some(emu);
        for (i = 0; i < emu->n_completed; i++) {
            int64_t sample;
            s = emu->completed_slots[i];
            sample = emu->slot_sample[s];
            if (emu->sample_done_t) emu->sample_done_t[sample] = emu->slot_done_t[s];
            if (emu->out_lost[s]) {
                if (!lost) {
                    snprintf(msg, sizeof(msg), "sample %lld lost values on the way (lost-value markers arrived)",
                             (long long)sample);
                    fail(emu, msg);
                }
                else
                    lost[sample] = 1u;
                memset(y + (size_t)sample * emu->out_n, 0, sizeof(int16_t) * emu->out_n);
                emu->resting[s] = 1u;
            } else { /* the live copies' values; a copy without a sample returns zeros */
                memcpy(y + (size_t)sample * emu->out_n, emu->out_buf + (size_t)s * emu->out_n,
                       sizeof(int16_t) * emu->out_expect[s]);
                memset(y + (size_t)sample * emu->out_n + emu->out_expect[s], 0,
                       sizeof(int16_t) * (emu->out_n - emu->out_expect[s]));
            }
            emu->slot_sample[s] = -1;
            emu->out_counts[s] = 0;
            emu->out_lost[s] = 0;
            done++;
        }
        emu->n_completed = 0;
    }
    /* Settle, as a board does between runs: what is still in flight or held part-filled
     * (stragglers of lost samples) drains away, so the next run starts clean. */
    emu->settling = 1;
    do {
        while (emu->q_len && !emu->failed) {
            packet_t pk = pop(emu);
            route(emu, &pk);
        }
    } while (!emu->failed && release_all(emu));
    emu->settling = 0;
    emu->timed = 0;
    emu->sample_start_t = emu->sample_done_t = NULL; /* for one run */
    for (i = 0; i < emu->n_cores && !emu->failed; i++) {
        uint32_t dropped = emu->cores[i].ops->counters(&emu->cores[i])->dropped;
        if (dropped) {
            snprintf(msg, sizeof(msg), "core (chip %u, p %u) received %u packets it has no receive entry for",
                     emu->cores[i].chip, emu->cores[i].p, dropped);
            fail(emu, msg);
        }
    }
    free(emu->out_buf);
    emu->out_buf = NULL;
    if (emu->failed) return -1;
    __atomic_store_n(&emu->progress, done, __ATOMIC_RELAXED);
    return done < n_samples ? 1 : 0; /* 1: cancelled */
}

void spinn_emu_cancel(spinn_emu_t *emu, int cancel) { __atomic_store_n(&emu->cancel, cancel ? 1u : 0u, __ATOMIC_RELAXED); }

uint32_t spinn_emu_progress(const spinn_emu_t *emu) { return __atomic_load_n(&emu->progress, __ATOMIC_RELAXED); }

/* ---- fault injection, raw streaming (the board double) and the live IO codec ---- */

int spinn_emu_drop_packet(spinn_emu_t *emu, uint64_t nth) {
    uint64_t at;
    uint32_t i, j;
    if (nth == UINT64_MAX) { /* clear */
        emu->n_drops = emu->drop_next = 0;
        return 0;
    }
    if (emu->drop_next == emu->n_drops) emu->n_drops = emu->drop_next = 0;
    if (emu->n_drops == SPINN_EMU_MAX_DROPS) return -1;
    at = emu->routed + nth;
    for (i = emu->drop_next; i < emu->n_drops && emu->drop_at[i] < at; i++) {
    }
    if (i < emu->n_drops && emu->drop_at[i] == at) return 0;
    for (j = emu->n_drops; j > i; j--) emu->drop_at[j] = emu->drop_at[j - 1];
    emu->drop_at[i] = at;
    emu->n_drops++;
    return 0;
}

int spinn_emu_stop_core(spinn_emu_t *emu, uint32_t core, int stopped) {
    if (core >= emu->n_cores) return -1;
    emu->cores[core].stopped = stopped;
    return 0;
}

uint64_t spinn_emu_injected(const spinn_emu_t *emu) { return emu->injected; }

void spinn_emu_fault_counts(const spinn_emu_t *emu, uint64_t *out) {
    out[0] = emu->routed;
    out[1] = emu->faults_dropped;
    out[2] = emu->faults_stopped;
}

int spinn_emu_core_slots(const spinn_emu_t *emu, uint32_t core, uint32_t *out) {
    if (core >= emu->n_cores) return -1;
    memcpy(out, &emu->cores[core].slots, SPINN_SLOTS_COUNTERS * sizeof(uint32_t));
    return 0;
}

int spinn_emu_set_output_raw(spinn_emu_t *emu, uint32_t chip, uint32_t p) {
    if (chip >= emu->n_chips || p >= SPINN_CORES_PER_CHIP) return -1;
    emu->out_core_chip = (int32_t)chip;
    emu->out_core_p = (int32_t)p;
    emu->raw = 1;
    return 0;
}

int spinn_emu_inject(spinn_emu_t *emu, uint32_t chip, uint32_t key, uint32_t payload, uint32_t marker) {
    if (chip >= emu->n_chips) return -1;
    return push(emu, chip, LOCAL, key, payload, 0, marker ? 1u : 0u, 0u);
}

int64_t spinn_emu_drain(spinn_emu_t *emu, uint32_t *out, uint32_t cap) {
    emu->raw_out = out;
    emu->raw_cap = cap;
    emu->raw_n = 0;
    emu->failed = 0;
    while (emu->q_len && !emu->failed) route_some(emu);
    emu->raw_out = NULL;
    return emu->failed ? -1 : (int64_t)emu->raw_n;
}

uint32_t spinn_emu_release(spinn_emu_t *emu) { return release_all(emu); }

typedef struct {
    uint32_t *keys, *payloads, cap, n;
    uint8_t *input;
} encode_buf_t;

static int emit_store(void *ctx, uint32_t input, uint32_t chip, uint32_t key, uint32_t payload) {
    encode_buf_t *b = (encode_buf_t *)ctx;
    (void)chip;
    if (b->n < b->cap) {
        b->keys[b->n] = key;
        b->payloads[b->n] = payload;
        b->input[b->n] = (uint8_t)input;
    }
    b->n++;
    return 0;
}

int64_t spinn_emu_encode(const spinn_emu_t *emu, const int16_t *x, uint32_t slot, uint32_t live, uint32_t *keys,
                         uint32_t *payloads, uint8_t *input, uint32_t cap) {
    encode_buf_t b;
    if (emu->n_inputs == 0 || slot >= SPINN_MAX_SLOTS) return -1;
    b.keys = keys;
    b.payloads = payloads;
    b.input = input;
    b.cap = cap;
    b.n = 0;
    encode(emu, x, slot, live, emit_store, &b);
    return (int64_t)b.n;
}

int32_t spinn_emu_decode(const spinn_emu_t *emu, uint32_t key, uint32_t payload, uint32_t marker, uint32_t n_slots,
                         int16_t *bufs, uint32_t *counts, uint8_t *lost) {
    const char *why = "";
    if (emu->out_n_rx == 0u || n_slots == 0u || n_slots > SPINN_MAX_SLOTS) return -1;
    return decode_output(emu, key, payload, marker, n_slots, bufs, counts, lost, &why);
}

int spinn_emu_set_lost_bit(spinn_emu_t *emu, uint32_t core, uint32_t lost_bit) {
    if (core >= emu->n_cores) return -1;
    emu->cores[core].lost_bit = lost_bit;
    return 0;
}

const char *spinn_emu_error(const spinn_emu_t *emu) { return emu->failed ? emu->error : ""; }

int spinn_emu_core_counters(const spinn_emu_t *emu, uint32_t core, uint32_t *out) {
    if (core >= emu->n_cores) return -1;
    memcpy(out, emu->cores[core].ops->counters(&emu->cores[core]), sizeof(spinn_counters_t));
    return 0;
}

typedef struct {
    uint32_t *sent, cap, n;
} capture_t;

static int capture_send(void *ctx, uint32_t key, uint32_t payload) {
    capture_t *cap = (capture_t *)ctx;
    if (cap->n < cap->cap) {
        cap->sent[2u * cap->n] = key;
        cap->sent[2u * cap->n + 1u] = payload;
    }
    cap->n++;
    return 0;
}

int32_t spinn_emu_core_packet(spinn_emu_t *emu, uint32_t core, uint32_t key, uint32_t payload, uint32_t *sent,
                              uint32_t cap) {
    capture_t c;
    if (core >= emu->n_cores) return -1;
    c.sent = sent;
    c.cap = cap;
    c.n = 0;
    if (emu->cores[core].ops->packet(&emu->cores[core], key, payload, 0, capture_send, capture_send, &c) != 0 ||
        c.n > cap)
        return -1;
    return (int32_t)c.n;
}

void spinn_emu_router_counters(const spinn_emu_t *emu, uint64_t *per_chip, uint64_t *per_link) {
    memcpy(per_chip, emu->chip_packets, sizeof(uint64_t) * emu->n_chips);
    memcpy(per_link, emu->link_packets, sizeof(uint64_t) * emu->n_chips * SPINN_LINKS);
}

void spinn_emu_reset_counters(spinn_emu_t *emu) {
    uint32_t i;
    memset(emu->chip_packets, 0, sizeof(uint64_t) * emu->n_chips);
    memset(emu->link_packets, 0, sizeof(uint64_t) * emu->n_chips * SPINN_LINKS);
    for (i = 0; i < emu->n_cores; i++) {
        memset(emu->cores[i].ops->counters(&emu->cores[i]), 0, sizeof(spinn_counters_t));
        /* the lost-sample counters, not the lost bits (state) */
        emu->cores[i].slots.markers_in = emu->cores[i].slots.released = emu->cores[i].slots.lost_out = 0u;
    }
    emu->faults_dropped = emu->faults_stopped = 0u; /* not `routed`: pending drops count from it */
    emu->injected = 0u;
}

/* ---- timed emulation ---- */

int spinn_emu_set_timing(spinn_emu_t *emu, const uint64_t *params, uint32_t n_params) {
    if (n_params != SPINN_TM_PARAMS) return -1;
    memcpy(emu->tm.p, params, sizeof(emu->tm.p));
    emu->tm.on = params[SPINN_TM_ON] != 0u;
    return 0;
}

int spinn_emu_set_core_cost(spinn_emu_t *emu, uint32_t core, const uint64_t *cost, uint32_t n_words) {
    core_t *c;
    if (core >= emu->n_cores || n_words != SPINN_COST_WORDS) return -1;
    c = &emu->cores[core];
    memcpy(c->tm.cost, cost, sizeof(c->tm.cost));
    return 0;
}

void spinn_emu_set_sample_times(spinn_emu_t *emu, uint64_t *t_start, uint64_t *t_done) {
    emu->sample_start_t = t_start;
    emu->sample_done_t = t_done;
}

void spinn_emu_timing(const spinn_emu_t *emu, uint64_t *out) {
    const tm_t *tm = &emu->tm;
    uint64_t late = 0, ring = 0, link_late = 0, timed_out = 0, in_busy = 0;
    uint32_t i;
    for (i = 0; i < emu->n_cores; i++) {
        late += emu->cores[i].tm.late;
        ring += emu->cores[i].tm.ring_full;
        timed_out += emu->cores[i].tm.timed_out;
    }
    uint64_t horizon = tm->makespan;
    for (i = 0; i < emu->n_cores; i++) horizon = tm_max(horizon, emu->cores[i].tm.cpu_free);
    for (i = 0; i < emu->n_chips * SPINN_LINKS; i++) {
        link_late += tm->link_late[i];
        horizon = tm_max(horizon, tm->link_free[i]);
    }
    horizon = tm_max(horizon, tm_max(tm->lpg_free, tm->out_free));
    for (i = 0; i < SPINN_TM_MAX_HOSTS; i++) {
        horizon = tm_max(horizon, tm->in_free[i]);
        in_busy = tm_max(in_busy, tm->in_busy[i]);
    }
    out[0] = tm->makespan;
    out[1] = in_busy; /* the busiest stream */
    out[2] = tm->out_busy;
    out[3] = tm->lpg_busy;
    out[4] = tm->in_core_busy;
    out[5] = late;
    out[6] = ring;
    out[7] = link_late;
    out[8] = tm->lpg_late;
    out[9] = tm->in_msgs;
    out[10] = tm->out_msgs;
    out[11] = horizon;
    out[12] = timed_out;
    out[13] = tm->in_bytes;
}

int spinn_emu_core_timing(const spinn_emu_t *emu, uint32_t core, uint64_t *out) {
    const tm_core_t *c;
    if (core >= emu->n_cores) return -1;
    c = &emu->cores[core].tm;
    out[0] = c->busy;
    out[1] = c->late;
    out[2] = c->ring_full;
    out[3] = c->timed_out;
    return 0;
}

void spinn_emu_fabric_timing(const spinn_emu_t *emu, uint64_t *router_busy, uint64_t *link_busy,
                             uint64_t *link_late) {
    memcpy(router_busy, emu->tm.router_busy, sizeof(uint64_t) * emu->n_chips);
    memcpy(link_busy, emu->tm.link_busy, sizeof(uint64_t) * emu->n_chips * SPINN_LINKS);
    memcpy(link_late, emu->tm.link_late, sizeof(uint64_t) * emu->n_chips * SPINN_LINKS);
}

int spinn_emu_set_board_links(spinn_emu_t *emu, const int32_t *serial, uint32_t n_serial) {
    return tm_set_serial(&emu->tm, serial, n_serial);
}

void spinn_emu_board_link_timing(const spinn_emu_t *emu, uint64_t *busy) {
    if (emu->tm.n_serial) memcpy(busy, emu->tm.serial_busy, sizeof(uint64_t) * emu->tm.n_serial);
}

int spinn_emu_set_input_hosts(spinn_emu_t *emu, const uint32_t *host, uint32_t n) {
    uint32_t i;
    if (n > emu->n_inputs) return -1;
    for (i = 0; i < n; i++)
        if (host[i] >= SPINN_TM_MAX_HOSTS) return -1;
    for (i = 0; i < n; i++) emu->tm.host_of_input[i] = (uint8_t)host[i];
    return 0;
}

void spinn_emu_host_in_timing(const spinn_emu_t *emu, uint64_t *busy) {
    memcpy(busy, emu->tm.in_busy, sizeof(emu->tm.in_busy));
}
