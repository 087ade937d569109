"""One task definition: its title, description and populations reach the spec, the model card and the back-fill."""

from __future__ import annotations

import json

import pytest

from conftest import ASSETS
from edge_runtime.errors import ModelError
from edge_runtime.spec import SPEC_VERSION, ModelSpec
from training.backfill import backfill_spec, fill_task_fields
from training.data import TASKS

BINARY_DIR = ASSETS / "training" / "cxr_binary_160"
needs_binary_assets = pytest.mark.skipif(not (BINARY_DIR / "validation.json").is_file(),
                                         reason="shipped binary model records not found")


def _v1_spec(**changes) -> ModelSpec:
    """A spec as training wrote it before spec version 2: no title, description or populations."""
    return ModelSpec(name="cxr_binary_64", task="binary", labels=("NORMAL", "PNEUMONIA"), threshold=0.3,
                     spec_version=1, training={"populations": ["children"], "seed": 0}).replace(**changes)


def test_every_task_defines_what_the_spec_and_the_card_need():
    for name, task in TASKS.items():
        assert task.name == name
        assert task.title and task.description and task.credits, name
        assert task.populations and set(task.populations) <= {"adults", "children"}, name
        fields = task.spec_fields()
        assert fields == {"title": task.title, "description": task.description, "populations": task.populations}
    assert list(TASKS) == ["binary", "etiology", "covid"]  # the display order


def test_fill_task_fields_takes_the_recorded_populations_and_keeps_what_is_set():
    spec, filled = fill_task_fields(_v1_spec())
    assert filled == ["description", "populations", "title"]
    assert spec.spec_version == SPEC_VERSION
    assert (spec.title, spec.description) == (TASKS["binary"].title, TASKS["binary"].description)
    assert spec.populations == ("children",)  # what the run saw, not the task's two populations
    kept, filled = fill_task_fields(_v1_spec(title="Own title", training={}))
    assert kept.title == "Own title" and "title" not in filled
    assert kept.populations == TASKS["binary"].populations
    with pytest.raises(ModelError, match="not one of"):
        fill_task_fields(_v1_spec(task="unknown"))


def test_backfill_rewrites_a_training_spec_and_refuses_an_exported_one(tmp_path):
    _v1_spec().save(tmp_path / "spec.json")
    path, filled = backfill_spec(tmp_path)
    assert path == tmp_path / "spec.json" and filled == ["description", "populations", "title"]
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["spec_version"] == SPEC_VERSION and data["title"] == TASKS["binary"].title
    assert data["populations"] == ["children"] and data["training"]["populations"] == ["children"]
    assert backfill_spec(path)[1] == []  # nothing left to fill
    _v1_spec(files={"cxr_binary_64_int8.tflite": "0" * 64}).save(tmp_path / "cxr_binary_64.spec.json")
    with pytest.raises(ModelError, match="re-export"):
        backfill_spec(tmp_path / "cxr_binary_64.spec.json")


def _card(spec: ModelSpec, tmp_path, **records) -> str:
    from export.model_card import write_model_card

    validation = json.loads((BINARY_DIR / "validation.json").read_text(encoding="utf-8"))
    parity = json.loads((ASSETS / "cxr_binary_160_parity.json").read_text(encoding="utf-8"))
    return write_model_card(spec, validation, parity, tmp_path / "card.md", **records).read_text(encoding="utf-8")


@needs_binary_assets
def test_model_card_reads_title_description_and_populations_from_the_spec(tmp_path):
    spec = ModelSpec.load(ASSETS / "cxr_binary_160.spec.json").replace(
        title="Card title", description="Card description.", populations=("adults", "children"), training={})
    card = _card(spec, tmp_path)
    assert "- Title: Card title" in card and "- Task: Card description." in card
    assert "and adults from RSNA / NIH" in card  # the two-population limits, from spec.populations
    assert TASKS["binary"].credits[0] in card and TASKS["binary"].limits[0] in card


@needs_binary_assets
def test_model_card_of_an_older_spec_falls_back_to_the_training_record_then_the_task_name(tmp_path):
    spec = ModelSpec.load(ASSETS / "cxr_binary_160.spec.json").replace(
        title="", description="", populations=(), training={"data_description": "Recorded description"})
    card = _card(spec, tmp_path)
    assert "- Title:" not in card and "- Task: Recorded description" in card
    unknown = _card(spec.replace(task="fourth", training={}), tmp_path)  # a task this checkout does not define
    assert "- Task: fourth" in unknown


@needs_binary_assets
def test_model_card_states_what_its_own_context_check_measured(tmp_path):
    spec = ModelSpec.load(ASSETS / "cxr_binary_160.spec.json")
    context = {"films": 12, "edits": {"context outside the lung box": 0.4321},
               "swapped": {"films": 10, "auc_lungs_label": 0.8765, "auc_context_label": 0.1235}}
    card = _card(spec, tmp_path, context=context)
    line = next(x for x in card.splitlines() if x.startswith("- Lungs or surroundings"))
    assert "12 held-out adult films" in line and "(10 films)" in line
    assert "AUC 0.88 (1 = follows the lungs alone" in line and "blacked out, AUC 0.43" in line
    assert "- Lungs or surroundings" not in _card(spec, tmp_path)  # not measured: not claimed
    covid_sources = spec.replace(training={**spec.training, "sources": ["covid19/COVID19 (adults)"]})
    assert "and COVID-19 films collected" in _card(covid_sources, tmp_path)  # validated on what it was trained on
    assert "and COVID-19 films collected" not in _card(spec, tmp_path)
    shipped = BINARY_DIR / "context.json"
    if shipped.is_file():  # the shipped card carries the shipped model's own figure
        figure = json.loads(shipped.read_text(encoding="utf-8"))["swapped"]["auc_lungs_label"]
        shipped_card = (ASSETS / "MODEL_CARD_cxr_binary_160.md").read_text(encoding="utf-8")
        assert f"lungs' label with AUC {figure:.2f}" in shipped_card


def test_model_card_cli_re_renders_a_shipped_card(tmp_path):
    import shutil

    from export.model_card import main

    name = "cxr_binary_160"
    if not (ASSETS / f"{name}_parity.json").is_file():
        pytest.skip("shipped binary model records not found")
    (tmp_path / "training" / name).mkdir(parents=True)
    for path in (ASSETS / f"{name}.spec.json", ASSETS / f"{name}_parity.json"):
        shutil.copy(path, tmp_path)
    for path in (ASSETS / "training" / name).glob("*.json"):
        shutil.copy(path, tmp_path / "training" / name)
    assert main(["--assets", str(tmp_path), "--write", str(tmp_path / "training" / name)]) == 0
    assert (tmp_path / f"MODEL_CARD_{name}.md").read_text(encoding="utf-8").startswith(f"# Model card: {name}")
    assert main(["--assets", str(tmp_path), "--write", "cxr_none_160"]) == 2
