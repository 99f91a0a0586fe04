"""Templates: one Jinja2 file per event type, rendered as plain text, Markdown and HTML.

``notifiers/templates/{event}.j2`` defines the blocks ``subject``, ``headline``,
``body`` and ``footer`` and extends ``layout`` — one of ``layout.txt``,
``layout.md``, ``layout.html`` — so every message carries reference, title,
priority, status, group and the link to the incident whatever the format.
HTML is rendered with autoescape on; in Markdown every value is escaped
(:func:`markdown_escape`) except links from the configuration. A folder named in
``[notifications] templates_dir`` is searched first: a file there with the
same name overrides the built-in one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import jinja2
from markupsafe import Markup

from notifiers import words

BUILTIN = Path(__file__).resolve().parent / "templates"
TEXT, MARKDOWN, HTML = "text", "markdown", "html"
_LAYOUTS = {TEXT: "layout.txt", MARKDOWN: "layout.md", HTML: "layout.html"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
# Characters that change how text reads without showing themselves (Trojan Source, CVE-2021-42574):
# bidi embeddings, overrides, isolates and marks (U+202A-202E, U+2066-2069, U+200E/200F, U+061C), and
# zero-width or blank-looking ones (U+200B-200D, U+2060-2064, U+FEFF, soft hyphen, Hangul fillers, tag
# characters). A reporter could make "invoice\u202egpj.exe" read "invoiceexe.jpg" or two names look
# alike. Inlet keeps the data as received and removes these wherever it shows or sends text.
_INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064"
    "\u2066-\u206f\u3164\ufeff\uffa0\U000e0000-\U000e007f]+"
)
RESTRICTED_TITLE = "Security report"


@dataclass(frozen=True)
class Rendered:
    """One message in every format; ``subject`` is one safe header line."""

    subject: str
    text: str
    markdown: str
    html: str

    def body(self, fmt: str) -> str:
        return {TEXT: self.text, MARKDOWN: self.markdown, HTML: self.html}[fmt]


def visible(value: str) -> str:
    """``value`` without bidi controls and zero-width characters (see _INVISIBLE); linear time."""
    return _INVISIBLE.sub("", value) if value else value


def visible_output(value):
    """Jinja ``finalize``: every ``{{ … }}`` string (escaped text or Markup alike) shown without them."""
    if not isinstance(value, str) or not _INVISIBLE.search(value):
        return value
    cleaned = _INVISIBLE.sub("", value)
    # Markup stays Markup: removing characters that are not markup cannot make markup.
    return Markup(cleaned) if isinstance(value, Markup) else cleaned  # noqa: S704


def header_safe(value: str, limit: int = 250) -> str:
    """One line: control characters (CR, LF, NUL, …) become spaces, runs of space collapse; no bidi controls."""
    return " ".join(_CONTROL.sub(" ", visible(value or "")).split())[:limit]


class Trusted(str):
    """A value from the configuration (links), written into Markdown as it is."""


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|#])")


def markdown_escape(value):
    """``{{ … }}`` output in Markdown: incident data cannot make links, emphasis, tables or HTML."""
    if isinstance(value, str) and not isinstance(value, Trusted):
        return _MARKDOWN_SPECIAL.sub(r"\\\1", visible(value))
    return value


class Renderer:
    """Renders templates from the override folder (if any), then the built-in ones."""

    def __init__(self, templates_dir: str = ""):
        folders = [str(Path(templates_dir))] if templates_dir else []
        loader = jinja2.FileSystemLoader([*folders, str(BUILTIN)])
        options = dict(loader=loader, trim_blocks=True, lstrip_blocks=True, undefined=jinja2.ChainableUndefined)
        # Every value shown in every format is plain words first, then goes through visible_output
        # (markdown_escape does it too) (notifiers/words.py: the filters the pages use too).
        self._text = jinja2.Environment(autoescape=False, **options)  # noqa: S701
        self._markdown = jinja2.Environment(autoescape=False, **options)  # noqa: S701
        self._html = jinja2.Environment(autoescape=True, **options)
        words.install(self._text, visible_output)
        words.install(self._markdown, markdown_escape)
        words.install(self._html, visible_output)

    def render(self, template: str, values: dict) -> Rendered:
        """Render ``{template}.j2`` with ``values``; raises jinja2.TemplateError on a broken template."""
        name = f"{template}.j2"
        outputs = {}
        for fmt, layout in _LAYOUTS.items():
            env = {TEXT: self._text, MARKDOWN: self._markdown, HTML: self._html}[fmt]
            outputs[fmt] = _tidy(env.get_template(name).render(values, layout=layout))
        tmpl = self._text.get_template(name)
        subject = "".join(tmpl.blocks["subject"](tmpl.new_context(dict(values, layout=_LAYOUTS[TEXT]))))
        return Rendered(
            subject=header_safe(subject), text=outputs[TEXT], markdown=outputs[MARKDOWN], html=outputs[HTML]
        )


def _tidy(text: str) -> str:
    """No runs of blank lines, no trailing space: templates stay readable, messages stay tidy."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out) + "\n"


def incident_values(incident, *, base_url: str, desk: str, audience: str, context: dict) -> dict:
    """What every template sees: the incident's fields, the link, the row's context.

    When ``context["restricted"]`` is true (security incidents told to anyone
    outside the security group) title, description and bodies are replaced by
    neutral text here, so no template can leak them.
    """
    values = dict(context)
    values.update(desk=desk, audience=audience, base_url=base_url.rstrip("/"))
    if incident is None:
        values.setdefault("ref", "")
        return values
    restricted = bool(context.get("restricted"))
    # Every mail to a reporter about a security incident names it the same neutral way (the body an
    # agent wrote for them stays); everyone else outside the security group gets neither.
    neutral = restricted or (incident.security and audience == "reporter")
    values.update(
        ref=incident.ref,
        title=RESTRICTED_TITLE if neutral else header_safe(incident.title, 500),
        description="" if restricted else incident.description,
        priority=incident.priority,
        status=words.label(incident.status),
        group=incident.group,
        category="" if restricted else incident.category,
        service="" if restricted else incident.service,
        assignee=incident.assignee.name if incident.assignee_id else "",
        major=incident.major,
        security=incident.security,
        link=Trusted(f"{base_url.rstrip('/')}/incidents/{incident.ref}"),
        restricted=restricted,
    )
    if restricted:
        values["body"] = ""
    return values
