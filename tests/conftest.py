"""Shared test setup: make the tests folder importable (tests reuse each other's tiny data makers)."""
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))

import pytest

# Module-scoped fixtures that train, fine-tune or convert a model with TensorFlow, by test module: a test
# that requests one is `slow`, which `make test-fast` (pytest -m "not slow") leaves out. Tests that train
# inline carry @pytest.mark.slow themselves.
SLOW_FIXTURES = {
    "test_bench": {"pipeline"},
    "test_compress": {"run", "pqat", "clustered"},
    "test_export": {"run_dir", "exported"},
    "test_export_sizes": {"sized_export"},
    "test_import": {"zoo", "synth", "imported_run"},
    "test_distributed": {"tiny_data"},
}


def pytest_collection_modifyitems(items):
    """Mark `slow` every test that requests a model-making fixture of SLOW_FIXTURES."""
    for item in items:
        module = getattr(item, "module", None)
        if SLOW_FIXTURES.get(getattr(module, "__name__", ""), set()) & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)
