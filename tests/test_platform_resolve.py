"""The runtime's install extras resolve to real wheels for every board platform and Python we support
(pip dry run against the package index), so a pin without an aarch64 wheel fails CI."""
from pathlib import Path

import pytest

from lunarseg.platforms import (PLATFORMS, PYTHONS, pyproject_requires, requirements_for, resolve,
                                target_environment)
from lunarseg.runtime.errors import ConfigError

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
REQUIRES = pyproject_requires(PYPROJECT)
RUNTIME_EXTRAS = ("runtime-ort", "runtime-litert", "runtime")


def test_markers_are_evaluated_for_the_target_platform_not_this_machine():
    requires = ["eng==1.0; platform_machine == 'aarch64' and extra == 'x'",
                "eng==2.0; platform_machine != 'aarch64' and extra == 'x'", "base==3"]
    assert requirements_for("x", "linux-aarch64", "3.11", requires) == ["base==3", "eng==1.0"]
    assert requirements_for("x", "linux-x86_64", "3.12", requires) == ["base==3", "eng==2.0"]


def test_runtime_extra_is_both_engines_and_no_tensorflow():
    reqs = requirements_for("runtime", "linux-aarch64", "3.11", REQUIRES)
    names = {r.split("==")[0] for r in reqs}
    assert names == {"numpy", "pillow", "onnxruntime", "ai-edge-litert"}


def test_one_engine_extras_bring_one_engine():
    ort = {r.split("==")[0] for r in requirements_for("runtime-ort", "linux-x86_64", "3.12", REQUIRES)}
    assert ort == {"numpy", "pillow", "onnxruntime"}


def test_openvino_extra_brings_no_engine_on_aarch64():
    arm = {r.split("==")[0] for r in requirements_for("openvino", "linux-aarch64", "3.11", REQUIRES)}
    assert arm == {"numpy", "pillow"}
    assert "openvino==2026.4.1" in requirements_for("openvino", "linux-x86_64", "3.11", REQUIRES)


def test_unknown_platform_extra_or_python_is_refused_with_the_valid_keys():
    with pytest.raises(ConfigError, match="unknown platform 'linux-riscv'.*linux-aarch64"):
        requirements_for("runtime", "linux-riscv", "3.11", REQUIRES)
    with pytest.raises(ConfigError, match="unknown lunarseg extra 'gpu'.*runtime-ort"):
        requirements_for("gpu", "linux-x86_64", "3.11", REQUIRES)
    with pytest.raises(ConfigError, match="unknown Python version '3.9'"):
        target_environment("linux-x86_64", "3.9")


@pytest.mark.parametrize("python", PYTHONS)
@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_runtime_extras_resolve_to_wheels_on_the_target(platform, python, tmp_path):
    for extra in RUNTIME_EXTRAS:
        wanted = requirements_for(extra, platform, python, REQUIRES)
        got = resolve(wanted, platform, python, tmp_path / extra)
        assert set(wanted) <= set(got), f"{extra} on {platform}/{python}: wanted {wanted}, pip chose {got}"
