"""python -m benchmarks.quality_gate: false rejects of the quality gate on real X-rays, catch rate on real photos."""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from edge_runtime import quality
from edge_runtime.errors import CxrError, NotChestXrayError
from edge_runtime.imaging import load_image, to_luminance

from .ood_corpus import build_corpus

logger = logging.getLogger("benchmarks.quality_gate")

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("CXR_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "quality_gate.json"

#: scikit-image's bundled sample images that need no download (colour and greyscale).
SKIMAGE_NAMES = (
    "astronaut", "brick", "camera", "cat", "chelsea", "clock", "coffee", "coins", "colorwheel", "grass",
    "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "logo", "microaneurysms", "moon", "page",
    "retina", "rocket", "shepp_logan_phantom", "text", "binary_blobs", "checkerboard", "cell",
)
#: Targets: issue 4 (photos), tightened by issue 10 (<= 0.5% of real X-rays refused, >= 95% of the
#: greyscale out-of-distribution corpus caught).
MAX_FALSE_REJECT_RATE = 0.005
MIN_PHOTO_CATCH_RATE = 0.95
MIN_OOD_CATCH_RATE = 0.95
#: Percentiles of the real X-rays that set the texture envelope and the layout threshold (--fit).
SPECTRUM_PERCENTILE = 0.025
SIMILARITY_PERCENTILE = 0.05

_XRAY_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".tif", ".tiff", ".dcm")


