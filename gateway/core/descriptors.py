"""Open-file descriptors: the listeners may use most of them, never the last ones.

``inlet serve`` raises its soft ``RLIMIT_NOFILE`` to the hard limit at start, and
each listener caps its connections to a share of that limit less a reserve. So a
flood of connections is refused at the listener (421, or left in the listen
queue) while the store, the log files, IMAP and notifications still get the
descriptors they open (DESIGN.md §6).
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger("inlet.limits")

# Descriptors never given to listener sessions: the database, log, IMAP, outbox sends, pipes, and the
# connections a listener accepts in one go before it can refuse them (the SMTP listen backlog, 100).
RESERVE = 256
LISTENERS = 2  # SMTP and web share what is left


def raise_open_files_limit() -> int:
    """Raise the soft limit of open files to the hard limit (idempotent); return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65_536)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:  # e.g. a kernel cap under the hard limit: keep what we have
            log.warning("cannot raise the open files limit from %d to %d: %s", soft, target, exc)
    return soft if soft != resource.RLIM_INFINITY else 65_536


def listener_share(wanted: int, what: str) -> int:
    """The most connections one listener may hold: ``wanted``, or less when the open files
    limit (less the reserve) cannot hold every listener's connections."""
    limit = raise_open_files_limit()
    budget = max(limit - RESERVE, limit // 2) // LISTENERS
    if wanted > budget:
        log.warning(
            "%s: %d connections asked, %d allowed: the open files limit is %d and %d are kept for the store, "
            "the log and outgoing connections (raise the hard limit, e.g. LimitNOFILE=, to allow more)",
            what,
            wanted,
            budget,
            limit,
            RESERVE,
        )
        return max(1, budget)
    return wanted
