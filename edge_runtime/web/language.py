"""The page's language: ``?lang=`` (remembered in a cookie), else the cookie, else the browser's Accept-Language."""

from __future__ import annotations

from flask import request

from ..i18n import DEFAULT_LANGUAGE, languages

#: Cookie remembering the language chosen with the switch.
LANGUAGE_COOKIE = "cxr_lang"


def chosen_language() -> str | None:
    """The language asked for with ``?lang=`` in this request, if it is one we have."""
    choice = (request.args.get("lang") or "").strip().lower()
    return choice if choice in languages() else None


def request_language() -> str:
    """The language of this request's page or report."""
    choice = chosen_language()
    if choice:
        return choice
    cookie = (request.cookies.get(LANGUAGE_COOKIE) or "").strip().lower()
    if cookie in languages():
        return cookie
    return request.accept_languages.best_match(languages(), default=DEFAULT_LANGUAGE) or DEFAULT_LANGUAGE
