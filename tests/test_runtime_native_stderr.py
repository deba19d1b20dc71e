"""Native chatter on fd 2 is dropped by prefix; every other line written meanwhile comes through."""
import os
import sys

from lunarseg.runtime.native_stderr import dropped_lines


def test_only_lines_with_the_given_prefixes_are_dropped(capfd):
    with dropped_lines(("INFO: Created",)):
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        os.write(2, b"ERROR: a real engine error\n")
        print("python's own line", file=sys.stderr)
    err = capfd.readouterr().err
    assert sorted(err.splitlines()) == ["ERROR: a real engine error", "python's own line"]
