/*
 * Host emulator of a SpiNNaker board (host only, not built for ARM).
 * Holds every core's kernel state in one process and moves each multicast
 * packet through the per-chip routing tables the toolchain generated, hop by
 * hop, counting packets per router and per link. The live IO is emulated at
 * its two ends: samples are injected at the chip of the input vertex with its
 * keys, and packets routed to the output-gatherer core are decoded into the
 * output tensor.
 */
#ifndef SPINN_EMULATOR_H
#define SPINN_EMULATOR_H

#include <stdint.h>

#define SPINN_CORE_DENSE_TILE 1u
#define SPINN_CORE_DENSE_REDUCE 2u
#define SPINN_CORE_OUTPUT 3u
#define SPINN_CORE_CONV 4u /* spinn_tensor.h kernels */
#define SPINN_CORE_POOL 5u
#define SPINN_CORE_ADD 6u
#define SPINN_CORE_CONV_REDUCE 7u

#define SPINN_EMU_MAX_INPUTS 16u /* live inputs of one program */
#define SPINN_LINKS 6u
#define SPINN_CORES_PER_CHIP 18u

typedef struct spinn_emu spinn_emu_t;

/* links: n_chips * 6 neighbour chip indices (-1: no link); table_offsets:
 * n_chips + 1 prefix sums into table_entries of (key, mask, route) triples. */
spinn_emu_t *spinn_emu_create(uint32_t n_chips, const int32_t *links, const uint32_t *table_offsets,
                              const uint32_t *table_entries);
void spinn_emu_destroy(spinn_emu_t *emu);
/* A core running a kernel; the config words are copied. Returns the core index or -1. */
int32_t spinn_emu_add_core(spinn_emu_t *emu, uint32_t chip, uint32_t p, uint32_t kind, const uint32_t *cfg,
                           uint32_t n_words);
/* Where samples enter: the input vertex's chip and key layout; n_values per
 * sample, keys key | slot << slot_shift | pair (a dense vector). */
int spinn_emu_set_input(spinn_emu_t *emu, uint32_t chip, uint32_t key, uint32_t slot_shift, uint32_t n_values);
/* The same for a (n_c, n_h, n_w) tensor (c-major samples): keys
 * key | slot << slot_shift | c << c_shift | h << h_shift | pair, rows sent in
 * (h, c) order (spinn_tensor.h). set_input is this with n_c = n_h = 1. */
int spinn_emu_set_input_tensor(spinn_emu_t *emu, uint32_t chip, uint32_t key, uint32_t slot_shift,
                               uint32_t c_shift, uint32_t h_shift, uint32_t n_c, uint32_t n_h, uint32_t n_w);
/* One more input (after set_input_tensor): a sample is then every input's values,
 * c-major, one input after the other; returns -1 beyond SPINN_EMU_MAX_INPUTS. */
int spinn_emu_add_input_tensor(spinn_emu_t *emu, uint32_t chip, uint32_t key, uint32_t slot_shift,
                               uint32_t c_shift, uint32_t h_shift, uint32_t n_c, uint32_t n_h, uint32_t n_w);
/* Input `input` (0.. in the order set/added) sends 8-bit values, four per
 * packet (spinn_rx.h SPINN_PACK_INT8 / UINT8; SPINN_PACK_INT16: two int16, the
 * default): its key layout's pair field then counts quads. -1 for no such input. */
int spinn_emu_set_input_packing(spinn_emu_t *emu, uint32_t input, uint32_t packing);
/* The output gatherer core and its receive table (spinn_rx.h entries). */
int spinn_emu_set_output(spinn_emu_t *emu, uint32_t chip, uint32_t p, const uint32_t *rx, uint32_t n_rx,
                         uint32_t n_values);
/* The same with generic entries (spinn_tensor.h, SPINN_TRX_WORDS each), whose
 * dst block is the whole output tensor (dst_nc * dst_nh * dst_nw == n_values):
 * the output sample is that tensor, c-major. */
int spinn_emu_set_output_trx(spinn_emu_t *emu, uint32_t chip, uint32_t p, const uint32_t *rx, uint32_t n_rx,
                             uint32_t n_values);
