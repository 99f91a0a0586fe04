"""The OpenAPI 3.1 document of ``/api/v1``, built from the same tables the API uses.

tests/test_api.py checks that every route is documented, and that every
answer the API gives validates against the schema it declares.
"""

from __future__ import annotations

from gateway.incidents.lifecycle import FIX_TYPES, LINK_KINDS
from gateway.problem_records import EDITABLE as PROBLEM_EDITABLE
from gateway.problem_records import TRANSITIONS as PROBLEM_TRANSITIONS
from gateway.reports.scope import FILTERS as REPORT_FILTERS
from store import search
from store.documents import INCIDENT_KEYS
from store.models import LEVELS, PROBLEM_STATUSES
from web import actions, queue
from web.actions import DECLARABLE

# Text fields that must not be blank: a character that is neither space nor NUL (which the API strips);
# "space" as Python's str.strip() has it, which also removes \x1c-\x1f and \x85 (ECMA's \s does not).
NOT_BLANK = r"[^\s\u0000\u001c-\u001f\u0085]"
_NULLABLE_STRING = {"type": ["string", "null"]}
_TIME = {"type": ["string", "null"], "format": "date-time"}

INCIDENT_SCHEMA = {
    "type": "object",
    "required": list(INCIDENT_KEYS),
    "properties": {
        "ref": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "string"},
        "priority": {"type": "string"},
        "impact": {"type": "string", "enum": list(LEVELS)},
        "urgency": {"type": "string", "enum": list(LEVELS)},
        "category": _NULLABLE_STRING,
        "service": _NULLABLE_STRING,
        "group": _NULLABLE_STRING,
        "assignee": _NULLABLE_STRING,
        "reporter": _NULLABLE_STRING,
        "source": {"type": "string"},
        "opened_at": {"type": "string", "format": "date-time"},
        "acknowledged_at": _TIME,
        "resolved_at": _TIME,
        "closed_at": _TIME,
        "cancelled_at": _TIME,
        "respond_by": _TIME,
        "resolve_by": _TIME,
        "signal_count": {"type": "integer"},
        "description": {"type": "string"},
        "procedure": {"type": "string"},
        "major": {"type": "boolean"},
        "security": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "reopen_count": {"type": "integer"},
        "reassignment_count": {"type": "integer"},
        "parent": _NULLABLE_STRING,
        "resolution": {"type": "object"},
        "review": {
            "type": ["object", "null"],
            "description": "The post-incident review: cause, actions (what, owner, due), by, at",
        },
    },
}
EVENT_SCHEMA = {
    "type": "object",
    "required": ["at", "type", "actor", "visibility", "body"],
    "properties": {
        "at": {"type": "string", "format": "date-time"},
        "type": {"type": "string"},
        "actor": {"type": "string"},
        "visibility": {"type": "string", "enum": ["public", "reporter", "internal"]},
        "body": {"type": "string"},
        "field": {"type": "string"},
        "old": _NULLABLE_STRING,
        "new": _NULLABLE_STRING,
    },
}
PROBLEM_KEYS = (
    "ref", "title", "description", "status", "owner", "workaround", "root_cause", "cause_code", "service",
    "security", "created_by", "created_at", "updated_at", "resolved_at", "closed_at",
)  # fmt: skip
PROBLEM_SCHEMA = {
    "type": "object",
    "required": list(PROBLEM_KEYS),
    "properties": {
        "ref": {"type": "string"},
        "title": {"type": "string"},
        "description": {"type": "string"},
        "status": {"type": "string", "enum": list(PROBLEM_STATUSES)},
        "owner": _NULLABLE_STRING,
        "workaround": {"type": "string"},
        "root_cause": {"type": "string"},
        "cause_code": _NULLABLE_STRING,
        "service": _NULLABLE_STRING,
        "security": {"type": "boolean"},
        "created_by": {"type": "string"},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
        "resolved_at": _TIME,
        "closed_at": _TIME,
        "incident_count": {"type": "integer", "description": "Linked incidents you may see (lists only)"},
        "incidents": {
            "type": "array",
            "description": "The linked incidents you may see, with their post-incident reviews",
            "items": {
                "type": "object",
                "required": ["ref", "title", "status", "priority", "opened_at", "review"],
                "properties": {
                    "ref": {"type": "string"},
                    "title": {"type": "string"},
                    "status": {"type": "string"},
                    "priority": {"type": "string"},
                    "service": _NULLABLE_STRING,
                    "cause_code": _NULLABLE_STRING,
                    "opened_at": {"type": "string", "format": "date-time"},
                    "resolved_at": _TIME,
                    "review": {"type": ["object", "null"]},
                },
            },
        },
        "restricted_incidents": {"type": "integer", "description": "Linked incidents you may not see"},
        "actions": {
            "type": "array",
            "description": "The actions of those incidents' post-incident reviews",
            "items": {
                "type": "object",
                "required": ["incident", "what", "owner"],
                "properties": {
                    "incident": {"type": "string"},
                    "what": {"type": "string"},
                    "owner": {"type": "string"},
                    "due": _NULLABLE_STRING,
                },
            },
        },
    },
}
PROBLEM_EVENT_SCHEMA = {
    "type": "object",
    "required": ["at", "type", "actor", "field", "old", "new", "body"],
    "properties": {
        "at": {"type": "string", "format": "date-time"},
        "type": {"type": "string"},
        "actor": {"type": "string"},
        "field": {"type": "string"},
        "old": _NULLABLE_STRING,
        "new": _NULLABLE_STRING,
        "body": {"type": "string"},
    },
}

