"""Inlet: a self-hosted incident intake gateway."""

__version__ = "0.1.0"
