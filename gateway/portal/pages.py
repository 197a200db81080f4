"""Pages: templates/portal/*.html.j2 rendered in the visitor's language.

Texts live in catalogs (templates/portal/i18n/<lang>.json); a template asks
for ``t("key")``. The language is the one the visitor picked (?lang=, kept in
a cookie), else the best of their Accept-Language, else English.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from gateway.language import direction
from gateway.render import PACKAGE_TEMPLATES

LANGUAGES = ("en", "vi", "fa")


@cache
def catalog(language: str) -> Mapping[str, str]:
    """The texts of one language."""
    path = PACKAGE_TEMPLATES / "portal" / "i18n" / f"{language}.json"
    data: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
    return data


def lookup(language: str, key: str) -> str:
    """A catalog text in ``language``, else English, else the key itself."""
    return catalog(language).get(key) or catalog("en").get(key) or key


def pick_language(
    requested: str | None, cookie: str | None, accept: str, ticket: str | None = None
) -> str:
    """?lang=, then the cookie, then the ticket's language (the one the customer
    wrote in), then Accept-Language (by q), then English."""
    for candidate in (requested, cookie, ticket):
        if candidate in LANGUAGES:
            return str(candidate)
    ranked = []
    for item in accept.split(","):
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        ranked.append((quality, tag.strip().split("-")[0].lower()))
    for _, tag in sorted(ranked, key=lambda r: -r[0]):
        if tag in LANGUAGES:
            return tag
    return "en"


class Pages:
    """A jinja2 environment over templates/portal/."""

    def __init__(self, templates_dir: Path | None = None) -> None:
        folders = [str(p) for p in (templates_dir, PACKAGE_TEMPLATES) if p is not None]
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(folders),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def render(self, name: str, language: str, context: Mapping[str, Any]) -> str:
        """Render ``portal/<name>.html.j2``."""

        def t(key: str, **values: Any) -> str:
            text = lookup(language, key)
            return text.format_map(_Lenient(values)) if values else text

        values = {
            "lang": language,
            "dir": direction(language),
            "t": t,
            "notice": None,
            "error": None,
            "notice_args": {},
            "error_args": {},
            **context,
        }
        return self.env.get_template(f"portal/{name}.html.j2").render(values)


class _Lenient(dict[str, Any]):
    """format_map values where a missing placeholder stays as written."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"
