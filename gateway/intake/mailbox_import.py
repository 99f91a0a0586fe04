"""``inlet import PATH``: an mbox file, a Maildir, a folder of .eml files, or one .eml
file, through the same intake and pipeline as SMTP.

Idempotent: each message is stored with the same dedup key as SMTP and IMAP use
(Message-ID, else a content hash), so importing twice adds nothing, and a
message that also arrived by SMTP is not imported again.
"""

from __future__ import annotations

import mailbox
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from gateway.core.errors import InletError
from gateway.intake.smtp import dedup_key
from gateway.intake.writer import InboundRecord, InboundWriter
from store.models import FAILED, IGNORED, PROCESSED, Inbound


def messages(path: Path) -> Iterator[tuple[str, bytes]]:
    """(where, raw bytes) of each message at ``path``; InletError when it is none of the known layouts."""
    if path.is_dir():
        if all((path / sub).is_dir() for sub in ("cur", "new", "tmp")):
            box = mailbox.Maildir(str(path), factory=None, create=False)
            for key in sorted(box.keys()):
                yield f"{path.name}/{key}", box.get_bytes(key)
            return
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".eml")
        if not files:
            raise InletError(f"{path}: no .eml files and not a Maildir (cur/, new/, tmp/)")
        for file in files:
            yield file.name, file.read_bytes()
        return
    if not path.is_file():
        raise InletError(f"{path}: no such file or folder")
    if path.suffix.lower() == ".eml":
        yield path.name, path.read_bytes()
        return
    with path.open("rb") as head:
        if not head.read(5) == b"From ":
            raise InletError(f"{path}: not an mbox file (it must start with a 'From ' line), nor an .eml file")
    box = mailbox.mbox(str(path), factory=None, create=False)
    try:
        for index, key in enumerate(box.keys()):
            yield f"{path.name}#{index + 1}", box.get_bytes(key)
    finally:
        box.close()


def import_path(path: Path, pipeline, *, progress=None, chunk: int = 50) -> Counter:
    """Store and process every message at ``path``; return counts by outcome.

    Outcomes: ``created`` (new incident), ``updated`` (update of an incident),
    ``ignored``, ``failed``, ``duplicate`` (imported or received before).
    Messages are stored ``chunk`` at a time (one commit) and processed as the worker does
    (:meth:`~gateway.pipeline.driver.Pipeline.run_batch`), in order.
    """
    items = list(messages(path))
    counts: Counter = Counter()
    writer = InboundWriter()
    writer.start()
    try:
        for start in range(0, len(items), chunk):
            tickets = [
                writer.submit(InboundRecord(source="import", raw=raw, dedup_key=dedup_key(raw), integration="import"))
                for _where, raw in items[start : start + chunk]
            ]
            fresh = []
            for ticket in tickets:
                accepted = ticket.result(30.0)
                if accepted.duplicate:
                    counts["duplicate"] += 1
                else:
                    fresh.append(accepted.inbound_id)
            counts.update(_outcomes(pipeline, fresh))
            if progress:
                progress(start + len(tickets), len(items))
    finally:
        writer.stop()
    return counts


def _outcomes(pipeline, inbound_ids: list[int]) -> Counter:
    pipeline.run_batch(inbound_ids)
    outcomes: Counter = Counter()
    rows = Inbound.select(Inbound.status, Inbound.decisions).where(Inbound.id.in_(inbound_ids))
    for row in rows:
        if row.status == PROCESSED:
            created = any(d.get("result") == "created" for d in row.decisions or ())
            outcomes["created" if created else "updated"] += 1
        else:
            outcomes[{IGNORED: "ignored", FAILED: "failed"}.get(row.status, "pending")] += 1
    return outcomes


def progress_bar(stream=None):
    """A progress callback printing ``[#####.....] 12/40`` on one line (only on a terminal)."""
    stream = stream or sys.stderr
    if not stream.isatty():
        return None

    def show(done: int, total: int) -> None:
        width = 30
        filled = width * done // max(total, 1)
        stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        if done == total:
            stream.write("\n")
        stream.flush()

    return show
