"""Regenerate the shipped demo corpus: English sentences spoken by espeak-ng voices, with phone alignments.

    apt-get install -y espeak-ng        # libespeak-ng.so.1 (made with 1.51, Debian 12)
    pip install -e .                    # this script uses audio_vqvae.audio for resampling and writing
    python datasets/demo/make_demo.py   # rewrites datasets/demo/ and datasets/demo_heldout/

Each speaker is one espeak-ng voice + variant at its own rate and pitch (each utterance jittered a little around
them) and speaks 21 of the 80 sentences below, so every sentence is spoken by two or three speakers (parallel
data for voice conversion). Synthesis runs synchronously through libespeak-ng's C API (ctypes) with phoneme
events on: each event carries the phoneme's mnemonic and its start, in samples of espeak's 22050 Hz output, so
the phone alignments are exact for the synthesiser. Audio is resampled to 16 kHz, scaled to a fixed peak,
rounded to 11-bit precision and written as 16-bit FLAC.
datasets/demo_heldout is made the same way from 6 other voices (accents and variants absent from the demo) speaking
20 other sentences, 10 each: speech unseen in every way by a model trained on the demo, for evaluation.
Outputs (per corpus): <speaker>/<utt_id>.flac, alignments/<utt_id>.tsv (start_s, end_s, phone; "sil" for pauses),
transcripts.tsv (utt_id, text). The same espeak-ng version gives the same files.
"""
from __future__ import annotations

import ctypes
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audio_vqvae.audio import resample, save_audio

OUT = Path(__file__).resolve().parent
HELDOUT_OUT = OUT.parent / "demo_heldout"
SAMPLE_RATE = 16000
PEAK = 0.9  # every file is scaled to this peak, so levels match across voices
BITS = 11  # samples are rounded to this precision; FLAC drops the unused low bits (keeps the corpus < 6 MB)
SENTENCES_PER_SPEAKER = 21
MIN_TOTAL_S = 480.0

SENTENCES = [
    "The old lighthouse keeper climbed the stairs before dawn.",
    "Please bring the blue folder to the meeting on Thursday.",
    "A cold wind swept across the harbour all afternoon.",
    "She counted seven bright stars above the quiet valley.",
    "Our train leaves at a quarter past nine tomorrow morning.",
    "The children built a tall castle out of wet sand.",
    "Fresh bread smells wonderful when it comes out of the oven.",
    "He forgot his umbrella and walked home in the rain.",
    "The museum opens its new gallery next spring.",
    "Turn left at the bakery and follow the narrow road.",
    "A small grey cat slept on the warm windowsill.",
    "The committee voted to repair the bridge this summer.",
    "Thick fog rolled over the hills just after sunset.",
    "My neighbour grows tomatoes, beans and sweet peppers.",
    "The pilot announced that we would land twenty minutes early.",
    "Every morning the baker sweeps the path outside his shop.",
    "They painted the kitchen a pale shade of yellow.",
    "The river rose quickly after three days of heavy rain.",
    "Could you repeat the last number, please?",
    "A flock of geese flew south over the frozen lake.",
    "The library keeps its oldest maps in a locked room.",
    "We heard music drifting from the open window upstairs.",
    "The farmer checked the fence for gaps before the storm.",
    "Her violin lesson was moved to Wednesday evening.",
    "The engine coughed twice and then started smoothly.",
    "Bright red leaves covered the path through the park.",
    "The doctor asked him to rest for a whole week.",
    "A long queue formed outside the theatre before noon.",
    "The recipe calls for two eggs and a cup of milk.",
    "Waves crashed against the rocks below the cliff.",
    "The students measured the shadow of the tower at midday.",
    "He whistled a cheerful tune while fixing the bicycle.",
    "The village square fills with stalls every Saturday.",
    "Nobody noticed the clock had stopped at half past four.",
    "The kettle boiled while she searched for clean cups.",
    "Our guide pointed out a heron standing in the shallows.",
    "The stadium lights flickered and then went dark.",
    "Thin ice cracked under the weight of the sledge.",
    "The postman delivered a parcel wrapped in brown paper.",
    "A gentle breeze carried the scent of pine through the camp.",
    "The orchestra tuned their instruments in silence.",
    "Which of these three roads leads to the station?",
    "The gardener planted roses along the southern wall.",
    "Heavy snow closed the mountain pass for a week.",
    "The puppy chased its tail around the living room.",
    "She wrote the answer neatly at the bottom of the page.",
    "The ferry crossed the bay in less than an hour.",
    "Dark clouds gathered over the mountains to the west.",
    "The chef sliced the onions with a very sharp knife.",
    "Two owls called to each other across the woods.",
    "The shop on the corner sells maps, stamps and postcards.",
    "He measured the room twice before buying the carpet.",
    "The swimmers waited nervously for the starting signal.",
    "A rusty key was hidden under the loose brick.",
    "The teacher smiled and handed back the marked essays.",
    "Smoke curled slowly from the chimney of the cottage.",
    "The market sells fish caught that very morning.",
    "We climbed the hill to watch the sun go down.",
    "The printer jammed just before the report was finished.",
    "Gold coins were found buried beneath the old oak tree.",
    "The bus driver waited patiently for the last passenger.",
    "Tiny frogs hopped across the wet stones by the pond.",
    "The clock in the hall chimed twelve times at midnight.",
    "Her brother repairs watches in a workshop by the canal.",
    "The kite soared high above the crowded beach.",
    "Please switch off the lights when you leave the office.",
    "The valley echoed with the sound of distant bells.",
    "A thick book of poems lay open on the desk.",
    "The hikers shared their lunch beside a mountain stream.",
    "Strong coffee kept the night shift awake until morning.",
    "The judge listened carefully to both sides of the story.",
    "Yellow tulips bloomed early in the warm spring weather.",
    "The boat drifted slowly towards the sandy shore.",
    "He typed the letter and signed it with a flourish.",
    "The crowd cheered as the runners crossed the line.",
    "Soft rain tapped against the glass all night long.",
    "The mechanic replaced the worn brakes on the van.",
    "An old map showed a path through the marshes.",
    "The baby laughed at the bubbles floating in the air.",
    "They finally reached the summit shortly after noon.",
]


