"""The field's ABX (zerospeech-libriabx2) as `audio-vqvae-eval --field-abx` scores it: item files, agreement with
the project's ABX on units whose answer is known, the report's rows, and the error without the package."""
import numpy as np
import pytest

from audio_vqvae import metrics as M
from audio_vqvae.alignments import Segment, build_vocab, frame_labels
from audio_vqvae.cli import eval as eval_cli
from audio_vqvae.evaluation.field_abx import field_unit_abx, item_lines, missing
from audio_vqvae.evaluation.units import comparison

RATE = 100.0
PHONES = ("a", "b", "c", "d")


def toy_set(n_utts: int = 8, seed: int = 0) -> tuple[dict[str, list[Segment]], dict[str, str]]:
    """Utterances of 2 speakers: a pause, 12 phones of 80 ms drawn from PHONES, a pause."""
    rng = np.random.default_rng(seed)
    alignments, speakers = {}, {}
    for i in range(n_utts):
        utt, t = f"u{i:02d}", 0.1
        segs = [Segment(0.0, t, "sil")]
        for p in rng.choice(PHONES, size=12):
            segs.append(Segment(t, t + 0.08, str(p)))
            t += 0.08
        alignments[utt], speakers[utt] = [*segs, Segment(t, t + 0.1, "sil")], f"s{i % 2}"
    return alignments, speakers


def units_from(alignments, speakers, offset_per_speaker: int) -> dict[str, np.ndarray]:
    """Unit = phone id (+ offset x speaker index): units that carry the phone, and the speaker if offset > 0."""
    vocab = build_vocab(alignments)
    out = {}
    for u, segs in alignments.items():
        labels = frame_labels(segs, round(segs[-1].end * RATE), RATE, vocab)
        ids = np.where(labels < 0, len(PHONES), labels)  # pauses: their own unit
        out[u] = ids + offset_per_speaker * int(speakers[u][1:])
    return out


needs_field = pytest.mark.skipif(missing() is not None, reason="zerospeech-libriabx2 not installed (optional)")


def test_item_lines_one_per_phone_with_both_neighbours_and_pauses_as_sil():
    alignments, speakers = toy_set(2)
    lines = item_lines(alignments, speakers)
    assert lines[0] == "#file onset offset #phone prev-phone next-phone speaker"
    assert len(lines) - 1 == 2 * 12
    first = alignments["u00"][1]
    assert lines[1] == f"u00 {first.start:.3f} {first.end:.3f} {first.phone} SIL {alignments['u00'][2].phone} s0"


@needs_field
def test_field_abx_agrees_with_the_projects_on_units_whose_answer_is_known():
    alignments, speakers = toy_set()
    vocab = build_vocab(alignments)
    n_units = 2 * (len(PHONES) + 1)
    for offset, within, across in ((0, 0.0, 0.0), (len(PHONES) + 1, 0.0, 0.5)):  # phone units; phone x speaker
        units = units_from(alignments, speakers, offset)
        field = field_unit_abx(units, alignments, speakers, n_units, RATE)
        labels = {u: frame_labels(alignments[u], len(units[u]), RATE, vocab) for u in units}
        own = {m: M.abx_error(units, labels, speakers, m, 2000, 0, "hamming")[0] for m in ("within", "across")}
        assert field["within_any_context"] == pytest.approx(within, abs=1e-6) == own["within"]
        assert field["across_any_context"] == pytest.approx(across, abs=1e-6) == pytest.approx(own["across"])
    rng = np.random.default_rng(1)
    noise = {u: rng.integers(0, n_units, len(v)) for u, v in units.items()}
    field = field_unit_abx(noise, alignments, speakers, n_units, RATE)
    assert 0.3 < field["within_any_context"] < 0.7 and 0.3 < field["across_any_context"] < 0.7


def test_the_field_rows_are_compared_only_when_scored():
    plain = {"phones": {"abx": {"within": 0.2, "across": 0.3}}}
    assert not any("field" in r["measure"] for r in comparison(plain, plain))
    scored = {"phones": {"abx": {"within": 0.2, "across": 0.3, "field": {"within_any_context": 0.1,
                                                                         "across_any_context": 0.2}}}}
    base = {"phones": {"abx": {"within": 0.2, "across": 0.3, "field": {"within_any_context": 0.15,
                                                                       "across_any_context": 0.18}}}}
    rows = {r["measure"]: r["beats_baseline"] for r in comparison(scored, base) if "field" in r["measure"]}
    assert list(rows.values()) == [True, False]  # within 0.10 < 0.15; across 0.20 > 0.18


def test_field_abx_without_the_package_is_a_one_line_error(monkeypatch, capsys):
    monkeypatch.setattr(eval_cli, "missing", lambda: "zerospeech-libriabx2 is not usable (zrc_abx2 is missing): pip")
    with pytest.raises(SystemExit):
        eval_cli.parse_args(["c.pt", "--out", "o", "--field-abx"])
    assert "error: --field-abx: zerospeech-libriabx2 is not usable" in capsys.readouterr().err
    assert eval_cli.options(eval_cli.parse_args(["c.pt", "--out", "o"])).field_abx is False
