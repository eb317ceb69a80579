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
