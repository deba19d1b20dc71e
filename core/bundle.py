"""`lunarseg bundle`: everything an offline board needs to run lunarseg models — the model files, a
wheelhouse for the board's platform (lunarseg built as a wheel + its runtime dependencies),
install.sh, a sample frame with the masks this machine's runtime gave, check.sh that compares them
on the board, and a README. Rovers and field boards have no internet; the bundle needs none there."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from lunarseg.runtime import atomic
from lunarseg.runtime.errors import ConfigError, ModelFileError, unknown_key

ENGINES = {"ort": ("runtime-ort", ".onnx", "onnxruntime"), "litert": ("runtime-litert", ".tflite", "litert")}
MODEL_SUFFIXES = (".onnx", ".tflite")
# install.sh runs pip from this wheel: Debian's and Raspberry Pi OS's python3 make venvs without pip
# unless python3-venv is installed, and refuse installs into the system Python.
BOOTSTRAP_PIP = "pip==24.3.1"


def register(sub) -> None:
    from lunarseg.platforms import PLATFORMS, PYTHONS

    p = sub.add_parser("bundle", help="pack models + wheels + install/check scripts for an offline board",
                       description="Pack models, the board's wheels, install.sh (offline, into a venv), a sample "
                       "frame with this machine's masks and check.sh into one folder to copy to an offline board. "
                       "Folders given as MODEL contribute the models directly inside them.")
    p.add_argument("models", nargs="+", metavar="MODEL", help=".onnx / .tflite files, or folders of them (e.g. RUN/deploy)")
    p.add_argument("--platform", required=True, choices=sorted(PLATFORMS), help="the board's platform")
    p.add_argument("--python", default="3.11", choices=PYTHONS, help="the board's CPython version (default 3.11)")
    p.add_argument("--engine", default="auto", choices=("auto", *ENGINES),
                   help="engine to install: ort (.onnx), litert (.tflite); auto (default) = what the models need")
    p.add_argument("--frame", help="sample frame for check.sh (default: a synthetic scene)")
    p.add_argument("--out", required=True, help="bundle directory to write (must not exist or be empty)")
    p.set_defaults(func=_bundle)


def model_files(paths: list[str]) -> list[Path]:
    """The model files named, folders expanded to the models they hold; anything else refused."""
    found = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.suffix in MODEL_SUFFIXES)
            if not inside:
                raise ModelFileError(f"{path}: no .onnx or .tflite files in this folder")
            found += inside
        elif not path.exists():
            raise ModelFileError(f"{path}: no such model file")
        elif path.suffix not in MODEL_SUFFIXES:
            raise ModelFileError(f"{path}: a bundle takes .onnx or .tflite models, not {path.suffix or 'no suffix'!r}")
        else:
            found.append(path)
    return found


def engines_for(models: list[Path], engine: str) -> list[str]:
    """The engines the models need, or the one asked for (refused when it cannot run one of them)."""
    needed = sorted({k for m in models for k, (_, suffix, _) in ENGINES.items() if m.suffix == suffix})
    if engine == "auto":
        return needed
    if engine not in ENGINES:
        raise unknown_key("engine", engine, ENGINES)
    stranded = [m.name for m in models if m.suffix != ENGINES[engine][1]]
    if stranded:
        raise ConfigError(f"--engine {engine} cannot run {', '.join(stranded)} (it runs {ENGINES[engine][1]} files); "
                          "drop them or use --engine auto")
    return [engine]


def runtime_engine(model: Path, engines: list[str]) -> str:
    """The runtime backend name (onnxruntime, litert) that runs `model` among the bundle's engines."""
    return next(ENGINES[e][2] for e in engines if ENGINES[e][1] == model.suffix)


