"""Text from the network made safe for a terminal.

A pulled stream's SEI payloads, a server's error strings and event data are written by someone else;
printed raw, their control characters (ESC sequences, carriage returns, bidi overrides) could rewrite
the screen, hide lines or fake output.  `safe_text` escapes every non-printable character.
"""

from __future__ import annotations

from typing import Any

__all__ = ["safe_text"]


def _escape(ch: str) -> str:
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def safe_text(value: Any) -> str:
    """`str(value)` with every non-printable character (C0/C1 controls, ESC, CR, LF, bidi and other
    format characters, line/paragraph separators) written as a `\\xNN` / `\\uNNNN` escape."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)
