"""Quality gate: refuses images that are not chest X-rays, from simple explainable image statistics."""

from __future__ import annotations

import logging

import numpy as np
from PIL import Image

from .errors import InvalidImageError, NotChestXrayError

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

#: Smaller side, in pixels, below which a radiograph has too little detail to screen (the gate's minimum; smaller
#: than ``imaging.MIN_DECODE_SIDE`` an image is not even decoded).
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

#: Spectral bands (radial frequency, cycles per pixel of the 256-pixel analysis copy) of the texture
#: signature: the log power of each band relative to the coarsest one, i.e. how detail is spread
#: over scales. Radiographs have their own balance (soft anatomy, fine rib and vessel texture, film
#: grain); pixel noise, blurred noise, synthetic ramps, text and most photographs do not.
SPECTRUM_EDGES = (1 / 128, 1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4, 0.5, 0.71)
#: Envelope of that signature (bands 1-6; band 0 is the reference): the 0.025th and 99.975th
#: percentiles of each band over 13,583 real chest X-rays (all of chest_xray/train, covid19 and
#: adult_cxr, and the 24 full-resolution originals; `python -m benchmarks.quality_gate --fit`).
SPECTRUM_LOW = (-2.142, -3.159, -4.221, -5.248, -6.758, -7.749)
SPECTRUM_HIGH = (-0.351, -1.373, -2.216, -3.224, -4.523, -5.686)
#: Side of the layout thumbnail compared with the average chest film.
TEMPLATE_SIDE = 16
#: The average frontal chest film: mean of the zero-mean, unit-norm 16 x 16 thumbnails of every
#: second real X-ray of the sets above (row-major; `python -m benchmarks.quality_gate --fit`).
CHEST_TEMPLATE = (
    -0.1333, -0.1167, -0.1092, -0.0994, -0.0818, -0.0424, 0.0064, 0.0367, 0.0378, 0.0100, -0.0373, -0.0792, -0.0979, -0.1072, -0.1185, -0.1332,
    -0.1073, -0.0784, -0.0620, -0.0489, -0.0367, -0.0196, 0.0066, 0.0313, 0.0326, 0.0093, -0.0180, -0.0366, -0.0486, -0.0608, -0.0784, -0.1074,
    -0.0713, -0.0373, -0.0163, -0.0054, -0.0068, -0.0142, -0.0024, 0.0275, 0.0316, -0.0002, -0.0167, -0.0091, -0.0067, -0.0174, -0.0382, -0.0708,
    -0.0496, -0.0159, 0.0069, 0.0100, -0.0137, -0.0335, -0.0153, 0.0281, 0.0359, -0.0118, -0.0361, -0.0188, 0.0045, 0.0035, -0.0176, -0.0485,
    -0.0423, -0.0104, 0.0148, 0.0078, -0.0326, -0.0530, -0.0248, 0.0328, 0.0450, -0.0146, -0.0522, -0.0364, 0.0008, 0.0102, -0.0133, -0.0424,
    -0.0453, -0.0120, 0.0167, -0.0004, -0.0455, -0.0583, -0.0234, 0.0412, 0.0564, -0.0024, -0.0502, -0.0452, -0.0062, 0.0121, -0.0148, -0.0460,
    -0.0553, -0.0167, 0.0161, -0.0098, -0.0517, -0.0531, -0.0097, 0.0540, 0.0677, 0.0192, -0.0341, -0.0453, -0.0126, 0.0119, -0.0184, -0.0553,
    -0.0663, -0.0217, 0.0132, -0.0186, -0.0526, -0.0425, 0.0076, 0.0674, 0.0795, 0.0404, -0.0104, -0.0379, -0.0171, 0.0093, -0.0229, -0.0679,
    -0.0782, -0.0257, 0.0084, -0.0236, -0.0466, -0.0275, 0.0227, 0.0787, 0.0901, 0.0590, 0.0159, -0.0221, -0.0176, 0.0053, -0.0267, -0.0795,
    -0.0892, -0.0289, 0.0029, -0.0228, -0.0336, -0.0135, 0.0346, 0.0878, 0.0984, 0.0732, 0.0403, -0.0003, -0.0134, 0.0007, -0.0303, -0.0888,
    -0.0975, -0.0329, -0.0018, -0.0141, -0.0133, 0.0043, 0.0475, 0.0950, 0.1044, 0.0808, 0.0561, 0.0197, -0.0059, -0.0036, -0.0355, -0.0971,
    -0.1056, -0.0376, -0.0014, 0.0044, 0.0162, 0.0325, 0.0653, 0.1027, 0.1095, 0.0863, 0.0657, 0.0357, 0.0052, -0.0053, -0.0416, -0.1058,
    -0.1130, -0.0410, 0.0078, 0.0339, 0.0553, 0.0702, 0.0884, 0.1118, 0.1149, 0.0935, 0.0775, 0.0539, 0.0230, -0.0010, -0.0468, -0.1138,
    -0.1187, -0.0409, 0.0241, 0.0632, 0.0859, 0.0973, 0.1061, 0.1198, 0.1204, 0.1039, 0.0926, 0.0758, 0.0474, 0.0113, -0.0486, -0.1197,
    -0.1213, -0.0382, 0.0371, 0.0795, 0.1011, 0.1112, 0.1164, 0.1250, 0.1242, 0.1121, 0.1029, 0.0892, 0.0659, 0.0252, -0.0468, -0.1226,
    -0.1180, -0.0338, 0.0431, 0.0842, 0.1045, 0.1133, 0.1174, 0.1233, 0.1218, 0.1118, 0.1035, 0.0916, 0.0715, 0.0331, -0.0436, -0.1196,
)
#: Correlation with CHEST_TEMPLATE below which the layout is not a frontal chest film: the 0.05th
#: percentile over the same 13,583 X-rays (photos, documents and lateral or other views fall below).
MIN_CHEST_SIMILARITY = -0.037

