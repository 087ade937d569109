"""HTML pages: the screening page and the history of recent screenings (no inline script)."""

from __future__ import annotations

from flask import Blueprint, Response, render_template

from .api import history_label_arg, public_row
from .app import get_state
from .report import HEATMAP_NOTE, NOTICE, format_time

pages = Blueprint("pages", __name__)


@pages.app_context_processor
def _common() -> dict:
    return {"notice": NOTICE}


@pages.get("/")
def index() -> str:
    """Upload an image, choose the model, see the result."""
    state = get_state()
    registry = state.registry
    entries = list(registry.entries.values())
    tasks = [entry.spec.task for entry in entries]
    # Two models of one task (e.g. two input sizes) are told apart by their names.
    models = [(entry, entry.title if tasks.count(entry.spec.task) == 1 else f"{entry.title} - {entry.name}")
              for entry in entries]
    return render_template("index.html", models=models,
                           default_model=registry.default_name, heatmap_note=HEATMAP_NOTE,
                           camera=state.camera is not None)


@pages.get("/history")
def history() -> str:
    """Recent screenings with thumbnails, a label filter and CSV export."""
    state = get_state()
    label = history_label_arg()
    rows = [public_row(row) for row in state.log.recent(limit=state.config.history_limit, label=label)]
    for row in rows:
        row["time_text"] = format_time(row["time"])
    labels = sorted({lab for entry in state.registry.entries.values() for lab in entry.spec.labels})
    if label and label not in labels:
        labels.append(label)
    return render_template("history.html", rows=rows, labels=labels, label=label,
                           total=state.log.count())


@pages.get("/favicon.ico")
def favicon() -> Response:
    """No icon file: answer 204 so browsers stop asking."""
    return Response(status=204)