@dataclass(frozen=True)
class Speaker:
    name: str
    voice: str  # espeak-ng voice + variant
    rate: int  # words per minute
    pitch: int  # 0..100
    range: int  # pitch range 0..100


SPEAKERS = [
    Speaker("us_m", "en-us+m3", 165, 40, 50),
    Speaker("us_f", "en-us+f2", 150, 65, 60),
    Speaker("gb_m", "en+m1", 170, 35, 45),
    Speaker("gb_f", "en-gb-x-rp+f4", 145, 60, 70),
    Speaker("sc_m", "en-gb-scotland+m4", 155, 50, 40),
    Speaker("sc_f", "en-gb-scotland+f3", 160, 75, 55),
    Speaker("cb_m", "en-029+m7", 150, 30, 60),
    Speaker("cb_f", "en-029+f1", 158, 55, 65),
]

HELDOUT_SENTENCES = [
    "The lantern swayed gently in the evening breeze.",
    "Mother baked a lemon cake for the village fair.",
    "Several boats were tied up along the wooden pier.",
    "The professor forgot where he had parked his car.",
    "A quiet voice whispered the answer from the back row.",
    "Fresh snow covered every roof in the small town.",
    "The goalkeeper jumped high and caught the ball.",
    "Grandfather told stories about the great flood.",
    "My sister keeps three rabbits in a cage outside.",
    "The radio played an old song about the sea.",
    "Wild horses galloped across the open plain.",
    "The nurse checked the patient every hour.",
    "Nobody wanted to sit next to the noisy machine.",
    "The painter mixed blue and yellow to make green.",
    "Heavy trucks rumbled past the school gates.",
    "A tiny spider spun its web between two branches.",
    "The mayor opened the new swimming pool today.",
    "We ate soup and bread by the crackling fire.",
    "The sailor pointed at a lighthouse on the horizon.",
    "Bright posters covered the walls of the station.",
]

HELDOUT_SPEAKERS = [
    Speaker("lc_m", "en-gb-x-gbclan+m2", 160, 45, 50),
    Speaker("ny_f", "en-us-nyc+f5", 155, 70, 60),
    Speaker("wm_m", "en-gb-x-gbcwmd+m6", 150, 38, 55),
    Speaker("rp_f", "en-gb-x-rp+f1", 165, 62, 45),
    Speaker("us_k", "en-us+klatt", 158, 48, 50),
    Speaker("sc_x", "en-gb-scotland+f5", 150, 68, 65),
]


@dataclass(frozen=True)
class CorpusSpec:
    out: Path
    speakers: list[Speaker]
    sentences: list[str]
    per_speaker: int
    first_number: int  # utterance ids number the sentences from this
    min_total_s: float


DEMO = CorpusSpec(OUT, SPEAKERS, SENTENCES, SENTENCES_PER_SPEAKER, 1, MIN_TOTAL_S)
HELDOUT = CorpusSpec(HELDOUT_OUT, HELDOUT_SPEAKERS, HELDOUT_SENTENCES, 10, 101, 150.0)


# ---- libespeak-ng through ctypes (speak_lib.h) ------------------------------------------------------------
AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_PHONEME_EVENTS = 0x0001
EVENT_LIST_TERMINATED, EVENT_PHONEME = 0, 7
PARAM_RATE, PARAM_PITCH, PARAM_RANGE = 1, 3, 4
CHARS_UTF8 = 1


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
        ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p), ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


