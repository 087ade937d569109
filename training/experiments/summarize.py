"""One EXPERIMENTS.md row per run folder: python training/experiments/summarize.py runs/ablate/R1_s0 ...

Reads what `python -m training train` (validation.json) and `python -m training shift` (shift.json, when
present) wrote; prints markdown: primary metric (mean of the children's and adults' screening AUC on the
checkpoint side), each population's AUC, adults' specificity and sensitivity at the run's own threshold, the
heatmap figures of positive calls (worst population) and rule 5's operating-point drift.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from training.shift import operating_point_drift  # noqa: E402

HEADER = ("| run | primary | children AUC | adults AUC | adults spec. | adults sens. | threshold | "
          "hottest cell in lungs | heat in lungs | drift (worst family) |")


def _f(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def row(run: Path) -> str:
    val = json.loads((run / "validation.json").read_text())
    pops = val["by_population"]
    auc = {p: pops[p]["screening"]["roc_auc"] for p in ("children", "adults")}
    adults = pops["adults"]["screening"]["at_threshold"]
    positives = [v for k, v in val.get("lung_localization", {}).items() if k.startswith("called PNEUMONIA")]
    hottest = min((v["hottest_inside"] for v in positives), default=None)
    mass = min((v["mass_inside_mean"] for v in positives), default=None)
    drift = "not run"
    if (run / "shift.json").is_file():
        result = operating_point_drift(json.loads((run / "shift.json").read_text()))
        drift = f"{result['mean']:.3f} ({result['worst']} {result['families'][result['worst']]:.3f})"
    return (f"| {run.name} | {_f((auc['children'] + auc['adults']) / 2)} | {_f(auc['children'])} | "
            f"{_f(auc['adults'])} | {_f(adults['specificity'])} | {_f(adults['sensitivity'])} | "
            f"{adults['threshold']:.3f} | {_f(hottest)} | {_f(mass)} | {drift} |")


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    print(HEADER)
    print("|" + "---|" * HEADER.count(" | ") + "---|")
    for name in argv:
        print(row(Path(name)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
