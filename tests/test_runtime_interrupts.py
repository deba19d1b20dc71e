"""Stop signals: held around a frame's outputs and delivered after them; SIGTERM handled like Ctrl-C."""
import os
import signal

import pytest

from lunarseg.runtime import interrupts
from lunarseg.runtime.progress import Progress


def test_a_signal_held_during_the_block_is_delivered_when_it_ends():
    finished = False
    with pytest.raises(KeyboardInterrupt):
        with interrupts.held():
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # bytecodes at which an unheld signal would have been raised
                pass
            finished = True
    assert finished


def test_sigterm_raises_terminated_with_exit_143_and_the_previous_handler_comes_back():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(interrupts.Terminated) as caught:
        with interrupts.sigterm_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                pass
    assert interrupts.exit_status(caught.value) == (143, "terminated")
    assert interrupts.exit_status(KeyboardInterrupt()) == (130, "interrupted")
    assert signal.getsignal(signal.SIGTERM) is before


class _Tty:
    def __init__(self):
        self.text = ""

    def isatty(self):
        return True

    def write(self, s):
        self.text += s

    def flush(self):
        pass


def test_progress_shows_no_rate_until_it_means_something():
    tty = _Tty()
    bar = Progress(17, desc="segment", unit="frame", stream=tty)
    bar.update(failed=1)  # one frame that failed at once
    assert "1/17 - frame/s eta -" in tty.text
