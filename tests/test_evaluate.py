"""The evaluation library on a tiny checkpoint and a tiny generated corpus with phone alignments."""
import json
import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO, SPEAKERS, make_checkpoint, write_wav
from omegaconf import OmegaConf

from audio_vqvae.checkpoint import load_checkpoint, save_checkpoint
from audio_vqvae.cli import eval as eval_cli
from audio_vqvae.config import CONFIG_DIR, load_data_config
from audio_vqvae.data import Utterance, load_wavs
from audio_vqvae.evaluation.prior import prior_log_prob, prior_metrics
from audio_vqvae.evaluation.report import evaluate_checkpoint
from audio_vqvae.evaluation.resynthesis import contours, resynthesis_jobs, resynthesis_quality, target_rows
from audio_vqvae.evaluation.scoring import Totals
from audio_vqvae.evaluation.sets import (
    EvalOptions,
    corpus_set,
    corpus_transcripts,
    data_config,
    file_set,
    trained_speakers,
    with_training_reference,
)
from audio_vqvae.evaluation.units import collapse, comparison
from audio_vqvae.f0 import F0Stats
from audio_vqvae.model import VQVAE
from audio_vqvae.prior.model import UnitPrior

PHONES = ["a", "b", "c", "d"]
SECONDS = 0.4
FAST = EvalOptions(n_resynth=1, n_convert=1, resynth_seconds=0.07, abx_triplets=60, posterior_positions=3)


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


