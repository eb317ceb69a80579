/*
 * Fixed-point helpers shared by every kernel. Portable C99, freestanding, no
 * floating point and no division: these run on the ARM968 (ARMv5TE) as well
 * as on the host emulator, and must give bit-identical results on both.
 * tvm_spinn/quantization/fixed_point.py implements the same arithmetic in numpy.
 */
#ifndef SPINN_FIXED_H
#define SPINN_FIXED_H

#include <stdint.h>

/* Start-up code (config checks and layout, run once): optimised for size, not speed, where
 * the compiler can (GCC's cold attribute), to leave ITCM to the code every packet runs. */
#if defined(__GNUC__)
#define SPINN_COLD __attribute__((cold))
#else
#define SPINN_COLD
#endif

/* Largest and smallest int16 activation. */
#define SPINN_Q_MAX 32767
#define SPINN_Q_MIN (-32768)

/* Activation codes in the config region (plain integers: no enums cross the
 * ARM/host boundary because arm-none-eabi uses short enums). */
#define SPINN_ACT_NONE 0u
#define SPINN_ACT_RELU 1u
#define SPINN_ACT_TANH 2u
#define SPINN_ACT_SIGMOID 3u
#define SPINN_ACT_CLIP 4u  /* table {lo, hi}: int16 bounds in output units */
#define SPINN_ACT_LEAKY 5u /* table {multiplier, shift}: negative values times multiplier / 2^shift */

/* tanh table: entry i is round(32767 * tanh(i / 64)), i = 0..512, packed two
 * int16 per word; inputs are Q3.12 (1.0 == 4096), linear interpolation over
 * 64 input steps. */
#define SPINN_TANH_ENTRIES 513u
#define SPINN_TANH_STEP_BITS 6u
#define SPINN_TANH_WORDS ((SPINN_TANH_ENTRIES + 1u) >> 1)

/* Send one multicast packet with payload; returns 0 on success. The board
 * binding wraps spin1_send_mc_packet, the emulator its packet queue. */
typedef int (*spinn_send_fn)(void *ctx, uint32_t key, uint32_t payload);

/* Lost-value markers (spinn_slots.h) travel in the key, so that they survive any hop,
 * the live packet gatherer's included: a kernel's key block holds twice its slots, and
 * the marker of slot s carries slot field s + span (span: n_slots rounded up to a power
 * of two). A receiver's decoded slot is flagged SPINN_SLOT_LOST for a marker. */
#define SPINN_SLOT_LOST 0x10000

static inline uint32_t spinn_slot_span(uint32_t n_slots) {
    uint32_t span = 1u;
    while (span < n_slots) span <<= 1;
    return span;
}

/* *s: a key's slot field. 0: a value's slot; 1: a marker's (*s becomes its slot);
 * -1: outside both. */
static inline int spinn_slot_decode(uint32_t *s, uint32_t n_slots) {
    uint32_t span;
    if (*s < n_slots) return 0;
    span = spinn_slot_span(n_slots);
    if (*s >= span && *s - span < n_slots) {
        *s -= span;
        return 1;
    }
    return -1;
}

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

static inline int32_t spinn_lo16(uint32_t w) { return (int32_t)(int16_t)(uint16_t)(w & 0xFFFFu); }
static inline int32_t spinn_hi16(uint32_t w) { return (int32_t)(int16_t)(uint16_t)(w >> 16); }

/* Two int16 values read as one word (the low address in the low half: SpiNNaker's ARM
 * and the hosts we build for are little-endian). Reading an int16 buffer through this
 * union is allowed by C99's aliasing rule (6.5p7: a union type that includes int16_t),
 * and reading .w after .h were written is defined by gcc (and C99 TC3). It lets the dot
 * products load a pair with one LDR and multiply with SMLABB / SMLATT. */
typedef union {
    uint32_t w;
    int16_t h[2];
} spinn_pair_t;
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

/* Words of an activation's table in a config: the tanh table (tanh, sigmoid),
 * {lo, hi} (clip) or {multiplier, shift} (leaky relu); none otherwise. */
static inline uint32_t spinn_act_words(uint32_t activation) {
    if (activation == SPINN_ACT_TANH || activation == SPINN_ACT_SIGMOID) return SPINN_TANH_WORDS;
    return activation == SPINN_ACT_CLIP || activation == SPINN_ACT_LEAKY ? 2u : 0u;
}

/* Whether an activation code and its table (spinn_act_words words) are valid. */
static inline int spinn_act_ok(uint32_t activation, const uint32_t *table) {
    if (activation > SPINN_ACT_LEAKY) return 0;
    if (activation == SPINN_ACT_CLIP)
        return (int32_t)table[0] >= SPINN_Q_MIN && (int32_t)table[0] <= (int32_t)table[1] &&
               (int32_t)table[1] <= SPINN_Q_MAX;
    if (activation == SPINN_ACT_LEAKY)
        return (int32_t)table[0] >= -32768 && (int32_t)table[0] <= 32767 && table[1] <= 31u;
    return 1;
}

