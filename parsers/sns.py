"""Amazon SNS HTTP(S) subscription messages -> Signals.

SNS posts one JSON object per message (``Content-Type: text/plain``): ``Type`` is
``Notification``, ``SubscriptionConfirmation`` or ``UnsubscribeConfirmation``. Its
signature is checked at the HTTP edge (gateway/intake/sns_signature.py) before anything is stored; this
parser only reads what the message says:

- a ``Notification`` whose ``Message`` is a CloudWatch alarm (a JSON object with
  ``AlarmName`` and ``NewStateValue``) is an alert: ``ALARM`` fires, ``OK`` resolves,
  ``INSUFFICIENT_DATA`` is ignored; the alarm's ARN is the dedup key, so the ``OK``
  resolves the incident the ``ALARM`` opened;
- any other ``Notification`` is one new signal titled by its ``Subject`` (else the first
  line of the message);
- the two confirmations hold no signal (the edge confirms a subscription).
"""

from __future__ import annotations

import json

from parsers.payload import get_str, invalid, require_body
from parsers.signal import FIRING, RESOLVED, Signal

SOURCE = "sns"
TYPES = ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation")
ALARM_STATES = {"ALARM": FIRING, "OK": RESOLVED}
_TITLE_MAX = 200

# The fields each message type signs, in the order of the string to sign (AWS: "Verifying the
# signatures of Amazon SNS messages"); Subject only when the message has one.
SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}


def message_type(payload: dict) -> str:
    """The message's ``Type``; ParseError when it is not one SNS sends."""
    kind = get_str(payload, "Type", "")
    if kind not in TYPES:
        raise invalid("Type", f"expected one of {', '.join(TYPES)}, got {kind!r}")
    return kind


def string_to_sign(payload: dict) -> bytes:
    """The bytes SNS signed: ``name\\nvalue\\n`` for each signed field present, in order."""
    lines = []
    for name in SIGNED_FIELDS[message_type(payload)]:
        value = get_str(payload, name, "")
        if value is None:
            if name == "Subject":
                continue
            raise invalid(name, "required")
        lines.append(f"{name}\n{value}\n")
    return "".join(lines).encode("utf-8")


def parse(payload: dict, options: object | None = None) -> list[Signal]:
    """The Signal of one SNS message (none for a confirmation). ``options`` is unused."""
    require_body(payload)
    if message_type(payload) != "Notification":
        return []
    message = get_str(payload, "Message", "") or ""
    topic = get_str(payload, "TopicArn", "") or ""
    alarm = _alarm(message)
    if alarm is not None:
        return _alarm_signals(alarm, topic)
    subject = (get_str(payload, "Subject", "") or "").strip()
    first_line = next((line.strip() for line in message.splitlines() if line.strip()), "")
    title = (subject or first_line or "SNS notification")[:_TITLE_MAX]
    return [Signal(source=SOURCE, title=title, text=message, labels={"topic": topic})]


def _alarm(message: str) -> dict | None:
    if not message.startswith("{"):
        return None
    try:
        value = json.loads(message)
    except ValueError:
        return None
    if isinstance(value, dict) and isinstance(value.get("AlarmName"), str) and "NewStateValue" in value:
        return value
    return None


def _alarm_signals(alarm: dict, topic: str) -> list[Signal]:
    state = get_str(alarm, "NewStateValue", "Message")
    status = ALARM_STATES.get(state or "")
    if status is None:
        return []  # INSUFFICIENT_DATA: neither a problem nor a recovery
    name = get_str(alarm, "AlarmName", "Message") or ""
    labels = {"topic": topic, "alarm": name}
    region = alarm.get("Region")
    if isinstance(region, str):
        labels["region"] = region
    reason = alarm.get("NewStateReason")
    description = alarm.get("AlarmDescription")
    text = "\n\n".join(part for part in (description, reason) if isinstance(part, str) and part)
    arn = alarm.get("AlarmArn")
    return [
        Signal(
            source=SOURCE,
            title=name[:_TITLE_MAX],
            text=text,
            fingerprint=arn if isinstance(arn, str) and arn else name,
            status=status,
            labels=labels,
        )
    ]