def test_evaluate_plain_files_writes_consistent_metrics_report_and_figures(tmp_path):
    root = tmp_path / "corpus"
    ids = write_corpus(root)
    ckpt = make_checkpoint(tmp_path / "tiny.pt")
    out = tmp_path / "eval"
    m = evaluate_checkpoint(VQVAE.from_checkpoint(str(ckpt)), str(ckpt), file_set([str(root)]), out, FAST,
                            root / "alignments")
    assert m == json.loads((out / "metrics.json").read_text())
    finite_numbers(m)
    assert set(m) == {"checkpoint", "data", "elbo", "bitrate", "codebook", "teacher_forced_log_mel_distance", "prior",
                      "posterior", "units", "speaker_probe", "resynthesis", "figures"}
    d = m["data"]
    assert d["n_utterances"] == len(ids) and d["speakers"] == list(SPEAKERS[:2]) and d["unknown_to_decoder"] == []
    e, K, hop = m["elbo"], 16, 16
    assert e["n_samples"] == len(ids) * int(SECONDS * 16000) // hop * hop and e["n_latents"] * hop == e["n_samples"]
    assert e["kl_nats"] == pytest.approx(e["n_latents"] * math.log(K))
    assert e["bits_per_sample"] * math.log(2) * e["n_samples"] == pytest.approx(e["nll_nats"] + e["kl_nats"], rel=1e-9)

    u = m["units"]
    assert u["baseline"]["fitted_on"].startswith("the scored audio") and u["baseline"]["n_units"] == 64
    for side in ("model", "baseline"):
        s = u[side]
        assert 0 < s["entropy_bits_per_second"] and s["speaker_leakage"]["n_utterances"] == len(ids)
        assert 0 <= s["stability"]["gain_+6dB"]["frame_agreement"] <= 1
        assert s["phones"]["n_phones"] == len(PHONES) and 0 <= s["phones"]["pnmi"] <= 1
        assert 0 <= s["phones"]["abx"]["within"] <= 1
    assert u["model"]["entropy_bits_per_second"] <= m["bitrate"]["latent_bits_per_second"] + 1e-9
    assert u["comparison"]
    for r in u["comparison"]:  # the verdict is the comparison of the two values in the measure's direction
        expected = None if r["model"] is None or r["baseline"] is None else (
            r["model"] > r["baseline"] if r["higher_is_better"] else r["model"] < r["baseline"])
        assert r["beats_baseline"] is expected or (u["model"]["collapse"]["collapsed"] and r["beats_baseline"] is None), r
    # the same baseline at the model's frame rate (hop 16: 1000 Hz), scored by the same code, in its own columns
    fast = u["mfcc_kmeans_model_rate"]
    assert fast["frame_rate"] == 1000 and u["baseline"]["frame_rate"] == 100 and fast["n_units"] == 64
    assert fast["n_frames"] == u["model"]["n_frames"] == e["n_latents"] != u["baseline"]["n_frames"]
    assert fast["phones"]["n_phones"] == len(PHONES) and 0 <= fast["stability"]["gain_+6dB"]["frame_agreement"] <= 1
    assert all(r["beats_baseline_model_rate"] in (True, False, None) for r in u["comparison"])
    assert "baseline at the model's rate (1000 Hz)" in (out / "report.md").read_text()
    assert m["speaker_probe"] is None  # no training split
    r = m["resynthesis"]
    assert r["self"]["n"] == 1 and r["conversion"]["n"] == 1 and r["self"]["mcd_db"] >= 0
    assert 0 <= r["self"]["round_trip_agreement"] <= 1 and r["decoder"] == "wavenet" and r["f0"] is None
    assert set(r["self"]["pitch"]) >= {"voiced_recall", "gpe", "median_cents", "voicing_agreement"}
    assert r["conversion"]["utterances"][0]["target"] != r["conversion"]["utterances"][0]["source"]
    assert m["figures"] == ["codebook_usage.png", "unit_phone_cooccurrence.png", "excerpt.png", "resynthesis.png"]
    for name in m["figures"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    assert "beats baseline" in report and f"{len(ids)} utterances" in report
    assert all(line.count("|") in (3, 5, 7) for line in report.splitlines() if line.startswith("|"))


def test_held_out_speakers_get_no_elbo_and_the_probe_is_trained_on_the_training_split(tmp_path, data_cfg):
    root = tmp_path / "corpus"
    write_corpus(root, speakers=SPEAKERS, per_speaker=3)
    data = data_cfg("folder", root=str(root), cache=False, held_out_speakers=[SPEAKERS[2]], val_per_speaker=1)
    ckpt = load_checkpoint(make_checkpoint(tmp_path / "tiny.pt"))
    config = {**ckpt["config"], "data": OmegaConf.to_container(data, resolve=True), "seed": 3}
    save_checkpoint(tmp_path / "run.pt", ckpt["model"], config, ckpt["speakers"], step=7)
    model = VQVAE.from_checkpoint(str(tmp_path / "run.pt"))
    set_ = corpus_set(data_config(model.config, None, []), "auto", 3)
    assert set_.split == "test" and set_.description == f"folder at {root} (test split: held-out speakers {SPEAKERS[2]})"
    assert {u.speaker for u in set_.utterances} == {SPEAKERS[2]}
    assert trained_speakers(model, set_.train) == list(SPEAKERS[:2])  # the held-out row is never trained
    m = evaluate_checkpoint(model, str(tmp_path / "run.pt"), set_, tmp_path / "eval",
                            EvalOptions(n_resynth=1, n_convert=1, resynth_seconds=0.07, posterior_positions=0),
                            root / "alignments")
    assert m["data"]["unknown_to_decoder"] == [SPEAKERS[2]] and m["elbo"] is None and m["posterior"] is None
    assert m["data"]["split"] == "test" and m["data"]["source"] == set_.description
    assert f"Scored: {set_.description}, 3 utterances" in (tmp_path / "eval" / "report.md").read_text()
    assert m["units"]["baseline"]["fitted_on"] == "training split (4 utterances)"
    assert m["speaker_probe"]["natural_val_utterances"] == 2
    assert m["resynthesis"]["self"]["utterances"][0]["source"] in SPEAKERS[:2]
    conv = m["resynthesis"]["conversion"]
    assert conv["utterances"][0]["target"] in SPEAKERS[:2] and conv["probe_says_source"] is None


def test_collapsed_units_are_reported_and_win_nothing_by_being_constant(tmp_path):
    root = tmp_path / "corpus"
    write_corpus(root)
    ckpt = make_checkpoint(tmp_path / "tiny.pt")
    model = VQVAE.from_checkpoint(str(ckpt))
    with torch.no_grad():
        model.quantizer.embed.copy_(model.quantizer.embed[:1].expand_as(model.quantizer.embed))  # every frame: code 0
    m = evaluate_checkpoint(model, str(ckpt), file_set([str(root)]), tmp_path / "eval",
                            replace(FAST, n_resynth=0, n_convert=0, posterior_positions=0), root / "alignments")
    c = m["units"]["model"]["collapse"]
    assert c["collapsed"] and c["top_code_share"] == 1.0 and c["perplexity"] == pytest.approx(1.0)
    assert m["units"]["model"]["entropy_bits_per_second"] == 0.0
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "The units collapsed" in report and not re.search(r"\| -0 \|", report)
    rows = [line for line in report.splitlines() if line.startswith("| ") and ("entropy bitrate" in line
            or "leakage (accuracy)" in line or "frame agreement" in line)]
    assert len(rows) == 8 and not any(line.endswith("| yes |") for line in rows)


def test_unknown_data_override_keys_are_an_error():
    cfg = {"data": {"name": "demo", "root": "x"}}
    assert data_config(cfg, None, ["data.root=y"]).root == "y"
    with pytest.raises(ValueError, match="unknown data config key data.rooot"):
        data_config(cfg, None, ["data.rooot=y"])
    with pytest.raises(ValueError, match="stores no data config"):
        data_config({}, None, [])


def test_comparison_and_sentence_groups():
    rows = comparison({"phones": {"pnmi": 0.5}, "entropy_bits_per_second": 100.0},
                      {"phones": {"pnmi": 0.4}, "entropy_bits_per_second": 90.0})
    by = {r["measure"]: r["beats_baseline"] for r in rows}
    assert by["PNMI"] is True and by["entropy bitrate (bits/s)"] is False and by["ABX within, units"] is None
    void = {r["measure"]: r["beats_baseline"] for r in comparison(
        {"phones": {"pnmi": 0.5}, "entropy_bits_per_second": 0.0, "stability": {"gain_+6dB": {"frame_agreement": 1.0}}},
        {"phones": {"pnmi": 0.4}, "entropy_bits_per_second": 90.0, "stability": {"gain_+6dB": {"frame_agreement": 0.8}}},
        collapsed=True)}
    assert void["PNMI"] is True and void["entropy bitrate (bits/s)"] is None and void["frame agreement, +6 dB"] is None
    assert collapse(np.array([95, 5, 0]))["collapsed"] and collapse(np.array([60, 40, 0]))["collapsed"]  # ppl < 2
    assert not collapse(np.array([40, 30, 30]))["collapsed"]


def test_a_foreign_corpus_is_scored_whole_against_the_checkpoints_training_split(tmp_path, data_cfg):
    own, other = tmp_path / "own", tmp_path / "other"
    write_corpus(own, speakers=SPEAKERS[:2], per_speaker=3)
    write_corpus(other, speakers=SPEAKERS[2:], per_speaker=2)
    data = data_cfg("folder", root=str(own), cache=False, val_per_speaker=1)
    reference = corpus_set(data, "val", 3)
    foreign = corpus_set(data_cfg("folder", root=str(other), cache=False, val_per_speaker=1), "auto", 3, foreign=True)
    assert foreign.split == "all" and {u.speaker for u in foreign.utterances} == set(SPEAKERS[2:])
    assert len(foreign.utterances) == 2 * len(SPEAKERS[2:])
    scored = with_training_reference(foreign, reference)
    assert scored.utterances == foreign.utterances and scored.train == reference.train and scored.val == reference.val
    assert {u.speaker for u in scored.train} == set(SPEAKERS[:2])
    assert scored.description == (f"folder at {other} (all split: every utterance of the corpus); baseline and probes "
                                  f"fitted on the training split of folder at {own} ({len(reference.train)} utterances)")


def test_a_uniform_learned_prior_gives_the_uniform_kl_and_unknown_speakers_are_marginalised(tmp_path):
    model = VQVAE.from_checkpoint(str(make_checkpoint(tmp_path / "tiny.pt")))
    prior = UnitPrior(model.codebook_size, ["p225", "p226"], d_model=8, n_layers=1, n_heads=2, d_ff=16, dropout=0.0)
    with torch.no_grad():
        prior.head.weight.zero_()
        prior.head.bias.zero_()  # every context predicts the uniform distribution
    rng = np.random.default_rng(0)
    codes = {"p225_001": rng.integers(0, model.codebook_size, 40), "xx_002": rng.integers(0, model.codebook_size, 25)}
    totals = Totals(codes=codes, seconds=65 / model.frame_rate,
                    utterances={"p225_001": Utterance("p225_001", "a.wav", "p225", 1.0),
                                "xx_002": Utterance("xx_002", "b.wav", "xx", 1.0)})
    q = prior_metrics(prior.eval(), model, totals)
    assert q["n_units"] == 65 and q["unit_perplexity"] == pytest.approx(model.codebook_size, rel=1e-5)
    assert q["kl_bits_per_second_prior"] == pytest.approx(q["kl_bits_per_second_uniform"], rel=1e-5)
    assert q["elbo"] is None  # no decoder-known forward in these totals
    assert prior_log_prob(prior, codes["xx_002"], "xx") == pytest.approx(-25 * math.log(model.codebook_size), rel=1e-5)
    with torch.no_grad():  # a head that gives the two speakers different log-probabilities
        prior.head.weight.normal_(0, 3, generator=torch.Generator().manual_seed(0))
        prior.speaker_embed.weight.normal_(0, 30, generator=torch.Generator().manual_seed(1))
    a, b = (prior_log_prob(prior, codes["xx_002"], s) for s in ("p225", "p226"))
    assert abs(a - b) > 2
    hand = max(a, b) + math.log((math.exp(a - max(a, b)) + math.exp(b - max(a, b))) / 2)  # log-mean-exp
    assert prior_log_prob(prior, codes["xx_002"], "xx") == pytest.approx(hand, abs=1e-4)


def test_prior_metrics_elbo_of_the_decoder_known_utterances_by_hand(tmp_path):
    """The `elbo` branch: -ELBO under both priors from the accumulated NLL and only the ELBO utterances' log p(z)."""
    model = VQVAE.from_checkpoint(str(make_checkpoint(tmp_path / "tiny.pt")))
    torch.manual_seed(0)
    prior = UnitPrior(model.codebook_size, ["p225"], d_model=8, n_layers=1, n_heads=2, d_ff=16, dropout=0.0).eval()
    rng = np.random.default_rng(0)
    codes = {"p225_001": rng.integers(0, 16, 40), "xx_002": rng.integers(0, 16, 25)}
    totals = Totals(codes=codes, seconds=65 / model.frame_rate, elbo_utterances=["p225_001"],
                    utterances={"p225_001": Utterance("p225_001", "a.wav", "p225", 1.0),
                                "xx_002": Utterance("xx_002", "b.wav", "xx", 1.0)})
    totals.elbo.nll, totals.elbo.n_samples, totals.elbo.n_latents = 5000.0, 640, 40
    log_p = prior_log_prob(prior, codes["p225_001"], "p225")
    e = prior_metrics(prior, model, totals)["elbo"]
    assert e["bits_per_sample_uniform"] == pytest.approx((5000.0 + 40 * math.log(16)) / (640 * math.log(2)))
    assert e["bits_per_sample_prior"] == pytest.approx((5000.0 - log_p) / (640 * math.log(2)))
    assert e["kl_bits_per_second_prior"] == pytest.approx(-log_p / math.log(2) / (640 / 16000))


def test_the_training_corpus_given_by_a_relative_path_is_not_a_foreign_one(tmp_path, data_cfg, monkeypatch):
    """eval --data with the checkpoint's own corpus spelled relative or absolute scores its validation split (not all
    of it, training utterances included); another corpus is scored whole."""
    own, other = tmp_path / "own", tmp_path / "other"
    write_corpus(own, speakers=SPEAKERS[:2], per_speaker=3)
    write_corpus(other, speakers=SPEAKERS[2:], per_speaker=2)
    ckpt = make_checkpoint(tmp_path / "vq.pt")
    saved = load_checkpoint(ckpt)
    data = OmegaConf.to_container(data_cfg("folder", root=str(own), cache=False, val_per_speaker=1), resolve=True)
    save_checkpoint(ckpt, saved["model"], {**saved["config"], "data": data, "seed": 3}, saved["speakers"], 0)
    model = VQVAE.from_checkpoint(str(ckpt))
    monkeypatch.chdir(tmp_path)
    for root, split in [("own", "val"), (str(own), "val"), ("./other", "all")]:
        args = eval_cli.parse_args([str(ckpt), "--data", "folder", f"data.root={root}", "data.cache=false",
                                    "data.val_per_speaker=1", "--out", "x"])
        assert eval_cli.eval_set(args, model).split == split, root


@pytest.mark.parametrize("held_out", ["demo_heldout", "engines_heldout"])
def test_a_held_out_corpus_is_named_by_its_config_and_root_with_the_split_the_baseline_was_fitted_on(
        tmp_path, monkeypatch, held_out):
    """eval --data demo_heldout on a demo checkpoint: the scored set is named demo_heldout at its root (not "demo",
    the layout it inherits), all of it, and the baseline's split (the demo's training split) is named apart."""
    monkeypatch.chdir(REPO)
    ckpt = make_checkpoint(tmp_path / "vq.pt")
    saved = load_checkpoint(ckpt)
    data = OmegaConf.to_container(load_data_config("demo", ["data.cache=false", "data.sample_rate=16000"]), resolve=True)
    save_checkpoint(ckpt, saved["model"], {**saved["config"], "data": data, "seed": 3}, saved["speakers"], 0)
    args = eval_cli.parse_args([str(ckpt), "--data", held_out, "data.cache=false", "--out", "x"])
    set_ = eval_cli.eval_set(args, VQVAE.from_checkpoint(str(ckpt)))
    assert set_.description.startswith(
        f"{held_out} at {REPO / 'datasets' / held_out} (all split: every utterance of the corpus); baseline and probes "
        f"fitted on the training split of demo at {REPO / 'datasets' / 'demo'} (")
    assert set_.corpus == f"{held_out} at {REPO / 'datasets' / held_out}"


def test_renamed_eval_flags_keep_their_old_names():
    args = eval_cli.parse_args(["c.pt", "--out", "x", "--n-sampled", "3", "--sampled-seconds", "0.5"])
    assert (args.n_resynth, args.resynth_seconds) == (3, 0.5)
def speech_checkpoint(tmp_path: Path, data) -> Path:
    """The tiny checkpoint trained on `data` (seed 3) with the untrained tiny speech path (configs/speech/tiny.yaml at
    1000 F0 frames/s, which tiles the tiny model's 16-sample units) and log-F0 statistics for its training
    speakers SPEAKERS[:2] (120 and 160 Hz)."""
    ckpt = load_checkpoint(make_checkpoint(tmp_path / "tiny.pt"))
    speech = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "speech" / "tiny.yaml")) | {"frame_rate": 1000.0}
    model_cfg = {**ckpt["config"]["model"], "speech": speech}
    model = VQVAE.from_config(model_cfg, ckpt["speakers"])
    assert set(model.load_state_dict(ckpt["model"], strict=False).missing_keys) == {
        k for k in model.state_dict() if k.startswith("speech.")}
    model.speech.set_stats({s: F0Stats(math.log(120.0 + 40 * i), 0.2) for i, s in enumerate(SPEAKERS[:2])})
    config = {"model": model_cfg, "data": OmegaConf.to_container(data, resolve=True), "seed": 3}
    save_checkpoint(tmp_path / "speech.pt", model.state_dict(), config, ckpt["speakers"], step=5)
    return tmp_path / "speech.pt"