/* Apply the layer's activation to a requantised int16 value. For tanh and
 * sigmoid the requantisation targeted Q3.12 of x (tanh) or of x/2 (sigmoid,
 * since sigmoid(x) = (1 + tanh(x/2)) / 2). Clip and leaky relu are applied
 * before saturation, by spinn_finish. */
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

/* The end of every output value: round_shift(acc * multiplier, shift), then the
 * activation, saturated to int16 (counted in *saturated). Clip (bounds inside int16)
 * and leaky relu act on the unsaturated value, so that a value the activation brings
 * back into range is neither wrong nor counted; tanh and sigmoid saturate their
 * Q3.12 input at |x| = 8, where they are within 1 LSB of +-1, and relu zeroes any
 * negative value: not counted either. */
/* spinn_finish's activation and saturation of a requantised value v that fits int32
 * (the same results as the int64 code in spinn_finish for such v, in 32-bit arithmetic). */
static inline int32_t spinn_finish32(uint32_t activation, const uint32_t *table, int32_t v, uint32_t *saturated) {
    if (activation == SPINN_ACT_CLIP) {
        if (v < (int32_t)table[0]) return (int32_t)table[0];
        return v > (int32_t)table[1] ? (int32_t)table[1] : v;
    }
    if (activation == SPINN_ACT_LEAKY) {
        if (v < 0) return spinn_sat16_count(spinn_round_shift((int64_t)v * (int32_t)table[0], table[1]), saturated);
        if (v > SPINN_Q_MAX) {
            ++*saturated;
            return SPINN_Q_MAX;
        }
        return v;
    }
    if (activation == SPINN_ACT_RELU) {
        if (v <= 0) return 0; /* exact, however negative */
        if (v > SPINN_Q_MAX) {
            ++*saturated;
            return SPINN_Q_MAX;
        }
        return v;
    }
    if (v > SPINN_Q_MAX || v < SPINN_Q_MIN) {
        int32_t c = v > SPINN_Q_MAX ? SPINN_Q_MAX : SPINN_Q_MIN;
        if (activation == SPINN_ACT_TANH || activation == SPINN_ACT_SIGMOID) /* |x| >= 8: within 1 LSB of +-1 */
            return spinn_activate(activation, table, c);
        ++*saturated;
        return c;
    }
    return spinn_activate(activation, table, v);
}

/* sat32(round_shift(acc * multiplier, shift)) in 32-bit steps after the product
 * (acc * multiplier wraps as in spinn_finish's int64 arithmetic; the encoder keeps it
 * within +-2^62). p = h:l (high and low words):
 *   shift >= 33: the low word cannot reach bit shift - 1 >= 32, so the result is
 *     (h + 2^(k-1)) >> k (k = shift - 32): t / 2 rounded up, t = h >> (k - 1), within int32;
 *   1 <= shift <= 32: p + 2^(shift-1) as words, shifted; saturated when the bits above
 *     the result's bit 31 are not its sign;
 *   shift 0: p saturated. */
static inline int32_t spinn_requant(int64_t acc, int32_t multiplier, uint32_t shift) {
    uint64_t p = (uint64_t)acc * (uint64_t)(int64_t)multiplier;
    uint32_t l = (uint32_t)p, h = (uint32_t)(p >> 32);
    if (shift >= 33u) {
        int32_t t = (int32_t)h >> (shift - 33u);
        return (t >> 1) + (t & 1);
    }
    if (shift != 0u) {
        uint32_t l2 = l + (1u << (shift - 1u));
        h += l2 < l; /* the carry */
        l = ((l2 >> 1) >> (shift - 1u)) | (h << (32u - shift));
        h = (uint32_t)((int32_t)h >> (shift - 1u)); /* the bits above the result's bit 31 */
    }
    if ((int32_t)h != ((int32_t)l >> 31)) return (int32_t)h < 0 ? INT32_MIN : INT32_MAX;
    return (int32_t)l;
}

/* The end of every output value: round_shift(acc * multiplier, shift), then the
 * activation, saturated to int16 (counted in *saturated). Clip (bounds inside int16)
 * and leaky relu act on the unsaturated value, so that a value the activation brings
 * back into range is neither wrong nor counted; tanh and sigmoid saturate their
 * Q3.12 input at |x| = 8, where they are within 1 LSB of +-1, and relu zeroes any
 * negative value: not counted either. Every activation gives the same result for v
 * as for v saturated to int32 (clip's bounds and the int16 saturation lie inside it,
 * and leaky relu saturates a negative v to int32 first), so the value is computed
 * by spinn_requant and finished in 32-bit arithmetic. */
static inline int32_t spinn_finish(uint32_t activation, const uint32_t *table, int64_t acc, int32_t multiplier,
                                   uint32_t shift, uint32_t *saturated) {
    return spinn_finish32(activation, table, spinn_requant(acc, multiplier, shift), saturated);
}

static inline int64_t spinn_read_i64(const uint32_t *words) {
    return (int64_t)(((uint64_t)words[1] << 32) | (uint64_t)words[0]);
}

#endif /* SPINN_FIXED_H */
