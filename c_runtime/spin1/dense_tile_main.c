/*
 * dense_tile.aplx: the dense tile kernel (kernels/dense_tile.c) on a SpiNNaker core.
 * Event wiring and start-up are in spin1_binding.h.
 */
#include "spin1_binding.h"

SPINN_KERNEL_MAIN(dense_tile)
