"""Writes a model card per exported model from its spec, validation report and parity report."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge_runtime.errors import CxrError
from edge_runtime.serialize import threshold_rule
from edge_runtime.spec import ModelSpec
from export.parity import bias_correction_sentence, float_head_sentence, gate_sentence
from training.data import COVID19, TASKS


def _population_check_line(check: dict | None) -> list[str]:
    """The out-of-population check's measured accuracy, for a model that carries one."""
    if not check or "validation" not in check:
        return []
    v = check["validation"]
    return [f"- Out-of-population notice: the runtime flags a film that looks like a film of {check['other']} (a "
            f"logistic regression on the model's pooled features; `population_check.md`). On held-out films it flagged "
            f"{v['adults_caught']:.1%} of the films of {check['other']} from the sources it was fitted on, "
            f"{v['unseen_adult_source_caught']:.1%} of an adult source it never saw (COVID-19 films) and "
            f"{v['children_flagged']:.1%} of the films of {check['expected']}. "
            "It works with the `*_cam.tflite` files (it reads their feature map); it warns, it does not refuse."]


def _population_limits(populations: list, sources=()) -> list[str]:
    if "adults" in populations:
        covid = any(str(source).startswith(COVID19) for source in sources)
        return ["- Validated on held-out films of the same sources it was trained on: children aged one to five from "
                "one hospital (Guangzhou Women and Children's Medical Center) and adults from RSNA / NIH ChestX-ray14 "
                "(North America)"
                + (", and COVID-19 films collected from several other hospitals and public sets (COVID-19 Radiography "
                   "Database)" if covid else "")
                + ". Not shown to work on other hospitals' scanners, on film photographed with a phone, "
                "or prospectively; older children and adolescents are not represented."]
    return ["- Trained and validated on children aged one to five from one hospital (Guangzhou Women and Children's "
            "Medical Center) only: not shown to work on adults, on other hospitals' scanners, or on film "
            "photographed with a phone."]


def _context_lines(context: dict | None) -> list[str]:
    """What this model follows on adult films, lungs or surroundings (``context.json`` of context_check.py)."""
    if not context or "swapped" not in context:
        return []
    sw, edits = context["swapped"], context.get("edits", {})
    outside = edits.get("context outside the lung box")
    return [f"- Lungs or surroundings, measured on this model (`training/experiments/context_check.py`, "
            f"{context['films']} held-out adult films with a lung mask"
            + (f", {context['pneumonia']} pneumonia and {context['normal']} normal" if "pneumonia" in context else "")
            + "): given one film's lungs set in another film's "
            f"surroundings ({sw['films']} films), its score ranks them by the lungs' label with AUC "
            f"{sw['auc_lungs_label']:.2f} (1 = follows the lungs alone, 0 = the surroundings alone, 0.5 = as much one "
            "as the other)"
            + (f"; with the whole box around both lungs blacked out, AUC {outside:.2f} (0.5 = nothing read from what "
               "is left)" if outside is not None else "")
            + ". A proxy for the portable-film shortcut on one hospital system's films, not a measure of how the model "
            "does on another hospital's."]


def _f(value) -> str:
    return "n/a" if value is None or value != value else f"{value:.3f}"


def _population_lines(validation: dict) -> list[str]:
    pops = validation.get("by_population") or {}
    if not pops:
        return []
    lines = ["", "By population, each alone (validation side, shipped threshold):", "",
             "| population | images | screening AUC (95% CI) | sensitivity | specificity | PPV | NPV |",
             "|---|---|---|---|---|---|---|"]
    for pop, r in pops.items():
        s, b = r["screening"], r["screening"]["at_threshold"]
        lines.append(f"| {pop} | {r['n']} | {_f(s['roc_auc'])} ({_f(s['roc_auc_ci95'][0])}-{_f(s['roc_auc_ci95'][1])}) | "
                     f"{_f(b['sensitivity'])} | {_f(b['specificity'])} | {_f(b['ppv'])} | {_f(b['npv'])} |")
    return lines


def _localization_lines(validation: dict) -> list[str]:
    loc = validation.get("lung_localization") or {}
    if not loc:
        return []
    lines = ["", "Does the heatmap point at the lungs? (validation films with a lung mask; the heatmap of the shown "
             "label)", "", "| shown label, population | films | heat inside the lungs | hottest cell inside | "
             "lungs' share of the image |", "|---|---|---|---|---|"]
    lines += [f"| {key} | {r['images']} | {_f(r['mass_inside_mean'])} | {_f(r['hottest_inside'])} | "
              f"{_f(r['lung_area_mean'])} |" for key, r in loc.items()]
    return lines


