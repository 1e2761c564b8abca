"""Speed and memory benchmark of audio-vqvae: one run measures everything, prints a table and writes JSON.

    python benchmarks/bench.py            # full run (a few minutes on 2 cores)
    python benchmarks/bench.py --quick    # smoke run (seconds): same keys, tiny workloads, numbers meaningless

See benchmarks/README.md for what each number means.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numba
import torch
from extraction import layer_rates, real_time_factor
from flops import (
    cond_macs_per_sample,
    decoder_macs_per_sample,
    extraction_flops_per_second,
    generation_flops_per_sample,
    training_flops_per_sample,
)
from generation import incremental_samples_per_second, naive_samples_per_second, naive_window
from measure import (
    cpu_slug,
    load_average,
    machine,
    matmul_gflops,
    onednn_gflops,
    own_peak_rss_mb,
    peak_rss_mb,
    write_results,
)
from models import build
from training import training_samples_per_second

from audio_vqvae.device import retain_freed_memory

HERE = Path(__file__).resolve().parent
GENERATION_MODELS = ("bench", "paper", "small")
GENERATION_COST = {"bench": 1.0, "paper": 0.25, "small": 1.0}  # run-length scale (paper is ~4x the work)
RF_CYCLES = ((10, 2), (5, 4), (4, 5))  # (layers_per_cycle, cycles): 20 layers, receptive fields 2047, 125, 76
REFERENCE = {  # a widely used PyTorch WaveNet at the bench size, on the 2-core reference machine
    "training_samples_per_s": 25_800, "training_fraction_of_matmul": 0.27,
    "generation_batch1_samples_per_s": 500, "generation_batch16_samples_per_s": 4_400,
    "naive_samples_per_s": 29,
}


@dataclass(frozen=True)
class Plan:
    """Workload sizes of one run."""

    matmul_n: int = 2048
    repeats: int = 3  # timed runs behind each generation number (medians)
    train_runs: tuple[tuple[str, int, int], ...] = (("bench", 2, 5), ("paper", 1, 3))  # model, warm-up, timed steps
    train_batch: int = 4
    train_segment: int = 8192
    gen_batch1: int = 16_000  # samples per run at batch 1 (numba), scaled by GENERATION_COST
    gen_batched: int = 8_000  # samples per item at big_batch (numba)
    gen_torch: int = 4_000  # samples per item, torch kernel
    gen_naive: int = 200
    big_batch: int = 16
    extract_pieces: int = 6
    extract_seconds: float = 10.0
    extract_repeats: int = 5
    corpus_sizes: tuple[int, int] = (200, 2000)


QUICK = Plan(matmul_n=256, repeats=1, train_runs=(("bench", 1, 1), ("paper", 1, 1)), train_batch=1,
             train_segment=1024, gen_batch1=256, gen_batched=128, gen_torch=128, gen_naive=4, extract_pieces=2,
             extract_seconds=0.5, extract_repeats=1, corpus_sizes=(8, 32))


def _rate(sps: float, flops: float, matmul: float, **extra: Any) -> dict[str, Any]:
    """A speed with its FLOPs per sample, FLOP rate and fraction of the matmul rate."""
    gflops = sps * flops / 1e9
    return extra | {"samples_per_s": sps, "flops_per_sample": flops, "gflops": gflops,
                    "fraction_of_matmul": gflops / matmul}


# ---- sections -------------------------------------------------------------------------------------------------------


def bench_training(plan: Plan, matmul: float) -> dict[str, Any]:
    """Forward + backward + Adam at batch x segment, per model."""
    out = {}
    for name, warmup, steps in plan.train_runs:
        model = build(name)
        sps = training_samples_per_second(model, plan.train_batch, plan.train_segment, steps, warmup)
        out[name] = _rate(sps, training_flops_per_sample(model), matmul, batch=plan.train_batch,
                          segment=plan.train_segment)
    return out


def bench_generation(plan: Plan, matmul: float) -> dict[str, Any]:
    """Incremental generation (both kernels, batch 1 and big_batch) and the naive baseline, per model."""
    out, big = {}, f"batch{plan.big_batch}"
    for name in GENERATION_MODELS:
        model = build(name)
        net, scale = model.decoder, GENERATION_COST[name]
        flops = generation_flops_per_sample(net)
        n1, nb, nt = (max(net.hop, int(n * scale)) for n in (plan.gen_batch1, plan.gen_batched, plan.gen_torch))
        row: dict[str, Any] = {"receptive_field": net.receptive_field, "flops_per_sample": flops,
                               "cond_flops_per_sample": 2 * cond_macs_per_sample(net)}
        for kernel, runs in {"numba": ((1, n1), (plan.big_batch, nb)), "torch": ((1, nt), (plan.big_batch, nt))}.items():
            row[kernel] = {f"batch{b}": _rate(incremental_samples_per_second(net, kernel, b, n, plan.repeats), flops,
                                              matmul, batch=b, samples=n) for b, n in runs}
        n_naive = max(2, int(plan.gen_naive * scale))
        naive_flops = 2.0 * naive_window(net) * (decoder_macs_per_sample(net) + cond_macs_per_sample(net))
        row["naive"] = _rate(naive_samples_per_second(net, n_naive, model.start_class), naive_flops, matmul, batch=1,
                             samples=n_naive)
        row["incremental_over_naive"] = row["numba"]["batch1"]["samples_per_s"] / row["naive"]["samples_per_s"]
        row["batched_speedup_per_sample"] = row["numba"][big]["samples_per_s"] / row["numba"]["batch1"]["samples_per_s"]
        out[name] = row
    return out


def bench_receptive_field(plan: Plan) -> dict[str, Any]:
    """Batch-1 numba samples/s of the bench decoder at equal depth and widths, different dilation cycles; the
    configurations take turns (medians over `repeats` rounds), so drift of the machine's speed hits them alike."""
    nets = {f"{c}x{n}": build("bench", layers_per_cycle=n, cycles=c).decoder for n, c in RF_CYCLES}
    runs: dict[str, list[float]] = {name: [] for name in nets}
    for _ in range(plan.repeats):
        for name, net in nets.items():
            runs[name].append(incremental_samples_per_second(net, "numba", 1, plan.gen_batch1, 1))
    rows = {name: {"receptive_field": net.receptive_field, "samples_per_s": statistics.median(runs[name])}
            for name, net in nets.items()}
    rates = [r["samples_per_s"] for r in rows.values()]
    return {"configs": rows, "spread": (max(rates) - min(rates)) / max(rates)}


