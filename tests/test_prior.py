"""Stage two: the unit prior (causality, log_prob, sampling), its ELBO bookkeeping, its training (exact resume, from a
corpus, mixed precision, DDP) and the score CLI."""
from __future__ import annotations

import math
import os
import signal

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import SPEAKERS, assert_same_units, make_checkpoint, torchrun, write_mixed_corpus, write_wav
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from audio_vqvae.checkpoint import file_sha256, load_checkpoint, save_checkpoint
from audio_vqvae.cli import generate, score_units
from audio_vqvae.config import CONFIG_DIR
from audio_vqvae.data import load_corpus, split_corpus
from audio_vqvae.metrics import elbo_terms, elbo_with_prior
from audio_vqvae.model import VQVAE
from audio_vqvae.prior.model import UnitPrior
from audio_vqvae.prior.training import PriorTrainer, train_prior
from audio_vqvae.training.base import autocast_dtype
from audio_vqvae.unitfile import UnitsSidecar, load_units, read_speaker_map

K = 8
TINY = {"d_model": 16, "n_layers": 2, "n_heads": 2, "d_ff": 32, "dropout": 0.0, "speaker_conditioning": True}


def tiny_prior(seed: int = 0) -> UnitPrior:
    torch.manual_seed(seed)
    return UnitPrior(K, ["a", "b"], **TINY).eval()


def write_units(path, n_utts: int = 12, seed: int = 0):
    """A toy units file (speakers a and b by id prefix) with its sidecar."""
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        for i in range(n_utts):
            units = rng.integers(0, K, int(rng.integers(5, 30)))
            f.write(f"{'ab'[i % 2]}_{i:03d}\t{' '.join(map(str, units))}\n")
    UnitsSidecar(50.0, 16000, 320, K, "toy.pt", "0" * 64, False, None).write(f"{path}.json")
    return path


def test_changing_a_unit_changes_no_prediction_at_or_before_it():
    prior = tiny_prior()
    units, speaker = torch.randint(0, K, (2, 12)), torch.tensor([0, 1])
    base = prior(units, speaker)
    for t in (0, 5, 11):
        changed = units.clone()
        changed[:, t] = (changed[:, t] + 1) % K
        out = prior(changed, speaker)
        torch.testing.assert_close(out[:, : t + 1], base[:, : t + 1])
        if t < 11:
            assert not torch.allclose(out[:, t + 1 :], base[:, t + 1 :])


@torch.no_grad()
def test_log_prob_matches_a_prefix_by_prefix_hand_computation_and_ignores_padding():
    prior = tiny_prior()
    units, speaker = torch.randint(0, K, (1, 7)), torch.tensor([1])
    by_hand = sum(float(prior(units[:, : t + 1], speaker)[0, t].log_softmax(-1)[units[0, t]]) for t in range(7))
    padded = torch.cat([units, torch.randint(0, K, (1, 3))], 1)
    assert float(prior.log_prob(padded, torch.tensor([7]), speaker)[0]) == pytest.approx(by_hand, abs=1e-4)
    per_unit = prior.unit_log_probs(units, speaker)
    assert per_unit.shape == (1, 7) and float(per_unit.sum()) == pytest.approx(by_hand, abs=1e-4)


def test_uniform_prior_reproduces_the_uniform_elbo():
    prior = tiny_prior()
    torch.nn.init.zeros_(prior.head.weight)
    torch.nn.init.zeros_(prior.head.bias)
    units = torch.randint(0, K, (3, 10))
    lengths = torch.tensor([10, 4, 7])
    logp = prior.log_prob(units, lengths, torch.tensor([0, 1, 0]))
    torch.testing.assert_close(logp, -lengths.double().float() * math.log(K))
    n_latents, n_samples = int(lengths.sum()), int(lengths.sum()) * 320
    both = elbo_with_prior(1234.5, float(logp.sum().detach()), n_samples, n_latents, K, 16000)
    uniform = elbo_terms(1234.5, n_samples, n_latents, K, 16000)
    assert n_latents == 21  # 21 latents of K = 8: T_z ln K = 21 x 2.0794415 = 43.668272 nats
    assert both["kl_nats_prior"] == pytest.approx(43.668272, abs=1e-5)
    assert both["kl_nats_uniform"] == pytest.approx(43.668272, abs=1e-5)
    assert both["bits_per_sample_prior"] == pytest.approx((1234.5 + 43.668272) / (6720 * 0.6931472), rel=1e-6)
    assert both["bits_per_sample_prior"] == pytest.approx(uniform["bits_per_sample"])
    assert both["kl_bits_per_second_uniform"] == pytest.approx(150.0)  # 50 latents per second x 3 bits


