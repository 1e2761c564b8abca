"""Unit extraction: audio -> discrete units files. CLI `audio-vqvae-units` (the library is `audio_vqvae.extract`).

    audio-vqvae-units -c ckpt.pt -o units.txt wavs/ extra.flac          # files and directories (recursive)
    audio-vqvae-units -c ckpt.pt -o units.txt --manifest list.tsv       # path<TAB>speaker[<TAB>duration_s]
    audio-vqvae-units -c ckpt.pt -o units.txt --data vctk data.root=/data/VCTK-Corpus-0.92 --dedup
    audio-vqvae-units ... --shard 2 --num-shards 8                      # writes units.2-of-8.txt (+ sidecars)
    audio-vqvae-units -c speech.pt -o units.txt wavs/ --f0              # + units.txt.f0 (speech-path checkpoints)

Writes units.txt (`utt_id<TAB>u1 u2 ...`, in utterance-id order), units.txt.json (sidecar), with --dedup
units.txt.durations, with --f0 units.txt.f0 (each utterance's F0 in Hz, 0 = unvoiced, at the speech path's frame
rate, so `audio-vqvae-generate --units` resynthesises as from the audio), and units.txt.skipped.tsv; see
docs/formats.md. A re-run resumes: it encodes only the missing
utterances and refuses outputs made by another checkpoint or dedup setting (--overwrite starts over).
Audio is prepared as in training: mono, the model's rate, and with --peak-normalize auto (the default) each file
scaled to the peak the model was trained with (the checkpoint's data.peak_normalize), as `VQVAE.encode` does.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from ..extract import collect_utterances, shard, write_units
from .common import add_input_arguments, audio_progress, load_model, run_app, split_inputs


def run(args: argparse.Namespace) -> Path:
    """The units command; returns the units file written."""
    paths, overrides = split_inputs(args.inputs)
    utterances, skipped = collect_utterances(paths, args.manifest, args.data, overrides)
    model = load_model(args)
    total = round(sum(u.duration for u in shard(utterances, args.shard, args.num_shards)), 2)
    with tqdm(total=total, unit="audio-s", unit_scale=True, dynamic_ncols=True, disable=None) as bar:
        return write_units(model, utterances, args.out, skipped=skipped, dedup=args.dedup, npy_dir=args.npy_dir,
                           shard_index=args.shard, num_shards=args.num_shards, overwrite=args.overwrite,
                           batch_size=args.batch_size, chunk_seconds=args.chunk_seconds,
                           progress=audio_progress(bar), f0=args.f0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audio-vqvae-units", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_input_arguments(parser)
    parser.add_argument("-o", "--out", required=True, help="units file (utt_id<TAB>u1 u2 ...)")
    parser.add_argument("--batch-size", type=int, default=16, help="pieces (utterances or chunks) per forward pass")
    parser.add_argument("--dedup", action="store_true", help="run-length deduplicate; durations go to <out>.durations")
    parser.add_argument("--f0", action="store_true",
                        help="also write <out>.f0: each utterance's F0 contour (needs a checkpoint with a speech path)")
    parser.add_argument("--npy-dir", help="also write <npy-dir>/<utt_id>.npy (frame-level units, int64)")
    parser.add_argument("--shard", type=int, default=0, help="which shard to do (0-based)")
    parser.add_argument("--num-shards", type=int, default=1, help="split the sorted utterances into this many blocks")
    parser.add_argument("--overwrite", action="store_true", help="start over instead of resuming an existing output")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Console entry point `audio-vqvae-units`."""
    args = build_parser().parse_args(argv)
    print(run_app("audio-vqvae-units", lambda: run(args)))


if __name__ == "__main__":
    main()
