"""Folder-per-class data for the three tasks: class maps, patient/duplicate grouping, cache, split."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from edge_runtime.errors import CxrError
from edge_runtime.imaging import IMAGE_SUFFIXES, preprocess  # list image files by what the runtime decodes
from edge_runtime.spec import DEFAULT_INPUT_SIZE, ModelSpec

logger = logging.getLogger(__name__)

#: Side of the square model input of every shipped model: the default of training, of
#: ``training.model.build_model`` and of the benchmarks' file names (the spec's default too).
INPUT_SIZE = DEFAULT_INPUT_SIZE


class DataError(CxrError):
    """The data folder does not hold what the task needs."""

    code = "data_error"


@dataclasses.dataclass(frozen=True)
class Source:
    """Where one class draws images from: a folder below the data root, optionally filtered."""

    folder: str
    name_pattern: str | None = None  # regex searched in the file name
    population: str = "unknown"  # who the films show: "children" or "adults"; reported separately

    def matches(self, filename: str) -> bool:
        return self.name_pattern is None or re.search(self.name_pattern, filename) is not None


@dataclasses.dataclass(frozen=True)
class Task:
    """Everything the project knows about one task, in one definition.

    ``title``, ``description`` and the populations of its sources travel in the model's spec
    (training writes them into ``spec.json``, export copies them, the runtime, the model card and
    the benchmarks read them from there); ``credits`` and ``limits`` go into its model card.
    ``TASKS`` lists the tasks in display order.
    """

    name: str
    classes: dict  # label -> tuple[Source, ...], in output order
    default_data: str  # relative to the shared data folder
    title: str = ""  # short, for people: the web menu, reports, ``history``
    description: str = ""  # what the model tells apart and from which data
    credits: tuple[str, ...] = ()  # data credit lines of the model card
    limits: tuple[str, ...] = ()  # task-specific "known limits" of the model card
    #: Folders below the data root holding films of a source the task never trains on, reported as
    #: what the model calls them (binary: COVID-19 films from other hospitals, all positive).
    unseen_sources: tuple[str, ...] = ()

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.classes)

    @property
    def populations(self) -> tuple[str, ...]:
        """The populations its sources show (``adults``, ``children``), sorted; ``unknown`` left out."""
        return tuple(sorted({s.population for sources in self.classes.values() for s in sources} - {"unknown"}))

    def spec_fields(self, populations: Sequence[str] | None = None) -> dict:
        """The spec fields this task defines: ``title``, ``description``, ``populations``.

        Args:
            populations: The populations actually trained on (default: those of the task's sources).
        """
        return {"title": self.title, "description": self.description,
                "populations": tuple(self.populations if populations is None else populations)}


KERMANY = "chest_xray/train"
COVID19 = "covid19/COVID19"  # COVID-19 films, all from other hospitals than any other folder's

KERMANY_CREDIT = (
    "Kermany D., Zhang K., Goldbaum M. (2018), \"Labeled Optical Coherence Tomography (OCT) and Chest X-Ray Images "
    "for Classification\", Mendeley Data v2, doi:10.17632/rscbjbr9sj.2, CC BY 4.0; paper: Kermany et al., Cell "
    "172(5):1122-1131 (2018).")
COVID_CREDIT = (
    "COVID-19 Radiography Database: Chowdhury et al., IEEE Access 8:132665 (2020); Rahman et al., Comput. Biol. "
    "Med. 132:104319 (2021); adult normals originally from RSNA / NIH ChestX-ray14. Research use; the original "
    "sources' terms apply.")
ADULT_CREDIT = (
    "Adult pneumonia / lung opacity and adult normal films: the \"Infection Segmentation Data\" subset of COVID-QU-Ex "
    "(Tahir et al., Comput. Biol. Med. 139:105002, 2021; Qatar University and University of Dhaka), mostly from RSNA / "
    "NIH ChestX-ray14; lung masks from the same source. Research use; the original sources' terms apply.")

TASKS: dict[str, Task] = {
    # Children and adults. COVID-19 films stay out of PNEUMONIA on purpose: all of them come from
    # hospitals other than the adult normals' (RSNA / NIH), so in PNEUMONIA they would teach
    # "another hospital means pneumonia", the very shortcut that made normal films from elsewhere
    # look abnormal. They serve instead as an unseen-hospital check of sensitivity (EXPERIMENTS.md).
    "binary": Task(
        "binary",
        {
            "NORMAL": (Source(f"{KERMANY}/NORMAL", population="children"),
                       Source("adult_cxr/NORMAL", population="adults"),
                       Source("covid19/NORMAL_ADULT", population="adults")),
            "PNEUMONIA": (Source(f"{KERMANY}/PNEUMONIA", population="children"),
                          Source("adult_cxr/PNEUMONIA", population="adults")),
        },
        ".",
        title="Pneumonia screening (normal / pneumonia)",
        description="NORMAL vs PNEUMONIA on chest X-rays of children (Kermany, Guangzhou) and adults (RSNA / NIH films "
                    "via COVID-QU-Ex and the COVID-19 Radiography Database).",
        credits=(KERMANY_CREDIT, ADULT_CREDIT, COVID_CREDIT),
        unseen_sources=(COVID19,),
        limits=(
            "Adults: the adult films come from one hospital system (RSNA / NIH), and many adult PNEUMONIA films are "
            "portable AP films of inpatients with lines, electrodes and 'PORTABLE' markers while most adult normals "
            "are PA outpatient films. Measured (training/EXPERIMENTS.md, context_check.py): a network trained on "
            "these adult films with the lungs and their outline blacked out still tells pneumonia from normal (AUC "
            "0.74): the surroundings carry the label, and a model can learn 'portable film' instead of pneumonia "
            "(`--context-swap` in training sets adult films' lungs in other films' surroundings against it; the "
            "training command above says whether this model had it). Where a model reads 'portable film', it may "
            "call a normal portable film abnormal, or miss pneumonia on a PA film, more often than the figures "
            "above say.",
            "COVID-19 films were kept out of training (they all come from other hospitals than the adult normals, and "
            "would teach 'another hospital means pneumonia'); what the model calls them is reported above as a "
            "check on unseen hospitals."),
    ),
    "etiology": Task(
        "etiology",
        {
            "NORMAL": (Source("NORMAL", population="children"),),
            "BACTERIAL": (Source("PNEUMONIA", r"_bacteria_", population="children"),),
            "VIRAL": (Source("PNEUMONIA", r"_virus_", population="children"),),
        },
        "chest_xray/train",
        title="Pneumonia type (normal / bacterial / viral)",
        description="NORMAL / BACTERIAL / VIRAL pneumonia on paediatric chest X-rays; the etiology labels come from "
                    "the data set's file names.",
        credits=(KERMANY_CREDIT,),
        limits=(
            "Bacterial and viral pneumonia are hard to tell apart on a radiograph even for radiologists; the "
            "file-name labels are the data set's, not laboratory-confirmed per image.",),
    ),
    # Adult non-COVID pneumonia (adult_cxr) sits in PNEUMONIA and adult_cxr normals in NORMAL, so
    # "adult film" no longer means "COVID-19 or normal": the model has to tell COVID-19 from other
    # adult infections (issue 9). COVID-19 films still come from other hospitals than any NORMAL or
    # PNEUMONIA film here, a confounder the model card states.
    "covid": Task(
        "covid",
        {
            "COVID19": (Source(COVID19, population="adults"),),
            "NORMAL": (Source(f"{KERMANY}/NORMAL", population="children"),
                       Source("adult_cxr/NORMAL", population="adults"),
                       Source("covid19/NORMAL_ADULT", population="adults")),
            "PNEUMONIA": (Source(f"{KERMANY}/PNEUMONIA", population="children"),
                          Source("adult_cxr/PNEUMONIA", population="adults")),
        },
        ".",
        title="COVID-19 (normal / pneumonia / COVID-19)",
        description="COVID-19 / NORMAL / PNEUMONIA. NORMAL and PNEUMONIA mix Kermany paediatric films and adult films "
                    "(RSNA / NIH via COVID-QU-Ex and the COVID-19 Radiography Database; adult non-COVID pneumonia in "
                    "PNEUMONIA); COVID-19 images are adults from other hospitals.",
        credits=(KERMANY_CREDIT, ADULT_CREDIT, COVID_CREDIT),
        limits=(
            "Confounder: every COVID-19 image comes from other hospitals than every NORMAL and PNEUMONIA image. The "
            "model can learn hospital instead of disease (DeGrave et al., Nat. Mach. Intell. 2021). Adult normals and "
            "adult non-COVID pneumonia were added to remove the plainest shortcut (adult means COVID-19 or normal): "
            "the covid model shipped before them called two thirds of adult non-COVID pneumonia NORMAL "
            "(training/EXPERIMENTS.md). COVID-19 and other adult pneumonias are still confused, and a third of adult "
            "normals are called abnormal (see the tables above). Do not use it to diagnose COVID-19.",),
    ),
}


@dataclasses.dataclass(frozen=True)
class Sample:
    path: str  # absolute
    relpath: str  # relative to the data root: the key saved in splits
    label: int
    patient: str  # patient/study key from the file name (or the file itself)
    source: str = ""  # the source folder below the data root
    population: str = "unknown"


@dataclasses.dataclass
class Dataset:
    """Samples of one task, their decoded pixels and duplicate-aware groups."""

    task: Task
    root: Path
    samples: list
    images: np.ndarray  # (N, H, W) uint8 luminance at the model size
    groups: np.ndarray  # (N,) int group id: same patient or near-duplicate -> same id
    skipped: list  # (relpath, reason) of unreadable files

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], dtype=np.int64)

    @property
    def strata(self) -> np.ndarray:
        """(N,) id of each sample's (class, source folder): what splits stratify and sampling balances."""
        keys = [f"{s.label}|{s.source}" for s in self.samples]
        _, ids = np.unique(keys, return_inverse=True)
        return ids.astype(np.int64)

    def rgb(self, indices: Sequence[int] | None = None) -> np.ndarray:
        """(N, H, W, 3) uint8 model inputs, the luminance replicated as prepare_input does."""
        planes = self.images if indices is None else self.images[np.asarray(indices)]
        return np.repeat(planes[..., None], 3, axis=-1)


_PATIENT_PATTERNS = (
    re.compile(r"^(person\d+)_"),  # Kermany pneumonia: person123_bacteria_45.jpeg
    re.compile(r"^((?:NORMAL2-)?IM-\d+)-"),  # Kermany normal: IM-0115-0001.jpeg / NORMAL2-IM-...
)


def patient_key(source_folder: str, filename: str) -> str:
    """Patient/study key parsed from a file name; the file itself when the name carries none."""
    for pattern in _PATIENT_PATTERNS:
        match = pattern.match(filename)
        if match:
            return f"{source_folder}:{match.group(1)}"
    return f"{source_folder}:{filename}"


def resolve_task(task: Task, root: str | Path) -> Task:
    """The class map to read ``root`` with.

    A folder that holds one subfolder per label (``NORMAL/``, ``PNEUMONIA/``...: the Kermany
    layout, or any labelled test set) is read directly; otherwise the task's own map applies,
    relative to ``root`` (e.g. the shared data root for binary and covid).
    """
    root = Path(root)
    if all((root / label).is_dir() for label in task.labels):
        populations = {label: {s.population for s in sources} for label, sources in task.classes.items()}
        return dataclasses.replace(task, classes={
            label: (Source(label, population=next(iter(populations[label])) if len(populations[label]) == 1
                           else "unknown"),)
            for label in task.labels}, default_data=".")
    return task


def list_samples(root: str | Path, task: Task) -> list[Sample]:
    """Every image file of ``task`` below ``root``, in a deterministic order.

    Raises:
        DataError: a source folder is missing or a class ends up with no image.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    task = resolve_task(task, root)
    samples: list[Sample] = []
    for label_index, (label, sources) in enumerate(task.classes.items()):
        count = 0
        for source in sources:
            folder = root / source.folder
            if not folder.is_dir():
                present = sorted(p.name for p in root.iterdir() if p.is_dir())
                flat = [lab for lab in task.labels if not (root / lab).is_dir()]
                if 0 < len(flat) < len(task.labels):  # some label folders are there: a folder-per-class root
                    raise DataError(
                        f"task {task.name!r}: a folder-per-class root needs folder {root / flat[0]}, which does "
                        f"not exist (folders in {root}: {present}; labels {list(task.labels)})")
                raise DataError(
                    f"task {task.name!r}: class {label!r} needs folder {folder}, which does not exist "
                    f"(folders in {root}: {present}); for this task pass the data root that holds "
                    f"{[s.folder for ss in task.classes.values() for s in ss]}"
                )
            for path in sorted(folder.iterdir()):
                if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
                    continue
                if not source.matches(path.name):
                    continue
                samples.append(Sample(
                    path=str(path.resolve()),
                    relpath=path.relative_to(root).as_posix(),
                    label=label_index,
                    patient=patient_key(source.folder, path.name),
                    source=source.folder,
                    population=source.population,
                ))
                count += 1
        if count == 0:
            raise DataError(
                f"task {task.name!r}: found 0 images for class {label!r} in "
                f"{[str(root / s.folder) for s in sources]} (suffixes {IMAGE_SUFFIXES})"
            )
    return samples


def _decode_one(args):
    path, spec_dict = args
    spec = ModelSpec.from_dict(spec_dict)
    try:
        return preprocess(path, spec)[:, :, 0], None
    except CxrError as err:
        return None, str(err)


def _cache_key(samples: Sequence[Sample], spec: ModelSpec) -> str:
    digest = hashlib.sha256()
    digest.update(f"{spec.input_size}{spec.interpolation}{spec.color_mode}{spec.resize_mode}v1".encode())
    for sample in samples:
        stat = os.stat(sample.path)
        digest.update(f"{sample.path}|{stat.st_size}|{int(stat.st_mtime)}\n".encode())
    return digest.hexdigest()[:16]


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cxr-edge"


def decode_samples(
    samples: Sequence[Sample],
    spec: ModelSpec,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
    """Decode every sample once through the runtime's own :func:`preprocess`, cached on disk.

    Returns:
        (planes (N_ok, H, W) uint8, indices of the decoded samples, [(relpath, reason)] skipped).
    """
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    cache_file = cache_dir / f"decoded-{_cache_key(samples, spec)}.npz"
    if cache_file.exists():
        with np.load(cache_file, allow_pickle=False) as cached:
            skipped = [tuple(x) for x in json.loads(str(cached["skipped"]))]
            logger.info("loaded %d decoded images from cache %s", len(cached["ok"]), cache_file)
            return cached["images"], cached["ok"].tolist(), skipped
    spec_dict = spec.to_dict()
    jobs = [(s.path, spec_dict) for s in samples]
    workers = workers or min(4, os.cpu_count() or 1)
    planes, ok, skipped = [], [], []
    iterator: Iterable
    with ProcessPoolExecutor(max_workers=workers) as pool:
        iterator = pool.map(_decode_one, jobs, chunksize=32)
        if progress:
            from tqdm import tqdm

            iterator = tqdm(iterator, total=len(jobs), desc="decoding", unit="img")
        for index, (plane, error) in enumerate(iterator):
            if plane is None:
                logger.warning("skipping unreadable %s: %s", samples[index].relpath, error)
                skipped.append((samples[index].relpath, error))
            else:
                planes.append(plane)
                ok.append(index)
    h, w = spec.input_size
    images = np.stack(planes) if planes else np.zeros((0, h, w), np.uint8)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_suffix(".tmp.npz")
    np.savez(tmp, images=images, ok=np.array(ok, dtype=np.int64), skipped=json.dumps(skipped))
    os.replace(tmp, cache_file)
    return images, ok, skipped


def thumbnails(planes: np.ndarray, size: int = 16) -> np.ndarray:
    """Zero-mean, unit-norm ``size``x``size`` box thumbnails of (N, H, W) planes, as (N, size*size)."""
    from PIL import Image

    thumbs = np.stack([
        np.asarray(Image.fromarray(plane).resize((size, size), Image.Resampling.BOX), np.float32).ravel()
        for plane in planes
    ]) if len(planes) else np.zeros((0, size * size), np.float32)
    thumbs -= thumbs.mean(axis=1, keepdims=True)
    thumbs /= np.linalg.norm(thumbs, axis=1, keepdims=True) + 1e-6
    return thumbs


class _UnionFind:
    def __init__(self, n: int):
        self.parent = np.arange(n)

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def group_samples(samples: Sequence[Sample], planes: np.ndarray, min_correlation: float = 0.99) -> np.ndarray:
    """Group ids joining images of one patient and exact or near duplicates (thumbnail correlation).

    Returns:
        (N,) int64 array; two samples share an id iff a chain of same-patient or
        near-duplicate links joins them.
    """
    n = len(samples)
    uf = _UnionFind(n)
    first_of_patient: dict[str, int] = {}
    for i, sample in enumerate(samples):
        j = first_of_patient.setdefault(sample.patient, i)
        if j != i:
            uf.union(i, j)
    exact: dict[bytes, int] = {}
    for i, plane in enumerate(planes):
        key = hashlib.sha1(plane.tobytes()).digest()
        j = exact.setdefault(key, i)
        if j != i:
            uf.union(i, j)
    # Near duplicates (the same radiograph re-published, re-encoded or re-windowed): correlation
    # of 16x16 thumbnails. On the shared data the distribution has a plateau between 0.99 and
    # 0.999 (50 Kermany images, ~470 COVID-19 images) and rises fast below 0.98, where distinct
    # but similar-looking radiographs begin; 0.99 sits on the plateau.
    thumbs = thumbnails(planes)
    chunk = 2048
    for start in range(0, n, chunk):
        corr = thumbs[start:start + chunk] @ thumbs.T
        rows, cols = np.nonzero(corr >= min_correlation)
        for r, c in zip(rows + start, cols):
            if c > r:
                uf.union(int(r), int(c))
    roots = np.array([uf.find(i) for i in range(n)])
    _, ids = np.unique(roots, return_inverse=True)
    return ids.astype(np.int64)


def load_dataset(
    root: str | Path,
    task: Task,
    spec: ModelSpec,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> Dataset:
    """List, decode (cached) and group every image of ``task`` under ``root``."""
    samples = list_samples(root, task)
    planes, ok, skipped = decode_samples(samples, spec, cache_dir=cache_dir, progress=progress)
    kept = [samples[i] for i in ok]
    if skipped:
        logger.warning("%d of %d files could not be read and were skipped", len(skipped), len(samples))
    for label_index, label in enumerate(task.labels):
        if not any(s.label == label_index for s in kept):
            raise DataError(f"task {task.name!r}: every image of class {label!r} was unreadable")
    groups = group_samples(kept, planes)
    return Dataset(task=task, root=Path(root), samples=kept, images=planes, groups=groups, skipped=skipped)


def split_indices(dataset: Dataset, val_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split stratified by class and source folder, every group wholly on one side (StratifiedGroupKFold)."""
    from sklearn.model_selection import StratifiedGroupKFold

    if not 0.0 < val_fraction < 0.5:
        raise DataError(f"val_fraction must be in (0, 0.5), got {val_fraction}")
    n_splits = max(2, int(round(1.0 / val_fraction)))
    n_groups = len(np.unique(dataset.groups))
    if n_groups < n_splits:
        raise DataError(f"only {n_groups} patient/duplicate groups in {dataset.root}; a validation fraction of "
                        f"{val_fraction} needs at least {n_splits}")
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    train, val = next(folds.split(np.zeros(len(dataset.samples)), dataset.strata, dataset.groups))
    return np.sort(train), np.sort(val)


def split_halves(dataset: Dataset, indices: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two halves of ``indices``, stratified by class and source, groups kept whole.

    Training picks its checkpoint on the first half and its threshold on the second, so that
    neither choice is graded on the data that made it.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    indices = np.asarray(indices)
    folds = StratifiedGroupKFold(n_splits=2, shuffle=True, random_state=seed + 1)
    first, second = next(folds.split(np.zeros(len(indices)), dataset.strata[indices], dataset.groups[indices]))
    return np.sort(indices[first]), np.sort(indices[second])


def save_split(path: str | Path, dataset: Dataset, train: np.ndarray, val: np.ndarray, seed: int,
               calibration: np.ndarray | None = None) -> Path:
    """Write the split's relative paths; ``val`` picks the checkpoint, ``calibration`` the threshold."""
    path = Path(path)
    payload = {
        "task": dataset.task.name,
        "seed": seed,
        "labels": list(dataset.task.labels),
        "train": [dataset.samples[i].relpath for i in train],
        "val": [dataset.samples[i].relpath for i in val],
    }
    if calibration is not None:
        payload["calibration"] = [dataset.samples[i].relpath for i in calibration]
    path.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    return path


def load_split(path: str | Path, dataset: Dataset, held_out: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a saved split in ``dataset``; files it names that are missing are an error.

    Returns:
        (train, val); with ``held_out`` the second array also holds the ``calibration`` side
        (everything not trained on), for calibration data and evaluation.
    """
    payload = json.loads(Path(path).read_text(encoding="utf-8"))
    index = {s.relpath: i for i, s in enumerate(dataset.samples)}
    second = payload["val"] + (payload.get("calibration", []) if held_out else [])
    missing = [p for p in payload["train"] + second if p not in index]
    if missing:
        raise DataError(f"split {path} names {len(missing)} files not in {dataset.root}, e.g. {missing[:3]}")
    return (np.array(sorted(index[p] for p in payload["train"]), dtype=np.int64),
            np.array(sorted(index[p] for p in second), dtype=np.int64))


def load_split_sides(path: str | Path, dataset: Dataset) -> dict[str, np.ndarray]:
    """Every side a saved split names (train, val, and calibration when present), as index arrays."""
    payload = json.loads(Path(path).read_text(encoding="utf-8"))
    index = {s.relpath: i for i, s in enumerate(dataset.samples)}
    sides = {}
    for side in ("train", "val", "calibration"):
        if side in payload:
            missing = [p for p in payload[side] if p not in index]
            if missing:
                raise DataError(f"split {path} names {len(missing)} files not in {dataset.root}, e.g. {missing[:3]}")
            sides[side] = np.array(sorted(index[p] for p in payload[side]), dtype=np.int64)
    return sides


def load_masks(dataset: Dataset, mask_root: str | Path | None) -> tuple[np.ndarray, np.ndarray]:
    """Lung masks resized to the model input, for the samples that have one.

    A sample's mask is ``mask_root/<relpath with .png>`` (the ``lung_masks`` layout of the shared
    data). Returns ((N, H, W) uint8 with 1 = lung, zeros where absent; (N,) bool has-mask).
    """
    from PIL import Image

    n = len(dataset.samples)
    h, w = dataset.images.shape[1:3] if len(dataset.images) else (0, 0)
    masks = np.zeros((n, h, w), np.uint8)
    present = np.zeros(n, bool)
    if not mask_root or not Path(mask_root).is_dir():
        return masks, present
    mask_root = Path(mask_root)
    for i, sample in enumerate(dataset.samples):
        path = mask_root / Path(sample.relpath).with_suffix(".png")
        if path.is_file():
            with Image.open(path) as image:
                grey = image.convert("L").resize((w, h), Image.Resampling.NEAREST)
            masks[i] = np.asarray(grey) >= 128
            present[i] = True
    return masks, present


def check_no_leak(dataset: Dataset, train: np.ndarray, val: np.ndarray) -> None:
    """Raise DataError when a group (patient or duplicate) sits on both sides."""
    shared = set(dataset.groups[train].tolist()) & set(dataset.groups[val].tolist())
    if shared:
        raise DataError(f"split leaks {len(shared)} patient/duplicate groups between train and validation")
