"""The DICOM storage node over the real protocol on loopback: pynetdicom senders and receivers, a real SQLite log."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO_ROOT, terminal_sigint
from runtime_models import FULLRES, binary_models, needs_fullres  # noqa: F401 - fixture

pytest.importorskip("pydicom")
pytest.importorskip("pynetdicom")

from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import (  # noqa: E402
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from pynetdicom import AE, evt  # noqa: E402
from pynetdicom.sop_class import (  # noqa: E402
    BasicTextSRStorage,
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    Verification,
)

from edge_runtime.classifier import Classifier, ClassifierOptions  # noqa: E402
from edge_runtime.log import ScreeningLog  # noqa: E402
from edge_runtime.receive import (  # noqa: E402
    STATUS_DATASET_MISMATCH,
    STATUS_NOT_CHEST_XRAY,
    ForwardTarget,
    StorageNode,
)

pytestmark = needs_fullres
PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "PID-4711"


def real_film(sop_class=DigitalXRayImageStorageForPresentation, index: int = 0, **attributes) -> Dataset:
    """A real full-resolution X-ray as a 12-bit MONOCHROME2 DICOM instance, as a DR detector sends it."""
    path = sorted((FULLRES / "PNEUMONIA").glob("*.jpeg"))[index]
    grey = np.asarray(Image.open(path).convert("L"), dtype=np.uint16) * 16
    return dicom_instance(grey, sop_class, bits=12, **attributes)


def dicom_instance(pixels: np.ndarray | None, sop_class, bits: int = 8, photometric: str = "MONOCHROME2",
                   **attributes) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.AccessionNumber = PATIENT_NAME, PATIENT_ID, "ACC-0815"
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "DX", "CHEST", "PA"
    if pixels is not None:
        ds.Rows, ds.Columns = pixels.shape[:2]
        ds.SamplesPerPixel = 1 if pixels.ndim == 2 else 3
        ds.PhotometricInterpretation = photometric
        if pixels.ndim == 3:
            ds.PlanarConfiguration = 0
        ds.BitsAllocated = 16 if pixels.dtype == np.uint16 else 8
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits - 1, 0
        ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    for key, value in attributes.items():
        setattr(ds, key, value)
    return ds


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sender(*contexts, ae_title: str = "XRAY_ROOM"):
    ae = AE(ae_title=ae_title)
    for context in contexts or (Verification,):
        ae.add_requested_context(context, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    return ae


def store(node, dataset, ae_title: str = "XRAY_ROOM") -> int:
    ae = sender(dataset.SOPClassUID, ae_title=ae_title)
    assoc = ae.associate("127.0.0.1", node.port, ae_title=node.ae_title)
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(dataset).Status)
    finally:
        assoc.release()


@pytest.fixture()
def classifier(binary_models):
    with Classifier(binary_models["int8_cam"], ClassifierOptions(spec_path=str(binary_models["spec"]))) as opened:
        yield opened


@pytest.fixture()
def node(classifier, tmp_path):
    outcomes = []
    with ScreeningLog(tmp_path / "node log" / "screenings.db") as log:
        with StorageNode(classifier, log, host="127.0.0.1", port=0, on_outcome=outcomes.append) as started:
            started.outcomes = outcomes
            yield started


def test_echo(node):
    assoc = sender().associate("127.0.0.1", node.port, ae_title=node.ae_title)
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()


def test_a_real_film_is_classified_once_and_logged_once(node, caplog):
    caplog.set_level(logging.DEBUG)
    film = real_film()
    assert store(node, film) == 0x0000
    assert node.log.count() == 1
    row = node.log.recent()[0]
    assert row["source"] == "dicom:XRAY_ROOM" and row["instance_sha256"] and row["label"] in ("NORMAL", "PNEUMONIA")
    assert row["patient_id"] is None  # references are off by default
    assert store(node, film) == 0x0000  # sent again (a retry after a lost answer): success, not logged twice
    assert node.log.count() == 1
    assert [o.status for o in node.outcomes] == ["classified", "duplicate"]
    assert node.outcomes[1].row_id == row["id"]
    # A CR instance of another film, in implicit VR: also screened.
    assert store(node, real_film(ComputedRadiographyImageStorage, index=1)) == 0x0000
    assert node.log.count() == 2
    assert PATIENT_NAME not in caplog.text and PATIENT_ID not in caplog.text and "Doe" not in caplog.text


def test_refusals_have_a_status_and_the_node_goes_on(node, caplog):
    ae = sender(BasicTextSRStorage)
    assoc = ae.associate("127.0.0.1", node.port, ae_title=node.ae_title)
    assert not assoc.is_established  # a report is not an image: its presentation context is refused
    no_pixels = dicom_instance(None, SecondaryCaptureImageStorage)
    assert store(node, no_pixels) == STATUS_DATASET_MISMATCH
    knee = real_film(BodyPartExamined="KNEE")
    assert store(node, knee) == STATUS_DATASET_MISMATCH
    from skimage import data

    photo = dicom_instance(np.asarray(data.astronaut()), SecondaryCaptureImageStorage, photometric="RGB")
    assert store(node, photo) == STATUS_DATASET_MISMATCH  # colour: not a radiograph
    blank = dicom_instance(np.full((512, 512), 128, dtype=np.uint8), SecondaryCaptureImageStorage)
    assert store(node, blank) == STATUS_NOT_CHEST_XRAY  # the quality gate
    assert node.log.count() == 0
    assert "no pixel data" in caplog.text and "KNEE" in caplog.text
    assert store(node, real_film()) == 0x0000  # still serving
    assert node.log.count() == 1


def test_unknown_calling_ae_is_refused(classifier, tmp_path):
    with ScreeningLog(tmp_path / "allow.db") as log, \
            StorageNode(classifier, log, host="127.0.0.1", port=0, allow=["XRAY_ROOM"]) as node:
        assoc = sender(ae_title="INTRUDER").associate("127.0.0.1", node.port, ae_title=node.ae_title)
        assert assoc.is_rejected
        assert store(node, real_film(), ae_title="XRAY_ROOM") == 0x0000
        assert log.count() == 1


def test_patient_reference_from_the_header_only_when_enabled(classifier, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    with ScreeningLog(tmp_path / "refs.db", store_patient_ids=True) as log, \
            StorageNode(classifier, log, host="127.0.0.1", port=0, reference_from="AccessionNumber") as node:
        assert store(node, real_film()) == 0x0000
        assert log.recent()[0]["patient_id"] == "ACC-0815"
    assert "ACC-0815" not in caplog.text and PATIENT_ID not in caplog.text


def test_forwarded_result_is_a_valid_secondary_capture_in_the_same_study(classifier, tmp_path):
    received, arrived = [], threading.Event()

    def on_store(event):
        dataset = event.dataset
        dataset.file_meta = event.file_meta
        received.append(dataset)
        arrived.set()
        return 0x0000

    pacs = AE(ae_title="PACS")
    pacs.add_supported_context(SecondaryCaptureImageStorage, ExplicitVRLittleEndian)
    server = pacs.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        target = ForwardTarget.parse(f"127.0.0.1:{server.server_address[1]}:PACS")
        film = real_film()
        with ScreeningLog(tmp_path / "fwd.db") as log, \
                StorageNode(classifier, log, host="127.0.0.1", port=0, forward=target) as node:
            assert store(node, film) == 0x0000
            assert arrived.wait(30), "no result object arrived at the test PACS"
    finally:
        server.shutdown()
    import pydicom

    buffer = io.BytesIO()
    received[0].save_as(buffer, enforce_file_format=True)
    result = pydicom.dcmread(io.BytesIO(buffer.getvalue()))
    assert result.SOPClassUID == SecondaryCaptureImageStorage
    assert result.StudyInstanceUID == film.StudyInstanceUID
    assert result.SeriesInstanceUID != film.SeriesInstanceUID and result.SOPInstanceUID != film.SOPInstanceUID
    assert result.PatientID == film.PatientID and result.BurnedInAnnotation == "YES"
    assert result.SourceImageSequence[0].ReferencedSOPInstanceUID == film.SOPInstanceUID
    pixels = result.pixel_array
    assert pixels.ndim == 3 and pixels.shape[2] == 3 and pixels.std() > 10
    assert "Not a medical device" in result.ImageComments
    assert result.ImageComments.startswith(("Signs of pneumonia: refer to a clinician", "No sign of pneumonia found"))
    # The overlay half is coloured (a heatmap), the original half is grey.
    half = pixels.shape[1] // 2
    assert np.abs(pixels[:, half + 10:, 0].astype(int) - pixels[:, half + 10:, 2]).mean() > 5
    Image.fromarray(pixels).save(tmp_path / "forwarded.png")


def test_forward_target_parsing():
    assert ForwardTarget.parse("192.168.1.20:104:PACS") == ForwardTarget("192.168.1.20", 104, "PACS")
    assert ForwardTarget.parse("[::1]:11112:VIEWER").host == "::1"
    for bad in ("pacs", "host:port:AE", "h:104:", "h:0:AE", "h:104:THIS_AE_TITLE_IS_TOO_LONG"):
        with pytest.raises(ValueError):
            ForwardTarget.parse(bad)


def test_cli_receive_echo_store_and_ctrl_c(binary_models, tmp_path):
    """``cxr-edge receive`` in its own process: answers, prints JSON lines, and Ctrl+C exits 130."""
    port = free_port()
    log_path = tmp_path / "cli.db"
    env = dict(os.environ, CXR_MODELS=str(binary_models["dir"]), PYTHONPATH=str(REPO_ROOT))
    process = subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", "receive", "--host", "127.0.0.1",
                                "--port", str(port), "--log", str(log_path), "--json", "--allow", "XRAY_ROOM"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               preexec_fn=terminal_sigint)
    try:
        deadline = time.monotonic() + 60
        while True:
            assoc = sender().associate("127.0.0.1", port, ae_title="CXR_EDGE")
            if assoc.is_established:
                break
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline, "the node did not start"
            time.sleep(0.5)
        assert assoc.send_c_echo().Status == 0x0000
        assoc.release()

        class Node:
            ae_title, port = "CXR_EDGE", 0

        Node.port = port
        assert store(Node, real_film()) == 0x0000
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    line = json.loads(out.strip().splitlines()[-1])
    assert line["status"] == "classified" and line["label"] in ("NORMAL", "PNEUMONIA") and line["log_id"] == 1
    assert PATIENT_NAME not in out + err and PATIENT_ID not in out + err


def test_cli_receive_stops_cleanly_on_sigterm(binary_models, tmp_path):
    """A service manager stops the node with SIGTERM: exit 0, after closing the log."""
    port = free_port()
    env = dict(os.environ, CXR_MODELS=str(binary_models["dir"]), PYTHONPATH=str(REPO_ROOT))
    process = subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", "receive", "--host", "127.0.0.1",
                                "--port", str(port), "--log", str(tmp_path / "term.db")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while "stop with Ctrl+C" not in (process.stderr.readline() or ""):
            assert process.poll() is None and time.monotonic() < deadline, "the node did not start"
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err


def test_usual_transfer_syntaxes(node):
    """Implicit VR (what old CR readers send), RLE and JPEG baseline (what digitisers send) are all screened."""
    from PIL import Image as PILImage
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit, RLELossless

    def send(dataset, syntax) -> int:
        ae = AE(ae_title="XRAY_ROOM")
        ae.add_requested_context(dataset.SOPClassUID, syntax)
        assoc = ae.associate("127.0.0.1", node.port, ae_title=node.ae_title)
        assert assoc.is_established and assoc.accepted_contexts[0].transfer_syntax[0] == syntax
        try:
            return int(assoc.send_c_store(dataset).Status)
        finally:
            assoc.release()

    implicit = real_film(ComputedRadiographyImageStorage, index=0)
    implicit.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    assert send(implicit, ImplicitVRLittleEndian) == 0x0000

    path = sorted((FULLRES / "NORMAL").glob("*.jpeg"))[0]
    grey = np.asarray(PILImage.open(path).convert("L"))
    rle = dicom_instance(grey, SecondaryCaptureImageStorage)
    rle.compress(RLELossless)
    assert send(rle, RLELossless) == 0x0000

    buffer = io.BytesIO()
    PILImage.fromarray(np.asarray(PILImage.open(sorted((FULLRES / "NORMAL").glob("*.jpeg"))[1]).convert("L"))).save(
        buffer, format="JPEG", quality=92)
    jpeg = dicom_instance(np.zeros((2, 2), np.uint8), SecondaryCaptureImageStorage)
    with PILImage.open(io.BytesIO(buffer.getvalue())) as decoded:
        jpeg.Columns, jpeg.Rows = decoded.size
    jpeg.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    jpeg.PixelData = encapsulate([buffer.getvalue()])
    jpeg["PixelData"].is_undefined_length = True
    jpeg["PixelData"].VR = "OB"
    assert send(jpeg, JPEGBaseline8Bit) == 0x0000
    assert node.log.count() == 3 and [o.status for o in node.outcomes] == ["classified"] * 3
