"""Emulated board check (`make board-check`): the exported artifacts of a run, bundled for
linux-aarch64, installed offline into an arm64 CPython 3.11 run under qemu-user (Cortex-A72), segment
held-out frames there; the masks must match the x86 runtime's (float >= 99.9 % of the pixels, int8
>= 99.5 %). Emulated timings are not performance figures, so none are reported.

    python -m lunarseg.benchmarks.board_check [RUN] [--frames 8] [--out DIR] [--cache DIR]

Set-up (cached in --cache, about a minute the first time; needs root and Debian's package mirror):
qemu-user 10 from Debian trixie (static binaries; bookworm's 7.2 crashes inside `import
onnxruntime`, reading the host's /proc/cpuinfo), and a bookworm arm64 root from `debootstrap
--foreign` with each downloaded package unpacked (no chroot, no binfmt needed).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from lunarseg.runtime import atomic
from lunarseg.runtime.errors import ConfigError, LunarsegError

PLATFORM, PYTHON, CPU = "linux-aarch64", "3.11", "cortex-a72"
MIN_QEMU = (8, 2)
TRIXIE = "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main\n"
MIRROR = "http://deb.debian.org/debian"

# Runs inside the emulated Python: segment every frame with every model, save the class maps.
EMULATED_SCRIPT = """
import json, sys, numpy as np
from lunarseg.runtime.segmenter import Segmenter
job = json.load(open(sys.argv[1]))
out = {}
for i, model in enumerate(job["models"]):
    seg = Segmenter.from_file(model["path"], threads=1, backend=model["engine"])
    out[f"m{i}"] = np.stack([seg.segment(f).classes for f in job["frames"]])
np.savez_compressed(sys.argv[2], **out)
print("emulated", seg.backend_name, "on", __import__("platform").machine())
"""


def _run(cmd: list[str], what: str, timeout_s: float = 1800, **kw) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, **kw)
    except FileNotFoundError:
        raise ConfigError(f"{what}: {cmd[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise ConfigError(f"{what}: took over {timeout_s:.0f} s") from None
    if done.returncode:
        tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise ConfigError(f"{what} failed (exit {done.returncode}): {tail[0][:300]}")
    return done


def qemu_version(binary: Path) -> tuple[int, int]:
    text = _run([str(binary), "--version"], "qemu-aarch64 --version").stdout
    found = re.search(r"version (\d+)\.(\d+)", text)
    if not found:
        raise ConfigError(f"{binary}: cannot read its version from {text.splitlines()[:1]}")
    return int(found.group(1)), int(found.group(2))


def ensure_qemu(cache: Path) -> Path:
    """qemu-aarch64 >= 8.2: trixie's qemu-user .deb, downloaded and unpacked into the cache."""
    binary = cache / "qemu" / "usr/bin/qemu-aarch64"
    if not binary.exists():
        apt = cache / "apt"
        (apt / "lists/partial").mkdir(parents=True, exist_ok=True)
        (apt / "sources.list").write_text(TRIXIE)
        opts = [f"-oDir::Etc::SourceList={apt / 'sources.list'}", "-oDir::Etc::SourceParts=/dev/null",
                f"-oDir::State::Lists={apt / 'lists'}", "-oAPT::Sandbox::User=root"]
        _run(["apt-get", *opts, "update", "-qq"], "apt-get update (Debian trixie lists)")
        _run(["apt-get", *opts, "download", "qemu-user"], "apt-get download qemu-user", cwd=apt)
        deb = next(apt.glob("qemu-user_*.deb"))
        _run(["dpkg-deb", "-x", str(deb), str(cache / "qemu")], "unpacking qemu-user")
    if qemu_version(binary) < MIN_QEMU:
        raise ConfigError(f"{binary} is older than {'.'.join(map(str, MIN_QEMU))}; delete {cache} and rerun")
    return binary


def ensure_arm64_root(cache: Path) -> Path:
    """A Debian bookworm arm64 root with python3 (debootstrap --foreign + every .deb unpacked)."""
    root = cache / "arm64root"
    python = root / "usr/bin/python3.11"
    if python.exists():
        return root
    if shutil.which("debootstrap") is None:
        _run(["apt-get", "install", "-y", "-qq", "debootstrap"], "apt-get install debootstrap")
    shutil.rmtree(root, ignore_errors=True)
    _run(["debootstrap", "--foreign", "--arch=arm64", "--variant=minbase", "--include=python3", "bookworm",
          str(root), MIRROR], "debootstrap of the arm64 root")
    for deb in sorted((root / "var/cache/apt/archives").glob("*.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(root)], f"unpacking {deb.name}")
    if not python.exists():
        raise ConfigError(f"{root}: debootstrap left no python3.11")
    return root


def run_artifacts(run: Path) -> list[Path]:
    """Every artifact of the run's export manifest that exported cleanly."""
    from lunarseg.benchmarks.inputs import MANIFEST
    from lunarseg.export.manifest import read_manifest

    entries = read_manifest(run / MANIFEST)["artifacts"]
    paths = [run / e["path"] for e in entries if e.get("status", "ok") == "ok"]
    paths = [p for p in paths if p.suffix in (".onnx", ".tflite") and p.exists()]
    if not paths:
        raise ConfigError(f"{run}: no exported .onnx/.tflite artifacts (run `lunarseg export` first)")
    return paths


def test_frames(run: Path, count: int) -> list[str]:
    from lunarseg.data.loader import DatasetIndex
    from lunarseg.runtime.metadata import read_keras_meta

    data = read_keras_meta(run / "model.keras").extra.get("data_dir", "")
    if not data or not Path(data).exists():
        raise ConfigError(f"{run}: its dataset ({data or 'none recorded'}) is not there to take test frames from")
    return [str(p.image_path) for p in DatasetIndex.scan(data).split("test")[:count]]


def install_offline(bundle: Path, site: Path, extras: str) -> None:
    """The bundle's wheels into `site` for aarch64, with no index: the packages install.sh installs on the
    board (install.sh's venv cannot run the arm64 interpreter here without binfmt)."""
    from lunarseg.platforms import pip_target_args

    _run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--find-links", str(bundle / "wheels"),
          "--target", str(site), *pip_target_args(PLATFORM, PYTHON), f"lunarseg[{extras}]"],
         "offline install of the bundle's wheels")


