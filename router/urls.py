"""URLs as the router may write them: without the credentials, query string or fragment they may carry."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from router.redaction import redact


def safe_url(url: str) -> str:
    """``url`` without userinfo, query string or fragment, and with every secret of the config (a token
    in its path, ``.../services/${SLACK_TOKEN}``) shown as ``${NAME}``: for messages and logs."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port is not None else host
    except ValueError:
        return "<invalid url>"
    return redact(urlunsplit((parts.scheme, netloc, parts.path, "", "")))
