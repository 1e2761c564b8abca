"""Checkpoints and pretrained directories: safe loading, export round trip, clear errors."""
import json

import pytest
import torch
from helpers import make_checkpoint, noise_signal

from audio_vqvae.checkpoint import CONFIG_FILE, WEIGHTS_FILE, file_sha256, load_checkpoint, save_pretrained
from audio_vqvae.cli.export import main as export_main
from audio_vqvae.model import VQVAE


def test_export_round_trip_gives_the_same_model(tmp_path):
    ckpt = make_checkpoint(tmp_path / "tiny.pt")
    export_main([str(ckpt), str(tmp_path / "pre")])
    pre = tmp_path / "pre"
    assert sorted(p.name for p in pre.iterdir()) == sorted([WEIGHTS_FILE, CONFIG_FILE])
    meta = json.loads((pre / CONFIG_FILE).read_text())
    assert meta["format"] == "audio-vqvae-pretrained" and meta["format_version"] == 1 and "resume" not in meta
    a, b = VQVAE.from_checkpoint(str(ckpt)), VQVAE.from_pretrained(str(pre))
    assert a.speakers == b.speakers and a.peak_normalize == b.peak_normalize
    for (k, v), (k2, v2) in zip(a.state_dict().items(), b.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    wav = torch.from_numpy(noise_signal(0.5, seed=1))
    assert torch.equal(a.encode(wav, 16000), b.encode(wav, 16000))
    assert file_sha256(pre) == file_sha256(pre / WEIGHTS_FILE)


def test_from_pretrained_refuses_a_file_and_bad_directories_are_named(tmp_path):
    ckpt = make_checkpoint(tmp_path / "tiny.pt")
    with pytest.raises(ValueError, match="from_pretrained takes a pretrained model directory"):
        VQVAE.from_pretrained(str(ckpt))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="not a pretrained model directory"):
        load_checkpoint(empty)
    pre = save_pretrained(tmp_path / "pre", load_checkpoint(ckpt))
    (pre / WEIGHTS_FILE).write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="not a readable pretrained model"):
        load_checkpoint(pre)
    pre = save_pretrained(tmp_path / "pre2", load_checkpoint(ckpt))
    meta = json.loads((pre / CONFIG_FILE).read_text()) | {"format_version": 99}
    (pre / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="version 99"):
        load_checkpoint(pre)
