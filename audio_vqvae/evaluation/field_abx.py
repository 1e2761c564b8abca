"""The field's ABX (ZeroSpeech's `zerospeech-libriabx2`, the libri-light ABX revamped), scored on the same units and
alignments as the project's own ABX so that the two can be read side by side.

The project's ABX (`metrics.abx_error`) draws at most `--abx-triplets` phone-token triplets in any context; the
field's scores triphone items written from the alignments and averages per context, phone pair and speaker ("within
context") or per phone pair and speaker ("any context"), with DTW over angular frame distances (on one-hot units:
0 or 1/2, the project's Hamming distance up to scale). It is an optional dependency with a compiled DTW:

    pip install --no-deps zerospeech-libriabx2 && pip install pandas
"""
from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..alignments import SILENCE, Segment

INSTALL = "pip install --no-deps zerospeech-libriabx2 && pip install pandas"


def missing() -> str | None:
    """Why the field's ABX cannot run here (a one-line message with the install command), or None if it can."""
    try:
        import pandas  # noqa: F401  (zrc_abx2 needs it only once it scores: too late for a clear message)
        import zrc_abx2  # noqa: F401
    except ImportError as err:
        return f"zerospeech-libriabx2 is not usable ({err.name} is missing): {INSTALL}"
    return None


def item_lines(alignments: Mapping[str, Sequence[Segment]], speakers: Mapping[str, str]) -> list[str]:
    """ABX item file lines (header first) of every non-silent phone with a neighbour on both sides; a pause
    neighbour is the context "SIL", as in the ZeroSpeech / libri-light item files."""
    lines = ["#file onset offset #phone prev-phone next-phone speaker"]
    for utt in sorted(alignments):
        segs = list(alignments[utt])
        for prev, seg, nxt in zip(segs, segs[1:], segs[2:]):
            if seg.phone in SILENCE:
                continue
            context = ["SIL" if s.phone in SILENCE else s.phone for s in (prev, nxt)]
            lines.append(f"{utt} {seg.start:.3f} {seg.end:.3f} {seg.phone} {context[0]} {context[1]} {speakers[utt]}")
    return lines


def one_hot(ids: np.ndarray, n: int) -> np.ndarray:
    """Unit ids [T] -> one-hot float32 [T, n]."""
    return np.eye(n, dtype=np.float32)[ids]


def field_abx(features: Mapping[str, np.ndarray], items: Sequence[str], frame_rate: float) -> dict[str, float]:
    """zrc_abx2's ABX of frame features {utt: [T, D]} on `items` (cosine/angular DTW), errors in [0, 1], keyed
    `{within, across}_{within, any}_context`."""
    from zrc_abx2.eval_ABX import EvalABX, EvalArgs  # optional (see `missing`)

    with tempfile.TemporaryDirectory() as tmp:
        feats = Path(tmp) / "features"
        feats.mkdir()
        for utt, f in features.items():
            np.save(feats / f"{utt}.npy", np.ascontiguousarray(f, dtype=np.float32))
        item = Path(tmp) / "set.item"
        item.write_text("\n".join(items) + "\n")
        args = EvalArgs(path_data=str(feats), path_item_file=str(item), file_extension=".npy",
                        feature_size=1.0 / frame_rate, distance_mode="cosine")
        with contextlib.redirect_stdout(io.StringIO()):  # it prints its progress
            results = EvalABX().eval_abx(args)
    return {f"{r['abx-s-condition']}_{r['abx-c-condition']}_context": float(r["score"]) for r in results}


def field_unit_abx(units: Mapping[str, np.ndarray], alignments: Mapping[str, Sequence[Segment]],
                   speakers: Mapping[str, str], n_units: int, frame_rate: float) -> dict[str, float]:
    """The field's ABX of unit ids {utt: [T]} (one-hot features) on the triphone items of `alignments`."""
    return field_abx({u: one_hot(units[u], n_units) for u in alignments}, item_lines(alignments, speakers),
                     frame_rate)
