"""Import TensorFlow once, quietly: TF 2.21 writes absl INFO lines to stderr before its logging is
configured (TF_CPP_MIN_LOG_LEVEL does not reach them), which buries the CLI's own output."""
from __future__ import annotations

import os
import sys


def import_tensorflow_quietly():
    """Import tensorflow with file descriptor 2 pointed at /dev/null; errors still raise normally."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        import tensorflow
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
    return tensorflow
