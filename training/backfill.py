"""Back-fill a task's spec fields (title, description, populations) into a spec.json trained before spec version 2."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from edge_runtime.errors import CxrError, ModelError
from edge_runtime.spec import SPEC_VERSION, ModelSpec

from .data import TASKS

logger = logging.getLogger(__name__)


def fill_task_fields(spec: ModelSpec) -> tuple[ModelSpec, list[str]]:
    """``spec`` at this spec version with the empty task fields filled in from ``TASKS``.

    Fields already set are kept. The populations come from the training record (what the run
    actually saw) when it has them, else from the task's sources.

    Returns:
        (the filled spec, names of the fields that were filled).

    Raises:
        ModelError: the spec's task is not in ``TASKS``.
    """
    task = TASKS.get(spec.task)
    if task is None:
        raise ModelError(f"spec {spec.name!r}: task {spec.task!r} is not one of {list(TASKS)}; nothing to fill in")
    recorded = spec.training.get("populations")
    fields = task.spec_fields(recorded if isinstance(recorded, (list, tuple)) else None)
    missing = {key: value for key, value in fields.items() if not getattr(spec, key)}
    return spec.replace(**missing, spec_version=SPEC_VERSION), sorted(missing)


def backfill_spec(path: str | Path) -> tuple[Path, list[str]]:
    """Fill the task fields into a training run's ``spec.json`` in place (see :func:`fill_task_fields`).

    Args:
        path: The ``spec.json`` or the training folder holding it.

    Returns:
        (the spec file, names of the fields that were filled).

    Raises:
        ModelError: no readable spec, an unknown task, or an exported spec (one that lists its
            files' sha256: they are bound to it, so re-export instead of editing it).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "spec.json"
    spec = ModelSpec.load(path)
    if spec.files:
        raise ModelError(f"{path} is an exported spec bound to {sorted(spec.files)}; editing it would break the "
                         "binding: back-fill the training run's spec.json and re-export with `python -m export`")
    filled, changed = fill_task_fields(spec)
    if changed or filled.spec_version != spec.spec_version:
        filled.save(path)
    return path, changed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training backfill-spec",
        description="Fill title, description and populations (spec version 2) from training.data.TASKS into the "
                    "spec.json of training runs made before they existed; fields already set are kept. Re-export "
                    "afterwards: exported specs are bound to their files and are not edited.")
    parser.add_argument("runs", nargs="+", type=Path, help="training folder(s), e.g. android_assets/training/"
                        "cxr_binary_160, or their spec.json")
    parser.add_argument("--json", action="store_true", help="print {spec file: fields filled} as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    done = {}
    try:
        for run in args.runs:
            path, changed = backfill_spec(run)
            done[str(path)] = changed
            logger.info("%s: %s", path, f"filled {', '.join(changed)}" if changed else "nothing to fill")
    except CxrError as err:
        logger.error("%s", err)
        return 2
    if args.json:
        print(json.dumps(done, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