_COUNT = {"type": "integer", "minimum": 0}
_MOMENT = r"^(now|[0-9]{1,4}[hdw]|[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9:.]+([+-][0-9:]+|Z)?)?)$"
_RATE = {"type": ["number", "null"], "minimum": 0, "maximum": 1}
_SECONDS = {"type": ["number", "null"]}
_ROWS = {"type": "array", "items": {"type": "object"}}
_STATS = {
    "type": "object",
    "required": ["count", "mean", "median", "p90"],
    "properties": {"count": _COUNT, "mean": _SECONDS, "median": _SECONDS, "p90": _SECONDS},
}
REPORT_SCHEMA = {
    "type": "object",
    "description": "Durations in seconds, rates from 0 to 1 (null when nothing was due); see gateway/reports/",
    "required": [
        "period", "filters", "totals", "by", "mtta", "mttr", "sla", "backlog", "daily", "weekly", "rates",
        "recurring", "major_updates",
    ],
    "properties": {
        "period": {
            "type": "object",
            "required": ["since", "until", "tz"],
            "properties": {
                "since": {"type": "string", "format": "date-time"},
                "until": {"type": "string", "format": "date-time"},
                "tz": {"type": "string"},
            },
        },
        "filters": {"type": "object", "additionalProperties": {"type": "string"}},
        "security_included": {"type": "boolean"},
        "totals": {
            "type": "object",
            "required": ["opened", "resolved", "closed", "major", "security", "major_share", "security_share"],
            "properties": {
                "opened": _COUNT, "resolved": _COUNT, "closed": _COUNT, "major": _COUNT, "security": _COUNT,
                "major_share": _RATE, "security_share": _RATE,
            },
        },
        "by": {"type": "object", "additionalProperties": _ROWS},
        "mtta": _STATS,
        "mttr": _STATS,
        "sla": {
            "type": "object",
            "required": ["response_due", "response_breached", "response_rate", "resolution_due",
                         "resolution_breached", "resolution_rate", "by_group", "by_priority"],
            "properties": {
                "response_due": _COUNT, "response_breached": _COUNT, "response_rate": _RATE,
                "resolution_due": _COUNT, "resolution_breached": _COUNT, "resolution_rate": _RATE,
                "by_group": _ROWS, "by_priority": _ROWS,
            },
        },
        "backlog": {
            "type": "object",
            "required": ["open", "age_median", "age_p90", "buckets"],
            "properties": {"open": _COUNT, "age_median": _SECONDS, "age_p90": _SECONDS, "buckets": _ROWS},
        },
        "daily": _ROWS,
        "weekly": _ROWS,
        "rates": {"type": "object"},
        "recurring": {
            "type": "object",
            "required": ["causes", "fingerprints", "senders", "services"],
            "properties": {"causes": _ROWS, "fingerprints": _ROWS, "senders": _ROWS, "services": _ROWS},
        },
        "major_updates": {
            "type": "object",
            "required": ["interval", "due", "on_time", "compliance"],
            "properties": {"interval": _COUNT, "due": _COUNT, "on_time": _COUNT, "compliance": _RATE},
        },
    },
}  # fmt: skip
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}


