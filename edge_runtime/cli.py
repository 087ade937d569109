"""cxr-edge: the command line of the edge runtime (classify, watch, camera, history, demo, serve)."""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import signal
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Iterable, Sequence

from PIL import Image

from . import __version__, receive, watch
from .camera import DEFAULT_SIZE as FRAME_SIZE
from .camera import PiCameraSource
from .classifier import Classifier, ClassifierOptions
from .errors import (
    CameraError,
    CxrError,
    DicomNodeError,
    LogError,
    ModelError,
    RuntimeUnavailableError,
    StorageError,
    UsageError,
)
from .i18n import DEFAULT_LANGUAGE, population_notice
from .imaging import IMAGE_SUFFIXES
from .log import ScreeningLog, default_log_path, local_time
from .model_files import (
    DEFAULT_MODEL,
    DEFAULT_PRECISION,
    file_info,
    find_models_dir,
    list_models,
    model_title,
    resolve_model,
)
from .receive import DEFAULT_AE_TITLE
from .receive import DEFAULT_HOST as DICOM_HOST
from .receive import DEFAULT_PORT as DICOM_PORT
from .receive import ForwardTarget, StorageNode, parse_allow
from .render import DEFAULT_ALPHA, heatmap_name, save_overlay
from .serialize import record_json, threshold_rule
from .service import (
    DEFAULT_MODELS_DIR,
    DEFAULT_STATE_DIR,
    DEFAULT_TOKEN_FILE,
    DEFAULT_UNIT_DIR,
    DEFAULT_USER,
    SERVICES,
    ServiceConfig,
    install_service,
    parse_extra,
    render_unit,
)
from .spec import ModelSpec, find_spec_for_model
from .watch import DEFAULT_POLL_SECONDS, DEFAULT_SETTLE_SECONDS, watch_folder
from .web.config import DEFAULT_HOST as WEB_HOST
from .web.config import DEFAULT_PORT as WEB_PORT

logger = logging.getLogger("cxr_edge")

#: Exit codes (also in ``--help``).
EXIT_OK, EXIT_SOME_FAILED, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130
#: The reader of stdout went away (a pipe into `head`): 128 + SIGPIPE, as shells report it.
EXIT_BROKEN_PIPE = 141

#: Errors after which nothing more can be classified: they end the command with exit code 2.
FATAL_ERRORS = (ModelError, RuntimeUnavailableError, LogError, CameraError, StorageError)
#: Environment variable naming the demo's sample folder.
SAMPLES_ENV = "CXR_SAMPLES"

_EPILOG = """\
exit codes:
  0    every input was classified
  1    some inputs could not be classified (unreadable, or not a chest X-ray); the others were
  2    usage error, or the model, runtime, camera, screening log or output folder could not be used
  130  interrupted (Ctrl+C)
  141  the output was closed early (a pipe into `head`): stopped quietly

environment:
  CXR_MODELS   folder of shipped models (*.tflite with their *.spec.json)
  CXR_LOG      screening log file (default ~/.local/share/cxr-edge/screenings.db)
  CXR_SAMPLES  sample X-rays for `cxr-edge demo`
  CXR_TOKEN    the web server's shared secret (`cxr-edge serve`; or --token-file)

A screening aid, not a diagnosis: every positive result must be reviewed by a clinician.
"""


# --------------------------------------------------------------------------------------------
# argument parsing

def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _alpha(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as {FRAME_SIZE[0]}x{FRAME_SIZE[1]}, "
                                         f"got {text!r}") from None
    return width, height


