"""A greyscale out-of-distribution corpus for the quality gate: what a chest X-ray screen must refuse
although it has no colour to give it away.

Built offline and deterministically (seeded) from what installed packages ship and from synthesis:

- greyscale photographs: scikit-image's sample images (and matplotlib's / scikit-learn's when
  installed), whole and as crops of several shapes and exposures;
- other medical images: pydicom's bundled CT, MR and other test images (no other radiographs such
  as hands or skulls ship with any package installed here);
- documents: rendered text pages, forms and tables;
- noise: uniform, Gaussian, salt-and-pepper, and smooth (blurred) random fields of several scales;
- gradients: linear, radial and two-dimensional ramps, each also with noise (the issue's
  "gradient + noise" that the old gate passed as PNEUMONIA 0.973);
- patterns: checkerboards, stripes, rings, sinusoids.

Every image is (H, W) uint8 between 128 and 640 pixels a side (so ``too_small`` never catches it).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

logger = logging.getLogger(__name__)

_SIZES = ((256, 256), (320, 400), (512, 420), (384, 384), (600, 500))


def _grey(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.ndim == 3:
        image = np.asarray(Image.fromarray(np.ascontiguousarray(image[:, :, :3]).astype(np.uint8)).convert("L"))
    if image.dtype != np.uint8:
        low, high = float(image.min()), float(image.max())
        image = np.zeros(image.shape, np.uint8) if high <= low else \
            np.round((image.astype(np.float64) - low) * 255.0 / (high - low)).astype(np.uint8)
    return image


def _fit(image: np.ndarray, max_side: int = 640, min_side: int = 160) -> np.ndarray:
    height, width = image.shape
    scale = min(1.0, max_side / max(height, width))
    if min(height, width) * scale < min_side:
        scale = min_side / min(height, width)
    if scale != 1.0:
        image = np.asarray(Image.fromarray(image).resize((max(1, round(width * scale)), max(1, round(height * scale))),
                                                         Image.Resampling.BILINEAR))
    return image


def photographs() -> dict[str, np.ndarray]:
    """Greyscale versions of the sample photographs that packages ship."""
    out: dict[str, np.ndarray] = {}
    try:
        import skimage.data as data

        for name in ("astronaut", "brick", "camera", "cat", "chelsea", "clock", "coffee", "coins", "grass",
                     "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "moon", "page", "retina",
                     "rocket", "text", "cell", "colorwheel", "logo", "microaneurysms", "shepp_logan_phantom"):
            try:
                out[f"skimage {name}"] = _grey(getattr(data, name)())
            except Exception as err:  # noqa: BLE001 - some need a download
                logger.info("skipping skimage.data.%s: %s", name, err)
        try:
            left, right, _ = data.stereo_motorcycle()
            out["skimage motorcycle left"], out["skimage motorcycle right"] = _grey(left), _grey(right)
        except Exception as err:  # noqa: BLE001
            logger.info("skipping stereo_motorcycle: %s", err)
    except ImportError:
        logger.warning("scikit-image is not installed: no sample photographs")
    try:
        import matplotlib

        sample = Path(matplotlib.get_data_path()) / "sample_data"
        for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png"):
            if (sample / name).is_file():
                out[f"matplotlib {name}"] = _grey(np.asarray(Image.open(sample / name).convert("RGB")))
    except ImportError:
        pass
    try:
        from sklearn.datasets import load_sample_images

        bunch = load_sample_images()
        for filename, image in zip(bunch.filenames, bunch.images):
            out[f"sklearn {Path(filename).name}"] = _grey(image)
    except ImportError:
        pass
    return {k: _fit(v) for k, v in out.items() if min(v.shape) >= 64}


def photo_crops(photos: dict[str, np.ndarray], rng: np.random.Generator, per_photo: int = 4) -> dict[str, np.ndarray]:
    """Crops of several shapes, with exposure and gamma changes, as a phone would frame them."""
    out = {}
    for name, image in photos.items():
        height, width = image.shape
        for k in range(per_photo):
            crop_h = int(height * rng.uniform(0.5, 0.9))
            crop_w = int(min(width, crop_h * rng.uniform(0.7, 1.4)))
            top, left = rng.integers(0, height - crop_h + 1), rng.integers(0, width - crop_w + 1)
            crop = image[top:top + crop_h, left:left + crop_w].astype(np.float64) / 255.0
            crop = np.clip(crop ** rng.uniform(0.6, 1.6) * rng.uniform(0.8, 1.2), 0, 1)
            out[f"{name} crop {k}"] = _fit(np.round(crop * 255).astype(np.uint8))
    return out


def medical_images() -> dict[str, np.ndarray]:
    """pydicom's bundled single-frame greyscale test images (CT, MR, RT dose ...): medical, not chest films."""
    out = {}
    try:
        import pydicom
    except ImportError:
        return out
    folder = Path(pydicom.__file__).parent / "data" / "test_files"
    from edge_runtime.errors import CxrError
    from edge_runtime.imaging import load_image

    import warnings

    seen = set()
    for path in sorted(folder.glob("*.dcm")):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # many are deliberately odd files
                rgb = load_image(path)
        except (CxrError, Exception):  # noqa: BLE001
            continue
        grey = rgb[..., 0]
        key = grey[:: max(1, grey.shape[0] // 8), :: max(1, grey.shape[1] // 8)].tobytes()
        if min(grey.shape) >= 32 and np.ptp(grey) > 0 and key not in seen:  # one of each (MR_small x 8 ...)
            seen.add(key)
            out[f"pydicom {path.stem}"] = _fit(grey)
    return out


def documents(rng: np.random.Generator, count: int = 30) -> dict[str, np.ndarray]:
    """Rendered pages: paragraphs, forms with boxes, tables; some photographed (blur, shading, rotation)."""
    words = ("patient", "report", "chest", "radiograph", "findings", "impression", "normal", "left", "right", "lung",
             "date", "signature", "clinic", "history", "cough", "fever", "page", "total", "name", "form")
    out = {}
    for i in range(count):
        width, height = _SIZES[i % len(_SIZES)]
        page = Image.new("L", (width, height), int(rng.integers(200, 256)))
        draw = ImageDraw.Draw(page)
        ink = int(rng.integers(0, 80))
        y = 10
        while y < height - 16:
            if i % 3 == 1 and rng.random() < 0.3:
                draw.rectangle([10, y, width - 10, y + 22], outline=ink)
            x = 10
            while x < width - 60:
                word = words[int(rng.integers(len(words)))]
                draw.text((x, y), word, fill=ink)
                x += 8 + 6 * len(word)
            y += int(rng.integers(12, 24))
        if i % 3 == 2:
            for col in range(1, 4):
                draw.line([col * width // 4, 0, col * width // 4, height], fill=ink)
        if i % 4 == 3:  # photographed: shading, blur, a slight rotation
            page = page.rotate(float(rng.uniform(-6, 6)), fillcolor=int(rng.integers(60, 140)))
            page = page.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 1.5))))
            shade = np.linspace(rng.uniform(0.6, 0.9), 1.0, width)[None, :]
            page = Image.fromarray(np.clip(np.asarray(page) * shade, 0, 255).astype(np.uint8))
        out[f"document {i}"] = np.asarray(page)
    return out