def test_the_speech_path_is_scored_by_default_pitch_probe_wer_and_targets_next_to_natural_audio(tmp_path, data_cfg):
    root = tmp_path / "corpus"
    ids = write_corpus(root, speakers=SPEAKERS, per_speaker=3)
    ids = [f"{u.split('_')[0]}_{u}" for u in ids]  # the folder layout's ids: <speaker dir>_<file stem>
    (root / "transcripts.tsv").write_text("".join(f"{u}\tthe old lighthouse keeper\n" for u in ids))
    data = data_cfg("folder", root=str(root), cache=False, held_out_speakers=[SPEAKERS[2]], val_per_speaker=1,
                    transcripts="transcripts.tsv")
    model = VQVAE.from_checkpoint(str(speech_checkpoint(tmp_path, data)))
    set_ = corpus_set(data_config(model.config, None, []), "all", 3)
    assert set_.transcripts == {u: "the old lighthouse keeper" for u in ids}
    opts = EvalOptions(n_resynth=2, n_convert=9, resynth_seconds=0.1, abx_triplets=30, posterior_positions=0)
    m = evaluate_checkpoint(model, str(tmp_path / "speech.pt"), set_, tmp_path / "eval", opts)
    finite_numbers(m)
    r = m["resynthesis"]
    assert r["decoder"] == "source_filter" and r["f0"] == "mapped" and "1000 frames/s" in r["pitch_tracker"]
    assert r["self"]["n"] == 2 and r["conversion"]["n"] == 9
    assert r["conversion_seen"]["n"] == 6 and r["conversion_unseen"]["n"] == 3  # p227 is held out
    assert {u["seen"] for u in r["conversion"]["utterances"]} == {True, False}
    for kind in ("self", "conversion_seen", "conversion_unseen"):
        p = r[kind]["pitch"]
        assert p["n_frames"] > 0 and 0 <= p["voicing_agreement"] <= 1
        assert all(p[k] is None or 0 <= p[k] <= 1 for k in ("voiced_recall", "gpe")) and (p["median_cents"] or 0) >= 0
        assert 0 <= r[kind]["round_trip_agreement"] <= 1 and 0 <= r[kind]["probe_target_accuracy"] <= 1
    assert r["self"]["mcd_db"] >= 0 and "mcd_db" not in r["conversion_seen"]
    assert 0 <= r["conversion_seen"]["probe_says_source"] <= 1 and r["conversion_unseen"]["probe_says_source"] is None
    assert r["conversion_unseen"]["probe_natural_accuracy"] is None  # the probe does not know held-out speakers
    assert 0 <= r["self"]["probe_natural_accuracy"] <= 1
    w = r["intelligibility"]
    assert w["n"] == 2 and w["n_words"] == 8 and w["audio"] == "whole utterances"
    assert [u["seconds"] for u in w["utterances"]] == [SECONDS] * 2  # whole 0.4-s utterances, not the 0.1-s excerpts
    assert w["wer_natural"] >= 0 and w["wer_resynthesis"] >= 0
    assert w["wer_ratio"] is None if w["wer_natural"] == 0 else w["wer_ratio"] == pytest.approx(
        w["wer_resynthesis"] / w["wer_natural"])
    c = r["intelligibility_conversion"]  # conversions: the same words in another voice, unseen speakers included
    assert 0 < c["n"] <= r["conversion"]["n"] and all(u["utt"] in set_.transcripts for u in c["utterances"])
    assert [u["seconds"] for u in c["utterances"]] == [SECONDS] * c["n"]
    rows = {t["measure"]: t for t in r["targets"]}
    assert len(rows) == 16 and rows["self: MCD (dB)"]["met"] == (r["self"]["mcd_db"] <= 6)
    assert rows["conversion from unseen: gross pitch error"]["target"] == "<= 0.1"
    for t in rows.values():
        op, threshold = t["target"].split()
        assert t["met"] is None if t["value"] is None or t["note"] else t["met"] == (
            t["value"] >= float(threshold) if op == ">=" else t["value"] <= float(threshold))
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "## Speech against its targets (issue 19)" in report and "recogniser WER natural" in report
    assert all(line.count("|") in (3, 5, 7) for line in report.splitlines() if line.startswith("|"))


