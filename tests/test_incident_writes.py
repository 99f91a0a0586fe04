"""Every change of an incident goes through the lifecycle (gateway/incidents/lifecycle.py), so every hook sees it.

The rule, checked on the syntax tree of every module of the application (gateway/, web/, notifiers/,
store/, parsers/) except the lifecycle itself:

- no write through the ``Incident`` model class: ``Incident.update/insert/insert_many/create/
  get_or_create/replace/delete/bulk_create/bulk_update/update_by_id/delete_by_id/set_by_id(...)``,
  nor ``Incident(...)`` (a row built to be saved);
- no assignment (``=``, ``+=``, ``setattr``) to a field of an incident: to a field only ``Incident``
  has, on any object, or to any field of ``Incident`` on an object whose name says it is an incident
  (``incident``, ``incidents[0]``, ``self.incident``);
- no ``save()`` or ``delete_instance()`` on an object whose name says it is an incident;
- no SQL text that writes the ``incident`` table (``UPDATE "incident"``, ``INSERT INTO incident``,
  ``DELETE FROM "incident"``);
- no use of a private member of the lifecycle (``lifecycle._event``, ``lc._lock``): what it does
  without its hooks is for itself alone.

The pipeline's apply steps create and change incidents through ``Lifecycle.create`` and its other
methods, so they need no exception; neither do the procedures and escalation (given to the lifecycle
and calling its public methods). Reading is free everywhere. Not checked: tests (they build rows to
set a scene) and bench/ (it measures raw INSERTs as the floor). A name-based check can be dodged by
naming an incident ``x``: it keeps honest code honest, it is no sandbox.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from store import models
from tests.conftest import ROOT

PACKAGES = ("gateway", "web", "notifiers", "store", "parsers")
LIFECYCLE = Path("gateway/incidents/lifecycle.py")
WRITE_METHODS = {
    "update",
    "insert",
    "insert_many",
    "insert_from",
    "create",
    "get_or_create",
    "replace",
    "replace_many",
    "delete",
    "bulk_create",
    "bulk_update",
    "update_by_id",
    "delete_by_id",
    "set_by_id",
}
INCIDENT_FIELDS = {f.name for f in models.Incident._meta.sorted_fields} | {
    f.column_name for f in models.Incident._meta.sorted_fields
}
OTHER_FIELDS = {
    name
    for model in models.BaseModel.__subclasses__()
    if model is not models.Incident
    for f in model._meta.sorted_fields
    for name in (f.name, f.column_name)
}
INCIDENT_ONLY_FIELDS = INCIDENT_FIELDS - OTHER_FIELDS
SQL_WRITE = re.compile(r'\b(UPDATE|INSERT\s+INTO|DELETE\s+FROM)\s+"?incident"?(\s|$|\()', re.IGNORECASE)


def _names_incident(node: ast.AST) -> bool:
    """Whether the expression's own name says it is an incident (``incident``, ``self.incident``, ``incidents[i]``)."""
    while isinstance(node, ast.Subscript):
        node = node.value
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
    return "incident" in name.lower() and name != "Incident"


def _writes_field(target: ast.AST) -> str | None:
    if not isinstance(target, ast.Attribute):
        return None
    if target.attr in INCIDENT_ONLY_FIELDS or (target.attr in INCIDENT_FIELDS and _names_incident(target.value)):
        return f"assigns {ast.unparse(target)}"
    return None


def incident_writes(source: str) -> list[tuple[int, str]]:
    """(line, what) for each write of an incident in this module's source, as the module doc defines it."""
    found = []
    for node in ast.walk(ast.parse(source)):
        what = None
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id == "Incident":
                what = "builds an Incident row"
            elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "Incident":
                if func.attr in WRITE_METHODS:
                    what = f"calls Incident.{func.attr}"
            elif isinstance(func, ast.Attribute) and func.attr in ("save", "delete_instance"):
                if _names_incident(func.value):
                    what = f"calls {ast.unparse(func)}"
            elif isinstance(func, ast.Name) and func.id == "setattr" and node.args and _names_incident(node.args[0]):
                what = f"calls setattr on {ast.unparse(node.args[0])}"
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for part in target.elts if isinstance(target, ast.Tuple) else [target]:
                    what = what or _writes_field(part)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL_WRITE.search(node.value):
            what = "writes the incident table in SQL"
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value.id if isinstance(node.value, ast.Name) else getattr(node.value, "attr", "")
            if "lifecycle" in owner.lower() or owner == "lc":
                what = f"uses the private {ast.unparse(node)}"
        if what:
            found.append((node.lineno, what))
    return found


def test_only_the_lifecycle_writes_incidents():
    modules = [path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))]
    assert any(path.relative_to(ROOT) == LIFECYCLE for path in modules)
    offences = [
        f"{path.relative_to(ROOT)}:{line}: {what}"
        for path in modules
        if path.relative_to(ROOT) != LIFECYCLE
        for line, what in incident_writes(path.read_text(encoding="utf-8"))
    ]
    assert offences == [], "incident changes outside the lifecycle (use its public methods):\n" + "\n".join(offences)


def test_the_check_sees_each_kind_of_write():
    """The check itself: each form the rule names is caught; reads and other models are not."""
    writes = {
        "Incident.update(assignee=user).where(Incident.id == incident.id).execute()": "calls Incident.update",
        "Incident.insert(title='x').execute()": "calls Incident.insert",
        "Incident.create(title='x')": "calls Incident.create",
        "Incident.delete().execute()": "calls Incident.delete",
        "Incident(title='x').save()": "builds an Incident row",
        "incident.assignee = user": "assigns incident.assignee",
        "change.incident.status = 'resolved'": "assigns change.incident.status",
        "incident.reopen_count += 1": "assigns incident.reopen_count",
        "row.status_page = 'resolved'": "assigns row.status_page",  # a field only Incident has
        "incident.save()": "calls incident.save",
        "setattr(incident, name, value)": "calls setattr on incident",
        'db.execute_sql(\'UPDATE "incident" SET "title" = %s\', [t])': "writes the incident table in SQL",
        "self.lifecycle._event(incident, 'changed', actor, 'public')": "uses the private self.lifecycle._event",
        "lc._lock(ref, 'assign')": "uses the private lc._lock",
    }
    for source, what in writes.items():
        assert [w for _, w in incident_writes(source)] == [what], source
    reads = [
        "Incident.select().where(Incident.status == 'new')",
        "Incident.first_where(ref=ref)",
        "incident = Incident.get_by_id(1)",
        "problem.status = 'closed'",  # another model's field of the same name
        "problem.save()",
        "lifecycle.assign(incident, 'allocation', assignee=user.name)",
        "db.execute_sql('SELECT * FROM \"incident\"')",
        "Event.update(data={}).where(Event.incident == incident).execute()",
        "self._event(problem, 'changed', actor)",  # another class's own private method
    ]
    for source in reads:
        assert incident_writes(source) == [], source