def test_learned_prior_elbo_by_hand():
    m = elbo_with_prior(total_nll_nats=100.0, log_prior_nats=-30.0, n_samples=1000, n_latents=10, codebook_size=16,
                        sample_rate=16000)
    assert m["bits_per_sample_prior"] == pytest.approx(130.0 / (1000 * math.log(2)))
    assert m["bits_per_sample_uniform"] == pytest.approx((100.0 + 10 * math.log(16)) / (1000 * math.log(2)))
    assert m["kl_bits_per_second_prior"] == pytest.approx(30.0 / math.log(2) * 16)  # 1000 samples = 1/16 s
    assert m["kl_bits_per_second_uniform"] == pytest.approx(10 * 4 * 16)


def test_sampling_one_position_at_a_time_gives_the_forward_pass_logits():
    """The incremental step (each layer's earlier inputs cached), which reads a prompt and feeds each sampled unit
    back, gives the causal forward's logits at every position; sampling runs in eval mode and restores the mode."""
    torch.manual_seed(0)
    prior, spk = UnitPrior(K, ["a", "b"], **(TINY | {"dropout": 0.3})), torch.tensor([1, 0])
    units = torch.randint(0, K, (2, 9))
    full = prior.eval()(units, spk)
    cache = [torch.zeros(2, 0, TINY["d_model"]) for _ in prior.transformer.layers]
    tokens = torch.cat([torch.full((2, 1), K), units[:, :-1]], 1)
    with torch.no_grad():
        steps = torch.stack([prior._step(prior._embed(tokens[:, t : t + 1], t, spk), cache) for t in range(9)], 1)
    torch.testing.assert_close(steps, full, rtol=1e-5, atol=1e-5)
    prior.train()
    prior.sample(2, 3, spk, generator=torch.Generator().manual_seed(0))
    assert prior.training  # sampling ran in eval mode and put the mode back


def test_sampling_shapes_seeds_top_k_and_prompt():
    prior, spk = tiny_prior(), torch.tensor([0, 0, 1])

    def draw(seed, **kw):
        return prior.sample(3, 6, spk, generator=torch.Generator().manual_seed(seed), **kw)

    a = draw(1)
    assert a.shape == (3, 6) and a.dtype == torch.long and int(a.max()) < K
    assert torch.equal(a, draw(1)) and not torch.equal(a, draw(2))
    greedy = draw(3, top_k=1)
    assert torch.equal(greedy, draw(4, top_k=1))
    assert torch.equal(prior(greedy, spk).argmax(-1), greedy)
    prompt = torch.tensor([1, 2, 3])
    cont = draw(5, prompt=prompt, temperature=0.7, top_k=3)
    assert cont.shape == (3, 9) and torch.equal(cont[:, :3], prompt.expand(3, -1))
    with pytest.raises(ValueError, match="temperature"):
        draw(1, temperature=0)


