"""Incremental stop-string detection over sampled token ids, one detector per request.

Each new token is detokenized incrementally (the prefix/read-offset scheme of vLLM's and TGI's
detokenizers: decode only the last few ids, emit the text they add once it is complete UTF-8),
and only the new text plus the last ``len(longest stop) - 1`` characters before it is searched.
The work per token is constant, whatever the length of the segment so far.
"""

from __future__ import annotations

from typing import Sequence


class StopStringDetector:
    """Says at which sampled token one of ``stops`` first appears in the decoded text."""

    def __init__(self, tokenizer, stops: Sequence[str]):
        if not stops or not all(stops):
            raise ValueError(f"stop strings must be non-empty, got {list(stops)!r}")
        self._tokenizer = tokenizer
        self._stops = tuple(stops)
        self._keep = max(len(s) for s in stops) - 1  # characters a stop string can straddle
        self._ids: list[int] = []
        self._prefix = 0  # ids before this were decoded as context only
        self._read = 0  # ids before this have had their text emitted
        self._tail = ""

    def push(self, token_id: int) -> bool:
        """Add one sampled token; True when a stop string is complete with it."""
        self._ids.append(token_id)
        decode = lambda ids: self._tokenizer.decode(ids, skip_special_tokens=False)  # noqa: E731
        before = decode(self._ids[self._prefix : self._read])
        after = decode(self._ids[self._prefix :])
        if len(after) <= len(before) or after.endswith("\ufffd"):  # no complete character yet
            return False
        window = self._tail + after[len(before):]
        self._prefix, self._read = self._read, len(self._ids)
        self._tail = window[max(0, len(window) - self._keep):]
        return any(stop in window for stop in self._stops)
