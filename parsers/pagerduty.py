"""PagerDuty Events API v2 (``POST /v2/enqueue`` shape) -> one Signal.

Fields read:

- ``event_action`` (required): ``trigger`` -> status ``firing``, ``acknowledge``
  -> ``acknowledged``, ``resolve`` -> ``resolved``;
- ``dedup_key`` (at most 255 characters) -> ``fingerprint``: required for
  ``acknowledge`` and ``resolve``; on a ``trigger`` without one, a new key is
  generated (uuid4 hex) and ``details["dedup_key_generated"]`` is True, so the
  caller can return it to the client as PagerDuty does;
- ``routing_key``: optional here, kept in ``details["routing_key"]`` for the HTTP
  layer, which may authenticate by it;
- ``payload`` (required for ``trigger``): ``summary`` (required, at most 1024
  characters) -> title; ``source`` (required); ``severity`` (required:
  ``critical``, ``error``, ``warning`` or ``info``); ``timestamp`` (ISO 8601) ->
  ``occurred_at``; ``component``, ``group``, ``class`` (and ``source``) ->
  labels; ``custom_details`` (any JSON) -> text and details. For ``acknowledge``
  and ``resolve`` the payload is optional and read the same way when present,
  without required fields;
- ``links[]`` (``href``, ``text``) and ``client_url`` -> links; ``images[]``,
  ``client`` and the link texts are kept in details.

Unknown keys are ignored.
"""

from __future__ import annotations

import json
import uuid

from parsers.payload import (
    get_list,
    get_object,
    get_str,
    get_time,
    http_links,
    invalid,
    item,
    one_of,
    require_body,
    wrong_type,
)
from parsers.signal import ACKNOWLEDGED, FIRING, RESOLVED, Signal

SOURCE = "pagerduty"
SEVERITIES = ("critical", "error", "warning", "info")
MAX_SUMMARY = 1024
MAX_DEDUP_KEY = 255

_STATUS = {"trigger": FIRING, "acknowledge": ACKNOWLEDGED, "resolve": RESOLVED}


def parse(payload: dict, options: object | None = None) -> list[Signal]:
    """The one Signal of a PagerDuty Events API v2 event.

    Raises ParseError naming the field when a required field is missing or a
    field has the wrong type. ``options`` is accepted for a uniform interface and unused.
    """
    require_body(payload)
    action = get_str(payload, "event_action", "", required=True)
    action = one_of(action, tuple(_STATUS), "event_action")
    triggering = action == "trigger"
    routing_key = get_str(payload, "routing_key", "")
    dedup_key = get_str(payload, "dedup_key", "", max_length=MAX_DEDUP_KEY)
    generated = False
    if dedup_key is None:
        if not triggering:
            raise invalid("dedup_key", f"required for event_action '{action}'")
        dedup_key, generated = uuid.uuid4().hex, True

    event = get_object(payload, "payload", "", required=triggering) or {}
    summary = get_str(event, "summary", "payload", required=triggering, max_length=MAX_SUMMARY)
    origin = get_str(event, "source", "payload", required=triggering)
    severity = get_str(event, "severity", "payload", required=triggering)
    if severity is not None:
        severity = one_of(severity, SEVERITIES, "payload.severity")
    occurred_at = get_time(event, "timestamp", "payload")
    labels = {"source": origin}
    for key in ("component", "group", "class"):
        labels[key] = get_str(event, key, "payload")
    custom_details = event.get("custom_details")

    links, link_texts = _links(payload)
    images = _images(payload)
    client_url = get_str(payload, "client_url", "")

    return [
        Signal(
            source=SOURCE,
            title=summary or f"{action.capitalize()} {dedup_key}",
            text=_text(summary, custom_details),
            fingerprint=dedup_key,
            status=_STATUS[action],
            severity=severity,
            labels={key: value for key, value in labels.items() if value is not None},
            links=http_links(*links, client_url),
            occurred_at=occurred_at,
            details={
                "routing_key": routing_key,
                "event_action": action,
                "dedup_key_generated": generated,
                "client": get_str(payload, "client", ""),
                "client_url": client_url,
                "custom_details": custom_details,
                "links": link_texts,
                "images": images,
            },
        )
    ]


def _links(payload: dict) -> tuple[list[str], list[dict]]:
    hrefs: list[str] = []
    described: list[dict] = []
    for index, link in enumerate(get_list(payload, "links", "") or []):
        path = item("links", index)
        if not isinstance(link, dict):
            raise wrong_type(path, "an object", link)
        href = get_str(link, "href", path, required=True)
        hrefs.append(href)
        described.append({"href": href, "text": get_str(link, "text", path)})
    return hrefs, described


def _images(payload: dict) -> list[dict]:
    images = []
    for index, image in enumerate(get_list(payload, "images", "") or []):
        path = item("images", index)
        if not isinstance(image, dict):
            raise wrong_type(path, "an object", image)
        images.append(
            {
                "src": get_str(image, "src", path, required=True),
                "href": get_str(image, "href", path),
                "alt": get_str(image, "alt", path),
            }
        )
    return images


def _text(summary: str | None, custom_details: object) -> str:
    if custom_details is None:
        return summary or ""
    if isinstance(custom_details, str):
        rendered = custom_details
    elif isinstance(custom_details, dict):
        rendered = "\n".join(f"{key}: {_scalar(value)}" for key, value in custom_details.items())
    else:
        rendered = _scalar(custom_details)
    return "\n\n".join(part for part in (summary, rendered) if part)


def _scalar(value: object) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)