def config(tmp_path, units, *overrides):
    """A tiny prior run on the units file `units` (None: give vqvae= and data= in overrides)."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("prior", overrides=[
            *([f"units.path={units}"] if units else []), f"run_dir={tmp_path}", "device=cpu", "units.max_frames=16", "units.val_fraction=0.5",
            "trainer.batch_size=4", "trainer.val_every=2", "trainer.ckpt_every=2", "trainer.warmup_steps=1",
            "trainer.keep_last=1", "trainer.lr_schedule=constant", *[f"prior.{k}={v}" for k, v in TINY.items()], "prior.dropout=0.1", *overrides])


def test_resumed_prior_training_matches_an_uninterrupted_run(tmp_path):
    units = write_units(tmp_path / "units.txt")
    full = train_prior(config(tmp_path / "a", units, "trainer.max_steps=6"))
    train_prior(config(tmp_path / "b", units, "trainer.max_steps=3"))
    resumed = train_prior(config(tmp_path / "b", units, "trainer.max_steps=6", "trainer.resume=auto"))
    for k, v in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=0, msg=k)
    assert (tmp_path / "a" / "checkpoints" / "best.pt").exists()


def test_training_straight_from_a_corpus_writes_its_splits_units_and_a_rerun_resumes(tmp_path, caplog):
    """vqvae= and data=: the training and validation utterances' units (as the VQ-VAE encodes them) and
    their speakers go to <run_dir>/units/; bad files are listed; a rerun resumes without encoding anything again."""
    ckpt, wavs, run = make_checkpoint(tmp_path / "vq.pt"), write_mixed_corpus(tmp_path / "wavs"), tmp_path / "run"
    corpus = [f"vqvae={ckpt}", "data=folder", f"data.root={wavs}", "data.val_per_speaker=1"]
    prior = train_prior(config(run, None, *corpus, "trainer.max_steps=2"))
    units_dir, model = run / "units", VQVAE.from_checkpoint(str(ckpt))
    train, val = load_units(units_dir / "train.txt", 16), load_units(units_dir / "val.txt", 16)
    assert sorted([*train, *val]) == ["spk1_a", "spk1_b", "spk2_c", "spk2_d"] and len(train) == len(val) == 2
    for utt_id, codes in {**train, **val}.items():
        speaker, name = utt_id.split("_")
        assert_same_units(codes, model, wavs / speaker / f"{name}.wav")
    assert read_speaker_map(units_dir / "speakers.tsv") == {u: u.split("_")[0] for u in [*train, *val]}
    skipped = (units_dir / "train.txt.skipped.tsv").read_text()
    assert all(name in skipped for name in ("empty.wav", "text.flac"))
    assert prior.speakers == ["spk1", "spk2"] and prior.codebook_size == 16
    caplog.clear()
    with caplog.at_level("INFO", logger="audio_vqvae.extract"):
        train_prior(config(run, None, *corpus, "trainer.max_steps=4", "trainer.resume=auto"))
    assert "train.txt: 0 utterances to encode (2 already done)" in caplog.text
    assert load_units(units_dir / "train.txt", 16).keys() == train.keys()
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 4


def test_units_file_and_corpus_are_one_or_the_other(tmp_path):
    units = write_units(tmp_path / "units.txt")
    for overrides, match in [((), "units.path=FILE .* or vqvae=CHECKPOINT"), ((units, "vqvae=x.pt"), "not both"),
                             ((None, "vqvae=x.pt"), "needs both vqvae=CHECKPOINT and data=NAME")]:
        with pytest.raises(ValueError, match=match):
            train_prior(config(tmp_path / "run", *(overrides or (None,))))


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_prior_training_runs_in_the_autocast_dtype(tmp_path, precision, monkeypatch):
    """Autocast lowers the Transformer's linear layers; training ends finite; fp16 keeps a GradScaler to resume."""
    seen, linear = set(), torch.nn.Linear.forward

    def recording(self, x):
        out = linear(self, x)
        seen.add(out.dtype)
        return out

    monkeypatch.setattr(torch.nn.Linear, "forward", recording)
    prior = train_prior(config(tmp_path, write_units(tmp_path / "units.txt"), f"trainer.precision={precision}",
                               "trainer.max_steps=3"))
    assert autocast_dtype(precision) in seen
    assert all(torch.isfinite(p).all() for p in prior.parameters())
    resume = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["resume"]
    assert resume["state"]["step"] == 3 and "scaler" in resume
    assert all(h["nll_per_unit"] > 0 for h in resume["state"]["history"])


def test_torchrun_two_processes_train_one_prior(tmp_path):
    """DDP with 2 gloo ranks (each its own batches, see test_each_rank_draws_its_own_batches_and_a_retry_another): both
    end with the same weights, rank 0 checkpoints."""
    units = write_units(tmp_path / "units.txt")
    a, b = torchrun(tmp_path / "ranks", "prior", [
        f"units.path={units}", f"run_dir={tmp_path / 'run'}", "device=cpu", "units.max_frames=16",
        "trainer.batch_size=4", "trainer.max_steps=4", "trainer.val_every=2", "trainer.ckpt_every=2",
        *[f"prior.{k}={v}" for k, v in TINY.items()]])
    assert a.keys() == b.keys() and all(torch.equal(v, b[k]) for k, v in a.items())
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert ckpt["step"] == 4 and ckpt["resume"]["identity"]["world_size"] == 2


