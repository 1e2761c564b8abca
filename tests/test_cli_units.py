"""The units app end to end: outputs, shards, resume, dedup, F0, inputs, errors."""
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import assert_same_units, lines, make_checkpoint, tone, write_wav

from audio_vqvae.cli.units import main
from audio_vqvae.unitfile import load_f0, load_units, read_units

# ---- CLI ----------------------------------------------------------------------------------------------------------


def run_cli(ckpt, out, *args):
    """`audio-vqvae-units` with small pieces, on the CPU."""
    main(["-c", str(ckpt), "-o", str(out), "--device", "cpu", "--chunk-seconds", "0.25", *map(str, args)])


def test_cli_writes_units_sidecar_npy_and_skip_list(ckpt, model, corpus, tmp_path):
    out = tmp_path / "out" / "units.txt"
    run_cli(ckpt, out, corpus, "--npy-dir", tmp_path / "npy", "--batch-size", "2")
    units = read_units(out, 16)
    assert list(units) == ["spk1_a", "spk1_b", "spk2_c", "spk2_d"]
    assert_same_units(units["spk2_c"], model, corpus / "spk2" / "c.wav")
    np.testing.assert_array_equal(np.load(tmp_path / "npy" / "spk1_b.npy"), units["spk1_b"])
    meta = json.loads((tmp_path / "out" / "units.txt.json").read_text())
    assert meta["frame_rate"] == 1000.0 and meta["codebook_size"] == 16 and meta["hop"] == 16
    assert meta["sample_rate"] == 16000 and meta["dedup"] is False and len(meta["checkpoint_sha256"]) == 64
    skipped = lines(tmp_path / "out" / "units.txt.skipped.tsv")
    assert sorted(line.split("\t")[0].rsplit("/", 1)[1] for line in skipped) == ["empty.wav", "short.wav", "text.flac"]
    assert not (tmp_path / "out" / "units.txt.partial").exists()


def test_shard_outputs_concatenate_to_the_unsharded_output(ckpt, corpus, tmp_path):
    run_cli(ckpt, tmp_path / "all.txt", corpus)
    for i in range(3):
        run_cli(ckpt, tmp_path / "units.txt", corpus, "--shard", i, "--num-shards", 3)
    shards = [line for i in range(3) for line in lines(tmp_path / f"units.{i}-of-3.txt")]
    assert shards == lines(tmp_path / "all.txt")


def test_rerun_skips_finished_utterances_and_adds_new_ones(ckpt, corpus, tmp_path):
    out = tmp_path / "units.txt"
    run_cli(ckpt, out, corpus)
    first = lines(out)
    out.write_text("".join(f"{line.split(chr(9))[0]}\t7\n" for line in first))  # marks: re-encoding would undo them
    write_wav(corpus / "spk1" / "aa.wav", 0.4, seed=9)
    run_cli(ckpt, out, corpus)
    now = lines(out)
    assert [line.split("\t")[0] for line in now] == ["spk1_a", "spk1_aa", "spk1_b", "spk2_c", "spk2_d"]  # id order
    assert [line for line in now if not line.startswith("spk1_aa")] == [f"{line.split(chr(9))[0]}\t7" for line in first]
    assert now[1] != "spk1_aa\t7"


def test_a_killed_run_resumes_from_its_journal(ckpt, corpus, tmp_path):
    out = tmp_path / "units.txt"
    run_cli(ckpt, out, corpus)
    expected = lines(out)
    out.unlink()
    (tmp_path / "units.txt.partial").write_text("spk1_a\t3 3\nspk1_b\t1 2 3 4 5 6 7 8 9 1")  # torn last line
    run_cli(ckpt, out, corpus)
    assert lines(out) == ["spk1_a\t3 3"] + expected[1:]
    assert not (tmp_path / "units.txt.partial").exists()


def test_dedup_output_expands_to_the_frame_level_units(ckpt, corpus, tmp_path):
    run_cli(ckpt, tmp_path / "full.txt", corpus)
    run_cli(ckpt, tmp_path / "dedup.txt", corpus, "--dedup")
    full, dedup_units = read_units(tmp_path / "full.txt"), read_units(tmp_path / "dedup.txt")
    assert all(len(dedup_units[k]) < len(full[k]) for k in full)
    expanded = load_units(tmp_path / "dedup.txt", 16)
    assert list(expanded) == list(full) and all((expanded[k] == full[k]).all() for k in full)
    assert json.loads((tmp_path / "dedup.txt.json").read_text())["durations"] == "dedup.txt.durations"


