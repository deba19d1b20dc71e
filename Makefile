# Two entry points: `make demo` (whole pipeline on synthetic data, fitted to a 16-minute budget) and
# `make test` (everything, as CI runs it); both install into .venv. `make demo-full` is the longer
# profile (73 min on a quiet 2-core Xeon, 52 min on a 2-core AMD EPYC; <= 75). `make test-fast` leaves out the `slow` tests, those that train, fine-tune
# or convert a model (tests/conftest.py SLOW_FIXTURES and @pytest.mark.slow). Both run on JOBS pytest-xdist
# workers, a whole test file to a worker (tests/conftest.py); `make test JOBS=0` runs in one process.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
OUT ?= demo_out
JOBS ?= 2
XDIST = -n $(JOBS) --dist loadfile

.PHONY: demo demo-full test test-fast install clean board-check

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=3 $(BIN)/lunarseg demo --out $(OUT)

demo-full: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=3 $(BIN)/lunarseg demo --profile full --out $(OUT)

test: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=3 $(BIN)/python -m pytest -q $(XDIST)

test-fast: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=3 $(BIN)/python -m pytest -q -m "not slow" $(XDIST)

# The demo's artifacts bundled for linux-aarch64, installed offline into an arm64 Python under
# qemu-user, their masks compared with the x86 runtime's (needs root and Debian's mirror; run make demo first).
board-check: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=3 $(BIN)/python -m lunarseg.benchmarks.board_check $(OUT)/run

clean:
	rm -rf $(VENV) $(OUT) build *.egg-info
