/* Timed emulation: the clocks of routers, links, cores and the live IO ends (timing.h). */
#include "timing.h"

#include <stdlib.h>
#include <string.h>


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
    free(tm->serial_of_link);
    free(tm->serial_free);
    free(tm->serial_busy);
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
    if (tm->n_serial) {
        memset(tm->serial_free, 0, sizeof(uint64_t) * tm->n_serial);
        memset(tm->serial_busy, 0, sizeof(uint64_t) * tm->n_serial);
    }
    memset(tm->in_free, 0, sizeof(tm->in_free));
    memset(tm->in_busy, 0, sizeof(tm->in_busy));
    tm->in_msgs = tm->in_bytes = tm->in_core_busy = 0;
    tm->out_free = tm->out_busy = tm->out_msgs = 0;
    memset(tm->in_core_free, 0, sizeof(tm->in_core_free));
    memset(tm->in_msg_arrival, 0, sizeof(tm->in_msg_arrival));
    memset(tm->in_msg_left, 0, sizeof(tm->in_msg_left));
    tm->lpg_free = tm->lpg_busy = tm->lpg_late = 0;
    tm->lpg_count = 0;
    tm->tick_pending = 0;
    tm->makespan = 0;
}

/* The bucket of time t when last was taken (t >= last): 0 if equal, else by the highest
 * differing digit and t's value there. */
static uint32_t bucket_of(uint64_t t, uint64_t last) {
    uint64_t d = t ^ last;
    uint32_t digit;
    if (!d) return 0u;
    digit = (63u - (uint32_t)__builtin_clzll(d)) / TM_DIGIT_BITS;
    return 1u + (digit << TM_DIGIT_BITS) + (uint32_t)((t >> (digit * TM_DIGIT_BITS)) & ((1u << TM_DIGIT_BITS) - 1u));
}

static int bucket_add(tm_queue_t *q, uint32_t i, const packet_t *pk) {
    tm_bucket_t *b = &q->b[i];
    if (b->n == b->cap) {
        uint32_t cap = b->cap ? 2u * b->cap : 32u;
        packet_t *e = realloc(b->e, sizeof(packet_t) * cap);
        if (!e) return -1;
        b->e = e;
        b->cap = cap;
    }
    b->e[b->n++] = *pk;
    if (i) q->nonempty[(i - 1u) >> 6] |= 1ull << ((i - 1u) & 63u);
    return 0;
}

int tm_queue_push(tm_queue_t *q, const packet_t *pk) {
    packet_t e = *pk;
    if (e.t < q->last) e.t = q->last; /* never earlier than what was taken */
    return bucket_add(q, bucket_of(e.t, q->last), &e);
}

packet_t tm_queue_pop(tm_queue_t *q) {
    tm_bucket_t *b0 = &q->b[0];
    if (b0->head == b0->n) { /* refill bucket 0 from the lowest non-empty bucket */
        uint32_t w = 0u, i, k;
        tm_bucket_t *bi;
        uint64_t m;
        while (q->nonempty[w] == 0u) w++;
        i = 1u + 64u * w + (uint32_t)__builtin_ctzll(q->nonempty[w]);
        q->nonempty[w] &= q->nonempty[w] - 1u; /* it empties */
        bi = &q->b[i];
        b0->head = b0->n = 0u;
        m = bi->e[0].t;
        for (k = 1u; k < bi->n; k++)
            if (bi->e[k].t < m) m = bi->e[k].t;
        q->last = m;
        for (k = 0; k < bi->n; k++) /* every entry goes to a lower bucket */
            if (bucket_add(q, bucket_of(bi->e[k].t, m), &bi->e[k]) != 0) q->oom = 1;
        bi->n = 0u;
    }
    return b0->e[b0->head++];
}

void tm_queue_free(tm_queue_t *q) {
    uint32_t i;
    for (i = 0; i < TM_BUCKETS; i++) free(q->b[i].e);
    memset(q, 0, sizeof(*q));
}

uint64_t tm_router(tm_t *tm, uint32_t chip, uint64_t t) {
    uint64_t start = tm_max(t, tm->router_free[chip]);
    tm->router_free[chip] = start + tm->p[SPINN_TM_ROUTER_PS];
    tm->router_busy[chip] += tm->p[SPINN_TM_ROUTER_PS];
    return start + tm->p[SPINN_TM_HOP_PS];
}