def test_output_of_another_checkpoint_or_setting_is_not_resumed(ckpt, corpus, tmp_path):
    out = tmp_path / "units.txt"
    run_cli(ckpt, out, corpus)
    with pytest.raises(SystemExit, match="dedup=False"):
        run_cli(ckpt, out, corpus, "--dedup")
    other = make_checkpoint(tmp_path / "other.pt", seed=1)
    with pytest.raises(SystemExit, match="checkpoint_sha256"):
        run_cli(other, out, corpus)
    run_cli(other, out, corpus, "--overwrite")


@pytest.mark.parametrize("changed,message", [(("--peak-normalize", "0.5"), "peak_normalize=None, not 0.5"),
                                             (("--chunk-seconds", "0.5"), "chunk_seconds=0.25, not 0.5"),
                                             (("--batch-size", "3"), "batch_size=2, not 3")])
def test_a_resume_with_other_extraction_settings_is_refused(ckpt, corpus, tmp_path, changed, message):
    """--peak-normalize, --chunk-seconds and --batch-size are recorded in the sidecar; another value is one error, the
    same values resume."""
    out = tmp_path / "units.txt"
    run_cli(ckpt, out, corpus, "--batch-size", "2", "--peak-normalize", "off")
    meta = json.loads((tmp_path / "units.txt.json").read_text())
    assert (meta["peak_normalize"], meta["chunk_seconds"], meta["batch_size"]) == (None, 0.25, 2)
    args = {"--batch-size": "2", "--peak-normalize": "off", "--chunk-seconds": "0.25"} | dict([changed])
    with pytest.raises(SystemExit, match=f"units.txt: exists and was written with {message}; pass --overwrite"):
        main(["-c", str(ckpt), "-o", str(out), "--device", "cpu", str(corpus), *[x for kv in args.items() for x in kv]])
    run_cli(ckpt, out, corpus, "--batch-size", "2", "--peak-normalize", "off")


def test_data_config_and_manifest_inputs(ckpt, corpus, tmp_path):
    run_cli(ckpt, tmp_path / "dir.txt", corpus / "spk1", corpus / "spk2")
    run_cli(ckpt, tmp_path / "data.txt", "--data", "folder", f"data.root={corpus}", "data.cache=false")
    assert [line.split("\t")[1] for line in lines(tmp_path / "data.txt")] == \
           [line.split("\t")[1] for line in lines(tmp_path / "dir.txt")]
    yaml = tmp_path / "run.yaml"  # a run config with a data: node, as train writes next to its checkpoints
    yaml.write_text(f"data:\n  name: folder\n  root: {corpus}\n  speaker_level: 0\n  speaker_regex: null\n"
                    "  sample_rate: 16000\n  scan: header\n  cache: false\n")
    run_cli(ckpt, tmp_path / "yaml.txt", "--data", yaml)
    assert lines(tmp_path / "yaml.txt") == lines(tmp_path / "data.txt")
    with pytest.raises(SystemExit, match="--data .*run.yaml: .*rooot"):
        run_cli(ckpt, tmp_path / "x.txt", "--data", yaml, "data.rooot=/x")
    manifest = corpus / "list.tsv"
    manifest.write_text("spk1/a.wav\tspk1\nspk2/d.wav\tspk2\n")
    run_cli(ckpt, tmp_path / "manifest.txt", "--manifest", manifest, "data.cache=false")
    assert [line.split("\t")[0] for line in lines(tmp_path / "manifest.txt")] == ["spk1_a", "spk2_d"]
    with pytest.raises(SystemExit, match="--data nope"):
        run_cli(ckpt, tmp_path / "x.txt", "--data", "nope")


def test_missing_input_is_one_clear_error(ckpt, tmp_path):
    with pytest.raises(SystemExit, match="nothing.wav: no such file or directory"):
        run_cli(ckpt, tmp_path / "x.txt", tmp_path / "nothing.wav")


def test_api_and_cli_give_the_same_units_with_the_checkpoints_peak_normalisation(ckpt, tmp_path):
    from audio_vqvae.checkpoint import load_checkpoint, save_checkpoint
    from audio_vqvae.model import VQVAE

    c = load_checkpoint(ckpt)
    peaked = tmp_path / "peaked.pt"
    save_checkpoint(peaked, c["model"], {**c["config"], "data": {"peak_normalize": 0.95}}, c["speakers"], step=0)
    path = write_wav(tmp_path / "wavs" / "quiet.wav", 1.0, seed=3)
    sf.write(path, 0.2 * sf.read(path, dtype="float32")[0], 16000, subtype="FLOAT")  # peak far from 0.95
    run_cli(peaked, tmp_path / "u.txt", tmp_path / "wavs")
    model = VQVAE.from_checkpoint(str(peaked))
    wav, sr = sf.read(path, dtype="float32")
    np.testing.assert_array_equal(read_units(tmp_path / "u.txt")["quiet"], model.encode(wav, sr).numpy())


