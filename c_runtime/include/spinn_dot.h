/* The dense and conv tiles' two-row dot products (ARMv5TE assembly, C elsewhere).
 * Portable C99, freestanding. */
#ifndef SPINN_DOT_H
#define SPINN_DOT_H

#include <stdint.h>

#include "spinn_fixed.h"

/*
 * Two rows (wa, wb) times the slot's inputs x, n words (int16 pairs) each. x is
 * loaded once for both rows, and the two rows' accumulators alternate, so no
 * multiply waits for the one before it.
 *   dot2_i32: one int32 sum per row (a block: the compiler proved no block can
 *             overflow for any int16 input, nor any part of one); returned as
 *             row a in the low word, row b in the high word.
 *   dot2_i64: exact int64 sums (out[0], out[1]), for blocks of one pair.
 * On ARMv5TE (ARM state) both are the hand-scheduled assembly below: LDM of the
 * words, SMLAxy (1 cycle) or SMLALxy (2 cycles) per MAC, no interlock; about
 * 2.0 and 3.0 cycles per MAC. Elsewhere (the host, the emulator) the same sums
 * in C; the results are identical (exact integer sums). The products are symmetric:
 * the conv tile calls them with two input windows as (wa, wb) and one channel's
 * weights as x. The symbols are local (no .global): every kernel that includes
 * this header has its own copy, however many kernels one image links.
 */
#if defined(__arm__) && defined(__ARM_FEATURE_DSP) && !defined(__thumb__)
uint64_t spinn_dense_dot2_i32(const uint32_t *wa, const uint32_t *wb, const spinn_pair_t *x, uint32_t n);
void spinn_dense_dot2_i64(const uint32_t *wa, const uint32_t *wb, const spinn_pair_t *x, uint32_t n, int64_t *out);
/* SPINN_DOT_NO_I64: a kernel that needs only the int32 blocks (its code budget) */
__asm__(
    "    .text\n"
    "    .arm\n"
    "    .align 2\n"
    /* r0 wa, r1 wb, r2 x, r3 n >= 1; sums in r12 (a), lr (b) */
    "    .macro SPINN_DOT2_I32_STEP2\n"
    "    ldmia r2!, {r4, r5}\n"
    "    ldmia r0!, {r6, r7}\n"
    "    ldmia r1!, {r8, r9}\n"
    "    smlabb r12, r4, r6, r12\n"
    "    smlabb lr, r4, r8, lr\n"
    "    smlatt r12, r4, r6, r12\n"
    "    smlatt lr, r4, r8, lr\n"
    "    smlabb r12, r5, r7, r12\n"
    "    smlabb lr, r5, r9, lr\n"
    "    smlatt r12, r5, r7, r12\n"
    "    smlatt lr, r5, r9, lr\n"
    "    .endm\n"
    "    .type spinn_dense_dot2_i32, %function\n"
    "spinn_dense_dot2_i32:\n"
    "    push {r4-r9, lr}\n"
    "    mov r12, #0\n"
    "    mov lr, #0\n"
    "    movs r3, r3, lsr #1\n" /* C: an odd word first */
    "    bcc 1f\n"
    "    ldr r4, [r2], #4\n"
    "    ldr r6, [r0], #4\n"
    "    ldr r8, [r1], #4\n"
    "    smulbb r12, r4, r6\n"
    "    smulbb lr, r4, r8\n"
    "    smlatt r12, r4, r6, r12\n"
    "    smlatt lr, r4, r8, lr\n"
    "1:  movs r3, r3, lsr #1\n" /* C: a pair of words, then groups of four */
    "    bcc 2f\n"
    "    SPINN_DOT2_I32_STEP2\n"
    "2:  cmp r3, #0\n"
    "    beq 4f\n"
    "3:  SPINN_DOT2_I32_STEP2\n"
    "    SPINN_DOT2_I32_STEP2\n"
    "    subs r3, r3, #1\n"
    "    bne 3b\n"
    "4:  mov r0, r12\n"
    "    mov r1, lr\n"
    "    pop {r4-r9, pc}\n"
    "    .size spinn_dense_dot2_i32, .-spinn_dense_dot2_i32\n"
#if !defined(SPINN_DOT_NO_I64)
    /* r0 wa, r1 wb, r2 x, r3 n >= 1, [sp] out; sums in r4:r5 (a), r6:r7 (b) */
    "    .macro SPINN_DOT2_I64_STEP\n"
    "    ldr r8, [r2], #4\n"
    "    ldr r9, [r0], #4\n"
    "    ldr r10, [r1], #4\n"
    "    smlalbb r4, r5, r8, r9\n"
    "    smlalbb r6, r7, r8, r10\n"
    "    smlaltt r4, r5, r8, r9\n"
    "    smlaltt r6, r7, r8, r10\n"
    "    .endm\n"
    "    .type spinn_dense_dot2_i64, %function\n"
    "spinn_dense_dot2_i64:\n"
    "    ldr r12, [sp]\n"
    "    push {r4-r10, lr}\n"
    "    mov r4, #0\n"
    "    mov r5, #0\n"
    "    mov r6, #0\n"
    "    mov r7, #0\n"
    "    ands lr, r3, #3\n" /* n mod 4 words first, then groups of four */
    "    beq 2f\n"
    "1:  SPINN_DOT2_I64_STEP\n"
    "    subs lr, lr, #1\n"
    "    bne 1b\n"
    "2:  movs r3, r3, lsr #2\n"
    "    beq 4f\n"
    "3:  SPINN_DOT2_I64_STEP\n"
    "    SPINN_DOT2_I64_STEP\n"
    "    SPINN_DOT2_I64_STEP\n"
    "    SPINN_DOT2_I64_STEP\n"
    "    subs r3, r3, #1\n"
    "    bne 3b\n"
    "4:  stmia r12, {r4-r7}\n"
    "    pop {r4-r10, pc}\n"
    "    .size spinn_dense_dot2_i64, .-spinn_dense_dot2_i64\n"
#endif
    );
