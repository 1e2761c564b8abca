"""Resynthesis and voice conversion: lengths and rates, speakers, units-file checks, decoder and F0 choices, the CLI
end to end."""
import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import SPEAKERS, noise_signal, tone, write_wav

from audio_vqvae.cli.generate import main
from audio_vqvae.cli.units import main as units_main
from audio_vqvae.model import VQVAE, mapped_contour
from audio_vqvae.synthesis import Job, Request, batches, check_f0_request, plan_jobs
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


# ---- the speech path: decoder and F0 choices ----------------------------------------------------------------------


@pytest.fixture
def voiced(tmp_path):
    """Two voiced clips (a tone with a little noise), one at 22.05 kHz."""
    rng = np.random.default_rng(0)
    paths = []
    for name, seconds, sr, hz in (("v1", 0.7, 16000, 140.0), ("v2", 0.45, 22050, 230.0)):
        x = tone(seconds, sr, freq=hz)[:, 0] + 0.01 * rng.standard_normal(round(seconds * sr)).astype(np.float32)
        paths.append(tmp_path / "in" / f"{name}.wav")
        paths[-1].parent.mkdir(exist_ok=True)
        sf.write(paths[-1], x, sr, subtype="FLOAT")
    return paths


@pytest.mark.parametrize("f0", ["source", "mapped"])
def test_units_with_f0_decode_exactly_as_the_audio_they_came_from(speech_ckpt, voiced, tmp_path, f0):
    units = tmp_path / "units.txt"
    units_main(["-c", str(speech_ckpt), "-o", str(units), "--f0", "--dedup", *map(str, voiced)])
    generate(speech_ckpt, tmp_path / "audio", *voiced, "--speaker", "p226,p227", "--f0", f0, "--seed", 3)
    generate(speech_ckpt, tmp_path / "units", "--units", units, "--speaker", "p226,p227", "--f0", f0, "--seed", 3)
    names = sorted(p.name for p in (tmp_path / "audio").iterdir())
    assert names == ["v1_to_p226.wav", "v1_to_p227.wav", "v2_to_p226.wav", "v2_to_p227.wav"]
    for name in names:
        a, b = sf.read(tmp_path / "audio" / name)[0], sf.read(tmp_path / "units" / name)[0]
        assert a.shape == b.shape and np.abs(a).max() > 0 and (a == b).all(), name
    # the same job decoded by the library with the units and the source contour, seeded alike
    model = VQVAE.from_checkpoint(str(speech_ckpt))
    wav = model.prepare(sf.read(voiced[0], dtype="float32")[0], 16000)
    contour = model.f0_contour(wav)
    if f0 == "mapped":
        contour = mapped_contour(contour, model.speech.speaker_stats(model.speaker_index("p226")))
    direct = model.decode(model.encode_prepared([wav])[0], "p226", f0=contour,
                          generator=torch.Generator().manual_seed(3))
    np.testing.assert_allclose(sf.read(tmp_path / "audio" / "v1_to_p226.wav", dtype="float32")[0], direct.numpy(),
                               atol=1e-4)


