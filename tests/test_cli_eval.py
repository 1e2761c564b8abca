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
