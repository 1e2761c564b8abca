"""The README's first command (demo.sh) end to end, with a tiny model so it runs in seconds."""
import shutil
import subprocess
from pathlib import Path

import pytest
import soundfile as sf

from audio_vqvae.units import read_units

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("audio-vqvae-train") is None, reason="console scripts not installed (pip install -e .)")
def test_demo_script_trains_extracts_units_resynthesises_and_converts(tmp_path):
    run = tmp_path / "demo"
    proc = subprocess.run(
        ["bash", str(REPO / "demo.sh"), str(run), "model=tiny", "trainer.max_steps=4", "trainer.val_every=2",
         "trainer.ckpt_every=2", "trainer.num_workers=0", "data.segment_length=1024"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "checkpoints" / "best.pt").is_file() and (run / "checkpoints" / "last.pt").is_file()
    units = read_units(run / "units" / "demo.txt")
    assert len(units) == 168
    for name in ["gb_f", "sc_m", "cb_f"]:
        wav, sr = sf.read(run / "wav" / f"gb_f_031_to_{name}.wav")
        assert sr == 16000 and len(wav) == len(units["gb_f_031"]) * 16  # tiny model: hop 16
    assert "checkpoint:" in proc.stdout
