"""Peak memory and cold start of a fresh edge-runtime process classifying one image."""

from __future__ import annotations

import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np

from .speed import run_in_subprocess


def measure_coldstart(model: str | Path, image: str | Path, runs: int = 5, threads: int = 1,
                      quality_gate: bool = False, progress: bool = False) -> dict:
    """Start ``runs`` fresh interpreters that import the runtime, load ``model`` and classify ``image``.

    The children are started one after another by a small standard-library-only launcher (see
    :func:`benchmarks.edge_process.run_coldstart_series`), which reads each child's peak RSS
    from ``os.wait4`` (the kernel's ru_maxrss for that one child; ``RUSAGE_CHILDREN`` would
    give the maximum over every child ever waited for). The child's own ``VmHWM`` from ``/proc``
    is kept as a cross-check, and ``sys.modules`` in the child shows whether TensorFlow was loaded.

    Returns:
        Per-run records and their summary.

    Raises:
        RuntimeError: a child failed.
    """
    config = {"model": str(model), "image": str(image), "threads": threads, "quality_gate": quality_gate,
              "runs": runs, "progress": progress}
    series = run_in_subprocess("benchmarks.edge_process", ["coldstart-series"], config)
    records = series["records"]
    walls = [r["process_wall_ms"] for r in records]
    return {
        "runs": len(records),
        "threads": threads,
        "model": Path(model).name,
        "image": Path(image).name,
        "quality_gate": quality_gate,
        "process_wall_ms_median": float(np.median(walls)),
        "process_wall_ms_max": float(np.max(walls)),
        "first_run_wall_ms": float(walls[0]),
        "import_ms_median": float(np.median([r["import_ms"] for r in records])),
        "load_model_ms_median": float(np.median([r["load_model_ms"] for r in records])),
        "first_classify_ms_median": float(np.median([r["first_classify_ms"] for r in records])),
        "peak_rss_bytes_max": int(max(r["peak_rss_bytes"] for r in records)),
        "peak_rss_bytes_median": float(np.median([r["peak_rss_bytes"] for r in records])),
        "vmhwm_bytes_max": int(max(r["vmhwm_bytes"] for r in records)),
        "launcher_rss_bytes": int(series["launcher_rss_bytes"]),
        "heavy_modules_imported": sorted({m for r in records for m, on in r["heavy_modules"].items() if on}),
        "tensorflow_imported": any(r["heavy_modules"]["tensorflow"] for r in records),
        "runtime": records[0]["runtime"],
        "modules_loaded": records[0]["modules_loaded"],
        "records": records,
    }


#: Issue 10's limit on what any one input may cost a CLI process.
HOSTILE_PEAK_LIMIT_BYTES = 250 * 1024 * 1024


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def flat_png(width: int, height: int, colour_type: int = 0, bit_depth: int = 8, body: bool = True) -> bytes:
    """A constant PNG of ``width`` x ``height`` (grey 0, RGBA 6; 8/16 bits), compressed row by row; with
    ``body=False`` only its header (a decompression bomb that declares the size)."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    if body:
        row = b"\x00" * (1 + width * channels * bit_depth // 8)
        compressor = zlib.compressobj(9)
        idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    else:
        idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def hostile_inputs(folder: Path) -> dict[str, Path]:
    """Issue 10's inputs: 8000 x 7999 PNGs of a few hundred KB (RGBA: 256 MB decoded, 16-bit grey,
    8-bit grey), a 30000^2 header-only PNG, and /dev/zero (a device that never ends)."""
    files = {
        "8000x7999 RGBA PNG": flat_png(8000, 7999, colour_type=6),
        "8000x7999 16-bit grey PNG": flat_png(8000, 7999, bit_depth=16),
        "8000x7999 8-bit grey PNG": flat_png(8000, 7999),
        "30000x30000 PNG header": flat_png(30000, 30000, body=False),
    }
    paths = {}
    for index, (name, data) in enumerate(files.items()):
        paths[name] = folder / f"hostile{index}.png"
        paths[name].write_bytes(data)
    paths["/dev/zero"] = Path("/dev/zero")
    return paths


def measure_hostile_inputs(model: str | Path, quality_gate: bool = True) -> dict:
    """Peak RSS of a fresh edge-runtime process given each hostile input (refused, never decoded in full).

    Returns:
        ``{"inputs": {name: {"peak_rss_bytes", "refused", "size_bytes"}}, "peak_rss_bytes_max", "limit_bytes"}``.
    """
    out: dict = {"inputs": {}}
    with tempfile.TemporaryDirectory(prefix="cxr-hostile-") as tmp:
        for name, path in hostile_inputs(Path(tmp)).items():
            config = {"model": str(model), "image": str(path), "threads": 1, "quality_gate": quality_gate,
                      "runs": 1, "progress": False, "allow_refusal": True}
            record = run_in_subprocess("benchmarks.edge_process", ["coldstart-series"], config)["records"][0]
            out["inputs"][name] = {"peak_rss_bytes": int(record["peak_rss_bytes"]), "refused": record["refused"],
                                   "size_bytes": path.stat().st_size if path.is_file() else None}
    out["peak_rss_bytes_max"] = max(v["peak_rss_bytes"] for v in out["inputs"].values())
    out["limit_bytes"] = HOSTILE_PEAK_LIMIT_BYTES
    return out
