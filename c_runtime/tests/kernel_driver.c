/*
 * Test driver: runs the kernels on recorded packet streams and prints every
 * packet they send, so the same cases can be run on the host and on an
 * emulated ARMv5TE (qemu-arm -cpu arm946) and compared bit for bit
 * (tools/qemu_bitexact.py). Hosted C99; not part of any kernel build.
 *
 * Input file: whitespace-separated unsigned 32-bit integers in hex,
 * any number of cases, each
 *     kind n_words cfg[n_words] n_packets (key payload)[n_packets]
 * kind: 1 dense tile, 2 dense reduce, 3 conv tile, 4 pool tile, 5 add tile,
 * 6 conv reduce. A slot returned by receive (a completed sample, or for the
 * tensor kernels a computable output row) is computed at once, as the spin1
 * binding does. Output per case: "case i ws=<bytes> init=<rc>", then "slot s"
 * and "key payload" (hex) for every compute, then the kernel counters.
 */
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "spinn_dense.h"
#include "spinn_tensor.h"

typedef union {
    spinn_dense_tile_t dense_tile;
    spinn_dense_reduce_t dense_reduce;
    spinn_conv_tile_t conv_tile;
    spinn_pool_tile_t pool_tile;
    spinn_add_tile_t add_tile;
    spinn_conv_reduce_t conv_reduce;
} kernel_t;

/* One kernel's functions on a kernel_t (typed wrappers: no casts of function pointers). */
typedef struct {
    uint32_t (*workspace)(const uint32_t *cfg, uint32_t n_words);
    int (*init)(kernel_t *k, const uint32_t *cfg, uint32_t n_words, void *ws);
    int32_t (*receive)(kernel_t *k, uint32_t key, uint32_t payload);
    int (*compute)(kernel_t *k, uint32_t slot, spinn_send_fn send, void *ctx);
    const spinn_counters_t *(*counters)(const kernel_t *k);
} kernel_api_t;

#define KERNEL_API(name)                                                                                    \
    static int name##_init(kernel_t *k, const uint32_t *cfg, uint32_t n_words, void *ws) {                \
        return spinn_##name##_init(&k->name, cfg, n_words, ws);                                            \
    }                                                                                                      \
    static int32_t name##_receive(kernel_t *k, uint32_t key, uint32_t payload) {                           \
        return spinn_##name##_receive(&k->name, key, payload);                                             \
    }                                                                                                      \
    static int name##_compute(kernel_t *k, uint32_t slot, spinn_send_fn send, void *ctx) {                \
        return spinn_##name##_compute(&k->name, slot, send, ctx);                                          \
    }                                                                                                      \
    static const spinn_counters_t *name##_counters(const kernel_t *k) { return &k->name.counters; }

KERNEL_API(dense_tile)
KERNEL_API(dense_reduce)
KERNEL_API(conv_tile)
KERNEL_API(pool_tile)
KERNEL_API(add_tile)
KERNEL_API(conv_reduce)

#define KERNEL_ENTRY(name) \
    { spinn_##name##_workspace, name##_init, name##_receive, name##_compute, name##_counters }

static const kernel_api_t KERNELS[] = {KERNEL_ENTRY(dense_tile), KERNEL_ENTRY(dense_reduce),
                                       KERNEL_ENTRY(conv_tile),  KERNEL_ENTRY(pool_tile),
                                       KERNEL_ENTRY(add_tile),   KERNEL_ENTRY(conv_reduce)};
#define N_KINDS (sizeof(KERNELS) / sizeof(KERNELS[0]))

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
           " blocks=%" PRIu32 " macs=%" PRIu32 ":%" PRIu32 " dropped=%" PRIu32 " saturated=%" PRIu32
           " rx_general=%" PRIu32 "\n",
           c->packets_in, c->packets_out, c->computes, c->outputs, c->blocks, c->macs_hi, c->macs_lo,
           c->dropped, c->saturated, c->rx_general);
}

int main(int argc, char **argv) {
    FILE *f;
    uint32_t kind, n_words, n_packets, i, case_no = 0;
    if (argc != 2 || !(f = fopen(argv[1], "r"))) {
        fprintf(stderr, "usage: kernel_driver CASES_FILE\n");
        return 2;
    }
    while (read_u32(f, &kind) == 0) {
        const kernel_api_t *api;
        uint32_t *cfg, ws_bytes;
        void *ws;
        kernel_t k;
        int rc;
        if (kind < 1u || kind > N_KINDS || read_u32(f, &n_words) != 0) return 3;
        api = &KERNELS[kind - 1u];
        cfg = malloc(4u * (n_words ? n_words : 1u));
        for (i = 0; i < n_words; i++)
            if (read_u32(f, &cfg[i]) != 0) return 3;
        ws_bytes = api->workspace(cfg, n_words);
        ws = malloc(ws_bytes ? ws_bytes : 8u); /* malloc aligns to 8, as the binding does */
        rc = api->init(&k, cfg, n_words, ws);
        printf("case %" PRIu32 " ws=%" PRIu32 " init=%d\n", case_no++, ws_bytes, rc);
        if (read_u32(f, &n_packets) != 0) return 3;
        for (i = 0; i < n_packets; i++) {
            uint32_t key, payload;
            int32_t slot = -1;
            if (read_u32(f, &key) != 0 || read_u32(f, &payload) != 0) return 3;
            if (rc != 0) continue;
            slot = api->receive(&k, key, payload);
            if (slot < 0) continue;
            printf("slot %" PRId32 "\n", slot);
            if (api->compute(&k, (uint32_t)slot, print_send, NULL) != 0) printf("compute failed\n");
        }
        if (rc == 0) print_counters(api->counters(&k));
        free(ws);
        free(cfg);
    }
    fclose(f);
    return 0;
}
