"""Quality gate: refuses images that are not chest X-rays, from simple explainable image statistics."""

from __future__ import annotations

import logging

import numpy as np
from PIL import Image

from .errors import NotChestXrayError

logger = logging.getLogger(__name__)

# Every statistic is computed on a small copy of the image (ANALYSIS_SIDE x ANALYSIS_SIDE,
# aspect not kept, as the model sees it), so the gate costs a few milliseconds and its
# thresholds do not depend on the scanner's resolution.
ANALYSIS_SIDE = 256
#: Side of the smaller copy the colour statistics use (colour needs no detail).
COLOUR_SIDE = 64

# Thresholds. Each was set beyond the most extreme value seen on 6,564 real chest X-rays
# (all 5,216 Kermany training images, a 1-in-5 sample of 1,324 COVID-19 Radiography Database
# images, the 24 full-resolution originals), with a margin, so that each rule alone rejects
# almost no real X-ray; two were then relaxed after a run on all 6,616 COVID-19 images (see
# MAX_FLAT_FRACTION, MIN_GRADIENT_P90). `python -m benchmarks.quality_gate` re-measures them
# (X-ray extremes in brackets below come from those runs).

#: Smaller side, in pixels, below which a radiograph has too little detail to screen.
MIN_SIDE = 128
#: Width/height outside this range: a banner, a document strip (X-rays: 1.0-1.68).
MIN_ASPECT, MAX_ASPECT = 0.5, 2.0
#: Luminance standard deviation (0-255) below which the image is blank (X-rays: >= 14).
BLANK_STD = 4.0
#: 1st-99th percentile luminance range below which contrast is too low to read (X-rays: >= 59).
MIN_DYNAMIC_RANGE = 40.0
#: Fraction of non-dark pixels whose chromaticity differs from the image's dominant tint;
#: above it the image is a colour picture (X-rays: 0; a uniformly tinted photo of a film: ~0).
MAX_COLOUR_FRACTION = 0.10
#: Chromaticity difference (max over r, g, b of r/(r+g+b) ...) counted as "a different colour".
COLOUR_DELTA = 0.05
#: Distance of the dominant chromaticity from grey (1/3) above which the whole picture is
#: strongly coloured (a fundus photo, a sunset), not a tinted radiograph (sepia film: ~0.07).
MAX_TINT = 0.15
#: Fraction of pixels on a sharp edge (gradient > 15% of the range); photographs, text and
#: textures have many, radiographs are soft (X-rays: <= 0.044).
MAX_EDGE_DENSITY = 0.05
#: 90th percentile of the gradient relative to the range; below it the image is a smooth
#: synthetic gradient or nearly blank (X-rays: >= 0.016 in the sample; a hazy portable film of
#: the full COVID-19 set: 0.0134).
MIN_GRADIENT_P90 = 0.012
#: Entropy (bits) of the 32-bin luminance histogram; below it the image has too few grey
#: levels: a drawing, a binary mask, text, a star field (X-rays: >= 2.62).
MIN_ENTROPY_BITS = 2.5
#: Fraction of 16x16-pixel blocks that are flat and mid-grey (a wall, a sky, a clock face);
#: radiographs have anatomy everywhere except black or white margins. Kept high on purpose:
#: hazy, whited-out lungs (severe pneumonia, the films that matter most) reach 0.48 in the
#: full COVID-19 set, and a gate must not turn those into "not a chest X-ray".
MAX_FLAT_FRACTION = 0.55
#: Fraction of near-black pixels (< 8); above it the subject fills too little of the frame
#: (an MRI slice, a small picture in a black frame) (X-rays: <= 0.42 in the sample; in the full
#: COVID-19 set 12 of 6,616 radiographs pasted small in a wide black frame exceed it and are
#: asked to be cropped).
MAX_BLACK_FRACTION = 0.5

_HIST_BINS = 32
_BLOCK = 16


