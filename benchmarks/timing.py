"""Round-robin latency measurement: candidates interleaved in one run so machine noise hits them alike."""

from __future__ import annotations

import gc
import logging
import time
from typing import Callable, Sequence

import numpy as np

logger = logging.getLogger(__name__)

#: Percentiles reported for every latency distribution.
PERCENTILES = (50, 90, 99)


def summarize(samples_ms: Sequence[float]) -> dict:
    """Median, p90, p99, mean, min, max and count of latency samples in milliseconds.

    Raises:
        ValueError: no samples.
    """
    values = np.asarray(samples_ms, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no latency samples to summarize")
    p50, p90, p99 = np.percentile(values, PERCENTILES)
    return {
        "median_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "mean_ms": float(values.mean()),
        "min_ms": float(values.min()),
        "max_ms": float(values.max()),
        "runs": int(values.size),
    }


def round_robin(
    candidates: dict[str, Callable[[], object]],
    runs: int,
    warmup: int,
    seed: int = 0,
    progress: bool = True,
    desc: str = "timing",
) -> dict[str, dict]:
    """Time every candidate ``runs`` times, one call of each per round, in a shuffled order.

    A round calls each candidate once, in an order drawn afresh each round (seeded), so that a
    burst of load on the shared machine lands on all candidates alike and no candidate always
    runs right after a cache-thrashing neighbour. The garbage collector is run between rounds
    and paused during them, so that a collection is never billed to one candidate; objects alive
    after warm-up are frozen (``gc.freeze``) so that this collection stays cheap.

    Args:
        candidates: name -> zero-argument callable doing one inference.
        runs: Timed rounds.
        warmup: Untimed rounds before them (interpreter allocation, graph tracing, caches).
        seed: Seed of the per-round order.
        progress: Show a tqdm bar.
        desc: Bar label.

    Returns:
        name -> :func:`summarize` result plus ``samples_ms`` (the raw samples, in run order).
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    names = list(candidates)
    rng = np.random.default_rng(seed)
    for _ in range(max(0, warmup)):
        for name in names:
            candidates[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    rounds: object = range(runs)
    if progress:
        from tqdm import tqdm

        rounds = tqdm(rounds, desc=desc, unit="round", leave=False)
    was_enabled = gc.isenabled()
    # Freeze what exists after warm-up (models, interpreters, framework state): the collection
    # between rounds then scans only the objects the last round made, which takes microseconds
    # instead of the hundreds of milliseconds a full pass over TensorFlow's heap would take.
    gc.collect()
    gc.freeze()
    try:
        for _ in rounds:
            gc.collect()
            gc.disable()
            for index in rng.permutation(len(names)):
                name = names[index]
                call = candidates[name]
                start = time.perf_counter_ns()
                call()
                samples[name].append((time.perf_counter_ns() - start) / 1e6)
            gc.enable()
    finally:
        gc.unfreeze()
        if was_enabled:
            gc.enable()
    out = {}
    for name in names:
        out[name] = summarize(samples[name])
        out[name]["samples_ms"] = [round(v, 4) for v in samples[name]]
    return out


def speedup(results: dict[str, dict], slower: str, faster: str) -> dict:
    """How many times faster ``faster`` is than ``slower``: the quotient of their medians."""
    a, b = results[slower]["median_ms"], results[faster]["median_ms"]
    return {"slower": slower, "faster": faster, "slower_median_ms": a, "faster_median_ms": b,
            "speedup": a / b if b > 0 else float("nan")}
