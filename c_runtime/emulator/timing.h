/*
 * Timed emulation (internal to the emulator): every packet event carries a time
 * in picoseconds, packets are processed in time order, and the resources a
 * board has are modelled as servers with a time they are next free:
 *
 *   router   each chip's router takes ROUTER_PS per packet and forwards it
 *            HOP_PS after it entered;
 *   link     a chip-to-chip link serialises a packet (72 bits with payload, 40
 *            without) at LINK_PS_PER_BIT; a link from one board to another ends
 *            at the board's FPGA, which multiplexes the 8 links of a board edge
 *            onto one serial link (BOARD_PS_PER_BIT, shared) and adds
 *            BOARD_LATENCY_PS;
 *   core     the FIQ takes each packet (a packet that waits longer than the
 *            router's WAIT_PS for it is one a board would drop), then the
 *            core's one CPU runs the FIQ, the user event (only when it was
 *            idle for longer than the drain waits for a next packet, POLL_PS:
 *            a busy core, or one whose packets come close together, drains
 *            several packets per event), the drain and receive, then whatever
 *            compute the packet completed; the packets that compute sends
 *            leave spread over it (no two closer than the core's send gap; a drain
 *            that started idle waits its send phase at its first send, which
 *            holds the compute back). A packet that comes while a
 *            compute runs is received at the compute's next send (the binding's
 *            send takes the queued packets in), which delays the compute by the
 *            receive; the compute it makes due runs after the running one. A core
 *            whose binding ring
 *            (SPINN_RX_QUEUE packets) would overflow is counted too;
 *   host in  EIEIO messages of EVENTS_PER_IN_MSG packets at HOST_IN_PS_PER_BYTE,
 *            each sent on by the input source core at IN_CORE_PS per packet; one
 *            stream per board Ethernet (host_of_input: the stream of each live
 *            input), the streams side by side, each paced on its own;
 *   gatherer the live packet gatherer takes LPG_PS per packet, flushes a message
 *            to the host when EVENTS_PER_OUT_MSG events are buffered or on its
 *            timer tick (TICK_PS), as front-end-common's live_packet_gather.c
 *            does; messages go out at HOST_OUT_PS_PER_BYTE.
 *
 * The figures are the caller's (tvm_spinn.runtime.timing documents them);
 * nothing here is measured on a board.
 */
#ifndef SPINN_EMU_TIMING_H
#define SPINN_EMU_TIMING_H

#include <stdint.h>

#include "spinn_dense.h"
#include "spinn_emulator.h"

#define TM_RX_RING 256u /* SPINN_RX_QUEUE of spin1_binding.h */

/* A packet event: a packet entering a chip's router at time t, or (tick) the
 * live packet gatherer's timer tick. 24 bytes: the event queue moves them. */
typedef struct {
    uint64_t t;
    uint32_t key, payload;
    uint32_t chip;
    uint16_t hops;
    int8_t arrival_link;   /* link of this chip it arrived on, or LOCAL */
    uint8_t marker : 1;    /* no payload: a lost-value marker (spinn_slots.h) */
    uint8_t tick : 1;
} packet_t;

/* A core's clock. What every packet touches comes first (one cache line), then what a
 * check of the ring or a compute touches. */
typedef struct {
    uint64_t fiq_free, cpu_free, busy, t0;
    uint64_t comp_end, gap, rx_free; /* the last compute's end and time between its sends; receives' lane */
    uint64_t last_send; /* when its last packet left (0: none yet) */
    int phase_due;      /* a drain that started idle has not sent yet */
    uint64_t min_rx;   /* ps a packet takes at least (FIQ + receive) */
    uint64_t fiq_ps, event_ps;
    uint64_t n_rx;     /* packets in */
    uint32_t snap_macs_lo, snap_macs_hi, snap_blocks, snap_outputs, snap_computes; /* counters at t0 */
    uint32_t snap_general, snap_lookups, snap_scanned; /* counters.rx_* before the packet */
    int in_compute;         /* the packet came while a compute ran */
    uint64_t late, ring_full, timed_out;
    uint32_t slot_open;                    /* bit s: slot s holds part of a sample */
    uint64_t slot_last[SPINN_MAX_SLOTS];   /* when each slot's last packet was processed */
    uint64_t full_until;             /* the ring is full for FIQs before this time (found by the last check) */
    uint64_t cost[SPINN_COST_WORDS]; /* ps per unit, spinn_emulator.h SPINN_COST_* */
    uint64_t *rx_start;              /* TM_RX_RING: when each of the last packets' processing started */
} tm_core_t;

/* The event queue of a timed run: a radix heap of 4-bit digits (event times only grow,
 * so every event is filed by the highest hex digit in which its time differs from the
 * last one taken, and by its own value of that digit; the events themselves sit in the
 * buckets, read in order, and move down at most once per digit). Buckets in index order
 * hold ever later times; equal times share a bucket, so they leave in the order they
 * were filed. */
