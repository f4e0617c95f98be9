"""Turning generated token pieces into streamed text: UTF-8 reassembly and stop strings.

A token's bytes may end in the middle of a UTF-8 character, and a stop string may arrive
split over several tokens. ``TextStream`` keeps back exactly what cannot be emitted yet, so
a stop string is never sent to the client, not even in part.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence


class StopFilter:
    """Holds back text that may be the start of a stop string; finds the earliest stop."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self._held = ""

    def push(self, text: str) -> tuple[str, bool]:
        """Add text; return (what is safe to emit, whether a stop string was reached)."""
        if not self.stops:
            return text, False
        buf = self._held + text
        cut = -1
        for stop in self.stops:
            at = buf.find(stop)
            if at >= 0 and (cut < 0 or at < cut):
                cut = at
        if cut >= 0:
            self._held = ""
            return buf[:cut], True
        keep = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(buf)), keep, -1):
                if buf.endswith(stop[:n]):
                    keep = n
                    break
        self._held = buf[len(buf) - keep :] if keep else ""
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        """The text held back, for when generation ends without reaching a stop string."""
        held, self._held = self._held, ""
        return held


class TextStream:
    """Token pieces (bytes) in, safe text out."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = StopFilter(stops)

    def push(self, piece: bytes) -> tuple[str, bool]:
        """Add one token's bytes; return (text to emit now, whether a stop string was reached)."""
        text = self._utf8.decode(piece)
        if not text:
            return "", False
        return self._stops.push(text)

    def flush(self) -> str:
        """Everything still held back (an incomplete character is replaced by U+FFFD)."""
        tail = self._utf8.decode(b"", final=True)
        text, stopped = self._stops.push(tail) if tail else ("", False)
        return text if stopped else text + self._stops.flush()
