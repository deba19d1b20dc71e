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


def test_a_forked_worker_that_inherited_the_handler_is_terminated_quietly():
    import multiprocessing
    import time

    with interrupts.sigterm_as_interrupt():
        ctx = multiprocessing.get_context("fork")
        worker = ctx.Process(target=time.sleep, args=(30,))
        worker.start()
        time.sleep(0.2)
        worker.terminate()  # SIGTERM, as Pool.terminate() sends it
        worker.join(10)
    assert worker.exitcode == -signal.SIGTERM  # died of the signal, no Terminated traceback in the worker


def test_a_stopped_command_that_keeps_its_work_says_how_to_continue(tmp_path, monkeypatch, capsys):
    import lunarseg.demo as demo
    from lunarseg.cli import main

    def stopped(*a, **k):
        raise interrupts.Terminated()

    monkeypatch.setattr(demo, "run_demo", stopped)
    assert main(["demo", "--quick", "--out", str(tmp_path / "d")]) == 143
    assert capsys.readouterr().err.strip() == ("lunarseg demo: terminated; run the same command again to continue: "
                                               "finished stages are kept")
