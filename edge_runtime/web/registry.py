"""The registry of models a web server offers: found from their spec files, each loaded once, lazily, and shared."""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path
from typing import Any, Callable, Iterable

from ..errors import ModelError, UnknownModelError
from ..model_files import TASK_TITLES, list_models
from ..spec import SPEC_SUFFIX, ModelSpec, find_spec_for_model

logger = logging.getLogger(__name__)

#: Menu order: the plain screening model first.
_TASK_ORDER = {"binary": 0, "etiology": 1, "covid": 2}


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One offered model: its spec and the file the server runs.

    Attributes:
        name: The spec's name, used as the model's id in the API.
        spec: The model's :class:`~edge_runtime.spec.ModelSpec`.
        spec_path: The ``*.spec.json`` file.
        model_path: The ``.tflite`` file run (the ``*_cam.tflite`` variant when shipped).
        has_heatmap: Whether that file also outputs the feature map.
    """

    name: str
    spec: ModelSpec
    spec_path: Path
    model_path: Path
    has_heatmap: bool

    @property
    def title(self) -> str:
        return self.spec.title or TASK_TITLES.get(self.spec.task, self.spec.name)

    @property
    def file_sha256(self) -> str | None:
        return (self.spec.files or {}).get(self.model_path.name)


def choose_model_file(spec: ModelSpec, folder: Path, precision: str) -> Path | None:
    """Pick the file to run among those a spec lists and that exist in ``folder``.

    Preference: the heatmap (``*_cam``) file of ``precision``, any heatmap file, a plain file of
    ``precision``, any other. Heatmaps need the ``*_cam`` file's feature-map output.
    """
    files = [m for m in list_models(folder) if m["name"] == spec.name]
    if not files:
        return None

    def rank(model: dict) -> tuple[int, int, str]:
        return (0 if model["heatmap"] else 1), (0 if model["precision"] == precision else 1), model["file"]

    return Path(min(files, key=rank)["path"])


def _entry(spec_path: Path, precision: str, model_path: Path | None = None) -> ModelEntry | None:
    spec = ModelSpec.load(spec_path)
    if model_path is None:
        model_path = choose_model_file(spec, spec_path.parent, precision)
        if model_path is None:
            logger.warning("%s lists no .tflite file present in %s; skipped", spec_path.name, spec_path.parent)
            return None
    return ModelEntry(name=spec.name, spec=spec, spec_path=spec_path, model_path=model_path,
                      has_heatmap=model_path.name.endswith("_cam.tflite"))


def discover_models(sources: Any, precision: str = "int8") -> list[ModelEntry]:
    """Find the models to offer: one per spec (task), running its best file.

    Args:
        sources: A folder (each ``*.spec.json`` in it), a spec file, a ``.tflite`` file (run as
            given, with the spec listing it), or an iterable of these.
        precision: Preferred precision when a spec lists several files.

    Returns:
        Entries in menu order (screening model first), one per spec name.

    Raises:
        ModelError: a source does not exist, or no model was found at all.
    """
    if isinstance(sources, (str, Path)) or not isinstance(sources, Iterable):
        sources = [sources]
    entries: dict[str, ModelEntry] = {}
    for source in sources:
        path = Path(source)
        found: list[ModelEntry | None]
        if path.is_dir():
            found = [_entry(p, precision) for p in sorted(path.glob("*" + SPEC_SUFFIX))]
        elif path.is_file() and path.name.endswith(SPEC_SUFFIX):
            found = [_entry(path, precision)]
        elif path.is_file() and path.suffix == ".tflite":
            found = [_entry(find_spec_for_model(path), precision, model_path=path)]
        else:
            raise ModelError(f"model source not found: {path} (expected a folder of *{SPEC_SUFFIX} files, "
                             "a spec file or a .tflite file)")
        for entry in found:
            if entry is not None and entry.name not in entries:
                entries[entry.name] = entry
    if not entries:
        raise ModelError(f"no models found in {[str(s) for s in sources]}: expected *{SPEC_SUFFIX} files "
                         "listing .tflite files present beside them")
    return sorted(entries.values(), key=lambda e: (_TASK_ORDER.get(e.spec.task, 9), e.name))


class ModelRegistry:
    """The offered models, each with one classifier created on first use and then shared.

    The runtime's classifier serialises calls into its interpreter with its own lock, so one
    instance per model is safe across request threads.

    Args:
        entries: From :func:`discover_models`.
        make_classifier: ``f(entry) -> classifier``.
        default_model: Name used when a request names none (default: the first entry).
    """

    def __init__(self, entries: list[ModelEntry], make_classifier: Callable[[ModelEntry], Any],
                 default_model: str | None = None):
        self.entries = {entry.name: entry for entry in entries}
        self.default_name = entries[0].name
        if default_model:
            try:
                self.default_name = self.get(default_model).name
            except UnknownModelError:
                raise ModelError(f"default model {default_model!r} is not among {list(self.entries)}") from None
        self._make = make_classifier
        self._classifiers: dict[str, Any] = {}
        self._locks = {name: threading.Lock() for name in self.entries}

    def get(self, name: str | None) -> ModelEntry:
        """The entry for ``name``: a spec name, or a task (``binary``, ``etiology``, ``covid``)
        offered by one model only; ``None`` or ``""``: the default.

        Raises:
            UnknownModelError: no such model.
        """
        key = name or self.default_name
        if key in self.entries:
            return self.entries[key]
        by_task = [entry for entry in self.entries.values() if entry.spec.task == key]
        if len(by_task) == 1:
            return by_task[0]
        raise UnknownModelError(f"unknown model {key!r}; this server offers {list(self.entries)}")

    def classifier(self, name: str | None) -> Any:
        """The shared classifier of a model, created on first use.

        Raises:
            UnknownModelError: no such model.
            ModelError: the model cannot be loaded (the next call tries again).
        """
        entry = self.get(name)
        existing = self._classifiers.get(entry.name)
        if existing is not None:
            return existing
        with self._locks[entry.name]:
            if entry.name not in self._classifiers:
                logger.info("loading model %s from %s", entry.name, entry.model_path.name)
                self._classifiers[entry.name] = self._make(entry)
            return self._classifiers[entry.name]

    def loaded(self, name: str) -> Any | None:
        """The classifier of ``name`` if already created, else ``None``."""
        return self._classifiers.get(name)

    def close(self) -> None:
        """Close every created classifier."""
        for name in list(self._classifiers):
            classifier = self._classifiers.pop(name)
            close = getattr(classifier, "close", None)
            if close is not None:
                close()
