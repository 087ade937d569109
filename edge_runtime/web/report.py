"""The downloadable one-page result: image, heatmap, probabilities, model and time, drawn with Pillow."""

from __future__ import annotations

import io
from typing import Any, Callable, Mapping

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..i18n import translator
from ..log import local_time
from ..render import DEFAULT_ALPHA, overlay_heatmap
from ..serialize import is_positive

#: Shown on every page and every report.
NOTICE = ("Not a medical device. Research and screening support only: a qualified clinician must "
          "confirm every result.")
#: What the heatmap means, and what it does not.
HEATMAP_NOTE = ("Heatmap: the regions that most raised the model's output for the shown label "
                "(class activation map). It is not an outline of disease.")

_PAGE = (1240, 1754)  # A4 portrait at 150 dpi
_MARGIN = 60
_INK = (20, 24, 31)
_MUTED = (90, 98, 110)
_POSITIVE = (176, 32, 32)
_NEGATIVE = (22, 110, 60)
_NOTICE_BG = (255, 243, 205)
_NOTICE_INK = (102, 77, 3)
_BAR_BG = (225, 229, 235)
_BAR = (44, 98, 170)

# Fonts tried before Pillow's built-in one (present on Debian and Raspberry Pi OS).
_FONT_FILES = {
    False: ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
    True: ("DejaVuSans-Bold.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"),
}


def _font(size: int, bold: bool = False) -> ImageFont.ImageFont:
    for candidate in _FONT_FILES[bold]:
        try:
            return ImageFont.truetype(candidate, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def format_time(value: Any) -> str:
    """A log time (ISO string or Unix seconds) in the device's time zone (see :func:`edge_runtime.log.local_time`)."""
    return local_time(value)


def _fit(image: np.ndarray, side: int) -> np.ndarray:
    """Resize so that the longer side is ``side`` (enlarging small inputs for print)."""
    height, width = image.shape[:2]
    scale = side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC))


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if draw.textlength(trial, font=font) <= width or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    if line:
        lines.append(line)
    return lines


def _notice_box(draw: ImageDraw.ImageDraw, message: str, y: int, width: int) -> int:
    """A boxed warning across the page at ``y``; returns the y below it."""
    notice_font = _font(24, bold=True)
    lines = _wrap(draw, message, notice_font, width - 40)
    box_height = 24 + 32 * len(lines)
    draw.rectangle((_MARGIN, y, _MARGIN + width, y + box_height), fill=_NOTICE_BG, outline=_NOTICE_INK, width=2)
    for index, line in enumerate(lines):
        draw.text((_MARGIN + 20, y + 12 + 32 * index), line, font=notice_font, fill=_NOTICE_INK)
    return y + box_height


