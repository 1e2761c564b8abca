"""audio-vqvae-eval on a tiny checkpoint and a tiny generated corpus with phone alignments."""
import json
import math
from pathlib import Path

import pytest
from helpers import SPEAKERS, make_checkpoint, write_wav
from omegaconf import OmegaConf

from audio_vqvae.checkpoint import load_checkpoint, save_checkpoint
from audio_vqvae.evaluate import main

PHONES = ["a", "b", "c", "d"]
SECONDS = 0.4
FAST = ["--n-sampled", "1", "--sampled-seconds", "0.07", "--abx-triplets", "60", "--posterior-positions", "3",
        "--device", "cpu"]


def write_corpus(root: Path, speakers=SPEAKERS[:2], per_speaker: int = 2) -> list[str]:
    """<root>/<speaker>/<speaker>_<n>.wav and <root>/alignments/<speaker>_<n>.tsv (sil, then 50 ms phones)."""
    ids = []
    for s, speaker in enumerate(speakers):
        for n in range(per_speaker):
            uid = f"{speaker}_{n}"
            write_wav(root / speaker / f"{uid}.wav", SECONDS, seed=10 * s + n)
            lines = ["0.000\t0.050\tsil"]
            lines += [f"{0.05 * k:.3f}\t{0.05 * (k + 1):.3f}\t{PHONES[(k + n) % 4]}" for k in range(1, 8)]
            (root / "alignments").mkdir(parents=True, exist_ok=True)
            (root / "alignments" / f"{uid}.tsv").write_text("\n".join(lines) + "\n")
            ids.append(uid)
    return ids


def finite_numbers(node) -> list[float]:
    """Every int/float leaf of a JSON tree, checked to be finite."""
    if isinstance(node, dict):
        return [x for v in node.values() for x in finite_numbers(v)]
    if isinstance(node, list):
        return [x for v in node for x in finite_numbers(v)]
    if isinstance(node, (int, float)) and not isinstance(node, bool):
        assert math.isfinite(node)
        return [node]
    return []


def test_eval_on_plain_files_writes_consistent_metrics_and_figures(tmp_path, capsys):
    ids = write_corpus(tmp_path / "corpus")
    ckpt = make_checkpoint(tmp_path / "tiny.pt")
    out = tmp_path / "eval"
    main([str(ckpt), "--files", str(tmp_path / "corpus"), "--out", str(out), *FAST])

    m = json.loads((out / "metrics.json").read_text())
    finite_numbers(m)
    sections = {"checkpoint", "data", "elbo", "bitrate", "codebook", "resynthesis", "units", "posterior", "figures"}
    assert set(m) == sections
    assert m["data"]["n_utterances"] == len(ids) and m["data"]["fallback_speaker_utterances"] == 0
    e, K, hop = m["elbo"], 16, 16
    assert e["n_samples"] == len(ids) * int(SECONDS * 16000) // hop * hop
    assert e["n_latents"] * hop == e["n_samples"]
    assert e["kl_nats"] == pytest.approx(e["n_latents"] * math.log(K))
    assert e["bits_per_sample"] * math.log(2) * e["n_samples"] == pytest.approx(e["nll_nats"] + e["kl_nats"], rel=1e-9)
    assert e["nats_per_second"] == pytest.approx(e["neg_elbo_nats"] / m["data"]["seconds"])
    assert m["bitrate"]["latent_bits_per_second"] == pytest.approx(16000 / hop * math.log2(K))
    assert 0 < m["bitrate"]["entropy_bits_per_second"] <= m["bitrate"]["latent_bits_per_second"] + 1e-9
    assert 1 <= m["codebook"]["perplexity"] <= m["codebook"]["used_codes"] <= K
    assert m["resynthesis"]["teacher_forced"]["n"] == len(ids) and m["resynthesis"]["sampled"]["n"] == 1

    u = m["units"]
    assert u["n_utterances"] == len(ids) and u["n_phones"] == len(PHONES)
    assert 0 < u["phone_purity"] <= 1 and 0 < u["cluster_purity"] <= 1 and 0 <= u["pnmi"] <= 1
    for kind in ("units", "continuous"):
        for mode in ("within", "across"):
            assert 0 <= u["abx"][kind][mode] <= 1
    assert 0 < u["abx"]["triplets"]["within"] <= 60

    p = m["posterior"]
    assert p["n_positions"] == 3 and 0 <= p["argmax_agreement"] <= 1
    assert 0 <= p["entropy_nats"] <= math.log(K) + 1e-6 and p["kl_nats"] >= 0

    assert m["figures"] == ["codebook_usage.png", "unit_phone_cooccurrence.png", "resynthesis.png"]
    for name in m["figures"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((out / "audio").glob("*.wav"))) == 4  # original, teacher-forced, sampled, converted
    report = (out / "report.md").read_text()
    assert "-ELBO (bits per sample)" in report and "resynthesis.png" in report
    assert all(line.count("|") == 3 for line in report.splitlines() if line.startswith("|"))
    assert "code entropy bitrate" in capsys.readouterr().out


def test_eval_with_a_folder_data_config_and_overrides(tmp_path):
    """`--data folder data.root=...` is composed with Hydra; without an alignments dir there is no unit section."""
    root = tmp_path / "corpus"
    write_corpus(root, per_speaker=1)
    align = tmp_path / "aligns"
    (root / "alignments").rename(align)
    ckpt = make_checkpoint(tmp_path / "tiny.pt")
    out = tmp_path / "eval"
    main([str(ckpt), "--data", "folder", f"data.root={root}", "data.cache=false", "--split", "all", "--out", str(out),
          "--n-sampled", "0", "--posterior-positions", "0", "--device", "cpu"])
    m = json.loads((out / "metrics.json").read_text())
    assert m["data"]["source"] == "folder (all split)" and m["data"]["n_utterances"] == 2
    assert m["units"] is None and m["posterior"] is None and m["resynthesis"]["sampled"] is None
    assert m["figures"] == ["codebook_usage.png", "resynthesis.png"]


def test_eval_defaults_to_the_held_out_speakers_of_the_checkpoint_data_config(tmp_path, data_cfg):
    root = tmp_path / "corpus"
    write_corpus(root, speakers=SPEAKERS, per_speaker=2)
    data = data_cfg("folder", root=str(root), cache=False, held_out_speakers=[SPEAKERS[2]])
    ckpt = load_checkpoint(make_checkpoint(tmp_path / "tiny.pt"))
    config = {**ckpt["config"], "data": OmegaConf.to_container(data, resolve=True), "seed": 3}
    save_checkpoint(tmp_path / "run.pt", ckpt["model"], config, ckpt["speakers"], step=7)
    out = tmp_path / "eval"
    main([str(tmp_path / "run.pt"), "--out", str(out), "--n-sampled", "0", "--posterior-positions", "0"])
    m = json.loads((out / "metrics.json").read_text())
    assert m["data"]["source"] == "folder (held_out split)" and m["checkpoint"]["step"] == 7
    assert m["data"]["n_utterances"] == 2 and m["data"]["n_speakers"] == 1
    assert m["units"]["n_utterances"] == 2  # folder ids are <speaker>_<stem>; alignments are found by file stem


def test_eval_refuses_a_checkpoint_without_data_config_and_no_data(tmp_path):
    ckpt = make_checkpoint(tmp_path / "tiny.pt")
    with pytest.raises(SystemExit, match="audio-vqvae-eval: error: the checkpoint stores no data config"):
        main([str(ckpt), "--out", str(tmp_path / "eval")])
