/*
 * Receive tables: where the values carried by an incoming multicast packet go.
 * Keys are allocated by the toolchain per source vertex as power-of-two
 * aligned blocks; within a source's block the key is
 *     base | slot << slot_shift | index
 * where slot is the sample's buffer (samples in flight) and index the pair of
 * int16 values (or the int32 partial sum) the payload carries.
 * Entry layout (SPINN_RX_WORDS uint32 words):
 *     key, mask, slot_shift | packing << SPINN_RX_PACK_SHIFT, dest_offset (int32), n_values
 * packing (8-bit input, the host link's bytes halved): SPINN_PACK_INT16, two
 * int16 per payload, index the pair; SPINN_PACK_INT8 / SPINN_PACK_UINT8, four
 * 8-bit values per payload (byte j is value 4 * index + j), sign- or
 * zero-extended to int16 as they are stored, so everything after the receive
 * sees int16 as before. Only the live inputs send 8-bit values.
 */
#ifndef SPINN_RX_H
#define SPINN_RX_H

#include <stdint.h>

#define SPINN_RX_WORDS 5u
#define SPINN_RX_KEY 0u
#define SPINN_RX_MASK 1u
#define SPINN_RX_SLOT_SHIFT 2u
#define SPINN_RX_DEST_OFFSET 3u
#define SPINN_RX_N_VALUES 4u

#define SPINN_RX_PACK_SHIFT 8u   /* the packing's bits in the slot_shift word */
#define SPINN_RX_SHIFT_MASK 0xFFu
#define SPINN_PACK_INT16 0u      /* two int16 per payload */
#define SPINN_PACK_INT8 1u       /* four int8 per payload, sign-extended */
#define SPINN_PACK_UINT8 2u      /* four uint8 per payload, zero-extended */

/* The packing of an entry (spinn_rx.h or spinn_tensor.h: the slot_shift word). */
static inline uint32_t spinn_rx_packing(uint32_t slot_shift_word) { return slot_shift_word >> SPINN_RX_PACK_SHIFT; }

/* A packing word's sign bit of one 8-bit value: 0x80 (int8), 0 (uint8). */
static inline uint32_t spinn_pack8_sign(uint32_t packing) { return packing == SPINN_PACK_INT8 ? 0x80u : 0u; }

/* Byte j of an 8-bit packed payload as int16 (sign: spinn_pack8_sign). */
static inline int16_t spinn_unpack8(uint32_t payload, uint32_t j, uint32_t sign) {
    uint32_t b = (payload >> (j << 3)) & 0xFFu;
    return (int16_t)((int32_t)(b ^ sign) - (int32_t)sign);
}

/* Entries a kernel can use safely: slot fields that shift within a word, int16
 * pairs only (every kernel fed by other kernels). */
static inline int spinn_rx_valid(const uint32_t *table, uint32_t n_entries) {
    uint32_t i;
    for (i = 0; i < n_entries; i++)
        if (table[i * SPINN_RX_WORDS + SPINN_RX_SLOT_SHIFT] > 24u) return 0;
    return 1;
}

/* The same, also taking 8-bit packed entries (a kernel that stores values with
 * spinn_rx_store_pair: a first-layer dense tile, the output gatherer). */
static inline int spinn_rx_valid_packed(const uint32_t *table, uint32_t n_entries) {
    uint32_t i;
    for (i = 0; i < n_entries; i++) {
        uint32_t w = table[i * SPINN_RX_WORDS + SPINN_RX_SLOT_SHIFT];
        if ((w & SPINN_RX_SHIFT_MASK) > 24u || spinn_rx_packing(w) > SPINN_PACK_UINT8) return 0;
    }
    return 1;
}

/* Index of the first entry of a table of `stride`-word entries starting with
 * (key, mask) that matches, or -1. Tables hold one entry per source (or source
 * row): a handful, so a linear scan is cheapest. */
static inline int32_t spinn_match_entry(const uint32_t *table, uint32_t n_entries, uint32_t stride, uint32_t key) {
    uint32_t i;
    for (i = 0; i < n_entries; i++, table += stride)
        if ((key & table[1]) == table[0]) return (int32_t)i;
    return -1;
}

/* 1 if no key can match two of the entries (then the first match is the only
 * one, and a kernel may try the entry its last packet matched first); 0 if some
 * may, or the table is too long to check at start-up. */
static inline uint32_t spinn_match_disjoint(const uint32_t *table, uint32_t n_entries, uint32_t stride) {
    uint32_t i, j;
    if (n_entries > 256u) return 0;
    for (i = 0; i < n_entries; i++)
        for (j = i + 1u; j < n_entries; j++) {
            const uint32_t *a = table + i * stride, *b = table + j * stride;
            if (((a[0] ^ b[0]) & a[1] & b[1]) == 0u) return 0;
        }
    return 1;
}

static inline uint32_t spinn_rx_disjoint(const uint32_t *table, uint32_t n_entries) {
    return spinn_match_disjoint(table, n_entries, SPINN_RX_WORDS);
}

static inline int32_t spinn_rx_match(const uint32_t *table, uint32_t n_entries, uint32_t key) {
    return spinn_match_entry(table, n_entries, SPINN_RX_WORDS, key);
}

/* Store the int16 pair (or, packed, the four 8-bit values) carried by (key,
 * payload) into buf (one slot's values, n_dest long). Returns how many values
 * landed inside buf; *slot gets the sample slot, *lost 1 for a lost-value
 * marker (spinn_slot_decode). Values of the source outside [0, n_dest) are not
 * ours. The packing is checked once per packet, not per value. */
static inline uint32_t spinn_rx_store_pair(const uint32_t *entry, uint32_t key, uint32_t payload,
                                           int16_t *buf_base, uint32_t n_dest, uint32_t n_slots,
                                           uint32_t slot_stride, uint32_t *slot, uint32_t *lost) {
    uint32_t local = key & ~entry[SPINN_RX_MASK];
    uint32_t shift = entry[SPINN_RX_SLOT_SHIFT] & SPINN_RX_SHIFT_MASK;
    uint32_t packing = spinn_rx_packing(entry[SPINN_RX_SLOT_SHIFT]);
    uint32_t index = local & ((1u << shift) - 1u);
    uint32_t v = index << (packing ? 2u : 1u);
    int32_t pos = (int32_t)entry[SPINN_RX_DEST_OFFSET] + (int32_t)v;
    uint32_t stored = 0, j;
    int16_t *buf;
    int marker;
    *slot = local >> shift;
    marker = spinn_slot_decode(slot, n_slots);
    if (marker < 0) return 0;
    *lost = (uint32_t)marker;
    buf = buf_base + *slot * slot_stride;
    if (packing) {
        uint32_t sign = spinn_pack8_sign(packing);
        for (j = 0; j < 4u; j++, pos++, v++) {
            if (v < entry[SPINN_RX_N_VALUES] && pos >= 0 && (uint32_t)pos < n_dest) {
                buf[pos] = spinn_unpack8(payload, j, sign);
                stored++;
            }
        }
        return stored;
    }
    for (j = 0; j < 2u; j++, pos++, v++) {
        if (v < entry[SPINN_RX_N_VALUES] && pos >= 0 && (uint32_t)pos < n_dest) {
            buf[pos] = (int16_t)(j ? spinn_hi16(payload) : spinn_lo16(payload));
            stored++;
        }
    }
    return stored;
}

#endif /* SPINN_RX_H */
