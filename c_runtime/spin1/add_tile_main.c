/*
 * add_tile.aplx: the add tile kernel (kernels/add_tile.c) on a SpiNNaker core.
 * Event wiring and start-up are in spin1_binding.h.
 */
#include "spin1_binding.h"
#include "spinn_tensor.h"

SPINN_KERNEL_MAIN(add_tile)
