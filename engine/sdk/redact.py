"""One redaction for everything the engine prints: URLs lose their secrets, known secrets become ``***``.

Stream keys reach the engine in URLs (`rtmp://host/live/KEY`, `https://cdn/live/KEY/index.m3u8`,
`rtmp://host/live?key=KEY`, `rtmp://user:password@host/live`) and as `${VAR}` values.  Three functions,
used wherever an error, event, metric or log line is made:

- `redact_url(url)`: scheme, host, port and the first path segment (the RTMP application) only;
  user info, any further path, the query and the fragment become ``***``;
- `url_secrets(url)`: the secret parts of one URL (user, password, later path segments, the query
  and its longer values), so that they are hidden even where they appear outside the URL (FFmpeg
  messages sometimes quote the stream name alone);
- `redact_text(text, secrets)`: every URL in free text passed through `redact_url`, then every
  secret replaced where it stands as a whole token; `redact_value` does the same for every string
  inside a msgpack-able value, keys included (keys that redact alike are kept apart: `***`, `***#2`).

A local path (no `scheme://`) keeps its folder: `/tmp/media/key.flv` -> `/tmp/media/***`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

__all__ = ["MASK", "SHORT_SECRET", "redact_secrets", "redact_text", "redact_url", "redact_value", "url_secrets"]

MASK = "***"

#: secrets shorter than this are not collected from URLs (`url_secrets`): a query value such as `x=1`
#: is no secret worth hiding everywhere
SHORT_SECRET = 6
#: a secret is replaced where it stands as a whole token: not inside a longer word or identifier, so
#: the stream key `stream` hides `live/stream` and `'stream'` but leaves `packets_sent_by_stream` (a
#: metric's name) whole; `OUT=x` does not turn "expected" into "e***pected"
_WORD = "A-Za-z0-9_"

#: a URL inside free text: scheme://, then anything up to white space or a quote
_URL_IN_TEXT = re.compile(r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")

#: ZeroMQ endpoints carry no secret and are printed as they are (`ipc:///run/.../control.sock`)
ENDPOINT_SCHEMES = ("ipc", "tcp", "inproc")


def redact_url(url: str) -> str:
    """`url` without secrets: scheme, host, port and the first path segment (the RTMP application).

    `rtmp://host/live/KEY` -> `rtmp://host/live/***`, `https://cdn/live/KEY/index.m3u8` ->
    `https://cdn/live/***`, `rtmp://u:p@host/live` -> `rtmp://***@host/live`; a local path keeps only
    its folder (`/media/x.flv` -> `/media/***`); anything unreadable becomes ``***``.
    """
    if "://" not in url:
        head, sep, _ = url.rpartition("/")
        return f"{head}{sep}{MASK}" if sep else MASK
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return MASK
    if not parts.scheme or not host:
        return MASK
    if ":" in host:
        host = f"[{host}]"
    userinfo = "@" in parts.netloc
    netloc = (f"{MASK}@" if userinfo else "") + host + (f":{port}" if port else "")
    segments = [s for s in parts.path.split("/") if s]
    path = f"/{segments[0]}" if segments else ""
    hidden = len(segments) > 1 or parts.query or parts.fragment
    return f"{parts.scheme}://{netloc}{path}" + (f"/{MASK}" if hidden else "")


def url_secrets(url: str) -> set[str]:
    """The parts of `url` that `redact_url` hides and that are worth hiding elsewhere too."""
    found: set[str] = set()
    if "://" not in url:
        return found
    try:
        parts = urlsplit(url)
    except ValueError:
        return {url}
    netloc = parts.netloc
    if "@" in netloc:
        userinfo = netloc.rpartition("@")[0]
        found.add(userinfo)
        found.update(userinfo.split(":", 1))
    segments = [s for s in parts.path.split("/") if s]
    if len(segments) > 1:
        found.add("/".join(segments[1:]))
        found.update(segments[1:])
    if parts.query:
        found.add(parts.query)
        found.update(value for _, value in parse_qsl(parts.query, keep_blank_values=True))
    if parts.fragment:
        found.add(parts.fragment)
    return {s for s in found if len(s) >= SHORT_SECRET}


def redact_secrets(text: str, secrets: Iterable[str]) -> str:
    """`text` with each secret replaced by ``***`` where it stands as a whole token (longest first)."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        if secret and secret in text:
            text = re.sub(rf"(?<![{_WORD}]){re.escape(secret)}(?![{_WORD}])", MASK, text)
    return text


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every URL redacted (`redact_url`) and every secret replaced by ``***``."""
    known = set(secrets)
    for m in _URL_IN_TEXT.finditer(text):
        if not _is_endpoint(m.group(0)):
            known |= url_secrets(m.group(0))
    text = _URL_IN_TEXT.sub(lambda m: m.group(0) if _is_endpoint(m.group(0)) else redact_url(m.group(0)), text)
    return redact_secrets(text, known)


def _is_endpoint(url: str) -> bool:
    return url.partition("://")[0].lower() in ENDPOINT_SCHEMES


def redact_value(value: Any, secrets: Iterable[str] = ()) -> Any:
    """`value` (a msgpack-able tree) with `redact_text` applied to every string, keys included; the
    secret parts of a URL found in one string are hidden in all the others too (an event that has the
    URL in one field and the bare stream name in another)."""
    known = set(secrets)
    for text in _strings(value):
        for m in _URL_IN_TEXT.finditer(text):
            if not _is_endpoint(m.group(0)):
                known |= url_secrets(m.group(0))
    return _apply(value, frozenset(known))


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


def _apply(value: Any, known: frozenset[str]) -> Any:
    if isinstance(value, str):
        return redact_text(value, known)
    if isinstance(value, dict):  # two keys that both redact to the same text both stay
        out: dict[Any, Any] = {}
        for k, v in value.items():
            base = _apply(k, known)
            if isinstance(base, list):  # a tuple key stays a (hashable) tuple
                base = tuple(base)
            key, n = base, 2
            while key in out:
                key, n = f"{base}#{n}", n + 1
            out[key] = _apply(v, known)
        return out
    if isinstance(value, list | tuple):
        return [_apply(v, known) for v in value]
    return value