def _smooth_field(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    noise = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))
    field = np.asarray(noise.filter(ImageFilter.GaussianBlur(sigma)), dtype=np.float64)
    field -= field.mean()
    return field / (field.std() + 1e-9)


def noise_images(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Uniform, Gaussian, salt-and-pepper and smooth random fields."""
    out = {}
    for i, (w, h) in enumerate(_SIZES):
        shape = (h, w)
        out[f"uniform noise {i}"] = rng.integers(0, 256, shape, dtype=np.uint8)
        out[f"gaussian noise {i}"] = np.clip(rng.normal(128, rng.uniform(20, 60), shape), 0, 255).astype(np.uint8)
        salt = np.full(shape, int(rng.integers(60, 200)), np.uint8)
        mask = rng.random(shape)
        salt[mask < 0.05], salt[mask > 0.95] = 0, 255
        out[f"salt and pepper {i}"] = salt
        for sigma in (2.0, 6.0, 15.0, 40.0):
            field = _smooth_field(rng, shape, sigma)
            out[f"smooth noise sigma {sigma:g} {i}"] = np.clip(128 + 45 * field, 0, 255).astype(np.uint8)
    return out


def gradients(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Linear, radial and 2-D ramps, plain and with noise."""
    out = {}
    for i, (w, h) in enumerate(_SIZES):
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        angle = rng.uniform(0, np.pi)
        ramps = {
            "linear": np.cos(angle) * xx + np.sin(angle) * yy,
            "vertical": yy,
            "radial": np.hypot(xx - 0.5 * w / max(h, w), yy - 0.5 * h / max(h, w)),
            "2-D": xx * yy + 0.3 * xx,
            "bump": np.exp(-((xx - 0.5) ** 2 + (yy - 0.5) ** 2) / 0.05),
        }
        for kind, ramp in ramps.items():
            ramp = (ramp - ramp.min()) / (np.ptp(ramp) + 1e-9)
            out[f"{kind} gradient {i}"] = np.round(ramp * 255).astype(np.uint8)
            noisy = ramp * 255 * rng.uniform(0.6, 1.0) + rng.normal(0, rng.uniform(8, 30), ramp.shape)
            out[f"{kind} gradient + noise {i}"] = np.clip(noisy, 0, 255).astype(np.uint8)
            smooth = ramp * 200 + 25 * _smooth_field(rng, ramp.shape, rng.uniform(3, 12))
            out[f"{kind} gradient + smooth noise {i}"] = np.clip(smooth, 0, 255).astype(np.uint8)
    return out


def patterns(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Checkerboards, stripes, rings, sinusoids."""
    out = {}
    for i, (w, h) in enumerate(_SIZES):
        yy, xx = np.mgrid[0:h, 0:w]
        cell = int(rng.integers(8, 48))
        out[f"checkerboard {i}"] = (((yy // cell) + (xx // cell)) % 2 * 255).astype(np.uint8)
        out[f"stripes {i}"] = ((xx // cell) % 2 * 200 + 30).astype(np.uint8)
        radius = np.hypot(xx - w / 2, yy - h / 2)
        out[f"rings {i}"] = (127 + 120 * np.sin(radius / rng.uniform(4, 20))).astype(np.uint8)
        out[f"sinusoid {i}"] = (127 + 60 * np.sin(xx / rng.uniform(5, 30)) + 60 * np.cos(yy / rng.uniform(5, 30))
                                ).astype(np.uint8)
    return out


def build_corpus(seed: int = 0) -> dict[str, tuple[str, np.ndarray]]:
    """name -> (category, (H, W) uint8 image), every category above."""
    rng = np.random.default_rng(seed)
    photos = photographs()
    parts = {
        "photo": photos,
        "photo crop": photo_crops(photos, rng),
        "medical (not chest)": medical_images(),
        "document": documents(rng),
        "noise": noise_images(rng),
        "gradient": gradients(rng),
        "pattern": patterns(rng),
    }
    return {name: (category, image) for category, images in parts.items() for name, image in images.items()}
