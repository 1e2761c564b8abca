"""Resynthesis and voice conversion: units or audio -> WAV files. CLI `audio-vqvae-generate` (library: `synthesis`).

    audio-vqvae-generate -c ckpt.pt -o out/ --units units.txt --speaker-map spk.tsv   # out/<utt>.wav, source voices
    audio-vqvae-generate -c ckpt.pt -o out/ --units units.txt --speaker p225          # out/<utt>_to_p225.wav
    audio-vqvae-generate -c ckpt.pt -o out/ src.wav clips/ --speaker p225,p226        # voice conversion, 2 targets
    audio-vqvae-generate -c ckpt.pt -o out/ --data vctk data.root=/data/VCTK-Corpus-0.92  # resynthesis
    audio-vqvae-generate -c ckpt.pt --list-speakers
    audio-vqvae-generate -c ckpt.pt -o out/ --prior prior.pt --speaker p225 --seconds 3 --n-samples 4   # stage two
    audio-vqvae-generate -c ckpt.pt -o out/ --prior prior.pt --speaker p225 --prompt-units units.txt:p225_001
    audio-vqvae-generate -c speech.pt -o out/ src.wav --speaker p225 --f0 source          # keep the source's melody

Units files are read as `audio-vqvae-units` writes them (deduplicated ones are expanded by `<units>.durations`);
a malformed line or a code outside the codebook is rejected with the file name and line number. Without --speaker
each utterance is decoded with its own (source) speaker, known from the data config or a `--speaker-map` TSV
(`utt_id<TAB>speaker`), into `<utt>.wav`; with --speaker NAME[,NAME...] it is converted to each target and written
to `<utt>_to_<NAME>.wav`. With --prior, --seconds of units are sampled from a learned prior
(`audio-vqvae-train-prior`; temperature --prior-temperature, --top-k), optionally after the units of a real
utterance (--prompt-units FILE:UTT_ID), and decoded with --speaker into `sample_NNN.wav`. Outputs are written
atomically, and existing ones are kept unless --overwrite, so a killed run continues where it stopped. Utterances of
different lengths are decoded together, --batch-size at a time
(longest first, so a batch holds similar lengths).

Checkpoints with a speech path (audio-vqvae-train-speech) decode with it by default (--decoder auto): audio inputs
give the source's F0 contour (for conversions mapped to each target's log-F0 mean and std, or as --f0 says), a
units file gives the contour of its F0 file (`audio-vqvae-units --f0`) when its sidecar names one, and prior samples
and units without F0 get the F0 predictor's. --decoder wavenet samples the likelihood decoder instead (no F0).
"""
from __future__ import annotations

import argparse
import dataclasses

from ..model import DECODER_CHOICES, F0_CHOICES
from ..synthesis import Request, generate_files
from .common import add_input_arguments, load_model, run_app, split_inputs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audio-vqvae-generate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_input_arguments(parser)
    parser.add_argument("-o", "--out-dir", help="directory for the WAV files")
    parser.add_argument("--units", help="units file written by audio-vqvae-units (instead of audio inputs)")
    parser.add_argument("--speaker", help="target speaker(s), comma-separated: converts into <utt>_to_<name>.wav")
    parser.add_argument("--speaker-map", help="TSV utt_id<TAB>speaker giving the source speakers")
    parser.add_argument("--list-speakers", action="store_true", help="print the checkpoint's speakers and exit")
    parser.add_argument("--prior", help="prior checkpoint (audio-vqvae-train-prior): sample units instead of reading them")
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="with --prior: length of each sample (sampled after the prompt's units, if any)")
    parser.add_argument("--n-samples", type=int, default=1, help="with --prior: how many samples")
    parser.add_argument("--prior-temperature", type=float, default=1.0, help="with --prior: temperature of the prior")
    parser.add_argument("--top-k", type=int, default=None, help="with --prior: sample among the k most likely units")
    parser.add_argument("--force", action="store_true",
                        help="with --prior: use a prior trained on another VQ-VAE's units (refused by default)")
    parser.add_argument("--prompt-units", help="with --prior: FILE:UTT_ID, continue the units of a real utterance")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of the decoder")
    parser.add_argument("--greedy", action="store_true", help="take the most likely sample instead of sampling")
    parser.add_argument("--kernel", default="auto", choices=["auto", "torch", "numba"],
                        help="generation loop: compiled numba on CPU (auto's choice there), torch on any device")
    parser.add_argument("--decoder", default="auto", choices=DECODER_CHOICES,
                        help="source_filter: the speech path (one pass, given F0); wavenet: the likelihood decoder's "
                             "sampling; auto (default): the speech path when the checkpoint has one")
    parser.add_argument("--f0", choices=F0_CHOICES, default=None,
                        help="speech path: the contour of conversions from audio or from a units file with F0: "
                             "mapped (default; the source's, moved to the target's log-F0 mean and std), source "
                             "(unchanged) or predicted (the F0 predictor's; always for --prior and units without F0)")
    parser.add_argument("--batch-size", type=int, default=8, help="utterances decoded together")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the sampling")
    parser.add_argument("--overwrite", action="store_true", help="rewrite outputs that exist")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Console entry point `audio-vqvae-generate`."""
    args = build_parser().parse_args(argv)

    def body() -> None:
        model = load_model(args)
        if args.list_speakers:
            print("\n".join(model.speakers))
            return
        paths, overrides = split_inputs(args.inputs)
        options = {f.name: getattr(args, f.name) for f in dataclasses.fields(Request) if hasattr(args, f.name)}
        generate_files(model, Request(**options | {"paths": paths, "overrides": overrides}))

    run_app("audio-vqvae-generate", body)


if __name__ == "__main__":
    main()