def bench_extraction(plan: Plan, matmul: float) -> dict[str, Any]:
    """Unit extraction with the paper encoder: x real time, FLOP rate, and each stage's rate."""
    model = build("paper").eval()
    out = real_time_factor(model, plan.extract_pieces, plan.extract_seconds, plan.extract_repeats)
    return out | {"pieces": plan.extract_pieces, "piece_seconds": plan.extract_seconds,
                  "flops_per_audio_second": extraction_flops_per_second(model),
                  "fraction_of_matmul": out["gflops"] / matmul,
                  "layers": layer_rates(model, plan.extract_pieces, plan.extract_seconds, plan.extract_repeats)}


def bench_pipeline_memory(plan: Plan) -> dict[str, Any]:
    """Peak RSS of the data pipeline over a small and a large corpus, each in a fresh process."""
    runs = []
    for n in plan.corpus_sizes:
        proc = subprocess.run([sys.executable, str(HERE / "pipeline_rss.py"), str(n)], capture_output=True, text=True,
                              check=True)
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {"runs": runs, "growth_mb": runs[-1]["peak_rss_mb"] - runs[0]["peak_rss_mb"]}


SECTIONS = {"training": bench_training, "extraction": bench_extraction}  # run each in a fresh process


def isolated(section: str, quick: bool, matmul: float, threads: int, retain: bool) -> dict[str, Any]:
    """SECTIONS[section] in a fresh process (its allocator state is not this one's history), optionally after
    `retain_freed_memory`; its result, with that process's own peak RSS and whether retention was applied."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--section", section, "--matmul", str(matmul),
           "--threads", str(threads)] + ["--quick"] * quick + ["--retain"] * retain
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_section(section: str, plan: Plan, matmul: float, retain: bool) -> dict[str, Any]:
    """The body of `isolated`, in the child process."""
    applied = retain_freed_memory() if retain else False
    result = SECTIONS[section](plan, matmul)
    return {"result": result, "retained_memory": applied, "peak_rss_mb": own_peak_rss_mb()}


# ---- targets, table, JSON -------------------------------------------------------------------------------------------


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target: name, value, comparison, threshold, met. Where both were measured the value is the one with
    retained freed memory, which is how the console apps run, and the default allocator's is kept beside it."""
    gen, big, kept = r["generation"]["bench"]["numba"], f"batch{r['plan']['big_batch']}", r["retained_memory"]
    checks = [
        ("training bench samples/s", r["training"]["bench"]["samples_per_s"], ">=", 39_000,
         kept["training"]["bench"]["samples_per_s"]),
        ("training bench fraction of matmul", r["training"]["bench"]["fraction_of_matmul"], ">=", 0.40,
         kept["training"]["bench"]["fraction_of_matmul"]),
        ("generation bench batch 1 samples/s", gen["batch1"]["samples_per_s"], ">=", 5_000, None),
        (f"generation bench {big} aggregate samples/s", gen[big]["samples_per_s"], ">=", 48_000, None),
        ("stretch: generation bench batch 1 samples/s", gen["batch1"]["samples_per_s"], ">=", 16_000, None),
        ("unit extraction paper x real time", r["extraction"]["x_real_time"], ">=", 100,
         kept["extraction"]["x_real_time"]),
        ("unit extraction paper fraction of matmul", r["extraction"]["fraction_of_matmul"], ">=", 0.5,
         kept["extraction"]["fraction_of_matmul"]),
        ("generation flat in receptive field: spread", r["receptive_field"]["spread"], "<=", 0.15, None),
        (f"batching: {big} / batch 1 per-sample speed", r["generation"]["bench"]["batched_speedup_per_sample"],
         ">", 1.0, None),
        ("data pipeline peak RSS growth with corpus size (MiB)", r["pipeline_memory"]["growth_mb"], "<=", 16.0, None),
    ]
    ops = {">=": float.__ge__, "<=": float.__le__, ">": float.__gt__}
    return [{"name": n, "value": float(v if k is None else k), "op": op, "threshold": float(t),
             "met": ops[op](float(v if k is None else k), float(t)),
             "default_allocator_value": None if k is None else float(v)} for n, v, op, t, k in checks]


