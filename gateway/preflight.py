"""Mistakes that explain themselves before they cost anything: what `inlet check` and `inlet serve` look at
beyond the file's syntax.

:func:`review` gives `inlet check` its refusals (a configuration that would lose mail) and warnings
(something that will not work as the file suggests); :func:`ports_in_use` tells `inlet serve` that
another process (most often a running Inlet) already listens where it would.
"""

from __future__ import annotations

import errno
import socket

from gateway.config.mail_settings import match_address

RELAY_TIMEOUT = 3.0  # seconds: `inlet check` waits this long for the relay to answer


def review(config, *, reach_relay: bool = True) -> tuple[list[str], list[str]]:
    """(refusals, warnings) for ``config``: a refusal makes `inlet check` fail."""
    refusals, warnings = [], []
    section = config.notifications
    if section.enabled and config.smtp.enabled and match_address(config, section.from_address) is None:
        if config.address:
            known = ", ".join(a.address for a in config.address)
            refusals.append(
                f"[notifications] from_address {section.from_address!r} is not an [[address]] (they are: {known}): "
                "replies and bounces to it would be refused with 550 and lost"
            )
        else:  # no mail intake configured yet: nothing is accepted, say so without failing the check
            warnings.append("no [[address]]: the SMTP intake accepts no mail, and replies to Inlet's mail are refused")
    if section.enabled and reach_relay:
        problem = relay_problem(config)
        if problem:
            warnings.append(
                f"the SMTP relay {section.smtp_host}:{section.smtp_port} cannot be reached ({problem}): mail to "
                "reporters waits in the outbox; set [notifications] smtp_host and smtp_port to your relay"
            )
    without = [g.name for g in config.group if not g.managers]
    if without:
        warnings.append(
            f"group{'s' if len(without) > 1 else ''} {', '.join(without)} ha{'ve' if len(without) > 1 else 's'} no "
            "managers: escalating to management (hierarchical) pages nobody; set [[group]] managers"
        )
    return refusals, warnings


def relay_problem(config) -> str:
    """Why the reporters' SMTP relay cannot be reached ('' when it answers a connection)."""
    section = config.notifications
    try:
        with socket.create_connection((section.smtp_host, section.smtp_port), timeout=RELAY_TIMEOUT):
            return ""
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def listening_ports(config, roles) -> list[tuple[str, int]]:
    """The (host, port) pairs `inlet serve` with ``roles`` listens on (fixed ports only)."""
    ports = []
    if "web" in roles and config.web.port:
        ports.append((config.web.host, config.web.port))
    if "smtp" in roles and config.smtp.enabled and config.smtp.port:
        ports.append((config.smtp.host, config.smtp.port))
    return ports


def ports_in_use(config, roles) -> list[int]:
    """The ports of :func:`listening_ports` that something already listens on.

    Binds without SO_REUSEPORT, so a running Inlet's web processes (which share their port with it)
    count as in use too.
    """
    taken = []
    for host, port in listening_ports(config, roles):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a TIME_WAIT left by a stop is no owner
            try:
                probe.bind((host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    taken.append(port)
    return taken
