"""DICOM storage node: an X-ray machine or digitiser C-STOREs films here; each is classified once and logged.

A Storage SCP (optional ``pynetdicom``) that answers C-ECHO, accepts CR, DX and Secondary Capture
instances, classifies each instance exactly once (keyed by its SOP Instance UID and by its
content, across restarts), records it in the screening log and answers with a DICOM status:
success, or a refusal whose reason goes to the server log (never patient data). It never stops
on one bad instance. Optionally it forwards a Secondary Capture of the result (heatmap overlay,
burned-in result line and notice, same study, new series) to the clinic's viewer or PACS.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import io
import logging
import queue
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .dicom_sc import build_result_sc, film_header
from .errors import (
    DicomNodeError,
    ImageTooLargeError,
    InvalidImageError,
    LogError,
    NotChestXrayError,
    UnsupportedFormatError,
)
from .log import instance_key
from .render import DEFAULT_ALPHA, heatmap_name, save_overlay
from .web.store import ImageStore, images_dir_for

logger = logging.getLogger(__name__)

#: Default DICOM port (the IANA "dicom" port is 104, which needs root; 11112 is the usual alternative).
DEFAULT_PORT = 11112
#: Default address: every interface (modalities send from the network).
DEFAULT_HOST = "0.0.0.0"
#: Default application entity title of this node.
DEFAULT_AE_TITLE = "CXR_EDGE"
#: Header attributes that may serve as the patient reference (when references are enabled).
REFERENCE_TAGS = ("PatientID", "AccessionNumber")

#: C-STORE statuses (PS3.4 B.2.3).
STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700  # the log could not be written
STATUS_DATASET_MISMATCH = 0xA900  # no pixel data, colour, not a chest film, lateral view ...
STATUS_CANNOT_UNDERSTAND = 0xC000  # corrupt or undecodable pixel data
STATUS_NOT_CHEST_XRAY = 0xC001  # refused by the quality gate

#: Transfer syntaxes accepted: the uncompressed ones, deflate, and the compressed ones pydicom can
#: decode with Pillow or its own RLE decoder (JPEG lossless and JPEG-LS need pylibjpeg; an instance
#: that cannot be decoded is refused with STATUS_CANNOT_UNDERSTAND and the reason logged).
TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired, still sent by old machines)
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE Lossless
)
#: Storage SOP classes accepted: chest radiographs and secondary captures (digitised film).
SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1": "CR",
    "1.2.840.10008.5.1.4.1.1.1.1": "DX for presentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "DX for processing",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture",
}
_CHEST_BODY_PARTS = {"", "CHEST", "THORAX", "LUNG", "LUNGS", "TORAX"}
_LATERAL_VIEWS = {"LL", "RL", "LLD", "RLD", "LATERAL", "LAT"}

#: Results waiting to be forwarded (each holds the decoded film; a PACS that is down drops the excess, logged).
FORWARD_QUEUE_SIZE = 8
#: Outcome statuses (as :mod:`edge_runtime.watch`).
CLASSIFIED, DUPLICATE, REFUSED = "classified", "duplicate", "refused"


@dataclasses.dataclass(frozen=True)
class ForwardTarget:
    """Where result objects are sent: ``HOST:PORT:AE``."""

    host: str
    port: int
    ae_title: str

    @classmethod
    def parse(cls, text: str) -> "ForwardTarget":
        """Parse ``HOST:PORT:AE`` (the host may be an IPv6 address in brackets).

        Raises:
            ValueError: not in that form.
        """
        host, sep, rest = text.strip().rpartition(":")
        host2, sep2, port = host.rpartition(":")
        if not (sep and sep2 and host2 and port.isdigit() and rest):
            raise ValueError(f"expected HOST:PORT:AE such as 192.168.1.20:104:PACS, got {text!r}")
        if not 0 < int(port) < 65536:
            raise ValueError(f"port must be 1-65535, got {port}")
        return cls(host=host2.strip("[]"), port=int(port), ae_title=check_ae_title(rest))


def check_ae_title(title: str) -> str:
    """An AE title: 1-16 characters, no backslash or control characters.

    Raises:
        ValueError: it is not.
    """
    title = str(title).strip()
    if not 1 <= len(title) <= 16 or "\\" in title or any(ord(c) < 32 or ord(c) > 126 for c in title):
        raise ValueError(f"an AE title has 1-16 printable ASCII characters and no backslash, got {title!r}")
    return title


@dataclasses.dataclass(frozen=True)
class StoreOutcome:
    """What happened to one received instance.

    Attributes:
        status: ``classified``, ``duplicate`` (this instance or this content was already
            screened with this model: not classified again, answered with success) or ``refused``.
        dicom_status: The C-STORE status answered.
        calling_ae: The sender's AE title.
        sop_class: Human name of the SOP class.
        result: The :class:`~edge_runtime.classifier.Result` when classified.
        row_id: Its screening-log row (the earlier row for a duplicate, when known).
        reason: Why it was refused.
        heatmap_path: The heatmap PNG written, if any.
    """

    status: str
    dicom_status: int
    calling_ae: str = ""
    sop_class: str = ""
    result: Any = None
    row_id: int | None = None
    reason: str | None = None
    heatmap_path: Path | None = None


def _encode(dataset) -> bytes:
    """A received dataset as DICOM Part 10 bytes (what the classifier reads and hashes)."""
    buffer = io.BytesIO()
    try:
        dataset.save_as(buffer, enforce_file_format=True)
    except TypeError:  # pydicom < 3
        dataset.save_as(buffer, write_like_original=False)
    return buffer.getvalue()


def _web_store(log):
    """The web page's image store beside the log (thumbnails in its history), or None without Flask (no page)."""
    if importlib.util.find_spec("flask") is None:
        return None
    return ImageStore(images_dir_for(log.path))