def _k(x: float) -> str:
    return f"{x / 1000:.1f}k" if x >= 10_000 else f"{x:,.0f}"


def _num(x: float) -> str:
    return _k(x) if abs(x) >= 100 else f"{x:.3g}"


def _training_lines(r: dict[str, Any]) -> list[str]:
    ref = REFERENCE
    lines = ["training (fwd+bwd+Adam)        samples/s  MFLOP/sample  GFLOP/s  of matmul  reference"]
    rows = [*r["training"].items(), *((f"{name}*", t) for name, t in r["retained_memory"]["training"].items())]
    for name, t in rows:
        note = ""
        if name == "bench":
            note = f"{_k(ref['training_samples_per_s'])} ({ref['training_fraction_of_matmul']:.0%})"
        lines.append(f"  {name:<6} {t['batch']} x {t['segment']:<14} {_k(t['samples_per_s']):>9}  "
                     f"{t['flops_per_sample'] / 1e6:12.2f}  {t['gflops']:7.1f}  {t['fraction_of_matmul']:9.1%}  {note}")
    lines.append("  * with retained freed memory (audio_vqvae.device.retain_freed_memory, as the apps run)")
    return lines


def _generation_row(name: str, g: dict[str, Any], batch: str, big: str) -> str:
    """One line of the generation table: a model at one batch size."""
    nb, tb, first = g["numba"][batch], g["torch"][batch], batch == "batch1"
    naive = f"{g['naive']['samples_per_s']:7.1f}" if first else " " * 7
    ratio = f"{g['incremental_over_naive']:9.0f}x" if first else " " * 10
    refs = ""
    if name == "bench":
        refs = (f"{REFERENCE['generation_batch1_samples_per_s']} (naive {REFERENCE['naive_samples_per_s']})" if first
                else _k(REFERENCE["generation_batch16_samples_per_s"]))
    return (f"  {name:<6} RF {g['receptive_field']:<5} {batch:<8} {g['flops_per_sample'] / 1e6:10.2f}  "
            f"{_k(nb['samples_per_s']):>7} ({nb['gflops']:5.1f}, {nb['fraction_of_matmul']:5.1%})  "
            f"{_k(tb['samples_per_s']):>8}  {naive}  {ratio}  {refs}")


