/*
 * dense_reduce.aplx: the dense reduce kernel (kernels/dense_reduce.c) on a SpiNNaker core.
 * Event wiring and start-up are in spin1_binding.h.
 */
#include "spin1_binding.h"

SPINN_KERNEL_MAIN(dense_reduce)
