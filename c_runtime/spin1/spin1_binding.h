/*
 * What every kernel binding shares: binds a portable kernel (explicit state,
 * *_receive / *_compute, see spinn_dense.h) to the spin1 event system and to
 * front-end-common's simulation interface, as the host's run control expects.
 *
 *   MC/MCPL packet  (FIQ, priority -1)  only queues (key, payload, marker) in
 *                                       a ring and triggers the user event
 *   USER_EVENT      (priority 1)        drains the ring: kernel receive, and
 *                                       compute of each completed slot (its
 *                                       sends paced, machine/send_gaps.py, and
 *                                       taking in the packets queued
 *                                       meanwhile); waits a little for the next
 *                                       packet before it ends
 *                                       (spinn_binding_poll)
 *   TIMER_TICK      (priority 2)        time; pause/stop handshake; releases
 *                                       slots after lost_timeout quiet ticks
 *   SDP             (IRQ, priority 0)   front-end-common's run control
 *
 * The FIQ does about 15 instructions per packet (as front-end-common's live
 * packet gatherer and nengo_spinnaker do), so packets keep moving while a
 * core computes; a full ring drops the packet and counts it (rx_overflow).
 *
 * Run control (simulation.c with the timer, the usual front-end pattern):
 * simulation_run() starts paused; the host's CMD_RUNTIME then SYNC0 start the
 * timer; a tick that finds simulation_is_finished() (the run's ticks are
 * done, or the host sent CMD_PAUSE) stores provenance, pauses and signals
 * READY (simulation_ready_to_read); the next CMD_RUNTIME + SYNC resumes;
 * CMD_STOP exits. Packets are processed whenever they come, paused or not.
 *
 * Lost samples (spinn_slots.h): a slot left partly filled for lost_timeout
 * ticks with no packet arriving is released and its outputs leave as
 * markers (multicast without payload), so the host names the sample lost.
 *
 * Regions (written by tvm_spinn/machine/mapping/vertices.py): 0 = the front
 * end's simulation header, 1 = the kernel config (copied into DTCM at start),
 * 2 = provenance (front-end-common's system words, then SPINN_PROV_WORDS of
 * ours: tvm_spinn.machine.graph.PROVENANCE_NAMES).
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
#include "spinn_slots.h"

#ifndef APPLICATION_NAME_HASH
#error "APPLICATION_NAME_HASH must be defined (md5 of the binary name, as front-end-common's local.mk does)"
#endif

#define SPINN_SYSTEM_REGION 0u
#define SPINN_CONFIG_REGION 1u
#define SPINN_PROVENANCE_REGION 2u
/* n_words, checksum, lost_timeout (ticks), lost_bit, send pace (cycles: gap | phase << 16):
 * tvm_spinn.machine.graph.frame_config */
#define SPINN_CONFIG_HEADER_WORDS 5u
#define SPINN_MAX_CONFIG_WORDS 0x4000u /* 64 KB: a config must fit DTCM anyway */

#define SPINN_PRIO_PACKET (-1) /* FIQ: MC and MCPL must share it */
#define SPINN_PRIO_SDP 0       /* IRQ, as front-end-common's live packet gatherer */
#define SPINN_PRIO_USER 1
#define SPINN_PRIO_TIMER 2     /* queued: never interrupts a drain */
/* simulation_initialise registers a DMA-done callback only for priority >= -1;
 * we use no DMA, and -1 would contend with the packets for the single FIQ. */
#define SPINN_PRIO_NO_DMA (-2)

/* Packets the FIQ can queue while the core computes: 9 bytes each, 2.3 KB. */
#define SPINN_RX_QUEUE 256u

/* A full TX queue drains at link speed (a packet in well under 1 us); give
 * up on a packet after this many 1 us waits (a blocked router, not load). */
#define SPINN_SEND_TRIES 1000u

/* Second argument of rt_error(), to tell the failures apart in the core dump. */
#define SPINN_ERR_HEADER 1u
#define SPINN_ERR_SIMULATION 2u
#define SPINN_ERR_CONFIG 3u   /* bad length or checksum in the config region's header */
#define SPINN_ERR_KERNEL 4u   /* the kernel rejected its config */
#define SPINN_ERR_ALLOC 5u

