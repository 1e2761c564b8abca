"""`audio-vqvae-eval`: score a checkpoint on held-out data (see audio_vqvae/evaluation/ for what is measured).

    audio-vqvae-eval runs/x/checkpoints/best.pt --out eval/x                 # the checkpoint's own test/val split
    audio-vqvae-eval best.pt --data vctk data.root=/data/VCTK-Corpus-0.92 --split test --out eval/vctk
    audio-vqvae-eval best.pt --files some/dir a.wav --alignments aligns/ --out eval/mine

Writes metrics.json, report.md (also printed), codebook_usage.png, unit_phone_cooccurrence.png (with alignments),
excerpt.png, resynthesis.png and their audio as audio/*.wav into --out. Keys: docs/formats.md.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..checkpoint import file_sha256
from ..device import resolve_device
from ..evaluation.field_abx import INSTALL, missing
from ..evaluation.report import evaluate_checkpoint
from ..evaluation.sets import (
    SPLITS,
    EvalOptions,
    EvalSet,
    corpus_set,
    data_config,
    file_set,
    same_corpus,
    with_training_reference,
)
from ..model import DECODER_CHOICES, F0_CHOICES, VQVAE
from ..prior.model import UnitPrior, check_vqvae
from .common import run_app


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    d = EvalOptions()
    p = argparse.ArgumentParser(prog="audio-vqvae-eval", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a checkpoint written by audio-vqvae-train")
    p.add_argument("overrides", nargs="*", help="data config overrides, e.g. data.root=/data/VCTK-Corpus-0.92")
    p.add_argument("--out", required=True, help="output directory")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", help="a data config name (demo, vctk, librispeech, folder, manifest); "
                                    "default: the checkpoint's own data config")
    src.add_argument("--files", nargs="+", help="audio files or directories instead of a corpus config (no training "
                                                "split: the baseline is fitted on them and there is no speaker probe)")
    p.add_argument("--split", choices=SPLITS, default="auto",
                   help="scored split (checkpoint's seed): test = held-out speakers (x held-out sentences); "
                        "auto = test if the config holds data out, else val")
    p.add_argument("--alignments", help="phone alignments (.tsv/.TextGrid dir or file); default <corpus>/alignments")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 | mps")
    p.add_argument("--max-seconds", type=float, help="crop every utterance to its first S seconds (default: whole)")
    p.add_argument("--max-utterances", type=int, help="score only the first N utterances (by id)")
    p.add_argument("--n-resynth", "--n-sampled", type=int, default=d.n_resynth,
                   help="training-speaker utterances resynthesised with their own speaker; --n-sampled is its old "
                        "name, kept as an alias for this release")
    p.add_argument("--n-convert", type=int, default=d.n_convert, help="scored utterances converted to a training speaker")
    p.add_argument("--resynth-seconds", "--sampled-seconds", type=float, default=d.resynth_seconds,
                   help="length of each decoded excerpt, from the middle (0: whole utterances); the recogniser's WER "
                        "always decodes whole utterances (--sampled-seconds: its old name, an alias for this release)")
    p.add_argument("--decoder", choices=DECODER_CHOICES, default=d.decoder,
                   help="auto = the speech path (source-filter decoder) when the checkpoint has one, else the WaveNet")
    p.add_argument("--f0", choices=F0_CHOICES, default=d.f0,
                   help="conversions' F0 (speech path): the source contour mapped to the target speaker (default), "
                        "the source's unchanged, or the F0 predictor's; self-resynthesis uses its own contour")
    p.add_argument("--convert-to", help="conversion target speaker (default: training speakers in turn)")
    p.add_argument("--temperature", type=float, default=d.temperature, help="sampling temperature")
    p.add_argument("--abx-triplets", type=int, default=d.abx_triplets, help="ABX triplets per condition (at most)")
    p.add_argument("--field-abx", action="store_true",
                   help="also score ABX with the field's implementation (zerospeech-libriabx2, optional: "
                        f"{INSTALL}) on the units and each baseline, beside the project's own; minutes per inventory")
    p.add_argument("--posterior-positions", type=int, default=d.posterior_positions,
                   help="latent positions probed (0 = off)")
    p.add_argument("--posterior-chunk", type=int, default=d.posterior_chunk,
                   help="candidate codes per decoder batch in the probe")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--prior", help="a unit prior checkpoint (audio-vqvae-train-prior): KL and -ELBO under it too")
    p.add_argument("--force", action="store_true",
                   help="use a --prior trained on another VQ-VAE's units (refused by default); the report says so")
    args = p.parse_intermixed_args(argv)
    if args.files and args.overrides:
        p.error("data.* overrides apply to corpus configs, not to --files")
    if args.field_abx and (why := missing()):
        p.error(f"--field-abx: {why}")
    return args


def options(args: argparse.Namespace) -> EvalOptions:
    return EvalOptions(max_seconds=args.max_seconds, n_resynth=args.n_resynth, n_convert=args.n_convert,
                       resynth_seconds=args.resynth_seconds or None, temperature=args.temperature,
                       decoder=args.decoder, f0=args.f0,
                       abx_triplets=args.abx_triplets, field_abx=args.field_abx, posterior_positions=args.posterior_positions,
                       posterior_chunk=args.posterior_chunk, convert_to=args.convert_to, seed=args.seed)


def eval_set(args: argparse.Namespace, model: VQVAE) -> EvalSet:
    """The scored set that the arguments name. Files or a corpus other than the training one (--data) are scored
    against the checkpoint's own training split (the baseline and the speaker probe are fitted there)."""
    seed = int(model.config.get("seed", 0))
    own = model.config.get("data")
    data = data_config(model.config, args.data, args.overrides) if not args.files else None
    foreign = args.files or (own is not None and not same_corpus(data, own))
    if args.files:
        set_ = file_set(args.files)
    else:
        set_ = corpus_set(data, args.split, seed, foreign=bool(foreign), name=args.data)
    if foreign and own is not None:
        set_ = with_training_reference(set_, corpus_set(data_config(model.config, None, []), "val", seed))
    set_.utterances = set_.utterances[: args.max_utterances]
    return set_


def run(args: argparse.Namespace) -> dict:
    model = VQVAE.from_checkpoint(args.checkpoint, resolve_device(args.device))
    set_ = eval_set(args, model)
    alignments = Path(args.alignments) if args.alignments else None
    if alignments is None and set_.root is not None and (set_.root / "alignments").is_dir():
        alignments = set_.root / "alignments"
    prior = UnitPrior.from_checkpoint(args.prior, model.device) if args.prior else None
    warning = prior and check_vqvae(prior, args.prior, file_sha256(args.checkpoint), model.frame_rate, args.force)
    return evaluate_checkpoint(model, str(args.checkpoint), set_, Path(args.out), options(args), alignments, prior,
                               warning)


def main(argv: list[str] | None = None) -> None:
    """Console entry point `audio-vqvae-eval`."""
    args = parse_args(argv)
    run_app("audio-vqvae-eval", lambda: run(args))
    print((Path(args.out) / "report.md").read_text())


if __name__ == "__main__":
    main()
