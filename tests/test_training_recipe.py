"""The training recipe's parts: shift augmentation, population balance, three-way split, lung masks."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import synthetic_xray, write_synthetic_folder

pytest.importorskip("cv2")
from training.augment import (PRESETS, AugmentConfig, augment_batch, augment_config, augment_image,  # noqa: E402
                              swap_context)
from training.data import (TASKS, check_no_leak, load_dataset, load_masks, resolve_task, split_halves,  # noqa: E402
                           split_indices)
from training.metrics import lung_localization  # noqa: E402
from edge_runtime.spec import ModelSpec  # noqa: E402

SPEC = ModelSpec(name="t", task="binary", labels=("NORMAL", "PNEUMONIA"), input_height=48, input_width=48)


def _mixed_root(tmp_path, per_class=24):
    """The shared data layout in small: Kermany children and adult folders, and lung masks for some."""
    rng = np.random.default_rng(3)
    kermany = write_synthetic_folder(tmp_path / "chest_xray" / "train", per_class=per_class, patients_per_class=12)
    for label, cls in (("NORMAL", 0), ("PNEUMONIA", 1)):
        folder = tmp_path / "adult_cxr" / label
        folder.mkdir(parents=True)
        mask_dir = tmp_path / "lung_masks" / "adult_cxr" / label
        mask_dir.mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(synthetic_xray(rng, cls)).convert("RGB").save(folder / f"{label.lower()}-qu{i}.jpeg")
            mask = np.zeros((64, 64), np.uint8)
            mask[16:48, 10:54] = 255
            Image.fromarray(mask).save(mask_dir / f"{label.lower()}-qu{i}.png")
    (tmp_path / "covid19" / "NORMAL_ADULT").mkdir(parents=True)
    for i in range(per_class):
        Image.fromarray(synthetic_xray(rng, 0)).convert("RGB").save(tmp_path / "covid19" / "NORMAL_ADULT" / f"Normal-{i}.jpeg")
    return tmp_path, kermany


def test_augment_keeps_shape_dtype_and_moves_the_mask_with_the_image():
    rng = np.random.default_rng(0)
    image = synthetic_xray(rng, 1, 64)
    mask = np.zeros((64, 64), np.uint8)
    mask[20:40, 8:30] = 1
    out, m = augment_image(image, mask, np.random.default_rng(1), AugmentConfig(p_border=0, p_marker=0))
    assert out.shape == image.shape and out.dtype == np.uint8
    assert m.shape == mask.shape and m.dtype == np.float32
    assert not np.array_equal(out, image)
    # A pure geometric transform: the mask of the warped image is the warped mask.
    geo = AugmentConfig(p_border=0, p_marker=0, p_window=0, gamma=0, contrast=0, brightness=0, p_blur_sharpen=0,
                        p_lowres=0, p_jpeg=0, p_noise=0)
    bright = np.where(mask > 0, 250, 10).astype(np.uint8)
    warped, warped_mask = augment_image(bright, mask, np.random.default_rng(5), geo)
    assert np.corrcoef(warped.ravel().astype(float), warped_mask.ravel())[0, 1] > 0.95


def test_augment_is_deterministic_under_a_seed():
    images = np.stack([synthetic_xray(np.random.default_rng(i), i % 2, 48) for i in range(6)])
    masks = np.ones_like(images)
    a = augment_batch(images, masks, np.random.default_rng(9))
    b = augment_batch(images, masks, np.random.default_rng(9))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    c = augment_batch(images, masks, np.random.default_rng(10))
    assert not np.array_equal(a[0], c[0])


def test_augmentation_presets_and_the_crop_override():
    assert augment_config() == AugmentConfig()
    strong = augment_config("strong")
    assert strong == PRESETS["strong"] and strong.gamma > AugmentConfig().gamma and strong.p_crop > 0
    assert augment_config("strong", 0.0).p_crop == 0.0 and augment_config("default", 0.5).p_crop == 0.5
    with pytest.raises(ValueError, match="unknown augmentation preset"):
        augment_config("wild")
    images = np.stack([synthetic_xray(np.random.default_rng(i), i % 2, 48) for i in range(8)])
    masks = np.ones_like(images)
    plain = augment_batch(images, masks, np.random.default_rng(3))[0]
    wide = augment_batch(images, masks, np.random.default_rng(3), strong)[0]
    assert not np.array_equal(plain, wide)


def test_binary_task_reads_children_and_adults_with_their_population(tmp_path):
    root, _ = _mixed_root(tmp_path)
    dataset = load_dataset(root, TASKS["binary"], SPEC, cache_dir=tmp_path / "cache", progress=False)
    pops = {(dataset.task.labels[s.label], s.population) for s in dataset.samples}
    assert pops == {("NORMAL", "children"), ("PNEUMONIA", "children"), ("NORMAL", "adults"), ("PNEUMONIA", "adults")}
    assert {s.source for s in dataset.samples} == {"chest_xray/train/NORMAL", "chest_xray/train/PNEUMONIA",
                                                   "adult_cxr/NORMAL", "adult_cxr/PNEUMONIA", "covid19/NORMAL_ADULT"}
    assert len(set(dataset.strata.tolist())) == 5


def test_a_folder_per_class_root_is_read_directly(tmp_path):
    _, kermany = _mixed_root(tmp_path)
    task = resolve_task(TASKS["binary"], kermany)
    assert [s.folder for ss in task.classes.values() for s in ss] == ["NORMAL", "PNEUMONIA"]
    assert resolve_task(TASKS["binary"], tmp_path) is TASKS["binary"]


def test_three_way_split_keeps_groups_apart_and_every_stratum_on_each_side(tmp_path):
    root, _ = _mixed_root(tmp_path, per_class=40)
    dataset = load_dataset(root, TASKS["binary"], SPEC, cache_dir=tmp_path / "cache", progress=False)
    train, held = split_indices(dataset, 0.25, seed=0)
    val, cal = split_halves(dataset, held, seed=0)
    for a, b in ((train, val), (train, cal), (val, cal)):
        check_no_leak(dataset, a, b)
        assert set(a).isdisjoint(b)
    assert len(train) + len(val) + len(cal) == len(dataset.samples)
    for side in (val, cal):
        assert set(dataset.strata[side].tolist()) == set(dataset.strata.tolist())


def test_context_swap_keeps_the_films_lungs_and_takes_the_donors_surroundings():
    rng = np.random.default_rng(0)
    film = rng.integers(90, 110, (1, 64, 64)).astype(np.uint8)  # grey ~100 everywhere
    donor = np.full((1, 64, 64), 200, np.uint8)
    donor[0, :, :8] = 250  # a bright band (a marker, a line) at the donor's edge
    film_mask = np.zeros((1, 64, 64), np.uint8)
    film_mask[0, 16:48, 10:30] = 1
    donor_mask = np.zeros_like(film_mask)
    donor_mask[0, 16:48, 34:54] = 1  # the donor's lungs elsewhere: none of them may survive
    out = swap_context(film, film_mask, donor, donor_mask, rng, dilate=3)
    assert out.shape == film.shape and out.dtype == np.uint8
    either = (film_mask | donor_mask).astype(bool)
    np.testing.assert_array_equal(out[either], film[either])
    # Far from both lungs the donor's layout shows, rescaled to the film's own grey levels.
    far = np.zeros((64, 64), bool)
    far[:, :6] = far[:, 60:] = True
    assert out[0][:, :6].mean() > out[0][:, 60:].mean() + 5  # the band moved over
    assert abs(float(out[0][far].mean()) - float(film[0][far].mean())) < 15
    assert not np.array_equal(out, film)


def _trainers(tmp_path):
    """A small mixed data set and ``make(**config)``: a trainer over all of it (no augmentation, one epoch)."""
    pytest.importorskip("tensorflow")
    from training.train import TrainConfig, make_trainer, training_masks

    root, _ = _mixed_root(tmp_path, per_class=12)
    dataset = load_dataset(root, TASKS["binary"], SPEC, cache_dir=tmp_path / "cache", progress=False)
    idx = np.arange(len(dataset.samples))
    masks, has_mask = training_masks(TrainConfig(data=str(root), out=str(tmp_path / "out")), dataset, idx)

    def make(**config):
        config = TrainConfig(data=str(root), out=str(tmp_path / "out"), epochs=1, augment=False, **config)
        return make_trainer(config, dataset, SPEC, masks, has_mask, idx)

    return dataset, idx, make


def test_context_swap_in_the_trainer_uses_masked_adult_donors_only(tmp_path):
    dataset, idx, make = _trainers(tmp_path)
    trainer = make(context_swap=1.0)
    pool = set(trainer.donors.tolist())
    assert pool and all(dataset.samples[i].source.startswith("adult_cxr") for i in pool)
    batch = idx[:32]
    x = trainer._batch(batch)[0]
    changed = {int(i) for i, a, b in zip(batch, x, dataset.images[batch]) if not np.array_equal(a, b)}
    assert changed and changed <= pool  # only masked adult films are swapped; children and unmasked films never
    off = make()
    assert off.donors is None
    np.testing.assert_array_equal(off._batch(batch)[0], dataset.images[batch])


def test_mixup_blends_each_film_with_a_partner_and_its_label_and_masks_alike():
    from training.augment import mixup

    rng = np.random.default_rng(0)
    x = np.stack([np.full((8, 8), v, np.uint8) for v in (0, 100, 200, 250)])
    m = np.zeros((4, 8, 8), np.float32)
    m[0, :, :2] = 1  # only film 0's lungs on the left, film 1's on the right
    m[1, :, 6:] = 1
    y = np.eye(2, dtype=np.float32)[[0, 1, 1, 0]]
    has = np.array([1, 1, 0, 1], np.float32)
    out_x, out_m, out_y, out_has = mixup(x, m, y, has, rng, alpha=0.4)
    assert out_x.dtype == np.float32 and out_y.shape == (4, 2)
    np.testing.assert_allclose(out_y.sum(axis=1), 1.0, atol=1e-6)
    values = np.array([0, 100, 200, 250], np.float32)
    for i in range(4):
        # the blend is lam * own + (1 - lam) * partner, lam >= 0.5; find the partner that explains the pixels
        fits = [(j, lam) for j in range(4) for lam in [np.clip((out_x[i, 0, 0] - values[j]) / (values[i] - values[j])
                if values[i] != values[j] else 1.0, 0, 1)]
                if lam >= 0.5 - 1e-6 and np.isclose(lam * values[i] + (1 - lam) * values[j], out_x[i, 0, 0], atol=1e-3)
                and np.allclose(out_y[i], lam * y[i] + (1 - lam) * y[j], atol=1e-5)]
        assert fits, i
        j = fits[0][0]
        np.testing.assert_array_equal(out_m[i], np.maximum(m[i], m[j]))
        assert out_has[i] == has[i] * has[j]
    assert not np.array_equal(out_x, x.astype(np.float32))  # something was blended


def test_mixup_in_the_trainer_gives_soft_targets_and_off_leaves_one_hot_labels(tmp_path):
    dataset, idx, make = _trainers(tmp_path)
    batch = np.random.default_rng(0).permutation(idx)[:32]  # both classes
    x, _, y, _ = make(mixup=0.4)._batch(batch)
    assert ((y > 0) & (y < 1)).any() and np.allclose(y.sum(axis=1), 1.0)
    assert (y.max(axis=1) >= 0.5 - 1e-6).all()
    x0, _, y0, _ = make()._batch(batch)
    np.testing.assert_array_equal(y0, np.eye(2)[dataset.labels[batch]])
    np.testing.assert_array_equal(x0, dataset.images[batch])
    assert not np.array_equal(x, x0.astype(np.float32))


def test_a_teacher_joins_the_targets_by_its_share_and_a_wrong_one_is_refused(tmp_path):
    dataset, idx, make = _trainers(tmp_path)
    from training.data import DataError
    from training.model import build_model

    teacher = build_model(2, SPEC.input_size)
    teacher.save(tmp_path / "teacher.keras")
    build_model(3, SPEC.input_size).save(tmp_path / "three.keras")
    batch = idx[:8]
    x = np.repeat(dataset.images[batch][..., None].astype(np.float32), 3, axis=-1)
    y = np.eye(2, dtype=np.float32)[dataset.labels[batch]]
    taught = np.asarray(teacher(x, training=False))
    assert not np.allclose(taught, y, atol=0.05)  # the untrained teacher disagrees with the labels
    for share in (1.0, 0.3):
        got = np.asarray(make(teacher=str(tmp_path / "teacher.keras"), distill=share).targets(x, y))
        np.testing.assert_allclose(got, (1 - share) * y + share * taught, atol=1e-5)
    np.testing.assert_array_equal(make().targets(x, y), y)  # no teacher: the labels alone
    with pytest.raises(DataError, match="needs"):
        make(teacher=str(tmp_path / "three.keras"))
    with pytest.raises(DataError, match="not found"):
        make(teacher=str(tmp_path / "none.keras"))
    with pytest.raises(DataError, match="between 0 and 1"):
        make(teacher=str(tmp_path / "teacher.keras"), distill=1.5)
    trainer = make(teacher=str(tmp_path / "teacher.keras"))
    trainer.run_epoch(idx[:64])  # the traced step runs with the teacher inside it


def test_a_teacher_that_trained_on_held_out_films_is_refused(tmp_path, caplog):
    import json

    from training.data import DataError
    from training.train import check_teacher_split

    root, _ = _mixed_root(tmp_path, per_class=6)
    dataset = load_dataset(root, TASKS["binary"], SPEC, cache_dir=tmp_path / "cache", progress=False)
    paths = [s.relpath for s in dataset.samples]
    sides = {"train": np.arange(0, len(paths) - 4), "val": np.array([len(paths) - 4, len(paths) - 3]),
             "calibration": np.array([len(paths) - 2, len(paths) - 1])}
    teacher = tmp_path / "teacher" / "model.keras"
    teacher.parent.mkdir()
    split = teacher.parent / "split.json"
    split.write_text(json.dumps({"train": paths[:-4], "val": paths[-4:-2], "calibration": paths[-2:]}))
    check_teacher_split(teacher, dataset, sides)  # the same split: nothing held out was taught
    split.write_text(json.dumps({"train": paths[:-4] + paths[-1:], "val": paths[-4:-2], "calibration": paths[-2:-1]}))
    with pytest.raises(DataError, match="trained on 1 of this run's held-out films"):
        check_teacher_split(teacher, dataset, sides)
    split.unlink()
    check_teacher_split(teacher, dataset, sides)
    assert "cannot check" in caplog.text


def test_population_balance_gives_each_class_and_population_an_equal_share(tmp_path):
    from training.train import sampling_weights

    root, _ = _mixed_root(tmp_path, per_class=30)
    dataset = load_dataset(root, TASKS["binary"], SPEC, cache_dir=tmp_path / "cache", progress=False)
    idx = np.arange(len(dataset.samples))
    p = sampling_weights(dataset, idx, "population")
    shares = {}
    for i, w in zip(idx, p):
        key = (dataset.samples[i].label, dataset.samples[i].population)
        shares[key] = shares.get(key, 0.0) + w
    assert len(shares) == 4
    np.testing.assert_allclose(sorted(shares.values()), [0.25] * 4, atol=1e-9)
    assert sampling_weights(dataset, idx, "none") is None


def test_lung_masks_are_found_by_relative_path(tmp_path):
    root, _ = _mixed_root(tmp_path)
    dataset = load_dataset(root, TASKS["binary"], SPEC, cache_dir=tmp_path / "cache", progress=False)
    masks, present = load_masks(dataset, root / "lung_masks")
    adult = np.array([s.source.startswith("adult_cxr") for s in dataset.samples])
    np.testing.assert_array_equal(present, adult)
    assert masks.shape == dataset.images.shape
    assert masks[present].max() == 1 and masks[~present].max() == 0
    assert 0.3 < masks[present].mean() < 0.45  # 32x44 of 64x64, resized to 48x48


def test_lung_localization_counts_heat_inside_and_the_hottest_cell():
    mask = np.zeros((40, 40), np.uint8)
    mask[:, :20] = 1  # left half is lung
    inside = np.zeros((4, 4), np.float32)
    inside[1, 0] = 1.0
    outside = np.zeros((4, 4), np.float32)
    outside[2, 3] = 1.0
    result = lung_localization(np.stack([inside, outside, np.zeros((4, 4), np.float32)]), np.stack([mask] * 3))
    assert result["hottest_inside"] == 0.5 and result["no_heat"] == 1
    assert 0.45 < result["mass_inside_mean"] < 0.55
    assert result["lung_area_mean"] == 0.5


def test_centred_logits_keep_the_probabilities_and_shrink_the_logits():
    pytest.importorskip("tensorflow")
    import keras

    from export.convert import with_float_input
    from training.model import CLASSIFIER_LAYER, build_model

    model = build_model(3, (32, 32), width=0.5)
    dense = model.get_layer(CLASSIFIER_LAYER)
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel + 3.0, bias + 10.0])  # a large offset common to every class
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype(np.uint8)
    centred = with_float_input(model, center_logits=True, input_dtype="uint8")
    np.testing.assert_allclose(np.asarray(centred(x)), np.asarray(model(x)), atol=1e-5)
    k2, b2 = centred.get_layer(CLASSIFIER_LAYER).get_weights()
    np.testing.assert_allclose(k2.mean(axis=1), 0.0, atol=1e-5)
    assert abs(float(b2.mean())) < 1e-5
    assert isinstance(centred, keras.Model)


def test_weights_rounded_to_float16_are_float16_values():
    pytest.importorskip("tensorflow")
    from training.model import build_model
    from training.train import round_to_float16

    model = build_model(2, (32, 32), width=0.5)
    round_to_float16(model)
    for w in model.get_weights():
        np.testing.assert_array_equal(w, w.astype(np.float16).astype(w.dtype))


def test_mask_root_is_found_for_the_data_root_and_for_a_subfolder(tmp_path):
    pytest.importorskip("tensorflow")
    from training.train import default_mask_root

    root, _ = _mixed_root(tmp_path)
    assert default_mask_root(root) == (root / "lung_masks").resolve()
    assert default_mask_root(root / "adult_cxr") == (root / "lung_masks" / "adult_cxr").resolve()
    assert default_mask_root(root / "covid19") is None  # no masks for that folder
