"""Incident references are unique and increasing under concurrency."""

from __future__ import annotations

import multiprocessing
import threading

from gateway.incidents.lifecycle import Lifecycle
from store.db import db, open_database
from store.models import Incident


def _create_many(url: str, threads: int, per_thread: int) -> list[str]:
    """Open the database like a separate `inlet` process and create incidents from several threads."""
    from gateway.config.loader import config_from_dict
    from tests.conftest import base_config_dict

    open_database(config_from_dict(base_config_dict(url)))
    lc = Lifecycle()
    refs, errors = [], []

    def work():
        try:
            with db.connection_context():
                for i in range(per_thread):
                    refs.append(lc.create(title=f"load {i}", actor="test").ref)
        except Exception as exc:  # reported to the parent, which fails the test
            errors.append(repr(exc))

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise RuntimeError(errors[0])
    return refs


def test_references_are_sequential(store):
    lc = Lifecycle(ref_prefix="OPS")
    refs = [lc.create(title=f"t{i}", actor="test").ref for i in range(5)]
    assert refs == [f"OPS-{n}" for n in range(1, 6)]


def test_threads_get_distinct_references(store):
    if not db.is_closed():
        db.close()
    refs = _create_many(store.url, threads=4, per_thread=25)
    assert len(set(refs)) == 100
    with db.connection_context():
        numbers = sorted(i.number for i in Incident.select())
    assert numbers == list(range(1, 101))


def test_two_processes_four_threads_on_postgres(pg_store):
    store = pg_store
    if not db.is_closed():
        db.close()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        results = pool.starmap(_create_many, [(store.url, 4, 200), (store.url, 4, 200)])
    refs = [r for chunk in results for r in chunk]
    assert len(refs) == 1600
    assert len(set(refs)) == 1600
    with db.connection_context():
        numbers = sorted(i.number for i in Incident.select())
    assert numbers == list(range(1, 1601))
