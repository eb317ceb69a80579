"""Progress of long work (tqdm bars on stderr) and native calls that Ctrl-C can stop.

A bar appears only once its work has lasted :data:`DELAY_S` seconds, and by default only
when stderr is a terminal. ``TVM_SPINN_PROGRESS=0`` (or off / false / no) turns bars off,
``=1`` (on / true / yes) shows them on any stderr (a log file, CI); silencing the
``tvm_spinn`` logger below warnings (``logging.getLogger("tvm_spinn").setLevel(logging.ERROR)``)
turns them off too.
"""
from __future__ import annotations

import logging
import os
import threading
from contextlib import contextmanager
from typing import Callable, Iterator, Optional, Sequence, TypeVar

from tqdm import tqdm

PROGRESS_ENV = "TVM_SPINN_PROGRESS"
DELAY_S = 1.0  # work shorter than this shows no bar
_ON, _OFF = ("1", "on", "true", "yes"), ("0", "off", "false", "no")
T = TypeVar("T")
_local = threading.local()  # the build stages of the build running in this thread


def _disable() -> Optional[bool]:
    """tqdm's ``disable``: True (off), False (on) or None (on when stderr is a terminal).

    Raises ValueError for a TVM_SPINN_PROGRESS value that is none of the forms."""
    if not logging.getLogger("tvm_spinn").isEnabledFor(logging.WARNING):
        return True
    value = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if value in _OFF:
        return True
    if value in _ON:
        return False
    if value == "":
        return None
    raise ValueError(f"{PROGRESS_ENV}={os.environ[PROGRESS_ENV]!r}: use one of {', '.join(_ON + _OFF)} "
                     "(progress bars on or off), or leave it unset (bars on a terminal)")


def bar(total: Optional[int] = None, desc: str = "", unit: str = "it") -> tqdm:
    """A tqdm bar on stderr, shown after DELAY_S seconds of work (see the module doc)."""
    return tqdm(total=total, desc=desc, unit=unit, delay=DELAY_S, leave=False, disable=_disable(),
                dynamic_ncols=True)


class Stages:
    """One bar over the named stages of a build; a ticker keeps it moving through a long
    stage (the toolchain's mapping is one call) so that it appears after DELAY_S."""

    def __init__(self, names: Sequence[str], desc: str) -> None:
        self.names = list(names)
        self._bar = bar(len(self.names), desc, "stage")
        self._done = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="tvm_spinn-progress", daemon=True)
        if not self._bar.disable:
            self._ticker.start()

    def _tick(self) -> None:
        while not self._done.wait(0.5):
            self._bar.update(0)  # redraws (elapsed time) once the delay has passed

    def start(self, name: str, detail: str = "") -> None:
        """Stage ``name`` begins (the stages before it are done); detail: what it works on."""
        self._bar.n = self.names.index(name)
        self._bar.set_postfix_str(f"{name}{': ' + detail if detail else ''}", refresh=False)
        self._bar.update(0)

    def close(self) -> None:
        self._done.set()
        self._bar.close()


@contextmanager
def build_stages(names: Sequence[str], desc: str = "tvm_spinn build") -> Iterator[Stages]:
    """The stages of the build running in this thread (see :func:`stage`)."""
    stages, previous = Stages(names, desc), getattr(_local, "stages", None)
    _local.stages = stages
    try:
        yield stages
    finally:
        _local.stages = previous
        stages.close()


def stage(name: str, detail: str = "") -> None:
    """Mark stage ``name`` of the current build as begun (no build running: nothing)."""
    stages = getattr(_local, "stages", None)
    if stages is not None and name in stages.names:
        stages.start(name, detail)


def interruptible(work: Callable[[], T], cancel: Callable[[], None], done: Optional[Callable[[], int]] = None,
                  total: Optional[int] = None, desc: str = "", unit: str = "sample") -> T:
    """``work()``, a native call that releases the GIL, run in a helper thread while this
    thread waits, shows ``done()`` of ``total`` on a bar, and stays responsive to Ctrl-C: on
    KeyboardInterrupt it calls ``cancel()``, waits for ``work`` to return (it must stop
    promptly once cancelled) and raises KeyboardInterrupt. Returns what ``work`` returns;
    raises what it raises."""
    outcome: dict = {}
    finished = threading.Event()  # not Thread.join: an interrupted join may mark a running thread stopped

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # handed to the waiting thread
            outcome["error"] = exc
        finally:
            finished.set()

    with bar(total, desc, unit) as shown:
        threading.Thread(target=run, name="tvm_spinn-run", daemon=True).start()
        try:
            while not finished.wait(0.1):  # a timed wait: this thread handles its signals between waits
                if done is not None and not shown.disable:
                    shown.update(done() - shown.n)
        except KeyboardInterrupt:
            cancel()
            while not finished.is_set():  # never leave the board to a native call still running
                try:
                    finished.wait(0.1)
                except KeyboardInterrupt:
                    continue
            raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
