"""The Android README's snippets use the shipped binary model's threshold (it moves with every retrain)."""

from __future__ import annotations

import json
import re

from conftest import ASSETS


def test_the_android_snippets_apply_the_shipped_threshold():
    threshold = json.loads((ASSETS / "cxr_binary_160.spec.json").read_text(encoding="utf-8"))["threshold"]
    text = (ASSETS / "README.md").read_text(encoding="utf-8")
    constants = [float(v) for v in re.findall(r"(\d\.\d+)f\b", text)]
    assert constants, "no Kotlin float constant in android_assets/README.md"
    assert all(abs(v - threshold) < 5e-5 for v in constants), (constants, threshold)
