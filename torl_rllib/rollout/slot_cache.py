"""A KV cache for continuous batching: sequences come and go, nothing is copied per token.

transformers' ``DynamicCache`` concatenates every new column onto the whole cache (a copy of
all keys and values per decode step), and joining or dropping a sequence copies it again. Here
each layer's keys and values live in preallocated ``[slots, heads, capacity, head_dim]``
buffers; every sequence owns a slot (a batch row); all rows are right-aligned on a shared
column window ``[start, end)``, and a decode step writes column ``end`` in place.

* A joining sequence takes a free slot; its prefilled keys are written into that row, ending at
  ``end`` (its earlier columns are masked). The window grows left if it is the longest.
* A leaving sequence just frees its slot (its row keeps being computed, masked, until the
  slots are compacted when at most half are in use).
* The window's left edge follows the oldest column any live sequence still uses; the buffers
  grow (doubling) only when the right edge reaches their capacity.

The model sees the cache through ``SlotCache``, a ``DynamicCache`` whose layers return views of
the window, and an attention mask of the window's columns plus the new one. Free slots keep at
least one unmasked column (the one written this step), so their rows stay finite and never
turn another row's attention into NaN (0 * NaN).
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class _SlotLayer(DynamicLayer):
    """One layer of a ``SlotStore`` as the model's attention sees it."""

    def __init__(self, store: "SlotStore", index: int):
        super().__init__()
        self.store, self.index = store, index
        self.is_initialized = True

    def update(self, key_states, value_states, *args, **kwargs):
        keys, values = self.store.keys[self.index], self.store.values[self.index]
        end = self.store.end
        keys[:, :, end] = key_states[:, :, -1]
        values[:, :, end] = value_states[:, :, -1]
        return keys[:, :, self.store.start : end + 1], values[:, :, self.store.start : end + 1]

    def get_seq_length(self) -> int:
        return self.store.end - self.store.start


