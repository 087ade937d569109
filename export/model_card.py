"""Writes a model card per exported model from its spec, validation report and parity report."""

from __future__ import annotations

import json
from pathlib import Path

from edge_runtime.spec import ModelSpec

KERMANY_CREDIT = (
    "Kermany D., Zhang K., Goldbaum M. (2018), \"Labeled Optical Coherence Tomography (OCT) and Chest X-Ray Images "
    "for Classification\", Mendeley Data v2, doi:10.17632/rscbjbr9sj.2, CC BY 4.0; paper: Kermany et al., Cell "
    "172(5):1122-1131 (2018).")
COVID_CREDIT = (
    "COVID-19 Radiography Database: Chowdhury et al., IEEE Access 8:132665 (2020); Rahman et al., Comput. Biol. "
    "Med. 132:104319 (2021); adult normals originally from RSNA / NIH ChestX-ray14. Research use; the original "
    "sources' terms apply.")

TASK_TEXT = {
    "binary": ("NORMAL vs PNEUMONIA on paediatric chest X-rays.", [KERMANY_CREDIT]),
    "etiology": ("NORMAL / BACTERIAL / VIRAL pneumonia on paediatric chest X-rays; the etiology labels come from the "
                 "data set's file names.", [KERMANY_CREDIT]),
    "covid": ("COVID-19 / NORMAL / PNEUMONIA. NORMAL mixes Kermany paediatric normals and adult normals; COVID-19 "
              "images are adults from other hospitals; PNEUMONIA images are all paediatric.",
              [KERMANY_CREDIT, COVID_CREDIT]),
}

LIMITS = {
    "binary": [],
    "etiology": ["Bacterial and viral pneumonia are hard to tell apart on a radiograph even for radiologists; the "
                 "file-name labels are the data set's, not laboratory-confirmed per image."],
    "covid": ["Confounder: every COVID-19 image is an adult from other hospitals, every PNEUMONIA image a child from "
              "Guangzhou. The model can learn age or hospital instead of disease (DeGrave et al., Nat. Mach. Intell. "
              "2021). Adult normals were mixed into NORMAL to remove the plainest shortcut (adult means COVID), but "
              "there is no adult non-COVID pneumonia here: an adult with bacterial pneumonia may well be called "
              "COVID-19. Do not use it to diagnose COVID-19."],
}


def _f(value) -> str:
    return "n/a" if value is None or value != value else f"{value:.3f}"