def x86_masks(models: list[dict], frames: list[str]) -> list[np.ndarray]:
    from lunarseg.runtime.segmenter import Segmenter

    masks = []
    for m in models:
        seg = Segmenter.from_file(m["path"], threads=1, backend=m["engine"])
        masks.append(np.stack([seg.segment(f).classes for f in frames]))
    return masks


def board_check(run: Path, out: Path, cache: Path, frames: int = 8) -> dict:
    from lunarseg.bundle import make_bundle
    from lunarseg.runtime.bundle_check import min_agreement, pixel_agreement
    from lunarseg.runtime.segmenter import Segmenter

    qemu, root = ensure_qemu(cache), ensure_arm64_root(cache)
    artifacts, picked = run_artifacts(run), test_frames(run, frames)
    work = Path(tempfile.mkdtemp(prefix="board-check-", dir=cache))
    try:
        manifest = make_bundle([str(p) for p in artifacts], work / "bundle", PLATFORM, PYTHON)
        bundle = work / "bundle"
        install_offline(bundle, work / "site", manifest["extras"])
        models = [{"path": str(bundle / e["path"]), "engine": e["engine"]} for e in manifest["models"]]
        job = work / "job.json"
        job.write_text(json.dumps({"models": models, "frames": picked}))
        (work / "emulated.py").write_text(EMULATED_SCRIPT)
        env = dict(os.environ, PYTHONPATH=str(work / "site"), PYTHONDONTWRITEBYTECODE="1")
        emu = [str(qemu), "-cpu", CPU, "-L", str(root), str(root / "usr/bin/python3.11")]
        _run(emu + [str(work / "emulated.py"), str(job), str(work / "arm.npz")], "segmenting under emulation", env=env)
        check = subprocess.run(emu + ["-m", "lunarseg.runtime.bundle_check", str(bundle)], capture_output=True,
                               text=True, env=env, timeout=1800)
        arm = np.load(work / "arm.npz")
        rows = []
        for i, (m, x86) in enumerate(zip(models, x86_masks(models, picked))):
            mode = Segmenter.from_file(m["path"], backend=m["engine"]).meta.quantization.get("mode", "none")
            agree = pixel_agreement(arm[f"m{i}"], x86)
            rows.append({"artifact": Path(m["path"]).name, "engine": m["engine"], "quantization": mode,
                         "frames": len(picked), "agreement": round(agree, 6), "min": min_agreement(mode),
                         "ok": agree >= min_agreement(mode)})
        result = {"run": str(run), "platform": PLATFORM, "python": PYTHON, "cpu": f"qemu-user {'.'.join(map(str, qemu_version(qemu)))} -cpu {CPU}",
                  "bundle_bytes": manifest["bytes"], "wheels": manifest["wheels"], "rows": rows,
                  "bundle_check_sh": {"exit": check.returncode, "output": check.stdout.strip().splitlines()},
                  "note": "emulated: timings mean nothing here, so none are reported; compare outputs only"}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    atomic.write_json(out / "board_check.json", result)
    atomic.write_text(out / "board_check.md", to_markdown(result))
    return result


def to_markdown(result: dict) -> str:
    lines = [f"# Board check: {result['platform']}, CPython {result['python']}, {result['cpu']}", "",
             f"Run {result['run']}; bundle {result['bundle_bytes'] / 1e6:.1f} MB; {result['note']}.", "",
             "| artifact | engine | quantization | frames | pixel agreement with x86 | needs | ok |", "|---|---|---|---:|---:|---:|:-:|"]
    lines += [f"| {r['artifact']} | {r['engine']} | {r['quantization']} | {r['frames']} | {r['agreement']:.4%} | "
              f"{r['min']:.1%} | {'yes' if r['ok'] else 'NO'} |" for r in result["rows"]]
    lines += ["", f"check.sh (the bundle's own check, emulated): exit {result['bundle_check_sh']['exit']}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lunarseg.benchmarks.board_check", description=__doc__.split("\n\n")[0])
    p.add_argument("run", nargs="?", default="demo_out/run", help="run directory with exported artifacts")
    p.add_argument("--frames", type=int, default=8, help="held-out test frames to compare")
    p.add_argument("--out", help="where board_check.json/.md go (default RUN/board-check)")
    p.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "lunarseg-board"),
                   help="qemu + arm64 root cache")
    args = p.parse_args(argv)
    run = Path(args.run)
    try:
        if not (run / "model.keras").exists():
            raise ConfigError(f"{run}: not a run directory (no model.keras); run `make demo` first or name a run")
        cache = Path(args.cache)
        cache.mkdir(parents=True, exist_ok=True)
        result = board_check(run, Path(args.out or run / "board-check"), cache, args.frames)
    except LunarsegError as exc:
        print(f"board check: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(to_markdown(result))
    bad = [r for r in result["rows"] if not r["ok"]]
    return 1 if bad or result["bundle_check_sh"]["exit"] else 0


if __name__ == "__main__":
    sys.exit(main())