def test_decoder_and_f0_choices_of_the_resynthesis(tmp_path, data_cfg):
    root = tmp_path / "corpus"
    write_corpus(root, speakers=SPEAKERS[:2], per_speaker=1)
    model = VQVAE.from_checkpoint(str(speech_checkpoint(tmp_path, data_cfg("folder", root=str(root), cache=False))))
    f0 = np.where(np.arange(100) % 10 < 7, 200.0 * 2 ** (np.sin(np.arange(100) / 9) / 4), 0.0).astype(np.float32)
    source = (f0, f0 > 0)
    job = {"kind": "conversion", "target": SPEAKERS[1]}
    given, ref = contours(model, job, source, EvalOptions())
    assert given is ref and np.array_equal(ref[1], source[1])
    assert np.log(ref[0][ref[1]]).mean() == pytest.approx(math.log(160.0), abs=1e-4)  # the target's statistics
    assert np.log(ref[0][ref[1]]).std() == pytest.approx(0.2, abs=1e-3)
    assert contours(model, job, source, EvalOptions(f0="source")) == (source, source)
    given, ref = contours(model, job, source, EvalOptions(f0="predicted"))
    assert given is None and np.log(ref[0][ref[1]]).mean() == pytest.approx(math.log(160.0), abs=1e-4)
    assert contours(model, {"kind": "self", "target": SPEAKERS[0]}, source, EvalOptions(f0="predicted")) == (
        source, source)
    wav = load_wavs(file_set([str(root)]).utterances[:1], 16000, None, model.peak_normalize)
    jobs = resynthesis_jobs(model, {}, {u: (w, SPEAKERS[0]) for u, w in wav.items()}, SPEAKERS[:2],
                            EvalOptions(resynth_seconds=None))
    assert jobs[0]["wav"].size == int(SECONDS * 16000) // 16 * 16 and jobs[0]["target"] == SPEAKERS[1]
    section, _ = resynthesis_quality(model, jobs, None, EvalOptions(decoder="wavenet", resynth_seconds=None))
    assert section["decoder"] == "wavenet" and section["f0"] is None and section["conversion_seen"]["n"] == 1
    old = VQVAE.from_checkpoint(str(tmp_path / "tiny.pt"))  # no speech path: the WaveNet, the default tracker
    assert old.speech is None and contours(old, job, source, EvalOptions()) == (None, source)
    assert resynthesis_quality(old, jobs, None, EvalOptions())[0]["decoder"] == "wavenet"
    with pytest.raises(ValueError, match="no speech path"):
        resynthesis_quality(old, jobs, None, EvalOptions(decoder="source_filter"))