def _analysis_images(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(COLOUR_SIDE^2 x 3 float32 RGB pixels, ANALYSIS_SIDE x ANALYSIS_SIDE uint8 luminance)."""
    image = Image.fromarray(rgb, "RGB")
    # Image.reduce is an exact box filter and makes a 3000-pixel scan cheap to shrink.
    factor = min(image.width, image.height) // (2 * ANALYSIS_SIDE)
    if factor >= 2:
        image = image.reduce(factor)
    small = image.resize((ANALYSIS_SIDE, ANALYSIS_SIDE), Image.Resampling.BILINEAR)
    colour = np.asarray(small.resize((COLOUR_SIDE, COLOUR_SIDE), Image.Resampling.BOX), dtype=np.float32)
    return colour.reshape(-1, 3), np.asarray(small.convert("L"))


def _colour_stats(pixels: np.ndarray) -> tuple[float, float, float]:
    """(fraction of non-dark pixels off the dominant tint, strength of that tint, mean chroma).

    Chromaticity is (r, g, b) / (r + g + b): a greyscale image has (1/3, 1/3, 1/3) everywhere,
    a tinted one (a photo of a film on a warm lightbox) another constant; a colour picture has
    many different values.
    """
    chroma = pixels.max(axis=1) - pixels.min(axis=1)
    mean_chroma = float(chroma.mean())
    if mean_chroma == 0.0:  # exactly grey, as nearly every X-ray file is
        return 0.0, 0.0, 0.0
    total = pixels.sum(axis=1)
    valid = total > 3 * 24.0  # the chromaticity of near-black pixels is rounding noise
    if not np.any(valid):
        return 0.0, 0.0, mean_chroma
    chromaticity = pixels[valid] / total[valid][:, None]
    dominant = np.median(chromaticity, axis=0)
    delta = np.abs(chromaticity - dominant).max(axis=1)
    tint = float(np.abs(dominant - 1.0 / 3.0).max())
    return float(np.mean(delta > COLOUR_DELTA)), tint, mean_chroma


def _percentiles(counts: np.ndarray, fractions) -> list[float]:
    """Percentiles (lower value) of integer data from its histogram ``counts``."""
    cumulative = np.cumsum(counts)
    total = cumulative[-1]
    return [float(np.searchsorted(cumulative, f * total, side="left")) for f in fractions]


def measure(rgb: np.ndarray) -> dict:
    """The statistics the gate decides on, without deciding.

    Args:
        rgb: (H, W, 3) uint8 RGB image, as :func:`edge_runtime.imaging.load_image` returns.

    Returns:
        JSON-ready dict of numbers (see :func:`check_chest_xray`).

    Raises:
        ValueError: ``rgb`` is not an (H, W, 3) uint8 array.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB array, got {rgb.shape} {rgb.dtype}")
    height, width = rgb.shape[:2]
    pixels, lum8 = _analysis_images(rgb)
    colour_fraction, tint, mean_chroma = _colour_stats(pixels)
    counts = np.bincount(lum8.ravel(), minlength=256)
    p1, p99 = _percentiles(counts, (0.01, 0.99))
    dynamic_range = p99 - p1
    scale = max(dynamic_range, 1.0)
    lum = lum8.astype(np.float32)
    mean = float(lum.mean())
    std = float(lum.std())
    # Central differences; the one-pixel frame stays 0 like a flat border.
    grad_x = np.zeros_like(lum)
    grad_y = np.zeros_like(lum)
    grad_x[:, 1:-1] = (lum[:, 2:] - lum[:, :-2]) * 0.5
    grad_y[1:-1] = (lum[2:] - lum[:-2]) * 0.5
    gradient = np.sqrt(grad_x * grad_x + grad_y * grad_y).ravel()
    rank = int(0.9 * (gradient.size - 1))
    gradient_p90 = float(np.partition(gradient, rank)[rank]) / scale
    hist = counts.reshape(_HIST_BINS, -1).sum(axis=1).astype(np.float64) / lum8.size
    hist = hist[hist > 0]
    n = ANALYSIS_SIDE // _BLOCK
    blocks = lum.reshape(n, _BLOCK, n, _BLOCK)
    block_mean = blocks.mean(axis=(1, 3))
    block_std = np.sqrt(np.maximum((blocks * blocks).mean(axis=(1, 3)) - block_mean * block_mean, 0.0))
    mid_grey = (block_mean > p1 + 0.15 * scale) & (block_mean < p99 - 0.15 * scale)
    return {
        "width": int(width),
        "height": int(height),
        "aspect": round(width / height, 4),
        "colour_fraction": round(colour_fraction, 4),
        "tint": round(tint, 4),
        "mean_chroma": round(mean_chroma, 3),
        "mean": round(mean, 3),
        "std": round(std, 3),
        "dynamic_range": round(dynamic_range, 3),
        "entropy_bits": round(float(-(hist * np.log2(hist)).sum()), 4),
        "edge_density": round(float(np.count_nonzero(gradient > 0.15 * scale)) / gradient.size, 5),
        "gradient_p90": round(gradient_p90, 5),
        "flat_fraction": round(float(np.mean((block_std < 0.02 * scale) & mid_grey)), 4),
        "black_fraction": round(float(counts[:8].sum()) / lum8.size, 4),
    }


def _verdict(m: dict) -> tuple[str, str, str] | None:
    """(reason, failed rule, human explanation) of the first rule ``m`` breaks, or None."""
    side = min(m["width"], m["height"])
    if side < MIN_SIDE:
        return ("too_small", "min_side",
                f"image is {m['width']}x{m['height']} pixels; a chest X-ray needs at least {MIN_SIDE} a side")
    if m["std"] < BLANK_STD:
        return "blank", "std", f"image is blank or uniform (grey-level spread {m['std']:.1f} < {BLANK_STD})"
    if m["colour_fraction"] > MAX_COLOUR_FRACTION:
        return ("colour_photo", "colour_fraction",
                f"image is in colour ({m['colour_fraction']:.0%} of pixels are coloured); an X-ray is greyscale")
    if m["tint"] > MAX_TINT:
        return ("colour_photo", "tint",
                f"image is strongly coloured (tint {m['tint']:.2f} > {MAX_TINT}); an X-ray is greyscale")
    if m["dynamic_range"] < MIN_DYNAMIC_RANGE:
        return ("low_contrast", "dynamic_range",
                f"contrast too low to read (grey-level range {m['dynamic_range']:.0f} < {MIN_DYNAMIC_RANGE:.0f}); "
                "check exposure or windowing")
    if not MIN_ASPECT <= m["aspect"] <= MAX_ASPECT:
        return ("not_xray", "aspect",
                f"aspect ratio {m['aspect']:.2f} is outside {MIN_ASPECT}-{MAX_ASPECT}: not a radiograph's shape")
    if m["entropy_bits"] < MIN_ENTROPY_BITS:
        return ("not_xray", "entropy_bits",
                f"too few grey levels ({m['entropy_bits']:.2f} bits < {MIN_ENTROPY_BITS}): a drawing, mask or text?")
    if m["black_fraction"] > MAX_BLACK_FRACTION:
        return ("not_xray", "black_fraction",
                f"{m['black_fraction']:.0%} of the image is black: crop it to the radiograph")
    if m["edge_density"] > MAX_EDGE_DENSITY:
        return ("not_xray", "edge_density",
                f"too many sharp edges ({m['edge_density']:.1%} of pixels > {MAX_EDGE_DENSITY:.0%}): "
                "looks like a photograph, text or a texture")
    if m["flat_fraction"] > MAX_FLAT_FRACTION:
        return ("not_xray", "flat_fraction",
                f"large flat grey areas ({m['flat_fraction']:.0%} of the image > {MAX_FLAT_FRACTION:.0%}): "
                "looks like a photograph")
    if m["gradient_p90"] < MIN_GRADIENT_P90:
        return ("not_xray", "gradient_p90",
                "image is too smooth to be a radiograph (a synthetic gradient or a heavily blurred picture)")
    return None


def check_chest_xray(rgb: np.ndarray, name: str | None = None) -> dict:
    """Refuse an image that does not look like a chest X-ray; return its measurements otherwise.

    A screening aid, not a detector: it stops the commonest wrong inputs (a colour photo, a
    blank or under-exposed image, a thumbnail, a document, a texture) from getting a confident
    diagnosis. A greyscale photograph with soft edges and few flat areas can still pass; the
    figures are in ``benchmarks/quality_gate.py``'s report.

    Args:
        rgb: (H, W, 3) uint8 RGB image, as :func:`edge_runtime.imaging.load_image` returns.
        name: How the refusal message names the input (e.g. its file path).

    Returns:
        The measurements (JSON-ready): ``width``, ``height``, ``aspect``, ``colour_fraction``,
        ``tint``, ``mean_chroma``, ``mean``, ``std``, ``dynamic_range``, ``entropy_bits``,
        ``edge_density``, ``gradient_p90``, ``flat_fraction``, ``black_fraction``.

    Raises:
        NotChestXrayError: with ``reason`` one of ``too_small``, ``blank``, ``colour_photo``,
            ``low_contrast``, ``not_xray``, and ``details`` holding the measurements plus
            ``rule`` (the statistic that failed).
        ValueError: ``rgb`` is not an (H, W, 3) uint8 array (a programming error).
    """
    measurements = measure(rgb)
    verdict = _verdict(measurements)
    if verdict is None:
        return measurements
    reason, rule, explanation = verdict
    logger.debug("quality gate: %s (%s) %s", reason, rule, measurements)
    label = "low quality" if reason in ("blank", "low_contrast", "too_small") else "not a chest X-ray"
    prefix = f"{name}: " if name else ""
    raise NotChestXrayError(f"{prefix}{label}: {explanation}", reason=reason, details={**measurements, "rule": rule})
