"""On the board: segment a bundle's sample frame with each of its models and compare the masks with
the ones the workstation's runtime gave when the bundle was made (`check.sh` runs this).

    python -m lunarseg.runtime.bundle_check BUNDLE_DIR     # exit 0 all agree, 1 one does not or cannot run

A float model must agree on >= 99.9 % of the pixels, an int8 one on >= 99.5 %: ARM int8 kernels
round differently from x86 ones, float kernels barely at all.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from lunarseg.runtime.errors import LunarsegError, ModelFileError

MIN_AGREEMENT = {"float": 0.999, "int8": 0.995}
MANIFEST = "bundle.json"


def min_agreement(quantization_mode: str) -> float:
    """The pixel agreement a model of this quantization must reach."""
    return MIN_AGREEMENT["int8" if quantization_mode == "int8" else "float"]


def pixel_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of pixels with the same class; masks of different shapes agree nowhere."""
    return float((a == b).mean()) if a.shape == b.shape else 0.0


def check_bundle(root: str | Path, engine: str = "auto") -> list[dict]:
    """One row per model of the bundle: engine, agreement, the limit, ok."""
    from lunarseg.runtime.segmenter import Segmenter

    root = Path(root)
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{root}: not a lunarseg bundle ({MANIFEST}: {exc})") from None
    rows = []
    for entry in manifest["models"]:  # every model is checked: one that cannot run fails its own row
        try:
            seg = Segmenter.from_file(root / entry["path"], threads=1, backend=entry.get("engine", engine))
        except LunarsegError as exc:
            rows.append({"model": entry["path"], "engine": entry.get("engine", engine), "ok": False, "error": str(exc)})
            continue
        for sample in entry["samples"]:
            rows.append({"model": entry["path"], "engine": seg.backend_name, "frame": sample["frame"],
                         **_compare(seg, root / sample["frame"], root / sample["expected"])})
    return rows


def _compare(seg, frame: Path, expected_path: Path) -> dict:
    """The sample's mask against the workstation's: agreement, the limit and ok, or why they cannot compare."""
    from lunarseg.runtime.imageio import read_image

    got = seg.segment(read_image(frame)).classes
    expected = read_image(expected_path)
    expected = expected if expected.ndim == 2 else expected[..., 0]
    limit = min_agreement(seg.meta.quantization.get("mode", "none"))
    if got.shape != expected.shape:
        return {"min": limit, "ok": False, "error": f"the mask is {got.shape[1]}x{got.shape[0]}, the workstation's "
                f"{expected_path.name} {expected.shape[1]}x{expected.shape[0]}: the bundle's files do not belong together"}
    agree = pixel_agreement(got, expected)
    return {"agreement": round(agree, 6), "min": limit, "ok": agree >= limit}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m lunarseg.runtime.bundle_check BUNDLE_DIR", file=sys.stderr)
        return 2
    try:
        rows = check_bundle(argv[0])
    except LunarsegError as exc:
        print(f"bundle check: error: {exc}", file=sys.stderr)
        return exc.exit_code
    for r in rows:
        if "error" in r:
            print(f"FAIL {r['model']} on {r['engine']}: {r['error']}")
        else:
            print(f"{'ok  ' if r['ok'] else 'FAIL'} {r['model']} on {r['engine']}: {r['agreement']:.4%} of pixels "
                  f"agree with the workstation's mask (needs {r['min']:.1%})")
    return 0 if rows and all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