def test_units_without_f0_decode_with_the_predictor_and_wavenet_still_works(speech_ckpt, voiced, tmp_path):
    units = tmp_path / "units.txt"
    units_main(["-c", str(speech_ckpt), "-o", str(units), *map(str, voiced)])
    generate(speech_ckpt, tmp_path / "pred", "--units", units, "--speaker", "p225")  # no F0 file: predicted
    generate(speech_ckpt, tmp_path / "wn", "--units", units, "--speaker", "p225", "--decoder", "wavenet", "--greedy")
    generate(speech_ckpt, tmp_path / "wn", *voiced, "--speaker", "p227", "--decoder", "wavenet", "--greedy")
    for d in ("pred", "wn"):
        x = sf.read(tmp_path / d / "v1_to_p225.wav")[0]
        assert x.shape == (round(0.7 * 16000) // 160 * 160,) and np.isfinite(x).all()
    assert sf.info(str(tmp_path / "wn" / "v2_to_p227.wav")).frames == 7199 // 160 * 160  # 9922 samples at 22.05 kHz
    with pytest.raises(SystemExit, match=r"--f0 source: .*units\.txt has no F0 file \(write one with "
                                         r"audio-vqvae-units --f0\)"):
        generate(speech_ckpt, tmp_path / "x", "--units", units, "--speaker", "p225", "--f0", "source")
    with pytest.raises(SystemExit, match="--f0 mapped: the WaveNet decoder takes no F0"):
        generate(speech_ckpt, tmp_path / "x", *voiced, "--speaker", "p225", "--decoder", "wavenet", "--f0", "mapped")


def test_f0_and_the_speech_decoder_without_a_speech_path_are_one_error(ckpt, clips, tmp_path):
    with pytest.raises(SystemExit, match=r"^audio-vqvae-generate: error: --f0 predicted: this checkpoint has no "
                                         "speech path"):
        generate(ckpt, tmp_path / "out", *clips, "--speaker", "p225", "--f0", "predicted")
    with pytest.raises(SystemExit, match="--decoder=source_filter: this checkpoint has no speech path"):
        generate(ckpt, tmp_path / "out", *clips, "--speaker", "p225", "--decoder", "source_filter")
    assert not (tmp_path / "out").exists()


def test_prior_samples_have_no_source_contour(speech_ckpt):
    model = VQVAE.from_checkpoint(str(speech_ckpt))
    with pytest.raises(ValueError, match="--f0 source: prior samples have no source contour"):
        check_f0_request(model, Request(prior="prior.pt", f0="source"))
    assert check_f0_request(model, Request(prior="prior.pt")) == (True, "mapped")  # no contour: predicted
    assert check_f0_request(model, Request(decoder="wavenet")) == (False, "mapped")


def test_an_f0_file_that_disagrees_with_its_units_is_one_error_naming_file_and_line(speech_ckpt, voiced, tmp_path):
    units = tmp_path / "units.txt"
    units_main(["-c", str(speech_ckpt), "-o", str(units), "--f0", *map(str, voiced)])
    f0_file = tmp_path / "units.txt.f0"
    first, second = f0_file.read_text().splitlines()
    f0_file.write_text(f"{first}\n{second} 0 0 0 0 0 0 0 0 0\n")
    with pytest.raises(SystemExit, match=r"^audio-vqvae-generate: error: .*units\.txt\.f0:2: utterance 'v2': F0 "
                                         r"contour of \d+ frames does not fit its units: expected \d+ to \d+ frames$"):
        generate(speech_ckpt, tmp_path / "out", "--units", units, "--speaker", "p225")
    generate(speech_ckpt, tmp_path / "out", "--units", units, "--speaker", "p225", "--f0", "predicted")  # not read


def test_plan_jobs_picks_each_jobs_contour(speech_ckpt, tmp_path):
    model = VQVAE.from_checkpoint(str(speech_ckpt))
    hz = np.float32(150) * np.exp2(np.linspace(-0.5, 0.5, 8)).astype(np.float32)
    contour = (hz, np.ones(8, bool))
    units, contours = {"a": np.arange(4)}, {"a": contour}
    self_job, = plan_jobs(model, units, {"a": "p225"}, [], tmp_path, contours, "mapped")
    assert self_job.f0 is contour  # resynthesis keeps the source's melody
    to_p226, = plan_jobs(model, units, {}, ["p226"], tmp_path, contours, "mapped")
    assert np.isclose(np.log(to_p226.f0[0]).mean(), np.log(200.0), atol=1e-4)  # p226's log-F0 mean
    assert plan_jobs(model, units, {}, ["p226"], tmp_path, contours, "source")[0].f0 is contour
    assert plan_jobs(model, units, {"a": "p225"}, ["p226"], tmp_path, contours, "predicted")[0].f0 is None