_TIME_OR_NULL = {"type": ["string", "null"], "format": "date-time"}
HEARTBEAT_SCHEMA = {
    "type": "object",
    "required": [
        "name", "state", "interval_seconds", "grace_seconds", "last_beat_at", "next_due_at", "expires_at",
        "expired_at", "beats", "group", "priority", "history",
    ],
    "properties": {
        "name": {"type": "string"},
        "state": {"type": "string", "enum": ["waiting", "ok", "late", "expired"]},
        "interval_seconds": {"type": "integer"},
        "grace_seconds": {"type": "integer"},
        "last_beat_at": _TIME_OR_NULL,
        "next_due_at": {"type": "string", "format": "date-time"},
        "expires_at": {"type": "string", "format": "date-time"},
        "expired_at": _TIME_OR_NULL,
        "beats": {"type": "integer"},
        "group": {"type": "string"},
        "priority": {"type": "string"},
        "history": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["ref", "title", "status", "opened_at", "resolved_at"],
                "properties": {
                    "ref": {"type": "string"},
                    "title": {"type": "string"},
                    "status": {"type": "string"},
                    "opened_at": {"type": "string", "format": "date-time"},
                    "resolved_at": _TIME_OR_NULL,
                },
            },
        },
    },
}  # fmt: skip


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict:
    text = {
        400: "Invalid input",
        401: "Missing or wrong API token",
        403: "Your role may not do this",
        404: "No such incident or problem (or not visible to you)",
        409: "Not allowed from the incident's current state",
        422: "The assignee may not work this incident (a viewer, disabled, or not in its group)",
    }
    return {str(c): _json(_ref("Error"), text[c]) for c in codes}


def _ref_param() -> dict:
    return {"name": "ref", "in": "path", "required": True, "schema": {"type": "string"}, "example": "INC-1"}