def _as_uint8(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    return array


def skimage_photos() -> dict[str, np.ndarray]:
    """scikit-image's offline sample images (the task's named photo set); empty without skimage."""
    try:
        import skimage.data as data
    except ImportError:
        logger.warning("scikit-image is not installed: no skimage photos")
        return {}
    photos = {}
    for name in SKIMAGE_NAMES:
        try:
            photos[name] = _as_uint8(getattr(data, name)())
        except Exception as err:  # noqa: BLE001 - some need an optional download; skip them
            logger.info("skipping skimage.data.%s: %s", name, err)
    try:
        photos["motorcycle_left"] = _as_uint8(data.stereo_motorcycle()[0])
    except Exception as err:  # noqa: BLE001
        logger.info("skipping skimage.data.stereo_motorcycle: %s", err)
    return photos


def other_photos() -> dict[str, np.ndarray]:
    """Held-out images never looked at while setting thresholds: matplotlib's and scikit-learn's
    sample pictures and matplotlib's MRI slice (a medical image that is not a chest X-ray)."""
    photos = {}
    try:
        import matplotlib

        sample = Path(matplotlib.get_data_path()) / "sample_data"
        for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png"):
            if (sample / name).is_file():
                photos[name] = load_image(sample / name)
        mri = sample / "s1045.ima.gz"
        if mri.is_file():
            photos["mri_s1045 (MRI slice)"] = np.frombuffer(gzip.decompress(mri.read_bytes()),
                                                            np.uint16).reshape(256, 256)
    except ImportError:
        logger.info("matplotlib is not installed: no matplotlib sample images")
    try:
        from sklearn.datasets import load_sample_images

        bunch = load_sample_images()
        for filename, image in zip(bunch.filenames, bunch.images):
            photos[Path(filename).name] = image
    except ImportError:
        logger.info("scikit-learn is not installed: no scikit-learn sample images")
    return photos


def greyscale_versions(photos: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Luminance of every colour photo: the hard case (a black-and-white photo has no colour cue)."""
    out = {}
    for name, image in photos.items():
        if image.ndim == 3 and image.shape[2] >= 3:
            out[name + " (grey)"] = to_luminance(np.ascontiguousarray(image[:, :, :3]))
    return out


def list_xrays(root: Path, every: int = 1) -> list[Path]:
    """Image files below ``root`` (sorted), keeping every ``every``-th one per folder."""
    if not root.is_dir():
        return []
    files = []
    for folder in sorted({p.parent for p in root.rglob("*") if p.is_file()}):
        names = sorted(p for p in folder.iterdir() if p.suffix.lower() in _XRAY_SUFFIXES)
        files.extend(names[::every])
    return files


def gate(image) -> tuple[str | None, str | None, dict, float]:
    """(reason or None, failed rule or None, measurements, gate milliseconds) for one image."""
    rgb = load_image(image)
    started = time.perf_counter()
    try:
        measurements = quality.check_chest_xray(rgb)
        reason, rule = None, None
    except NotChestXrayError as err:
        measurements, reason, rule = err.details, err.reason, err.details.get("rule")
    return reason, rule, measurements, (time.perf_counter() - started) * 1000.0


def run_xrays(name: str, files: list, limit_rejects: int = 10) -> tuple[dict, list]:
    """Gate every X-ray of one set; returns (summary, per-image measurement rows)."""
    rejected, by_rule, times, rows, unreadable = [], {}, [], [], []
    for path in files:
        try:
            reason, rule, measurements, ms = gate(path)
        except CxrError as err:
            unreadable.append(f"{Path(path).name}: {err.code}")
            continue
        times.append(ms)
        rows.append(measurements)
        if reason:
            rejected.append(f"{Path(path).parent.name}/{Path(path).name}: {reason}/{rule}")
            by_rule[f"{reason}/{rule}"] = by_rule.get(f"{reason}/{rule}", 0) + 1
    n = len(times)
    summary = {
        "set": name, "n": n, "rejected": len(rejected),
        "false_reject_rate": round(len(rejected) / n, 5) if n else None,
        "by_rule": by_rule, "examples": rejected[:limit_rejects], "unreadable": unreadable[:limit_rejects],
        "gate_ms_median": round(float(np.median(times)), 3) if times else None,
    }
    logger.info("%s: %d images, %d rejected", name, n, len(rejected))
    return summary, rows


def run_photos(name: str, photos: dict[str, np.ndarray]) -> dict:
    """Gate every photo of one set: which are caught, by which rule, and which slip through."""
    per_photo, missed = {}, []
    for key, image in photos.items():
        try:
            reason, rule, _, _ = gate(image)
            outcome = f"{reason}/{rule}" if reason else "PASSED"
        except CxrError as err:
            reason, outcome = err.code, f"refused at decode: {err.code}"
        per_photo[key] = outcome
        if not reason:
            missed.append(key)
    n = len(per_photo)
    caught = n - len(missed)
    return {"set": name, "n": n, "caught": caught, "catch_rate": round(caught / n, 4) if n else None,
            "missed": missed, "per_photo": per_photo}


def extremes(rows: list[dict]) -> dict:
    """Min, 0.1%, 99.9% and max of every measurement over the X-rays (where the thresholds sit)."""
    out = {}
    for key in ("aspect", "colour_fraction", "tint", "std", "dynamic_range", "entropy_bits", "edge_density",
                "gradient_p90", "flat_fraction", "black_fraction"):
        values = np.array([r[key] for r in rows if key in r], dtype=np.float64)
        if values.size:
            q = np.percentile(values, [0, 0.1, 99.9, 100])
            out[key] = {"min": round(float(q[0]), 4), "p0.1": round(float(q[1]), 4),
                        "p99.9": round(float(q[2]), 4), "max": round(float(q[3]), 4)}
    return out


def fit_statistics(files: list[Path]) -> dict:
    """The texture envelope, chest template and layout threshold of the quality gate, from real X-rays:
    what ``--fit`` prints for edge_runtime/quality.py. The template is the mean thumbnail of every
    second image; the thresholds are extreme percentiles over all of them."""
    signatures, thumbs = [], []
    for path in files:
        try:
            rgb = load_image(path)
        except CxrError:
            continue
        _, lum8 = quality._analysis_images(rgb)
        signatures.append(quality.spectrum_signature(lum8)[1:])
        thumbs.append(quality.layout_thumbnail(lum8))
    signatures, thumbs = np.array(signatures), np.array(thumbs)
    template = thumbs[::2].mean(axis=0)
    template /= np.linalg.norm(template)
    similarity = thumbs @ template
    return {
        "images": len(signatures),
        "SPECTRUM_LOW": [round(float(v), 3) for v in np.percentile(signatures, SPECTRUM_PERCENTILE, axis=0)],
        "SPECTRUM_HIGH": [round(float(v), 3) for v in np.percentile(signatures, 100 - SPECTRUM_PERCENTILE, axis=0)],
        "CHEST_TEMPLATE": [round(float(v), 4) for v in template],
        "MIN_CHEST_SIMILARITY": round(float(np.percentile(similarity, SIMILARITY_PERCENTILE)), 3),
    }


def run_corpus(corpus: dict) -> dict:
    """Gate the greyscale out-of-distribution corpus: catch rate overall and per category."""
    per_category: dict[str, dict] = {}
    missed = []
    for name, (category, grey) in corpus.items():
        rgb = np.repeat(grey[:, :, None], 3, axis=2)
        try:
            reason, rule, _, _ = gate(rgb)
        except CxrError as err:
            reason, rule = err.code, "decode"
        entry = per_category.setdefault(category, {"n": 0, "caught": 0, "by_rule": {}})
        entry["n"] += 1
        if reason:
            entry["caught"] += 1
            entry["by_rule"][rule] = entry["by_rule"].get(rule, 0) + 1
        else:
            missed.append(name)
    n = sum(e["n"] for e in per_category.values())
    caught = sum(e["caught"] for e in per_category.values())
    return {"set": "greyscale_ood_corpus", "n": n, "caught": caught, "catch_rate": round(caught / n, 4) if n else None,
            "missed": missed, "per_category": per_category}


def thresholds() -> dict:
    names = ("MIN_SIDE", "MIN_ASPECT", "MAX_ASPECT", "BLANK_STD", "MIN_DYNAMIC_RANGE", "MAX_COLOUR_FRACTION",
             "MAX_TINT", "MAX_EDGE_DENSITY", "MIN_GRADIENT_P90", "MIN_ENTROPY_BITS", "MAX_FLAT_FRACTION",
             "MAX_BLACK_FRACTION", "SPECTRUM_LOW", "SPECTRUM_HIGH", "MIN_CHEST_SIMILARITY")
    return {name: getattr(quality, name) for name in names}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.quality_gate",
        description="Measure the chest X-ray quality gate: false rejects on the shared real X-rays "
                    "(target <= 1%) and the share of real photos it catches (target >= 95%).")
    parser.add_argument("--data", type=Path, default=SHARED_DATA,
                        help="shared data folder (default: %(default)s or $CXR_SHARED_DATA)")
    parser.add_argument("--covid-every", type=int, default=1, metavar="N",
                        help="use every N-th image of each covid19/ folder (default: %(default)s, all)")
    parser.add_argument("--train-every", type=int, default=1, metavar="N",
                        help="use every N-th image of chest_xray/train (default: all)")
    parser.add_argument("--adult-every", type=int, default=1, metavar="N",
                        help="use every N-th image of adult_cxr (default: all)")
    parser.add_argument("--fit", action="store_true",
                        help="print the texture envelope, chest template and layout threshold fitted on the X-rays "
                             "(the constants in edge_runtime/quality.py), then exit")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="full JSON report (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print only the summary JSON on stdout")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return parser


def main(argv=None) -> int:
    """Run the measurement; exit code 0 when both targets are met, 1 when not, 2 without data."""
    from training.train import portable_path  # the report records paths relative to the repository

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    xray_sets = {
        "kermany_train": list_xrays(args.data / "chest_xray" / "train", args.train_every),
        "fullres_sample": list_xrays(args.data / "fullres_sample"),
        f"covid19_every_{args.covid_every}": list_xrays(args.data / "covid19", args.covid_every),
        f"adult_cxr_every_{args.adult_every}": list_xrays(args.data / "adult_cxr", args.adult_every),
    }
    if not any(xray_sets.values()):
        print(f"no X-rays found under {args.data}; pass --data", file=sys.stderr)
        return 2
    if args.fit:
        print(json.dumps(fit_statistics([f for files in xray_sets.values() for f in files])))
        return 0
    xrays, all_rows = [], []
    for name, files in xray_sets.items():
        if files:
            summary, rows = run_xrays(name, files)
            xrays.append(summary)
            all_rows.extend(rows)
    total = sum(s["n"] for s in xrays)
    total_rejected = sum(s["rejected"] for s in xrays)

    sk = skimage_photos()
    held_out = other_photos()
    photo_sets = [run_photos("skimage_sample_images", sk), run_photos("held_out_photos", held_out),
                  run_photos("greyscale_versions_of_colour_photos", greyscale_versions({**sk, **held_out}))]

    corpus = run_corpus(build_corpus())
    primary = [s for s in photo_sets[:2] if s["n"]]
    photos_n = sum(s["n"] for s in primary)
    photos_caught = sum(s["caught"] for s in primary)

    summary = {
        "xray_false_reject_rate": round(total_rejected / total, 5) if total else None,
        "xrays": total, "xrays_rejected": total_rejected,
        "photo_catch_rate": round(photos_caught / photos_n, 4) if photos_n else None,
        "photos": photos_n, "photos_caught": photos_caught,
        "photos_missed": [m for s in primary for m in s["missed"]],
        "greyscale_versions_catch_rate": photo_sets[2]["catch_rate"],
        "greyscale_versions_missed": photo_sets[2]["missed"],
        "ood_corpus": corpus["n"], "ood_corpus_caught": corpus["caught"], "ood_catch_rate": corpus["catch_rate"],
        "ood_missed": corpus["missed"],
        "ood_per_category": {k: f"{v['caught']}/{v['n']}" for k, v in corpus["per_category"].items()},
        "targets": {"false_reject_rate_max": MAX_FALSE_REJECT_RATE, "photo_catch_rate_min": MIN_PHOTO_CATCH_RATE,
                    "ood_catch_rate_min": MIN_OOD_CATCH_RATE},
        "per_set": {s["set"]: {k: s[k] for k in ("n", "rejected", "false_reject_rate", "by_rule")} for s in xrays},
        "gate_ms_median": {s["set"]: s["gate_ms_median"] for s in xrays},
    }
    met = (summary["xray_false_reject_rate"] is not None and summary["xray_false_reject_rate"] <= MAX_FALSE_REJECT_RATE
           and summary["photo_catch_rate"] is not None and summary["photo_catch_rate"] >= MIN_PHOTO_CATCH_RATE
           and summary["ood_catch_rate"] is not None and summary["ood_catch_rate"] >= MIN_OOD_CATCH_RATE)
    summary["targets_met"] = bool(met)
    report = {"summary": summary, "thresholds": thresholds(), "xray_sets": xrays, "photo_sets": photo_sets,
              "ood_corpus": corpus,
              "xray_extremes": extremes(all_rows), "data": portable_path(args.data)}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        for s in xrays:
            print(f"X-rays {s['set']:<24} {s['n']:>6}  rejected {s['rejected']:>4} "
                  f"({100 * (s['false_reject_rate'] or 0):.2f}%)  {s['by_rule'] or ''}")
        for s in photo_sets:
            if s["n"]:
                print(f"photos {s['set']:<36} {s['n']:>3}  caught {s['caught']:>3} "
                      f"({100 * s['catch_rate']:.1f}%)  missed: {', '.join(s['missed']) or '-'}")
        print(f"greyscale OOD corpus {corpus['n']:>4}  caught {corpus['caught']:>4} "
              f"({100 * (corpus['catch_rate'] or 0):.1f}%)  {summary['ood_per_category']}; missed: "
              f"{', '.join(corpus['missed'][:20]) or '-'}")
        print(f"false rejects on X-rays: {100 * summary['xray_false_reject_rate']:.2f}% (target <= 0.5%); "
              f"photos caught: {100 * (summary['photo_catch_rate'] or 0):.1f}% (target >= 95%); greyscale OOD "
              f"caught: {100 * (corpus['catch_rate'] or 0):.1f}% (target >= 95%){'' if met else '  TARGET MISSED'}")
        if args.out:
            print(f"full report: {args.out}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
