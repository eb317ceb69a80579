/* Timed emulation: the clocks of routers, links, cores and the live IO ends (timing.h). */
#include "timing.h"

#include <stdlib.h>
#include <string.h>

static uint64_t max64(uint64_t a, uint64_t b) { return a > b ? a : b; }

int tm_init(tm_t *tm, uint32_t n_chips) {
    size_t n_links = (size_t)n_chips * SPINN_LINKS;
    memset(tm, 0, sizeof(*tm));
    tm->n_chips = n_chips;
    tm->router_free = calloc(n_chips ? n_chips : 1u, sizeof(uint64_t));
    tm->router_busy = calloc(n_chips ? n_chips : 1u, sizeof(uint64_t));
    tm->link_free = calloc(n_links ? n_links : 1u, sizeof(uint64_t));
    tm->link_busy = calloc(n_links ? n_links : 1u, sizeof(uint64_t));
    tm->link_late = calloc(n_links ? n_links : 1u, sizeof(uint64_t));
    return (tm->router_free && tm->router_busy && tm->link_free && tm->link_busy && tm->link_late) ? 0 : -1;
}

void tm_free(tm_t *tm) {
    free(tm->router_free);
    free(tm->router_busy);
    free(tm->link_free);
    free(tm->link_busy);
    free(tm->link_late);
}

void tm_reset(tm_t *tm) {
    size_t n_links = (size_t)tm->n_chips * SPINN_LINKS;
    memset(tm->router_free, 0, sizeof(uint64_t) * tm->n_chips);
    memset(tm->router_busy, 0, sizeof(uint64_t) * tm->n_chips);
    memset(tm->link_free, 0, sizeof(uint64_t) * n_links);
    memset(tm->link_busy, 0, sizeof(uint64_t) * n_links);
    memset(tm->link_late, 0, sizeof(uint64_t) * n_links);
    tm->in_free = tm->in_busy = tm->in_msgs = tm->in_core_busy = 0;
    tm->out_free = tm->out_busy = tm->out_msgs = 0;
    memset(tm->in_core_free, 0, sizeof(tm->in_core_free));
    memset(tm->in_msg_arrival, 0, sizeof(tm->in_msg_arrival));
    memset(tm->in_msg_left, 0, sizeof(tm->in_msg_left));
    tm->lpg_free = tm->lpg_busy = tm->lpg_late = 0;
    tm->lpg_count = 0;
    tm->tick_pending = 0;
    tm->makespan = 0;
}

#define TM_ARITY 4u

static int before(const tm_entry_t *a, const tm_entry_t *b) {
    return a->t < b->t || (a->t == b->t && (int32_t)(a->seq - b->seq) < 0);
}

int tm_queue_push(tm_queue_t *q, const packet_t *pk) {
    uint32_t i, slot;
    tm_entry_t e;
    if (q->n == q->cap) {
        uint32_t cap = q->cap ? 2u * q->cap : 4096u, k;
        tm_entry_t *heap = realloc(q->heap, sizeof(tm_entry_t) * cap);
        packet_t *pool = heap ? realloc(q->pool, sizeof(packet_t) * cap) : NULL;
        uint32_t *free_slots = pool ? realloc(q->free_slots, sizeof(uint32_t) * cap) : NULL;
        if (heap) q->heap = heap;
        if (pool) q->pool = pool;
        if (free_slots) q->free_slots = free_slots;
        if (!heap || !pool || !free_slots) return -1;
        for (k = cap; k > q->cap; k--) q->free_slots[q->n_free++] = k - 1u; /* the new slots */
        q->cap = cap;
    }
    slot = q->free_slots[--q->n_free];
    q->pool[slot] = *pk;
    e.t = pk->t;
    e.seq = q->seq++;
    e.slot = slot;
    for (i = q->n++; i > 0u;) {
        uint32_t parent = (i - 1u) / TM_ARITY;
        if (!before(&e, &q->heap[parent])) break;
        q->heap[i] = q->heap[parent];
        i = parent;
    }
    q->heap[i] = e;
    return 0;
}