class SlotStore:
    """Preallocated per-layer KV buffers with one slot per sequence (see the module docstring)."""

    def __init__(self):
        self.keys: list[torch.Tensor] = []  # per layer [slots, heads, capacity, head_dim]
        self.values: list[torch.Tensor] = []
        self.mask: torch.Tensor | None = None  # [slots, capacity] 1 where a row's column is real
        self.first: list[int] = []  # per slot: its first real column (for the window's left edge)
        self.live: list[bool] = []
        self.start = self.end = 0
        self.cache = DynamicCache()

    @property
    def slots(self) -> int:
        return len(self.live)

    def free_slots(self) -> list[int]:
        return [i for i, alive in enumerate(self.live) if not alive]

    def attention_mask(self) -> torch.Tensor:
        """The mask of a decode step: the window's columns and the one being written."""
        self.mask[:, self.end] = 1  # every row, free ones included, attends to its new column
        return self.mask[:, self.start : self.end + 1]

    def advance(self) -> None:
        """After a decode step: column ``end`` is written."""
        self.end += 1
        if self.end == self.mask.shape[1]:
            self._relayout(self.slots, width_needed=self.end - self.start, room_right=self.end - self.start)

    # ---- sequences joining and leaving -------------------------------------------------------
    def admit(self, layers_kv: list[tuple[torch.Tensor, torch.Tensor]], row_masks: torch.Tensor) -> list[int]:
        """Write prefilled rows (per layer ``[n, heads, width, dim]``; ``row_masks`` ``[n, width]``
        marks each row's real columns, the last column real for every row) into free slots,
        ending at column ``end``. Returns the slots."""
        n, width = row_masks.shape
        span = width - int(row_masks.any(dim=0).int().argmax())  # columns from the first real one
        if not self.keys:
            self._allocate(layers_kv, slots=n, capacity=2 * span + 16, end=span)
        free = self.free_slots()
        if len(free) < n or span > self.end:
            self._relayout(max(self.slots, len(self.live) - len(free) + n), width_needed=max(span, self.end - self.start),
                           room_right=span + 16)
            free = self.free_slots()
        slots = free[:n]
        index = torch.tensor(slots, device=self.mask.device)
        columns = slice(self.end - span, self.end)
        for layer, (keys, values) in enumerate(layers_kv):
            self.keys[layer][index, :, columns] = keys[:, :, width - span:]
            self.values[layer][index, :, columns] = values[:, :, width - span:]
        self.mask[index] = 0
        self.mask[index, columns] = row_masks[:, width - span:].to(self.mask.dtype)
        firsts = (self.end - width + row_masks.int().argmax(dim=1)).tolist()  # each row's first real column
        for slot, first in zip(slots, firsts):
            self.first[slot], self.live[slot] = first, True
        self.start = min(self.start, self.end - span)
        return slots

    def row(self, slot: int) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
        """A copy of one slot's cache from its first real column to ``end``: per layer
        ``(keys, values)`` ``[heads, columns, dim]``, and its mask ``[columns]``."""
        columns = slice(self.first[slot], self.end)
        kv = [(k[slot, :, columns].clone(), v[slot, :, columns].clone()) for k, v in zip(self.keys, self.values)]
        return kv, self.mask[slot, columns].clone()

    def release(self, slot: int) -> None:
        self.live[slot] = False
        live_first = [f for f, alive in zip(self.first, self.live) if alive]
        if live_first:
            self.start = max(self.start, min(live_first))

    def compact(self) -> list[int] | None:
        """When at most half the slots are live: keep only the live rows. Returns the kept slots
        in their new order (None when nothing changed)."""
        kept = [i for i, alive in enumerate(self.live) if alive]
        if len(kept) * 2 > self.slots or not kept:
            return None
        index = torch.tensor(kept, device=self.mask.device)
        self.keys = [k[index] for k in self.keys]
        self.values = [v[index] for v in self.values]
        self.mask = self.mask[index]
        self.first = [self.first[i] for i in kept]
        self.live = [True] * len(kept)
        return kept

    # ---- buffers -------------------------------------------------------------------------------
    def _allocate(self, layers_kv, slots: int, capacity: int, end: int) -> None:
        self.keys = [k.new_zeros((slots, k.shape[1], capacity, k.shape[3])) for k, _ in layers_kv]
        self.values = [v.new_zeros((slots, v.shape[1], capacity, v.shape[3])) for _, v in layers_kv]
        self.mask = torch.zeros((slots, capacity), dtype=torch.long, device=layers_kv[0][0].device)
        self.first, self.live = [end] * slots, [False] * slots
        self.start = self.end = end
        self.cache.layers = [_SlotLayer(self, i) for i in range(len(layers_kv))]

    def _relayout(self, slots: int, width_needed: int, room_right: int) -> None:
        """New buffers with ``slots`` rows, ``width_needed`` columns left of ``end`` and
        ``room_right`` columns right of it; the window's contents are copied over."""
        old_start, old_end = self.start, self.end
        used = old_end - old_start
        end = max(width_needed, used)
        capacity = end + max(room_right, used, 16)
        rows = len(self.live)
        target = slice(end - used, end)

        new_keys, new_values = [], []
        for k, v in zip(self.keys, self.values):
            nk = k.new_zeros((slots, k.shape[1], capacity, k.shape[3]))
            nv = v.new_zeros((slots, v.shape[1], capacity, v.shape[3]))
            nk[:rows, :, target] = k[:, :, old_start:old_end]
            nv[:rows, :, target] = v[:, :, old_start:old_end]
            new_keys.append(nk)
            new_values.append(nv)
        mask = self.mask.new_zeros((slots, capacity))
        mask[:rows, target] = self.mask[:, old_start:old_end]
        shift = target.start - old_start
        self.keys, self.values, self.mask = new_keys, new_values, mask
        self.first = [f + shift for f in self.first] + [end] * (slots - rows)
        self.live = self.live + [False] * (slots - rows)
        self.start, self.end = target.start, end
