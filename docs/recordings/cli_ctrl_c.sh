#!/usr/bin/env bash
# The session of cli_ctrl_c.txt, run by record.sh inside script(1): a long run stopped by a
# Ctrl-C typed into the terminal (record.sh types it), then the same module runs again.
cd "$1"
show() { printf '$ %s\n' "$1"; eval "$1"; printf '[exit %s]\n' "$?"; }  # the command as typed, its output, its exit code
show "python -c \"import numpy as np; print(np.load('big.npy', mmap_mode='r').shape)\""
show "python -m tvm_spinn run lenet5.so big.npy -o big_y.npy"
show "python -m tvm_spinn run lenet5.so x.npy -o y_again.npy"
show "python -c \"import numpy as np; print('same outputs as before:', np.array_equal(np.load('y.npy'), np.load('y_again.npy')))\""
