"""Native libraries' chatter on file descriptor 2, filtered: LiteRT prints
"INFO: Created TensorFlow Lite XNNPACK delegate for CPU." on every first model, whatever
TF_CPP_MIN_LOG_LEVEL says, and the command line promises one line per error on stderr."""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from typing import Iterator


@contextlib.contextmanager
def dropped_lines(prefixes: tuple[str, ...]) -> Iterator[None]:
    """Capture fd 2 during the block; afterwards write back every line that starts with none of
    `prefixes` (what Python itself wrote meanwhile included, in its order)."""
    try:
        capture = tempfile.TemporaryFile()
    except OSError:  # no writable temp folder (a read-only board): the chatter stays
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (a closed or replaced stderr): nothing to filter
        capture.close()
        yield
        return
    with capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(ValueError, OSError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().splitlines(keepends=True)
                    if not line.decode("utf-8", "replace").startswith(prefixes)]
            if kept:
                os.write(2, b"".join(kept))
