/*
 * What every kernel binding shares: binds a portable kernel (explicit state,
 * *_receive / *_compute, see spinn_dense.h) to the spin1 event system.
 *
 *   MC/MCPL packet  (FIQ, priority -1)  kernel receive; a completed slot
 *                                       triggers a user event, or joins the
 *                                       ready queue if one is pending
 *   USER_EVENT      (priority 1)        kernel compute of that slot, then of
 *                                       every queued slot; sends retry while
 *                                       the TX queue is full
 *   SDP             (IRQ, priority 0)   front-end-common's run/stop control
 *
 * At most one user event is outstanding (spin1's user-event queue holds 4),
 * so completions that arrive during a compute wait in our own ring, which
 * holds one entry per possible slot and therefore never overflows.
 *
 * Regions (written by tvm_spinn/machine/mapping/vertices.py): 0 = the front end's
 * simulation header, 1 = the kernel config, copied into DTCM at start.
 *
 * Build: with the SDK (spinnaker_tools + front-end-common, SPINN_DIRS set)
 * define SPINN_REAL_SDK and APPLICATION_NAME_HASH (front-end-common's
 * local.mk does: first 8 hex digits of md5 of the binary's name); without
 * it, spin1_api_decls.h lets tools/arm_build_check.py type-check the code.
 * No floating point, no division.
 */
#ifndef SPIN1_BINDING_H
#define SPIN1_BINDING_H

#include <stdbool.h>
#include <stdint.h>

#ifdef SPINN_REAL_SDK
#include <spin1_api.h>
#include <data_specification.h>
#include <simulation.h>
#else
#include "spin1_api_decls.h"
#endif

#include "spinn_dense.h" /* SPINN_MAX_SLOTS */
#include "spinn_fixed.h" /* spinn_send_fn */

#ifndef APPLICATION_NAME_HASH
#error "APPLICATION_NAME_HASH must be defined (md5 of the binary name, as front-end-common's local.mk does)"
#endif

#define SPINN_SYSTEM_REGION 0u
#define SPINN_CONFIG_REGION 1u
#define SPINN_CONFIG_HEADER_WORDS 2u      /* n_words, checksum: tvm_spinn.machine.graph */
#define SPINN_MAX_CONFIG_WORDS 0x4000u    /* 64 KB: a config must fit DTCM anyway */

#define SPINN_PRIO_PACKET (-1) /* FIQ: MC and MCPL must share it */
#define SPINN_PRIO_SDP 0       /* IRQ, as front-end-common's live packet gatherer */
#define SPINN_PRIO_USER 1
/* simulation_initialise registers a DMA-done callback only for priority >= -1;
 * we use no DMA, and -1 would contend with the packets for the single FIQ. */
#define SPINN_PRIO_NO_DMA (-2)

/* A full TX queue drains at link speed (a packet in well under 1 us); give
 * up on a packet after this many 1 us waits (a blocked router, not load). */
#define SPINN_SEND_TRIES 1000u

/* Second argument of rt_error(), to tell the failures apart in the core dump. */
#define SPINN_ERR_HEADER 1u
#define SPINN_ERR_SIMULATION 2u
#define SPINN_ERR_CONFIG 3u   /* bad length or checksum in the config region's header */
#define SPINN_ERR_KERNEL 4u   /* the kernel rejected its config */
#define SPINN_ERR_ALLOC 5u

/* The ready ring is indexed with a mask: SPINN_MAX_SLOTS must be a power of 2. */
typedef char spinn_binding_slots_pow2[(SPINN_MAX_SLOTS & (SPINN_MAX_SLOTS - 1u)) == 0u ? 1 : -1];

