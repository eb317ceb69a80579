/*
 * pool_tile.aplx: the pool tile kernel (kernels/pool_tile.c) on a SpiNNaker core.
 * Event wiring and start-up are in spin1_binding.h.
 */
#include "spin1_binding.h"
#include "spinn_tensor.h"

SPINN_KERNEL_MAIN(pool_tile)
