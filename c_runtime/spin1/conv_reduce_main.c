/*
 * conv_reduce.aplx: the conv reduce kernel (kernels/conv_reduce.c) on a SpiNNaker core.
 * Event wiring and start-up are in spin1_binding.h.
 */
#include "spin1_binding.h"
#include "spinn_tensor.h"

SPINN_KERNEL_MAIN(conv_reduce)