/* Copies of the function on the board (tvm_spinn.build(replicas=...)): a sample is then
 * one sample of each copy, copy after copy, in and out (the output's n_values a multiple
 * of copies, copy k's values at k * n_values / copies); input i (of the n set so far, all
 * of them) feeds copy copy_of_input[i]. Default: one copy; at most 255. -1 on bad input. */
int spinn_emu_set_copies(spinn_emu_t *emu, uint32_t copies, const uint32_t *copy_of_input, uint32_t n);
/* Stream n_samples through the board with at most n_slots samples in flight.
 * x: n_samples x input n_values int16; y: n_samples x output n_values. live:
 * per sample, the copies that carry one (the first live[i]; NULL: all): the
 * other copies' inputs send nothing, the sample is complete when the live
 * copies' values are in, and the other copies' values in y are 0. When
 * the network goes quiet with samples outstanding, every core's lost-sample
 * timeout fires (spinn_slots.h); a sample whose outputs arrive as markers, or
 * never arrive (a stopped core), is lost: lost[i] = 1 and its row of y is 0.
 * lost may be NULL: a lost sample is then an error. Returns 0, 1 when cancelled
 * (spinn_emu_cancel: no more samples start, those in flight drain away, the
 * board is ready for the next run) or -1 (then spinn_emu_error() says why). */
int spinn_emu_run(spinn_emu_t *emu, const int16_t *x, uint32_t n_samples, int16_t *y, uint32_t n_slots,
                  uint8_t *lost, const uint8_t *live);
/* From another thread while spinn_emu_run runs: ask it to stop (cancel = 1), or
 * clear the request before a run (0); the samples of the current run done so far. */
void spinn_emu_cancel(spinn_emu_t *emu, int cancel);
uint32_t spinn_emu_progress(const spinn_emu_t *emu);

/* Fault injection: the router drops the nth packet routed from now (0 = the
 * next); several may be pending (-1 beyond SPINN_EMU_MAX_DROPS); UINT64_MAX
 * clears them. A stopped core takes no more packets. */
#define SPINN_EMU_MAX_DROPS 64u
int spinn_emu_drop_packet(spinn_emu_t *emu, uint64_t nth);
int spinn_emu_stop_core(spinn_emu_t *emu, uint32_t core, int stopped);
/* packets routed, dropped by the fault, lost at stopped cores (3 words) */
void spinn_emu_fault_counts(const spinn_emu_t *emu, uint64_t *out);
/* Packets the host injected (runs) since the counters were last reset. */
uint64_t spinn_emu_injected(const spinn_emu_t *emu);
/* A core's lost-sample counters (spinn_slots_t, 4 words). */
int spinn_emu_core_slots(const spinn_emu_t *emu, uint32_t core, uint32_t *out);

/* Raw streaming, for the board double: packets reaching the gatherer core
 * (chip, p) are captured as they are instead of decoded. inject puts one
 * packet on a chip's router; drain routes until none is in flight, writing
 * (key, payload, marker) triples into out (at most cap) and returning how many
 * reached the gatherer (or -1); release fires every core's lost timeout. */
int spinn_emu_set_output_raw(spinn_emu_t *emu, uint32_t chip, uint32_t p);
int spinn_emu_inject(spinn_emu_t *emu, uint32_t chip, uint32_t key, uint32_t payload, uint32_t marker);
int64_t spinn_emu_drain(spinn_emu_t *emu, uint32_t *out, uint32_t cap);
uint32_t spinn_emu_release(spinn_emu_t *emu);

/* The live IO codec the host side of a real board uses (inputs and output
 * configured, no cores needed): encode the packets of one sample of `live`
 * copies (the first ones; >= copies: all) in slot (keys, payloads, input index;
 * at most cap; returns how many) and decode one
 * output packet into bufs (SPINN_MAX_SLOTS x output n_values), counts and lost
 * per slot (returns the slot, SPINN_MAX_SLOTS for values not ours, or -1). */
