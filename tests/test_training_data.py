"""Data pipeline: reader errors, class maps, patient and duplicate grouping, leak-free split."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import write_synthetic_folder
from edge_runtime.spec import ModelSpec
from training.data import (TASKS, DataError, check_no_leak, group_samples, list_samples, load_dataset,
                           load_split, patient_key, save_split, split_indices)

SPEC = ModelSpec(name="t", task="binary", labels=("NORMAL", "PNEUMONIA"), input_height=32, input_width=32)


def test_patient_keys_follow_kermany_names():
    assert patient_key("PNEUMONIA", "person1000_bacteria_2931.jpeg") == "PNEUMONIA:person1000"
    assert patient_key("PNEUMONIA", "person447_virus_921_1.jpeg") == "PNEUMONIA:person447"
    assert patient_key("NORMAL", "IM-0115-0001.jpeg") == "NORMAL:IM-0115"
    assert patient_key("NORMAL", "NORMAL2-IM-1345-0001-0002.jpeg") == "NORMAL:NORMAL2-IM-1345"
    assert patient_key("covid19/COVID19", "COVID-12.jpeg") == "covid19/COVID19:COVID-12.jpeg"


def test_missing_folder_is_a_specific_error(tmp_path):
    (tmp_path / "NORMAL").mkdir()
    Image.new("L", (40, 40), 90).save(tmp_path / "NORMAL" / "IM-0001-0001.jpeg")
    with pytest.raises(DataError, match="needs folder .*PNEUMONIA, which does not exist"):
        list_samples(tmp_path, TASKS["binary"])


def test_empty_class_is_an_error(tmp_path):
    write_synthetic_folder(tmp_path, per_class=4)
    for f in (tmp_path / "PNEUMONIA").glob("*_virus_*"):
        f.unlink()
    with pytest.raises(DataError, match="found 0 images for class 'VIRAL'"):
        list_samples(tmp_path, TASKS["etiology"])


def test_etiology_labels_come_from_file_names(tmp_path):
    write_synthetic_folder(tmp_path, per_class=6)
    samples = list_samples(tmp_path, TASKS["etiology"])
    labels = TASKS["etiology"].labels
    for s in samples:
        name = s.relpath.split("/")[-1]
        expected = "NORMAL" if s.relpath.startswith("NORMAL") else ("BACTERIAL" if "_bacteria_" in name else "VIRAL")
        assert labels[s.label] == expected


def test_covid_classes_draw_on_several_folders(tmp_path):
    write_synthetic_folder(tmp_path / "chest_xray" / "train", per_class=4)
    for sub in ("covid19/COVID19", "covid19/NORMAL_ADULT", "adult_cxr/NORMAL", "adult_cxr/PNEUMONIA"):
        (tmp_path / sub).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (40, 40), 30 * i).save(tmp_path / sub / f"{sub.split('/')[1]}-{i}.png")
    samples = list_samples(tmp_path, TASKS["covid"])
    labels = TASKS["covid"].labels
    normal = [s.relpath for s in samples if labels[s.label] == "NORMAL"]
    assert any(p.startswith("chest_xray/train/NORMAL/") for p in normal)
    assert any(p.startswith("covid19/NORMAL_ADULT/") for p in normal)
    assert any(p.startswith("adult_cxr/NORMAL/") for p in normal)
    pneumonia = [s for s in samples if labels[s.label] == "PNEUMONIA"]
    assert {s.population for s in pneumonia} == {"adults", "children"}  # adult non-COVID pneumonia (issue 9)
    assert sum(labels[s.label] == "COVID19" for s in samples) == 3


def test_unreadable_file_is_skipped_and_counted(tmp_path, caplog):
    write_synthetic_folder(tmp_path, per_class=6)
    (tmp_path / "NORMAL" / "IM-9999-0001.jpeg").write_bytes(b"not a jpeg at all")
    dataset = load_dataset(tmp_path, TASKS["binary"], SPEC, cache_dir=tmp_path / "cache", progress=False)
    assert [s[0] for s in dataset.skipped] == ["NORMAL/IM-9999-0001.jpeg"]
    assert len(dataset.samples) == 12
    assert "IM-9999-0001.jpeg" in caplog.text


def test_duplicates_and_patients_are_grouped(tmp_path):
    write_synthetic_folder(tmp_path, per_class=20, patients_per_class=20)
    # The same radiograph filed under another patient, re-encoded: must join the original's group.
    source = tmp_path / "PNEUMONIA" / "person3_virus_3.jpeg"
    Image.open(source).save(tmp_path / "PNEUMONIA" / "person777_virus_1.jpeg", quality=80)
    shutil.copy(source, tmp_path / "PNEUMONIA" / "person778_virus_2.jpeg")
    dataset = load_dataset(tmp_path, TASKS["binary"], SPEC, cache_dir=tmp_path / "cache", progress=False)
    index = {s.relpath: i for i, s in enumerate(dataset.samples)}
    g = dataset.groups
    assert g[index["PNEUMONIA/person3_virus_3.jpeg"]] == g[index["PNEUMONIA/person777_virus_1.jpeg"]]
    assert g[index["PNEUMONIA/person3_virus_3.jpeg"]] == g[index["PNEUMONIA/person778_virus_2.jpeg"]]
    # Distinct synthetic images of distinct patients stay apart.
    assert g[index["NORMAL/IM-0001-0001.jpeg"]] != g[index["NORMAL/IM-0002-0002.jpeg"]]


def test_split_keeps_groups_on_one_side_and_is_reused(tmp_path):
    write_synthetic_folder(tmp_path, per_class=40, patients_per_class=8)
    dataset = load_dataset(tmp_path, TASKS["binary"], SPEC, cache_dir=tmp_path / "cache", progress=False)
    train, val = split_indices(dataset, 0.25, seed=1)
    check_no_leak(dataset, train, val)
    assert set(train).isdisjoint(val) and len(train) + len(val) == len(dataset.samples)
    assert set(dataset.labels[val]) == {0, 1}  # stratified: both classes validated
    patients_train = {dataset.samples[i].patient for i in train}
    assert patients_train.isdisjoint({dataset.samples[i].patient for i in val})
    path = save_split(tmp_path / "split.json", dataset, train, val, seed=1)
    again = load_split(path, dataset)
    np.testing.assert_array_equal(again[0], train)
    np.testing.assert_array_equal(again[1], val)
    # Same seed, same split; the leak check itself catches a leaking split.
    np.testing.assert_array_equal(split_indices(dataset, 0.25, seed=1)[1], val)
    with pytest.raises(DataError, match="leaks"):
        check_no_leak(dataset, np.concatenate([train, val[:1]]), val)


def test_group_samples_links_chains():
    from training.data import Sample

    rng = np.random.default_rng(0)
    planes = rng.integers(0, 255, (4, 32, 32), dtype=np.uint8)
    planes[3] = planes[2]  # exact duplicate
    samples = [Sample(f"/x/{i}", f"{i}", 0, p) for i, p in enumerate(["a", "a", "b", "c"])]
    groups = group_samples(samples, planes)
    assert groups[0] == groups[1] and groups[2] == groups[3] and groups[0] != groups[2]
