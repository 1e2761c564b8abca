"""Regenerate datasets/engines_heldout: held-out speech from synthesis engines other than espeak-ng, with phones.

    apt-get install -y flite festival festvox-kdlpc16k festvox-us-slt-hts   # flite 2.2, festival 2.5 (Debian 12)
    pip install -e . praat-parselmouth            # audio_vqvae.audio (soxr, atomic FLAC); Praat's "Change gender"
    python datasets/engines_heldout/make_engines_heldout.py   # rewrites the speaker folders, alignments/, transcripts

A model trained on the demo corpus has only heard espeak-ng (formant synthesis, one engine, one phone timing model).
This set is speech it has not heard in more than accent: 14 voices from two other engines (and Praat-processed
variants of them) read 10 sentences that are in neither the demo nor demo_heldout, every voice every sentence:
- flite 2.2 (CMU): clustergen statistical-parametric voices slt, rms, awb and the kal16 diphone voice, some with
  the engine's own F0 / duration settings changed;
- festival 2.5 (Edinburgh): the ked diphone voice (residual-excited LPC) and the slt HTS voice (mel-cepstral
  vocoder, 32 kHz), one of them at another speaking rate;
- processed: five engine outputs put through Praat's "Change gender" (PSOLA pitch change + formant shift by
  resampling, duration kept), to widen pitch and vocal-tract length past what the engines offer.
Phone alignments come from the engines: each prints its segment relation after synthesis (flite `-psdur`,
festival `utt.save.segs`), i.e. every phone's end time in the audio it produced, so they are the engines' own
timings, not a forced alignment. Labels are the engines' phone set (CMU/radio ARPAbet-like, lower case: `dh`,
`ax`, `ey`, ...; both engines use it), pauses become "sil"; the last segment is cut or stretched to the end of
the audio (the diphone voices' final pause can be shorter than its target). "Change gender" keeps every sample's
time, so processed voices keep their source's alignment. Audio is resampled to 16 kHz, scaled to a fixed peak,
rounded to 11-bit precision and written as 16-bit FLAC, as the demo is.
Outputs: <speaker>/<speaker>_<2nn>.flac, alignments/<utt_id>.tsv (start_s, end_s, phone), transcripts.tsv,
voices.tsv (speaker, engine, voice, settings, natural|processed). The same package versions give the same files.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import parselmouth
import soundfile as sf
from parselmouth.praat import call, run

from audio_vqvae.audio import resample, save_audio

OUT = Path(__file__).resolve().parent
SAMPLE_RATE = 16000
PEAK = 0.9  # every file is scaled to this peak, as in the demo
BITS = 11  # samples rounded to this precision (FLAC drops the unused low bits), as in the demo
FIRST_NUMBER = 201  # utterance ids number the sentences from here (demo: 001-080, demo_heldout: 101-120)
SILENCE = {"pau", "h#", "#", "sil"}

SENTENCES = [
    "The fisherman mended his nets on the quiet shore.",
    "A bright yellow balloon drifted over the rooftops.",
    "Jack packed sandwiches, apples and a flask of tea.",
    "The choir sang loudly in the old stone church.",
    "Please measure the width of the window frame.",
    "Our cousin moved to a farm near the northern border.",
    "The thief escaped through a gap in the hedge.",
    "Three big dogs were barking at the mailman.",
    "She poured warm milk into a chipped blue mug.",
    "The joyful crowd waved flags along the avenue.",
]


@dataclass(frozen=True)
class Voice:
    name: str  # speaker directory
    engine: str  # flite | festival
    voice: str  # the engine's voice name
    settings: tuple[tuple[str, str], ...] = ()  # flite --setf F=V, or festival hts_engine params
    gender: tuple[float, float, float] | None = None  # Praat "Change gender": formant shift, pitch median, range


VOICES = [
    Voice("fl_slt", "flite", "slt"),
    Voice("fl_slt_hi", "flite", "slt", (("int_f0_target_mean", "255"), ("int_f0_target_stddev", "45"),
                                        ("duration_stretch", "0.9"))),
    Voice("fl_rms", "flite", "rms"),
    Voice("fl_awb", "flite", "awb"),
    Voice("fl_kal", "flite", "kal16"),
    Voice("fl_kal_hi", "flite", "kal16", (("int_f0_target_mean", "150"), ("int_f0_target_stddev", "25"),
                                          ("duration_stretch", "1.15"))),
    Voice("fs_ked", "festival", "ked_diphone"),
    Voice("fs_slt", "festival", "cmu_us_slt_arctic_hts"),
    Voice("fs_slt_fast", "festival", "cmu_us_slt_arctic_hts", (("-r", "1.3"),)),
    Voice("px_rms_f", "flite", "rms", gender=(1.18, 205.0, 1.2)),
    Voice("px_awb_deep", "flite", "awb", gender=(0.87, 82.0, 0.8)),
    Voice("px_ked_child", "festival", "ked_diphone", gender=(1.25, 265.0, 1.4)),
    Voice("px_slt_m", "flite", "slt", gender=(0.84, 118.0, 1.0)),
    Voice("px_hts_low", "festival", "cmu_us_slt_arctic_hts", gender=(0.92, 140.0, 1.6)),
]


def segments_from_ends(ends: list[tuple[float, str]], duration: float) -> list[tuple[float, float, str]]:
    """(end_s, phone) in time order -> (start_s, end_s, label) covering [0, duration], times rounded to 1 ms.

    Pauses become "sil" and neighbouring "sil"s merge; the last segment ends at `duration` (cut or stretched)."""
    segments: list[tuple[float, float, str]] = []
    start = 0.0
    for i, (end, phone) in enumerate(ends):
        label = "sil" if phone in SILENCE else phone
        end = duration if i == len(ends) - 1 else min(end, duration)
        s, e = round(start, 3), round(end, 3)
        if e > s:
            if segments and segments[-1][2] == label == "sil":
                segments[-1] = (segments[-1][0], e, label)
            else:
                segments.append((s, e, label))
        start = max(start, end)
    if segments and segments[-1][1] < round(duration, 3):
        segments.append((segments[-1][1], round(duration, 3), "sil"))
    return segments


def flite(voice: Voice, text: str, wav_path: Path) -> list[tuple[float, str]]:
    """Synthesise with flite; the segments' (end_s, phone) that `-psdur` prints."""
    setf = [a for f, v in voice.settings for a in ("--setf", f"{f}={v}")]
    out = subprocess.run(["flite", "-voice", voice.voice, *setf, "-psdur", "-t", text, "-o", str(wav_path)],
                         check=True, capture_output=True, text=True).stdout
    ends = [(float(t), p) for p, t in re.findall(r"(\S+):(\d+\.\d+)", out)]
    if not ends:
        raise RuntimeError(f"flite -psdur printed no segments for {text!r}: {out!r}")
    return ends


