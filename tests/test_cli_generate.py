"""Resynthesis and voice conversion: lengths and rates, speakers, units-file checks, the CLI end to end."""
import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import SPEAKERS, noise_signal, write_wav

from audio_vqvae.cli.generate import main
from audio_vqvae.cli.units import main as units_main
from audio_vqvae.synthesis import Job, batches, plan_jobs
from audio_vqvae.unitfile import read_speaker_map


@pytest.fixture
def clips(tmp_path):
    """Two short clips (not whole frames long) under speaker directories named like the checkpoint's speakers."""
    return [write_wav(tmp_path / "in" / "p225" / "x.wav", 0.021, seed=1),
            write_wav(tmp_path / "in" / "p226" / "y.wav", 0.013, seed=2, sample_rate=22050)]


def generate(ckpt, out_dir, *args):
    main(["-c", str(ckpt), "-o", str(out_dir), "--device", "cpu", *map(str, args)])


def test_decode_of_encode_has_the_input_length_cut_to_whole_frames(model):
    for n in (16, 17, 200, 333):
        wav = torch.from_numpy(noise_signal(n / 16000, seed=n))
        out = model.decode(model.encode(wav, 16000), "p226", greedy=True)
        assert out.shape == (n // model.hop * model.hop,) and out.dtype == torch.float32
        assert out.abs().max() <= 1.0


def test_plan_jobs_names_outputs_and_checks_speakers(model, tmp_path):
    units = {"a": np.arange(4), "b": np.arange(2)}
    jobs = plan_jobs(model, units, {}, ["p225", "p227"], tmp_path)
    assert [j.path.name for j in jobs] == ["a_to_p225.wav", "a_to_p227.wav", "b_to_p225.wav", "b_to_p227.wav"]
    assert [j.path.name for j in plan_jobs(model, units, {"a": "p226", "b": "p225"}, [], tmp_path)] == ["a.wav", "b.wav"]
    with pytest.raises(ValueError, match="no speaker known for utterance 'b'.*--speaker.*p225, p226, p227"):
        plan_jobs(model, units, {"a": "p226"}, [], tmp_path)
    with pytest.raises(ValueError, match="unknown speaker 'zz'; valid speakers: p225, p226, p227"):
        plan_jobs(model, units, {"a": "zz", "b": "p225"}, [], tmp_path)


def test_batches_group_similar_lengths_longest_first():
    jobs = [Job(str(n), "p225", np.zeros(n, dtype=np.int64), None) for n in (3, 9, 1, 7, 5)]
    assert [[j.utt_id for j in b] for b in batches(jobs, 2)] == [["9", "7"], ["5", "3"], ["1"]]


def test_resynthesis_of_audio_from_a_data_config_uses_the_source_speakers(ckpt, clips, tmp_path):
    out = tmp_path / "out"
    generate(ckpt, out, "--data", "folder", f"data.root={tmp_path / 'in'}", "data.cache=false", "--batch-size", 2)
    assert sorted(p.name for p in out.iterdir()) == ["p225_x.wav", "p226_y.wav"]
    x, y = sf.info(str(out / "p225_x.wav")), sf.info(str(out / "p226_y.wav"))
    assert x.samplerate == y.samplerate == 16000
    assert x.frames == int(0.021 * 16000) // 16 * 16 and y.frames == int(0.013 * 16000) // 16 * 16


def test_conversion_to_several_speakers(ckpt, clips, tmp_path):
    out = tmp_path / "out"
    generate(ckpt, out, *clips, "--speaker", "p225,p227", "--greedy")
    names = sorted(p.name for p in out.iterdir())
    assert names == ["x_to_p225.wav", "x_to_p227.wav", "y_to_p225.wav", "y_to_p227.wav"]
    a, b = sf.read(out / "x_to_p225.wav")[0], sf.read(out / "x_to_p227.wav")[0]
    assert a.shape == b.shape == (336 // 16 * 16,)


def test_unknown_speaker_is_one_error_listing_the_valid_ones(ckpt, clips, tmp_path):
    with pytest.raises(SystemExit, match="unknown speaker 'p999'; valid speakers: p225, p226, p227"):
        generate(ckpt, tmp_path / "out", *clips, "--speaker", "p225,p999")
    assert not (tmp_path / "out").exists()


def test_units_without_a_known_speaker_ask_for_one(ckpt, clips, tmp_path):
    with pytest.raises(SystemExit, match="no speaker known for utterance 'x': pass --speaker"):
        generate(ckpt, tmp_path / "out", *clips)


def test_list_speakers(ckpt, capsys):
    main(["-c", str(ckpt), "--list-speakers"])
    assert capsys.readouterr().out.split() == list(SPEAKERS)


def test_units_file_round_trip_with_speaker_map_and_dedup(ckpt, clips, tmp_path):
    units = tmp_path / "units.txt"
    units_main(["-c", str(ckpt), "-o", str(units), "--dedup", *map(str, clips)])
    (tmp_path / "spk.tsv").write_text("x\tp226\ny\tp227\n")
    generate(ckpt, tmp_path / "out", "--units", units, "--speaker-map", tmp_path / "spk.tsv", "--temperature", 0.7)
    assert sf.info(str(tmp_path / "out" / "x.wav")).frames == 336 // 16 * 16  # expanded by the durations
    assert sf.info(str(tmp_path / "out" / "y.wav")).frames == 208 // 16 * 16
    before = (tmp_path / "out" / "x.wav").stat().st_mtime_ns
    generate(ckpt, tmp_path / "out", "--units", units, "--speaker-map", tmp_path / "spk.tsv")  # kept, not redone
    assert (tmp_path / "out" / "x.wav").stat().st_mtime_ns == before


@pytest.mark.parametrize("bad,message", [("b\t1 16 2", "units.txt:2: unit 16 of utterance 'b' is out of range"),
                                         ("b 1 2", "units.txt:2: expected utt_id<TAB>units")])
def test_units_file_with_a_bad_line_is_rejected_with_its_line_number(ckpt, tmp_path, bad, message):
    units = tmp_path / "units.txt"
    units.write_text(f"a\t0 15 3\n{bad}\n")
    with pytest.raises(SystemExit, match=message):
        generate(ckpt, tmp_path / "out", "--units", units, "--speaker", "p225")
    assert not (tmp_path / "out").exists()


def test_speaker_map_errors_name_the_line(tmp_path):
    path = tmp_path / "spk.tsv"
    path.write_text("# utt speaker\na\tp225\nb p226\n")
    with pytest.raises(ValueError, match=r"spk\.tsv:3: expected utt_id<TAB>speaker"):
        read_speaker_map(path)
