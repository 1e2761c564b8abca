"""benchmarks/bench.py --quick runs end to end and writes JSON with every key (structure, not speed)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

RATE = {"batch", "samples", "samples_per_s", "flops_per_sample", "gflops", "fraction_of_matmul"}
TOP = {"machine", "quick", "plan", "matmul_gflops", "mm_gflops", "matmul_gflops_end", "onednn_gflops", "load_average", "reference",
       "training", "extraction", "generation", "receptive_field", "pipeline_memory", "retained_memory", "peak_rss_mb",
       "targets"}


def test_quick_bench_writes_every_key(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench.py"), "--quick", "--out", str(out)],
                          check=False, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "targets:" in proc.stdout
    assert len(re.findall(r"^  (?:MET    |NOT MET)  ", proc.stdout, re.MULTILINE)) == 10  # a status per target, not speed
    r = json.loads(out.read_text())
    assert set(r) == TOP and r["quick"] is True
    assert {"cpu", "cores", "torch", "torch_threads", "numba_threads"} <= set(r["machine"])
    assert r["matmul_gflops"] > 0
    assert set(r["training"]) == {"bench", "paper"}
    for t in r["training"].values():
        assert {"samples_per_s", "flops_per_sample", "gflops", "fraction_of_matmul"} <= set(t)
    assert set(r["generation"]) == {"bench", "paper", "small"}
    for g in r["generation"].values():
        for kernel in ("numba", "torch"):
            assert set(g[kernel]) == {"batch1", "batch16"}
            assert all(set(x) == RATE for x in g[kernel].values())
        assert set(g["naive"]) == RATE
        assert {"receptive_field", "flops_per_sample", "cond_flops_per_sample", "incremental_over_naive",
                "batched_speedup_per_sample"} <= set(g)
    assert [c["receptive_field"] for c in r["receptive_field"]["configs"].values()] == [2047, 125, 76]
    assert "spread" in r["receptive_field"]
    e = r["extraction"]
    assert {"x_real_time", "gflops", "flops_per_audio_second", "fraction_of_matmul", "layers"} <= set(e)
    assert [x["layer"] for x in e["layers"]] == [f"conv{i}" for i in range(1, 7)] + ["proj", "nearest"]
    kept = r["retained_memory"]
    assert set(kept) == {"applied", "training", "extraction"} and set(kept["training"]) == {"bench", "paper"}
    assert {"x_real_time", "fraction_of_matmul", "layers"} <= set(kept["extraction"])
    assert set(r["peak_rss_mb"]) == {"bench", "training", "training_retained", "extraction", "extraction_retained"}
    assert len(r["pipeline_memory"]["runs"]) == 2 and "growth_mb" in r["pipeline_memory"]
    assert all(run["items"] == run["utterances"] for run in r["pipeline_memory"]["runs"])
    assert len(r["targets"]) == 10
    assert all({"name", "value", "op", "threshold", "met", "default_allocator_value"} <= set(t) for t in r["targets"])
