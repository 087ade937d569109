"""The screening result as a DICOM Secondary Capture for the clinic's viewer: same study, new series, burned-in text."""

from __future__ import annotations

import datetime
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .i18n import plain_result, translate
from .render import DEFAULT_ALPHA, fit_within, overlay_heatmap

#: Series number of the result series (high, so that viewers list it after the films).
RESULT_SERIES_NUMBER = 9901
#: Longest side of each panel (original | overlay) in the result image.
PANEL_SIDE = 768
# Patient and study attributes copied from the film, so that the result files under the same patient and study.
_COPIED = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "PatientAge",
           "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName",
           "StudyDescription", "InstitutionName")
_FONT_FILES = ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def _font(size: int):
    for candidate in _FONT_FILES:
        try:
            return ImageFont.truetype(candidate, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def film_header(film: Any):
    """The attributes of a film the result object needs (patient, study, SOP ids), without its pixel data:
    what the forwarding queue keeps, so that queued results do not hold whole films in memory."""
    from pydicom.dataset import Dataset

    header = Dataset()
    for keyword in _COPIED + ("SOPClassUID", "SOPInstanceUID"):
        if keyword in film:
            setattr(header, keyword, film.data_element(keyword).value)
    return header


def result_lines(result: Any, title: str | None = None) -> list[str]:
    """The text burned into the result image: plain result, score line, notice."""
    head = plain_result("en", result.label, bool(result.positive))
    score = (f"{result.label}  score {float(result.score):.3f} vs threshold {float(result.threshold):.3f}  "
             f"model {result.model_name}" + (f" ({title})" if title else ""))
    return [head, score, translate("en", "notice")]


def render_result_image(result: Any, title: str | None = None, alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    """Original | heatmap overlay with the result lines burned in below, as RGB uint8.

    Without a heatmap (a model file without feature-map output) only the original is shown.
    """
    image = fit_within(result.image, PANEL_SIDE)
    panels = [image]
    if result.heatmap is not None:
        panels.append(overlay_heatmap(image, result.heatmap, alpha=alpha))
    gap = 8
    width = sum(p.shape[1] for p in panels) + gap * (len(panels) - 1)
    height = max(p.shape[0] for p in panels)
    size = max(14, width // 60)
    lines = result_lines(result, title)
    if result.heatmap is not None:
        lines.insert(2, "Right: regions that drove this result (class activation map), not an outline of disease.")
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    wrapped: list[tuple[int, str]] = []  # (index of the source line, text) so the first keeps its colour
    for index, line in enumerate(lines):
        font = _font(size + (4 if index == 0 else 0))
        current = ""
        for word in line.split():
            trial = f"{current} {word}".strip()
            if current and measure.textlength(trial, font=font) > width - 20:
                wrapped.append((index, current))
                current = word
            else:
                current = trial
        wrapped.append((index, current))
    text_height = (size + 10) * len(wrapped) + 20
    canvas = Image.new("RGB", (width, height + text_height), (0, 0, 0))
    x = 0
    for panel in panels:
        canvas.paste(Image.fromarray(panel), (x, 0))
        x += panel.shape[1] + gap
    draw = ImageDraw.Draw(canvas)
    colour = (255, 120, 120) if result.positive else (140, 230, 160)
    y = height + 10
    for index, line in wrapped:
        draw.text((10, y), line, font=_font(size + (4 if index == 0 else 0)),
                  fill=colour if index == 0 else (255, 255, 255))
        y += size + 10
    return np.asarray(canvas)


def build_result_sc(film: Any, result: Any, *, title: str | None = None, alpha: float = DEFAULT_ALPHA,
                    station_ae: str = "CXR_EDGE"):
    """A Secondary Capture dataset holding the result image, in the film's study.

    Args:
        film: The received pydicom ``Dataset`` (patient and study attributes are copied).
        result: Its :class:`~edge_runtime.classifier.Result` (with ``image`` and, ideally, ``heatmap``).
        title: Human name of the model's task.
        alpha: Heatmap opacity.
        station_ae: Recorded as the station name.

    Returns:
        A pydicom ``Dataset`` with file meta (Explicit VR Little Endian), a new SOP Instance
        and Series Instance UID, the film's Study Instance UID, RGB pixel data and
        ``BurnedInAnnotation`` YES.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    pixels = render_result_image(result, title, alpha)
    now = datetime.datetime.now()
    ds = Dataset()
    for keyword in _COPIED:
        if keyword in film:
            setattr(ds, keyword, film.data_element(keyword).value)
    if "StudyInstanceUID" not in ds:
        ds.StudyInstanceUID = generate_uid()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = RESULT_SERIES_NUMBER
    ds.InstanceNumber = 1
    ds.SeriesDescription = "cxr-edge screening result (not a medical device)"
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.BurnedInAnnotation = "YES"
    ds.Manufacturer = "cxr-edge"
    ds.StationName = station_ae[:16]
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.SeriesDate, ds.SeriesTime = ds.ContentDate, ds.ContentTime
    ds.ImageComments = " / ".join(result_lines(result, title))[:10240]
    if "SOPInstanceUID" in film:
        source = Dataset()
        source.ReferencedSOPClassUID = film.SOPClassUID
        source.ReferencedSOPInstanceUID = film.SOPInstanceUID
        ds.SourceImageSequence = [source]
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds
