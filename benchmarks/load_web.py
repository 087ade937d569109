"""Load test of the clinic server: concurrent uploads on loopback, zero errors, every result logged."""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import logging
import random
import math
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Sequence
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_IMAGES = REPO_ROOT.parent / "shared" / "data" / "chest_xray" / "train"
DEFAULT_MODELS = REPO_ROOT / "android_assets"
_SUFFIXES = (".jpeg", ".jpg", ".png", ".dcm")


def encode_multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    """Encode a multipart/form-data body.

    Args:
        fields: Plain form fields.
        files: Field name -> (file name, content, content type).

    Returns:
        (body, Content-Type header value).
    """
    boundary = "----cxr-edge-" + uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, content, ctype) in files.items():
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                f"Content-Type: {ctype}\r\n\r\n").encode()
        parts.append(head + content + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class ApiClient:
    """A minimal keep-alive client of the JSON API (standard library only).

    Args:
        base_url: ``http://127.0.0.1:PORT``.
        token: Sent as ``Authorization: Bearer``.
        timeout: Seconds per request.
    """

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 120.0):
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname, parts.port or 80
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """Send one request (reconnecting once if the kept-alive connection was closed)."""
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self._conn.request(method, path, body=body, headers={**self.headers, **(headers or {})})
                response = self._conn.getresponse()
                return response.status, response.read()
            except (ConnectionError, http.client.RemoteDisconnected, http.client.CannotSendRequest):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def get_json(self, path: str) -> tuple[int, dict]:
        status, data = self.request("GET", path)
        return status, json.loads(data)

    def classify(self, image: bytes, filename: str = "image.jpeg", model: str | None = None,
                 heatmap: bool = False) -> tuple[int, dict]:
        fields = {"heatmap": "true" if heatmap else "false"}
        if model:
            fields["model"] = model
        body, ctype = encode_multipart(fields, {"file": (filename, image, "application/octet-stream")})
        status, data = self.request("POST", "/api/v1/classify", body, {"Content-Type": ctype})
        try:
            return status, json.loads(data)
        except ValueError:
            return status, {"error": {"code": "not_json", "message": data[:200].decode("latin-1")}}

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@dataclasses.dataclass
class LoadReport:
    """Outcome of :func:`run_load`."""

    clients: int
    uploads: int
    wall_s: float
    latencies_ms: list[float]
    server_latencies_ms: list[float]
    ids: list[int]
    errors: list[str]

    @property
    def requests(self) -> int:
        return self.clients * self.uploads

    def summary(self) -> dict:
        def pct(values, q):
            return round(percentile(values, q), 1) if values else None

        return {
            "clients": self.clients, "uploads_per_client": self.uploads, "requests": self.requests,
            "ok": len(self.latencies_ms), "errors": len(self.errors), "wall_s": round(self.wall_s, 2),
            "throughput_rps": round(len(self.latencies_ms) / self.wall_s, 2) if self.wall_s else None,
            "p50_ms": pct(self.latencies_ms, 50), "p95_ms": pct(self.latencies_ms, 95),
            "max_ms": round(max(self.latencies_ms), 1) if self.latencies_ms else None,
            "server_p50_ms": pct(self.server_latencies_ms, 50), "server_p95_ms": pct(self.server_latencies_ms, 95),
        }


