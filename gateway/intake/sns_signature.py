"""Amazon SNS: the message signature, checked before a message is stored, and subscription confirmation.

AWS signs every message it posts with the key of an X.509 certificate it serves at the
message's ``SigningCertURL``. A message passes only when (in this order, each a refusal):
its ``TopicArn`` is one of the integration's ``sns_topic_arns`` (the signature proves that
Amazon sent a message, not that it is *your* topic: anyone can have AWS post to any URL);
its ``SigningCertURL`` is ``https://sns.<region>.amazonaws.com[.cn]/….pem`` — the host
pattern AWS documents, checked on the parsed URL (no user info, no port), *before* any
fetch, so a forged URL costs Inlet nothing and never makes it call out; the certificate is
valid now; and the RSA signature (``SignatureVersion`` 1: SHA1, 2: SHA256) over the
string to sign (parsers/sns.py) verifies.

Certificates are fetched once per URL and kept (up to 32); the fetch is the one outbound
HTTP call of this module besides confirming a subscription (the ``SubscribeURL`` must
match the same host pattern). ``sns_fetch = false`` turns both off: certificates then
come only from ``sns_certificate_dir`` (a file named like the URL's last path segment), and
a subscription is confirmed by an admin visiting the URL Inlet logs.

Tests serve a certificate on loopback: ``INLET_SNS_TEST_ORIGIN`` (e.g.
``http://127.0.0.1:8099``) adds that one origin to the allowed ones, and only when it is a
loopback address — it cannot point Inlet at another host. Verification is never off.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import os
import re
import threading
from collections import OrderedDict
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from gateway.config.integrations import Denied, Integration, fail_closed
from gateway.core.errors import ParseError
from parsers.sns import message_type, string_to_sign

log = logging.getLogger("inlet.hooks")

TEST_ORIGIN_ENV = "INLET_SNS_TEST_ORIGIN"
_SNS_HOST = re.compile(r"sns\.[a-z0-9-]{1,40}\.amazonaws\.com(?:\.cn)?")
_HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}
MAX_CERTIFICATE = 16 * 1024
FETCH_TIMEOUT = 5.0
_CACHE_SIZE = 32


def _test_origin() -> str | None:
    origin = os.environ.get(TEST_ORIGIN_ENV, "").rstrip("/")
    if not origin:
        return None
    parts = urlsplit(origin)
    try:
        loopback = ipaddress.ip_address(parts.hostname or "").is_loopback
    except ValueError:
        loopback = False
    if parts.scheme != "http" or not loopback or parts.path or parts.query or parts.username:
        log.warning("%s=%r ignored: it must be an http://<loopback address>:<port> origin", TEST_ORIGIN_ENV, origin)
        return None
    return origin


def amazon_url(url: object, *, certificate: bool) -> str | None:
    """Why ``url`` is not an SNS URL Inlet may fetch, or None when it is (a certificate ends in .pem)."""
    if not isinstance(url, str) or not url.isascii():
        return "not an https URL of Amazon SNS"
    parts = urlsplit(url)
    test = _test_origin()
    if test and f"{parts.scheme}://{parts.netloc}" == test:
        return None
    if parts.scheme != "https" or parts.username or parts.password or parts.port is not None:
        return "not an https URL of Amazon SNS"
    if not _SNS_HOST.fullmatch(parts.hostname or ""):
        return f"host {parts.hostname!r} is not an Amazon SNS host (sns.<region>.amazonaws.com)"
    if certificate and not parts.path.endswith(".pem"):
        return "not a certificate (.pem) URL"
    if not certificate and not parts.query.startswith("Action=ConfirmSubscription"):
        return "not a subscription confirmation URL"
    return None


class Certificates:
    """Signing certificates by URL: fetched from SNS once, or read from a folder; a small LRU."""

    def __init__(self):
        self._keys: OrderedDict[str, x509.Certificate] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, integration: Integration, url: str) -> x509.Certificate:
        with self._lock:
            cached = self._keys.get(url)
        if cached is not None:
            return cached
        pem = _read(integration, url) if integration.sns_certificate_dir else None
        if pem is None:
            if not integration.sns_fetch:
                raise ValueError(f"no certificate {Path(urlsplit(url).path).name!r} in sns_certificate_dir")
            pem = _fetch(url)
        cert = x509.load_pem_x509_certificate(pem)
        with self._lock:
            self._keys[url] = cert
            while len(self._keys) > _CACHE_SIZE:
                self._keys.popitem(last=False)
        return cert


def _read(integration: Integration, url: str) -> bytes | None:
    name = Path(urlsplit(url).path).name  # a name only: never a path from outside
    path = Path(integration.sns_certificate_dir) / name
    if not name.endswith(".pem") or not path.is_file():
        return None
    return path.read_bytes()[:MAX_CERTIFICATE]


def _fetch(url: str) -> bytes:
    with requests.get(url, timeout=FETCH_TIMEOUT, allow_redirects=False, stream=True) as response:
        if response.status_code != 200:
            raise ValueError(f"fetching the signing certificate answered {response.status_code}")
        body = response.raw.read(MAX_CERTIFICATE + 1, decode_content=True)
    if len(body) > MAX_CERTIFICATE:
        raise ValueError("the signing certificate is larger than it can be")
    return body


CERTIFICATES = Certificates()


@fail_closed
def verify(integration: Integration, payload, now: datetime) -> Denied | None:
    """None when ``payload`` is a message of one of the integration's topics, signed by Amazon SNS.

    Fails closed: an exception while checking is a 403.
    """
    if not isinstance(payload, dict):
        return Denied(401, "not an Amazon SNS message")
    try:
        message_type(payload)
        signed = string_to_sign(payload)
    except ParseError as exc:
        return Denied(401, f"not an Amazon SNS message: {exc}")
    if payload.get("TopicArn") not in integration.sns_topic_arns:
        return Denied(403, "topic not taken by this integration (sns_topic_arns)")
    url = payload.get("SigningCertURL")
    why = amazon_url(url, certificate=True)
    if why is not None:
        return Denied(403, f"SigningCertURL: {why}")
    algorithm = _HASHES.get(str(payload.get("SignatureVersion", "")))
    if algorithm is None:
        return Denied(403, "SignatureVersion: expected 1 or 2")
    try:
        signature = base64.b64decode(str(payload.get("Signature", "")), validate=True)
    except (binascii.Error, ValueError):
        return Denied(403, "Signature: not base64")
    try:
        cert = CERTIFICATES.get(integration, url)
    except (requests.RequestException, ValueError) as exc:
        log.warning("hooks/%s: no SNS signing certificate from %s: %s", integration.name, url, exc)
        return Denied(503, "the signing certificate cannot be had now")
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        return Denied(403, "the signing certificate is not valid now")
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        return Denied(403, "the signing certificate has no RSA key")
    try:
        key.verify(signature, signed, padding.PKCS1v15(), algorithm())
    except InvalidSignature:
        return Denied(403, "wrong signature")
    return None


def confirm_subscription(integration: Integration, payload: dict) -> str | None:
    """Confirm a verified ``SubscriptionConfirmation``: None when done, else why not (for a 503)."""
    url = payload.get("SubscribeURL")
    why = amazon_url(url, certificate=False)
    if why is not None:
        return f"SubscribeURL: {why}"
    if not integration.sns_fetch:
        log.warning("hooks/%s: confirm the SNS subscription by visiting %s (sns_fetch = false)", integration.name, url)
        return None
    try:
        with requests.get(url, timeout=FETCH_TIMEOUT, allow_redirects=False, stream=True) as response:
            if response.status_code != 200:
                return f"Amazon SNS answered {response.status_code} to the confirmation"
    except requests.RequestException as exc:
        return f"the confirmation could not reach Amazon SNS: {exc}"
    log.info("hooks/%s: SNS subscription to %s confirmed", integration.name, payload.get("TopicArn"))
    return None
