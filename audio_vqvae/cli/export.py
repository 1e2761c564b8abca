"""Export a training checkpoint as a pretrained model directory. CLI `audio-vqvae-export`.

    audio-vqvae-export runs/demo/checkpoints/best.pt pretrained/my-model

Writes `model.safetensors` (weights, no pickle) and `config.json` (resolved config, speakers, step, metrics), the
layout model hubs use; `VQVAE.from_pretrained(dir)` and every app's `-c` load it. Resume state is left out.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..checkpoint import load_checkpoint, save_pretrained
from .common import run_app


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audio-vqvae-export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="training checkpoint (.pt)")
    parser.add_argument("out", help="directory to write (created; its two files are replaced)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    out: Path = run_app("audio-vqvae-export", lambda: save_pretrained(args.out, load_checkpoint(args.checkpoint)))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