def festival(voice: Voice, texts: list[str], tmp: Path) -> list[tuple[Path, list[tuple[float, str]]]]:
    """Synthesise every text with one festival run; per text its wav and the (end_s, phone) of utt.save.segs."""
    params = " ".join(f'(list "{k}" {v})' for k, v in voice.settings)
    lines = []
    for i, text in enumerate(texts):
        lines += [f"(voice_{voice.voice})",
                  f"(set! hts_engine_params (append hts_engine_params (list {params})))" if params else "",
                  f'(set! utt (SynthText "{text}"))',
                  f'(utt.save.wave utt "{tmp / f"{i}.wav"}" \'riff)',
                  f'(utt.save.segs utt "{tmp / f"{i}.segs"}")']
    script = tmp / "synth.scm"
    script.write_text("\n".join(lines) + "\n")
    subprocess.run(["festival", "-b", str(script)], check=True, capture_output=True)
    results = []
    for i in range(len(texts)):
        body = (tmp / f"{i}.segs").read_text().split("#", 1)[1]
        ends = [(float(end), phone) for end, _, phone in (line.split() for line in body.splitlines() if line.strip())]
        results.append((tmp / f"{i}.wav", ends))
    return results


def change_gender(wav: np.ndarray, sr: int, formant_shift: float, pitch_median: float, pitch_range: float) -> np.ndarray:
    """Praat's "Change gender" (pitch 75-600 Hz, duration kept): new formants, pitch median and range. Praat's
    random generator is seeded first: the overlap-add draws random numbers, so unseeded runs differ."""
    run("random_initializeWithSeedUnsafelyButPredictably (1)")
    sound = parselmouth.Sound(wav.astype(np.float64), sampling_frequency=sr)
    out = call(sound, "Change gender", 75, 600, formant_shift, pitch_median, pitch_range, 1.0)
    changed = out.values[0]
    if abs(len(changed) - len(wav)) > 1:
        raise RuntimeError(f"Change gender changed the length: {len(wav)} -> {len(changed)} samples")
    return np.pad(changed, (0, max(0, len(wav) - len(changed))))[: len(wav)].astype(np.float32)