typedef struct {
    packet_t *e;
    uint32_t n, cap, head;
} tm_bucket_t;

#define TM_DIGIT_BITS 4u
#define TM_DIGITS (64u / TM_DIGIT_BITS)
#define TM_BUCKETS (1u + TM_DIGITS * (1u << TM_DIGIT_BITS)) /* bucket 0: the time last taken */

typedef struct {
    tm_bucket_t b[TM_BUCKETS];
    uint64_t last;
    uint64_t nonempty[(TM_BUCKETS - 1u + 63u) / 64u]; /* bit i - 1: bucket i holds events */
    int oom; /* an event could not be filed (out of memory): the run must fail */
} tm_queue_t;

typedef struct {
    int on;
    uint64_t p[SPINN_TM_PARAMS];
    uint32_t n_chips;
    uint64_t *router_free, *router_busy, *link_free, *link_busy, *link_late;
    /* board-to-board serial links: per chip link, the one it crosses (-1: none) */
    int32_t *serial_of_link;
    uint32_t n_serial;
    uint64_t *serial_free, *serial_busy;
    /* host link (one stream per board Ethernet) and live IO ends */
    uint64_t in_free[SPINN_TM_MAX_HOSTS], in_busy[SPINN_TM_MAX_HOSTS];
    uint8_t host_of_input[SPINN_EMU_MAX_INPUTS]; /* not reset by a run: set with the inputs */
    uint64_t in_msgs, in_bytes, in_core_busy, out_free, out_busy, out_msgs;
    uint64_t in_core_free[SPINN_EMU_MAX_INPUTS], in_msg_arrival[SPINN_EMU_MAX_INPUTS];
    uint32_t in_msg_left[SPINN_EMU_MAX_INPUTS];
    uint64_t lpg_free, lpg_busy, lpg_late;
    uint32_t lpg_count;
    int tick_pending;
    uint64_t makespan;
} tm_t;

int tm_init(tm_t *tm, uint32_t n_chips);
void tm_free(tm_t *tm);
void tm_reset(tm_t *tm); /* a run starts at time 0 */

/* The event queue: push (-1: no memory), pop the earliest (n > 0), free. */
int tm_queue_push(tm_queue_t *q, const packet_t *pk);
packet_t tm_queue_pop(tm_queue_t *q);
void tm_queue_free(tm_queue_t *q);

/* The board-to-board serial link of each chip link (timing.h tm_t.serial_of_link); -1 on bad input. */
int tm_set_serial(tm_t *tm, const int32_t *serial, uint32_t n_serial);
/* A packet entering chip's router at t: when it leaves the router. */
uint64_t tm_router(tm_t *tm, uint32_t chip, uint64_t t);
/* ... and leaves on link l at t_out: when it arrives at the next chip. */
uint64_t tm_link(tm_t *tm, uint32_t chip, uint32_t l, uint64_t t_out, uint32_t marker);
static inline uint64_t tm_max(uint64_t a, uint64_t b) { return a > b ? a : b; }
static inline uint64_t tm_min(uint64_t a, uint64_t b) { return a < b ? a : b; }


/* A packet reaches a kernel core at t (its counters now): returns when its handler's compute starts. */
static inline uint64_t tm_core_begin(const tm_t *tm, tm_core_t *c, uint64_t t, const spinn_counters_t *now) {
    uint64_t fiq = tm_max(t, c->fiq_free), start, own;
    int idle = c->cpu_free + tm->p[SPINN_TM_POLL_PS] < fiq; /* the drain ended: a new user event */
    c->phase_due |= idle; /* a new drain: its first send waits the send phase */
    if (fiq - t > tm->p[SPINN_TM_WAIT_PS]) c->late++;
    c->fiq_free = fiq + c->fiq_ps;
    /* the binding's ring holds the packets whose processing has not begun: full when the
     * packet TM_RX_RING before this one has not begun (a board drops this one). Looked up
     * only when the backlog could hold that many packets' least work (the entry is cold). */
    if (c->cpu_free > fiq + TM_RX_RING * c->min_rx && c->n_rx >= TM_RX_RING) {
        if (fiq < c->full_until) {
            c->ring_full++;
        } else if (c->rx_start[c->n_rx % TM_RX_RING] > fiq) {
            c->ring_full++;
            c->full_until = c->rx_start[c->n_rx % TM_RX_RING]; /* later packets began later */
        }
    }
    /* the FIQ steals its cycles from whatever runs: the CPU does all of it */
    own = c->min_rx + (idle ? c->event_ps : 0u);
    c->in_compute = c->comp_end > fiq;
    if (c->in_compute) { /* a compute runs: its next send takes the packet in, delaying it */
        start = tm_max(c->rx_free, tm_max(fiq, tm_min(fiq + c->gap, c->comp_end)));
        c->comp_end += own;
        c->cpu_free += own;
    } else {
        start = tm_max(fiq, c->cpu_free);
        c->cpu_free = start + own;
    }
    c->rx_free = start + own;
    c->busy += own;
    c->rx_start[c->n_rx % TM_RX_RING] = start;
    c->n_rx++;
    c->t0 = c->cpu_free; /* a compute the packet makes due runs after the running one */
    c->snap_macs_lo = now->macs_lo;
    c->snap_macs_hi = now->macs_hi;
    c->snap_blocks = now->blocks;
    c->snap_outputs = now->outputs;
    c->snap_computes = now->computes;
    c->snap_general = now->rx_general;
    c->snap_lookups = now->rx_lookups;
    c->snap_scanned = now->rx_scanned;
    return start;
}

