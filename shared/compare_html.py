"""``compare.html``: the comparison of ``retape compare`` for people, one self-contained page
(no script, no network): a summary table, then a table per stream, from the template
``shared/templates/compare.html.j2``.  It shows what ``compare.json`` holds, nothing more."""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

_ENV = Environment(
    loader=PackageLoader("shared", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(report: dict[str, Any]) -> str:
    """The page for a comparison made by :func:`shared.compare.compare`."""
    return _ENV.get_template("compare.html.j2").render(report=report)
