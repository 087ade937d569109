"""python -m benchmarks.opencv_vs_pillow: does opencv-python-headless earn a place in the runtime?

Times, on the largest full-resolution scan, the steps OpenCV could take over from Pillow/numpy:
reduced-scale JPEG decoding, the resize to the model input, and colour-mapping + blending the heatmap
overlay. Minimum of N runs (robust to a CPU shared with other work). OpenCV is optional: without it
only the Pillow side is timed. Writes benchmarks/results/opencv_vs_pillow.{json,md}.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("CXR_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "opencv_vs_pillow"


def _best_ms(call, runs: int) -> float:
    call()
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        call()
        best = min(best, (time.perf_counter() - started) * 1000.0)
    return best


def largest_scan() -> Path:
    files = sorted((SHARED_DATA / "fullres_sample").rglob("*.jpeg"))
    if not files:
        raise SystemExit(f"no full-resolution scans in {SHARED_DATA / 'fullres_sample'}")
    return max(files, key=lambda p: Image.open(p).width * Image.open(p).height)


def measure(runs: int = 80) -> dict:
    from edge_runtime.cam import upsample
    from edge_runtime.render import colorize, overlay_heatmap
    from edge_runtime.imaging import load_image

    path = largest_scan()
    data = path.read_bytes()
    rows: list[dict] = []

    def pillow_draft(scale: int):
        def call():
            with Image.open(io.BytesIO(data)) as image:
                image.draft("L", (image.width // scale, image.height // scale))
                return np.asarray(image.convert("L"))
        return call

    rgb = load_image(data)
    grey = np.ascontiguousarray(rgb[..., 0])
    cam = np.random.default_rng(0).random((10, 10)).astype(np.float32)
    rows += [
        {"step": "decode at 1/2 (grey)", "library": "Pillow draft", "ms": _best_ms(pillow_draft(2), runs)},
        {"step": "decode at 1/4 (grey)", "library": "Pillow draft", "ms": _best_ms(pillow_draft(4), runs)},
        {"step": "decode, runtime load_image (RGB, reduced)", "library": "Pillow", "ms": _best_ms(lambda: load_image(data), runs)},
        {"step": "resize to 160x160", "library": "Pillow bilinear (antialiased)",
         "ms": _best_ms(lambda: Image.fromarray(grey).resize((160, 160), Image.Resampling.BILINEAR), runs)},
        {"step": "heatmap overlay", "library": "Pillow blend (runtime)", "ms": _best_ms(lambda: overlay_heatmap(rgb, cam), runs)},
        {"step": "heatmap overlay", "library": "numpy float32 blend (before)",
         "ms": _best_ms(lambda: np.clip(np.round(0.6 * rgb.astype(np.float32) + 0.4 * colorize(
             upsample(cam, rgb.shape[:2])).astype(np.float32)), 0, 255).astype(np.uint8), runs)},
    ]
    info = {"image": path.name, "size": list(Image.open(path).size), "decoded": list(rgb.shape), "runs": runs}
    try:
        import cv2
    except ImportError:
        info["opencv"] = None
    else:
        info["opencv"] = cv2.__version__
        buffer = np.frombuffer(data, np.uint8)
        started = time.perf_counter()
        rows += [
            {"step": "decode at 1/2 (grey)", "library": "OpenCV IMREAD_REDUCED_GRAYSCALE_2",
             "ms": _best_ms(lambda: cv2.imdecode(buffer, cv2.IMREAD_REDUCED_GRAYSCALE_2), runs)},
            {"step": "decode at 1/4 (grey)", "library": "OpenCV IMREAD_REDUCED_GRAYSCALE_4",
             "ms": _best_ms(lambda: cv2.imdecode(buffer, cv2.IMREAD_REDUCED_GRAYSCALE_4), runs)},
            {"step": "resize to 160x160", "library": "OpenCV INTER_AREA",
             "ms": _best_ms(lambda: cv2.resize(grey, (160, 160), interpolation=cv2.INTER_AREA), runs)},
            {"step": "heatmap overlay", "library": "OpenCV applyColorMap + addWeighted",
             "ms": _best_ms(lambda: cv2.addWeighted(rgb, 0.6, cv2.applyColorMap(cv2.resize(
                 (cam * 255).astype(np.uint8), rgb.shape[1::-1]), cv2.COLORMAP_JET), 0.4, 0), runs)},
        ]
        info["opencv_timing_overhead_s"] = time.perf_counter() - started
    return {"info": info, "rows": rows}


def write(result: dict, stem: Path) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    info = result["info"]
    lines = [f"# OpenCV against Pillow on `{info['image']}` ({info['size'][0]}x{info['size'][1]})", "",
             f"Best of {info['runs']} runs each; OpenCV {info['opencv'] or 'not installed'}.", "",
             "| step | library | ms |", "|---|---|---|"]
    lines += [f"| {r['step']} | {r['library']} | {r['ms']:.2f} |" for r in result["rows"]]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.opencv_vs_pillow", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=80)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output stem (.json and .md are written)")
    args = parser.parse_args(argv)
    result = measure(args.runs)
    write(result, args.out)
    print(args.out.with_suffix(".md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