/* The handler finished with counters now, having sent n packets: their send
 * times go into send_t (n of them); the core is busy until the last. */
static inline void tm_core_end(tm_core_t *c, const spinn_counters_t *now, uint32_t n, uint64_t *send_t) {
    uint64_t compute, macs, shift = 0u;
    uint32_t j;
    if (now->rx_lookups != c->snap_lookups || now->rx_general != c->snap_general) {
        /* the packet's entry was looked up, or it took the general receive path (known only
         * once the kernel has run): their extra cycles, on the CPU before anything the
         * packet made due */
        uint64_t extra = (uint64_t)(now->rx_general - c->snap_general) * c->cost[SPINN_COST_START] +
                         (uint64_t)(now->rx_lookups - c->snap_lookups) * c->cost[SPINN_COST_LOOKUP] +
                         (uint64_t)(now->rx_scanned - c->snap_scanned) * c->cost[SPINN_COST_SCAN];
        if (c->in_compute) c->comp_end += extra;
        c->cpu_free += extra;
        c->rx_free += extra;
        c->busy += extra;
        c->t0 += extra;
    }
    if (n == 0u && now->outputs == c->snap_outputs && now->macs_lo == c->snap_macs_lo &&
        now->computes == c->snap_computes && now->blocks == c->snap_blocks)
        return; /* most packets: stored, nothing completed */
    macs = (((uint64_t)now->macs_hi << 32) | now->macs_lo) - (((uint64_t)c->snap_macs_hi << 32) | c->snap_macs_lo);
    compute = macs * c->cost[SPINN_COST_MAC] + (uint64_t)(now->blocks - c->snap_blocks) * c->cost[SPINN_COST_BLOCK] +
              (uint64_t)(now->outputs - c->snap_outputs) * c->cost[SPINN_COST_OUTPUT] +
              (uint64_t)(now->computes - c->snap_computes) * c->cost[SPINN_COST_COMPUTE];
    /* the packets leave as the compute produces them: spread evenly over it, no two closer
     * than the core's send gap, the first no sooner than its send phase after the start
     * (the binding waits for both); the last one ends the compute */
    for (j = 0; j < n; j++) {
        send_t[j] = c->t0 + compute * (j + 1u) / n + (uint64_t)(j + 1u) * c->cost[SPINN_COST_PACKET_OUT] + shift;
        if (j == 0u) { /* a wait at the first send holds the whole compute back: every send later */
            uint64_t at = tm_max(send_t[0] + (c->phase_due ? c->cost[SPINN_COST_SEND_PHASE] : 0u),
                                 c->last_send ? c->last_send + c->cost[SPINN_COST_SEND_GAP] : 0u);
            shift = at - send_t[0];
            send_t[0] = at;
        } else {
            send_t[j] = tm_max(send_t[j], send_t[j - 1u] + c->cost[SPINN_COST_SEND_GAP]);
        }
    }
    if (n) c->phase_due = 0;
    if (n) c->last_send = send_t[n - 1u];
    c->cpu_free = tm_max(c->t0 + compute + (uint64_t)n * c->cost[SPINN_COST_PACKET_OUT] + shift, n ? send_t[n - 1u] : 0u);
    c->busy += c->cpu_free - c->t0;
    c->comp_end = c->cpu_free;
    c->gap = (c->cpu_free - c->t0) / (n + 1u);
}
/* The next packet of input i (packets_left packets of this sample still to come
 * for it, this one included: int16 pairs, or 8-bit quads), the host starting no
 * earlier than at: when the input source core sends it. */
uint64_t tm_input_packet(tm_t *tm, uint32_t i, uint32_t packets_left, uint64_t at);
/* An event reaches the gatherer at t; returns 1 when its buffer is full then
 * (flush now, at *t_flush), else 0 (*t_flush: the timer tick to schedule, 0 if
 * one is pending already). */
int tm_gatherer_event(tm_t *tm, uint64_t t, uint64_t *t_flush);
/* The gatherer flushes at t: when the message has reached the host. */
uint64_t tm_gatherer_flush(tm_t *tm, uint64_t t);

#endif /* SPINN_EMU_TIMING_H */
