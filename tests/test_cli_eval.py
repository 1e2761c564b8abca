"""audio-vqvae-eval: arguments to the library call, and the printed report."""
import json

import pytest
from helpers import make_checkpoint
from test_evaluate import write_corpus

from audio_vqvae.cli.eval import main, options, parse_args


def test_eval_cli_on_files(tmp_path, capsys):
    write_corpus(tmp_path / "corpus", per_speaker=1)
    ckpt = make_checkpoint(tmp_path / "tiny.pt")
    out = tmp_path / "eval"
    main([str(ckpt), "--files", str(tmp_path / "corpus"), "--out", str(out), "--n-resynth", "0", "--n-convert", "0",
          "--posterior-positions", "0", "--device", "cpu"])
    m = json.loads((out / "metrics.json").read_text())
    r = m["resynthesis"]
    assert m["data"]["n_utterances"] == 2 and r["decoder"] == "wavenet" and r["targets"] == []
    assert all(r[k] is None for k in ("self", "conversion", "conversion_seen", "conversion_unseen", "intelligibility",
                                          "intelligibility_conversion"))
    assert "beats baseline" in capsys.readouterr().out


def test_eval_cli_refuses_a_checkpoint_without_data_config(tmp_path):
    ckpt = make_checkpoint(tmp_path / "tiny.pt")
    with pytest.raises(SystemExit, match="audio-vqvae-eval: error: the checkpoint stores no data config"):
        main([str(ckpt), "--out", str(tmp_path / "eval")])


def test_eval_cli_decoder_f0_and_whole_utterance_options():
    opts = options(parse_args(["c.pt", "--out", "o", "--decoder", "wavenet", "--f0", "predicted",
                               "--resynth-seconds", "0"]))
    assert (opts.decoder, opts.f0, opts.resynth_seconds) == ("wavenet", "predicted", None)
    default = options(parse_args(["c.pt", "--out", "o"]))
    assert (default.decoder, default.f0, default.resynth_seconds) == ("auto", "mapped", 1.0)
    with pytest.raises(SystemExit):
        parse_args(["c.pt", "--out", "o", "--f0", "sideways"])


def write_prior(path, ckpt, sha256: str | None = None, frame_rate: float | None = None):
    """A tiny prior over the tiny checkpoint's 16 codes recording that checkpoint's sha256 and frame rate (or the
    given ones)."""
    import torch

    from audio_vqvae.checkpoint import file_sha256, save_checkpoint
    from audio_vqvae.model import VQVAE
    from audio_vqvae.prior.model import UnitPrior

    arch = {"d_model": 8, "n_layers": 1, "n_heads": 2, "d_ff": 16, "dropout": 0.0}
    torch.manual_seed(0)
    prior = UnitPrior(16, ["p225", "p226"], **arch)
    config = {"prior": arch, "codebook_size": 16,
              "frame_rate": frame_rate or VQVAE.from_checkpoint(str(ckpt)).frame_rate,
              "vqvae_checkpoint_sha256": sha256 or file_sha256(ckpt)}
    save_checkpoint(path, prior.state_dict(), config, ["p225", "p226"], 0)
    return path


def eval_with_prior(tmp_path, prior, *extra):
    write_corpus(tmp_path / "corpus", per_speaker=1)
    out = tmp_path / "eval"
    main([str(tmp_path / "tiny.pt"), "--files", str(tmp_path / "corpus"), "--out", str(out), "--n-resynth", "0",
          "--n-convert", "0", "--posterior-positions", "0", "--device", "cpu", "--prior", str(prior), *extra])
    return json.loads((out / "metrics.json").read_text()), (out / "report.md").read_text()


def test_eval_cli_with_the_vqvaes_own_prior_reports_the_kl_under_it(tmp_path):
    """audio-vqvae-eval --prior: the scored units' KL under the prior equals -log p(z) of those units by hand."""
    import math

    import soundfile as sf

    from audio_vqvae.evaluation.prior import prior_log_prob
    from audio_vqvae.model import VQVAE
    from audio_vqvae.prior.model import UnitPrior

    ckpt = make_checkpoint(tmp_path / "tiny.pt")
    m, report = eval_with_prior(tmp_path, write_prior(tmp_path / "prior.pt", ckpt))
    q = m["prior"]
    assert q["vqvae_mismatch"] is None and "WARNING" not in report and "learned prior" in report
    model, prior = VQVAE.from_checkpoint(str(ckpt)), UnitPrior.from_checkpoint(str(tmp_path / "prior.pt"))
    wavs = sorted((tmp_path / "corpus").rglob("*.wav"))
    log_p = sum(prior_log_prob(prior, model.encode(*sf.read(w)).numpy(), w.parent.name) for w in wavs)
    assert q["kl_bits_per_second_prior"] == pytest.approx(-log_p / math.log(2) / m["data"]["seconds"], rel=1e-4)


@pytest.mark.parametrize("recorded", [{"sha256": "f" * 64}, {"frame_rate": 50.0}])
def test_eval_cli_refuses_a_prior_of_another_vqvae_unless_forced(tmp_path, recorded):
    ckpt = make_checkpoint(tmp_path / "tiny.pt")
    prior = write_prior(tmp_path / "prior.pt", ckpt, **recorded)
    with pytest.raises(SystemExit, match=r"audio-vqvae-eval: error: --prior .*prior.pt was trained on units of another "
                                         r"VQ-VAE \(.*; retrain it on this VQ-VAE's units, or pass --force"):
        eval_with_prior(tmp_path, prior)
    m, report = eval_with_prior(tmp_path, prior, "--force")
    word = "sha256" if "sha256" in recorded else "frame rate 50.0"
    assert word in m["prior"]["vqvae_mismatch"] and "WARNING, used with --force" in report and word in report
