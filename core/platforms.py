"""Target platforms of the runtime (rover boards and workstations) and the pinned requirements of
an install extra on each: environment markers evaluated for the *target*, not this machine, so a
board's wheel set can be resolved or downloaded from an x86 workstation."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from lunarseg.runtime.errors import ConfigError, LunarsegError, unknown_key


@dataclass(frozen=True)
class Platform:
    """A pip target: the marker values it implies and the wheel tags pip may take for it."""

    machine: str  # platform_machine as the board reports it
    wheel_tags: tuple[str, ...]


# glibc 2.17 (manylinux2014) up to 2.31 (Ubuntu 20.04, the oldest board OS in use that has
# Python 3.11 builds; Raspberry Pi OS bookworm has 2.36): every wheel such a board can load.
GLIBC_MINORS = range(17, 32)


def _manylinux(arch: str) -> tuple[str, ...]:
    return tuple(f"manylinux_2_{m}_{arch}" for m in reversed(GLIBC_MINORS)) + (f"manylinux2014_{arch}",)


PLATFORMS = {
    "linux-x86_64": Platform("x86_64", _manylinux("x86_64")),
    "linux-aarch64": Platform("aarch64", _manylinux("aarch64")),
}
PYTHONS = ("3.11", "3.12")


def get_platform(name: str) -> Platform:
    if name not in PLATFORMS:
        raise unknown_key("platform", name, PLATFORMS)
    return PLATFORMS[name]


def target_environment(platform: str, python: str, extra: str = "") -> dict[str, str]:
    """PEP 508 marker values of a CPython `python` on `platform` (Linux)."""
    if python not in PYTHONS:
        raise unknown_key("Python version", python, PYTHONS)
    return {"platform_machine": get_platform(platform).machine, "platform_system": "Linux", "sys_platform": "linux",
            "os_name": "posix", "python_version": python, "python_full_version": f"{python}.0",
            "implementation_name": "cpython", "platform_python_implementation": "CPython",
            "implementation_version": f"{python}.0", "platform_release": "", "platform_version": "", "extra": extra}


def installed_requires(project: str = "lunarseg") -> list[str]:
    """The requirement lines of the installed distribution (extras as `; extra == "name"` markers)."""
    from importlib.metadata import PackageNotFoundError, requires

    try:
        return list(requires(project) or [])
    except PackageNotFoundError:
        raise ConfigError(f"{project} is not installed (pip install -e .), so its requirements are unknown") from None


def pyproject_requires(path: str | Path) -> list[str]:
    """The same lines read straight from a pyproject.toml (what CI checks before anything is built)."""
    import tomllib

    project = tomllib.loads(Path(path).read_text())["project"]
    lines = list(project.get("dependencies", []))
    for extra, reqs in project.get("optional-dependencies", {}).items():
        for req in reqs:
            joiner = f"({req.split(';', 1)[1].strip()}) and " if ";" in req else ""
            lines.append(f"{req.split(';', 1)[0].strip()}; {joiner}extra == \"{extra}\"")
    return lines


def requirements_for(extra: str, platform: str, python: str, requires: list[str] | None = None,
                     project: str = "lunarseg") -> list[str]:
    """Pinned third-party requirements of `project[extra]` on the target, self-references expanded."""
    from packaging.requirements import Requirement

    lines = installed_requires(project) if requires is None else requires
    parsed = [Requirement(line) for line in lines]
    known = {m for r in parsed if r.marker for m in _extras_named(str(r.marker))}
    if extra and extra not in known:
        raise unknown_key(f"{project} extra", extra, known)
    out: dict[str, str] = {}
    pending, seen = [extra], set()
    while pending:
        current = pending.pop()
        seen.add(current)
        env = target_environment(platform, python, current)
        for req in parsed:
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            if req.marker is None and current != extra:
                continue  # base dependencies are added once, for the extra asked for
            if req.name == project:
                pending += [e for e in req.extras if e not in seen]
                continue
            out.setdefault(req.name, f"{req.name}{req.specifier}")
    return sorted(out.values())


def _extras_named(marker: str) -> set[str]:
    import re

    return set(re.findall(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker))


def pip_target_args(platform: str, python: str) -> list[str]:
    """pip options that make it pick wheels for the target instead of this machine."""
    tags = [a for tag in get_platform(platform).wheel_tags for a in ("--platform", tag)]
    return [*tags, "--python-version", python, "--implementation", "cp", "--only-binary=:all:"]


class ResolveError(LunarsegError):
    """pip could not find wheels for the target (a pin without a wheel, or no network)."""


def resolve(requirements: list[str], platform: str, python: str, scratch: str | Path,
            timeout_s: float = 300) -> list[str]:
    """Ask pip (dry run) which distributions it would install on the target; one-line error if none fits."""
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed", "--no-input",
           "--target", str(scratch), *pip_target_args(platform, python), *requirements]
    try:
        done = subprocess.run(cmd + ["--report", "-"], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ResolveError(f"pip did not resolve the {platform} / Python {python} requirements within "
                           f"{timeout_s:.0f} s (no network?)") from None
    if done.returncode != 0:
        errors = [ln for ln in done.stderr.splitlines() if ln.startswith("ERROR")]
        raise ResolveError(f"{platform} / Python {python}: " + (" ".join(errors[:2]) or done.stderr.strip()[-300:]))
    import json

    report = json.loads(done.stdout)
    return sorted(f"{i['metadata']['name']}=={i['metadata']['version']}" for i in report.get("install", []))
