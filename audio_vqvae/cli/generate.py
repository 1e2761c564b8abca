"""Resynthesis and voice conversion: units or audio -> WAV files. CLI `audio-vqvae-generate` (library: `synthesis`).

    audio-vqvae-generate -c ckpt.pt -o out/ --units units.txt --speaker-map spk.tsv   # out/<utt>.wav, source voices
    audio-vqvae-generate -c ckpt.pt -o out/ --units units.txt --speaker p225          # out/<utt>_to_p225.wav
    audio-vqvae-generate -c ckpt.pt -o out/ src.wav clips/ --speaker p225,p226        # voice conversion, 2 targets
    audio-vqvae-generate -c ckpt.pt -o out/ --data vctk data.root=/data/VCTK-Corpus-0.92  # resynthesis
    audio-vqvae-generate -c ckpt.pt --list-speakers
    audio-vqvae-generate -c ckpt.pt -o out/ --prior prior.pt --speaker p225 --seconds 3 --n-samples 4   # stage two
    audio-vqvae-generate -c ckpt.pt -o out/ --prior prior.pt --speaker p225 --prompt-units units.txt:p225_001

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
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
from tqdm import tqdm

from ..audio import save_audio
from ..synthesis import batches, plan_jobs, prior_units, synthesize, units_from_audio
from ..unitfile import load_units, read_speaker_map
from .common import add_input_arguments, load_model, run_app, split_inputs

log = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> list[Path]:
    """The generate command; returns the files written."""
    model = load_model(args)
    if args.list_speakers:
        print("\n".join(model.speakers))
        return []
    if args.out_dir is None:
        raise ValueError("-o/--out-dir is required (where the WAV files go)")
    if sum(map(bool, (args.units, args.prior, args.inputs or args.manifest or args.data))) != 1:
        raise ValueError("give one of --units FILE, --prior CKPT or audio inputs (files, directories, --manifest or "
                         "--data)")
    if not args.greedy and args.temperature <= 0:
        raise ValueError(f"--temperature {args.temperature}: must be > 0 (or use --greedy)")
    out_dir = Path(args.out_dir)
    targets = [t for t in (args.speaker or "").split(",") if t]
    for name in targets:
        model.speaker_index(name)  # fails early, listing the valid names
    if args.prior:
        units = prior_units(model, args.prior, args.speaker, args.seconds, args.n_samples, args.prior_temperature,
                            args.top_k, args.seed, args.prompt_units)
        sources, targets = dict.fromkeys(units, args.speaker), []
    elif args.units:
        units, sources = load_units(args.units, model.codebook_size), {}
    else:
        paths, overrides = split_inputs(args.inputs)
        units, sources = units_from_audio(model, paths, args.manifest, args.data, overrides, args.batch_size,
                                          args.chunk_seconds, out_dir / "skipped.tsv")
    if args.speaker_map:
        sources |= read_speaker_map(args.speaker_map)
    jobs = plan_jobs(model, units, sources, targets, out_dir)
    todo = [j for j in jobs if args.overwrite or not j.path.exists()]
    log.info("%d files to write in %s (%d exist already)", len(todo), out_dir, len(jobs) - len(todo))
    generator = torch.Generator(model.device).manual_seed(args.seed)
    total = sum(b[0].codes.size * model.hop * len(b) for b in batches(todo, args.batch_size))
    written = []
    with tqdm(total=total, unit="sample", unit_scale=True, dynamic_ncols=True, disable=None) as bar:
        for job, wav in synthesize(model, todo, args.batch_size, args.temperature, args.greedy, bar.update,
                                   args.kernel, generator):
            job.path.parent.mkdir(parents=True, exist_ok=True)
            save_audio(job.path, wav, model.sample_rate)
            written.append(job.path)
    return written


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
    parser.add_argument("--prompt-units", help="with --prior: FILE:UTT_ID, continue the units of a real utterance")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of the decoder")
    parser.add_argument("--greedy", action="store_true", help="take the most likely sample instead of sampling")
    parser.add_argument("--kernel", default="auto", choices=["auto", "torch", "numba"],
                        help="generation loop: compiled numba on CPU (auto's choice there), torch on any device")
    parser.add_argument("--batch-size", type=int, default=8, help="utterances decoded together")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the sampling")
    parser.add_argument("--overwrite", action="store_true", help="rewrite outputs that exist")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Console entry point `audio-vqvae-generate`."""
    args = build_parser().parse_args(argv)

    def body() -> None:
        if args.batch_size < 1:
            raise ValueError(f"--batch-size {args.batch_size}: must be >= 1")
        run(args)

    run_app("audio-vqvae-generate", body)


if __name__ == "__main__":
    main()