def write_model_card(spec: ModelSpec, validation: dict, parity: dict, out_path: str | Path,
                     by_source: dict | None = None) -> Path:
    """Render ``MODEL_CARD_<name>.md`` from the JSON records (no figure typed by hand).

    Args:
        by_source: Optional ``by_source`` block of a ``python -m training evaluate --split`` report.
    """
    what, credits = TASK_TEXT[spec.task]
    scr = validation["screening"]
    thr, half = scr["at_threshold"], scr["at_0.5"]
    training = dict(spec.training)
    lines = [
        f"# Model card: {spec.name}", "",
        "**Not a medical device.** A screening aid for trained staff; every result needs a clinician's review. "
        "It has not been cleared or approved by any regulator.", "",
        "## Model", "",
        f"- Task: {what}",
        f"- Labels (output order): {', '.join(spec.labels)}",
        f"- Input: {spec.input_height}x{spec.input_width} RGB uint8 (0-255), the grey level replicated in R, G, B; "
        f"image resized without keeping the aspect ratio ({spec.interpolation}); scaling to [0, 1] is inside the model.",
        f"- Decision: screening positive when 1 - P({spec.negative_label}) >= {spec.threshold:.4f} ({spec.threshold_rule}); "
        "the label is then the likeliest abnormal class.",
        "- Architecture: compact depthwise-separable CNN trained from scratch (no pretrained weights), global average "
        "pooling and one dense softmax layer, so the heatmap (CAM) equals Grad-CAM.",
        f"- Training: `{training.get('command', '')}` on `{training.get('data', '')}`, seed {training.get('seed')}, "
        f"commit {str(training.get('commit', ''))[:12]}, best epoch {training.get('best_epoch')} of "
        f"{training.get('epochs_run')}, {training.get('fit_seconds')} s on {training.get('machine', '')}.",
        "", "## Data and credit", "",
        *[f"- {c}" for c in credits],
        "", "## Validation (grouped split of the training data)", "",
        f"These are **validation** figures on {validation['n']} images held out from the training data by patient "
        "and by near-duplicate, not test figures: the official Kermany test split was not available. On Kermany, "
        "validation scores are known to overstate test scores (train/test distribution shift).", "",
        f"Screening ROC AUC {_f(scr['roc_auc'])} (95% bootstrap CI {_f(scr['roc_auc_ci95'][0])}-"
        f"{_f(scr['roc_auc_ci95'][1])})" + (f"; one-vs-rest macro AUC {_f(validation['macro_auc'])}"
                                            if 'macro_auc' in validation else "") + ".", "",
        "| threshold | sensitivity | specificity | PPV | NPV | F1 | accuracy | class accuracy |",
        "|---|---|---|---|---|---|---|---|",
        f"| shipped {thr['threshold']:.4f} | {_f(thr['sensitivity'])} | {_f(thr['specificity'])} | {_f(thr['ppv'])} | "
        f"{_f(thr['npv'])} | {_f(thr['f1'])} | {_f(thr['accuracy'])} | {_f(thr['multiclass_accuracy'])} |",
        f"| 0.5 | {_f(half['sensitivity'])} | {_f(half['specificity'])} | {_f(half['ppv'])} | {_f(half['npv'])} | "
        f"{_f(half['f1'])} | {_f(half['accuracy'])} | {_f(half['multiclass_accuracy'])} |",
        *(["", "By source folder (validation side, shipped threshold):", "",
            "| source | images | true label | correct | called " + " / ".join(spec.labels) + " |",
            "|---|---|---|---|---|"]
          + [f"| {src} | {row['n']} | {row['true_label']} | {_f(row['correct'])} | "
             + " / ".join(str(row["called"][label]) for label in spec.labels) + " |"
             for src, row in (by_source or {}).items()] if by_source else []),
        "", "## Exported files and parity with the Keras model", "",
        "| file | size KB | top-1 agreement | delta AUC | max prob diff | CAM r |", "|---|---|---|---|---|---|",
    ]
    for filename, s in parity["files"].items():
        lines.append(f"| {filename} | {s['size_bytes'] / 1024:.1f} | {s['top1_agreement']:.4f} | {s['auc_delta']:+.4f} | "
                     f"{s['max_prob_diff']:.4f} | {_f(s.get('cam_pearson_r_mean'))} |")
    lines += [
        "", "## Intended use", "",
        "Offline screening support where no radiologist is at hand: flag chest X-rays that deserve a clinician's "
        "attention first. Not for diagnosis, not for excluding disease, not for treatment decisions.", "",
        "## Known limits", "",
        "- Trained on children aged one to five from one hospital (Guangzhou Women and Children's Medical Center): "
        "not shown to work on adults, on other hospitals' scanners, or on film photographed with a phone.",
        "- Validation only (see above); no external test set, no prospective study.",
        "- Anterior-posterior paediatric films; lateral views, CT slices and other body parts are out of scope (the "
        "runtime's quality gate refuses obvious non-X-rays, not every wrong X-ray).",
        *[f"- {text}" for text in LIMITS[spec.task]],
    ]
    out_path = Path(out_path)
    out_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out_path


def load_by_source(train_dir: Path) -> dict | None:
    """The per-source breakdown saved by ``python -m training evaluate --split ... --name validation_by_source``."""
    path = Path(train_dir) / "validation_by_source.json"
    return json.loads(path.read_text(encoding="utf-8")).get("by_source") if path.exists() else None


def write_model_card_files(spec_path: Path, train_dir: Path, parity_path: Path, out_path: Path) -> Path:
    """Re-render a card from files on disk (after adding a by-source evaluation, for instance)."""
    return write_model_card(ModelSpec.load(spec_path), json.loads((Path(train_dir) / "validation.json").read_text()),
                            json.loads(Path(parity_path).read_text()), out_path, load_by_source(train_dir))
