/*
 * Test driver: runs dense kernels on recorded packet streams and prints every
 * packet they send, so the same cases can be run on the host and on an
 * emulated ARMv5TE (qemu-arm -cpu arm946) and compared bit for bit
 * (tools/qemu_bitexact.py). Hosted C99; not part of any kernel build.
 *
 * Input file: whitespace-separated unsigned 32-bit integers in hex,
 * any number of cases, each
 *     kind n_words cfg[n_words] n_packets (key payload)[n_packets]
 * kind: 1 dense tile, 2 dense reduce. A slot completed by a packet is computed
 * at once, as the spin1 binding does. Output per case: "case i ws=<bytes>
 * init=<rc>", then "slot s" and "key payload" (hex) for every compute, then
 * the kernel counters.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "spinn_dense.h"

typedef union {
    spinn_dense_tile_t tile;
    spinn_dense_reduce_t reduce;
} kernel_t;

static int read_u32(FILE *f, uint32_t *v) {
    unsigned long x;
    if (fscanf(f, "%lx", &x) == 1) { /* hex: unsigned on 32-bit longs too */
        *v = (uint32_t)x;
        return 0;
    }
    return -1;
}

static int print_send(void *ctx, uint32_t key, uint32_t payload) {
    (void)ctx;
    printf("%08" PRIx32 " %08" PRIx32 "\n", key, payload);
    return 0;
}

static void print_counters(const spinn_counters_t *c) {
    printf("counters in=%" PRIu32 " out=%" PRIu32 " computes=%" PRIu32 " outputs=%" PRIu32
           " blocks=%" PRIu32 " macs=%" PRIu32 ":%" PRIu32 " dropped=%" PRIu32 "\n",
           c->packets_in, c->packets_out, c->computes, c->outputs, c->blocks, c->macs_hi, c->macs_lo,
           c->dropped);
}

int main(int argc, char **argv) {
    FILE *f;
    uint32_t kind, n_words, n_packets, i, case_no = 0;
    if (argc != 2 || !(f = fopen(argv[1], "r"))) {
        fprintf(stderr, "usage: kernel_driver CASES_FILE\n");
        return 2;
    }
    while (read_u32(f, &kind) == 0) {
        uint32_t *cfg, ws_bytes;
        void *ws;
        kernel_t k;
        int rc;
        if (read_u32(f, &n_words) != 0) return 3;
        cfg = malloc(4u * (n_words ? n_words : 1u));
        for (i = 0; i < n_words; i++)
            if (read_u32(f, &cfg[i]) != 0) return 3;
        ws_bytes = kind == 1u ? spinn_dense_tile_workspace(cfg, n_words) : spinn_dense_reduce_workspace(cfg, n_words);
        ws = malloc(ws_bytes ? ws_bytes : 8u); /* malloc aligns to 8, as the binding does */
        rc = kind == 1u ? spinn_dense_tile_init(&k.tile, cfg, n_words, ws)
                        : spinn_dense_reduce_init(&k.reduce, cfg, n_words, ws);
        printf("case %" PRIu32 " ws=%" PRIu32 " init=%d\n", case_no++, ws_bytes, rc);
        if (read_u32(f, &n_packets) != 0) return 3;
        for (i = 0; i < n_packets; i++) {
            uint32_t key, payload;
            int32_t slot = -1;
            if (read_u32(f, &key) != 0 || read_u32(f, &payload) != 0) return 3;
            if (rc != 0) continue;
            slot = kind == 1u ? spinn_dense_tile_receive(&k.tile, key, payload)
                              : spinn_dense_reduce_receive(&k.reduce, key, payload);
            if (slot < 0) continue;
            printf("slot %" PRId32 "\n", slot);
            if ((kind == 1u ? spinn_dense_tile_compute(&k.tile, (uint32_t)slot, print_send, NULL)
                            : spinn_dense_reduce_compute(&k.reduce, (uint32_t)slot, print_send, NULL)) != 0)
                printf("compute failed\n");
        }
        if (rc == 0) print_counters(kind == 1u ? &k.tile.counters : &k.reduce.counters);
        free(ws);
        free(cfg);
    }
    fclose(f);
    return 0;
}