#elif defined(__x86_64__) && defined(__GNUC__) && !defined(SPINN_DOT_PORTABLE)
/* The host build (the emulator): the same exact sums with x86's PMADDWD, which
 * multiplies int16 pairs and adds each pair's two products into an int32 lane,
 * as one SMLABB + SMLATT step. One lane's pair sum overflows int32 only when
 * both products are (-32768)^2: the lane then reads INT32_MIN, a value no other
 * pair sum takes (their least is 2 * -32768 * 32767), so those lanes are
 * counted and get their 2^32 back. The lanes are widened to int64, so the sums
 * are exact for any input, whatever the blocks. AVX2 when the CPU has it
 * (checked at run time: the library is built once and may run elsewhere),
 * else SSE2, which every x86-64 has. */
#include <immintrin.h>

static inline void spinn_dot2_tail(const uint32_t *wa, const uint32_t *wb, const spinn_pair_t *x, uint32_t j,
                                   uint32_t n, int64_t *a, int64_t *b) {
    for (; j < n; j++) {
        *a += (int64_t)(spinn_lo16(wa[j]) * spinn_lo16(x[j].w)) + (int64_t)(spinn_hi16(wa[j]) * spinn_hi16(x[j].w));
        *b += (int64_t)(spinn_lo16(wb[j]) * spinn_lo16(x[j].w)) + (int64_t)(spinn_hi16(wb[j]) * spinn_hi16(x[j].w));
    }
}

static inline int64_t spinn_sum64x2(__m128i v) {
    return _mm_cvtsi128_si64(v) + _mm_cvtsi128_si64(_mm_unpackhi_epi64(v, v));
}

/* lanes reading INT32_MIN: the count of 2^32s the pair sums lost (subtracting the -1s) */
#define SPINN_DOT2_LOST(wrap, p, minv) wrap = _mm_sub_epi32(wrap, _mm_cmpeq_epi32(p, minv))

static inline void spinn_dot2_sse2(const uint32_t *wa, const uint32_t *wb, const spinn_pair_t *x, uint32_t n,
                                   int64_t *out) {
    const __m128i minv = _mm_set1_epi32(INT32_MIN);
    __m128i sa = _mm_setzero_si128(), sb = sa, wrap_a = sa, wrap_b = sa;
    int64_t a, b;
    uint32_t j, k;
    for (j = 0; j + 4u <= n; j += 4u) {
        __m128i xv = _mm_loadu_si128((const __m128i *)(const void *)(x + j));
        __m128i pa = _mm_madd_epi16(_mm_loadu_si128((const __m128i *)(const void *)(wa + j)), xv);
        __m128i pb = _mm_madd_epi16(_mm_loadu_si128((const __m128i *)(const void *)(wb + j)), xv);
        __m128i ga = _mm_srai_epi32(pa, 31), gb = _mm_srai_epi32(pb, 31); /* sign words: widen to int64 */
        SPINN_DOT2_LOST(wrap_a, pa, minv);
        SPINN_DOT2_LOST(wrap_b, pb, minv);
        sa = _mm_add_epi64(sa, _mm_add_epi64(_mm_unpacklo_epi32(pa, ga), _mm_unpackhi_epi32(pa, ga)));
        sb = _mm_add_epi64(sb, _mm_add_epi64(_mm_unpacklo_epi32(pb, gb), _mm_unpackhi_epi32(pb, gb)));
    }
    a = spinn_sum64x2(sa);
    b = spinn_sum64x2(sb);
    for (k = 0; k < 4u; k++) { /* each lane counted at most n / 4 times */
        a += (int64_t)((uint64_t)(uint32_t)_mm_cvtsi128_si32(wrap_a) << 32);
        b += (int64_t)((uint64_t)(uint32_t)_mm_cvtsi128_si32(wrap_b) << 32);
        wrap_a = _mm_srli_si128(wrap_a, 4);
        wrap_b = _mm_srli_si128(wrap_b, 4);
    }
    spinn_dot2_tail(wa, wb, x, j, n, &a, &b);
    out[0] = a;
    out[1] = b;
}