def percentile(values: Sequence[float], q: float) -> float:
    """Linearly interpolated percentile (``q`` in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * min(max(q, 0.0), 100.0) / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


def run_load(base_url: str, images: Sequence[tuple[str, bytes]], clients: int = 8, uploads: int = 50,
             token: str | None = None, model: str | None = None, heatmap: bool = False) -> LoadReport:
    """``clients`` threads each upload ``uploads`` images (cycling through ``images``) at once.

    Returns:
        Client-side latencies of successful uploads, their log ids, and one line per error.
    """
    if not images:
        raise ValueError("no images to upload")
    lock = threading.Lock()
    latencies, server_latencies, ids, errors = [], [], [], []
    start = threading.Barrier(clients)

    def worker(index: int) -> None:
        client = ApiClient(base_url, token)
        start.wait()
        try:
            for n in range(uploads):
                name, data = images[(index * uploads + n) % len(images)]
                began = time.perf_counter()
                try:
                    status, body = client.classify(data, name, model=model, heatmap=heatmap)
                except OSError as err:
                    with lock:
                        errors.append(f"client {index} upload {n}: {err}")
                    continue
                elapsed = (time.perf_counter() - began) * 1000.0
                with lock:
                    if status == 200 and body.get("id") is not None:
                        latencies.append(elapsed)
                        server_latencies.append(float(body["latency_ms"]))
                        ids.append(int(body["id"]))
                    else:
                        problem = body.get("error") or body.get("warnings")
                        errors.append(f"client {index} upload {n} ({name}): HTTP {status} {problem}")
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(i,), name=f"load-{i}") for i in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return LoadReport(clients, uploads, time.perf_counter() - began, latencies, server_latencies, ids, errors)


def check_logged(base_url: str, ids: Sequence[int], token: str | None = None) -> list[str]:
    """Ask the server for every id; returns one line per id it does not have."""
    client = ApiClient(base_url, token)
    try:
        missing = []
        if len(set(ids)) != len(ids):
            missing.append(f"{len(ids) - len(set(ids))} duplicate ids returned")
        for row_id in ids:
            status, _ = client.request("GET", f"/api/v1/history/{row_id}")
            if status != 200:
                missing.append(f"id {row_id}: HTTP {status}")
        return missing
    finally:
        client.close()


def pick_images(folder: Path, count: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """``count`` image files drawn (seeded) from ``folder`` and its subfolders, read into memory."""
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in _SUFFIXES and p.is_file())
    if not files:
        raise FileNotFoundError(f"no JPEG/PNG/DICOM images under {folder}")
    chosen = random.Random(seed).sample(files, min(count, len(files)))
    return [(f"image{i}{p.suffix.lower()}", p.read_bytes()) for i, p in enumerate(chosen)]


def measure_web_load(models: Path | str = DEFAULT_MODELS, images: Path | str = DEFAULT_IMAGES, clients: int = 8,
                     uploads: int = 50, *, distinct_images: int = 32, model: str | None = None,
                     heatmap: bool = False, server_threads: int = 4, url: str | None = None,
                     token: str | None = None) -> dict:
    """Run the load test and check the log; what ``python -m benchmarks`` can call.

    Starts a waitress server on 127.0.0.1 (free port, temporary log) unless ``url`` names a
    running one on loopback.

    Returns:
        The summary of :meth:`LoadReport.summary` plus ``not_in_log`` (count), ``problems``
        (error lines, at most 20) and ``passed`` (no error, every result in the log).

    Raises:
        ValueError: ``url`` is not a loopback address, or the counts are below 1.
        FileNotFoundError: no images under ``images``.
        CxrError, OSError: the server cannot start.
    """
    from edge_runtime.web.config import is_loopback

    if clients < 1 or uploads < 1:
        raise ValueError("clients and uploads must be at least 1")
    picked = pick_images(Path(images), distinct_images)
    server, tmp = None, None
    if url:
        if not is_loopback(urlsplit(url).hostname or ""):
            raise ValueError("the load test only targets loopback addresses (127.0.0.1, ::1, localhost)")
        url = url.rstrip("/")
    else:
        from edge_runtime.web import create_server

        tmp = tempfile.TemporaryDirectory(prefix="cxr-load-")
        try:
            server = create_server("127.0.0.1", 0, models, token, threads=server_threads,
                                   log_path=Path(tmp.name) / "screenings.sqlite").start()
        except BaseException:
            tmp.cleanup()
            raise
        url = server.url
    try:
        report = run_load(url, picked, clients, uploads, token, model, heatmap)
        missing = check_logged(url, report.ids, token)
        if server is not None:
            count = server.app.extensions["cxr_edge"].log.count()
            if count != len(report.ids):
                missing.append(f"log holds {count} rows for {len(report.ids)} successful uploads")
    finally:
        if server is not None:
            server.close()
        if tmp is not None:
            tmp.cleanup()
    summary = report.summary()
    summary["not_in_log"] = len(missing)
    summary["problems"] = (report.errors + missing)[:20]
    summary["passed"] = not report.errors and not missing
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.load_web",
        description="Load-test the clinic server on loopback: N concurrent clients each upload M real "
                    "X-rays; reports p50/p95 latency and fails on any error or any result missing from "
                    "the screening log. Starts its own server (temporary log) unless --url is given.")
    parser.add_argument("--models", type=Path, default=DEFAULT_MODELS,
                        help="models folder or file for the server started here (default: android_assets)")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES,
                        help="folder of X-rays to upload (default: ../shared/data/chest_xray/train)")
    parser.add_argument("--distinct-images", type=int, default=32, help="how many different images to cycle")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--uploads", type=int, default=50, help="uploads per client (default 50)")
    parser.add_argument("--model", help="model name to request (default: the server's default)")
    parser.add_argument("--heatmap", action="store_true", help="ask for heatmaps too")
    parser.add_argument("--server-threads", type=int, default=4, help="waitress threads of the server started here")
    parser.add_argument("--url", help="test an already running server on loopback instead, e.g. http://127.0.0.1:8080")
    parser.add_argument("--token", help="token of that server")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("-v", "--verbose", action="store_true", help="log the server's messages")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        # waitress warns about its queue depth, which is the point of a load test.
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    from edge_runtime.errors import CxrError

    try:
        summary = measure_web_load(args.models, args.images, args.clients, args.uploads,
                                   distinct_images=args.distinct_images, model=args.model, heatmap=args.heatmap,
                                   server_threads=args.server_threads, url=args.url, token=args.token)
    except (ValueError, FileNotFoundError, CxrError, OSError) as err:
        print(f"load test not run: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{summary['requests']} uploads from {args.clients} clients in {summary['wall_s']} s "
              f"({summary['throughput_rps']} /s): {summary['errors']} errors, {summary['not_in_log']} missing "
              "from the log")
        print(f"latency per upload (client side): p50 {summary['p50_ms']} ms, p95 {summary['p95_ms']} ms, "
              f"max {summary['max_ms']} ms; server classify p50 {summary['server_p50_ms']} ms, "
              f"p95 {summary['server_p95_ms']} ms")
    for line in summary["problems"]:
        print("  " + line, file=sys.stderr)
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