int64_t spinn_emu_encode(const spinn_emu_t *emu, const int16_t *x, uint32_t slot, uint32_t live, uint32_t *keys,
                         uint32_t *payloads, uint8_t *input, uint32_t cap);
int32_t spinn_emu_decode(const spinn_emu_t *emu, uint32_t key, uint32_t payload, uint32_t marker, uint32_t n_slots,
                         int16_t *bufs, uint32_t *counts, uint8_t *lost);
/* The key bit a core ORs into its lost-value markers (the config header's lost_bit;
 * 0: markers go without payload). */
int spinn_emu_set_lost_bit(spinn_emu_t *emu, uint32_t core, uint32_t lost_bit);
const char *spinn_emu_error(const spinn_emu_t *emu);
/* Kernel counters of a core (spinn_counters_t, 9 words). */
int spinn_emu_core_counters(const spinn_emu_t *emu, uint32_t core, uint32_t *out);
/* Test hook: hand one packet straight to a kernel core (receive, then compute
 * the slot it returns, as the binding does) and capture what it sends, not
 * routing it: sent gets (key, payload) pairs, at most cap. Returns the number
 * of packets sent, or -1 (bad core, send error, or more than cap). */
int32_t spinn_emu_core_packet(spinn_emu_t *emu, uint32_t core, uint32_t key, uint32_t payload, uint32_t *sent,
                              uint32_t cap);
/* Packets routed per chip (n_chips) and sent per link (n_chips * 6). */
void spinn_emu_router_counters(const spinn_emu_t *emu, uint64_t *per_chip, uint64_t *per_link);
void spinn_emu_reset_counters(spinn_emu_t *emu);

/* ---- timed emulation (emulator/timing.h says what is modelled) ---- */
/* Cost of a core's work, ps per unit (spinn_emu_set_core_cost). */
#define SPINN_COST_FIQ 0u        /* per packet in: the FIQ handler */
#define SPINN_COST_EVENT 1u      /* per packet in that finds the core idle: the user event */
#define SPINN_COST_RECEIVE 2u    /* per packet in: drain and the kernel's receive */
#define SPINN_COST_MAC 3u        /* per multiply-accumulate the kernel counts */
#define SPINN_COST_BLOCK 4u      /* per int32 block spilled */
#define SPINN_COST_OUTPUT 5u     /* per output value */
#define SPINN_COST_PACKET_OUT 6u /* per packet sent */
#define SPINN_COST_COMPUTE 7u    /* per compute call */
#define SPINN_COST_START 8u      /* per packet in on the general receive path (counters.rx_general): its extra */
#define SPINN_COST_LOOKUP 9u     /* per packet in whose entry was looked up (counters.rx_lookups): its extra */
#define SPINN_COST_SCAN 10u      /* per entry such a lookup compared (counters.rx_scanned) */
#define SPINN_COST_SEND_GAP 11u  /* the least time between two packets it sends (machine/send_gaps.py) */
#define SPINN_COST_SEND_PHASE 12u /* its wait at its first send after being idle */
#define SPINN_COST_WORDS 13u
/* Timing parameters (spinn_emu_set_timing), picoseconds unless said. */
#define SPINN_TM_ON 0u
#define SPINN_TM_HOP_PS 1u             /* a router's latency */
#define SPINN_TM_ROUTER_PS 2u          /* a router's time per packet */
#define SPINN_TM_WAIT_PS 3u            /* longest wait at a blocked router output before a drop */
#define SPINN_TM_LINK_PS_PER_BIT 4u    /* chip-to-chip link */
#define SPINN_TM_HOST_IN_PS_PER_BYTE 5u
#define SPINN_TM_HOST_OUT_PS_PER_BYTE 6u
#define SPINN_TM_IN_MSG_OVERHEAD 7u    /* bytes of an input message besides its events */
#define SPINN_TM_OUT_MSG_OVERHEAD 8u   /* bytes of an output message besides its events */
#define SPINN_TM_EVENTS_PER_IN_MSG 9u  /* key+payload events per input message */
#define SPINN_TM_EVENTS_PER_OUT_MSG 10u /* events the gatherer buffers before it flushes */
#define SPINN_TM_TICK_PS 11u           /* the gatherer's timer tick (it flushes on each) */
#define SPINN_TM_LPG_PS 12u            /* the gatherer's time per packet */
#define SPINN_TM_IN_CORE_PS 13u        /* the input source core's time per packet sent */
#define SPINN_TM_BITS_PAYLOAD 14u      /* bits of a packet with payload on a link */
#define SPINN_TM_BITS_NO_PAYLOAD 15u
#define SPINN_TM_LOST_TIMEOUT_PS 16u   /* the binding's lost-sample timeout */
#define SPINN_TM_BOARD_PS_PER_BIT 17u  /* a board-to-board (FPGA) serial link, shared by a board edge's links */
#define SPINN_TM_BOARD_LATENCY_PS 18u  /* a board-to-board crossing's latency beyond the chip link */
#define SPINN_TM_POLL_PS 19u           /* the drain's wait for a next packet before it ends */
#define SPINN_TM_PARAMS 20u
/* Timing on (params[SPINN_TM_ON] != 0) or off for the next runs; -1 on bad input. */
int spinn_emu_set_timing(spinn_emu_t *emu, const uint64_t *params, uint32_t n_params);
int spinn_emu_set_core_cost(spinn_emu_t *emu, uint32_t core, const uint64_t *cost, uint32_t n_words);
/* Where the next timed run writes each sample's first-byte-sent and
 * result-received times (ps from the run's start); NULL: nowhere. */
