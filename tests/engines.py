"""Skip marks for tests of one engine: a test that needs an engine that is not installed is skipped
with a reason, by the runtime's own rule of what is installed (`runtime.backends.available`)."""
import pytest

from lunarseg.runtime.backends import BACKENDS, available


def needs(engine: str):
    """Skip unless `engine` (a runtime.backends.BACKENDS key) is installed."""
    return pytest.mark.skipif(not available(engine),
                              reason=f"the {engine} engine is not installed ({BACKENDS[engine].module} is not "
                                     f"importable)")


needs_openvino = needs("openvino")


def on_engine(*values, engine: str):
    """A parametrize case that runs on `engine`, skipped with a reason when it is not installed."""
    return pytest.param(*values, marks=needs(engine), id="-".join(map(str, values)))
