"""Variable-length sequences -> one zero-padded batch: the single helper behind encode, decode and extraction."""
from __future__ import annotations

from collections.abc import Sequence

import torch


def pad_batch(
    items: Sequence[torch.Tensor], length: int | None = None, rows: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences [T_i] (same dtype) -> (batch [rows, length] zero-padded, lengths [rows] long), on the CPU.

    length defaults to the longest item, rows to the number of items; extra rows are all padding (length 0), so a
    caller can keep the batch shape fixed. Items longer than `length` or more items than `rows` are a ValueError.
    """
    rows = len(items) if rows is None else rows
    lengths = torch.zeros(rows, dtype=torch.long)
    lengths[: len(items)] = torch.tensor([int(x.shape[-1]) for x in items], dtype=torch.long)
    length = int(lengths.max()) if length is None else length
    if len(items) > rows or int(lengths.max()) > length:
        raise ValueError(f"pad_batch: {len(items)} items up to {int(lengths.max())} long do not fit [{rows}, {length}]")
    batch = torch.zeros(rows, length, dtype=items[0].dtype if items else torch.float32)
    for row, x in enumerate(items):
        batch[row, : x.shape[-1]] = x
    return batch, lengths
