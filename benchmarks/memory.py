"""Peak memory and cold start of a fresh edge-runtime process classifying one image."""

from __future__ import annotations

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
