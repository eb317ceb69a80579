/*
 * dense_reduce.aplx: the dense reduce kernel (kernels/dense_reduce.c) on a
 * SpiNNaker core. Event wiring and start-up are in spin1_binding.h.
 */
#include "spin1_binding.h"

/* spin1 callbacks take no context: the core's whole state lives here. */
static struct {
    spinn_binding_t b;
    spinn_dense_reduce_t k;
} core;

static void on_mcpl(uint key, uint payload) {
    int32_t slot = spinn_dense_reduce_receive(&core.k, key, payload);
    if (slot >= 0) spinn_binding_slot_ready(&core.b, (uint32_t)slot);
}

static void on_mc(uint key, uint unused) {
    (void)key;
    (void)unused;
    spinn_binding_no_payload(&core.b);
}

/* arg0 is the slot that triggered the event; then whatever completed since. */
static void on_user(uint slot, uint unused) {
    uint32_t s = slot;
    (void)unused;
    do {
        if (spinn_dense_reduce_compute(&core.k, s, spinn_binding_send, &core.b) != 0) core.b.compute_failed++;
    } while (spinn_binding_next_slot(&core.b, &s));
}

void c_main(void) {
    uint32_t n_words, ws_bytes;
    const uint32_t *cfg = spinn_binding_setup(&core.b, &n_words);
    ws_bytes = spinn_dense_reduce_workspace(cfg, n_words);
    if (ws_bytes == 0u) rt_error(RTE_SWERR, SPINN_ERR_KERNEL, cfg[0]);
    if (spinn_dense_reduce_init(&core.k, cfg, n_words, spinn_binding_alloc(ws_bytes)) != 0)
        rt_error(RTE_SWERR, SPINN_ERR_KERNEL, cfg[0]);
    spinn_binding_run(on_mc, on_mcpl, on_user);
}
