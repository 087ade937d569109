"""The downloadable PDF report (fpdf2, its built-in fonts: nothing fetched, nothing installed system-wide)."""

from __future__ import annotations

import io
from typing import Any, Callable, Mapping

import numpy as np

from ..render import DEFAULT_ALPHA, encode_jpeg, overlay_heatmap
from ..serialize import is_positive

# The core PDF fonts cover Latin-1 (English, French, Spanish, Portuguese ...); these few common
# characters outside it are replaced by their nearest Latin-1 spelling rather than dropped.
_OUTSIDE_LATIN1 = {"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-",
                   "\u2026": "...", "\u0153": "oe", "\u0152": "OE", "\u202f": " ", "\u2265": ">=", "\u2264": "<="}
_INK, _MUTED = (20, 24, 31), (90, 98, 110)
_POSITIVE, _NEGATIVE = (176, 32, 32), (22, 110, 60)
_NOTICE_BG, _NOTICE_INK = (255, 243, 205), (102, 77, 3)


def latin1(text: Any) -> str:
    """``text`` in the characters the core PDF fonts can show."""
    text = str(text)
    for char, replacement in _OUTSIDE_LATIN1.items():
        text = text.replace(char, replacement)
    return text.encode("latin-1", "replace").decode("latin-1")


def _jpeg(image: np.ndarray) -> io.BytesIO:
    return io.BytesIO(encode_jpeg(image, quality=90))


def render_pdf(row: Mapping[str, Any], preview: np.ndarray | None, heatmap: np.ndarray | None, *,
               t: Callable[..., str], plain: str, population: str, title: str | None,
               reference: str | None, negative_label: str = "NORMAL", runtime_version: str = "",
               time_text: str = "", population_notice: str | None = None,
               outside_population: bool = False) -> bytes:
    """Draw the result as a one-page A4 PDF.

    Args:
        row: A screening-log row (id, label, probabilities, score, threshold, decision, model_name,
            model_sha256, image_sha256).
        preview: The input image (RGB uint8), or ``None`` when it was not kept.
        heatmap: (h, w) map in [0, 1] to overlay, or ``None`` to show the original only (the
            caller leaves it out for a negative result unless it was asked for).
        t: Translator of the report's language (:func:`edge_runtime.i18n.translator`).
        plain: The result in plain words.
        population: Which population the model was validated on.
        title: Human name of the model's task.
        reference: The patient reference, printed when given.
        negative_label: The model's "no finding" label.
        runtime_version: Printed in the footer.
        time_text: The screening time as people read it (local time).
        population_notice: The out-of-population check's outcome in words (None: no check).
        outside_population: The check flagged the film: its notice is printed as a warning.

    Returns:
        The PDF's bytes.
    """
    from fpdf import FPDF

    pdf = FPDF(orientation="portrait", unit="mm", format="A4")
    pdf.set_title(latin1(t("report.title")))
    pdf.set_creator(latin1(f"cxr-edge {runtime_version}".strip()))
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.set_margins(15, 15, 15)
    pdf.add_page()
    width = pdf.w - pdf.l_margin - pdf.r_margin

    def text(size: float, value: str, *, bold: bool = False, colour=_INK, height: float | None = None,
             fill=None) -> None:
        pdf.set_font("helvetica", "B" if bold else "", size)
        pdf.set_text_color(*colour)
        if fill is not None:
            pdf.set_fill_color(*fill)
        pdf.multi_cell(width, height or size * 0.5, latin1(value), fill=fill is not None,
                       new_x="LMARGIN", new_y="NEXT")

    text(18, t("report.title"), bold=True, height=10)
    pdf.ln(1)
    text(10, t("notice"), bold=True, colour=_NOTICE_INK, fill=_NOTICE_BG, height=6)
    pdf.ln(4)
    positive = is_positive(row.get("decision", ""))
    text(16, plain, bold=True, colour=_POSITIVE if positive else _NEGATIVE, height=8)
    if reference:
        text(11, f"{t('result.reference')}: {reference}", bold=True, height=6)
    if population_notice and outside_population:
        pdf.ln(1)
        text(10, population_notice, bold=True, colour=_NOTICE_INK, fill=_NOTICE_BG, height=6)
    pdf.ln(2)
    score, threshold = float(row.get("score", 0.0)), float(row.get("threshold", 0.5))
    relation = t("result.at_or_above") if score >= threshold else t("result.below")
    text(10, f"{row.get('label', '?')} - {row.get('decision', '')}", bold=True, height=5)
    text(10, t("result.score_line", score=f"{score:.3f}", relation=relation, threshold=f"{threshold:.3f}"), height=5)
    text(10, t("result.rule", negative=negative_label), height=5)
    probabilities = dict(row.get("probabilities") or {})
    if probabilities:
        text(10, t("report.probabilities") + ": " + ", ".join(
            f"{name} {float(value) * 100:.1f}%" for name, value in probabilities.items()), height=5)
    pdf.ln(3)

    if preview is not None:
        panels = [(t("result.original"), preview)]
        if heatmap is not None:
            caption = t("result.overlay") if positive else t("result.overlay_normal")
            panels.append((caption, overlay_heatmap(preview, heatmap, alpha=DEFAULT_ALPHA)))
        panel_width = (width - 6) / 2
        top = pdf.get_y()
        tallest = 0.0
        for index, (caption, image) in enumerate(panels):
            x = pdf.l_margin + index * (panel_width + 6)
            pdf.set_xy(x, top)
            pdf.set_font("helvetica", "B", 9)
            pdf.set_text_color(*_INK)
            pdf.cell(panel_width, 5, latin1(caption))
            height = panel_width * image.shape[0] / image.shape[1]
            pdf.image(_jpeg(image), x=x, y=top + 6, w=panel_width, h=height)
            tallest = max(tallest, height)
        pdf.set_xy(pdf.l_margin, top + 8 + tallest)
        if heatmap is not None:
            text(8, t("heatmap.note") if positive else t("heatmap.note_normal"), colour=_MUTED, height=4)
    else:
        text(9, t("report.no_image"), colour=_MUTED, height=5)
    pdf.ln(3)

    details = [
        (t("report.time"), time_text or str(row.get("time", ""))),
        (t("result.number"), str(row.get("id", ""))),
        (t("result.model"), title or str(row.get("model_name", ""))),
        (t("report.model_file"), str(row.get("model_name", ""))),
        (t("result.model_sha"), str(row.get("model_sha256", ""))),
        (t("report.image_sha"), str(row.get("image_sha256", ""))),
        (t("result.population"), population),
    ]
    if population_notice:
        details.append((t("result.population_check"), population_notice))
    for key, value in details:
        pdf.set_font("helvetica", "B", 9)
        pdf.set_text_color(*_INK)
        pdf.cell(38, 5, latin1(key))
        pdf.set_font("helvetica", "", 9)
        pdf.multi_cell(width - 38, 5, latin1(value), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    text(8, t("report.produced", version=runtime_version).replace("  ", " ") + " " + t("notice"),
         colour=_MUTED, height=4)
    return bytes(pdf.output())
