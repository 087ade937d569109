"""Binds each exported .tflite to its spec: the spec (without ``files``) embedded in the model file.

The Android variants get their copy from the TFLite metadata writer (``model_spec.json``, an
associated file); every other file (the ``*_cam`` variants, ``--no-metadata`` exports) gets the
same ``model_spec.json`` in a zip appended to the flatbuffer, the way associated files are stored,
which interpreters ignore. The runtime refuses a model whose embedded spec differs from the sidecar
(``edge_runtime.spec.check_binding``). ``python -m export.binding --assets DIR`` binds files
exported before this existed and rewrites their sha256 in the sidecar; nothing is retrained.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import zipfile
from pathlib import Path

from edge_runtime.spec import (
    EMBEDDED_SPEC_NAME,
    SPEC_SUFFIX,
    ModelSpec,
    embedded_spec_dict,
    read_embedded_spec,
    sha256_file,
)

logger = logging.getLogger(__name__)


def embedded_spec_json(spec: ModelSpec) -> str:
    """The embedded copy's text: one function, used by the metadata writer and by :func:`embed_spec`."""
    return json.dumps(embedded_spec_dict(spec), indent=2) + "\n"


def embed_spec(tflite_path: str | Path, spec: ModelSpec) -> Path:
    """Append ``model_spec.json`` to a .tflite that carries no embedded spec yet; returns its path.

    Raises:
        ValueError: the file already embeds a spec that differs from ``spec`` (re-export instead).
    """
    tflite_path = Path(tflite_path)
    existing = read_embedded_spec(tflite_path)
    if existing is not None:
        if embedded_spec_dict(ModelSpec.from_dict(existing)) != embedded_spec_dict(spec):
            raise ValueError(f"{tflite_path} already embeds a different spec; re-export it")
        return tflite_path
    # Mode "a" on a file that is not a zip appends a new archive after its content.
    with zipfile.ZipFile(tflite_path, "a", compression=zipfile.ZIP_STORED) as archive:
        info = zipfile.ZipInfo(EMBEDDED_SPEC_NAME, date_time=(1980, 1, 1, 0, 0, 0))  # reproducible bytes
        archive.writestr(info, embedded_spec_json(spec))
    return tflite_path


def bind_folder(folder: str | Path) -> dict[str, list[str]]:
    """Embed each spec in every .tflite it lists that lacks one, then rewrite the spec's sha256s.

    Returns:
        Spec file name -> model files that were bound.
    """
    folder = Path(folder)
    bound: dict[str, list[str]] = {}
    for spec_path in sorted(folder.glob("*" + SPEC_SUFFIX)):
        spec = ModelSpec.load(spec_path)
        changed = []
        for name in sorted(spec.files or {}):
            path = folder / name
            if name.endswith(".tflite") and path.is_file() and read_embedded_spec(path) is None:
                embed_spec(path, spec)
                changed.append(name)
        if changed:
            files = dict(spec.files)
            files.update({name: sha256_file(folder / name) for name in changed})
            spec.replace(files=files).save(spec_path)
            logger.info("%s: bound %s", spec_path.name, ", ".join(changed))
        bound[spec_path.name] = changed
    return bound


#: The checksum list published with the models (``sha256sum -c SHA256SUMS`` checks it).
CHECKSUMS_NAME = "SHA256SUMS"


def write_checksums(folder: str | Path) -> Path:
    """Write ``SHA256SUMS`` (``sha256sum`` format) of every spec and every file the specs list.

    A clinic receiving a model update compares this list with the one published by the project
    (release page, printed sheet), then runs ``sha256sum -c SHA256SUMS`` in the folder.
    """
    folder = Path(folder)
    names = set()
    for spec_path in folder.glob("*" + SPEC_SUFFIX):
        names.add(spec_path.name)
        names.update(n for n in (ModelSpec.load(spec_path).files or {}) if (folder / n).is_file())
    lines = [f"{sha256_file(folder / name)}  {name}" for name in sorted(names)]
    path = folder / CHECKSUMS_NAME
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.binding", description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=Path, required=True, help="folder of *.spec.json with their .tflite files")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print(json.dumps(bind_folder(args.assets), indent=2))
    logger.info("wrote %s", write_checksums(args.assets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