__attribute__((target("avx2"))) static inline void spinn_dot2_avx2(const uint32_t *wa, const uint32_t *wb,
                                                                   const spinn_pair_t *x, uint32_t n,
                                                                   int64_t *out) {
    const __m256i minv = _mm256_set1_epi32(INT32_MIN);
    __m256i sa = _mm256_setzero_si256(), sb = sa, wrap_a = sa, wrap_b = sa;
    __m128i s2a, s2b;
    int64_t a, b;
    uint32_t j, k, lanes_a[8], lanes_b[8];
    for (j = 0; j + 8u <= n; j += 8u) {
        __m256i xv = _mm256_loadu_si256((const __m256i *)(const void *)(x + j));
        __m256i pa = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(const void *)(wa + j)), xv);
        __m256i pb = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(const void *)(wb + j)), xv);
        wrap_a = _mm256_sub_epi32(wrap_a, _mm256_cmpeq_epi32(pa, minv));
        wrap_b = _mm256_sub_epi32(wrap_b, _mm256_cmpeq_epi32(pb, minv));
        sa = _mm256_add_epi64(sa, _mm256_cvtepi32_epi64(_mm256_castsi256_si128(pa)));
        sa = _mm256_add_epi64(sa, _mm256_cvtepi32_epi64(_mm256_extracti128_si256(pa, 1)));
        sb = _mm256_add_epi64(sb, _mm256_cvtepi32_epi64(_mm256_castsi256_si128(pb)));
        sb = _mm256_add_epi64(sb, _mm256_cvtepi32_epi64(_mm256_extracti128_si256(pb, 1)));
    }
    s2a = _mm_add_epi64(_mm256_castsi256_si128(sa), _mm256_extracti128_si256(sa, 1));
    s2b = _mm_add_epi64(_mm256_castsi256_si128(sb), _mm256_extracti128_si256(sb, 1));
    a = spinn_sum64x2(s2a);
    b = spinn_sum64x2(s2b);
    _mm256_storeu_si256((__m256i *)(void *)lanes_a, wrap_a);
    _mm256_storeu_si256((__m256i *)(void *)lanes_b, wrap_b);
    for (k = 0; k < 8u; k++) { /* each lane counted at most n / 8 times */
        a += (int64_t)((uint64_t)lanes_a[k] << 32);
        b += (int64_t)((uint64_t)lanes_b[k] << 32);
    }
    spinn_dot2_tail(wa, wb, x, j, n, &a, &b);
    out[0] = a;
    out[1] = b;
}

/* out = (wa . x, wb . x), exact int64 sums of n words of int16 pairs, any input. */
static inline void spinn_dot2_exact(const uint32_t *wa, const uint32_t *wb, const spinn_pair_t *x, uint32_t n,
                                    int64_t *out) {
    if (n >= 8u && __builtin_cpu_supports("avx2"))
        spinn_dot2_avx2(wa, wb, x, n, out);
    else
        spinn_dot2_sse2(wa, wb, x, n, out);
}

/* A proved block's sums fit int32: the exact sums, truncated, are the SMLAxy sums. */
static inline uint64_t spinn_dense_dot2_i32(const uint32_t *wa, const uint32_t *wb, const spinn_pair_t *x,
                                            uint32_t n) {
    int64_t s[2];
    spinn_dot2_exact(wa, wb, x, n, s);
    return (uint64_t)(uint32_t)s[0] | ((uint64_t)(uint32_t)s[1] << 32);
}

static inline void spinn_dense_dot2_i64(const uint32_t *wa, const uint32_t *wb, const spinn_pair_t *x, uint32_t n,
                                        int64_t *out) {
    spinn_dot2_exact(wa, wb, x, n, out);
}
#define SPINN_DOT2_EXACT 1 /* spinn_dot2_exact: exact int64 sums of any blocks */
#else
static inline uint64_t spinn_dense_dot2_i32(const uint32_t *wa, const uint32_t *wb, const spinn_pair_t *x, uint32_t n) {
    int32_t a = 0, b = 0;
    uint32_t j;
    for (j = 0; j < n; j++) {
        a += spinn_lo16(wa[j]) * spinn_lo16(x[j].w) + spinn_hi16(wa[j]) * spinn_hi16(x[j].w);
        b += spinn_lo16(wb[j]) * spinn_lo16(x[j].w) + spinn_hi16(wb[j]) * spinn_hi16(x[j].w);
    }
    return (uint64_t)(uint32_t)a | ((uint64_t)(uint32_t)b << 32);
}

static inline void spinn_dense_dot2_i64(const uint32_t *wa, const uint32_t *wb, const spinn_pair_t *x, uint32_t n,
                                 int64_t *out) {
    int64_t a = 0, b = 0;
    uint32_t j;
    for (j = 0; j < n; j++) {
        a += (int64_t)(spinn_lo16(wa[j]) * spinn_lo16(x[j].w)) + (int64_t)(spinn_hi16(wa[j]) * spinn_hi16(x[j].w));
        b += (int64_t)(spinn_lo16(wb[j]) * spinn_lo16(x[j].w)) + (int64_t)(spinn_hi16(wb[j]) * spinn_hi16(x[j].w));
    }
    out[0] = a;
    out[1] = b;
}
#endif

#endif /* SPINN_DOT_H */
