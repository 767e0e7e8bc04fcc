"""Credentials in an ``openai:`` URL: taken out to authenticate, never shown.

``http://USER:PASSWORD@HOST/v1`` authenticates with HTTP Basic auth and
``http://KEY@HOST/v1`` (no colon) sends ``KEY`` as ``Authorization: Bearer``,
in place of ``$OPENAI_API_KEY``. Either way the URL a server object keeps,
and every message, log line and file that names it, reads ``http://***@HOST/v1``
(:func:`redact`); so do query parameters whose name says key, token, secret
or password.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

SECRET_PARAMETER = re.compile(r"(?i)([?&][^=&#\s]*(?:key|token|secret|passw(?:or)?d)[^=&#\s]*=)[^&#\s]*")
USERINFO = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://)[^/@\s?#]*@")
MASK = "***"


@dataclass(frozen=True)
class Credentials:
    """What a URL's user part says: Basic auth (user and password) or an API key."""

    user: str | None = None
    password: str | None = None
    api_key: str | None = None

    def __repr__(self) -> str:  # never the secret itself, whatever prints this object
        kind = "basic" if self.user is not None else "api key" if self.api_key else "none"
        return f"Credentials({kind})"


def redact(text: str) -> str:
    """``text`` with every URL's user part, and secret-looking query values, replaced by ``***``."""
    if not isinstance(text, str) or ("@" not in text and "=" not in text):
        return text
    return SECRET_PARAMETER.sub(rf"\g<1>{MASK}", USERINFO.sub(rf"\g<1>{MASK}@", text))


def split_credentials(url: str) -> tuple[str, Credentials | None]:
    """(the URL without its user part, the credentials it held or None)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    clean = urlunsplit(parts._replace(netloc=host))
    user, colon, password = userinfo.partition(":")
    if colon:
        return clean, Credentials(user=unquote(user), password=unquote(password))
    return clean, Credentials(api_key=unquote(user)) if user else None