def test_score_cli_writes_one_row_per_utterance(tmp_path):
    units = write_units(tmp_path / "units.txt")
    train_prior(config(tmp_path / "run", units, "trainer.max_steps=2"))
    out = tmp_path / "scores.tsv"
    score_units.main(["-p", str(tmp_path / "run" / "checkpoints" / "last.pt"), str(units), "-o", str(out),
                      "--device", "cpu"])
    rows = [line.split("\t") for line in out.read_text().splitlines()]
    assert rows[0] == ["utt_id", "n_units", "log_prob", "bits_per_unit"] and len(rows) == 13
    prior = UnitPrior.from_checkpoint(str(tmp_path / "run" / "checkpoints" / "last.pt"))
    first = units.read_text().splitlines()[0].split("\t")
    codes = torch.tensor([[int(u) for u in first[1].split()]])
    expected = float(prior.log_prob(codes, torch.tensor([codes.shape[1]]), torch.tensor([0]))[0])
    assert rows[1][0] == first[0] and int(rows[1][1]) == codes.shape[1]
    assert float(rows[1][2]) == pytest.approx(expected, abs=1e-3)
    assert float(rows[1][3]) == pytest.approx(-expected / codes.shape[1] / math.log(2), abs=1e-3)


def test_generate_samples_units_from_the_prior_and_decodes_them(tmp_path):
    """audio-vqvae-generate --prior: n samples of --seconds (after a prompt's units), decoded with --speaker."""
    ckpt = make_checkpoint(tmp_path / "tiny.pt")  # hop 16, 16 codes: 1000 units per second
    torch.manual_seed(0)
    prior = UnitPrior(16, SPEAKERS, **TINY)
    save_checkpoint(tmp_path / "prior.pt", prior.state_dict(), {"prior": TINY, "codebook_size": 16, "frame_rate": 1000.0,
                    "vqvae_checkpoint_sha256": file_sha256(ckpt)}, list(SPEAKERS), 0)
    (tmp_path / "u.txt").write_text("p225_001\t" + " ".join(["3"] * 20) + "\n")
    out = tmp_path / "out"
    args = ["-c", str(ckpt), "-o", str(out), "--prior", str(tmp_path / "prior.pt"), "--speaker", "p226",
            "--seconds", "0.05", "--n-samples", "2", "--top-k", "4", "--device", "cpu"]
    generate.main([*args, "--prompt-units", f"{tmp_path / 'u.txt'}:p225_001"])
    wavs = sorted(out.glob("*.wav"))
    assert [w.name for w in wavs] == ["sample_000.wav", "sample_001.wav"]
    assert all(len(sf.read(w)[0]) == (20 + 50) * 16 for w in wavs)  # the prompt's 20 units, then 0.05 s
    with pytest.raises(SystemExit, match="one --speaker"):
        generate.main([a if a != "p226" else "p226,p227" for a in args])


@pytest.mark.parametrize("recorded", [{"vqvae_checkpoint_sha256": "f" * 64, "frame_rate": 1000.0},
                                      {"frame_rate": 50.0}, {"frame_rate": 1000.0}])
def test_generate_refuses_a_prior_of_another_vqvae_unless_forced(tmp_path, recorded):
    """A prior recording another VQ-VAE checkpoint (sha256), another frame rate, or none is one error; --force
    samples anyway."""
    ckpt = make_checkpoint(tmp_path / "tiny.pt")
    config = {"prior": TINY, "codebook_size": 16, "vqvae_checkpoint_sha256": file_sha256(ckpt)} | recorded
    if "vqvae_checkpoint_sha256" not in recorded and recorded["frame_rate"] == 1000.0:
        del config["vqvae_checkpoint_sha256"]
    save_checkpoint(tmp_path / "prior.pt", UnitPrior(16, SPEAKERS, **TINY).state_dict(), config, list(SPEAKERS), 0)
    args = ["-c", str(ckpt), "-o", str(tmp_path / "out"), "--prior", str(tmp_path / "prior.pt"), "--speaker", "p226",
            "--seconds", "0.01", "--device", "cpu"]
    with pytest.raises(SystemExit, match=r"audio-vqvae-generate: error: --prior .* was trained on units of another "
                                         r"VQ-VAE \(.*\); retrain it on this VQ-VAE's units, or pass --force"):
        generate.main(args)
    assert not (tmp_path / "out").exists()
    generate.main([*args, "--force"])
    assert [w.name for w in (tmp_path / "out").glob("*.wav")] == ["sample_000.wav"]