class StorageNode:
    """The DICOM Storage SCP. Start with :meth:`start`, stop with :meth:`close` (or use ``with``).

    Args:
        classifier: A :class:`~edge_runtime.classifier.Classifier` (shared; it serialises calls).
        log: The :class:`~edge_runtime.log.ScreeningLog` (required: it makes "exactly once" hold
            across restarts).
        ae_title: This node's AE title (senders must call it by this name).
        host: Address to listen on.
        port: TCP port (0 picks a free one; see :attr:`port`).
        allow: Calling AE titles accepted; ``None``: any (associations from others are rejected).
        forward: Send a result Secondary Capture of each classified instance there.
        reference_from: Header attribute taken as the patient reference (``PatientID`` or
            ``AccessionNumber``); stored only when the log keeps patient references.
        heatmap_dir: Also write an original | heatmap PNG per classified instance here.
        alpha: Heatmap opacity.
        title: Human name of the model's task (printed on forwarded results).
        on_outcome: Called with each :class:`StoreOutcome` (from the association's thread).

    Raises:
        DicomNodeError: pynetdicom is missing or an argument is invalid.
    """

    def __init__(self, classifier, log, *, ae_title: str = DEFAULT_AE_TITLE, host: str = DEFAULT_HOST,
                 port: int = DEFAULT_PORT, allow: Iterable[str] | None = None,
                 forward: ForwardTarget | None = None, reference_from: str = "PatientID",
                 heatmap_dir: str | Path | None = None, alpha: float = DEFAULT_ALPHA, title: str | None = None,
                 on_outcome: Callable[[StoreOutcome], None] | None = None):
        try:
            import pynetdicom  # noqa: F401
        except ImportError as err:
            raise DicomNodeError("the DICOM node needs pynetdicom: pip install 'cxr-edge[dicom]'") from err
        if log is None:
            raise DicomNodeError("the DICOM node needs the screening log (it remembers what was received)")
        if reference_from not in REFERENCE_TAGS:
            raise DicomNodeError(f"reference_from must be one of {list(REFERENCE_TAGS)}, got {reference_from!r}")
        try:
            self.ae_title = check_ae_title(ae_title)
            self.allow = None if allow is None else [check_ae_title(a) for a in allow]
        except ValueError as err:
            raise DicomNodeError(str(err)) from err
        if heatmap_dir is not None and not classifier.has_heatmap:
            raise DicomNodeError(f"{classifier.model_path.name} has no heatmap output; use a *_cam.tflite model")
        self.classifier = classifier
        self.log = log
        self.host, self.port = host, int(port)
        self.forward = forward
        self.reference_from = reference_from
        self.heatmap_dir = Path(heatmap_dir) if heatmap_dir is not None else None
        self.alpha = alpha
        self.title = title
        self.on_outcome = on_outcome
        self.forwarded = 0  #: result objects the forward target accepted
        self._lock = threading.Lock()  # check-classify-record of one instance at a time: exactly once
        self._server = None
        self._queue: queue.Queue | None = None
        self._forwarder: threading.Thread | None = None
        self._store = _web_store(log)

    # -- the protocol --------------------------------------------------------------------------
    def _make_ae(self):
        from pynetdicom import AE
        from pynetdicom.sop_class import Verification

        ae = AE(ae_title=self.ae_title)
        ae.add_supported_context(Verification)
        for uid in SOP_CLASSES:
            ae.add_supported_context(uid, list(TRANSFER_SYNTAXES))
        if self.allow is not None:
            ae.require_calling_aet = list(self.allow)
        ae.maximum_associations = 4
        ae.network_timeout = ae.acse_timeout = 30
        ae.dimse_timeout = 60
        return ae

    def start(self) -> "StorageNode":
        """Listen (in background threads); returns at once. :attr:`port` is the bound port.

        Raises:
            DicomNodeError: the port cannot be bound.
        """
        from pynetdicom import evt

        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_C_ECHO, self._on_echo),
                    (evt.EVT_REJECTED, self._on_rejected)]
        try:
            self._server = self._make_ae().start_server((self.host, self.port), block=False,
                                                        evt_handlers=handlers)
        except OSError as err:
            raise DicomNodeError(f"cannot listen on {self.host}:{self.port}: {err}") from err
        self.port = int(self._server.server_address[1])
        if self.forward is not None:
            self._queue = queue.Queue(maxsize=FORWARD_QUEUE_SIZE)
            self._forwarder = threading.Thread(target=self._forward_loop, name="cxr-edge-forward", daemon=True)
            self._forwarder.start()
        if self.allow is None:
            logger.warning("any DICOM sender may store here: restrict with --allow AE_TITLE")
        logger.info("DICOM node %s listening on %s:%d", self.ae_title, self.host, self.port)
        return self

    def close(self) -> None:
        """Stop listening (open associations are aborted) and send what is queued for forwarding."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._queue is not None:
            self._queue.put(None)
            if self._forwarder is not None:
                self._forwarder.join(timeout=60)
            self._queue = None

    def __enter__(self) -> "StorageNode":
        return self.start() if self._server is None else self

    def __exit__(self, *exc) -> None:
        self.close()

    def _on_echo(self, event) -> int:
        logger.info("C-ECHO from %s", event.assoc.requestor.ae_title)
        return STATUS_SUCCESS

    def _on_rejected(self, event) -> None:
        logger.warning("association from AE %r refused (not in --allow)", event.assoc.requestor.ae_title)

    def _on_store(self, event):
        from pydicom.dataset import Dataset

        calling = str(event.assoc.requestor.ae_title).strip()
        try:
            dataset = event.dataset
            dataset.file_meta = event.file_meta
            outcome = self.handle(dataset, calling)
        except Exception as err:  # noqa: BLE001 - one bad instance must never stop the node
            logger.exception("unexpected error on an instance from %s", calling)
            outcome = StoreOutcome(REFUSED, STATUS_CANNOT_UNDERSTAND, calling, reason=f"cannot read it: {err}")
        if self.on_outcome is not None:
            try:
                self.on_outcome(outcome)
            except Exception:  # noqa: BLE001
                logger.exception("outcome callback failed")
        status = Dataset()
        status.Status = outcome.dicom_status
        if outcome.reason:
            status.ErrorComment = outcome.reason[:64]
        return status

    # -- one instance ----------------------------------------------------------------------------
    def handle(self, dataset, calling_ae: str = "") -> StoreOutcome:
        """Check, classify, record (and queue for forwarding) one received dataset.

        Never raises for a bad instance: refusals come back as outcomes with their status.

        Raises:
            nothing for bad input; a failing log is answered with STATUS_OUT_OF_RESOURCES.
        """
        sop_class = SOP_CLASSES.get(str(dataset.get("SOPClassUID", "")), str(dataset.get("SOPClassUID", "?")))

        def refuse(status: int, reason: str) -> StoreOutcome:
            logger.warning("refused an instance from %s (%s): %s", calling_ae or "?", sop_class, reason)
            return StoreOutcome(REFUSED, status, calling_ae, sop_class, reason=reason)

        uid = str(dataset.get("SOPInstanceUID", "")).strip()
        if not uid:
            return refuse(STATUS_DATASET_MISMATCH, "no SOP Instance UID")
        if "PixelData" not in dataset:
            return refuse(STATUS_DATASET_MISMATCH, "no pixel data: not an image")
        body_part = str(dataset.get("BodyPartExamined", "") or "").strip().upper()
        if body_part not in _CHEST_BODY_PARTS:
            return refuse(STATUS_DATASET_MISMATCH, f"body part {body_part} is not the chest")
        view = str(dataset.get("ViewPosition", "") or "").strip().upper()
        if view in _LATERAL_VIEWS:
            return refuse(STATUS_DATASET_MISMATCH, f"view {view}: lateral films are not screened")
        model_sha = self.classifier.model_sha256
        with self._lock:
            try:
                earlier = self.log.seen_instance(uid, model_sha)
                if earlier is not None:
                    logger.info("instance %s from %s already screened (row %d)", instance_key(uid)[:12],
                                calling_ae, earlier)
                    return StoreOutcome(DUPLICATE, STATUS_SUCCESS, calling_ae, sop_class, row_id=earlier)
                data = _encode(dataset)
                if self.log.seen(hashlib.sha256(data).hexdigest(), model_sha):
                    logger.info("content of instance %s already screened", instance_key(uid)[:12])
                    return StoreOutcome(DUPLICATE, STATUS_SUCCESS, calling_ae, sop_class)
                want_heatmap = self.classifier.has_heatmap
                try:
                    result = self.classifier.classify(data, heatmap=want_heatmap)
                except NotChestXrayError as err:
                    return refuse(STATUS_NOT_CHEST_XRAY, f"not a chest X-ray ({err.reason})")
                except (UnsupportedFormatError, ImageTooLargeError) as err:
                    return refuse(STATUS_DATASET_MISMATCH, _short(err))
                except InvalidImageError as err:
                    return refuse(STATUS_CANNOT_UNDERSTAND, _short(err))
                heatmap_path = self._save_images(result)
                reference = None
                if self.log.store_patient_ids:
                    reference = str(dataset.get(self.reference_from, "") or "").strip() or None
                row_id = self.log.record(result, source=f"dicom:{calling_ae}" if calling_ae else "dicom",
                                         heatmap_path=heatmap_path, patient_id=reference, instance_uid=uid)
            except LogError as err:
                logger.error("%s", err)
                return refuse(STATUS_OUT_OF_RESOURCES, "the screening log cannot be written")
        logger.info("screened an instance from %s: row %d, %s", calling_ae or "?", row_id, result.label)
        if self._queue is not None:
            try:
                self._queue.put_nowait((film_header(dataset), result))
            except queue.Full:
                logger.error("forward queue full: the result of row %d is not forwarded", row_id)
        return StoreOutcome(CLASSIFIED, STATUS_SUCCESS, calling_ae, sop_class, result=result, row_id=row_id,
                            heatmap_path=Path(heatmap_path) if heatmap_path else None)

    def _save_images(self, result) -> str | None:
        """Heatmap PNG (with ``heatmap_dir``) and the web history's thumbnail; returns the heatmap path logged."""
        path = None
        if self.heatmap_dir is not None:
            path = str(save_overlay(result, self.heatmap_dir / heatmap_name("", result.image_sha256),
                                    alpha=self.alpha))
        if self._store is not None:
            try:
                stored = self._store.save(result.image_sha256, result.image, result.model_sha256, result.heatmap)
                path = path or (str(stored) if stored else None)
            except OSError as err:
                logger.error("could not keep the history thumbnail: %s", err)
        return path

    # -- forwarding ------------------------------------------------------------------------------
    def _forward_loop(self) -> None:
        while True:
            item = self._queue.get() if self._queue is not None else None
            if item is None:
                return
            dataset, result = item
            try:
                self.send_result(dataset, result)
                self.forwarded += 1
            except Exception as err:  # noqa: BLE001 - a down PACS must not stop screening
                logger.error("could not forward a result to %s:%d (%s): %s", self.forward.host,
                             self.forward.port, self.forward.ae_title, err)

    def send_result(self, film, result) -> None:
        """Build the result Secondary Capture and C-STORE it to :attr:`forward`.

        Raises:
            DicomNodeError: no association, or the receiver refused the object.
        """
        from pynetdicom import AE

        target = self.forward
        sc = build_result_sc(film, result, title=self.title, alpha=self.alpha, station_ae=self.ae_title)
        ae = AE(ae_title=self.ae_title)
        ae.add_requested_context(sc.SOPClassUID, sc.file_meta.TransferSyntaxUID)
        assoc = ae.associate(target.host, target.port, ae_title=target.ae_title)
        if not assoc.is_established:
            raise DicomNodeError(f"no association with {target.ae_title} at {target.host}:{target.port}")
        try:
            status = assoc.send_c_store(sc)
        finally:
            assoc.release()
        code = getattr(status, "Status", None)
        if code is None or code not in (0x0000, 0xB000, 0xB007, 0xB006):
            raise DicomNodeError(f"{target.ae_title} answered status {code if code is None else hex(code)}")
        logger.info("forwarded a result to %s", target.ae_title)


def _short(err: BaseException) -> str:
    message = str(err)
    return message[len("<bytes>: "):] if message.startswith("<bytes>: ") else message


def parse_allow(values: Sequence[str] | None) -> list[str] | None:
    """``--allow`` values (space- or comma-separated) as a list of AE titles, or None."""
    if not values:
        return None
    return [part for value in values for part in value.replace(",", " ").split()]
