"""Stop signals: SIGTERM (systemd, `docker stop`, kill) is handled like Ctrl-C, and a block can hold
both until it ends, so that a frame's outputs are written whole or not at all."""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Iterator

STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: the same clean-up as Ctrl-C, its own exit status."""


_OWNER = {"pid": None}  # the process that installed the handler


def _raise_terminated(signum, frame) -> None:
    if os.getpid() != _OWNER["pid"]:  # a forked worker (multiprocessing) inherited the handler: die as usual
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    raise Terminated()


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM raises Terminated (a KeyboardInterrupt) in the main thread."""
    if not _in_main_thread():
        yield
        return
    _OWNER["pid"] = os.getpid()
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then raise the first one that arrived again, to
    the handler that was there before. Python-level handlers, not a signal mask: a mask holds only
    the calling thread's signals, and the engines' and BLAS's threads would take them instead."""
    if not _in_main_thread():  # signal handlers can only be set there
        yield
        return
    arrived: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: arrived.append(signum)) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if arrived:
            signal.raise_signal(arrived[0])


def exit_status(exc: KeyboardInterrupt) -> tuple[int, str]:
    """(exit status, word) for a stop: 143 'terminated' for SIGTERM, 130 'interrupted' otherwise."""
    return (EXIT_TERMINATED, "terminated") if isinstance(exc, Terminated) else (EXIT_INTERRUPTED, "interrupted")