def _common_options(heatmap_default_help: str = "no heatmaps", omit: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The model, log and output options shared by the commands, without those in ``omit``
    (e.g. ``("heatmap", "alpha", "no-log")`` for a command that does not use them)."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("model and output options")
    add = group.add_argument

    def option(name: str, *flags: str, **kwargs) -> None:
        if name not in omit:
            add(*flags, **kwargs)

    group.add_argument("--model", default=DEFAULT_MODEL, metavar="NAME|PATH",
                       help="shipped model name: binary, etiology or covid, optionally with a precision "
                            "(binary-fp16, covid-int8); or the path of a .tflite file "
                            "(default: %(default)s, the int8 model with heatmap output)")
    option("heatmap", "--heatmap", type=Path, metavar="DIR",
           help=f"write an original | heatmap PNG per image into DIR (default: {heatmap_default_help})")
    option("alpha", "--alpha", type=_alpha, default=DEFAULT_ALPHA,
           help="heatmap opacity in the overlay, 0-1 (default: %(default)s)")
    group.add_argument("--threads", type=_positive_int, default=1, help="interpreter threads (default: %(default)s)")
    group.add_argument("--log", type=Path, metavar="PATH",
                       help="screening log (SQLite) to record every result in "
                            "(default: $CXR_LOG or ~/.local/share/cxr-edge/screenings.db)")
    option("no-log", "--no-log", action="store_true", help="do not record results in the screening log")
    option("store-identifiers", "--store-identifiers", action="store_true",
           help="keep identifiers in the log: input file paths (heatmaps are then named after the input) and "
                "the patient reference (--ref, the page's reference field, DICOM PatientID/AccessionNumber). "
                "Off by default: a file is logged as 'file' and known by its sha256, since scanner file names "
                "often carry the patient's name")
    option("ref", "--ref", metavar="TEXT",
           help="patient reference (e.g. the clinic's file number) recorded with these results; needs "
                "--store-identifiers")
    group.add_argument("--no-quality-gate", action="store_true",
                       help="classify even images that do not look like chest X-rays (not recommended)")
    group.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    return common


def build_parser() -> argparse.ArgumentParser:
    """The ``cxr-edge`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="cxr-edge",
        description="Offline chest X-ray screening (pneumonia, its type, COVID-19) with heatmaps, on a "
                    "Raspberry Pi or a laptop. Start with `cxr-edge demo`.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"cxr-edge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = _common_options()

    def add(name: str, help_text: str, description: str, parents=(common,)) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=description, epilog=_EPILOG, parents=list(parents),
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    p = add("classify", "classify image files or folders",
            "Classify X-ray images (JPEG, PNG, BMP, TIFF, DICOM) and print one line per image. A file that "
            "cannot be classified is reported on stderr and the others go on.")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="image files or folders of images")
    p.add_argument("--recursive", action="store_true", help="also look in sub-folders of folders")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per image (path, label, probabilities, threshold, decision, "
                        "latency_ms ...) instead of a table")
    p.set_defaults(handler=cmd_classify)

    p = add("watch", "classify each new file in a scanner folder, once",
            "Watch a folder (e.g. where a scanner or PACS export drops files) and classify every new file "
            "exactly once, also across restarts: files already in the screening log are not classified again. "
            "Files still being written are left until they stop changing. Stop with Ctrl+C.",
            parents=(_common_options(omit=("ref",)),))
    p.add_argument("folder", type=Path, metavar="DIR", help="folder to watch")
    p.add_argument("--processed", type=Path, metavar="DIR", help="move classified files here (default: leave them)")
    p.add_argument("--failed", type=Path, metavar="DIR",
                   help="move files that could not be classified here, with a .error.txt note "
                        "(default: leave them, marked by the note)")
    p.add_argument("--interval", type=_non_negative_float, default=DEFAULT_POLL_SECONDS,
                   help="seconds between scans (default: %(default)s)")
    p.add_argument("--settle", type=_non_negative_float, default=DEFAULT_SETTLE_SECONDS,
                   help="seconds a file must stay unchanged before it is read (default: %(default)s)")
    p.add_argument("--grace", type=_non_negative_float, default=None,
                   help="a file that reads as truncated or undecodable is read again whenever it changes, and "
                        f"failed only after staying unchanged this many seconds (default: {watch.GRACE_FACTOR:g} x "
                        "--settle)")
    p.add_argument("--once", action="store_true", help="handle the files present, then exit")
    p.add_argument("--json", action="store_true", help="print one JSON object per file")
    p.set_defaults(handler=cmd_watch)

    p = add("camera", "classify frames from the Raspberry Pi camera",
            "Capture a frame from the Pi camera (picamera2; e.g. a film on a light box) and classify it; with "
            "--interval, keep capturing until Ctrl+C or --count frames.")
    p.add_argument("--interval", type=_non_negative_float, metavar="SECONDS",
                   help="capture a frame every SECONDS (default: one frame only)")
    p.add_argument("--count", type=_positive_int, help="stop after this many frames")
    p.add_argument("--size", type=_size, default=FRAME_SIZE, metavar="WxH",
                   help=f"frame size (default: {FRAME_SIZE[0]}x{FRAME_SIZE[1]})")
    p.add_argument("--camera-num", type=int, default=0, help="camera index when several are connected (default: 0)")
    p.add_argument("--save-frames", type=Path, metavar="DIR", help="also save each frame as a PNG in DIR")
    p.add_argument("--json", action="store_true", help="print one JSON object per frame")
    p.set_defaults(handler=cmd_camera)

    p = add("history", "show recent screenings from the log",
            "Show the most recent screenings in the log, or export them as CSV.",
            parents=())
    p.add_argument("--log", type=Path, metavar="PATH",
                   help="screening log (default: $CXR_LOG or ~/.local/share/cxr-edge/screenings.db)")
    p.add_argument("--limit", type=_positive_int, default=20, help="rows to show (default: %(default)s)")
    p.add_argument("--offset", type=_non_negative_int, default=0, help="skip this many of the newest rows (paging; default: 0)")
    p.add_argument("--label", help="only rows with this label, any case (e.g. pneumonia)")
    p.add_argument("--ref", metavar="TEXT", help="only rows whose patient reference contains TEXT (any case)")
    p.add_argument("--csv", type=Path, metavar="FILE", help="export the whole log (or --label rows) as CSV to FILE; "
                                                             "'-' for stdout")
    p.add_argument("--json", action="store_true", help="print one JSON object per row")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    p.set_defaults(handler=cmd_history)

    p = add("demo", "run the bundled model on sample X-rays (start here)",
            "Classify the sample X-rays (by default the 24 full-resolution originals in "
            "../shared/data/fullres_sample next to this checkout; or --samples DIR, or $CXR_SAMPLES), write "
            "heatmap overlays, and compare the screening decisions with the folder names (NORMAL/PNEUMONIA). "
            "Demo results go to the screening log only when --log names one.",
            # Demo results are logged only with --log: --no-log would mean nothing here.
            parents=(_common_options("~/.local/share/cxr-edge/demo", omit=("ref", "no-log")),))
    p.add_argument("--samples", type=Path, metavar="DIR", help="folder of sample X-rays in per-class sub-folders")
    p.set_defaults(handler=cmd_demo)

    p = add("serve", "serve the clinic web page and JSON API",
            "Serve the web page and JSON API (waitress). Loopback only unless --host and --token are given. "
            "Every result is recorded in the screening log; with --store-identifiers the page offers a "
            "patient reference field. Stop with Ctrl+C.",
            parents=(_common_options(omit=("heatmap", "alpha", "no-log", "ref")),))
    p.add_argument("--host", default=WEB_HOST, help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=WEB_PORT, help="TCP port (default: %(default)s)")
    token = p.add_mutually_exclusive_group()
    token.add_argument("--token-file", type=Path, metavar="FILE",
                       help="file holding the shared secret required from clients (needed for a non-loopback "
                            "--host; one line, e.g. `openssl rand -hex 16 > FILE; chmod 600 FILE`); default: "
                            "$CXR_TOKEN")
    token.add_argument("--token", help="the secret itself (not recommended: other users see it in `ps`; use "
                                       "--token-file or $CXR_TOKEN)")
    p.add_argument("--models", type=Path, metavar="DIR", help="models folder to offer (default: the shipped models)")
    p.set_defaults(handler=cmd_serve)

    p = add("receive", "be a DICOM storage node: X-ray machines send films here",
            "Listen for DICOM C-STORE from an X-ray machine, digitiser or PACS (a Storage SCP that also answers "
            "C-ECHO). CR, DX and Secondary Capture instances are classified exactly once (by SOP Instance UID "
            "and by content, also across restarts), recorded in the screening log and answered with success; "
            "what cannot be screened (no pixel data, colour, another body part, a lateral view, not a chest "
            "X-ray, undecodable) is refused with a DICOM failure status and the reason on stderr. One bad "
            "instance never stops the node. Stop with Ctrl+C.",
            parents=(_common_options(omit=("no-log", "ref")),))
    p.add_argument("--host", default=DICOM_HOST,
                   help="address to listen on (default: %(default)s, every interface: modalities are on the network)")
    p.add_argument("--port", type=int, default=DICOM_PORT, help="TCP port (default: %(default)s)")
    p.add_argument("--ae-title", default=DEFAULT_AE_TITLE, help="this node's AE title (default: %(default)s)")
    p.add_argument("--allow", nargs="+", metavar="AE",
                   help="accept associations only from these calling AE titles (default: any, with a warning)")
    p.add_argument("--forward", metavar="HOST:PORT:AE",
                   help="send each result as a DICOM Secondary Capture (heatmap overlay, burned-in result and "
                        "notice; same study, new series) to this viewer or PACS")
    p.add_argument("--reference-from", choices=("PatientID", "AccessionNumber"), default="PatientID",
                   help="DICOM attribute recorded as the patient reference with --store-identifiers "
                        "(default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object per instance")
    p.set_defaults(handler=cmd_receive)

    p = add("install-service", "write a systemd unit that starts serve, watch or receive at boot",
            "Write /etc/systemd/system/cxr-edge-SERVICE.service: the chosen command started at boot as an "
            "unprivileged user (created if missing), restarted on failure, with the screening log in "
            "--state-dir, the models in --models-dir (copied from the shipped ones when empty) and, for serve, "
            "the token in --token-file (created, mode 600, owned by the user). Run with sudo, then: "
            "sudo systemctl daemon-reload && sudo systemctl enable --now cxr-edge-SERVICE. Arguments after "
            "'--' are passed to the command (e.g. -- --allow PACS1 for receive, the DICOM node).\n\n"
            "usage: cxr-edge install-service SERVICE [options] [-- ARGS for the command]",
            parents=())
    p.add_argument("service", choices=SERVICES, help="the command the unit starts")
    p.add_argument("--folder", type=Path, metavar="DIR", help="watch: the scanner folder to watch (absolute)")
    p.add_argument("--user", default=DEFAULT_USER, help="account the service runs as (default: %(default)s)")
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, metavar="DIR",
                   help="screening log and heatmaps (default: %(default)s)")
    p.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR, metavar="DIR",
                   help="models folder, read-only to the service (default: %(default)s)")
    p.add_argument("--token-file", type=Path, default=DEFAULT_TOKEN_FILE, metavar="FILE",
                   help="serve: the web token, readable only by --user (default: %(default)s)")
    p.add_argument("--host", default="0.0.0.0", help="serve: address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int,
                   help=f"serve: TCP port (default {WEB_PORT}); receive: DICOM port (default {DICOM_PORT})")
    p.add_argument("--unit-dir", type=Path, default=DEFAULT_UNIT_DIR, metavar="DIR",
                   help="where to write the unit (default: %(default)s)")
    p.add_argument("--print", dest="print_only", action="store_true",
                   help="print the unit and change nothing")
    p.add_argument("--no-create-user", action="store_true", help="fail instead of creating a missing --user")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    p.set_defaults(handler=cmd_install_service, extra=[])

    p = add("models", "list the shipped models", "List the model files found (name, task, precision, size).",
            parents=())
    p.add_argument("--json", action="store_true", help="print one JSON object per model file")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    p.set_defaults(handler=cmd_models)
    return parser


# --------------------------------------------------------------------------------------------
# shared helpers

def _out(line: str = "") -> None:
    print(line, flush=True)


def _err(message: str) -> None:
    print(f"cxr-edge: {message}", file=sys.stderr, flush=True)


def _error_text(name: str, err: BaseException) -> str:
    """The error message, prefixed with the input's name unless the message already starts with it."""
    message = str(err)
    if not message.startswith(name):
        message = f"{name}: {message}"
    return f"{message} [{getattr(err, 'code', 'error')}]"


def _report_failure(name: str, err: BaseException) -> None:
    if isinstance(err, CxrError):
        _err("error: " + _error_text(name, err))
    else:  # a bug or an exotic file: say so, keep the traceback for --verbose
        logger.info("unexpected error on %s", name, exc_info=err)
        _err(f"error: {name}: unexpected {type(err).__name__}: {err}")


def open_classifier(args):
    """The classifier named by ``--model`` (exits 2 via ModelError when unusable)."""
    path = resolve_model(args.model)
    options = ClassifierOptions(num_threads=args.threads, quality_gate=not args.no_quality_gate)
    classifier = Classifier(path, options)
    if getattr(args, "heatmap", None) is not None and not classifier.has_heatmap:
        classifier.close()
        raise ModelError(f"{path.name} has no heatmap output; use a *_cam.tflite model (e.g. --model binary) "
                         "or drop --heatmap")
    logger.info("model %s (%s) on %s", path, classifier.spec.name, classifier.runtime)
    return classifier


def open_log(args):
    """The screening log, or None with ``--no-log``.

    Raises:
        UsageError: ``--ref`` without ``--store-identifiers`` (the reference would be dropped).
    """
    if getattr(args, "ref", None) and not getattr(args, "store_identifiers", False):
        raise UsageError("--ref needs --store-identifiers: patient references are not stored by default")
    if getattr(args, "no_log", False):
        return None

    return ScreeningLog(args.log or default_log_path(), store_patient_ids=getattr(args, "store_identifiers", False))


def open_camera(args):
    """The frame source for ``camera`` (tests replace this function with a fake)."""
    return PiCameraSource(size=args.size, camera_num=args.camera_num)


def _row(result, path: str, heatmap, row_id) -> dict:
    data = {"path": path, "status": "classified", **record_json(result),
            "validated_populations": list(getattr(result, "validated_populations", None) or ())}
    notice = population_notice(DEFAULT_LANGUAGE, getattr(result, "population", None))
    if notice:
        data["population_notice"] = notice
    if heatmap is not None:
        data["heatmap"] = str(heatmap)
    if row_id is not None:
        data["log_id"] = row_id
    return data


_TABLE_HEADER = f"{'label':<12} {'score':>6} {'thresh':>6} {'decision':<41} {'ms':>7}  {'heatmap':<28}  file"


def score_meaning(negative_label: str = "NORMAL") -> str:
    """What the tables' score column means."""
    return (f"{threshold_rule(negative_label)} (thresh, the threshold; score 0 to 1). heatmap: the PNG written "
            "for that row in the --heatmap folder")


def _table_line(row: dict) -> str:
    heatmap = Path(row["heatmap"]).name if row.get("heatmap") else "-"
    line = (f"{row['label']:<12} {row['score']:>6.3f} {row['threshold']:>6.3f} {row['decision']:<41} "
            f"{row['latency_ms']:>7.1f}  {heatmap:<28}  {row['path']}")
    if (row.get("population_check") or {}).get("outside"):  # the warning under the row it concerns
        line += f"\n{'':<12} ! {row['population_notice']}"
    return line


def _classify_one(classifier, log, source, name: str, heatmap_dir: Path | None, alpha: float,
                  reference: str | None = None, identifiers: bool = False):
    """Classify, write the heatmap, record; returns (result, heatmap path, log row id)."""
    result = classifier.classify(source, heatmap=heatmap_dir is not None)
    heatmap = None
    if heatmap_dir is not None:
        heatmap = save_overlay(result, heatmap_dir / heatmap_name(Path(name).name, result.image_sha256, identifiers),
                               alpha=alpha)
    row_id = (log.record(result, source=name, heatmap_path=heatmap, patient_id=reference)
              if log is not None else None)
    return result, heatmap, row_id


def expand_inputs(paths: Iterable[Path], recursive: bool = False,
                  loops: list[Path] | None = None) -> tuple[list[Path], list[Path]]:
    """(files to classify, files skipped): files named, and image files inside folders named.

    In folders, files with an image suffix or no suffix at all (DICOM files often have none)
    are taken, sorted; other files are returned as skipped and hidden files ignored. A missing
    path is taken as is (its error is reported when it is read). Symbolic links inside the
    folders that loop (or point nowhere) are appended to ``loops`` when it is given.
    """
    taken, skipped = [], []
    for path in paths:
        if not path.is_dir():
            taken.append(path)
            continue
        walker = path.rglob("*") if recursive else path.iterdir()
        for child in sorted(walker):
            if child.name.startswith("."):
                continue
            if not child.is_file():
                if loops is not None and child.is_symlink() and not child.exists():
                    loops.append(child)
                continue
            if child.suffix.lower() in IMAGE_SUFFIXES or child.suffix == "":
                taken.append(child)
            else:
                skipped.append(child)
    return taken, skipped


def _report_loops(loops: list[Path]) -> None:
    if loops:
        _err(f"skipped {len(loops)} symbolic link(s) that loop or point nowhere: "
             + ", ".join(str(p) for p in loops[:5]) + (" ..." if len(loops) > 5 else ""))


def _failure_row(path: str, err: BaseException) -> dict:
    """The JSON line of an input that could not be classified (``--json`` prints one per input)."""
    return {"path": path, "status": "failed", "error": _error_text(path, err).rsplit(" [", 1)[0],
            "code": getattr(err, "code", "error")}


# --------------------------------------------------------------------------------------------
# commands

def cmd_classify(args) -> int:
    """``cxr-edge classify``: classify files and folders; exit 1 when some could not be."""
    classifier = open_classifier(args)
    log = open_log(args)
    ok = failed = 0
    try:
        if not args.json:
            _out(_TABLE_HEADER)
        loops: list[Path] = []
        files, skipped = expand_inputs(args.paths, args.recursive, loops)
        _report_loops(loops)
        failed += len(loops)
        if skipped:
            _err(f"skipped {len(skipped)} file(s) without an image suffix in the folders given: "
                 + ", ".join(p.name for p in skipped[:5]) + (" ..." if len(skipped) > 5 else ""))
        for path in files:
            try:
                result, heatmap, row_id = _classify_one(classifier, log, path, str(path), args.heatmap, args.alpha,
                                                        args.ref, args.store_identifiers)
            except FATAL_ERRORS:
                raise
            except Exception as err:  # noqa: BLE001 - one bad file must not stop the batch
                failed += 1
                _report_failure(str(path), err)
                if args.json:  # a script reading stdout sees every input, failed ones included
                    _out(json.dumps(_failure_row(str(path), err)))
                continue
            ok += 1
            row = _row(result, str(path), heatmap, row_id)
            _out(json.dumps(row) if args.json else _table_line(row))
    finally:
        classifier.close()
        if log is not None:
            log.close()
    if not args.json or failed:
        print(f"{ok} classified, {failed} failed", file=sys.stderr, flush=True)
    if ok and not args.json:
        _err(score_meaning(classifier.spec.negative_label))
    if ok + failed == 0 and not loops:
        _err("error: no image files found in " + ", ".join(str(p) for p in args.paths))
        nested = [p for p in args.paths if p.is_dir() and any(c.is_dir() for c in p.iterdir())]
        if nested and not args.recursive:
            _err(f"{nested[0]} holds only sub-folders: add --recursive to classify the images inside them")
        return EXIT_SOME_FAILED
    return EXIT_SOME_FAILED if failed else EXIT_OK


def cmd_watch(args) -> int:
    """``cxr-edge watch``: classify each new file of a folder once (see :func:`edge_runtime.watch.watch_folder`)."""
    if not args.folder.is_dir():
        _err(f"error: watch folder not found: {args.folder}")
        return EXIT_ERROR
    classifier = open_classifier(args)
    log = open_log(args)
    if log is None:
        logger.warning("--no-log: files are not remembered across restarts")
    failed = 0
    stop = threading.Event()
    try:
        if not args.json:
            _out(_TABLE_HEADER)
        for outcome in watch_folder(args.folder, classifier, log, processed_dir=args.processed,
                                    failed_dir=args.failed, heatmap_dir=args.heatmap, poll_interval=args.interval,
                                    settle_seconds=args.settle, stop_event=stop, once=args.once, alpha=args.alpha,
                                    grace_seconds=args.grace):
            if outcome.status == watch.CLASSIFIED:
                row = _row(outcome.result, str(outcome.path), outcome.heatmap_path, outcome.row_id)
                _out(json.dumps(row) if args.json else _table_line(row))
            elif outcome.status == watch.DUPLICATE:
                if args.json:
                    _out(json.dumps({"path": str(outcome.path), "status": watch.DUPLICATE}))
                else:
                    _err(f"{outcome.path}: already screened with this model; skipped")
            else:
                failed += 1
                if args.json:
                    _out(json.dumps({"path": str(outcome.path), "status": outcome.status,
                                     "error": outcome.error, "code": outcome.error_code}))
                _err("error: " + (outcome.error or str(outcome.path)) + f" [{outcome.error_code}]")
    finally:
        stop.set()
        classifier.close()
        if log is not None:
            log.close()
    return EXIT_SOME_FAILED if failed else EXIT_OK


def cmd_camera(args) -> int:
    """``cxr-edge camera``: classify one frame, or one every ``--interval`` seconds."""
    classifier = open_classifier(args)
    log = open_log(args)
    ok = failed = 0
    try:
        with open_camera(args) as camera:
            if not args.json:
                _out(_TABLE_HEADER)
            while True:
                stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
                name = f"camera-{stamp}"
                frame = camera.capture()
                if args.save_frames is not None:
                    args.save_frames.mkdir(parents=True, exist_ok=True)
                    name = str(args.save_frames / f"{name}.png")
                    Image.fromarray(frame).save(name)
                try:
                    result, heatmap, row_id = _classify_one(classifier, log, frame, name, args.heatmap, args.alpha,
                                                            args.ref, args.store_identifiers)
                    ok += 1
                    row = _row(result, name, heatmap, row_id)
                    _out(json.dumps(row) if args.json else _table_line(row))
                except FATAL_ERRORS:
                    raise
                except Exception as err:  # noqa: BLE001 - one bad frame must not stop the loop
                    failed += 1
                    _report_failure(name, err)
                if args.interval is None or (args.count is not None and ok + failed >= args.count):
                    break
                time.sleep(args.interval)
    finally:
        classifier.close()
        if log is not None:
            log.close()
    return EXIT_SOME_FAILED if failed else EXIT_OK


def _known_labels(log) -> list[str]:
    """Labels of the shipped models and of the log, for checking ``history --label``."""
    labels = set(log.labels())
    try:
        labels.update(label for model in list_models() for label in model["labels"])
    except ModelError:  # no models folder: the log's labels only
        pass
    return sorted(labels)


def cmd_history(args) -> int:
    """``cxr-edge history``: recent rows of the screening log, or all of them as CSV."""
    path = args.log or default_log_path()
    if not Path(path).is_file():
        _err(f"no screening log yet at {path}")
        return EXIT_OK
    with ScreeningLog(path, store_patient_ids=True) as log:
        if args.label is not None:
            known = _known_labels(log)
            match = next((k for k in known if k.lower() == args.label.strip().lower()), None)
            if match is None:
                _err(f"error: unknown label {args.label!r}; the labels are {', '.join(known) or 'none yet'}")
                return EXIT_ERROR
            args.label = match
        if args.csv is not None:
            # The reference column is exported when the log holds references (they are only written when enabled).
            log.store_patient_ids = log.has_references()
            if str(args.csv) == "-":
                count = log.export_csv(sys.stdout, label=args.label, reference=args.ref)
            else:
                count = log.export_csv(args.csv, label=args.label, reference=args.ref)
                _err(f"wrote {count} rows to {args.csv}")
            return EXIT_OK
        rows = log.recent(limit=args.limit, label=args.label, offset=args.offset, reference=args.ref)
        total = log.count(args.label, reference=args.ref)
    if args.json:
        for row in rows:  # every column, with the result's fields as everywhere else (rounded, positive)
            _out(json.dumps({**row, **record_json(row)}))
        return EXIT_OK
    with_refs = any(row["patient_id"] for row in rows)
    _out(f"{'id':>5}  {'time (local)':<23}  {'label':<12} {'score':>6} {'decision':<41} {'model':<42} "
         + ("reference  " if with_refs else "") + "source")
    for row in rows:
        reference = f"{row['patient_id'] or '-':<10} " if with_refs else ""
        _out(f"{row['id']:>5}  {local_time(row['time']):<23}  {row['label']:<12} {row['score']:>6.3f} "
             f"{row['decision']:<41} {model_title(row['model_name']):<42} {reference}{row['source'] or ''}")
    shown = f"{args.offset + 1}-{args.offset + len(rows)}" if rows else "0"
    _err(f"{shown} of {total} screenings{' labelled ' + args.label if args.label else ''}"
         f"{' with reference ' + repr(args.ref) if args.ref else ''} in {path}")
    return EXIT_OK


def default_samples_dirs() -> list[Path]:
    """Where ``demo`` looks for samples without ``--samples``: ``$CXR_SAMPLES``, else
    ``../shared/data/fullres_sample`` beside the checkout holding this package, or beside the
    current folder (an installed package run from the checkout)."""
    if os.environ.get(SAMPLES_ENV):
        return [Path(os.environ[SAMPLES_ENV]).expanduser()]
    relative = Path("shared") / "data" / "fullres_sample"
    return [Path(__file__).resolve().parent.parent.parent / relative, Path.cwd().parent / relative]


def default_demo_dir() -> Path:
    """Where ``demo`` writes its heatmaps without ``--heatmap``: ``~/.local/share/cxr-edge/demo``."""
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "cxr-edge" / "demo"


def cmd_demo(args) -> int:
    """``cxr-edge demo``: the shipped model on the sample X-rays, compared with their folder labels."""
    candidates = [args.samples] if args.samples else default_samples_dirs()
    samples = next((c for c in candidates if c.is_dir()), None)
    if samples is None:
        _err(f"error: no sample X-rays at {' or '.join(str(c) for c in candidates)}. Pass --samples DIR (a folder "
             f"with NORMAL/ and PNEUMONIA/ sub-folders) or set ${SAMPLES_ENV}")
        return EXIT_ERROR
    loops: list[Path] = []
    files, _ = expand_inputs([samples], recursive=True, loops=loops)
    _report_loops(loops)
    if not files:
        _err(f"error: no images in {samples}")
        return EXIT_ERROR
    heatmap_dir = args.heatmap or default_demo_dir()
    args.heatmap = heatmap_dir
    started = time.perf_counter()
    classifier = open_classifier(args)
    load_ms = (time.perf_counter() - started) * 1000.0
    # Demo runs are not screenings: they go to the log only when a log file is named.
    log = ScreeningLog(args.log, store_patient_ids=args.store_identifiers) if args.log else None
    negative = classifier.spec.negative_label
    agree = failed = positives = true_pos = negatives = true_neg = 0
    latencies = []
    try:
        _out(f"cxr-edge demo: {classifier.spec.name} ({classifier.model_path.name}) on {len(files)} X-rays from "
             f"{samples}")
        _out(f"{'folder':<10} {'model says':<12} {'score':>6}  {'agrees':<6} {'ms':>7}  {'heatmap':<28}  file")
        for path in files:
            folder = path.parent.name if path.parent != samples else "?"
            try:
                result, heatmap, _ = _classify_one(classifier, log, path, str(path), heatmap_dir, args.alpha,
                                                   None, args.store_identifiers)
            except FATAL_ERRORS:
                raise
            except Exception as err:  # noqa: BLE001
                failed += 1
                _report_failure(str(path), err)
                continue
            latencies.append(result.latency_ms)
            verdict = "-"
            if folder != "?":
                truth_positive = folder.upper() != negative.upper()
                same = result.positive == truth_positive
                agree += same
                positives += truth_positive
                true_pos += truth_positive and same
                negatives += not truth_positive
                true_neg += (not truth_positive) and same
                verdict = "yes" if same else "NO"
            _out(f"{folder:<10} {result.label:<12} {result.score:>6.3f}  {verdict:<6} {result.latency_ms:>7.1f}  "
                 f"{Path(heatmap).name if heatmap else '-':<28}  {path.relative_to(samples)}")
    finally:
        classifier.close()
        if log is not None:
            log.close()
    labelled = positives + negatives
    median = statistics.median(latencies) if latencies else float("nan")
    _out(f"summary: {agree} of {labelled} screening decisions agreed with the folder labels "
         f"(abnormal found {true_pos}/{positives}, normal cleared {true_neg}/{negatives}); "
         f"{failed} failed; median {median:.0f} ms per image (model loaded in {load_ms:.0f} ms); "
         f"heatmaps in {heatmap_dir}")
    _out(score_meaning(negative))
    return EXIT_SOME_FAILED if failed else EXIT_OK


def read_token(args) -> str | None:
    """The server's token: ``--token-file`` (one line, trailing newline dropped), ``--token``, or
    ``$CXR_TOKEN``; ``None`` when none is given.

    Raises:
        ValueError: the token file cannot be read, is readable by others, or holds a short token.
    """
    if args.token_file is not None:
        from .service import ServiceError, read_token_file  # pwd and grp: POSIX only (the CLI also runs on Windows)

        try:  # refused unless only its owner may read it (the systemd unit's token file is such a file)
            return read_token_file(args.token_file)
        except (ServiceError, UnicodeDecodeError) as err:
            raise ValueError(str(err)) from err
    if args.token is not None:
        logger.warning("--token is visible to every user of this machine in `ps`; prefer --token-file or $CXR_TOKEN")
        return args.token
    return os.environ.get("CXR_TOKEN")


def cmd_serve(args) -> int:
    """``cxr-edge serve``: the clinic web page and JSON API (:func:`edge_runtime.web.serve`)."""
    try:
        from .web import serve  # Flask and waitress: the [web] extra
    except ImportError as err:
        _err(f"error: the web server needs Flask and waitress: pip install 'cxr-edge[web]' ({err})")
        return EXIT_ERROR

    models_dir = args.models or find_models_dir()
    model_path = resolve_model(args.model, models_dir)
    spec = ModelSpec.load(find_spec_for_model(model_path))
    # The server prefers, for every model it offers, the precision of the file --model names.
    precision = "fp16" if file_info(model_path)[0] == "fp16" else DEFAULT_PRECISION
    # The server's start-up lines (address, authentication, models) are for the operator.
    logging.getLogger("edge_runtime.web").setLevel(logging.INFO)
    if not logging.getLogger().handlers or logging.getLogger().level > logging.INFO:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logging.getLogger("edge_runtime.web").addHandler(handler)
        logging.getLogger("edge_runtime.web").propagate = False
    try:
        token = read_token(args)
        serve(host=args.host, port=args.port, models=str(models_dir), token=token,
                  log_path=args.log or default_log_path(), num_threads=args.threads, precision=precision,
                  default_model=spec.name, quality_gate=not args.no_quality_gate,
                  patient_reference=args.store_identifiers)
    except (ValueError, OSError) as err:  # unsafe binding without a token, port in use ...
        _err(f"error: {err}")
        return EXIT_ERROR
    return EXIT_OK


def cmd_receive(args) -> int:
    """``cxr-edge receive``: a DICOM storage node (:class:`edge_runtime.receive.StorageNode`) until Ctrl+C."""
    try:
        forward = ForwardTarget.parse(args.forward) if args.forward else None
    except ValueError as err:
        _err(f"error: --forward: {err}")
        return EXIT_ERROR
    # pynetdicom's own INFO lines name UIDs and AE titles; keep them for --verbose only.
    logging.getLogger("pynetdicom").setLevel(logging.INFO if args.verbose else logging.WARNING)
    logging.getLogger("edge_runtime.receive").setLevel(logging.INFO)
    classifier = open_classifier(args)
    log = open_log(args)
    printing = threading.Lock()

    def show(outcome) -> None:
        with printing:
            if outcome.status == receive.CLASSIFIED:
                row = _row(outcome.result, f"dicom from {outcome.calling_ae}", outcome.heatmap_path, outcome.row_id)
                _out(json.dumps({"status": receive.CLASSIFIED, **row}) if args.json else _table_line(row))
            elif args.json:
                _out(json.dumps({"status": outcome.status, "calling_ae": outcome.calling_ae,
                                 "dicom_status": outcome.dicom_status, "reason": outcome.reason,
                                 "log_id": outcome.row_id}))
            elif outcome.status == receive.DUPLICATE:
                _err(f"an instance from {outcome.calling_ae} was already screened with this model; not again")

    try:
        node = StorageNode(classifier, log, ae_title=args.ae_title, host=args.host, port=args.port,
                           allow=parse_allow(args.allow), forward=forward, reference_from=args.reference_from,
                           heatmap_dir=args.heatmap, alpha=args.alpha,
                           title=classifier.spec.title or model_title(classifier.spec.name, classifier.spec.task), on_outcome=show)
        node.start()
    except DicomNodeError as err:
        classifier.close()
        log.close()
        _err(f"error: {err}")
        return EXIT_ERROR
    stopped = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (a service manager stopping the node): a clean stop and exit 0; Ctrl+C: exit 130.
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: stopped.set())
    try:
        _err(f"DICOM node {node.ae_title} on {args.host}:{node.port} ({classifier.spec.name}); "
             f"{'forwarding results to ' + forward.ae_title + ', ' if forward else ''}stop with Ctrl+C")
        if not args.json:
            _out(_TABLE_HEADER)
        while not stopped.wait(0.5):
            pass
        _err("stopped")
        return EXIT_OK
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        node.close()
        classifier.close()
        log.close()