packet_t tm_queue_pop(tm_queue_t *q) {
    tm_entry_t top = q->heap[0], last = q->heap[--q->n];
    uint32_t i = 0, m = q->n;
    for (;;) {
        uint32_t c = TM_ARITY * i + 1u, best, k;
        if (c >= m) break;
        best = c;
        for (k = c + 1u; k < c + TM_ARITY && k < m; k++)
            if (before(&q->heap[k], &q->heap[best])) best = k;
        if (!before(&q->heap[best], &last)) break;
        q->heap[i] = q->heap[best];
        i = best;
    }
    if (m) q->heap[i] = last;
    q->free_slots[q->n_free++] = top.slot;
    return q->pool[top.slot];
}

void tm_queue_free(tm_queue_t *q) {
    free(q->heap);
    free(q->pool);
    free(q->free_slots);
    memset(q, 0, sizeof(*q));
}

uint64_t tm_router(tm_t *tm, uint32_t chip, uint64_t t) {
    uint64_t start = max64(t, tm->router_free[chip]);
    tm->router_free[chip] = start + tm->p[SPINN_TM_ROUTER_PS];
    tm->router_busy[chip] += tm->p[SPINN_TM_ROUTER_PS];
    return start + tm->p[SPINN_TM_HOP_PS];
}

uint64_t tm_link(tm_t *tm, uint32_t chip, uint32_t l, uint64_t t_out, uint32_t marker) {
    size_t i = (size_t)chip * SPINN_LINKS + l;
    uint64_t depart = max64(t_out, tm->link_free[i]);
    uint64_t ser = tm->p[marker ? SPINN_TM_BITS_NO_PAYLOAD : SPINN_TM_BITS_PAYLOAD] * tm->p[SPINN_TM_LINK_PS_PER_BIT];
    if (depart - t_out > tm->p[SPINN_TM_WAIT_PS]) tm->link_late[i]++;
    tm->link_free[i] = depart + ser;
    tm->link_busy[i] += ser;
    return depart + ser;
}

/* The ps of a core's counted compute work so far (sends apart). */
static uint64_t work_ps(const tm_core_t *c, const spinn_counters_t *now) {
    return ((((uint64_t)now->macs_hi << 32) | now->macs_lo) * c->cost[SPINN_COST_MAC] +
            (uint64_t)now->blocks * c->cost[SPINN_COST_BLOCK] + (uint64_t)now->outputs * c->cost[SPINN_COST_OUTPUT] +
            (uint64_t)now->computes * c->cost[SPINN_COST_COMPUTE]);
}

uint64_t tm_core_begin(const tm_t *tm, tm_core_t *c, uint64_t t, const spinn_counters_t *now) {
    uint64_t fiq = max64(t, c->fiq_free), start;
    uint32_t r = (uint32_t)(c->n_rx % TM_RX_RING);
    int idle = c->cpu_free <= fiq;
    if (fiq - t > tm->p[SPINN_TM_WAIT_PS]) c->late++;
    c->fiq_free = fiq + c->cost[SPINN_COST_FIQ];
    /* the packet TM_RX_RING before this one still waits to be drained: the ring is full */
    if (c->n_rx >= TM_RX_RING && c->rx_start[r] > fiq) c->ring_full++;
    /* the FIQ steals its cycles from whatever runs: the CPU does all of it, in order */
    start = max64(fiq, c->cpu_free) + c->cost[SPINN_COST_FIQ] + (idle ? c->cost[SPINN_COST_EVENT] : 0u) +
            c->cost[SPINN_COST_RECEIVE];
    c->busy += c->cost[SPINN_COST_FIQ] + (idle ? c->cost[SPINN_COST_EVENT] : 0u) + c->cost[SPINN_COST_RECEIVE];
    c->rx_start[r] = start;
    c->n_rx++;
    c->t0 = start;
    c->cpu_free = start;
    c->work0 = work_ps(c, now);
    return start;
}

