"""Text from files, made safe to show on a terminal.

Layer names, blob names and file names come from files people receive. A name holding an ANSI
escape can clear the screen or print a fake result, and bidi or line-separator characters can
reorder what is shown, so every such character is written as a visible escape (``\\x1b``,
``\\u202e``) instead. Lone surrogates (undecodable bytes in file names) are escaped too, so
printing never fails on them.
"""

from __future__ import annotations

import re

# C0 and C1 controls, DEL, zero-width and bidi formatting characters, line and paragraph
# separators, the byte-order mark, and lone surrogates.
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ud800-\udfff]"
)
_UNSAFE_KEEP_LINES = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ud800-\udfff]"
)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every control, formatting and separator character escaped: one line."""
    return _UNSAFE.sub(_escape, text)


def printable_lines(text: str) -> str:
    """Like ``printable`` but keeps newlines and tabs (tables, reports)."""
    return _UNSAFE_KEEP_LINES.sub(_escape, text)