def source_tree() -> Path:
    """The lunarseg source tree this install came from (the bundle builds its wheel from it)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "pyproject.toml").exists():
        raise ConfigError("lunarseg bundle needs the lunarseg source tree (an editable install: pip install -e .)")
    return root


# What pip prints when the package index cannot be reached (it then reports "from versions: none").
NETWORK_SIGNS = ("NewConnectionError", "Failed to establish a new connection", "Max retries exceeded",
                 "Temporary failure in name resolution", "Name or service not known", "Connection refused",
                 "Could not fetch URL", "ConnectTimeoutError", "Network is unreachable")


def _pip(args: list[str], what: str, timeout_s: float = 900) -> None:
    try:
        done = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ConfigError(f"{what}: pip took over {timeout_s:.0f} s (no network?)") from None
    if done.returncode:
        if any(sign in done.stderr for sign in NETWORK_SIGNS):
            raise ConfigError(f"{what} failed: the package index cannot be reached (a bundle needs it once, on the "
                              "workstation; check the network or PIP_INDEX_URL)")
        errors = [ln for ln in done.stderr.splitlines() if ln.startswith("ERROR")] or done.stderr.strip().splitlines()[-1:]
        raise ConfigError(f"{what} failed: {' '.join(errors[:2])}")


def build_wheelhouse(wheels: Path, extra: str, platform: str, python: str) -> list[str]:
    """lunarseg's wheel plus the pinned runtime wheels for the target; returns the file names."""
    from lunarseg.platforms import pip_target_args, requirements_for

    wheels.mkdir(parents=True, exist_ok=True)
    _pip(["wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(wheels), str(source_tree())],
         "building the lunarseg wheel")
    reqs = requirements_for(extra, platform, python)
    _pip(["download", "--quiet", "--dest", str(wheels), *pip_target_args(platform, python), *reqs, BOOTSTRAP_PIP],
         f"downloading the {platform} / Python {python} wheels ({' '.join(reqs)})")
    return sorted(p.name for p in wheels.iterdir())


def sample_frame(frame: str | None, dest: Path) -> Path:
    """The sample frame copied into the bundle, keeping its suffix (a synthetic scene when none is given)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if frame:
        if not Path(frame).is_file():
            raise ConfigError(f"--frame {frame}: no such file")
        dest = dest.with_suffix(Path(frame).suffix or dest.suffix)
        shutil.copyfile(frame, dest)
        return dest
    from lunarseg.data.synth import generate_scene

    atomic.write_png(dest, generate_scene(seed=12345, index=0, size=(720, 480)).render)
    return dest


INSTALL_SH = """#!/bin/sh
# Install lunarseg's runtime from this bundle's wheels, no network needed, into a virtual environment
# ($VENV, default: venv/ in this folder; Debian 12 and Raspberry Pi OS refuse pip installs into the
# system Python). Inside an active venv it installs there. PYTHON picks the interpreter (default python3).
# Extra arguments go to pip: sh install.sh [pip options]
set -e
here=$(cd "$(dirname "$0")" && pwd)
py="${{PYTHON:-python3}}"
if [ -n "$VIRTUAL_ENV" ]; then
    target="$VIRTUAL_ENV/bin/python"
else
    venv="${{VENV:-$here/venv}}"
    "$py" -m venv --without-pip "$venv"
    target="$venv/bin/python"
fi
pip_wheel=$(ls "$here"/wheels/pip-*.whl 2>/dev/null | head -n 1)
if [ -z "$pip_wheel" ]; then echo "install.sh: no pip wheel in $here/wheels; remake the bundle" >&2; exit 2; fi
"$target" "$pip_wheel/pip" install --no-index --find-links "$here/wheels" "$@" pip "lunarseg[{extras}]"
echo "installed into $(dirname "$target"): run $(dirname "$target")/lunarseg, or activate it first"
"""
CHECK_SH = """#!/bin/sh
# Segment the sample frame with every model of the bundle and compare with the workstation's masks.
# Runs $PYTHON if set, else the venv install.sh made ($VENV, default ./venv), else the active venv, else python3.
here=$(cd "$(dirname "$0")" && pwd)
venv="${VENV:-$here/venv}"
if [ -n "$PYTHON" ]; then py="$PYTHON"
elif [ -x "$venv/bin/python" ]; then py="$venv/bin/python"
elif [ -n "$VIRTUAL_ENV" ]; then py="$VIRTUAL_ENV/bin/python"
else py=python3; fi
if ! "$py" -c "import lunarseg" >/dev/null 2>&1; then
    echo "check.sh: lunarseg is not installed for $py; run install.sh first" >&2
    exit 2
fi
exec "$py" -m lunarseg.runtime.bundle_check "$here"
"""
README = """# lunarseg bundle for {platform}, CPython {python}

Made {created} on {host}. Engines: {engines}. Models: {models}.
Needs glibc >= {glibc} (the wheels' manylinux tags) and CPython {python}.

    sh install.sh            # offline: a venv in ./venv, pip install --no-index --find-links wheels 'lunarseg[{extras}]'
    sh check.sh              # segments sample/frame.png with each model, compares with sample/*.png
    venv/bin/lunarseg segment models/{first} frames/ --out masks

check.sh passes when a float model agrees with this machine's mask on >= 99.9 % of the pixels and an
int8 one on >= 99.5 % (ARM int8 kernels round a little differently).
"""


def bundle_names(models: list[Path]) -> list[str]:
    """File names inside the bundle: the model's own, prefixed with the folders above it where two
    models share a name (RUN/export/onnx-int8.onnx and RUN/compressed/slim40/export/onnx-int8.onnx)."""
    names = []
    for model in models:
        name, up = model.name, model.resolve().parent
        while name in names and up != up.parent:
            if up.name != "export":
                name = f"{up.name}-{name}"
            up = up.parent
        if name in names:
            raise ConfigError(f"{model}: two models would share the name {name!r} in the bundle")
        names.append(name)
    return names


def expected_masks(models: list[Path], frame: Path, out: Path, engines: list[str]) -> list[dict]:
    """Copy each model in and record the mask this machine's runtime gives on the sample frame."""
    from lunarseg.runtime.segmenter import Segmenter

    entries = []
    for model, name in zip(models, bundle_names(models)):
        engine = runtime_engine(model, engines)
        dest = out / "models" / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(model, dest)
        classes = Segmenter.from_file(dest, threads=1, backend=engine).segment(str(frame)).classes
        mask = atomic.write_png(out / "sample" / f"{dest.stem}{dest.suffix.replace('.', '-')}.png", classes)
        entries.append({"path": str(dest.relative_to(out)), "engine": engine,
                        "samples": [{"frame": str(frame.relative_to(out)), "expected": str(mask.relative_to(out))}]})
    return entries


def check_models(models: list[Path], engines: list[str]) -> None:
    """Open every model as the board will, before anything is downloaded: an unusable file is named as
    the user gave it."""
    from lunarseg.runtime.backends import open_backend

    for model in models:
        open_backend(model, threads=1, backend=runtime_engine(model, engines))


def out_dir(out: str | Path) -> Path:
    """--out: new or empty; its parent folders are made (the bundle is built beside it and renamed)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out}: already exists and is not an empty folder; choose a new --out")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot make {out.parent} ({exc.strerror or exc})") from None
    return out



def make_bundle(models: list[str], out: str | Path, platform: str, python: str = "3.11", engine: str = "auto",
                frame: str | None = None) -> dict:
    """Write the bundle; returns its manifest (also DIR/bundle.json) with the size in bytes. Everything
    is checked before the download, and the bundle is built in a temporary folder beside --out and
    renamed at the end: a failure leaves nothing behind, so the same command can be run again."""
    import tempfile

    from lunarseg.platforms import PYTHONS, get_platform

    get_platform(platform)
    if python not in PYTHONS:
        raise unknown_key("Python version", python, PYTHONS)
    files = model_files(models)
    engines = engines_for(files, engine)
    out = out_dir(out)
    if frame and not Path(frame).is_file():
        raise ConfigError(f"--frame {frame}: no such file")
    check_models(files, engines)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        manifest = _write_bundle(files, work, platform, python, engines, frame)
        os.chmod(work, 0o777 & ~atomic.current_umask())  # mkdtemp's 0700 would keep the board's service user out
        if out.exists():
            out.rmdir()  # empty, checked above
        work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return manifest


def _write_bundle(files: list[Path], out: Path, platform: str, python: str, engines: list[str],
                  frame: str | None) -> dict:
    """The bundle's contents in `out`; returns its manifest with the size in bytes."""
    import time

    from lunarseg.runtime.bundle_check import MANIFEST

    extras = ENGINES[engines[0]][0] if len(engines) == 1 else "runtime"
    wheels = build_wheelhouse(out / "wheels", extras, platform, python)
    sample = sample_frame(frame, out / "sample" / "frame.png")
    entries = expected_masks(files, sample, out, engines)
    atomic.write_text(out / "install.sh", INSTALL_SH.format(extras=extras))
    atomic.write_text(out / "check.sh", CHECK_SH)
    for script in ("install.sh", "check.sh"):
        os.chmod(out / script, 0o755)
    created = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    atomic.write_text(out / "README.md", README.format(
        platform=platform, python=python, created=created, host=os.uname().machine, engines=", ".join(engines),
        models=", ".join(bundle_names(files)), extras=extras, first=bundle_names(files)[0], glibc=glibc_needed(wheels)))
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    manifest = {"platform": platform, "python": python, "engines": engines, "extras": extras, "models": entries,
                "wheels": wheels, "created": created, "glibc": glibc_needed(wheels)}
    atomic.write_json(out / MANIFEST, manifest)
    manifest["bytes"] = size
    return manifest


def glibc_needed(wheels: list[str]) -> str:
    """The newest glibc any wheel's manylinux tag asks for ('2.28'); a wheel with several tags needs its oldest."""
    import re

    needs = []
    for name in wheels:
        tags = [(int(a), int(b)) for a, b in re.findall(r"manylinux_(\d+)_(\d+)_", name)]
        tags += [(2, 17)] * ("manylinux2014" in name)
        if tags:
            needs.append(min(tags))
    major, minor = max(needs, default=(2, 17))
    return f"{major}.{minor}"


def _bundle(args) -> int:
    m = make_bundle(args.models, args.out, args.platform, args.python, args.engine, args.frame)
    print(f"bundle {args.out}: {len(m['models'])} model(s), {len(m['wheels'])} wheels for {m['platform']} / "
          f"Python {m['python']} ({m['extras']}), {m['bytes'] / 1e6:.1f} MB")
    print(f"on the board: sh {args.out}/install.sh && sh {args.out}/check.sh (glibc >= {m['glibc']})")
    return 0