def render_report(row: Mapping[str, Any], preview: np.ndarray | None, heatmap: np.ndarray | None,
                  *, negative_label: str = "NORMAL", title: str | None = None,
                  runtime_version: str = "", t: Callable[..., str] | None = None, plain: str | None = None,
                  population: str | None = None, reference: str | None = None,
                  population_notice: str | None = None, outside_population: bool = False) -> bytes:
    """Draw the one-page result as PNG.

    Args:
        row: A screening-log row (id, time, label, probabilities, score, threshold, decision,
            model_name, model_sha256, image_sha256, latency_ms).
        preview: The input image (RGB uint8), or ``None`` when it was not kept.
        heatmap: (h, w) map in [0, 1] for the shown label, or ``None``.
        negative_label: The model's "no finding" label (for the threshold sentence).
        title: Human name of the model's task.
        runtime_version: Printed in the footer.
        t: Translator of the report's language (default English).
        plain: The result in plain words, printed first.
        population: Which population the model was validated on.
        reference: The patient reference, printed when given.
        population_notice: The out-of-population check's outcome in words (None: no check).
        outside_population: The check flagged the film: its notice is printed as a warning box
            under the result.

    Returns:
        PNG bytes of a 1240 x 1754 page (A4 at 150 dpi).
    """
    page = Image.new("RGB", _PAGE, "white")
    draw = ImageDraw.Draw(page)
    width = _PAGE[0] - 2 * _MARGIN
    y = _MARGIN

    t = t or translator("en")
    for line in _wrap(draw, t("report.title"), _font(44, bold=True), width):
        draw.text((_MARGIN, y), line, font=_font(44, bold=True), fill=_INK)
        y += 56
    y += 8
    y = _notice_box(draw, t("notice"), y, width) + 30

    positive = is_positive(row.get("decision", ""))
    colour = _POSITIVE if positive else _NEGATIVE
    if plain:
        for line in _wrap(draw, plain, _font(44, bold=True), width):
            draw.text((_MARGIN, y), line, font=_font(44, bold=True), fill=colour)
            y += 58
    if reference:
        draw.text((_MARGIN, y), f"{t('result.reference')}: {reference}", font=_font(30, bold=True), fill=_INK)
        y += 44
    if population_notice and outside_population:
        y = _notice_box(draw, population_notice, y, width) + 14
    draw.text((_MARGIN, y), f"{row.get('label', '?')} - {row.get('decision', '')}", font=_font(28, bold=True),
              fill=colour)
    y += 44
    score, threshold = float(row.get("score", 0.0)), float(row.get("threshold", 0.5))
    relation = t("result.at_or_above") if score >= threshold else t("result.below")
    rule = (t("result.score_line", score=f"{score:.3f}", relation=relation, threshold=f"{threshold:.3f}") + " "
            + t("result.rule", negative=negative_label))
    for line in _wrap(draw, rule, _font(24), width):
        draw.text((_MARGIN, y), line, font=_font(24), fill=_INK)
        y += 32
    y += 16

    label_font, value_font = _font(24), _font(24, bold=True)
    probabilities = dict(row.get("probabilities") or {})
    label_width = max([draw.textlength(k, font=label_font) for k in probabilities] + [120]) + 20
    bar_x, bar_width = _MARGIN + int(label_width), width - int(label_width) - 120
    for name, value in probabilities.items():
        value = float(value)
        draw.text((_MARGIN, y), name, font=label_font, fill=_INK)
        draw.rectangle((bar_x, y + 4, bar_x + bar_width, y + 28), fill=_BAR_BG)
        draw.rectangle((bar_x, y + 4, bar_x + int(round(bar_width * min(max(value, 0.0), 1.0))), y + 28),
                       fill=_BAR)
        draw.text((bar_x + bar_width + 16, y), f"{value * 100:.1f}%", font=value_font, fill=_INK)
        y += 40
    y += 20

    if preview is not None:
        panel = (width - 30) // 2
        original = _fit(preview, panel)
        panels = [("Original", original)]
        panels[0] = (t("result.original"), original)
        if heatmap is not None:
            caption = t("result.overlay") if positive else t("result.overlay_normal")
            panels.append((caption, overlay_heatmap(original, heatmap, alpha=DEFAULT_ALPHA)))
        caption_font = _font(24, bold=True)
        for index, (caption, image) in enumerate(panels):
            x = _MARGIN + index * (panel + 30)
            draw.text((x, y), caption, font=caption_font, fill=_INK)
            page.paste(Image.fromarray(image), (x, y + 36))
        y += 36 + max(image.shape[0] for _, image in panels) + 16
        if heatmap is not None:
            for line in _wrap(draw, t("heatmap.note") if positive else t("heatmap.note_normal"), _font(20), width):
                draw.text((_MARGIN, y), line, font=_font(20), fill=_MUTED)
                y += 26
    y += 16

    small = _font(22)
    details = [
        (t("report.time"), format_time(row.get("time", ""))),
        (t("result.number"), str(row.get("id", ""))),
        (t("result.model"), f"{title or row.get('model_name', '')}  ({row.get('model_name', '')})"),
        (t("result.model_sha"), str(row.get("model_sha256", ""))),
        (t("report.image_sha"), str(row.get("image_sha256", ""))),
        (t("result.latency"), f"{float(row.get('latency_ms') or 0.0):.0f} ms"),
    ]
    if population:
        details.append((t("result.population"), population))
    if population_notice:
        details.append((t("result.population_check"), population_notice))
    for key, value in details:
        draw.text((_MARGIN, y), key, font=_font(22, bold=True), fill=_INK)
        for line in _wrap(draw, value, small, width - 240) or [""]:
            draw.text((_MARGIN + 240, y), line, font=small, fill=_INK)
            y += 30
    footer = t("report.produced", version=runtime_version).replace("  ", " ") + " " + t("notice")
    footer_lines = _wrap(draw, footer, _font(18), width)
    fy = _PAGE[1] - _MARGIN - 24 * len(footer_lines)
    for line in footer_lines:
        draw.text((_MARGIN, fy), line, font=_font(18), fill=_MUTED)
        fy += 24

    buffer = io.BytesIO()
    page.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
