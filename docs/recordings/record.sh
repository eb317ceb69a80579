#!/usr/bin/env bash
# Terminal recordings (script(1), a real pty: progress bars show, Ctrl-C is a real ^C typed
# into the terminal) of long_run.py and too_big.py; escape codes cleaned, each tqdm redraw
# on its own line.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-../../.venv/bin/python}
clean() { sed -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' -e 's/\r/\n/g' "$1" | grep -v '^\s*$' > "$2"; rm -f "$1"; }
TTY="stty cols 100 rows 30;"  # script's pty has no size when its own stdin is not a terminal
# Ctrl-C (byte 0x03 on the terminal) 12 s in: the build takes a few seconds, the run ~27 s.
(sleep 12; printf '\003'; sleep 5) | script -q -e -c "$TTY $PY long_run.py" ctrl_c.raw || true
clean ctrl_c.raw ctrl_c.txt
script -q -e -c "$TTY time $PY too_big.py" too_big.raw
clean too_big.raw too_big.txt