typedef struct {
    /* simulation_initialise keeps pointers to these */
    uint32_t timer_period, simulation_ticks, infinite_run, time;
    /* completed slots waiting for compute; written in FIQ, read with FIQ off */
    volatile uint32_t ready[SPINN_MAX_SLOTS];
    volatile uint32_t ready_head, ready_len;
    volatile uint32_t event_pending; /* a user event is queued or running */
    /* errors, readable with a debugger (ybug) */
    volatile uint32_t no_payload;     /* MC packets without payload (dropped) */
    volatile uint32_t trigger_failed; /* spin1 user-event queue full */
    volatile uint32_t queue_overflow; /* cannot happen while n_slots <= SPINN_MAX_SLOTS */
    uint32_t send_failed;             /* packets given up after SPINN_SEND_TRIES */
    uint32_t compute_failed;          /* samples whose outputs were cut short */
} spinn_binding_t;

/* DTCM block of `bytes`, 8-byte aligned: sark_alloc only aligns to words,
 * and gcc uses LDRD/STRD (doubleword aligned on ARMv5TE) on int64 workspace. */
static inline void *spinn_binding_alloc(uint32_t bytes) {
    uintptr_t p = (uintptr_t)spin1_malloc(bytes + 4u);
    if (p == 0u) rt_error(RTE_MALLOC, SPINN_ERR_ALLOC, bytes);
    return (void *)((p + 7u) & ~(uintptr_t)7u);
}

/* Read the data-spec header, set up simulation control (no timer: the core
 * is purely event driven) and copy the config region into DTCM. The region
 * starts with its own length and checksum (tvm_spinn.machine.graph.frame_config):
 * front-end-common 7.4.1 verifies every region's checksum in
 * data_specification_get_data_address() and then zeroes the table's n_words
 * and checksum, so the table cannot tell the length. Returns the config;
 * *n_words its length. */
static inline const uint32_t *spinn_binding_setup(spinn_binding_t *b, uint32_t *n_words) {
    data_specification_metadata_t *ds = data_specification_get_data_address();
    const uint32_t *src;
    uint32_t *dst, n, i, sum = 0u;
    if (!data_specification_read_header(ds)) rt_error(RTE_SWERR, SPINN_ERR_HEADER);
    if (!simulation_initialise(data_specification_get_region(SPINN_SYSTEM_REGION, ds),
                               APPLICATION_NAME_HASH, &b->timer_period, &b->simulation_ticks,
                               &b->infinite_run, &b->time, SPINN_PRIO_SDP, SPINN_PRIO_NO_DMA))
        rt_error(RTE_SWERR, SPINN_ERR_SIMULATION);
    simulation_set_uses_timer(false);
    src = data_specification_get_region(SPINN_CONFIG_REGION, ds);
    n = src[0];
    if (n == 0u || n > SPINN_MAX_CONFIG_WORDS) rt_error(RTE_SWERR, SPINN_ERR_CONFIG, n);
    dst = spinn_binding_alloc(n * 4u);
    for (i = 0; i < n; i++) {
        dst[i] = src[SPINN_CONFIG_HEADER_WORDS + i];
        sum += dst[i];
    }
    if (sum != src[1]) rt_error(RTE_SWERR, SPINN_ERR_CONFIG, sum);
    *n_words = n;
    return dst;
}

/* FIQ: the kernel completed `slot`. */
static inline void spinn_binding_slot_ready(spinn_binding_t *b, uint32_t slot) {
    if (!b->event_pending) {
        if (spin1_trigger_user_event(slot, 0u) == SUCCESS) {
            b->event_pending = 1u;
            return;
        }
        /* Queue it: the next completion triggers again and drains the ring. */
        b->trigger_failed++;
    }
    if (b->ready_len >= SPINN_MAX_SLOTS) {
        b->queue_overflow++;
        return;
    }
    b->ready[(b->ready_head + b->ready_len) & (SPINN_MAX_SLOTS - 1u)] = slot;
    b->ready_len++;
}

/* User event: pop the next ready slot into *slot and return 1, or, when the
 * ring is empty, end the pending event and return 0. Both under FIQ off, so
 * a completion either sees the event pending and is popped here, or sees it
 * ended and triggers a new one: none is lost. */
