"""``--quick`` set-up: a tiny model trained for seconds on synthetic X-rays and exported like the shipped ones."""

from __future__ import annotations

import logging
from pathlib import Path

from export.__main__ import build_parser, export_model
from export.convert import ExportError
from training.train import TrainConfig, train

from .synthetic import write_synthetic_folder

logger = logging.getLogger(__name__)

#: Input size of the tiny model.
QUICK_SIZE = 32


def build_quick_assets(workdir: Path) -> tuple[Path, Path]:
    """Train the tiny binary model and export it into ``workdir/android_assets`` (shipped layout).

    Returns:
        (assets folder, synthetic data folder).
    """
    data = write_synthetic_folder(workdir / "synthetic data" / "train", per_class=40, full_range=True)
    assets = workdir / "android_assets"
    train_dir = assets / "training" / f"cxr_binary_{QUICK_SIZE}"
    cache = workdir / "cache"
    config = TrainConfig(task="binary", data=str(data), out=str(train_dir), input_size=QUICK_SIZE, width=0.5,
                         epochs=3, batch_size=16, learning_rate=5e-3, patience=10, val_fraction=0.25, seed=0,
                         augment=False, epoch_size=0, cache_dir=str(cache), threads=2)
    train(config)
    args = build_parser().parse_args(["--model", str(train_dir / "model.keras"), "--data", str(data),
                                      "--out", str(assets), "--calibration-size", "60", "--no-metadata",
                                      "--cache-dir", str(cache), "--force"])
    try:
        export_model(args)
    except ExportError as err:
        # A 3-epoch toy model may fail the parity gate; --force wrote the files, which is all a
        # smoke run needs. The real gate is the export's own business.
        logger.info("tiny model export gate: %s", str(err).splitlines()[0])
    return assets, data