def test_manifest_ids_of_absolute_paths_are_stable_and_duplicates_refused(ckpt, corpus, tmp_path):
    manifest = corpus / "abs.tsv"
    manifest.write_text(f"{corpus / 'spk1' / 'a.wav'}\tspk1\n{corpus / 'spk2' / 'd.wav'}\tspk2\n")
    run_cli(ckpt, tmp_path / "m.txt", "--manifest", manifest, "data.cache=false")
    assert [line.split("\t")[0] for line in lines(tmp_path / "m.txt")] == ["spk1_a", "spk2_d"]
    outside = [write_wav(tmp_path / d / "a.wav", 0.3) for d in ("x", "y")]  # not under the root: id = stem
    manifest.write_text("".join(f"{p}\tspk1\n" for p in outside))
    with pytest.raises(SystemExit, match="both map to utterance id"):
        run_cli(ckpt, tmp_path / "n.txt", "--manifest", manifest, "data.cache=false")


# ---- F0 -----------------------------------------------------------------------------------------------------------


@pytest.fixture
def voiced(tmp_path):
    """Three voiced clips (a tone with a little noise), one at 22.05 kHz."""
    rng = np.random.default_rng(0)
    d = tmp_path / "voiced"
    d.mkdir()
    for name, seconds, sr, hz in (("a", 0.9, 16000, 140.0), ("b", 0.43, 22050, 210.0), ("c", 0.61, 16000, 260.0)):
        x = tone(seconds, sr, freq=hz)[:, 0] + 0.01 * rng.standard_normal(round(seconds * sr)).astype(np.float32)
        sf.write(d / f"{name}.wav", x, sr, subtype="FLOAT")
    return d


def test_f0_file_and_sidecar_match_the_units(speech_ckpt, voiced, tmp_path):
    out = tmp_path / "units.txt"
    run_cli(speech_ckpt, out, voiced, "--f0", "--dedup")
    meta = json.loads((tmp_path / "units.txt.json").read_text())
    assert meta["format_version"] == 2
    assert meta["f0"] == {"file": "units.txt.f0", "frame_rate": 1000.0, "unit": "Hz", "tracker": "praat-ac",
                          "range": [60.0, 600.0]}
    units, f0 = load_units(out, 16), load_f0(out, load_units(out, 16))
    assert list(f0) == list(units) == ["a", "b", "c"]
    for utt_id, hz in zip("abc", (140.0, 210.0, 260.0)):
        n_f0 = len(f0[utt_id][0])
        assert 10 * units[utt_id].size <= n_f0 <= 10 * units[utt_id].size + 9  # 1-ms F0 frames: 10 per 160-sample unit
        assert abs(np.median(f0[utt_id][0][f0[utt_id][1]]) - hz) < 1
    text = (tmp_path / "units.txt.f0").read_text().split("\n")[0].split("\t")[1].split()
    assert all(v == "0" or v.split(".")[1].isdigit() and len(v.split(".")[1]) == 1 for v in text)


def test_f0_with_shards_and_resume_equals_one_run(speech_ckpt, voiced, tmp_path):
    run_cli(speech_ckpt, tmp_path / "all.txt", voiced, "--f0")
    for i in range(2):
        run_cli(speech_ckpt, tmp_path / "units.txt", voiced, "--f0", "--shard", i, "--num-shards", 2)
    assert [line for i in range(2) for line in lines(tmp_path / f"units.{i}-of-2.txt.f0")] == lines(
        tmp_path / "all.txt.f0")
    assert json.loads((tmp_path / "units.1-of-2.txt.json").read_text())["f0"]["file"] == "units.1-of-2.txt.f0"
    resumed = tmp_path / "resumed.txt"
    run_cli(speech_ckpt, resumed, voiced / "a.wav", "--f0")  # a first run that did one file
    (tmp_path / "resumed.txt.partial").write_text(
        f"{lines(tmp_path / 'all.txt')[1]}\t{lines(tmp_path / 'all.txt.f0')[1].split(chr(9))[1]}\nc\t1 2")  # torn
    run_cli(speech_ckpt, resumed, voiced, "--f0")
    assert lines(resumed) == lines(tmp_path / "all.txt") and lines(Path(f"{resumed}.f0")) == lines(
        tmp_path / "all.txt.f0")
    with pytest.raises(SystemExit, match="written with f0=.*, not None"):
        run_cli(speech_ckpt, resumed, voiced)


def test_f0_without_a_speech_path_is_one_error_naming_the_option(ckpt, voiced, tmp_path):
    with pytest.raises(SystemExit, match=r"^audio-vqvae-units: error: --f0: this checkpoint has no speech path"):
        run_cli(ckpt, tmp_path / "units.txt", voiced, "--f0")
    assert not (tmp_path / "units.txt").exists()