static inline int spinn_binding_next_slot(spinn_binding_t *b, uint32_t *slot) {
    uint cpsr = spin1_fiq_disable();
    int got = 0;
    if (b->ready_len != 0u) {
        *slot = b->ready[b->ready_head];
        b->ready_head = (b->ready_head + 1u) & (SPINN_MAX_SLOTS - 1u);
        b->ready_len--;
        got = 1;
    } else {
        b->event_pending = 0u;
    }
    spin1_mode_restore(cpsr);
    return got;
}

/* The kernels' spinn_send_fn; ctx is the spinn_binding_t. Runs in the user
 * event (IRQs on), so the TX-empty interrupt drains the queue while we wait. */
static inline int spinn_binding_send(void *ctx, uint32_t key, uint32_t payload) {
    spinn_binding_t *b = (spinn_binding_t *)ctx;
    uint32_t tries;
    for (tries = 0u;; tries++) {
        if (spin1_send_mc_packet(key, payload, WITH_PAYLOAD) == SUCCESS) return 0;
        if (tries == SPINN_SEND_TRIES) break;
        spin1_delay_us(1u);
    }
    b->send_failed++;
    return -1;
}

/* A packet without payload carries no value for our kernels. */
static inline void spinn_binding_no_payload(spinn_binding_t *b) { b->no_payload++; }

/* Register the callbacks and hand over to front-end-common's run loop, which
 * waits for the host's run command and returns at its stop command. */
static inline void spinn_binding_run(callback_t on_mc, callback_t on_mcpl, callback_t on_user) {
    spin1_callback_on(MC_PACKET_RECEIVED, on_mc, SPINN_PRIO_PACKET);
    spin1_callback_on(MCPL_PACKET_RECEIVED, on_mcpl, SPINN_PRIO_PACKET);
    spin1_callback_on(USER_EVENT, on_user, SPINN_PRIO_USER);
    simulation_run();
}

/*
 * SPINN_KERNEL_MAIN(name): c_main and the event callbacks binding the kernel
 * spinn_<name>_{workspace,init,receive,compute} (type spinn_<name>_t) to spin1.
 * spin1 callbacks take no context, so the core's whole state is one static struct.
 */
#define SPINN_KERNEL_MAIN(name)                                                              \
    static struct {                                                                          \
        spinn_binding_t b;                                                                   \
        spinn_##name##_t k;                                                                  \
    } core;                                                                                  \
                                                                                             \
    static void on_mcpl(uint key, uint payload) {                                            \
        int32_t slot = spinn_##name##_receive(&core.k, key, payload);                        \
        if (slot >= 0) spinn_binding_slot_ready(&core.b, (uint32_t)slot);                    \
    }                                                                                        \
                                                                                             \
    static void on_mc(uint key, uint unused) {                                               \
        (void)key;                                                                           \
        (void)unused;                                                                        \
        spinn_binding_no_payload(&core.b);                                                   \
    }                                                                                        \
                                                                                             \
    /* arg0 is the slot that triggered the event; then whatever completed since. */          \
    static void on_user(uint slot, uint unused) {                                            \
        uint32_t s = slot;                                                                   \
        (void)unused;                                                                        \
        do {                                                                                 \
            if (spinn_##name##_compute(&core.k, s, spinn_binding_send, &core.b) != 0)        \
                core.b.compute_failed++;                                                     \
        } while (spinn_binding_next_slot(&core.b, &s));                                      \
    }                                                                                        \
                                                                                             \
    void c_main(void) {                                                                      \
        uint32_t n_words, ws_bytes;                                                          \
        const uint32_t *cfg = spinn_binding_setup(&core.b, &n_words);                        \
        ws_bytes = spinn_##name##_workspace(cfg, n_words);                                   \
        if (ws_bytes == 0u) rt_error(RTE_SWERR, SPINN_ERR_KERNEL, cfg[0]);                   \
        if (spinn_##name##_init(&core.k, cfg, n_words, spinn_binding_alloc(ws_bytes)) != 0)  \
            rt_error(RTE_SWERR, SPINN_ERR_KERNEL, cfg[0]);                                   \
        spinn_binding_run(on_mc, on_mcpl, on_user);                                          \
    }

#endif /* SPIN1_BINDING_H */