def _unseen_lines(validation: dict) -> list[str]:
    unseen = validation.get("unseen_sources") or {}
    if not unseen:
        return []
    lines = ["", "Films from sources never trained on (every one of them abnormal):", ""]
    for name, r in unseen.items():
        lines.append(f"- {name}: {r['n']} images, called " + ", ".join(
            f"{label} {count} ({count / max(r['n'], 1):.1%})" for label, count in r["called"].items()))
    return lines


def shift_summary(shift: dict) -> list[dict]:
    """Rows (family, severity, roc_auc, sensitivity, specificity): the original, then each family's strongest."""
    rows = []
    for family, block in (shift.get("families") or {}).items():
        results = block.get("results") or []
        if not rows and results:
            base = results[0]["overall"]
            rows.append({"family": "original", "severity": 0, **{k: base.get(k) for k in
                                                                ("roc_auc", "sensitivity", "specificity")}})
        if results:
            last = results[-1]
            rows.append({"family": family, "severity": last["severity"],
                         **{k: last["overall"].get(k) for k in ("roc_auc", "sensitivity", "specificity")}})
    return rows


def _shift_lines(shift: dict) -> list[str]:
    """The strongest severity of each family of ``python -m training shift`` (shift.md has every severity)."""
    rows = shift_summary(shift)
    if not rows:
        return []
    lines = ["", "Acquisition-shift check: the validation side re-rendered as other scanners and digitisers would "
             "(`shift.md` beside the Keras model has every severity and every source):", "",
             "| perturbation | severity | screening AUC | sensitivity | specificity |", "|---|---|---|---|---|"]
    lines += [f"| {r['family']} | {r['severity']} | {_f(r['roc_auc'])} | {_f(r['sensitivity'])} | "
              f"{_f(r['specificity'])} |" for r in rows]
    return lines


