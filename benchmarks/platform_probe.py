"""What the installed runtime answers on this machine: CLI, Python API (probabilities, heatmaps), web API.

Run with the Python of a TensorFlow-free environment that has ``cxr-edge[litert,dicom,web]`` installed,
once on x86 and once in the arm64 root file system (``benchmarks/arm64.sh``); ``python -m
benchmarks.arm64`` then compares the two JSON files. This file imports only the installed runtime
and the standard library (plus numpy), so it runs from a plain copy of the checkout.

    python benchmarks/platform_probe.py --samples ../shared/data/fullres_sample --out probe.json

Timings measured here under emulation say nothing about a device's speed and are not recorded.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np

#: Interpreter thread counts tried on the default model, to see whether the thread count changes results.
THREAD_COUNTS = (1, 2, 4)
#: How long the web server may take to answer its first health check (emulation is slow).
SERVER_START_TIMEOUT_S = 600.0


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_features() -> dict:
    """What the CPU reports in /proc/cpuinfo (XNNPACK's cpuinfo reads the same file to pick kernels)."""
    info = {"cpuinfo_readable": False}
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return info
    info["cpuinfo_readable"] = True
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("features", "flags") and "features" not in info:
            info["features"] = value.split()
        if key in ("model name", "cpu part", "cpu implementer") and key not in info:
            info[key] = value.strip()
    info["logical_cpus"] = os.cpu_count()
    return info


def describe_platform() -> dict:
    """Machine, OS, Python and the versions of the packages the runtime uses."""
    from edge_runtime.interpreter import find_interpreter_class

    os_release = {}
    try:
        for line in Path("/etc/os-release").read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition("=")
            os_release[key] = value.strip('"')
    except OSError:
        pass
    cpu = _cpu_features()
    return {
        "machine": platform.machine(),
        "os": os_release.get("PRETTY_NAME", platform.platform()),
        "glibc": "-".join(platform.libc_ver()),
        "python": platform.python_version(),
        "runtime": find_interpreter_class()[1],
        "packages": {name: _version(name) for name in
                     ("cxr-edge", "ai-edge-litert", "tflite-runtime", "numpy", "pillow", "pydicom", "flask",
                      "waitress")},
        "cpu": {k: v for k, v in cpu.items() if k != "features"},
        # The feature flags that matter to XNNPACK's integer and half-precision kernels.
        "cpu_features": sorted(set(cpu.get("features", [])) & {
            "asimd", "asimddp", "asimdhp", "fphp", "i8mm", "sve", "sve2", "bf16", "sme",
            "avx2", "avx512f", "avx512bw", "avx512vnni", "avx_vnni", "fma", "f16c", "sse4_1"}),
    }


def _round(values, digits: int = 7) -> list:
    return [round(float(v), digits) for v in np.asarray(values).ravel()]


def probe_api(samples: list[Path], models_dir: Path) -> dict:
    """Every shipped heatmap model on every sample through the Python API; the prepared input's
    sha256 shows whether decoding and resizing gave the same pixels as on the other machine."""
    from edge_runtime import Classifier, ClassifierOptions
    from edge_runtime.imaging import load_image, prepare_input
    from edge_runtime.model_files import list_models

    images = {p.name: load_image(p.read_bytes(), name=p.name) for p in samples}
    out = {}
    for model in list_models(models_dir):
        if not model["heatmap"]:
            continue
        with Classifier(model["path"], ClassifierOptions(num_threads=1)) as clf:
            rows = {}
            for name, rgb in images.items():
                prepared = prepare_input(rgb, clf.spec)
                result = clf.classify(rgb, heatmap=True)
                rows[name] = {
                    "input_sha256": hashlib.sha256(np.ascontiguousarray(prepared).tobytes()).hexdigest(),
                    "label": result.label,
                    "probabilities": {k: float(v) for k, v in result.probabilities.items()},
                    "heatmap": _round(result.heatmap),
                }
            out[model["file"]] = {"labels": list(clf.spec.labels), "images": rows}
    return out


def probe_threads(samples: list[Path], model_path: Path) -> dict:
    """The default model's probabilities at several interpreter thread counts."""
    from edge_runtime import Classifier, ClassifierOptions
    from edge_runtime.imaging import load_image

    images = {p.name: load_image(p.read_bytes(), name=p.name) for p in samples}
    out = {}
    for threads in THREAD_COUNTS:
        with Classifier(model_path, ClassifierOptions(num_threads=threads)) as clf:
            out[str(threads)] = {name: _round(list(clf.classify(rgb).probabilities.values()), 9)
                                 for name, rgb in images.items()}
    return out


def probe_kernels(samples: list[Path], model_paths: list[Path]) -> dict:
    """Probabilities with each of the interpreter's kernel sets: the default (XNNPACK delegate), the
    built-in optimised kernels without it, and the portable reference kernels. If the reference
    kernels agree across machines and XNNPACK does not, the difference is XNNPACK's."""
    from edge_runtime import Classifier, ClassifierOptions
    from edge_runtime.imaging import load_image, prepare_input
    from edge_runtime.interpreter import find_interpreter_class

    interpreter_class, runtime = find_interpreter_class()
    module = sys.modules[interpreter_class.__module__]
    resolver = getattr(module, "OpResolverType", None)
    if resolver is None:
        return {"skipped": f"{runtime} has no OpResolverType"}
    images = {p.name: load_image(p.read_bytes(), name=p.name) for p in samples}
    out = {}
    for model_path in model_paths:
        per_kernel = {}
        with Classifier(model_path, ClassifierOptions(num_threads=1)) as clf:
            prepared = {name: prepare_input(rgb, clf.spec) for name, rgb in images.items()}
            for kind in ("AUTO", "BUILTIN_WITHOUT_DEFAULT_DELEGATES", "BUILTIN_REF"):
                # Same file, same tensor indices: only the interpreter's kernels change.
                interpreter = interpreter_class(model_path=str(model_path), num_threads=1,
                                                experimental_op_resolver_type=getattr(resolver, kind))
                interpreter.allocate_tensors()
                clf._interpreter = interpreter  # noqa: SLF001 - a probe swaps the kernels under the same wrapper
                per_kernel[kind] = {name: _round(clf.run(x)[0], 9) for name, x in prepared.items()}
        out[model_path.name] = per_kernel
    return out


def probe_cli(cxr_edge: list[str], samples: list[Path]) -> list[dict]:
    """``cxr-edge classify --json`` on the samples (the installed entry point, default model)."""
    done = subprocess.run(cxr_edge + ["classify", "--no-log", "--json", *map(str, samples)],
                          capture_output=True, text=True, check=False, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"cxr-edge classify exited {done.returncode}: {done.stderr[-2000:]}")
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    if len(rows) != len(samples):
        raise RuntimeError(f"cxr-edge classify printed {len(rows)} rows for {len(samples)} files")
    return [{"file": Path(r["path"]).name, "label": r["label"], "probabilities": r["probabilities"],
             "decision": r["decision"]} for r in rows]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _multipart(field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def probe_web(cxr_edge: list[str], sample: Path, workdir: Path) -> dict:
    """The real server (``cxr-edge serve``) on loopback: health, then one classify upload."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}/api/v1"
    log_file = workdir / "server.log"
    with open(log_file, "w", encoding="utf-8") as server_log:
        server = subprocess.Popen(cxr_edge + ["serve", "--host", "127.0.0.1", "--port", str(port),
                                              "--log", str(workdir / "web.db")],
                                  stdout=server_log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        health = None
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise RuntimeError(f"cxr-edge serve exited {server.returncode}: {log_file.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(base + "/health", timeout=10) as response:
                    health = json.load(response)
                break
            except OSError:
                time.sleep(1.0)
        if health is None:
            raise RuntimeError(f"cxr-edge serve did not answer within {SERVER_START_TIMEOUT_S:.0f} s")
        body, content_type = _multipart("file", sample.name, sample.read_bytes())
        request = urllib.request.Request(base + "/classify?heatmap=1", data=body, method="POST",
                                         headers={"Content-Type": content_type})
        with urllib.request.urlopen(request, timeout=600) as response:
            status = response.status
            answer = json.load(response)
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    keep = ("label", "probabilities", "decision", "score", "threshold")
    return {"health": {k: health.get(k) for k in ("status", "model_loaded", "default_model", "runtime")},
            "classify_status": status, "file": sample.name,
            "classify": {k: answer.get(k) for k in keep if k in answer},
            "heatmap_returned": bool(answer.get("heatmap"))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=Path, required=True, help="folder of sample X-rays (searched recursively)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--skip", default="", metavar="STEP,...",
                        help="steps to leave out: threads, kernels (the investigation steps; cli, api and web "
                             "are always run)")
    args = parser.parse_args(argv)

    from edge_runtime.model_files import find_models_dir, resolve_model

    samples = sorted(p for p in args.samples.rglob("*") if p.is_file() and p.suffix.lower() in (".jpeg", ".jpg", ".png"))
    if not samples:
        parser.error(f"no sample images in {args.samples}")
    script = Path(sys.executable).with_name("cxr-edge")
    cxr_edge = [str(script)] if script.exists() else [sys.executable, "-m", "edge_runtime.cli"]
    models_dir = find_models_dir()
    report = {"platform": describe_platform(), "models_dir": str(models_dir),
              "model_sha256": {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                               for p in sorted(models_dir.glob("*.tflite"))},
              "samples": [str(p.relative_to(args.samples)) for p in samples]}
    steps = (("cli", lambda: probe_cli(cxr_edge, samples)),
             ("api", lambda: probe_api(samples, models_dir)),
             ("threads", lambda: probe_threads(samples, resolve_model("binary"))),
             ("kernels", lambda: probe_kernels(samples, [resolve_model("binary"), resolve_model("binary-fp16")])),
             ("web", lambda: probe_web(cxr_edge, samples[-1], Path(tempfile.mkdtemp(prefix="cxr-probe-")))))
    skipped = {s.strip() for s in args.skip.split(",") if s.strip()}
    if skipped - {"threads", "kernels"}:
        parser.error(f"--skip takes threads and kernels only, got {args.skip!r}")
    for name, step in steps:
        if name in skipped:
            continue
        started = time.monotonic()
        report[name] = step()
        # Wall time of each step is kept only to plan CI time; under emulation it is no device speed.
        print(f"probe: {name} done ({time.monotonic() - started:.0f} s wall, not a device speed)", file=sys.stderr,
              flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
