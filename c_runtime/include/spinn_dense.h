/*
 * Dense layer kernels: one tile of y = act(W x + b) per core.
 *
 * A tile holds rows x cols of W (int16). In "final" mode (the layer has a single
 * column tile) it adds the bias, requantises, applies the activation and sends
 * int16 outputs, two per packet. In "partial" mode it sends each row's partial
 * sum (int32 after a proven-safe rounding shift) to the layer's reducer, which
 * adds the partial sums of all column tiles and finishes the layer.
 *
 * Config region (region 1) layout, uint32 words; see tvm_spinn/machine/builder.py and machine/configs/dense.py:
 *   tile:   kind, mode, rows, cols, block, out_key, out_slot_shift, activation,
 *           partial_shift, n_slots, n_rx, rx[n_rx], weights[rows][cols_padded/2],
 *           (final) per row {bias_lo, bias_hi, multiplier, shift}, (tanh/sigmoid) table
 *   reduce: kind, rows, n_sources, out_key, out_slot_shift, activation,
 *           partial_shift, n_slots, n_rx, rx[n_rx], per row {bias_lo, bias_hi,
 *           multiplier, shift}, (tanh/sigmoid) table
 */
#ifndef SPINN_DENSE_H
#define SPINN_DENSE_H

#include <stdint.h>

#include "spinn_fixed.h"

#define SPINN_KIND_DENSE_TILE 0x5D01u
#define SPINN_KIND_DENSE_REDUCE 0x5D02u
#define SPINN_TILE_FINAL 0u
#define SPINN_TILE_PARTIAL 1u
#define SPINN_MAX_SLOTS 16u
#define SPINN_MAX_DIM 0xFFFFu /* rows or columns of one tile */
#define SPINN_MAX_RX 0xFFFFu  /* receive entries of one core */

/* Work done, for the cycle model (counted by the kernel itself). */
typedef struct {
    uint32_t packets_in;
    uint32_t packets_out;
    uint32_t computes;     /* completed samples */
    uint32_t outputs;      /* values requantised or partial sums produced */
    uint32_t blocks;       /* int32 -> int64 accumulator spills (0 when accumulating in int64) */
    uint32_t macs_lo;      /* multiply-accumulates, 64-bit split in two words */
    uint32_t macs_hi;
    uint32_t dropped;      /* packets that matched no receive entry */
    uint32_t saturated;    /* output values clipped to int16 (beyond the calibrated range) */
    uint32_t rx_general;   /* packets in on a tensor kernel's general receive path (not a remembered
                            * row's: spinn_tensor.h spinn_tensor_receive_rc), which costs more */
    uint32_t rx_lookups;   /* packets in whose receive entry a tensor kernel looked up (not the last
                            * packet's row's: spinn_tensor_receive_other_rows), the general ones included */
    uint32_t rx_scanned;   /* receive entries those lookups compared the key with */
} spinn_counters_t;

typedef struct {
    uint32_t mode, rows, cols, words_per_row, block_words, blocks_per_row;
    uint32_t out_key, out_slot_shift, activation, partial_shift, n_slots;
    uint32_t n_rx;
    const uint32_t *rx;       /* receive table */
    const uint32_t *weights;  /* rows x words_per_row, int16 pairs */
    const uint32_t *row_params; /* per row: bias lo, bias hi, multiplier, shift */
    const uint32_t *table;    /* tanh table or 0 */
    int16_t *inputs;          /* n_slots x 2*words_per_row, workspace */
    uint32_t *counts;         /* per slot values received */
    int32_t rx_slot;          /* slot of the last packet received, or -1 */
    const uint32_t *rx_last;  /* the receive entry the last packet matched, or 0 */
    uint32_t rx_cache;        /* 1: no key matches two entries, so rx_last may be tried first */
    spinn_counters_t counters;
} spinn_dense_tile_t;

typedef struct {
    uint32_t rows, n_sources, out_key, out_slot_shift, activation, partial_shift, n_slots;
    uint32_t n_rx;
    const uint32_t *rx;
    const uint32_t *row_params;
    const uint32_t *table;
    int64_t *sums;            /* n_slots x rows, workspace */
    uint32_t *counts;         /* per slot partial sums received */
    int32_t rx_slot;          /* slot of the last packet received, or -1 */
    spinn_counters_t counters;
} spinn_dense_reduce_t;

/*
 * Contracts of every kernel:
 * - the workspace must be 8-byte aligned (int64 sums; ARMv5TE's LDRD/STRD need it);
 * - a slot is reused only after the samples it held have left the board: the host
 *   keeps at most n_slots samples in flight (compute reads a slot while the packet
 *   handler may already fill the others);
 * - each value arrives once: a duplicate packet over-counts and its slot never completes;
 * - if a send fails mid-compute, compute returns the error; the binding counts it
 *   and the sample is lost downstream (the host reports it as never completed).
 */

/* Workspace bytes the kernel needs for this config (0 if the config is bad). */
uint32_t spinn_dense_tile_workspace(const uint32_t *cfg, uint32_t n_words);
/* Parse the config (kept by reference: it must stay valid); returns 0 on success. */
int spinn_dense_tile_init(spinn_dense_tile_t *s, const uint32_t *cfg, uint32_t n_words, void *workspace);
/* One multicast packet arrived; returns the slot it completed, or -1. */
int32_t spinn_dense_tile_receive(spinn_dense_tile_t *s, uint32_t key, uint32_t payload);
/* Compute a completed slot and send the results. Returns 0, or the send error. */
int spinn_dense_tile_compute(spinn_dense_tile_t *s, uint32_t slot, spinn_send_fn send, void *ctx);
/* Lost samples (spinn_slots.h): the slot of the last packet received (-1: none
 * of ours), whether a slot holds part of a sample, and forcing it complete
 * (returns the slot to compute, or -1 if it holds nothing). */
int32_t spinn_dense_tile_rx_slot(const spinn_dense_tile_t *s);
int spinn_dense_tile_busy(const spinn_dense_tile_t *s, uint32_t slot);
int32_t spinn_dense_tile_release(spinn_dense_tile_t *s, uint32_t slot);

uint32_t spinn_dense_reduce_workspace(const uint32_t *cfg, uint32_t n_words);
int spinn_dense_reduce_init(spinn_dense_reduce_t *s, const uint32_t *cfg, uint32_t n_words, void *workspace);
int32_t spinn_dense_reduce_receive(spinn_dense_reduce_t *s, uint32_t key, uint32_t payload);
int spinn_dense_reduce_compute(spinn_dense_reduce_t *s, uint32_t slot, spinn_send_fn send, void *ctx);
int32_t spinn_dense_reduce_rx_slot(const spinn_dense_reduce_t *s);
int spinn_dense_reduce_busy(const spinn_dense_reduce_t *s, uint32_t slot);
int32_t spinn_dense_reduce_release(spinn_dense_reduce_t *s, uint32_t slot);

#endif /* SPINN_DENSE_H */