def test_corpus_transcripts_from_the_data_config_or_the_root(tmp_path, data_cfg):
    demo, heldout = data_cfg("demo"), data_cfg("demo_heldout")
    assert demo.transcripts == heldout.transcripts == "transcripts.tsv"
    assert len(corpus_transcripts(demo, REPO / "datasets" / "demo")) == 168
    assert len(corpus_transcripts(heldout, REPO / "datasets" / "demo_heldout")) == 60
    folder = data_cfg("folder", root=str(tmp_path))
    assert folder.transcripts is None and corpus_transcripts(folder, tmp_path) == {}
    (tmp_path / "transcripts.tsv").write_text("a_1\thello\n")
    assert corpus_transcripts(folder, tmp_path) == {"a_1": "hello"}  # null: <root>/transcripts.tsv when present
    with pytest.raises(ValueError, match=r"data.transcripts: .*elsewhere.tsv does not exist"):
        corpus_transcripts(data_cfg("folder", transcripts="elsewhere.tsv"), tmp_path)


def test_targets_met_or_not_and_a_wer_ratio_that_silence_would_meet_is_not_judged():
    section = {"self": {"pitch": {"voiced_recall": 0.95, "gpe": 0.2, "median_cents": None}, "mcd_db": 6.0,
                        "probe_target_accuracy": 0.5, "round_trip_agreement": 0.7},
               "intelligibility": {"wer_natural": 0.4, "wer_ratio": 1.6}}
    rows = {t["measure"]: t for t in target_rows(section)}
    assert len(rows) == 7  # self's 6 and the WER ratio; no conversion was scored
    assert rows["self: voiced frames kept (recall)"]["met"] is True and rows["self: gross pitch error"]["met"] is False
    assert rows["self: median pitch error (cents)"]["met"] is None
    assert rows["self: MCD (dB)"]["met"] is True and rows["self: round-trip unit agreement"]["met"] is True
    assert rows["intelligibility: WER resynthesis / WER natural"]["met"] is False
    section["intelligibility"] = {"wer_natural": 0.9, "wer_ratio": 1.1}  # 0.9 * 1.5 >= 1: an empty output meets it
    wer = {t["measure"]: t for t in target_rows(section)}["intelligibility: WER resynthesis / WER natural"]
    assert wer["met"] is None and "silence" in wer["note"]
