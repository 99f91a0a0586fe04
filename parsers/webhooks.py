"""The webhook formats Inlet understands, by name, and the one entry point to them.

Every parser is ``parse(payload: dict, options) -> list[Signal]`` and raises
``ParseError`` naming the field at fault; the HTTP layer answers that with a 400
whose JSON body carries the message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.core.errors import ParseError
from parsers import alertmanager, drill, generic, grafana, pagerduty, sns
from parsers.payload import require_body
from parsers.presets import PRESETS
from parsers.signal import Signal

Parser = Callable[[dict, Any], list[Signal]]

KINDS: dict[str, Parser] = {
    "alertmanager": alertmanager.parse,
    "grafana": grafana.parse,
    "pagerduty": pagerduty.parse,
    "generic": generic.parse,
    "drill": drill.parse,
    "sns": sns.parse,
    # the monitoring tools of parsers.presets: generic mappings, their options built by the integration
    **{name: generic.parse for name in PRESETS},
}


def parse_webhook(kind: str, payload: Any, options: Any = None) -> list[Signal]:
    """The Signals of one webhook request of format ``kind``, its body already JSON-decoded.

    Raises ParseError for an unknown kind, a body that is not a JSON object, or a
    payload the format's parser rejects. ``options`` goes to the parser as is
    (``generic.GenericOptions`` for ``generic`` and the presets; the others take none).
    """
    parser = KINDS.get(kind)
    if parser is None:
        raise ParseError(f"unknown webhook kind '{kind}'; expected one of {', '.join(KINDS)}")
    if options is None and kind in PRESETS:
        options = PRESETS[kind].options()
    return parser(require_body(payload), options)
