"""Peak RSS of the training data pipeline over a corpus of N utterance entries (run in its own process).

The entries point, in turn, at the demo corpus's real files, so a larger N means a longer utterance list and more
reads, but no more audio per item: if files are read lazily, peak memory does not grow with N.

    python benchmarks/pipeline_rss.py N     -> prints {"utterances": N, "items": ..., "peak_rss_mb": ...}
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from measure import own_peak_rss_mb
from torch.utils.data import DataLoader

from audio_vqvae.audio import audio_info
from audio_vqvae.data import SegmentDataset, Utterance, audio_files, collate_segments

DEMO = Path(__file__).resolve().parents[1] / "datasets" / "demo"
SEGMENT, SAMPLE_RATE, BATCH = 8192, 16000, 8


def corpus(n: int, n_files: int = 8) -> list[Utterance]:
    """n utterance entries cycling over the first n_files demo files (speaker = the file's directory)."""
    files = audio_files(DEMO)[:n_files]
    durations = [audio_info(f).duration for f in files]
    return [Utterance(f"utt{i:06d}", str(files[i % len(files)]), files[i % len(files)].parent.name,
                      durations[i % len(files)]) for i in range(n)]


def run(n: int) -> dict[str, float]:
    """Iterate one epoch of segments over n entries in this process; its peak RSS."""
    utterances = corpus(n)
    speakers = sorted({u.speaker for u in utterances})
    dataset = SegmentDataset(utterances, speakers, SEGMENT, SAMPLE_RATE, "pad", None, None, seed=0)
    items = sum(wav.shape[0] for wav, _ in DataLoader(dataset, BATCH, collate_fn=collate_segments))
    return {"utterances": n, "items": items, "peak_rss_mb": own_peak_rss_mb()}


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]))))
