"""Entry point: python -m training {train,evaluate,gradcam,shift,population-check,backfill-spec} ..."""

import sys


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"train": "training.train", "evaluate": "training.evaluate", "gradcam": "training.gradcam",
                "shift": "training.shift", "population-check": "training.population_check",
                "backfill-spec": "training.backfill"}
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        print("usage: python -m training {train,evaluate,gradcam,shift,population-check,backfill-spec} [--help]\n\n"
              "  train             train a model from scratch on a folder-per-class data set\n"
              "  evaluate          evaluate a trained model on a labelled folder (medical metrics, plots)\n"
              "  gradcam           write Grad-CAM overlays of a trained model for some images\n"
              "  shift             re-render held-out films as other scanners would and report metrics vs severity\n"
              "  population-check  fit and grade the children-vs-adults check stored in a model's spec\n"
              "  backfill-spec     fill a task's title, description and populations into an older run's spec.json")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    import importlib

    return importlib.import_module(commands[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
