"""Arguments and helpers the console apps share: audio inputs, data configs, peak normalisation, progress."""
from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from tqdm import tqdm

from ..audio import AudioError
from ..device import retain_freed_memory
from ..model import VQVAE

_OVERRIDE = re.compile(r"^data\.[\w.]+=")


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """Inputs, data config, chunking, peak normalisation and device (audio-vqvae-units and -generate)."""
    parser.add_argument("inputs", nargs="*", help="audio files, directories (recursive), and data.key=value overrides")
    parser.add_argument("--manifest", help="TSV of path<TAB>speaker[<TAB>duration_s] (paths relative to the TSV)")
    parser.add_argument("--data", help="data config name (demo, vctk, librispeech, folder, manifest) or a YAML file")
    parser.add_argument("-c", "--checkpoint", required=True, help="model checkpoint (.pt)")
    parser.add_argument("--chunk-seconds", type=float, default=30.0, help="encode long files in pieces of this length")
    parser.add_argument("--peak-normalize", default="auto",
                        help="scale each file to this peak before encoding: a number, off, or auto (as in training)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")


def split_inputs(items: Sequence[str]) -> tuple[list[str], list[str]]:
    """Positional arguments -> (paths, data.key=value overrides)."""
    overrides = [i for i in items if _OVERRIDE.match(i)]
    return [i for i in items if not _OVERRIDE.match(i)], overrides


def load_model(args: argparse.Namespace) -> VQVAE:
    """The checkpoint's model on --device, its peak normalisation overridden by --peak-normalize: a number, off, or
    auto (keep the training data config's data.peak_normalize)."""
    model = VQVAE.from_checkpoint(args.checkpoint, args.device)
    spec = args.peak_normalize
    if spec == "off":
        model.peak_normalize = None
    elif spec != "auto":
        try:
            value = float(spec)
        except ValueError:
            value = -1.0
        if not 0 < value <= 1:
            raise ValueError(f"--peak-normalize {spec}: must be a peak in (0, 1], off or auto")
        model.peak_normalize = value
    return model


def audio_progress(bar: tqdm) -> Callable[[float], None]:
    """A callback that advances `bar` by audio seconds and shows the rate in audio-hours per minute."""
    start, total = time.monotonic(), [0.0]

    def advance(seconds: float) -> None:
        total[0] += seconds
        bar.update(seconds)
        minutes = max(time.monotonic() - start, 1e-6) / 60
        bar.set_postfix_str(f"{total[0] / 3600 / minutes:.2f} audio-h/min", refresh=False)

    return advance


T = TypeVar("T")


def run_app(prog: str, body: Callable[[], T]) -> T:
    """Run a console app's body with the process set up (allocator, INFO logging); bad input (ValueError, OSError,
    AudioError) ends the process with one line `prog: error: ...` instead of a traceback."""
    retain_freed_memory()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return body()
    except (ValueError, OSError, AudioError) as err:
        sys.exit(f"{prog}: error: {err}")