void tm_core_end(tm_core_t *c, const spinn_counters_t *now, uint32_t n, uint64_t *send_t) {
    uint64_t compute = work_ps(c, now) - c->work0;
    uint32_t j;
    /* the packets leave as the compute produces them: spread evenly over it */
    for (j = 0; j < n; j++)
        send_t[j] = c->t0 + compute * (j + 1u) / n + (uint64_t)(j + 1u) * c->cost[SPINN_COST_PACKET_OUT];
    c->cpu_free = c->t0 + compute + (uint64_t)n * c->cost[SPINN_COST_PACKET_OUT];
    c->busy += c->cpu_free - c->t0;
}

uint64_t tm_input_packet(tm_t *tm, uint32_t i, uint32_t pairs_left, uint64_t at) {
    uint64_t t;
    if (tm->in_msg_left[i] == 0u) { /* a new EIEIO message leaves the host */
        uint64_t per = tm->p[SPINN_TM_EVENTS_PER_IN_MSG] ? tm->p[SPINN_TM_EVENTS_PER_IN_MSG] : 1u;
        uint32_t events = pairs_left < per ? pairs_left : (uint32_t)per;
        uint64_t bytes = tm->p[SPINN_TM_IN_MSG_OVERHEAD] + 8u * (uint64_t)events;
        uint64_t start = max64(at, tm->in_free);
        tm->in_free = start + bytes * tm->p[SPINN_TM_HOST_IN_PS_PER_BYTE];
        tm->in_busy += bytes * tm->p[SPINN_TM_HOST_IN_PS_PER_BYTE];
        tm->in_msgs++;
        tm->in_msg_arrival[i] = tm->in_free;
        tm->in_msg_left[i] = events;
    }
    tm->in_msg_left[i]--;
    t = max64(tm->in_msg_arrival[i], tm->in_core_free[i]) + tm->p[SPINN_TM_IN_CORE_PS];
    tm->in_core_free[i] = t;
    tm->in_core_busy += tm->p[SPINN_TM_IN_CORE_PS];
    return t;
}

int tm_gatherer_event(tm_t *tm, uint64_t t, uint64_t *t_flush) {
    uint64_t start = max64(t, tm->lpg_free), tick = tm->p[SPINN_TM_TICK_PS] ? tm->p[SPINN_TM_TICK_PS] : 1u;
    if (start - t > tm->p[SPINN_TM_WAIT_PS]) tm->lpg_late++;
    tm->lpg_free = start + tm->p[SPINN_TM_LPG_PS];
    tm->lpg_busy += tm->p[SPINN_TM_LPG_PS];
    tm->lpg_count++;
    if (tm->lpg_count >= tm->p[SPINN_TM_EVENTS_PER_OUT_MSG]) {
        *t_flush = tm->lpg_free;
        return 1;
    }
    *t_flush = 0;
    if (!tm->tick_pending) {
        tm->tick_pending = 1;
        *t_flush = (tm->lpg_free / tick + 1u) * tick; /* the next timer tick */
    }
    return 0;
}

uint64_t tm_gatherer_flush(tm_t *tm, uint64_t t) {
    uint64_t bytes = tm->p[SPINN_TM_OUT_MSG_OVERHEAD] + 8u * (uint64_t)tm->lpg_count;
    uint64_t start = max64(t, tm->out_free);
    tm->out_free = start + bytes * tm->p[SPINN_TM_HOST_OUT_PS_PER_BYTE];
    tm->out_busy += bytes * tm->p[SPINN_TM_HOST_OUT_PS_PER_BYTE];
    tm->out_msgs++;
    tm->lpg_count = 0;
    if (tm->out_free > tm->makespan) tm->makespan = tm->out_free;
    return tm->out_free;
}