def _generation_lines(r: dict[str, Any]) -> list[str]:
    big = f"batch{r['plan']['big_batch']}"
    lines = [("generation samples/s (aggregate)  MFLOP/sample  numba (GFLOP/s, of matmul)   torch      naive   "
              "incr/naive  reference")]
    for name, g in r["generation"].items():
        lines += [_generation_row(name, g, batch, big) for batch in ("batch1", big)]
        lines.append(f"  {'':<6} conditioning (chunked, outside the loop) {g['cond_flops_per_sample'] / 1e3:.1f} "
                     f"kFLOP/sample; {big} per-sample speed-up {g['batched_speedup_per_sample']:.1f}x; naive computes "
                     f"{g['naive']['flops_per_sample'] / 1e9:.2f} GFLOP/sample = {g['naive']['gflops']:.0f} GFLOP/s")
    rf = r["receptive_field"]
    configs = ", ".join(f"{k} RF {v['receptive_field']}: {_k(v['samples_per_s'])}/s" for k, v in rf["configs"].items())
    lines += ["", (f"generation vs receptive field (bench widths, 20 layers, numba batch 1): {configs}; "
                   f"spread {rf['spread']:.1%}")]
    return lines


def _extraction_lines(r: dict[str, Any]) -> list[str]:
    e, kept = r["extraction"], r["retained_memory"]["extraction"]
    lines = [(f"unit extraction (paper encoder + nearest code, {e['pieces']} x {e['piece_seconds']:g} s): "
              f"{e['x_real_time']:.0f}x real time, {e['flops_per_audio_second'] / 1e9:.2f} GFLOP per audio s, "
              f"{e['gflops']:.1f} GFLOP/s = {e['fraction_of_matmul']:.1%} of matmul; with retained freed memory "
              f"{kept['x_real_time']:.0f}x, {kept['fraction_of_matmul']:.1%}")]
    for label, result in (("", e), (" (retained freed memory)", kept)):
        layers = ", ".join(f"{x['layer']} {x['shape']} {x['gflops']:.0f} GFLOP/s ({x['ms']:.1f} ms)"
                           for x in result["layers"])
        lines.append(f"  per layer{label}: {layers}")
    return lines


def _memory_line(r: dict[str, Any]) -> str:
    p = r["pipeline_memory"]
    processes = ", ".join(f"{k} {v:.0f}" for k, v in r["peak_rss_mb"].items())
    pipeline = ", ".join(f"{x['utterances']} utterances {x['peak_rss_mb']:.0f}" for x in p["runs"])
    return f"peak RSS (MiB): {processes}; data pipeline {pipeline} (growth {p['growth_mb']:+.1f})"