def test_sigterm_saves_before_a_due_validation_and_the_prior_resumes_exactly(tmp_path, monkeypatch):
    """SIGTERM during step 3 (validation due after every step): last.pt is written at step 3 before that validation
    runs (its history ends at step 2), the run stops there, and resume=auto reaches an uninterrupted run's weights."""
    units = write_units(tmp_path / "units.txt")
    step = PriorTrainer.train_step

    def signalled(self):
        loss = step(self)
        if self.state.step == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return loss

    monkeypatch.setattr(PriorTrainer, "train_step", signalled)
    train_prior(config(tmp_path / "b", units, "trainer.max_steps=6", "trainer.val_every=1", "trainer.ckpt_every=100"))
    saved = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert saved["step"] == 3 and not saved["resume"]["state"]["finished"]
    assert [h["step"] for h in saved["resume"]["state"]["history"]] == [0, 1, 2]
    monkeypatch.setattr(PriorTrainer, "train_step", step)
    resumed = train_prior(config(tmp_path / "b", units, "trainer.max_steps=6", "trainer.val_every=1",
                                 "trainer.ckpt_every=100", "trainer.resume=auto"))
    full = train_prior(config(tmp_path / "a", units, "trainer.max_steps=6", "trainer.val_every=1",
                              "trainer.ckpt_every=100"))
    for k, v in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=0, msg=k)


def test_nonfinite_prior_steps_are_counted_logged_retried_on_another_batch_and_stop_the_run(tmp_path, monkeypatch,
                                                                                          caplog):
    """A NaN loss at the third step: skipped, counted in the state, logged, and the retry draws another batch; NaN
    losses throughout stop the run after trainer.max_nonfinite in a row."""
    units, forward, batch = write_units(tmp_path / "units.txt"), UnitPrior.forward, PriorTrainer.batch
    calls, drawn = {"n": 0, "nan_at": {3}}, []

    def poisoned(self, units, speaker=None, *args):
        out = forward(self, units, speaker, *args)
        if self.training:
            calls["n"] += 1
            if calls["n"] in calls["nan_at"] or "all" in calls["nan_at"]:
                out = out * float("nan")
        return out

    def recorded(self):
        out = batch(self)
        drawn.append(out[0])
        return out

    monkeypatch.setattr(UnitPrior, "forward", poisoned)
    monkeypatch.setattr(PriorTrainer, "batch", recorded)
    with caplog.at_level("WARNING"):
        train_prior(config(tmp_path / "run", units, "trainer.max_steps=4"))
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["resume"]["state"]
    assert state["step"] == 4 and state["nonfinite_total"] == 1 and state["nonfinite_consecutive"] == 0
    assert "step 2: non-finite loss" in caplog.text and len(drawn) == 5
    assert not (drawn[2].shape == drawn[3].shape and torch.equal(drawn[2], drawn[3]))  # the retry's batch differs
    calls["nan_at"] = {"all"}
    with pytest.raises(RuntimeError, match="3 non-finite losses in a row"):
        train_prior(config(tmp_path / "run2", units, "trainer.max_steps=4", "trainer.max_nonfinite=3"))