typedef char spinn_binding_queue_pow2[(SPINN_RX_QUEUE & (SPINN_RX_QUEUE - 1u)) == 0u ? 1 : -1];

/* Our provenance words, after front-end-common's system words, in this order
 * (tvm_spinn.machine.graph.PROVENANCE_NAMES): the kernel's spinn_counters_t
 * (12 words), then the spinn_slots_t counters and the binding's own (7). */
#define SPINN_PROV_WORDS 19u

typedef struct {
    /* simulation_initialise keeps pointers to these */
    uint32_t timer_period, simulation_ticks, infinite_run, time;
    /* FIQ -> user event ring; tail written only by the FIQ, head only by the drain */
    volatile uint32_t q_key[SPINN_RX_QUEUE], q_payload[SPINN_RX_QUEUE];
    volatile uint8_t q_marker[SPINN_RX_QUEUE];
    volatile uint32_t q_head, q_tail;
    volatile uint32_t event_pending; /* a drain is queued or running */
    uint32_t due;                    /* bit s: slot s's compute is due (the drain's own) */
    uint32_t running;                /* bit s: the drain computes slot s (spinn_binding_send) */
    void (*yield_rx)(void);          /* the drain's receive of every queued packet (spinn_binding_sent) */
    uint32_t lost_timeout;
    uint32_t lost_bit; /* OR-ed into a key to make it a lost-value marker (spinn_fixed.h) */
    uint32_t send_gap;   /* cycles at least between two sends (tvm_spinn.machine.send_gaps) */
    uint32_t send_phase; /* cycles from a compute's start to its first send, at least */
    uint32_t last_send;  /* timer 1's count at the last send */
    uint32_t first_send; /* the drain (started idle) has not sent yet */
    spinn_slots_t slots;
    /* errors, stored as provenance */
    volatile uint32_t rx_overflow;    /* packets dropped: ring full */
    volatile uint32_t trigger_failed; /* spin1 user-event queue full (the tick retries) */
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

/* Read the data-spec header, set up simulation control and copy the config
 * region into DTCM. The region starts with its own length, checksum, lost
 * timeout and marker key bit (tvm_spinn.machine.graph.frame_config): front-end-common 7.4.1
 * verifies every region's checksum in data_specification_get_data_address()
 * and then zeroes the table's n_words and checksum, so the table cannot tell
 * the length. Returns the config; *n_words its length. */
static inline const uint32_t *spinn_binding_setup(spinn_binding_t *b, uint32_t *n_words,
                                                  prov_callback_t store_provenance,
                                                  exit_callback_t on_exit) {
    data_specification_metadata_t *ds = data_specification_get_data_address();
    const uint32_t *src;
    uint32_t *dst, n, i, sum = 0u;
    if (!data_specification_read_header(ds)) rt_error(RTE_SWERR, SPINN_ERR_HEADER);
    if (!simulation_initialise(data_specification_get_region(SPINN_SYSTEM_REGION, ds),
                               APPLICATION_NAME_HASH, &b->timer_period, &b->simulation_ticks,
                               &b->infinite_run, &b->time, SPINN_PRIO_SDP, SPINN_PRIO_NO_DMA))
        rt_error(RTE_SWERR, SPINN_ERR_SIMULATION);
    simulation_set_provenance_function(store_provenance,
                                       data_specification_get_region(SPINN_PROVENANCE_REGION, ds));
    simulation_set_exit_function(on_exit);
    src = data_specification_get_region(SPINN_CONFIG_REGION, ds);
    n = src[0];
    if (n == 0u || n > SPINN_MAX_CONFIG_WORDS) rt_error(RTE_SWERR, SPINN_ERR_CONFIG, n);
    dst = spinn_binding_alloc(n * 4u);
    for (i = 0; i < n; i++) {
        dst[i] = src[SPINN_CONFIG_HEADER_WORDS + i];
        sum += dst[i];
    }
    if (sum != src[1]) rt_error(RTE_SWERR, SPINN_ERR_CONFIG, sum);
    b->lost_timeout = src[2] ? src[2] : 1u;
    b->lost_bit = src[3];
    b->send_gap = src[4] & 0xFFFFu;
    b->send_phase = src[4] >> 16;
    *n_words = n;
    return dst;
}

/* FIQ: queue the packet and make sure a drain is coming. */
static inline void spinn_binding_enqueue(spinn_binding_t *b, uint32_t key, uint32_t payload, uint32_t marker) {
    uint32_t t = b->q_tail, i;
    if (t - b->q_head >= SPINN_RX_QUEUE) {
        b->rx_overflow++;
        return;
    }
    i = t & (SPINN_RX_QUEUE - 1u);
    b->q_key[i] = key;
    b->q_payload[i] = payload;
    b->q_marker[i] = (uint8_t)marker;
    b->q_tail = t + 1u;
    if (!b->event_pending) {
        if (spin1_trigger_user_event(0u, 0u) == SUCCESS)
            b->event_pending = 1u;
        else
            b->trigger_failed++; /* the timer tick triggers again */
    }
}

/* Drain: the next queued packet into *key, *payload, *marker and 1, or 0 when
 * the ring is empty. The ring has one producer (the FIQ, which writes an entry
 * before it moves q_tail) and one consumer (here), so a packet is taken
 * without turning the FIQ off. */
static inline int spinn_binding_pop(spinn_binding_t *b, uint32_t *key, uint32_t *payload, uint32_t *marker) {
    uint32_t h = b->q_head, i;
    if (h == b->q_tail) return 0;
    i = h & (SPINN_RX_QUEUE - 1u);
    *key = b->q_key[i];
    *payload = b->q_payload[i];
    *marker = b->q_marker[i];
    b->q_head = h + 1u;
    return 1;
}

/* The ring is empty: wait for the next packet for SPINN_DRAIN_POLLS looks (about
 * 2,000 cycles, tools/arm_cycles.py's "poll" phase) before the drain ends. A
 * stream's packets come microseconds apart: each one that comes within the wait
 * is drained at once, without the spin1 user event (about 360 cycles) a packet
 * finding the core idle costs. The timer tick waits at most that long. Returns
 * 1 when a packet came. Not inlined: the cycle tool tells the wait apart. */
#define SPINN_DRAIN_POLLS 256u
static __attribute__((noinline)) int spinn_binding_poll(const spinn_binding_t *b) {
    uint32_t i, h = b->q_head;
    for (i = SPINN_DRAIN_POLLS; i != 0u; i--)
        if (b->q_tail != h) return 1;
    return 0;
}

/* End the drain, or 0 when a packet came meanwhile (go on draining). No FIQ-off
 * step is needed: the drain first ends (event_pending 0), then looks at the ring
 * once more. A packet queued before that look is seen by it (the drain goes on);
 * one queued after it finds the drain ended and triggers a new one (a FIQ runs
 * whole between two of our instructions): none waits unseen. A drain the FIQ
 * triggered meanwhile may find the ring empty: it just ends. */
static inline int spinn_binding_end(spinn_binding_t *b) {
    b->event_pending = 0u;
    if (b->q_head == b->q_tail) return 1;
    b->event_pending = 1u;
    return 0;
}

/* After a packet left: a compute takes the packets queued meanwhile through the
 * kernel's receive (spinn_slots.h says when a compute may: their computes become due
 * and run after it), so the ring empties at the pace of the compute's sends, not
 * after the compute: a long compute does not fill it. */
static inline void spinn_binding_sent(spinn_binding_t *b) {
    if (b->q_head != b->q_tail && b->yield_rx) b->yield_rx();
}

/* The kernels' spinn_send_fn; ctx is the spinn_binding_t. Runs in the drain
 * (IRQs on), so the TX-empty interrupt drains the queue while we wait. */
static inline int spinn_binding_send_as(spinn_binding_t *b, uint32_t key, uint32_t payload, uint load) {
    uint32_t tries;
    for (tries = 0u;; tries++) {
        if (spin1_send_mc_packet(key, payload, load) == SUCCESS) return 0;
        if (tries == SPINN_SEND_TRIES) break;
        spin1_delay_us(1u);
    }
    b->send_failed++;
    return -1;
}

/* A lost sample's outputs: the marker keys (spinn_slots.h), payload 0. */
static inline int spinn_binding_send_lost(void *ctx, uint32_t key, uint32_t payload) {
    spinn_binding_t *b = (spinn_binding_t *)ctx;
    (void)payload;
    if (b->lost_bit == 0u) return spinn_binding_send_as(b, key, 0u, NO_PAYLOAD);
    return spinn_binding_send_as(b, key | b->lost_bit, 0u, WITH_PAYLOAD);
}

/* The comms controller's TX control register (SpiNNaker datasheet, section 8):
 * bit 30 TX buffer full (sticky: any write clears it), bit 17 the packet
 * carries a payload. */
#define SPINN_CC_TX_FULL 0x40000000u
#define SPINN_CC_TCR_MC_PAYLOAD 0x00020000u

/* Timer 1 (spin1's tick timer) counts the core's clock down from its reload value:
 * the cycles since it read `then` (less than a tick). */
#ifdef SPINN_REAL_SDK
static inline uint32_t spinn_binding_since(uint32_t then) {
    uint32_t now = tc[T1_COUNT];
    return then >= now ? then - now : then + tc[T1_BG_LOAD] - now;
}
#endif

/* Wait until send_gap cycles have passed since the last send and, before the first send
 * of a drain (the core was idle), send_phase cycles more (the readers of this core take
 * packets in no faster, and its fellow senders, which finish together, take turns: the
 * wait holds this core's whole compute back, so they stay apart: machine/send_gaps.py),
 * taking in our own queued packets meanwhile. A wait is bounded by as many looks as
 * cycles, so a stopped timer (paused) cannot hold it. The stand-in build (no SDK) does
 * not wait. A core with a phase has a gap (both come from the same reader). */
static inline void spinn_binding_pace(spinn_binding_t *b) {
#ifdef SPINN_REAL_SDK
    uint32_t i;
    for (i = 0u; i < b->send_gap && spinn_binding_since(b->last_send) < b->send_gap; i++) spinn_binding_sent(b);
    if (b->first_send) {
        uint32_t from = tc[T1_COUNT];
        for (i = 0u; i < b->send_phase && spinn_binding_since(from) < b->send_phase; i++) spinn_binding_sent(b);
    }
#endif
    b->first_send = 0u;
}

/* A drain starts (the core was idle): its first send waits the send phase. */
static inline void spinn_binding_start(spinn_binding_t *b) { b->first_send = 1u; }

/* After a send: its time, for the next one's wait. */
static inline void spinn_binding_stamp(spinn_binding_t *b) {
#ifdef SPINN_REAL_SDK
    if (b->send_gap) b->last_send = tc[T1_COUNT];
#else
    (void)b;
#endif
}

static inline int spinn_binding_send(void *ctx, uint32_t key, uint32_t payload) {
    spinn_binding_t *const b = (spinn_binding_t *)ctx;
    if ((b->slots.lost & b->running) | b->send_gap) { /* rare: one test for both */
        /* a marker of the running slot's sample, taken in at an earlier send, made the
         * sample lost: the rest of its outputs (some computed from the marker's zeros)
         * leave as markers, as a compute that started lost sends them */
        if (b->slots.lost & b->running) return spinn_binding_send_lost(ctx, key, payload);
        spinn_binding_pace(b);
    }
#ifdef SPINN_REAL_SDK
    /* What spin1_send_mc_packet does when its queue is empty and the TX buffer is
     * not full, without the call layers and the IRQ-off section: no other code
     * writes the CC then (no IRQ or FIQ handler of ours sends; spin1's TX-empty
     * interrupt is enabled only while its queue holds packets, and then we queue
     * behind them), and the key written last sends. Otherwise spin1's path. */
    volatile uint *const cc_regs = (volatile uint *)CC_BASE;
    volatile uint *const vic_regs = (volatile uint *)VIC_BASE;
    if (!(vic_regs[VIC_ENABLE] & (1u << CC_TMT_INT))) {
        cc_regs[CC_TCR] = SPINN_CC_TCR_MC_PAYLOAD; /* also clears the sticky full bit */
        (void)cc_regs[CC_TCR];                    /* as spin1_send_packet: a read-after-write hazard on CC_TCR */
        if (!(cc_regs[CC_TCR] & SPINN_CC_TX_FULL)) {
            cc_regs[CC_TXDATA] = payload;
            cc_regs[CC_TXKEY] = key;
            spinn_binding_stamp(b);
            spinn_binding_sent(b);
            return 0;
        }
    }
#endif
    if (spinn_binding_send_as(b, key, payload, WITH_PAYLOAD) != 0) return -1;
    spinn_binding_stamp(b);
    spinn_binding_sent(b);
    return 0;
}

/* Timer tick: 1 if the run is over (pause or end of the run's ticks), after
 * storing provenance, pausing and signalling READY to the host; else 0, and
 * the drain is re-triggered if packets wait, or *release set when none waits
 * (slots quiet for lost_timeout ticks may then be released: a slot's packets
 * cannot be sitting in the queue). */
static inline int spinn_binding_tick(spinn_binding_t *b, resume_callback_t on_resume, int *release) {
    *release = 0;
    b->time++;
    b->slots.now++;
    if (simulation_is_finished()) {
        simulation_handle_pause_resume(on_resume); /* stops the timer, stores provenance */
        b->time--;                                 /* the next run starts where this one ended */
        simulation_ready_to_read();                /* READY: the host may read and resume */
        return 1;
    }
    if (b->q_head != b->q_tail) {
        uint cpsr = spin1_fiq_disable();
        if (!b->event_pending && spin1_trigger_user_event(0u, 0u) == SUCCESS) b->event_pending = 1u;
        spin1_mode_restore(cpsr);
        return 0;
    }
    *release = 1;
    return 0;
}

/* Provenance: the kernel's counters, then ours (SPINN_PROV_WORDS in all). */
static inline void spinn_binding_store_provenance(const spinn_binding_t *b, const spinn_counters_t *c,
                                                  uint32_t *out) {
    const uint32_t *words = (const uint32_t *)c;
    uint32_t i;
    for (i = 0; i < sizeof(spinn_counters_t) / 4u; i++) out[i] = words[i];
    out[i++] = b->slots.markers_in;
    out[i++] = b->slots.released;
    out[i++] = b->slots.lost_out;
    out[i++] = b->rx_overflow;
    out[i++] = b->send_failed;
    out[i++] = b->compute_failed;
    out[i++] = b->trigger_failed;
}
typedef char spinn_binding_prov_words[sizeof(spinn_counters_t) / 4u + 7u == SPINN_PROV_WORDS ? 1 : -1];

/* Register the callbacks and hand over to front-end-common's run loop, which
 * starts paused and waits for the host's CMD_RUNTIME and SYNC0. */
static inline void spinn_binding_run(spinn_binding_t *b, callback_t on_mc, callback_t on_mcpl, callback_t on_user,
                                     callback_t on_tick) {
    spin1_set_timer_tick(b->timer_period);
    spin1_callback_on(MC_PACKET_RECEIVED, on_mc, SPINN_PRIO_PACKET);
    spin1_callback_on(MCPL_PACKET_RECEIVED, on_mcpl, SPINN_PRIO_PACKET);
    spin1_callback_on(USER_EVENT, on_user, SPINN_PRIO_USER);
    spin1_callback_on(TIMER_TICK, on_tick, SPINN_PRIO_TIMER);
    simulation_run();
}

/*
 * SPINN_KERNEL_MAIN(name): c_main and the event callbacks binding the kernel
 * spinn_<name>_{workspace,init,receive,compute,rx_slot,busy,release} (type
 * spinn_<name>_t) to spin1. spin1 callbacks take no context, so the core's
 * whole state is one static struct.
 */
#define SPINN_KERNEL_MAIN(name)                                                                        \
    SPINN_SLOT_OPS(name)                                                                               \
                                                                                                       \
    static struct {                                                                                    \
        spinn_binding_t b;                                                                             \
        spinn_##name##_t k;                                                                            \
    } core;                                                                                            \
                                                                                                       \
    static void on_mcpl(uint key, uint payload) { spinn_binding_enqueue(&core.b, key, payload, 0u); }  \
                                                                                                       \
    /* no payload: a lost-value marker (spinn_slots.h) */                                              \
    static void on_mc(uint key, uint unused) {                                                         \
        (void)unused;                                                                                  \
        spinn_binding_enqueue(&core.b, key, 0u, 1u);                                                   \
    }                                                                                                  \
                                                                                                       \
    /* every queued packet through the receive; the computes they make due wait */                  \
    static void drain_rx(void) {                                                                       \
        uint32_t key, payload, marker;                                                                 \
        int32_t d;                                                                                     \
        while (spinn_binding_pop(&core.b, &key, &payload, &marker))                                    \
            if ((d = spinn_##name##_rx(&core.k, &core.b.slots, key, payload, (int)marker)) >= 0)       \
                core.b.due |= 1u << (uint32_t)d;                                                       \
    }                                                                                                  \
                                                                                                       \
    static void on_user(uint unused0, uint unused1) {                                                  \
        uint32_t key, payload, marker, due;                                                            \
        int32_t d;                                                                                     \
        (void)unused0;                                                                                 \
        (void)unused1;                                                                                 \
        spinn_binding_start(&core.b);                                                                  \
        for (;;) {                                                                                     \
            while (spinn_binding_pop(&core.b, &key, &payload, &marker))                                \
                if ((d = spinn_##name##_rx(&core.k, &core.b.slots, key, payload, (int)marker)) >= 0)   \
                    core.b.due |= 1u << (uint32_t)d;                                                   \
            if ((due = core.b.due) != 0u) { /* the lowest due slot (its sends take in newer packets) */ \
                core.b.due = due & (due - 1u);                                                         \
                core.b.running = due & ~(due - 1u);                                                    \
                if (spinn_##name##_run(&core.k, &core.b.slots, (uint32_t)__builtin_ctz(due),           \
                                       spinn_binding_send, spinn_binding_send_lost, &core.b) != 0)     \
                    core.b.compute_failed++;                                                           \
                core.b.running = 0u;                                                                   \
            } else if (!spinn_binding_poll(&core.b) && spinn_binding_end(&core.b)) {                   \
                return;                                                                                \
            }                                                                                          \
        }                                                                                              \
    }                                                                                                  \
                                                                                                       \
    /* a pause does not age the slots: their clocks restart with the run */                          \
    static void on_resume(void) {                                                                      \
        uint32_t s;                                                                                    \
        for (s = 0; s < SPINN_MAX_SLOTS; s++) core.b.slots.last[s] = core.b.slots.now;                 \
    }                                                                                                  \
                                                                                                       \
    static void on_tick(uint unused0, uint unused1) {                                                  \
        int release;                                                                                   \
        (void)unused0;                                                                                 \
        (void)unused1;                                                                                 \
        if (spinn_binding_tick(&core.b, on_resume, &release) || !release) return;                      \
        spinn_##name##_release_stale(&core.k, &core.b.slots, core.b.lost_timeout, spinn_binding_send_lost, \
                                     &core.b);                                                         \
    }                                                                                                  \
                                                                                                       \
    static void store_provenance(address_t at) {                                                       \
        spinn_binding_store_provenance(&core.b, &core.k.counters, (uint32_t *)at);                     \
    }                                                                                                  \
                                                                                                       \
    static void on_exit(void) { spin1_callback_off(TIMER_TICK); }                                      \
                                                                                                       \
    void c_main(void) {                                                                                \
        uint32_t n_words, ws_bytes;                                                                    \
        const uint32_t *cfg = spinn_binding_setup(&core.b, &n_words, store_provenance, on_exit);       \
        ws_bytes = spinn_##name##_workspace(cfg, n_words);                                             \
        if (ws_bytes == 0u) rt_error(RTE_SWERR, SPINN_ERR_KERNEL, cfg[0]);                             \
        if (spinn_##name##_init(&core.k, cfg, n_words, spinn_binding_alloc(ws_bytes)) != 0)            \
            rt_error(RTE_SWERR, SPINN_ERR_KERNEL, cfg[0]);                                             \
        core.b.yield_rx = drain_rx;                                                                    \
        spinn_binding_run(&core.b, on_mc, on_mcpl, on_user, on_tick);                                  \
    }

#endif /* SPIN1_BINDING_H */
