"""Training library and app: run directory, checkpoints, exact resume, refusal of unsafe files, non-finite steps, DDP."""
from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import torchrun
from hydra import compose, initialize_config_dir

from audio_vqvae import quantizer as quantizer_mod
from audio_vqvae.checkpoint import load_checkpoint
from audio_vqvae.config import CONFIG_DIR
from audio_vqvae.model import VQVAE
from audio_vqvae.training import base as base_mod
from audio_vqvae.training import vqvae as train_mod
from audio_vqvae.training.runs import resume_mode

CONFIGS = CONFIG_DIR


def make_corpus(root: Path, speakers: int = 3, utts: int = 4, seconds: float = 0.3) -> Path:
    rng = np.random.default_rng(0)
    for s in range(speakers):
        for u in range(utts):
            t = np.arange(int(seconds * 16000)) / 16000
            wav = 0.4 * np.sin(2 * np.pi * (150 + 40 * s + 10 * u) * t) + 0.02 * rng.standard_normal(t.size)
            path = root / f"spk{s}" / f"spk{s}_{u:02d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, wav.astype(np.float32), 16000)
            (root / "alignments").mkdir(exist_ok=True)  # phone alignments: the unit curves report PNMI
            (root / "alignments" / f"{path.stem}.tsv").write_text(f"0.0\t0.1\tsil\n0.1\t{seconds}\ta{s}\n")
    return root


def config(tmp_path: Path, *overrides: str):
    base = [
        "model=tiny", "data=folder", f"data.root={tmp_path / 'corpus'}", "data.segment_length=1024",
        "data.val_per_speaker=1", "data.val_max_seconds=0.25", f"run_dir={tmp_path / 'run'}",
        "trainer.batch_size=2", "trainer.num_workers=0", "trainer.max_steps=6", "trainer.val_every=3",
        "trainer.ckpt_every=2", "trainer.log_every=1", "trainer.keep_last=2", "trainer.warmup_steps=2",
        "trainer.deterministic=true", "trainer.val_examples=1",
    ]
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=base + list(overrides))


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return make_corpus(tmp_path / "corpus")