uint64_t tm_link(tm_t *tm, uint32_t chip, uint32_t l, uint64_t t_out, uint32_t marker) {
    size_t i = (size_t)chip * SPINN_LINKS + l;
    uint64_t depart = tm_max(t_out, tm->link_free[i]);
    uint64_t ser = tm->p[marker ? SPINN_TM_BITS_NO_PAYLOAD : SPINN_TM_BITS_PAYLOAD] * tm->p[SPINN_TM_LINK_PS_PER_BIT];
    if (depart - t_out > tm->p[SPINN_TM_WAIT_PS]) tm->link_late[i]++;
    tm->link_free[i] = depart + ser;
    tm->link_busy[i] += ser;
    if (tm->serial_of_link && tm->serial_of_link[i] >= 0) { /* into the FPGA, over the board-to-board serial link */
        uint32_t s = (uint32_t)tm->serial_of_link[i];
        uint64_t bits = tm->p[marker ? SPINN_TM_BITS_NO_PAYLOAD : SPINN_TM_BITS_PAYLOAD];
        uint64_t start = tm_max(depart + ser, tm->serial_free[s]), frame = bits * tm->p[SPINN_TM_BOARD_PS_PER_BIT];
        tm->serial_free[s] = start + frame;
        tm->serial_busy[s] += frame;
        return start + frame + tm->p[SPINN_TM_BOARD_LATENCY_PS];
    }
    return depart + ser;
}

int tm_set_serial(tm_t *tm, const int32_t *serial, uint32_t n_serial) {
    size_t n_links = (size_t)tm->n_chips * SPINN_LINKS, i;
    int32_t *of = malloc(sizeof(int32_t) * (n_links ? n_links : 1u));
    uint64_t *fr = calloc(n_serial ? n_serial : 1u, sizeof(uint64_t)), *busy = calloc(n_serial ? n_serial : 1u, sizeof(uint64_t));
    if (!of || !fr || !busy) {
        free(of), free(fr), free(busy);
        return -1;
    }
    for (i = 0; i < n_links; i++) {
        if (serial[i] >= (int32_t)n_serial) {
            free(of), free(fr), free(busy);
            return -1;
        }
        of[i] = serial[i];
    }
    free(tm->serial_of_link), free(tm->serial_free), free(tm->serial_busy);
    tm->serial_of_link = of;
    tm->serial_free = fr;
    tm->serial_busy = busy;
    tm->n_serial = n_serial;
    return 0;
}

uint64_t tm_input_packet(tm_t *tm, uint32_t i, uint32_t packets_left, uint64_t at) {
    uint64_t t;
    if (tm->in_msg_left[i] == 0u) { /* a new EIEIO message leaves the host */
        uint64_t per = tm->p[SPINN_TM_EVENTS_PER_IN_MSG] ? tm->p[SPINN_TM_EVENTS_PER_IN_MSG] : 1u;
        uint32_t events = packets_left < per ? packets_left : (uint32_t)per;
        uint64_t bytes = tm->p[SPINN_TM_IN_MSG_OVERHEAD] + 8u * (uint64_t)events;
        uint32_t h = tm->host_of_input[i]; /* the stream of the board the input enters */
        uint64_t start = tm_max(at, tm->in_free[h]);
        tm->in_free[h] = start + bytes * tm->p[SPINN_TM_HOST_IN_PS_PER_BYTE];
        tm->in_busy[h] += bytes * tm->p[SPINN_TM_HOST_IN_PS_PER_BYTE];
        tm->in_msgs++;
        tm->in_bytes += bytes;
        tm->in_msg_arrival[i] = tm->in_free[h];
        tm->in_msg_left[i] = events;
    }
    tm->in_msg_left[i]--;
    t = tm_max(tm->in_msg_arrival[i], tm->in_core_free[i]) + tm->p[SPINN_TM_IN_CORE_PS];
    tm->in_core_free[i] = t;
    tm->in_core_busy += tm->p[SPINN_TM_IN_CORE_PS];
    return t;
}

int tm_gatherer_event(tm_t *tm, uint64_t t, uint64_t *t_flush) {
    uint64_t start = tm_max(t, tm->lpg_free), tick = tm->p[SPINN_TM_TICK_PS] ? tm->p[SPINN_TM_TICK_PS] : 1u;
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
    uint64_t start = tm_max(t, tm->out_free);
    tm->out_free = start + bytes * tm->p[SPINN_TM_HOST_OUT_PS_PER_BYTE];
    tm->out_busy += bytes * tm->p[SPINN_TM_HOST_OUT_PS_PER_BYTE];
    tm->out_msgs++;
    tm->lpg_count = 0;
    if (tm->out_free > tm->makespan) tm->makespan = tm->out_free;
    return tm->out_free;
}