def write_model_card(spec: ModelSpec, validation: dict, parity: dict, out_path: str | Path,
                     by_source: dict | None = None, shift: dict | None = None, context: dict | None = None) -> Path:
    """Render ``MODEL_CARD_<name>.md`` from the JSON records (no figure typed by hand).

    Args:
        by_source: Optional ``by_source`` block of a ``python -m training evaluate --split ...`` report
            (default: the validation report's own).
        shift: Optional ``shift.json`` of ``python -m training shift``.
        context: Optional ``context.json`` of ``training/experiments/context_check.py``.
    """
    # Title, description and populations travel in the spec; specs older than version 2 lack them.
    task = TASKS.get(spec.task)
    what = spec.description or spec.training.get("data_description") or spec.task
    populations = list(spec.populations) or spec.training.get("populations") or ["children"]
    scr = validation["screening"]
    thr, half = scr["at_threshold"], scr["at_0.5"]
    training = dict(spec.training)
    lines = [
        f"# Model card: {spec.name}", "",
        "**Not a medical device.** A screening aid for trained staff; every result needs a clinician's review. "
        "It has not been cleared or approved by any regulator.", "",
        "## Model", "",
        *([f"- Title: {spec.title}"] if spec.title else []),
        f"- Task: {what}",
        f"- Labels (output order): {', '.join(spec.labels)}",
        f"- Input: {spec.input_height}x{spec.input_width} RGB uint8 (0-255), the grey level replicated in R, G, B; "
        f"image resized without keeping the aspect ratio ({spec.interpolation}); scaling to [0, 1] is inside the model.",
        f"- Decision: {threshold_rule(spec.negative_label, spec.threshold)}; the label is then the likeliest abnormal "
        f"class. Threshold: {spec.threshold_rule}.",
        "- Architecture: compact depthwise-separable CNN trained from scratch (no pretrained weights), global average "
        "pooling and one dense softmax layer, so the heatmap (CAM) equals Grad-CAM.",
        f"- Training: `{training.get('command', '')}` on `{training.get('data', '')}`, seed {training.get('seed')}, "
        f"commit {str(training.get('commit', ''))[:12]}, best epoch {training.get('best_epoch')} of "
        f"{training.get('epochs_run')}, {training.get('fit_seconds')} s on {training.get('machine', '')}.",
        "", "## Data and credit", "",
        *[f"- {c}" for c in (task.credits if task else ())],
        "", "## Validation (grouped split of the training data)", "",
        f"These are **validation** figures on {validation['n']} images held out from the training data by patient "
        "and by near-duplicate, not test figures: no official test split or outside hospital's films were available "
        "here. On Kermany, validation scores are known to overstate test scores (train/test distribution shift)."
        + (f" {validation['split']}." if validation.get("split") else ""), "",
        f"Screening ROC AUC {_f(scr['roc_auc'])} (95% bootstrap CI {_f(scr['roc_auc_ci95'][0])}-"
        f"{_f(scr['roc_auc_ci95'][1])})" + (f"; one-vs-rest macro AUC {_f(validation['macro_auc'])}"
                                            if 'macro_auc' in validation else "") + ".", "",
        "| threshold | sensitivity | specificity | PPV | NPV | F1 | accuracy | class accuracy |",
        "|---|---|---|---|---|---|---|---|",
        f"| shipped {thr['threshold']:.4f} | {_f(thr['sensitivity'])} | {_f(thr['specificity'])} | {_f(thr['ppv'])} | "
        f"{_f(thr['npv'])} | {_f(thr['f1'])} | {_f(thr['accuracy'])} | {_f(thr['multiclass_accuracy'])} |",
        f"| 0.5 | {_f(half['sensitivity'])} | {_f(half['specificity'])} | {_f(half['ppv'])} | {_f(half['npv'])} | "
        f"{_f(half['f1'])} | {_f(half['accuracy'])} | {_f(half['multiclass_accuracy'])} |",
        *_population_lines(validation),
        *(["", "By source folder (validation side, shipped threshold):", "",
            "| source | images | true label | correct | called " + " / ".join(spec.labels) + " |",
            "|---|---|---|---|---|"]
          + [f"| {src} | {row['n']} | {row['true_label']} | {_f(row['correct'])} | "
             + " / ".join(str(row["called"][label]) for label in spec.labels) + " |"
             for src, row in (by_source or validation.get("by_source") or {}).items()]
          if (by_source or validation.get("by_source")) else []),
        *_localization_lines(validation),
        *_unseen_lines(validation),
        *(_shift_lines(shift) if shift else []),
        "", "## Exported files and parity with the Keras model", "",
        "| file | size KB | top-1 agreement | decision agreement | delta AUC | max prob diff | CAM r |",
        "|---|---|---|---|---|---|---|",
    ]
    for filename, s in parity["files"].items():
        lines.append(f"| {filename} | {s['size_bytes'] / 1024:.1f} | {s['top1_agreement']:.4f} | "
                     f"{s['decision_agreement']:.4f} | {s['auc_delta']:+.4f} | {s['max_prob_diff']:.4f} | "
                     f"{_f(s.get('cam_pearson_r_mean'))} |")
    lines += ["", gate_sentence(), "", bias_correction_sentence(parity), "", float_head_sentence(parity)]
    lines += [
        "", "## Intended use", "",
        "Offline screening support where no radiologist is at hand: flag chest X-rays that deserve a clinician's "
        "attention first. Not for diagnosis, not for excluding disease, not for treatment decisions.", "",
        "## Known limits", "",
        *_population_limits(populations, spec.training.get("sources") or ()),
        *_population_check_line(spec.population_check),
        "- Validation only (see above); no external test set, no prospective study.",
        "- Frontal (PA or AP) chest films only; lateral views, CT slices and other body parts are out of scope (the "
        "runtime's quality gate refuses obvious non-X-rays, not every wrong X-ray).",
        *[f"- {text}" for text in (task.limits if task else ())],
        *_context_lines(context),
    ]
    out_path = Path(out_path)
    out_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out_path


def load_by_source(train_dir: Path) -> dict | None:
    """The per-source breakdown saved by ``python -m training evaluate --split ... --name validation_by_source``."""
    path = Path(train_dir) / "validation_by_source.json"
    return json.loads(path.read_text(encoding="utf-8")).get("by_source") if path.exists() else None


def write_model_card_for_run(spec: ModelSpec, train_dir: Path, parity: dict, out_path: Path) -> Path | None:
    """Render a card from a training run's records: ``validation.json``, and ``validation_by_source.json``,
    ``shift.json`` and ``context.json`` when present. Returns None when the run has no ``validation.json``."""
    train_dir = Path(train_dir)
    validation_path = train_dir / "validation.json"
    if not validation_path.exists():
        return None
    shift, context = (json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
                      for path in (train_dir / "shift.json", train_dir / "context.json"))
    return write_model_card(spec, json.loads(validation_path.read_text(encoding="utf-8")), parity, out_path,
                            load_by_source(train_dir), shift, context)


