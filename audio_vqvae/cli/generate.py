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

import numpy as np
import torch
from tqdm import tqdm

from ..audio import save_audio
from ..data import write_skip_report
from ..device import run_app
from ..extract import collect_utterances, encode_utterances
from ..model import VQVAE
from ..prior import UnitPrior
from ..synthesis import batches, plan_jobs, sample_units, synthesize
from ..unitfile import load_units, read_speaker_map
from .common import add_input_arguments, load_model, split_inputs

log = logging.getLogger(__name__)


def units_from_audio(
    model: VQVAE, args: argparse.Namespace, skipped_path: Path
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Encode the audio inputs -> ({utt_id: codes}, {utt_id: source speaker}); bad files go to skipped_path."""
    paths, overrides = split_inputs(args.inputs)
    utterances, skipped = collect_utterances(paths, args.manifest, args.data, overrides)
    units, speakers = {}, {}
    for utt, result in encode_utterances(model, utterances, args.batch_size, args.chunk_seconds):
        if isinstance(result, str):
            skipped.append((utt.path, result))
            continue
        units[utt.id] = result
        if utt.speaker:
            speakers[utt.id] = utt.speaker
    for path, reason in skipped:
        log.warning("skipping %s: %s", path, reason)
    if skipped:
        skipped_path.parent.mkdir(parents=True, exist_ok=True)
        write_skip_report(skipped_path, skipped)
    return units, speakers


def prior_units(model: VQVAE, args: argparse.Namespace) -> dict[str, np.ndarray]:
    """--prior: sample --n-samples unit sequences of --seconds for --speaker (each after --prompt-units FILE:UTT_ID)."""
    if not args.speaker or "," in args.speaker:
        raise ValueError("--prior needs one --speaker (the voice that decodes the sampled units)")
    prompt = None
    if args.prompt_units:
        path, _, utt = args.prompt_units.rpartition(":")
        table = load_units(path, model.codebook_size)
        if utt not in table:
            raise ValueError(f"--prompt-units: no utterance {utt!r} in {path}")
        prompt = table[utt]
    prior = UnitPrior.from_checkpoint(args.prior, model.device)
    generator = torch.Generator(prior.device).manual_seed(args.seed)
    return sample_units(prior, model, args.speaker, args.seconds, args.n_samples, args.prior_temperature, args.top_k,
                        generator, prompt)


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
        units = prior_units(model, args)
        sources, targets = dict.fromkeys(units, args.speaker), []
    elif args.units:
        units, sources = load_units(args.units, model.codebook_size), {}
    else:
        units, sources = units_from_audio(model, args, out_dir / "skipped.tsv")
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
