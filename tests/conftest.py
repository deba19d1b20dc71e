"""Shared test setup: make the tests folder importable (tests reuse each other's tiny data makers), the
`slow` marker, and running in parallel with pytest-xdist (`make test`: -n 2 --dist loadfile)."""
import contextlib
import functools
import json
import os
import sys
import tempfile

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


# ---- pytest-xdist ------------------------------------------------------------------------------------
# `--dist loadfile` keeps each file on one worker, so a module- or session-scoped fixture is built once,
# not once per worker. Files that share a session fixture run on the same worker too (SAME_WORKER), and
# the TensorFlow-built runtime test models (runtime_models.models) are built once for all workers.

# Files whose tests use a session fixture defined in another file: {file: the file that defines it}.
SAME_WORKER = {"test_export_sizes.py": "test_export.py"}  # run_dir: the trained 32 px model

# Rough cost of the heavy files in seconds (measured with 2 workers on 2 cores). A worker takes the
# costliest file left, so that the last files to run are short and both workers finish together. A file
# not listed (a new one) is taken before all of them: a heavy file started last would be the run's tail,
# while a light one started first costs nothing. A SAME_WORKER pair counts as one, under the file it joins.
COST_S = {
    "test_compress.py": 220, "test_demo.py": 130, "test_export.py": 120, "test_import.py": 80,
    "test_bench.py": 75, "test_platform_resolve.py": 50, "test_tracing.py": 50, "test_train.py": 40,
    "test_distributed.py": 30, "test_train_recipes.py": 12, "test_runtime_segmenter.py": 11,
    "test_runtime_model_errors.py": 10, "test_bundle.py": 7, "test_runtime_bench.py": 5,
    "test_model_opener.py": 5, "test_bench_tf_free.py": 4, "test_budget.py": 2, "test_synth.py": 2,
}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadfile`, with SAME_WORKER files together and the costliest files first (COST_S)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class CostliestFileFirst(LoadFileScheduling):
        def _split_scope(self, nodeid):
            path = super()._split_scope(nodeid)
            head, name = os.path.split(path)
            return os.path.join(head, SAME_WORKER[name]) if name in SAME_WORKER else path

        def _assign_work_unit(self, node):
            costliest = max(self.workqueue, key=lambda scope: COST_S.get(os.path.basename(scope), float("inf")))
            self.workqueue.move_to_end(costliest, last=False)
            super()._assign_work_unit(node)

    return CostliestFileFirst(config, log)


_RUN_TMP = {}  # "dir": this run's temporary folder, the parent of every xdist worker's basetemp


@pytest.fixture(scope="session", autouse=True)
def _run_tmp(tmp_path_factory):
    _RUN_TMP["dir"] = str(tmp_path_factory.getbasetemp().parent)


@contextlib.contextmanager
def _file_lock(path):
    """An exclusive lock on `path` across the workers (released when the file closes)."""
    import fcntl

    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _built_once_for_all_workers(build):
    """`build()` (the runtime test models: a TensorFlow subprocess) run by the first xdist worker that asks,
    under a file lock; the others read the paths it recorded. Without xdist, `build` itself."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if not run:
        return build

    @functools.lru_cache(maxsize=1)
    def shared():
        record = os.path.join(_RUN_TMP.get("dir") or tempfile.gettempdir(), f"runtime-models-{run}.json")
        with _file_lock(record + ".lock"):
            if os.path.exists(record):
                with open(record) as f:
                    return json.load(f)
            paths = build()
            with open(record + ".tmp", "w") as f:
                json.dump(paths, f)
            os.replace(record + ".tmp", record)
            return paths

    return shared


import runtime_models  # noqa: E402  (before the test modules import `models` from it)

runtime_models.models = _built_once_for_all_workers(runtime_models.models)
