"""What every `inlet` command starts with: the configuration of ``--config``, the store, the lifecycle."""

from __future__ import annotations

import logging

from gateway.cli.log_repeats import limit_repeats
from gateway.config.loader import Config, default_config_path, load_config


def _load(args) -> Config:
    config = load_config(default_config_path(getattr(args, "config", None)))
    logging.getLogger().setLevel(config.inlet.log_level.upper())
    limit_repeats(config.inlet.log_repeat_window.total_seconds())
    return config


def _open_store(config: Config, *, require_schema: bool = True):
    from store.db import open_database
    from store.migrations import require_latest

    database = open_database(config)
    if require_schema:
        require_latest()
    return database


def _lifecycle(config: Config):
    from gateway.service import build_lifecycle

    return build_lifecycle(config)
