#!/usr/bin/env bash
# Terminal recordings (script(1), a real pty: progress bars show, Ctrl-C is a real ^C typed
# into the terminal): the command line (cli.sh, cli_ctrl_c.sh), long_run.py and too_big.py.
# clean.py removes escape codes and keeps one tqdm redraw per second of each bar.
# Run from anywhere: bash docs/recordings/record.sh (PYTHON=... for another interpreter).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-../../.venv/bin/python}
PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"  # absolute, the venv's link kept
export PATH="$(dirname "$PY"):$PATH"  # `python` in the sessions is this one
clean() { "$PY" clean.py "$1" "$2"; rm -f "$1"; }
TTY="stty cols 100 rows 30;"  # script's pty has no size when its own stdin is not a terminal
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cp make_models.py "$WORK/"
script -q -e -c "$TTY bash cli.sh $WORK" cli.raw
clean cli.raw cli.txt
# Ctrl-C (byte 0x03 on the terminal) 15 s in: python starts in ~2 s, the run takes ~30 s.
(sleep 15; printf '\003'; sleep 25) | script -q -e -c "$TTY bash cli_ctrl_c.sh $WORK" cli_ctrl_c.raw || true
clean cli_ctrl_c.raw cli_ctrl_c.txt
# Ctrl-C 12 s in: the build takes a few seconds, the run ~27 s.
(sleep 12; printf '\003'; sleep 5) | script -q -e -c "$TTY python long_run.py" ctrl_c.raw || true
clean ctrl_c.raw ctrl_c.txt
script -q -e -c "$TTY time python too_big.py" too_big.raw
clean too_big.raw too_big.txt