def cmd_install_service(args) -> int:
    """``cxr-edge install-service``: write the systemd unit of serve, watch or receive."""
    config = ServiceConfig(service=args.service, user=args.user, state_dir=args.state_dir.absolute(),
                           models_dir=args.models_dir.absolute(), token_file=args.token_file.absolute(),
                           folder=args.folder.absolute() if args.folder else None, host=args.host, port=args.port,
                           extra_args=parse_extra(args.extra))
    if args.print_only:
        _out(render_unit(config).rstrip("\n"))
        return EXIT_OK
    done = install_service(config, args.unit_dir, create_user=not args.no_create_user)
    if done["user_created"]:
        _err(f"created the system user {config.user}")
    if done["token_created"]:
        _err(f"wrote a new token to {config.token_file} (mode 600, owner {config.user}); give it to the clinic's "
             "browsers")
    if done["models_copied"]:
        _err(f"copied {done['models_copied']} model files to {config.models_dir}")
    _err(f"wrote {done['unit']}; next:")
    for command in done["next"]:
        _out(f"  {command}")
    return EXIT_OK


def cmd_models(args) -> int:
    """``cxr-edge models``: the model files found, with task, precision and size."""
    folder = find_models_dir()
    models = list_models(folder)
    if args.json:
        for model in models:
            _out(json.dumps(model))
        return EXIT_OK
    _out(f"{'task':<9} {'precision':<9} {'heatmap':<7} {'size':>9}  file   (in {folder})")
    for m in models:
        _out(f"{m['task']:<9} {m['precision'] or '?':<9} {'yes' if m['heatmap'] else 'no':<7} "
             f"{m['size'] / 1e6:>7.2f}MB  {m['file']}")
    return EXIT_OK


# --------------------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    """Run ``cxr-edge``; returns the exit code (see ``cxr-edge --help``)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, unknown = parser.parse_known_args(argv)
        unknown = [a for a in unknown if a != "--"]
        # Only install-service takes arguments of its own after "--" (for the command in the unit).
        extra = argv[argv.index("--") + 1:] if "--" in argv else []
        if unknown and not (hasattr(args, "extra") and unknown == extra):
            parser.error("unrecognized arguments: " + " ".join(unknown))
        if hasattr(args, "extra"):
            args.extra = unknown
    except SystemExit as exit_:  # --help, --version (0) or a usage error (2): a code, not an exception
        return exit_.code if isinstance(exit_.code, int) else EXIT_ERROR
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (`cxr-edge history | head`): stop quietly, as SIGPIPE would
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the interpreter's final flush does not fail again
        return EXIT_BROKEN_PIPE
    except CxrError as err:  # model, runtime, log or camera: nothing can be classified
        _err(f"error: {err}")
        return EXIT_ERROR
    except (FileNotFoundError, PermissionError, IsADirectoryError) as err:
        _err(f"error: {err}")
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