def write_model_card_files(spec_path: Path, train_dir: Path, parity_path: Path, out_path: Path) -> Path:
    """Re-render a card from files on disk (after a shift check or a by-source evaluation, for instance).

    Raises:
        FileNotFoundError: the spec, the parity report or the run's ``validation.json`` is missing.
    """
    card = write_model_card_for_run(ModelSpec.load(spec_path), train_dir,
                                    json.loads(Path(parity_path).read_text(encoding="utf-8")), out_path)
    if card is None:
        raise FileNotFoundError(f"{Path(train_dir) / 'validation.json'} not found: a card needs the validation report")
    return card


def write_shipped_card(assets: Path, model: str) -> Path:
    """Re-render ``MODEL_CARD_<name>.md`` of a shipped model from ``assets`` (its spec, parity report and
    ``training/<name>/`` records); ``model`` is the model name or its training folder."""
    name = Path(model).name
    assets = Path(assets)
    return write_model_card_files(assets / f"{name}.spec.json", assets / "training" / name,
                                  assets / f"{name}_parity.json", assets / f"MODEL_CARD_{name}.md")


def results_rows(assets: Path) -> list[str]:
    """README results table: one row per shipped model and population, from the files on disk."""
    lines = ["| model | held-out side | population | images | screening AUC (95% CI) | threshold | sensitivity | "
             "specificity | PPV | NPV | int8 KB | int8 agreement | int8 ΔAUC | train wall time |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for spec_path in sorted(Path(assets).glob("*.spec.json")):
        spec = ModelSpec.load(spec_path)
        train_dir = Path(assets) / "training" / spec.name
        validation_path = train_dir / "validation.json"
        parity_path = Path(assets) / f"{spec.name}_parity.json"
        if not validation_path.exists() or not parity_path.exists():
            continue
        validation = json.loads(validation_path.read_text(encoding="utf-8"))
        parity = json.loads(parity_path.read_text(encoding="utf-8"))["files"].get(f"{spec.name}_int8.tflite", {})
        t = spec.training
        wall = f"{t.get('fit_seconds', 0) / 60:.1f} min ({t.get('epochs_run')} epochs, best {t.get('best_epoch')})"
        groups = [("all", validation)] + list((validation.get("by_population") or {}).items())
        if len(groups) == 2:  # one population: the pooled row says it all
            groups = [((t.get("populations") or ["all"])[0], validation)]
        for pop, r in groups:
            s, b = r["screening"], r["screening"]["at_threshold"]
            lines.append(
                f"| {spec.task} | validation | {pop} | {r['n']} | {_f(s['roc_auc'])} ({_f(s['roc_auc_ci95'][0])}-"
                f"{_f(s['roc_auc_ci95'][1])}) | {spec.threshold:.3f} | {_f(b['sensitivity'])} | {_f(b['specificity'])} | "
                f"{_f(b['ppv'])} | {_f(b['npv'])} | "
                + (f"{parity['size_bytes'] / 1024:.0f} | {parity['top1_agreement']:.4f} | {parity['auc_delta']:+.4f} | "
                   f"{wall} |" if pop in ("all", groups[0][0]) and parity else "| | | |"))
    return lines


def main(argv=None) -> int:
    """``python -m export.model_card [--assets DIR] [--write NAME ...]``: the README results table, or cards."""
    parser = argparse.ArgumentParser(
        prog="python -m export.model_card",
        description="Print the README's results table from the shipped files, or (--write) re-render shipped "
                    "models' cards from their spec, parity report and training records (after a shift check or a "
                    "by-source evaluation, for instance).")
    parser.add_argument("--assets", type=Path, default=Path(__file__).resolve().parent.parent / "android_assets",
                        help="folder of the shipped models (default: android_assets)")
    parser.add_argument("--write", nargs="+", metavar="MODEL", default=None,
                        help="re-render MODEL_CARD_<name>.md in --assets for these models (a name such as "
                             "cxr_binary_160, or its training folder)")
    args = parser.parse_args(argv)
    if args.write:
        try:
            for model in args.write:
                print(write_shipped_card(args.assets, model))
        except (FileNotFoundError, CxrError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0
    print("\n".join(results_rows(args.assets)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
