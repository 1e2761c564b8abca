"""The off-the-shelf recogniser on natural audio: word error rate and speed on evenly spaced utterances of a corpus.

    python benchmarks/recogniser.py datasets/demo datasets/demo_heldout --n 20 --out wer.json

This is the reference a resynthesis's WER is compared with (issue 19: at most 1.5 times the natural rate). Each
corpus is a directory with transcripts.tsv (utt_id<TAB>sentence) and <speaker>/<utt_id>.flac, as datasets/demo.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from audio_vqvae.audio import load_audio
from audio_vqvae.evaluation.speech import RECOGNISER_RATE, read_transcripts, recognise, word_error_rate
from audio_vqvae.io import atomic_write


def corpus_wer(root: Path, n: int) -> dict[str, Any]:
    """WER and x-real-time of the recogniser on n evenly spaced utterances (sorted ids) of a corpus."""
    sentences = read_transcripts(root / "transcripts.tsv")
    ids = sorted(sentences)
    picked = ids[:: max(1, len(ids) // n)][:n]
    wavs = [load_audio(root / i.rsplit("_", 1)[0] / f"{i}.flac", RECOGNISER_RATE).numpy() for i in picked]
    recognise(wavs[0][:RECOGNISER_RATE], RECOGNISER_RATE)  # load the model outside the timing
    start = time.perf_counter()
    hyps = [recognise(w, RECOGNISER_RATE) for w in wavs]
    elapsed = time.perf_counter() - start
    refs = [sentences[i] for i in picked]
    seconds = sum(w.size for w in wavs) / RECOGNISER_RATE
    return {"corpus": str(root), "n": len(picked), "audio_seconds": seconds, "x_real_time": seconds / elapsed,
            "wer": word_error_rate(refs, hyps),
            "utterances": [{"utt": i, "ref": r, "hyp": h} for i, r, h in zip(picked, refs, hyps)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpora", nargs="+", type=Path)
    parser.add_argument("--n", type=int, default=20, help="utterances per corpus")
    parser.add_argument("--out", type=Path, help="write the results here as JSON")
    args = parser.parse_args()
    results = [corpus_wer(root, args.n) for root in args.corpora]
    for r in results:
        print(f"{r['corpus']}: WER {r['wer']:.1%} on {r['n']} utterances ({r['audio_seconds']:.0f} s), "
              f"{r['x_real_time']:.1f}x real time")
    if args.out:
        with atomic_write(args.out) as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