class Espeak:
    """Synchronous espeak-ng synthesis that returns int16 audio and (start_sample, phoneme) events."""

    def __init__(self) -> None:
        self.lib = ctypes.CDLL("libespeak-ng.so.1")
        self.sample_rate = self.lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, None, INITIALIZE_PHONEME_EVENTS)
        if self.sample_rate <= 0:
            raise RuntimeError("espeak_Initialize failed: is espeak-ng-data installed?")
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, str]] = []
        self._callback = _CALLBACK(self._collect)  # keep a reference: ctypes must not free it
        self.lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, n: int, events) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, (n,)).copy())
        i = 0
        while events[i].type != EVENT_LIST_TERMINATED:
            if events[i].type == EVENT_PHONEME:
                self._events.append((events[i].sample, events[i].id.string.decode()))
            i += 1
        return 0

    def synth(self, text: str, voice: str, rate: int, pitch: int, range_: int) -> tuple[np.ndarray, list]:
        """text -> (int16 audio [T] at self.sample_rate, [(start_sample, phoneme mnemonic)])."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise RuntimeError(f"espeak-ng has no voice {voice!r}")
        for param, value in ((PARAM_RATE, rate), (PARAM_PITCH, pitch), (PARAM_RANGE, range_)):
            self.lib.espeak_SetParameter(param, value, 0)
        self._chunks, self._events = [], []
        data = text.encode()
        self.lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, CHARS_UTF8, None, None)
        self.lib.espeak_Synchronize()
        return np.concatenate(self._chunks), self._events


# ---- corpus ---------------------------------------------------------------------------------------------------


def phone_segments(events: list[tuple[int, str]], n_samples: int, sr: int) -> list[tuple[float, float, str]]:
    """Phoneme start events -> (start_s, end_s, phone) covering [0, end]; pauses ("_...") and lead-in are "sil"."""
    starts = [(0, "sil")] + [(s, "sil" if p.startswith("_") else p) for s, p in events]
    segments: list[tuple[float, float, str]] = []
    for (s, p), (e, _) in zip(starts, starts[1:] + [(n_samples, "")]):
        start, end = round(s / sr, 3), round(min(e, n_samples) / sr, 3)
        if end <= start:
            continue
        if segments and segments[-1][2] == p == "sil":
            segments[-1] = (segments[-1][0], end, p)
        else:
            segments.append((start, end, p))
    return segments


def make(espeak: Espeak, spec: CorpusSpec) -> None:
    """Synthesise one corpus: every speaker speaks spec.per_speaker consecutive sentences, starting a fair share
    further along the list than the speaker before, so each sentence has two or three speakers."""
    out, speakers, sentences = spec.out, spec.speakers, spec.sentences
    for spk in speakers:
        shutil.rmtree(out / spk.name, ignore_errors=True)
    shutil.rmtree(out / "alignments", ignore_errors=True)
    (out / "alignments").mkdir(parents=True)
    transcripts, total = [], 0.0
    for k, spk in enumerate(speakers):
        (out / spk.name).mkdir()
        rng = random.Random(spk.name)
        for j in range(spec.per_speaker):
            n = (k * len(sentences) // len(speakers) + j) % len(sentences)
            utt_id = f"{spk.name}_{n + spec.first_number:03d}"
            rate = round(spk.rate * rng.uniform(0.92, 1.08))
            pitch = spk.pitch + rng.randint(-6, 6)
            pcm, events = espeak.synth(sentences[n], spk.voice, rate, pitch, spk.range)
            wav = resample(pcm.astype(np.float32) / 32768.0, espeak.sample_rate, SAMPLE_RATE)
            wav = np.round(wav * (PEAK / np.abs(wav).max()) * 2 ** (BITS - 1)) / 2 ** (BITS - 1)
            save_audio(out / spk.name / f"{utt_id}.flac", wav, SAMPLE_RATE, compression_level=1.0)
            segments = phone_segments(events, len(pcm), espeak.sample_rate)
            lines = [f"{s:.3f}\t{e:.3f}\t{p}\n" for s, e, p in segments]
            (out / "alignments" / f"{utt_id}.tsv").write_text("".join(lines))
            transcripts.append(f"{utt_id}\t{sentences[n]}\n")
            total += len(wav) / SAMPLE_RATE
    (out / "transcripts.tsv").write_text("".join(sorted(transcripts)))
    if total < spec.min_total_s:
        raise RuntimeError(f"only {total:.1f} s of audio; {out.name} promises at least {spec.min_total_s} s")
    print(f"{len(speakers)} speakers, {len(transcripts)} utterances, {total:.1f} s -> {out}")


def main() -> None:
    espeak = Espeak()
    for spec in (DEMO, HELDOUT):
        make(espeak, spec)


if __name__ == "__main__":
    main()
