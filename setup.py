"""Installs the TensorFlow-free edge runtime (`cxr-edge`) with the shipped models as package data.

training/, export/ and benchmarks/ are repository tools run from a checkout
(`python -m training ...`); the `[train]` extra installs what they need.
"""

from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent
MODEL_FILES = ["*.tflite", "*.spec.json", "*_labels.txt", "SHA256SUMS", "README.md", "MODEL_CARD*.md", "LICENSE*"]

EXTRAS = {
    # One TFLite interpreter is needed; ai-edge-litert is the maintained one (numpy 2).
    "litert": ["ai-edge-litert>=1.2"],
    # Older Raspberry Pi OS images: the last tflite-runtime wheels need numpy < 2.
    "tflite": ["tflite-runtime==2.14.*", "numpy<2"],
    # pydicom decodes DICOM files; pynetdicom is the storage node of `cxr-edge receive`.
    "dicom": ["pydicom>=2.4", "pynetdicom>=2.0"],
    # fpdf2 writes the PDF report with its built-in (offline) fonts.
    "web": ["flask>=3.0", "waitress>=3.0", "fpdf2>=2.7"],
    "camera": [],  # picamera2 comes from Raspberry Pi OS: sudo apt install python3-picamera2
    # No OpenCV in the runtime: measured against Pillow (python -m benchmarks.opencv_vs_pillow), it matched
    # Pillow's reduced JPEG decoding and resizing, and its faster overlay was matched by an 8-bit Pillow one;
    # it would add ~150 MB to a Pi install and a slow import for nothing. Training uses it: the shift
    # augmentation (training/augment.py) and the shift check measured ~20x faster than in TensorFlow.
    "train": ["tensorflow==2.21.*", "scikit-learn>=1.3", "matplotlib>=3.7", "tqdm>=4.60",
              "opencv-python-headless>=4.8"],
    "dev": ["pytest>=8", "playwright>=1.40", "scikit-image>=0.22", "jsonschema>=4",
            "openapi-spec-validator>=0.7", "pypdf>=4"],
}
EXTRAS["all"] = sorted({req for name, reqs in EXTRAS.items() if name != "tflite" for req in reqs})

setup(
    name="cxr-edge",
    version="0.1.0",
    description="Offline chest X-ray screening on edge devices: TFLite runtime with heatmaps, "
                "scanner/DICOM/camera inputs, a local log and a clinic web page. Not a medical device.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8") if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=["edge_runtime", "edge_runtime.web", "edge_runtime.assets"],
    package_dir={"edge_runtime.assets": "android_assets"},
    package_data={
        "edge_runtime": ["locales/*.json"],
        "edge_runtime.assets": MODEL_FILES,
        "edge_runtime.web": ["templates/*.html", "static/*", "openapi.json"],
    },
    install_requires=["numpy>=1.23", "pillow>=9.4"],
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["cxr-edge=edge_runtime.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Intended Audience :: Healthcare Industry",
        "Topic :: Scientific/Engineering :: Medical Science Apps.",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
)