void spinn_emu_set_sample_times(spinn_emu_t *emu, uint64_t *t_start, uint64_t *t_done);
/* The last timed run (SPINN_TIMING_WORDS words: makespan (the last result at the
 * host), host-in busy, host-out busy, gatherer busy, input source cores' busy,
 * packets late at cores, ring overflows, packets late at links, packets late at the
 * gatherer, messages in, messages out, horizon (when the last resource fell idle: a
 * core may still work through packets it does not need after the last result),
 * partly received samples a core would have released as lost (a gap longer than the
 * lost-sample timeout between two of their packets), bytes the host sent (EIEIO
 * messages with their headers)). */
#define SPINN_TIMING_WORDS 14u
void spinn_emu_timing(const spinn_emu_t *emu, uint64_t *out);
/* A core's busy ps, packets late at its FIQ, ring overflows, samples it would time out (4 words). */
int spinn_emu_core_timing(const spinn_emu_t *emu, uint32_t core, uint64_t *out);
/* Per chip router busy ps (n_chips), per link busy ps and late packets (n_chips * 6 each). */
void spinn_emu_fabric_timing(const spinn_emu_t *emu, uint64_t *router_busy, uint64_t *link_busy,
                             uint64_t *link_late);
/* Links between boards (machines of several boards): serial[chip * 6 + link] is the
 * board-to-board serial link (0 .. n_serial - 1) that chip link crosses, or -1 for a link
 * within a board. Returns -1 on bad input or no memory. */
int spinn_emu_set_board_links(spinn_emu_t *emu, const int32_t *serial, uint32_t n_serial);
/* Per board-to-board serial link busy ps (n_serial words; nothing without board links). */
void spinn_emu_board_link_timing(const spinn_emu_t *emu, uint64_t *busy);
/* Host-in streams: the host sends each board's inputs through that board's Ethernet, each
 * stream paced on its own. host[i] (< SPINN_TM_MAX_HOSTS) is the stream of live input i
 * (n of them, all the inputs set so far; default 0 for every input). -1 on bad input. */
#define SPINN_TM_MAX_HOSTS 8u
int spinn_emu_set_input_hosts(spinn_emu_t *emu, const uint32_t *host, uint32_t n);
/* Per host-in stream busy ps (SPINN_TM_MAX_HOSTS words). The totals' host-in busy
 * (spinn_emu_timing word 1) is the busiest stream's. */
void spinn_emu_host_in_timing(const spinn_emu_t *emu, uint64_t *busy);

#endif /* SPINN_EMULATOR_H */
