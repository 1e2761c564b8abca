"""Score units under a learned prior: `audio-vqvae-score-units -p prior.pt units.txt -o scores.tsv`.

Writes `utt_id<TAB>n_units<TAB>log_prob<TAB>bits_per_unit` (log_prob in nats, whole utterance) in file order and
logs the set's unit perplexity. Speakers (for a speaker-conditioned prior) come from --speaker-map, else the speaker map
the prior was trained with (its units.speaker_map, when that file exists), else the id up to its last separator;
speakers the prior does not know are marginalised over its speakers (log-mean-exp), as audio-vqvae-eval does.
"""
from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

from ..device import resolve_device
from ..io import atomic_write
from ..prior.data import read_unit_set
from ..prior.model import UnitPrior
from ..prior.training import nll_metrics, score_unit_set
from ..unitfile import read_speaker_map
from .common import run_app

log = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> Path:
    """The score command; returns the TSV written."""
    prior = UnitPrior.from_checkpoint(args.prior, resolve_device(args.device))
    trained_map = prior.config.get("units", {}).get("speaker_map")
    map_path = args.speaker_map or (trained_map if trained_map and Path(trained_map).is_file() else None)
    speaker_map = read_speaker_map(map_path) if map_path else {}
    data = read_unit_set(args.units, prior.speakers, speaker_map, prior.config["units"]["speaker_separator"])
    scores = score_unit_set(prior, data, args.batch_size)
    with atomic_write(args.out) as f:
        f.write("utt_id\tn_units\tlog_prob\tbits_per_unit\n")
        for utt_id, (n, logp) in scores.items():
            f.write(f"{utt_id}\t{n}\t{logp:.4f}\t{-logp / n / math.log(2):.4f}\n")
    total = sum(n for n, _ in scores.values())
    m = nll_metrics(-sum(lp for _, lp in scores.values()), total)
    log.info("%d utterances, %d units: %.4f bits/unit, perplexity %.2f", len(scores), total, m["bits_per_unit"],
             m["perplexity"])
    return Path(args.out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audio-vqvae-score-units", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("units", help="units file written by audio-vqvae-units")
    parser.add_argument("-p", "--prior", required=True, help="prior checkpoint (audio-vqvae-train-prior)")
    parser.add_argument("-o", "--out", required=True, help="output TSV")
    parser.add_argument("--speaker-map", help="TSV utt_id<TAB>speaker (default: the prior's training speaker map, else the id up "
                                                  "to its last separator)")
    parser.add_argument("--batch-size", type=int, default=16, help="utterances scored together")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Console entry point `audio-vqvae-score-units`."""
    args = build_parser().parse_args(argv)
    print(run_app("audio-vqvae-score-units", lambda: run(args)))


if __name__ == "__main__":
    main()
