"""KV of segments that stopped for a tool call, kept until their trajectory comes back.

A trajectory that stops at the tool's stop string comes back, after the call, with a prompt that
extends what it had: its previous prompt, the tokens it sampled, then the observation. When it
stops, its KV (all but the last sampled token, which was never fed to the model) is copied out of
its slot; when it comes back, only the new tokens go through the model. vLLM's prefix caching
does the same on GPU; here it saves re-prefilling the whole context of every returning
trajectory.

Entries are used once, dropped when the weights change (a stamp of the parameters' in-place
version counters: ``load_state_dict`` and optimizer steps bump them) and evicted oldest first
beyond ``capacity``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

KEY_TOKENS = 8  # an entry is found by its length and last tokens, then checked in full


@dataclass(eq=False)  # found by identity: its tensors have no truth value
class ParkedSequence:
    """A stopped sequence's ids and KV: per layer ``(keys, values)`` ``[heads, columns, dim]``
    and the columns' mask (1 = a real token)."""

    ids: list[int]
    kv: list[tuple[torch.Tensor, torch.Tensor]]
    mask: torch.Tensor

    @property
    def key(self) -> tuple:
        return len(self.ids), tuple(self.ids[-KEY_TOKENS:])


class ResumeCache:
    """Parked sequences, found by the prompts that extend them."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._entries: OrderedDict[tuple, list[ParkedSequence]] = OrderedDict()
        self._size = 0
        self._stamp = None  # the weights every entry was computed with

    def _check(self, stamp: int) -> None:
        if stamp != self._stamp:  # new weights: every entry is stale
            self.clear()
            self._stamp = stamp

    def park(self, entry: ParkedSequence, stamp: int) -> None:
        self._check(stamp)
        self._entries.setdefault(entry.key, []).append(entry)
        self._size += 1
        while self._size > self.capacity:
            key, entries = next(iter(self._entries.items()))
            entries.pop(0)
            self._size -= 1
            if not entries:
                del self._entries[key]

    def take(self, prompt_ids: list[int], stamp: int) -> ParkedSequence | None:
        """The longest parked sequence ``prompt_ids`` strictly extends (removed), if any."""
        self._check(stamp)
        lengths = sorted({n for n, _ in self._entries if n < len(prompt_ids)}, reverse=True)
        for n in lengths:
            key = (n, tuple(prompt_ids[max(0, n - KEY_TOKENS):n]))
            for entry in self._entries.get(key, []):
                if entry.ids == prompt_ids[:n]:
                    self._remove(key, entry)
                    return entry
        return None

    def _remove(self, key, entry) -> None:
        entries = self._entries[key]
        entries.remove(entry)
        self._size -= 1
        if not entries:
            del self._entries[key]

    def clear(self) -> None:
        self._entries.clear()
        self._size = 0

    def __len__(self) -> int:
        return self._size