def test_a_prior_from_a_corpus_splits_it_as_the_vqvae_was_trained(tmp_path, data_cfg):
    """The VQ-VAE checkpoint holds seed 7 and a held-out speaker: the prior (its own seed 1234, no held-out speaker)
    trains on that run's training utterances only and validates on its validation ones; split.yaml says so."""
    wavs = write_mixed_corpus(tmp_path / "wavs")
    for i in range(4):
        write_wav(wavs / "spk1" / f"e{i}.wav", 0.2, seed=10 + i)
    vq_data = data_cfg("folder", root=str(wavs), held_out_speakers=["spk2"], val_per_speaker=2)
    ckpt = make_checkpoint(tmp_path / "vq.pt")
    saved = load_checkpoint(ckpt)
    save_checkpoint(ckpt, saved["model"], {**saved["config"], "data": OmegaConf.to_container(vq_data), "seed": 7},
                    saved["speakers"], 0)
    vq_split = split_corpus(load_corpus(vq_data), vq_data, 7)
    run = tmp_path / "run"
    train_prior(config(run, None, f"vqvae={ckpt}", "data=folder", f"data.root={wavs}", "trainer.max_steps=1"))
    train, val = load_units(run / "units" / "train.txt", 16), load_units(run / "units" / "val.txt", 16)
    assert sorted(train) == sorted(u.id for u in vq_split.train) and sorted(val) == sorted(u.id for u in vq_split.val)
    assert not any(u.startswith("spk2") for u in [*train, *val])
    split = OmegaConf.load(run / "units" / "split.yaml")
    assert split.seed == 7 and "checkpoint" in split.split_by and split.data.held_out_speakers == ["spk2"]


@pytest.mark.parametrize("changed", ["units.max_frames=8", "units.val_fraction=0.25", "units.split_seed=1"])
def test_resuming_a_prior_with_other_units_settings_is_refused(tmp_path, changed):
    units = write_units(tmp_path / "units.txt")
    train_prior(config(tmp_path / "run", units, "trainer.max_steps=2"))
    key = changed.split("=")[0].removeprefix("units.")
    with pytest.raises(ValueError, match=f"not a resumable checkpoint of this prior run .*saved with units=.*'{key}'"):
        train_prior(config(tmp_path / "run", units, "trainer.max_steps=4", "trainer.resume=auto", changed))


def test_resuming_a_prior_after_a_world_size_change_is_refused_naming_it(tmp_path):
    """last.pt of a 2-process run (its identity says world_size 2, as the torchrun test checks) resumed by one process:
    one error naming the world size, since each rank's batches and RNG state depend on it."""
    units = write_units(tmp_path / "units.txt")
    train_prior(config(tmp_path / "run", units, "trainer.max_steps=2"))
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(last)
    ckpt["resume"]["identity"]["world_size"] = 2
    save_checkpoint(last, ckpt["model"], ckpt["config"], ckpt["speakers"], ckpt["step"], ckpt["resume"])
    with pytest.raises(ValueError, match=r"last.pt: not a resumable checkpoint of this prior run \(saved with "
                                         r"world_size=2, this run 1\); resume needs the same"):
        train_prior(config(tmp_path / "run", units, "trainer.max_steps=4", "trainer.resume=auto"))


def test_each_rank_draws_its_own_batches_and_a_retry_another(tmp_path, monkeypatch):
    """The batch is a function of (seed, rank, step, skipped steps): rank 1 draws another batch than rank 0 at the
    same step (the torchrun test's "each its own batches"), and so does the retry of a skipped step."""
    trainers = []
    step = PriorTrainer.train_step
    monkeypatch.setattr(PriorTrainer, "train_step", lambda self: trainers.append(self) or step(self))
    train_prior(config(tmp_path / "run", write_units(tmp_path / "units.txt", n_utts=40), "trainer.max_steps=1"))
    trainer = trainers[0]
    rank0 = trainer.batch()[0]
    assert torch.equal(rank0, trainer.batch()[0])
    monkeypatch.setattr(trainer.ddp, "rank", 1)
    assert not torch.equal(rank0, trainer.batch()[0])
    monkeypatch.setattr(trainer.ddp, "rank", 0)
    monkeypatch.setattr(trainer.state, "nonfinite_total", 1)
    assert not torch.equal(rank0, trainer.batch()[0])


def lmexp(*values: float) -> float:
    """log-mean-exp by hand."""
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values) / len(values))


