/*
 * Fixed-point helpers shared by every kernel. Portable C99, freestanding, no
 * floating point and no division: these run on the ARM968 (ARMv5TE) as well
 * as on the host emulator, and must give bit-identical results on both.
 * tvm_spinn/quantization/fixed_point.py implements the same arithmetic in numpy.
 */
#ifndef SPINN_FIXED_H
#define SPINN_FIXED_H

#include <stdint.h>

/* Largest and smallest int16 activation. */
#define SPINN_Q_MAX 32767
#define SPINN_Q_MIN (-32768)

/* Activation codes in the config region (plain integers: no enums cross the
 * ARM/host boundary because arm-none-eabi uses short enums). */
#define SPINN_ACT_NONE 0u
#define SPINN_ACT_RELU 1u
#define SPINN_ACT_TANH 2u
#define SPINN_ACT_SIGMOID 3u

/* tanh table: entry i is round(32767 * tanh(i / 64)), i = 0..512, packed two
 * int16 per word; inputs are Q3.12 (1.0 == 4096), linear interpolation over
 * 64 input steps. */
#define SPINN_TANH_ENTRIES 513u
#define SPINN_TANH_STEP_BITS 6u
#define SPINN_TANH_WORDS ((SPINN_TANH_ENTRIES + 1u) >> 1)

/* Send one multicast packet with payload; returns 0 on success. The board
 * binding wraps spin1_send_mc_packet, the emulator its packet queue. */
typedef int (*spinn_send_fn)(void *ctx, uint32_t key, uint32_t payload);

static inline int32_t spinn_sat16(int64_t v) {
    if (v > SPINN_Q_MAX) return SPINN_Q_MAX;
    if (v < SPINN_Q_MIN) return SPINN_Q_MIN;
    return (int32_t)v;
}

static inline int32_t spinn_sat32(int64_t v) {
    if (v > INT32_MAX) return INT32_MAX;
    if (v < INT32_MIN) return INT32_MIN;
    return (int32_t)v;
}

/* Round half up, then arithmetic shift right (gcc's >> on signed values is
 * arithmetic on both targets; numpy's is too). shift may be 0. */
static inline int64_t spinn_round_shift(int64_t v, uint32_t shift) {
    if (shift == 0u) return v;
    return (v + ((int64_t)1 << (shift - 1u))) >> shift;
}

/* int16 saturation that counts the values it clipped (a tensor beyond its calibrated
 * range: the host reports these per tensor, never hiding them). */
static inline int32_t spinn_sat16_count(int64_t v, uint32_t *saturated) {
    if (v > SPINN_Q_MAX || v < SPINN_Q_MIN) ++*saturated;
    return spinn_sat16(v);
}

/* acc * multiplier / 2^shift, rounded and saturated to int16 (counted in *saturated).
 * The compiler proved |acc * multiplier| < 2^62 for every reachable acc. */
static inline int32_t spinn_requantize(int64_t acc, int32_t multiplier, uint32_t shift, uint32_t *saturated) {
    return spinn_sat16_count(spinn_round_shift(acc * (int64_t)multiplier, shift), saturated);
}

static inline int32_t spinn_lo16(uint32_t w) { return (int32_t)(int16_t)(uint16_t)(w & 0xFFFFu); }
static inline int32_t spinn_hi16(uint32_t w) { return (int32_t)(int16_t)(uint16_t)(w >> 16); }
static inline uint32_t spinn_pack16(int32_t lo, int32_t hi) {
    return ((uint32_t)(uint16_t)lo) | ((uint32_t)(uint16_t)hi << 16);
}

static inline int32_t spinn_table16(const uint32_t *table, uint32_t i) {
    uint32_t w = table[i >> 1];
    return (i & 1u) ? spinn_hi16(w) : spinn_lo16(w);
}

/* tanh of a Q3.12 input, result in Q0.15 (32767 == 1.0). */
static inline int32_t spinn_tanh_q(const uint32_t *table, int32_t x) {
    uint32_t t = (x < 0) ? (uint32_t)(-x) : (uint32_t)x;
    uint32_t i, f;
    int32_t a, b, y;
    if (t > 32767u) t = 32767u;
    i = t >> SPINN_TANH_STEP_BITS;
    f = t & ((1u << SPINN_TANH_STEP_BITS) - 1u);
    a = spinn_table16(table, i);
    b = spinn_table16(table, i + 1u);
    y = a + (((b - a) * (int32_t)f + (1 << (SPINN_TANH_STEP_BITS - 1u))) >> SPINN_TANH_STEP_BITS);
    return (x < 0) ? -y : y;
}

/* Apply the layer's activation to a requantised int16 value. For tanh and
 * sigmoid the requantisation targeted Q3.12 of x (tanh) or of x/2 (sigmoid,
 * since sigmoid(x) = (1 + tanh(x/2)) / 2). */
static inline int32_t spinn_activate(uint32_t activation, const uint32_t *table, int32_t v) {
    switch (activation) {
    case SPINN_ACT_RELU:
        return v > 0 ? v : 0;
    case SPINN_ACT_TANH:
        return spinn_tanh_q(table, v);
    case SPINN_ACT_SIGMOID:
        return (spinn_tanh_q(table, v) + 32768) >> 1;
    default:
        return v;
    }
}

static inline int64_t spinn_read_i64(const uint32_t *words) {
    return (int64_t)(((uint64_t)words[1] << 32) | (uint64_t)words[0]);
}

#endif /* SPINN_FIXED_H */
