"""What the email parser needs to know about this Inlet installation."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EmailOptions:
    """What the email parser needs to know about this Inlet installation.

    ``own_addresses`` holds lowercase addresses (``inlet@example.org``) and
    domains (``example.org`` or ``@example.org``: every address at exactly
    that domain) that Inlet sends from or receives at.
    """

    ref_prefix: str = "INC"
    own_addresses: tuple[str, ...] = ()
    loop_token: str = ""
    message_id_secret: bytes = b""
    message_id_domain: str = "inlet.invalid"
    max_attachment_size: int = 25 * 1024 * 1024
    max_header_fields: int = 1000
    max_header_bytes: int = 256 * 1024
    max_mime_containers: int = 100
    max_mime_parts: int = 1000