_HIST_BINS = 32
_BLOCK = 16
_FREQ = np.hypot(np.fft.fftfreq(ANALYSIS_SIDE)[:, None], np.fft.fftfreq(ANALYSIS_SIDE)[None, :])
_BAND = np.digitize(_FREQ, SPECTRUM_EDGES) - 1
_BAND_MASKS = [(_BAND == b) for b in range(len(SPECTRUM_EDGES) - 1)]
_WINDOW = (np.hanning(ANALYSIS_SIDE)[:, None] * np.hanning(ANALYSIS_SIDE)[None, :]).astype(np.float32)


def spectrum_signature(lum8: np.ndarray) -> np.ndarray:
    """Log10 power of each SPECTRUM_EDGES band of the (ANALYSIS_SIDE^2) luminance, relative to the first."""
    x = lum8.astype(np.float32)
    x -= x.mean()
    power = np.abs(np.fft.rfft2(x * _WINDOW)) ** 2
    full = np.concatenate([power, power[:, -2:0:-1][np.r_[0, ANALYSIS_SIDE - 1:0:-1]]], axis=1)
    bands = np.array([full[mask].mean() for mask in _BAND_MASKS], dtype=np.float64)
    bands = np.log10(bands + 1e-9)
    return bands - bands[0]


def layout_thumbnail(lum8: np.ndarray) -> np.ndarray:
    """Zero-mean, unit-norm TEMPLATE_SIDE^2 thumbnail (box filter) of the analysis luminance, flattened."""
    thumb = np.asarray(Image.fromarray(lum8, "L").resize((TEMPLATE_SIDE, TEMPLATE_SIDE), Image.Resampling.BOX),
                       dtype=np.float64).ravel()
    thumb -= thumb.mean()
    return thumb / (np.linalg.norm(thumb) + 1e-9)


_TEMPLATE = None if CHEST_TEMPLATE is None else np.asarray(CHEST_TEMPLATE, dtype=np.float64)


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
        InvalidImageError: ``rgb`` is not an (H, W, 3) uint8 array.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise InvalidImageError(f"expected an (H, W, 3) uint8 RGB array, got {rgb.shape} {rgb.dtype}")
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
    spectrum = spectrum_signature(lum8)
    similarity = float(layout_thumbnail(lum8) @ _TEMPLATE) if _TEMPLATE is not None else None
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
        **{f"spectrum_b{b}": round(float(spectrum[b]), 4) for b in range(1, len(spectrum))},
        "chest_similarity": None if similarity is None else round(similarity, 4),
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
    if SPECTRUM_LOW is not None:
        for b, (low, high) in enumerate(zip(SPECTRUM_LOW, SPECTRUM_HIGH), start=1):
            value = m.get(f"spectrum_b{b}")
            if value is not None and not low <= value <= high:
                return ("not_xray", "spectrum",
                        f"its texture is unlike a radiograph's (detail at scale {b}: {value:.2f}, radiographs "
                        f"{low:.2f} to {high:.2f}): noise, a synthetic pattern, text or a photograph?")
    if m.get("chest_similarity") is not None and m["chest_similarity"] < MIN_CHEST_SIMILARITY:
        return ("not_xray", "chest_similarity",
                f"its layout does not resemble a frontal chest film (similarity {m['chest_similarity']:.2f} < "
                f"{MIN_CHEST_SIMILARITY}); lateral views and other body parts are not screened")
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
        InvalidImageError: ``rgb`` is not an (H, W, 3) uint8 array (as :func:`~edge_runtime.imaging.prepare_input`).
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
