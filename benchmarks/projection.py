"""Raspberry Pi 4 / Pi 5 latency PROJECTION from latencies measured here and published Pi references."""

# Nothing here is measured on a Pi. The method: time a reference network (MobileNet v2 1.0, 224,
# float32, random weights) on this machine in the same run as our model, divide a published
# Raspberry Pi latency of that network by it, and multiply our measured latency by the quotient.
# For the Pi 5, the Pi 4 factor is multiplied by a published Pi 5 / Pi 4 latency quotient of one
# network timed with one TFLite build on both boards.

from __future__ import annotations

#: Published reference latencies (milliseconds). Each entry says where it comes from.
PI4_REFERENCE = {
    "network": "MobileNet v2 1.0X (224x224, float32, randomized weights)",
    "latency_ms": 44.0,
    "threads": "multi-threaded (the board's 4 cores)",
    "board": "Raspberry Pi 4 (BCM2711, 4x Cortex-A72)",
    "software": "XNNPACK end2end-bench, Raspbian Buster, benchmarked 2020-02-12",
    "source": "google/XNNPACK README.md, section 'Performance / Raspberry Pi' "
              "(https://github.com/google/XNNPACK/blob/master/README.md; table as stored at commit "
              "c363704855e9b80f417e6c64a8b6da20d8e58345)",
}
PI5_OVER_PI4 = {
    "network": "EfficientDet-Lite0 float32, TFLite 2.18.0 benchmark_model with XNNPACK, 4 threads",
    "pi4_ms": 175.845,
    "pi5_ms": 62.245,
    "source": "NobuoTsukamoto/benchmarks, tensorflow/lite/efficentdet/results/RasPi4_64bit/"
              "efficientdet_latency_v2.18.0.txt and .../RasPi5/efficientdet_latency_v2.18.0.txt "
              "(https://github.com/NobuoTsukamoto/benchmarks, commit 339f3bdd86c9dbde5f5b3f1c0844af25541a91bc; "
              "'Inference (avg)' of efficientdet-lite0_fp32 at 4 threads)",
}

CAVEATS = (
    "A projection, not a measurement: no Raspberry Pi was used.",
    "The Pi 4 reference ran on all 4 Pi cores; the reference here is timed at this machine's all-core thread "
    "count, so the factor compares whole machines, and is applied to our all-core latency.",
    "Scaling assumes our network's cost moves like MobileNet v2's between the two CPUs. Our model is much "
    "smaller, so fixed per-invoke overheads weigh more and multi-threading helps less: treat the numbers as an "
    "order of magnitude.",
    "int8 scales differently from float32 on ARM (Cortex-A72 in the Pi 4 has no int8 dot-product instructions; "
    "Cortex-A76 in the Pi 5 has them), so the int8 projection is the least certain.",
    "End-to-end projections also scale JPEG decoding and resizing by the same factor, which is rougher still, and "
    "their latencies come from the end-to-end run, not from the session in which the reference was timed.",
)


def project(reference_here_ms: float, ours_ms: dict[str, float], threads_here: int) -> dict:
    """Pi 4 and Pi 5 projections of ``ours_ms`` (name -> latency measured here at ``threads_here``).

    Args:
        reference_here_ms: Median latency of the reference network measured here, same run.
        ours_ms: Our measured medians to project.
        threads_here: Thread count both were measured at (this machine's cores).
    """
    pi4_factor = PI4_REFERENCE["latency_ms"] / reference_here_ms
    pi5_ratio = PI5_OVER_PI4["pi5_ms"] / PI5_OVER_PI4["pi4_ms"]
    pi5_factor = pi4_factor * pi5_ratio
    rows = {name: {"measured_here_ms": value, "projected_pi4_ms": value * pi4_factor,
                   "projected_pi5_ms": value * pi5_factor} for name, value in ours_ms.items()}
    return {
        "label": "PROJECTION (not measured on a Raspberry Pi)",
        "threads_here": threads_here,
        "reference_here_ms": reference_here_ms,
        "pi4_factor": pi4_factor,
        "pi5_over_pi4": pi5_ratio,
        "pi5_factor": pi5_factor,
        "rows": rows,
        "pi4_reference": PI4_REFERENCE,
        "pi5_over_pi4_reference": PI5_OVER_PI4,
        "caveats": list(CAVEATS),
    }