def synthesise(voice: Voice, tmp: Path) -> list[tuple[np.ndarray, int, list[tuple[float, str]]]]:
    """(audio, sample rate, segment ends) of every sentence in `voice`, before post-processing."""
    if voice.engine == "flite":
        made = []
        for i, text in enumerate(SENTENCES):
            path = tmp / f"{i}.wav"
            made.append((path, flite(voice, text, path)))
    else:
        made = festival(voice, SENTENCES, tmp)
    out = []
    for path, ends in made:
        wav, sr = sf.read(path, dtype="float32")
        out.append((wav, sr, ends))
    return out


def main() -> None:
    for voice in VOICES:
        shutil.rmtree(OUT / voice.name, ignore_errors=True)
    shutil.rmtree(OUT / "alignments", ignore_errors=True)
    (OUT / "alignments").mkdir()
    transcripts, total, worst = [], 0.0, 0.0
    for voice in VOICES:
        (OUT / voice.name).mkdir()
        with tempfile.TemporaryDirectory() as tmp:
            utterances = synthesise(voice, Path(tmp))
        for n, (wav, sr, ends) in enumerate(utterances):
            if voice.gender is not None:
                wav = change_gender(wav, sr, *voice.gender)
            utt_id = f"{voice.name}_{n + FIRST_NUMBER:03d}"
            wav = resample(wav, sr, SAMPLE_RATE)
            wav = np.round(wav * (PEAK / np.abs(wav).max()) * 2 ** (BITS - 1)) / 2 ** (BITS - 1)
            save_audio(OUT / voice.name / f"{utt_id}.flac", wav, SAMPLE_RATE, compression_level=1.0)
            duration = len(wav) / SAMPLE_RATE
            worst = max(worst, abs(ends[-1][0] - duration))
            lines = [f"{s:.3f}\t{e:.3f}\t{p}\n" for s, e, p in segments_from_ends(ends, duration)]
            (OUT / "alignments" / f"{utt_id}.tsv").write_text("".join(lines))
            transcripts.append(f"{utt_id}\t{SENTENCES[n]}\n")
            total += duration
    (OUT / "transcripts.tsv").write_text("".join(sorted(transcripts)))
    rows = ["speaker\tengine\tvoice\tsettings\tkind\n"] + [
        f"{v.name}\t{v.engine}\t{v.voice}\t{' '.join(f'{k}={x}' for k, x in v.settings) or '-'}\t"
        + ("natural" if v.gender is None else "processed: Change gender formant x{} pitch {} Hz range x{}".format(*v.gender))
        + "\n" for v in VOICES]
    (OUT / "voices.tsv").write_text("".join(rows))
    print(f"{len(VOICES)} voices, {len(transcripts)} utterances, {total:.1f} s -> {OUT}; "
          f"largest gap between the engine's last segment end and the audio's end: {worst * 1000:.0f} ms")


if __name__ == "__main__":
    main()