def openapi_document(action_names: list[str], groups: list[str]) -> dict:
    """The document for the actions this lifecycle offers and the configured groups."""
    filters = [
        {"name": "status", "in": "query", "schema": {"type": "string", "enum": list(queue.STATUS_CHOICES)}},
        {"name": "priority", "in": "query", "schema": {"type": "string"}},
        {"name": "group", "in": "query", "schema": {"type": "string"}},
        {"name": "category", "in": "query", "schema": {"type": "string"}},
        {"name": "assignee", "in": "query", "schema": {"type": "string"}},
        {"name": "source", "in": "query", "schema": {"type": "string"}},
        {
            "name": "q",
            "in": "query",
            "schema": {"type": "string", "maxLength": search.MAX_LENGTH},
            "description": "Full-text search over ref, title, body, updates, reporter address and labels: words in "
            'any order (each a prefix), "exact phrases", from:ADDRESS|DOMAIN, group:NAME, status:STATUS|open|any, '
            "label:KEY=VALUE. With q, status defaults to any and sort to relevance (the best `limit` matches, one "
            "page). Longer than maxLength, or an unknown status: 400.",
        },
        {"name": "view", "in": "query", "schema": {"type": "string", "enum": list(queue.VIEWS)}},
        {"name": "sort", "in": "query", "schema": {"type": "string", "enum": list(queue.SORTS)}},
        {
            "name": "after",
            "in": "query",
            "schema": {"type": "string", "pattern": f"^{queue.CURSOR.pattern}$"},
            "description": "The `next` of the last page",
        },
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": queue.MAX_PAGE}},
    ]
    action_paths = {
        f"/api/v1/incidents/{{ref}}/actions/{name}": _action_operation(name, groups) for name in action_names
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Inlet API", "version": "1"},
        "components": {
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Incident": INCIDENT_SCHEMA,
                "Event": EVENT_SCHEMA,
                "Problem": PROBLEM_SCHEMA,
                "ProblemEvent": PROBLEM_EVENT_SCHEMA,
                "Error": ERROR_SCHEMA,
                "Report": REPORT_SCHEMA,
                "Heartbeat": HEARTBEAT_SCHEMA,
            },
        },
        "security": [{"token": []}],
        "paths": {
            "/api/v1/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "security": [],
                    "responses": {"200": _json({"type": "object"}, "This document")},
                }
            },
            "/api/v1/incidents": {
                "get": {
                    "operationId": "listIncidents",
                    "parameters": filters,
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["incidents", "next"],
                                "properties": {
                                    "incidents": {"type": "array", "items": _ref("Incident")},
                                    "next": _NULLABLE_STRING,
                                },
                            },
                            "One page of incidents; pass `next` as `after` for the following page",
                        ),
                        **_errors(400, 401),
                    },
                },
                "post": {
                    "operationId": "createIncident",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["title"],
                                    "properties": {
                                        "title": {"type": "string", "pattern": NOT_BLANK},
                                        "description": {"type": "string"},
                                        "reporter_email": {"type": "string"},
                                        "reporter_name": {"type": "string"},
                                        "category": {"type": "string"},
                                        "service": {"type": "string"},
                                        "group": {"type": "string", "enum": [*groups, ""]},
                                        "impact": {"type": "string", "enum": list(LEVELS)},
                                        "urgency": {"type": "string", "enum": list(LEVELS)},
                                    },
                                }
                            }
                        },
                    },
                    "responses": {"201": _json(_ref("Incident"), "The new incident"), **_errors(400, 401, 403)},
                },
            },
            "/api/v1/incidents/{ref}": {
                "get": {
                    "operationId": "getIncident",
                    "parameters": [_ref_param()],
                    "responses": {"200": _json(_ref("Incident"), "The incident"), **_errors(401, 404)},
                }
            },
            "/api/v1/incidents/{ref}/timeline": {
                "get": {
                    "operationId": "getTimeline",
                    "parameters": [_ref_param()],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["ref", "events"],
                                "properties": {
                                    "ref": {"type": "string"},
                                    "events": {"type": "array", "items": _ref("Event")},
                                },
                            },
                            "Every event, oldest first",
                        ),
                        **_errors(401, 404),
                    },
                }
            },
            "/api/v1/incidents/{ref}/notes": {
                "post": {
                    "operationId": "addNote",
                    "parameters": [_ref_param()],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["body"],
                                    "properties": {
                                        "body": {"type": "string", "pattern": NOT_BLANK},
                                        "public": {
                                            "type": "boolean",
                                            "description": "A published status update (stakeholders, status page)",
                                        },
                                    },
                                }
                            }
                        },
                    },
                    "responses": {"201": _json(_ref("Event"), "The note"), **_errors(400, 401, 403, 404, 409)},
                }
            },
            "/api/v1/reports": {
                "get": {
                    "operationId": "getReport",
                    "summary": "Metrics of a period (agents and admins; security incidents only for who may see them)",
                    "parameters": [
                        {
                            "name": "since",
                            "in": "query",
                            "schema": {"type": "string", "pattern": _MOMENT},
                            "description": "30d, 12h, 2w, a date or an ISO time (default 30d)",
                        },
                        {
                            "name": "until",
                            "in": "query",
                            "schema": {"type": "string", "pattern": _MOMENT},
                            "description": "As since; default now",
                        },
                        {"name": "tz", "in": "query", "schema": {"type": "string"}, "description": "Days and weeks"},
                        *({"name": name, "in": "query", "schema": {"type": "string"}} for name in REPORT_FILTERS),
                    ],
                    "responses": {"200": _json(_ref("Report"), "The report"), **_errors(400, 401, 403)},
                }
            },
            "/api/v1/heartbeats": {
                "get": {
                    "operationId": "listHeartbeats",
                    "summary": "Every heartbeat: state, last beat, next due, the incidents its silences opened",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["heartbeats"],
                                "properties": {"heartbeats": {"type": "array", "items": _ref("Heartbeat")}},
                            },
                            "The heartbeats, in the order of the configuration",
                        ),
                        **_errors(401, 403),
                    },
                }
            },
            **action_paths,
            **_ONCALL_PATHS,
            **_problem_paths(),
        },
    }