def _target_line(t: dict[str, Any]) -> str:
    default = t["default_allocator_value"]
    how = "" if default is None else " with retained freed memory, as the apps run"
    kept = "" if default is None else f"; default allocator {_num(default)}"
    return (f"  {'MET    ' if t['met'] else 'NOT MET'}  {t['name']}: {_num(t['value'])}{how} (target {t['op']} "
            f"{_num(t['threshold'])}{kept})")


def table(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [(f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), "
              f"numba {m['numba']} ({m['numba_threads']} threads); load average before the run "
              f"{r['load_average']:.2f}{'  [QUICK: smoke sizes]' if r['quick'] else ''}"),
             (f"float32 matmul rate {r['matmul_gflops']:.1f} GFLOP/s = the faster of torch.mm "
              f"{r['plan']['matmul_n']}^2 ({r['mm_gflops']:.1f}; {r['matmul_gflops_end']:.1f} at the end) and the same "
              f"product through oneDNN as a 1x1 conv ({r['onednn_gflops']:.1f}); every fraction divides by it"), ""]
    lines += [*_training_lines(r), "", *_generation_lines(r), "", *_extraction_lines(r), "", _memory_line(r)]
    lines += ["", "targets:", *(_target_line(t) for t in r["targets"])]
    return "\n".join(lines)


def default_path(r: dict[str, Any]) -> Path:
    """results/<cpu>-<cores>c-<date>[-quick].json"""
    cpu, suffix = cpu_slug(r["machine"]["cpu"]), "-quick" if r["quick"] else ""
    return HERE / "results" / f"{cpu}-{r['machine']['cores']}c-{r['machine']['date'][:10]}{suffix}.json"


def run(plan: Plan, quick: bool, threads: int) -> dict[str, Any]:
    """Every section; training and extraction in fresh processes, with and without retained freed memory."""
    load = load_average()
    repeats = max(5, plan.repeats)
    mm, dnn = matmul_gflops(plan.matmul_n, repeats), onednn_gflops(plan.matmul_n, repeats)
    matmul = max(mm, dnn)  # the machine's float32 matmul rate: the faster of the two ways torch multiplies matrices
    r: dict[str, Any] = {"machine": machine(), "load_average": load, "quick": quick, "plan": asdict(plan),
                         "matmul_gflops": matmul, "mm_gflops": mm, "onednn_gflops": dnn, "reference": REFERENCE}
    children = {(name, retain): isolated(name, quick, matmul, threads, retain)
                for name in SECTIONS for retain in (False, True)}
    r["training"], r["extraction"] = children["training", False]["result"], children["extraction", False]["result"]
    r["generation"] = bench_generation(plan, matmul)
    r["receptive_field"] = bench_receptive_field(plan)
    r["pipeline_memory"] = bench_pipeline_memory(plan)
    r["retained_memory"] = {"applied": children["training", True]["retained_memory"],
                            "training": children["training", True]["result"],
                            "extraction": children["extraction", True]["result"]}
    r["matmul_gflops_end"] = matmul_gflops(plan.matmul_n, repeats)
    r["peak_rss_mb"] = {"bench": peak_rss_mb()} | {
        f"{name}{'_retained' if retain else ''}": child["peak_rss_mb"] for (name, retain), child in children.items()}
    r["targets"] = targets(r)
    return r


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run of seconds (tiny workloads)")
    parser.add_argument("--threads", type=int, default=2, help="torch and numba threads (default 2)")
    parser.add_argument("--out", type=Path, help="JSON path (default benchmarks/results/<cpu>-<cores>c-<date>.json)")
    parser.add_argument("--section", choices=tuple(SECTIONS), help=argparse.SUPPRESS)  # internal: see `isolated`
    parser.add_argument("--matmul", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--retain", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    plan = QUICK if args.quick else Plan()
    if args.section:
        print(json.dumps(run_section(args.section, plan, args.matmul, args.retain)))
        return
    r = run(plan, args.quick, args.threads)
    print(table(r))
    write_results(r, args.out or default_path(r))


if __name__ == "__main__":
    main()
