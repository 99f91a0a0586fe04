"""[procedures]: which categories make an incident major, security or low-impact, and the procedures' timings.

Pure configuration (no store, no lifecycle): :func:`procedure_for` is the one rule that turns a category
and flags into a procedure, read by the lifecycle (gateway/incidents/lifecycle.py) and the allocate step;
the effects of each procedure live in gateway/incidents/procedures.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from gateway.config.schema import KeyProblem, setting

PROCEDURES = ("major", "security", "standard", "low-impact")


@dataclass(frozen=True)
class ProceduresSection:
    categories: list[str] = setting(
        factory=list, help="Known categories; when given, rules and the lists below may name only these."
    )
    major_categories: list[str] = setting(factory=list, help="Categories that make an incident major.")
    security_categories: list[str] = setting(factory=list, help="Categories that make an incident a security one.")
    low_impact_categories: list[str] = setting(
        factory=list, help="Categories handled as low-impact (auto-closed after the resolved window)."
    )
    auto_close_after: timedelta = setting(timedelta(days=5), help="Resolved window after which low-impact closes.")
    major_page: list[str] = setting(
        factory=list, help="Extra targets paged at once for a major incident (besides the policy's contacts)."
    )
    major_reminder_interval: timedelta = setting(
        timedelta(minutes=30), help="How often to remind the group to post an update on an open major incident."
    )


def procedure_for(config, *, category: str, major: bool, security: bool) -> tuple[str, bool, bool]:
    """(procedure, major, security) for a category and flags: flags and category lists make major/security."""
    p = config.procedures
    major = bool(major or (category and category in p.major_categories))
    security = bool(security or (category and category in p.security_categories))
    if major:
        return "major", major, security
    if security:
        return "security", major, security
    return ("low-impact" if category and category in p.low_impact_categories else "standard"), major, security


def check_procedures(config) -> None:
    """Cross-references: categories named by rules and lists must be known (when categories are given)."""
    p = config.procedures
    if not p.categories:
        return
    known = set(p.categories)
    for key in ("major_categories", "security_categories", "low_impact_categories"):
        for i, name in enumerate(getattr(p, key)):
            if name not in known:
                raise KeyProblem(("procedures", f"{key}[{i}]"), f"unknown category {name!r}: not in 'categories'")
    for r in config.rule:
        if r.category and r.category not in known:
            raise KeyProblem((f"[[rule]] {r.name!r}", "category"), f"unknown category {r.category!r}")
