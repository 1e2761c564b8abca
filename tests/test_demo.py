"""The README's first command (demo.sh) end to end, with a tiny model so it runs in seconds, then the eval command on
the checkpoint it leaves (with the demo corpus's phone labels)."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import soundfile as sf

from audio_vqvae.cli.eval import main as eval_main
from audio_vqvae.model import VQVAE
from audio_vqvae.unitfile import read_units

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("audio-vqvae-train") is None, reason="console scripts not installed (pip install -e .)")
def test_demo_script_trains_extracts_units_resynthesises_and_converts(tmp_path):
    run = tmp_path / "demo"
    proc = subprocess.run(
        ["bash", str(REPO / "demo.sh"), str(run), "model=tiny", "trainer.max_steps=4", "trainer.val_every=2",
         "trainer.ckpt_every=2", "trainer.num_workers=0", "data.segment_length=1024"],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "SPEECH_OVERRIDES": "speech=tiny trainer.max_steps=2 segment_frames=160"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "checkpoints" / "best.pt").is_file() and (run / "checkpoints" / "last.pt").is_file()
    assert VQVAE.from_checkpoint(str(run / "speech" / "checkpoints" / "last.pt")).speech is not None
    units = read_units(run / "units" / "demo.txt")
    assert len(units) == 168
    for name in ["gb_f", "sc_m", "cb_f"]:
        wav, sr = sf.read(run / "wav" / f"gb_f_031_to_{name}.wav")
        assert sr == 16000 and len(wav) == len(units["gb_f_031"]) * 16  # tiny model: hop 16
    assert "model:" in proc.stdout
    eval_dir = tmp_path / "eval"
    eval_main([str(run / "checkpoints" / "best.pt"), "--out", str(eval_dir), "--max-utterances", "3",
               "--max-seconds", "1", "--n-resynth", "1", "--n-convert", "1", "--resynth-seconds", "0.1",
               "--abx-triplets", "50", "--posterior-positions", "2", "--device", "cpu"])
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    assert metrics["data"]["source"].startswith("demo at ") and metrics["data"]["split"] == "val"
    assert "datasets/demo (val split: data.val_per_speaker=" in metrics["data"]["source"]
    phones = metrics["units"]["model"]["phones"]
    assert phones["n_phones"] > 10 and 0 <= phones["pnmi"] <= 1 and metrics["elbo"]["bits_per_sample"] > 0
    assert all((eval_dir / f).is_file() for f in ["report.md", "codebook_usage.png", "unit_phone_cooccurrence.png",
                                                  "resynthesis.png"])


def test_demo_script_with_the_shipped_model_extracts_units_and_converts(tmp_path):
    """`bash demo.sh --pretrained`: the shipped pretrained directory loads in every app (no training)."""
    out = tmp_path / "pre"
    proc = subprocess.run(["bash", str(REPO / "demo.sh"), "--pretrained", str(out)], cwd=REPO, capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    units = read_units(out / "units" / "demo.txt")
    assert len(units) == 168 and max(int(u.max()) for u in units.values()) < 64
    for name in ["gb_f", "sc_m", "cb_f"]:
        wav, sr = sf.read(out / "wav" / f"gb_f_031_to_{name}.wav")
        assert sr == 16000 and len(wav) == len(units["gb_f_031"]) * 240  # 66.7 units per second
