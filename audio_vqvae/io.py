"""All-or-nothing file writes, shared by audio, checkpoints, unit files, run files and corpus indexes."""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Literal


def _fsync_dir(directory: Path) -> None:
    """Persist a rename by fsyncing its directory (POSIX; a no-op where directories cannot be opened)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_write(path: str | os.PathLike, mode: Literal["w", "wb"] = "w") -> Iterator[IO]:
    """Open `path` for writing so that readers see the old file or the complete new one, never a partial one.

    Writes go to a temp file in the same directory (same filesystem, so the rename is atomic); on success it is
    flushed, fsynced and `os.replace`d over `path`; on error it is removed and `path` is left untouched.
    `"w"` is UTF-8 text, `"wb"` bytes: `with atomic_write(p, "wb") as f: torch.save(obj, f)`.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, mode.replace("w", "x"), encoding=None if mode == "wb" else "utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_skip_report(path: str | os.PathLike, skipped: Sequence[tuple[str, str]]) -> None:
    """Append `path<TAB>reason` lines to the run's report (TSV, no header), leaving out lines already there."""
    path = Path(path)
    seen = set(path.read_text(encoding="utf-8").splitlines()) if path.exists() else set()
    lines = [f"{p}\t{' '.join(reason.split())}" for p, reason in skipped]
    new = [line for line in dict.fromkeys(lines) if line not in seen]
    if new or not path.exists():
        with open(path, "a", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in new))
