"""The subject line: the incident ref it carries, and the title without reply/forward prefixes."""

from __future__ import annotations

import re

from parsers.email.text import _CONTROL_CHARS

# Every leading reply/forward prefix in one pass; possessive, so a failed try never backtracks (linear time).
_SUBJECT_PREFIXES = re.compile(
    r"^(?:\s*+(?:re|aw|antw|fwd?|fw|wg|sv|vs|tr|rif|r)\s*+(?:\[\d++\]|\(\d++\))?+\s*+[:：])++\s*+", re.IGNORECASE
)
_FORWARD_PREFIX = re.compile(r"^\s*(?:fwd?|fw|wg|tr)\s*[:：]", re.IGNORECASE)


# --------------------------------------------------------------------------- subject


def subject_ref(subject: str, prefix: str = "INC") -> str | None:
    """The incident ref in a subject (``[INC-42]`` preferred, else an ``INC-42`` token), upper-case."""
    if not prefix:
        return None
    escaped = re.escape(prefix)
    for pattern in (rf"\[\s*({escaped}-\d{{1,12}})\s*\]", rf"(?<![\w-])({escaped}-\d{{1,12}})(?![\w-])"):
        found = re.search(pattern, subject, re.IGNORECASE)
        if found:
            return found.group(1).upper()
    return None


def clean_title(subject: str, prefix: str = "INC") -> str:
    """The subject without reply/forward prefixes and the ``[INC-42]`` tag; "(no subject)" when empty."""
    title = " ".join(_CONTROL_CHARS.sub(" ", subject).split())
    if prefix:
        title = re.sub(rf"\[\s*{re.escape(prefix)}-\d{{1,12}}\s*\]", " ", title, flags=re.IGNORECASE)
    title = _SUBJECT_PREFIXES.sub("", " ".join(title.split()), count=1)
    return " ".join(title.split()) or "(no subject)"


# --------------------------------------------------------------------------- public entry points