def scalar_tags(run: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    return set(EventAccumulator(str(run / "tb")).Reload().Tags()["scalars"])


def test_short_run_writes_run_directory_and_loadable_checkpoints(tmp_path, corpus, caplog):
    with caplog.at_level("INFO", logger="audio_vqvae.training"):
        train_mod.train(config(tmp_path))
    run = tmp_path / "run"
    assert {"units/pnmi", "units/entropy_bits_per_second", "units/agreement_gain_+6dB"} <= scalar_tags(run)
    assert sum("validation:" in r.message and "PNMI" in r.message and "bits/s" in r.message
               for r in caplog.records) == 3  # steps 0, 3 and 6
    for name in ["config.yaml", "speakers.json", "version.json", "skipped.tsv", "checkpoints/last.pt", "checkpoints/best.pt"]:
        assert (run / name).is_file(), name
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*.pt")) == ["step-00000004.pt", "step-00000006.pt"]
    for name in ["last.pt", "best.pt"]:
        raw = torch.load(run / "checkpoints" / name, weights_only=True)
        assert raw["speakers"] == ["spk0", "spk1", "spk2"] and raw["config"]["model"]["name"] == "tiny"
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["step"] == 6 and last["resume"]["state"]["finished"]
    model = VQVAE.from_checkpoint(run / "checkpoints" / "best.pt")
    assert model.speakers == ["spk0", "spk1", "spk2"]


def test_unit_curves_can_be_switched_off(tmp_path, corpus):
    train_mod.train(config(tmp_path, "trainer.max_steps=1", "trainer.unit_curves=false"))
    assert not any(tag.startswith("units/") for tag in scalar_tags(tmp_path / "run"))


def test_existing_run_is_not_overwritten(tmp_path, corpus):
    train_mod.train(config(tmp_path, "trainer.max_steps=2"))
    with pytest.raises(FileExistsError, match="already holds a run"):
        train_mod.train(config(tmp_path, "trainer.max_steps=2"))
    with pytest.raises(ValueError, match="different model/data/seed"):
        train_mod.train(config(tmp_path, "trainer.max_steps=4", "trainer.resume=true", "model.quantizer.codebook_size=8"))


def test_resume_modes(tmp_path, corpus):
    with pytest.raises(FileNotFoundError, match="trainer.resume=always: no checkpoint"):
        train_mod.train(config(tmp_path, "trainer.resume=always"))
    train_mod.train(config(tmp_path, "trainer.resume=auto", "trainer.max_steps=2"))  # nothing there: starts
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 2
    train_mod.train(config(tmp_path, "trainer.resume=auto", "trainer.max_steps=4"))  # a run there: continues it
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 4
    with pytest.raises(FileExistsError, match="trainer.resume=auto"):
        train_mod.train(config(tmp_path, "trainer.resume=never"))
    assert [resume_mode(v) for v in (True, False, None, "auto", "x.pt")] == ["always", "never", "never",
                                                                                        "auto", "x.pt"]


def test_resume_with_another_batch_size_is_refused(tmp_path, corpus):
    train_mod.train(config(tmp_path, "trainer.max_steps=2"))
    message = (r"was trained with world_size=1 trainer.batch_size=2, this run has world_size=1 trainer.batch_size=3; "
               "resume needs the same values")
    with pytest.raises(ValueError, match=message):
        train_mod.train(config(tmp_path, "trainer.resume=auto", "trainer.max_steps=4", "trainer.batch_size=3"))


def test_files_shorter_than_one_latent_frame_are_skipped_and_reported(tmp_path, corpus):
    sf.write(corpus / "spk0" / "spk0_tiny.wav", np.full(10, 0.1, np.float32), 16000)
    train_mod.train(config(tmp_path, "trainer.max_steps=1", "data.val_per_speaker=2"))
    report = (tmp_path / "run" / "skipped.tsv").read_text()
    assert "spk0_tiny.wav\ttoo short: 10 samples at 16000 Hz, less than one frame (16 samples)" in report


def test_first_sigterm_asks_to_stop_a_second_one_is_not_caught():
    def outer(signum, frame):
        pass

    previous = signal.signal(signal.SIGTERM, outer)
    try:
        with train_mod.Preemption() as preemption:
            os.kill(os.getpid(), signal.SIGTERM)
            assert preemption.requested and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # next one kills
        assert signal.getsignal(signal.SIGTERM) is outer  # the caller's handler is back
    finally:
        signal.signal(signal.SIGTERM, previous)


class Stop(Exception):
    pass


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_after_interruption_matches_uninterrupted_run(tmp_path, corpus, monkeypatch, workers):
    """Exact resume, also with persistent DataLoader workers (they follow set_epoch through shared memory)."""
    full = train_mod.train(config(tmp_path / "a", f"data.root={corpus}", f"trainer.num_workers={workers}"))
    forward = VQVAE.forward
    calls = {"n": 0}

    def dying_forward(self, *args, **kwargs):
        if self.training:
            calls["n"] += 1
            if calls["n"] == 6:  # after the step-4 checkpoint, in the middle of step 5's batch
                raise Stop()
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(VQVAE, "forward", dying_forward)
    with pytest.raises(Stop):
        train_mod.train(config(tmp_path / "b", f"data.root={corpus}", f"trainer.num_workers={workers}"))
    monkeypatch.setattr(VQVAE, "forward", forward)
    assert load_checkpoint(tmp_path / "b" / "run" / "checkpoints" / "last.pt")["step"] == 4
    resumed = train_mod.train(config(tmp_path / "b", f"data.root={corpus}", "trainer.resume=true",
                                     f"trainer.num_workers={workers}"))
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert load_checkpoint(tmp_path / "b" / "run" / "checkpoints" / "last.pt")["step"] == 6


def test_resume_after_sigkill(tmp_path, corpus):
    """A process killed hard leaves an intact last.pt that resume continues from."""
    args = [f"data.root={corpus}", f"run_dir={tmp_path / 'run'}", "model=tiny", "data=folder", "data.segment_length=1024",
            "data.val_per_speaker=1", "data.val_max_seconds=0.25", "trainer.batch_size=2", "trainer.num_workers=0",
            "trainer.max_steps=400", "trainer.val_every=1000", "trainer.ckpt_every=1", "trainer.keep_last=0"]
    proc = subprocess.Popen([sys.executable, "-m", "audio_vqvae.cli.train", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    try:
        for _ in range(3000):  # up to 5 minutes: a busy machine starts the app slowly
            if last.exists() and load_checkpoint(last)["step"] >= 3:
                break
            proc.poll()
            assert proc.returncode is None, "training exited early"
            time.sleep(0.1)
    finally:
        proc.kill()
        proc.wait()
    step = load_checkpoint(last)["step"]
    assert 3 <= step < 400
    cfg = config(tmp_path, f"data.root={corpus}", "trainer.resume=true", f"trainer.max_steps={step + 2}",
                 "trainer.ckpt_every=1", "trainer.keep_last=0", "trainer.val_every=1000")
    train_mod.train(cfg)
    assert load_checkpoint(last)["step"] == step + 2


def test_sigterm_writes_last_checkpoint_and_resume_matches_uninterrupted_run(tmp_path, corpus):
    """SIGTERM to the whole process group (as Slurm and torchrun send it), with 2 DataLoader workers: the workers
    ignore it, the step in flight finishes, last.pt is written at it, the process exits 0; resume=auto then reaches
    the same weights as a run that was never stopped (constant lr, so max_steps does not shape the run)."""
    common = ["trainer.lr_schedule=constant", "trainer.warmup_steps=2", "trainer.val_every=1000", "trainer.keep_last=0"]
    args = [f"data.root={corpus}", f"run_dir={tmp_path / 'b' / 'run'}", "model=tiny", "data=folder",
            "data.segment_length=1024", "data.val_per_speaker=1", "data.val_max_seconds=0.25", "trainer.batch_size=2",
            "trainer.num_workers=2", "trainer.max_steps=400", "trainer.ckpt_every=2", "trainer.deterministic=true",
            *common]
    # one thread everywhere: a multi-threaded BLAS may use fewer threads on a busy machine, and another summation
    # order is not bit-identical
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "audio_vqvae.cli.train", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    last = tmp_path / "b" / "run" / "checkpoints" / "last.pt"
    try:
        deadline = time.monotonic() + 300  # a busy machine starts the app slowly
        while not (last.exists() and load_checkpoint(last)["step"] >= 2):
            assert proc.poll() is None and time.monotonic() < deadline, "training exited early or never checkpointed"
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGTERM)  # the main process and its DataLoader workers
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr[-2000:]
    step = load_checkpoint(last)["step"]
    assert 2 <= step < 400 and not load_checkpoint(last)["resume"]["state"]["finished"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        resumed = train_mod.train(config(tmp_path / "b", f"data.root={corpus}", "trainer.resume=auto",
                                         f"trainer.max_steps={step + 2}", "trainer.num_workers=2", *common))
        full = train_mod.train(config(tmp_path / "a", f"data.root={corpus}", f"trainer.max_steps={step + 2}",
                                      "trainer.num_workers=2", *common))
    finally:
        torch.set_num_threads(threads)
    assert_same_weights(full.state_dict(), resumed.state_dict())


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_checkpoint_needing_arbitrary_unpickling_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "audio-vqvae-checkpoint", "format_version": 1, "payload": Evil()}, path)
    with pytest.raises(ValueError, match="refused: loading it needs arbitrary unpickling"):
        load_checkpoint(path)
    with pytest.raises(ValueError, match="refused"):
        VQVAE.from_checkpoint(path)
    with open(tmp_path / "plain.pkl", "wb") as f:
        pickle.dump(Evil(), f)
    with pytest.raises(ValueError):
        load_checkpoint(tmp_path / "plain.pkl")


def test_nonfinite_loss_is_skipped_and_counted(tmp_path, corpus, monkeypatch):
    forward = VQVAE.forward
    calls = {"n": 0}

    def nan_once(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        if self.training:
            calls["n"] += 1
            if calls["n"] == 3:
                out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(VQVAE, "forward", nan_once)
    train_mod.train(config(tmp_path))
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["resume"]["state"]
    assert state["step"] == 6 and state["nonfinite_total"] == 1 and state["nonfinite_consecutive"] == 0


def test_too_many_nonfinite_losses_stop_the_run(tmp_path, corpus, monkeypatch):
    forward = VQVAE.forward

    def always_nan(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(VQVAE, "forward", always_nan)
    with pytest.raises(RuntimeError, match="3 non-finite losses in a row"):
        train_mod.train(config(tmp_path, "trainer.max_nonfinite=3"))


def ddp_train(tmp_path: Path, corpus: Path, *overrides: str, env: dict[str, str] | None = None) -> list[dict]:
    """Train with 2 gloo processes; returns each rank's final state dict (index = rank)."""
    return torchrun(tmp_path / "ranks", "train", [
        "model=tiny", "data=folder", f"data.root={corpus}", "data.segment_length=1024", "data.val_per_speaker=1",
        "data.val_max_seconds=0.25", f"run_dir={tmp_path / 'run'}", "trainer.batch_size=2", "trainer.num_workers=0",
        "trainer.max_steps=4", "trainer.val_every=2", "trainer.ckpt_every=2", *overrides], env)


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k, value in a.items():
        assert torch.equal(value, b[k]), k


def test_torchrun_two_processes_end_with_identical_weights_and_codebooks(tmp_path, corpus):
    a, b = ddp_train(tmp_path, corpus)
    assert_same_weights(a, b)
    assert "quantizer.embed" in a and "quantizer.ema_cluster_size" in a
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 4


def test_torchrun_nonfinite_loss_on_one_rank_is_skipped_by_every_rank(tmp_path, corpus):
    """Only rank 1 sees a NaN loss: both ranks skip that step together (no hang in the gradient all-reduce)."""
    a, b = ddp_train(tmp_path, corpus, env={"NAN_ON_RANK": "1"})
    assert_same_weights(a, b)
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["resume"]["state"]
    assert state["step"] == 4 and state["nonfinite_total"] == 1 and all(torch.isfinite(v).all() for v in a.values())


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_runs_and_keeps_the_codebook_float32(tmp_path, corpus, precision, monkeypatch):
    """Autocast really lowers the decoder's convolutions, while the quantizer's distances stay float32."""
    seen: dict[str, set] = {"conv": set(), "distances": set(), "loss": set()}
    conv_forward, step = torch.nn.Conv1d.forward, train_mod.Trainer.train_step

    def recording_conv(self, x):
        out = conv_forward(self, x)
        seen["conv"].add(out.dtype)
        return out

    def nearest(flat, codebook):
        distances = torch.addmm(codebook.square().sum(1), flat, codebook.t(), alpha=-2.0)  # as quantizer._nearest
        seen["distances"].add(distances.dtype)
        return distances.argmin(1)

    def recording_step(self, wav, speaker):
        out = step(self, wav, speaker)
        seen["loss"].add(out.loss.dtype)
        return out

    monkeypatch.setattr(torch.nn.Conv1d, "forward", recording_conv)
    monkeypatch.setattr(quantizer_mod, "_nearest", nearest)
    monkeypatch.setattr(train_mod.Trainer, "train_step", recording_step)
    train_mod.train(config(tmp_path, f"trainer.precision={precision}", "trainer.max_steps=2",
                           "trainer.deterministic=false"))
    assert base_mod.autocast_dtype(precision) in seen["conv"]
    assert seen["distances"] == {torch.float32} and seen["loss"] == {torch.float32}
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["resume"]
    assert state["state"]["step"] == 2 and "scaler" in state


def test_unknown_precision_and_device_are_named(tmp_path, corpus):
    with pytest.raises(ValueError, match="trainer.precision"):
        train_mod.train(config(tmp_path, "trainer.precision=fp8"))
    with pytest.raises(ValueError, match="device=cuda:3"):
        train_mod.train(config(tmp_path, "device=cuda:3"))


def test_validation_accumulator_sums_whole_set_elbo_and_perplexity():
    from types import SimpleNamespace

    from audio_vqvae.metrics import ELBOAccumulator, elbo_terms

    total = ELBOAccumulator()
    total.add(SimpleNamespace(nll=torch.tensor(100.0), n_samples=64, n_latents=4, counts=torch.tensor([4.0, 0, 0, 0])))
    total.add(SimpleNamespace(nll=torch.tensor(60.0), n_samples=32, n_latents=2, counts=torch.tensor([0.0, 2, 0, 0])))
    result = total.result(codebook_size=4, sample_rate=16000)
    assert result["reconstruction_loss"] == pytest.approx(160 / 96)
    assert result["bits_per_sample"] == pytest.approx(elbo_terms(160.0, 96, 6, 4, 16000)["bits_per_sample"])
    assert result["perplexity"] == pytest.approx(np.exp(-(2 / 3 * np.log(2 / 3) + 1 / 3 * np.log(1 / 3))))
    assert result["used_codes"] == 2
    with pytest.raises(ValueError, match="no samples"):
        ELBOAccumulator().result(4, 16000)


def test_validation_line_prints_no_negative_zero_bitrate_for_collapsed_units():
    assert train_mod.curves_text({"units/entropy_bits_per_second": -0.0}) == "  unit bitrate 0 bits/s"
