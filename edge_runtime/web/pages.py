"""HTML pages: the screening page and the history of screenings, in the visitor's language (no inline script)."""

from __future__ import annotations

from flask import Blueprint, Response, render_template, request, url_for

from ..errors import ApiError
from ..i18n import languages, task_title, translate, translator
from .api import history_label_arg, history_reference_arg, public_row
from .language import LANGUAGE_COOKIE, chosen_language, request_language
from .state import get_state

pages = Blueprint("pages", __name__)

#: Strings the page's script shows (sent in a data attribute: the CSP allows no inline script).
SCRIPT_STRINGS = ("status.screening", "error.title", "error.refused", "error.network", "result.at_or_above",
                  "result.below", "result.score_line", "result.rule", "result.not_saved", "result.show_heatmap",
                  "result.hide_heatmap", "result.overlay", "result.overlay_normal", "heatmap.note",
                  "heatmap.note_normal")


def _language_url(code: str) -> str:
    args = {k: v for k, v in request.args.items() if k != "lang"}
    endpoint = request.endpoint if request.endpoint in ("pages.index", "pages.history") else "pages.index"
    return url_for(endpoint, **args, lang=code)


@pages.app_context_processor
def _common() -> dict:
    language = request_language()
    return {"notice": translate(language, "notice"), "t": translator(language), "lang": language,
            "languages": [(code, translate(code, "language.name")) for code in languages()],
            "language_url": _language_url}


@pages.after_app_request
def _remember_language(response: Response) -> Response:
    choice = chosen_language()
    if choice:
        response.set_cookie(LANGUAGE_COOKIE, choice, max_age=365 * 24 * 3600, samesite="Lax", httponly=True)
    return response


@pages.get("/")
def index() -> str:
    """Upload an image, choose the model, see the result."""
    state = get_state()
    registry = state.registry
    entries = list(registry.entries.values())
    tasks = [entry.spec.task for entry in entries]
    language = request_language()
    titles = [task_title(language, entry.spec.task, entry.title) for entry in entries]
    # Two models of one task (e.g. two input sizes) are told apart by their names.
    models = [(entry, title if tasks.count(entry.spec.task) == 1 else f"{title} - {entry.name}")
              for entry, title in zip(entries, titles)]
    t = translator(language)
    return render_template("index.html", models=models, default_model=registry.default_name,
                           camera=state.camera is not None, reference=state.config.patient_reference,
                           strings={key: t(key) for key in SCRIPT_STRINGS})


def _page_arg() -> int:
    raw = (request.args.get("page") or "1").strip()
    if not raw.isdigit() or int(raw) < 1:
        raise ApiError(400, "invalid_parameter", "page must be a whole number from 1")
    return int(raw)


@pages.get("/history")
def history() -> str:
    """Screenings with thumbnails, a label filter, a reference search, paging and CSV export."""
    state = get_state()
    language = request_language()
    label, reference = history_label_arg(), history_reference_arg()
    page, size = _page_arg(), state.config.history_limit
    offset = (page - 1) * size
    rows = [public_row(row, language)
            for row in state.log.recent(limit=size, label=label, offset=offset, reference=reference)]
    matching = state.log.count(label, reference=reference)
    labels = sorted({lab for entry in state.registry.entries.values() for lab in entry.spec.labels}
                    | set(state.log.labels()))
    if label:
        # The filter matches any case: show the known spelling as chosen.
        label = next((known for known in labels if known.lower() == label.lower()), label)
        if label not in labels:
            labels.append(label)
    filters = {k: v for k, v in (("label", label), ("reference", reference)) if v}
    newer = url_for("pages.history", **filters, page=page - 1) if page > 1 else None
    older = url_for("pages.history", **filters, page=page + 1) if offset + len(rows) < matching else None
    csv_url = url_for("api.history_csv", **filters)
    return render_template("history.html", rows=rows, labels=labels, label=label, reference=reference,
                           references=state.config.patient_reference, total=state.log.count(), matching=matching,
                           first=offset + 1 if rows else 0, last=offset + len(rows), newer=newer, older=older,
                           csv_url=csv_url)


@pages.get("/favicon.ico")
def favicon() -> Response:
    """No icon file: answer 204 so browsers stop asking."""
    return Response(status=204)
