/*
 * Lost samples: what a core does when a sample cannot complete.
 *
 * A sample whose packets do not all arrive (a datagram lost on the host link,
 * a multicast packet dropped by a router, a core upstream that stopped) would
 * hold its slot for good, and n_slots such losses stop the core. Instead:
 *
 *   release   a slot that holds part of a sample and got no packet for a
 *             bounded time (spin1 binding: the config header's lost_timeout
 *             in timer ticks, per slot, checked while no packet waits in the
 *             core's queue; emulator: when no packet is left in flight) is
 *             forced complete (the kernel's *_release) and computed;
 *   marker    the outputs of such a slot leave with their slot field moved
 *             up by the slot span (spinn_slot_decode; the sender's key block
 *             holds twice its slots), payload 0: "the values this key
 *             carries are lost". In the key, a marker survives every hop, the
 *             live packet gatherer's included (front-end-common 7.4.1's
 *             gatherer turns a packet without payload into payload 0). A
 *             packet without payload is taken as a marker too;
 *   marked    a core that receives a marker counts its values as arrived and
 *             marks the slot lost, so its own outputs of that sample are
 *             markers too.
 *
 * Lost-ness thus follows the data to the output gatherer, where the host
 * names the lost samples; the pipeline never stalls and never passes a
 * partial sample on as if it were whole. The bookkeeping below is shared by
 * the spin1 binding and the emulator (SPINN_SLOT_OPS instantiates the same
 * packet and release paths for each kernel in both), so both behave alike.
 * Portable C99, no floating point, no division.
 */
#ifndef SPINN_SLOTS_H
#define SPINN_SLOTS_H

#include <stdint.h>

#include "spinn_dense.h" /* SPINN_MAX_SLOTS */
#include "spinn_fixed.h" /* spinn_send_fn */

typedef struct {
    uint32_t lost;       /* bit s: slot s holds a sample that lost values */
    uint32_t markers_in; /* lost-value markers received */
    uint32_t released;   /* slots forced complete after the quiet timeout */
    uint32_t lost_out;   /* samples this core finished as lost (sent as markers) */
    uint32_t now;        /* timer ticks (spin1 binding) */
    uint32_t last[SPINN_MAX_SLOTS]; /* tick of each slot's last packet */
} spinn_slots_t;
#define SPINN_SLOTS_COUNTERS 4u /* the words above `now` (provenance, emulator statistics) */

/* A slot the kernel has emptied is no longer lost: count the lost sample once. */
static inline void spinn_slots_settle(spinn_slots_t *g, int32_t slot, int busy) {
    uint32_t bit;
    if (slot < 0) return;
    bit = 1u << (uint32_t)slot;
    if (!busy && (g->lost & bit)) {
        g->lost &= ~bit;
        g->lost_out++;
    }
}

/*
 * SPINN_SLOT_OPS(name) defines, for kernel spinn_<name>_*:
 *   spinn_<name>_rx(k, g, key, payload, marker)
 *       one packet in (marker: it carried no payload): the kernel's receive and
 *       the lost-sample bookkeeping; returns the slot whose compute became due
 *       (spinn_<name>_run it), or -1.
 *   spinn_<name>_run(k, g, slot, send, send_lost, ctx)
 *       that compute, with send_lost when the slot is lost. Returns 0 or the
 *       send error.
 *   spinn_<name>_packet(k, g, key, payload, marker, send, send_lost, ctx)
 *       both in turn.
 *   spinn_<name>_release_stale(k, g, timeout, send_lost, ctx)
 *       the lost timeout: force every partly filled slot that got no packet
 *       for `timeout` ticks (0: every one) complete and send its outputs as
 *       markers. Returns the number of slots released.
 * The kernel provides *_receive, *_compute, *_rx_slot (slot of the last
 * packet received, or -1), *_busy (the slot holds part of a sample) and
 * *_release (force the slot complete; returns it for compute, or -1).
 * A compute may let receives of other packets run in it (spin1_binding.h's
 * send does): a receive writes only input rows not yet complete, and a slot
 * takes no packet of its next sample before its last output left (the host
 * keeps n_slots samples in flight; a dense tile frees its slot when its compute
 * starts). Such a send must itself send as send_lost once the computed slot is
 * lost: a marker taken in at a send makes rows it completes computable in the
 * same compute.
 */
