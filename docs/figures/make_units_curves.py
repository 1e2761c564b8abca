"""Draw docs/figures/units_learning_curves.png: the unit learning curves that training logs at each validation
(TensorBoard `units/pnmi`, `units/phone_purity`, `units/entropy_bits_per_second`, `val/perplexity`, on the
validation utterances) for the issue-20 runs of docs/unit_quality.md, one line per run directory.

    python docs/figures/make_units_curves.py LABEL=RUN_DIR [LABEL=RUN_DIR ...] [--out PATH]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).resolve().parent
PANELS = [("units/pnmi", "PNMI (validation)"), ("units/phone_purity", "phone purity"),
          ("units/entropy_bits_per_second", "unit entropy, bits/s"), ("val/perplexity", "codebook perplexity")]


def curves(run_dir: Path) -> dict[str, tuple[list[int], list[float]]]:
    """tag -> (steps, values) from a run's TensorBoard events."""
    ea = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    ea.Reload()
    have = set(ea.Tags()["scalars"])
    return {tag: ([e.step for e in ea.Scalars(tag)], [e.value for e in ea.Scalars(tag)])
            for tag, _ in PANELS if tag in have}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="LABEL=RUN_DIR")
    ap.add_argument("--out", type=Path, default=HERE / "units_learning_curves.png")
    args = ap.parse_args()
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.2))
    for i, spec in enumerate(args.runs):
        label, run = spec.rsplit("=", 1)
        data = curves(Path(run))
        for ax, (tag, _) in zip(axes, PANELS):
            if tag in data:  # a run from before the unit curves has only the perplexity
                ax.plot(*data[tag], marker="o", ms=3, color=f"C{i}", label=label)
    for ax, (_, title) in zip(axes, PANELS):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