def test_an_unknown_speaker_gets_the_log_mean_exp_over_the_priors_speakers():
    """A head whose speakers give different log-probabilities: the unknown speaker's log p(z) is their log-mean-exp
    (not the mean, the max or speaker 0's), batched with known speakers unchanged."""
    prior = tiny_prior()
    with torch.no_grad():
        prior.speaker_embed.weight.copy_(torch.randn(2, TINY["d_model"], generator=torch.Generator().manual_seed(1)) * 30)
        prior.head.weight.mul_(10)
    z, n = torch.tensor([[1, 2, 3, 4, 5, 6], [7, 0, 1, 1, 2, 0]]), torch.tensor([6, 4])
    a, b = (prior.log_prob(z, n, torch.tensor([s, s])).tolist() for s in (0, 1))
    assert min(abs(x - y) for x, y in zip(a, b)) > 2  # the speakers disagree
    got = prior.marginal_log_prob(z, n, torch.tensor([-1, 1]))
    assert got[0].item() == pytest.approx(lmexp(a[0], b[0]), abs=1e-5) and got[1].item() == pytest.approx(b[1], abs=1e-5)


def test_score_cli_marginalises_speakers_the_prior_does_not_know(tmp_path):
    units = write_units(tmp_path / "units.txt")
    train_prior(config(tmp_path / "run", units, "trainer.max_steps=2"))
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    (tmp_path / "new.txt").write_text("c_000\t1 2 3 4\n")
    UnitsSidecar(50.0, 16000, 320, K, "toy.pt", "0" * 64, False, None).write(f"{tmp_path / 'new.txt'}.json")
    score_units.main(["-p", str(ckpt), str(tmp_path / "new.txt"), "-o", str(tmp_path / "s.tsv"), "--device", "cpu"])
    row = (tmp_path / "s.tsv").read_text().splitlines()[1].split("\t")
    prior, z, n = UnitPrior.from_checkpoint(str(ckpt)), torch.tensor([[1, 2, 3, 4]]), torch.tensor([4])
    hand = lmexp(*(float(prior.log_prob(z, n, torch.tensor([s]))[0]) for s in (0, 1)))
    assert row[0] == "c_000" and float(row[2]) == pytest.approx(hand, abs=1e-3)


def test_a_validation_file_with_an_unknown_speaker_is_scored_by_the_mixture(tmp_path):
    """units.val_path holding a speaker the training file lacks: validation (rank 0) scores it, no error."""
    units = write_units(tmp_path / "units.txt")
    (tmp_path / "val.txt").write_text("c_000\t1 2 3 4 5\nb_100\t0 1 2\n")
    UnitsSidecar(50.0, 16000, 320, K, "toy.pt", "0" * 64, False, None).write(f"{tmp_path / 'val.txt'}.json")
    train_prior(config(tmp_path / "run", units, f"units.val_path={tmp_path / 'val.txt'}", "trainer.max_steps=2"))
    history = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["resume"]["state"]["history"]
    assert [h["step"] for h in history] == [0, 2] and all(h["n_units"] == 8 for h in history)


def test_unit_ids_get_their_speakers_from_the_data_config_not_the_id(tmp_path):
    """LibriSpeech-like files <root>/<speaker>/<chapter>/<speaker>-<chapter>-<n>: with data=folder beside units.path the
    speakers are the corpus's (84, 19), not the id up to its last '_' (84_121123); an id without the separator and
    no map is one error."""
    root, lines = tmp_path / "corpus", []
    for speaker, chapter in [("84", "121123"), ("19", "198")]:
        for n in range(3):
            name = f"{speaker}-{chapter}-{n:04d}"
            write_wav(root / speaker / chapter / f"{name}.wav", 0.1)
            lines.append(f"{speaker}_{chapter}_{name}\t1 2 3 {n}\n")
    (tmp_path / "u.txt").write_text("".join(lines))
    UnitsSidecar(50.0, 16000, 320, K, "toy.pt", "0" * 64, False, None).write(f"{tmp_path / 'u.txt'}.json")
    prior = train_prior(config(tmp_path / "run", tmp_path / "u.txt", "data=folder", f"data.root={root}",
                               "trainer.max_steps=1"))
    assert prior.speakers == ["19", "84"]
    (tmp_path / "l.txt").write_text("84-121123-0000\t1 2 3\n")
    UnitsSidecar(50.0, 16000, 320, K, "toy.pt", "0" * 64, False, None).write(f"{tmp_path / 'l.txt'}.json")
    with pytest.raises(ValueError, match="'84-121123-0000': no speaker in the speaker map and no '_' in its id"):
        train_prior(config(tmp_path / "run2", tmp_path / "l.txt", "trainer.max_steps=1"))