#define SPINN_SLOT_OPS(name)                                                                              \
    static inline int32_t spinn_##name##_rx(spinn_##name##_t *k, spinn_slots_t *g, uint32_t key,          \
                                            uint32_t payload, int marker) {                               \
        int32_t done = spinn_##name##_receive(k, key, marker ? 0u : payload), at;                         \
        at = spinn_##name##_rx_slot(k);                                                                   \
        if (at >= 0 && ((uint32_t)at & SPINN_SLOT_LOST)) { /* a marker in the key */                    \
            marker = 1;                                                                                   \
            at = (int32_t)((uint32_t)at & ~(uint32_t)SPINN_SLOT_LOST);                                    \
        }                                                                                                 \
        if (at >= 0) g->last[at] = g->now;                                                                \
        if (marker) {                                                                                     \
            g->markers_in++;                                                                              \
            if (at >= 0) g->lost |= 1u << (uint32_t)at;                                                   \
        }                                                                                                 \
        if (at >= 0 && at != done && ((g->lost >> (uint32_t)at) & 1u))                                    \
            spinn_slots_settle(g, at, spinn_##name##_busy(k, (uint32_t)at));                              \
        return done;                                                                                      \
    }                                                                                                     \
                                                                                                          \
    static inline int spinn_##name##_run(spinn_##name##_t *k, spinn_slots_t *g, uint32_t slot,           \
                                         spinn_send_fn send, spinn_send_fn send_lost, void *ctx) {        \
        int lost = (g->lost >> slot) & 1u, rc;                                                            \
        rc = spinn_##name##_compute(k, slot, lost ? send_lost : send, ctx);                               \
        if ((g->lost >> slot) & 1u) /* also when a marker came in at one of its sends */                  \
            spinn_slots_settle(g, (int32_t)slot, spinn_##name##_busy(k, slot));                           \
        return rc;                                                                                        \
    }                                                                                                     \
                                                                                                          \
    static inline int spinn_##name##_packet(spinn_##name##_t *k, spinn_slots_t *g, uint32_t key,          \
                                            uint32_t payload, int marker, spinn_send_fn send,             \
                                            spinn_send_fn send_lost, void *ctx) {                         \
        int32_t done = spinn_##name##_rx(k, g, key, payload, marker);                                     \
        return done >= 0 ? spinn_##name##_run(k, g, (uint32_t)done, send, send_lost, ctx) : 0;            \
    }                                                                                                     \
                                                                                                          \
    static inline uint32_t spinn_##name##_release_stale(spinn_##name##_t *k, spinn_slots_t *g,            \
                                                        uint32_t timeout, spinn_send_fn send_lost,        \
                                                        void *ctx) {                                      \
        uint32_t s, n = 0;                                                                                \
        for (s = 0; s < SPINN_MAX_SLOTS; s++) {                                                           \
            int32_t r;                                                                                    \
            if (g->now - g->last[s] < timeout) continue;                                                  \
            r = spinn_##name##_release(k, s);                                                             \
            if (r < 0) { /* nothing left to compute: the slot may just have been emptied */              \
                spinn_slots_settle(g, (int32_t)s, spinn_##name##_busy(k, s));                             \
                continue;                                                                                 \
            }                                                                                             \
            n++;                                                                                          \
            g->released++;                                                                                \
            g->lost |= 1u << (uint32_t)r;                                                                 \
            (void)spinn_##name##_run(k, g, (uint32_t)r, send_lost, send_lost, ctx);                       \
        }                                                                                                 \
        return n;                                                                                         \
    }

#endif /* SPINN_SLOTS_H */