def _problem_paths() -> dict:
    """The problem records of gateway/problem_records.py."""
    ref = {"name": "ref", "in": "path", "required": True, "schema": {"type": "string"}, "example": "PRB-1"}
    incident = {"name": "incident", "in": "path", "required": True, "schema": {"type": "string"}, "example": "INC-1"}
    text = {"type": "string"}
    fields = {name: {"type": "string", "maxLength": {"title": 500, "cause_code": 64, "service": 100}.get(name, 20000)}
              for name in PROBLEM_EDITABLE}  # fmt: skip
    fields["owner"] = {"type": "string", "description": "A user name, or empty for none"}

    def body(schema: dict) -> dict:
        return {"required": True, "content": {"application/json": {"schema": schema}}}

    one = _json(_ref("Problem"), "The problem")
    return {
        "/api/v1/problems": {
            "get": {
                "operationId": "listProblems",
                "parameters": [
                    {"name": "status", "in": "query", "schema": {"type": "string", "enum": list(PROBLEM_STATUSES)}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["problems"],
                            "properties": {"problems": {"type": "array", "items": _ref("Problem")}},
                        },
                        "The problems you may see, most recently changed first",
                    ),
                    **_errors(400, 401),
                },
            },
            "post": {
                "operationId": "createProblem",
                "summary": "Create a problem, or with `incident` make one from that incident (and link it)",
                "requestBody": body(
                    {
                        "type": "object",
                        "properties": {**fields, "incident": {"type": "string", "maxLength": 32}},
                        "anyOf": [
                            {"required": ["title"], "properties": {"title": {"pattern": NOT_BLANK}}},
                            {"required": ["incident"]},
                        ],
                    }
                ),
                "responses": {"201": _json(_ref("Problem"), "The new problem"), **_errors(400, 401, 403, 404, 409)},
            },
        },
        "/api/v1/problems/{ref}": {
            "get": {"operationId": "getProblem", "parameters": [ref], "responses": {"200": one, **_errors(401, 404)}},
            "patch": {
                "operationId": "updateProblem",
                "parameters": [ref],
                "requestBody": body(
                    {"type": "object", "properties": fields, "anyOf": [{"required": [name]} for name in fields]}
                ),
                "responses": {"200": one, **_errors(400, 401, 403, 404, 409)},
            },
        },
        "/api/v1/problems/{ref}/status": {
            "post": {
                "operationId": "setProblemStatus",
                "summary": "open -> known_error (needs root cause and workaround) -> resolved (needs root cause) "
                "-> closed; back to open with a reason",
                "parameters": [ref],
                "requestBody": body(
                    {
                        "type": "object",
                        "required": ["status"],
                        "properties": {"status": {"type": "string", "enum": list(PROBLEM_TRANSITIONS)}, "reason": text},
                    }
                ),
                "responses": {"200": one, **_errors(400, 401, 403, 404, 409)},
            }
        },
        "/api/v1/problems/{ref}/incidents": {
            "post": {
                "operationId": "linkProblemIncident",
                "parameters": [ref],
                "requestBody": body(
                    {
                        "type": "object",
                        "required": ["incident"],
                        "properties": {"incident": {"type": "string", "maxLength": 32, "pattern": NOT_BLANK}},
                    }
                ),
                "responses": {
                    "201": _json(_ref("Problem"), "The problem with the incident linked"),
                    **_errors(400, 401, 403, 404, 409),
                },
            }
        },
        "/api/v1/problems/{ref}/incidents/{incident}": {
            "delete": {
                "operationId": "unlinkProblemIncident",
                "parameters": [ref, incident],
                "responses": {"200": one, **_errors(401, 403, 404, 409)},
            }
        },
        "/api/v1/problems/{ref}/timeline": {
            "get": {
                "operationId": "getProblemTimeline",
                "parameters": [ref],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["ref", "events"],
                            "properties": {
                                "ref": {"type": "string"},
                                "events": {"type": "array", "items": _ref("ProblemEvent")},
                            },
                        },
                        "Every change of the problem, oldest first",
                    ),
                    **_errors(401, 404),
                },
            }
        },
    }