def windowed_by_hand(prior: UnitPrior, units: torch.Tensor, spk: torch.Tensor) -> torch.Tensor:
    """Logits [B, T, K] with position p predicted by a forward pass over its own window alone: units from
    window_start(p) to p, after the unit before it (BOS at 0)."""
    w, out = prior.max_frames, []
    for p in range(units.shape[1]):
        s = 0 if p < w else ((p - w) // (w // 2) + 1) * (w // 2)
        previous = units[:, s - 1] if s else None
        out.append(prior(units[:, s : p + 1], spk, previous)[:, -1])
    return torch.stack(out, 1)


def test_scoring_and_sampling_past_max_frames_use_windows_as_training_did():
    """max_frames=6: log-probs of a 23-unit sequence and greedy samples past the window equal position-by-position
    forward passes over the window each position falls in (first input: the unit before it, BOS only at 0), so no
    position >= max_frames is ever seen."""
    torch.manual_seed(0)
    prior, spk = UnitPrior(K, ["a", "b"], **TINY, max_frames=6).eval(), torch.tensor([1, 0])
    units = torch.randint(0, K, (2, 23))
    with torch.no_grad():
        hand = windowed_by_hand(prior, units, spk).log_softmax(-1).gather(-1, units[..., None])[..., 0]
        torch.testing.assert_close(prior.unit_log_probs(units, spk), hand, rtol=1e-5, atol=1e-5)
        greedy = prior.sample(2, 17, spk, top_k=1, prompt=units[0, :3], generator=torch.Generator().manual_seed(0))
        assert torch.equal(windowed_by_hand(prior, greedy, spk)[:, 3:].argmax(-1), greedy[:, 3:])


def markov_chain(n: int, length: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """n stationary second-order chains [n, length]: z_t = z_{t-1} + z_{t-2} mod k with probability 0.8, else
    uniform (predicting it needs the two previous units, found by position)."""
    z = rng.integers(k, size=(n, length))
    keep = rng.random((n, length)) < 0.8
    for t in range(2, length):
        z[:, t] = np.where(keep[:, t], (z[:, t - 1] + z[:, t - 2]) % k, z[:, t])
    return z


def test_a_prior_trained_on_a_markov_chain_predicts_past_max_frames_as_well_as_before(tmp_path):
    """A stationary Markov chain (`markov_chain`) trained on windows of 8: on fresh 256-unit chains the NLL per unit
    past position 8 equals the NLL at positions 2..7 within noise (the chain's entropy rate is the same everywhere;
    before windowed scoring it was 0.4 nats worse past the trained positions)."""
    rng, k = np.random.default_rng(0), 4
    lines = [f"a_{i:03d}\t{' '.join(map(str, z))}\n" for i, z in enumerate(markov_chain(40, 256, k, rng))]
    (tmp_path / "chain.txt").write_text("".join(lines))
    UnitsSidecar(50.0, 16000, 320, k, "toy.pt", "0" * 64, False, None).write(f"{tmp_path / 'chain.txt'}.json")
    prior = train_prior(config(tmp_path / "run", tmp_path / "chain.txt", "units.max_frames=8", "trainer.max_steps=600",
                               "trainer.val_every=1000", "trainer.ckpt_every=1000", "trainer.lr=3e-3",
                               "trainer.batch_size=16", "prior.d_model=32", "prior.d_ff=64")).eval()
    units = torch.from_numpy(markov_chain(400, 256, k, rng))
    with torch.no_grad():
        nll = -prior.unit_log_probs(units, torch.zeros(len(units), dtype=torch.long))
    before, past = nll[:, 2:8].mean().item(), nll[:, 8:].mean().item()
    noise = 3 * nll[:, 2:8].std().item() / math.sqrt(nll[:, 2:8].numel())
    assert before < math.log(k) - 0.2 and abs(past - before) < noise, (before, past, noise)