# On call (gateway/schedules.py): now/next per group or schedule, and overrides.
_NAME_PARAM = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}, "example": "network"}
_OVERRIDE_SCHEMA = {
    "type": "object",
    "required": ["id", "schedule", "user", "starts", "ends", "reason", "created_by", "created_at"],
    "properties": {
        "id": {"type": "integer"},
        "schedule": {"type": "string"},
        "user": {"type": "string"},
        "starts": {"type": "string", "format": "date-time"},
        "ends": {"type": "string", "format": "date-time"},
        "reason": {"type": "string"},
        "created_by": {"type": "string"},
        "created_at": {"type": "string", "format": "date-time"},
    },
}
_ONCALL_PATHS = {
    "/api/v1/oncall/{name}": {
        "get": {
            "operationId": "getOnCall",
            "parameters": [
                _NAME_PARAM,
                {"name": "at", "in": "query", "schema": {"type": "string"}, "description": "ISO 8601 (default: now)"},
            ],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["schedule", "group", "timezone", "at", "now", "next", "overrides"],
                        "properties": {
                            "schedule": {"type": "string"},
                            "group": {"type": "string"},
                            "timezone": {"type": "string"},
                            "at": {"type": "string", "format": "date-time"},
                            "now": {"type": ["object", "null"]},
                            "next": {"type": ["object", "null"]},
                            "overrides": {"type": "array", "items": _OVERRIDE_SCHEMA},
                        },
                    },
                    "Who is on call at `at`, who is next and from when, the overrides not yet over",
                ),
                **_errors(400, 401, 404),
            },
        }
    },
    "/api/v1/oncall/{name}/overrides": {
        "post": {
            "operationId": "addOnCallOverride",
            "parameters": [_NAME_PARAM],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["user", "starts", "ends"],
                            "properties": {
                                "user": {"type": "string", "pattern": NOT_BLANK},
                                "starts": {"type": "string", "pattern": NOT_BLANK},
                                "ends": {"type": "string", "pattern": NOT_BLANK},
                                "reason": {"type": "string"},
                            },
                        }
                    }
                },
            },
            "responses": {"201": _json(_OVERRIDE_SCHEMA, "The override"), **_errors(400, 401, 403, 404)},
        }
    },
    "/api/v1/oncall/{name}/overrides/{override_id}": {
        "delete": {
            "operationId": "removeOnCallOverride",
            "parameters": [
                _NAME_PARAM,
                {"name": "override_id", "in": "path", "required": True, "schema": {"type": "integer"}},
            ],
            "responses": {"204": {"description": "Removed"}, **_errors(401, 403, 404)},
        }
    },
}


# Field limits as web/actions.py applies them; text that must not be blank has a non-space character.
_LIMITS = {"code": 64, "cause": 64, "other": 32, "title": 500, "category": 500, "service": 500}
_ANY_OF = {"assign": ("group", "assignee"), "update": ("title", "category", "service", "impact", "urgency")}


def _field_schema(action: str, field: str, kind: str, required: bool, groups: list[str]) -> dict:
    if kind == "array":
        item = {
            "type": "object",
            "properties": {"what": {"type": "string"}, "owner": {"type": "string"}, "due": {"type": "string"}},
        }
        return {"type": "array", "items": item}
    if kind == "boolean":
        return {"type": "boolean"}
    schema: dict = {"type": "string", "maxLength": _LIMITS.get(field, 20000)}
    if required or (action, field) in (("update", "title"), ("assign", "assignee")):
        schema["pattern"] = NOT_BLANK
    enums = {
        "fix": list(FIX_TYPES),
        "impact": list(LEVELS),
        "urgency": list(LEVELS),
        "group": [*groups, ""] if action != "assign" else list(groups),
        "kind": list(LINK_KINDS) if action == "link" else ["functional", "hierarchical"],
        "procedure": list(DECLARABLE),
    }
    if field in enums:
        schema = {"type": "string", "enum": enums[field]}
    return schema


def _action_operation(name: str, groups: list[str]) -> dict:
    """One operation per action: its body differs from action to action."""
    action = actions.ACTIONS[name]
    properties = {f: _field_schema(name, f, kind, req, groups) for f, kind, req in action.fields}
    required = [f for f, _kind, req in action.fields if req]
    body: dict = {"type": "object", "properties": properties}
    if required:
        body["required"] = required
    if name in _ANY_OF:
        body["anyOf"] = [{"required": [f]} for f in _ANY_OF[name]]
    answer = (
        {"201": _json(_ref("Event"), "The note, reply or public update")}
        if action.records
        else {"200": _json(_ref("Incident"), "The incident after the action")}
    )
    return {
        "post": {
            "operationId": f"action_{name}",
            "summary": action.title,
            "parameters": [_ref_param()],
            "requestBody": {
                "required": bool(required or name in _ANY_OF),
                "content": {"application/json": {"schema": body}},
            },
            "responses": {
                **answer,
                **_errors(400, 401, 403, 404, 409, *((422,) if name in ("assign", "take") else ())),
            },
        }
    }
