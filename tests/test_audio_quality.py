"""Tests for audio_quality: known-answer signals, edge cases, WAV reading and the CLI."""

import json
import math
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from scipy import signal, special

from conversations import audio_quality as aq

ROOT = Path(__file__).resolve().parents[1]


def tone_bursts(fs: int, seconds: float, on: float = 0.3, off: float = 0.4, freq: float = 440.0) -> np.ndarray:
    """A tone switched on and off: intermittent like speech, with an exact energy."""
    t = np.arange(int(seconds * fs)) / fs
    return np.sin(2 * np.pi * freq * t) * ((t % (on + off)) < on)


def mix(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Add noise scaled so that whole-file clean/noise energy is exactly snr_db."""
    return clean + noise * np.sqrt(np.sum(clean**2) / np.sum(noise**2) / 10 ** (snr_db / 10))


def reverberant_bursts(rng, fs: int, seconds: float, rt60: float) -> np.ndarray:
    """Noise bursts every 1.5 s through a room whose impulse response decays exactly at rt60."""
    src = np.zeros(int(seconds * fs))
    burst = int(0.15 * fs)
    for start in range(0, len(src) - burst, int(1.5 * fs)):
        src[start : start + burst] = rng.standard_normal(burst)
    n = int(1.5 * rt60 * fs)
    h = rng.standard_normal(n) * np.exp(-3 * np.log(10) * np.arange(n) / fs / rt60)
    h[0] = 3.0
    return signal.fftconvolve(src, h)[: len(src)]


def write_wav(path: Path, channels: np.ndarray, fs: int, width: int = 2) -> Path:
    """Write float channels (n, c) in [-1, 1] as PCM of the given byte width."""
    data = np.atleast_2d(channels.T).T
    with wave.open(str(path), "wb") as w:
        w.setnchannels(data.shape[1])
        w.setsampwidth(width)
        w.setframerate(fs)
        if width == 2:
            w.writeframes((np.clip(data, -1, 1) * 32767).astype("<i2").tobytes())
        else:
            w.writeframes(bytes(width * data.size))
    return path


def assert_finite(q: aq.AudioQuality) -> None:
    """Every figure is a finite number or None; the JSON form has no NaN."""
    for value in (q.snr, q.rt60, q.speech_seconds, q.duration):
        assert value is None or math.isfinite(value)
    json.dumps(q.to_dict(), allow_nan=False)


@pytest.fixture
def rng():
    """A fresh seeded generator per test, so each test sees the same signals alone or in a run."""
    return np.random.default_rng(7)


@pytest.mark.parametrize("fs", [8000, 16000])
@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0, 25.0])
@pytest.mark.parametrize("noise", ["white", "pink"])
def test_snr_of_tone_bursts_in_known_noise(fs, snr_db, noise, rng):
    clean = tone_bursts(fs, 20)
    v = rng.standard_normal(len(clean))
    if noise == "pink":
        v = signal.lfilter([1.0], [1.0, -0.95], v)  # strongly low-pass, sloping spectrum
    q = aq.analyze(0.1 * mix(clean, v, snr_db), fs)
    assert q.snr == pytest.approx(snr_db, abs=1.0)
    assert q.snr_method in ("noise-floor", "spectral-floor")
    assert not q.snr_clamped
    assert q.speech_seconds == pytest.approx(20 * 3 / 7, abs=1.5)
    assert_finite(q)


@pytest.mark.parametrize("rt60", [0.3, 0.6, 1.0])
def test_rt60_of_synthetic_decays(rt60, rng):
    x = mix(reverberant_bursts(rng, 8000, 30, rt60), rng.standard_normal(30 * 8000), 35)
    q = aq.analyze(0.2 * x / np.max(np.abs(x)), 8000)
    assert q.rt60 == pytest.approx(rt60, rel=0.15)
    assert q.decays >= aq.MIN_DECAYS


def test_rt60_is_none_without_reverberation(rng):
    q = aq.analyze(0.1 * mix(tone_bursts(8000, 20), rng.standard_normal(160000), 40), 8000)
    assert q.rt60 is None  # abrupt offsets decay faster than any room in the valid range
    assert q.snr == aq.SNR_MAX and q.snr_clamped


def test_rt60_is_none_when_too_noisy(rng):
    x = mix(reverberant_bursts(rng, 8000, 30, 0.6), rng.standard_normal(30 * 8000), 3)
    q = aq.analyze(0.2 * x / np.max(np.abs(x)), 8000)
    assert q.rt60 is None


@pytest.mark.parametrize(
    "name, make",
    [
        ("silence", lambda r: np.zeros(5 * 8000)),
        ("noise only", lambda r: 0.01 * r.standard_normal(10 * 8000)),
        ("half a second", lambda r: 0.1 * mix(tone_bursts(8000, 0.5), r.standard_normal(4000), 10)),
        ("empty", lambda r: np.zeros(0)),
    ],
)
def test_nothing_to_measure_gives_none(name, make, rng):
    q = aq.analyze(make(rng), 8000)
    assert q.snr is None and q.rt60 is None
    assert q.snr_method == "none"
    assert_finite(q)


def test_clipping_gives_finite_figures(rng):
    x = mix(tone_bursts(8000, 20), rng.standard_normal(160000), 10)
    q = aq.analyze(np.clip(3 * x, -1, 1), 8000)
    assert q.snr is not None and 5 < q.snr < 15
    assert_finite(q)


def test_dc_offset_does_not_change_snr(rng):
    x = 0.1 * mix(tone_bursts(8000, 20), rng.standard_normal(160000), 10)
    assert aq.analyze(x + 0.3, 8000).snr == pytest.approx(aq.analyze(x, 8000).snr, abs=0.1)


def test_very_low_snr_finds_no_speech(rng):
    q = aq.analyze(0.1 * mix(tone_bursts(8000, 20), rng.standard_normal(160000), -15), 8000)
    assert q.snr is None


def test_long_input_spanning_blocks_follows_a_changing_noise_floor(rng):
    fs = 8000
    clean = tone_bursts(fs, 75)
    noise = rng.standard_normal(len(clean))
    noise[: 30 * fs] *= 0.3  # the first block is 10 dB quieter
    x = clean + 0.1 * noise
    truth = 10 * np.log10(np.sum(clean**2) / np.sum((0.1 * noise) ** 2))
    q = aq.analyze(0.1 * x, fs)
    assert q.snr == pytest.approx(truth, abs=1.0)


def test_int16_input_matches_float_input(rng):
    x = 0.1 * mix(tone_bursts(8000, 20), rng.standard_normal(160000), 12)
    pcm = (x * 32767).astype(np.int16)
    assert aq.analyze(pcm, 8000).snr == pytest.approx(aq.analyze(pcm / 32768.0, 8000).snr, abs=1e-6)


@pytest.mark.parametrize(
    "samples, rate, message",
    [
        (np.zeros((100, 2)), 8000, "one channel"),
        (np.array([0.0, np.nan, 0.0]), 8000, "NaN"),
        (np.zeros(100), 44100, "unsupported sample rate"),
        (np.array(["a", "b"]), 8000, "numeric"),
    ],
)
def test_bad_input_raises_value_error(samples, rate, message):
    with pytest.raises(ValueError, match=message):
        aq.analyze(samples, rate)


def test_wada_table_matches_theory_at_both_ends():
    snrs, g = aq.wada_table()
    assert np.all(np.diff(g) >= 0)
    gaussian = 0.5 * np.log(2 / np.pi) + (np.euler_gamma + np.log(2)) / 2  # G of pure Gaussian noise
    gamma_speech = np.log(0.4) - special.digamma(0.4)  # G of Gamma(0.4) amplitudes
    assert g[0] == pytest.approx(gaussian, abs=0.01)
    # noise still touches the many near-zero Gamma samples at 50 dB, so G approaches its limit from below
    assert 0.85 * gamma_speech < g[-1] < gamma_speech


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0])
def test_wada_snr_recovers_gamma_speech_in_gaussian_noise(snr_db):
    rng = np.random.default_rng(11)
    speech = rng.gamma(0.4, 1.0, 400_000) * rng.choice([-1.0, 1.0], 400_000)
    x = mix(speech, rng.standard_normal(len(speech)), snr_db)
    assert aq.wada_snr(x + 0.5) == pytest.approx(snr_db, abs=0.5)


def test_analyze_file_mono_matches_analyze(tmp_path, rng):
    x = 0.1 * mix(tone_bursts(8000, 20), rng.standard_normal(160000), 15)
    path = write_wav(tmp_path / "mono.wav", x, 8000)
    [q] = aq.analyze_file(path)
    pcm = (np.clip(x, -1, 1) * 32767).astype(np.int16)
    assert q.snr == pytest.approx(aq.analyze(pcm, 8000).snr, abs=1e-9)
    assert q.channel == 0 and q.duration == pytest.approx(20.0)


def test_analyze_file_stereo_gives_one_result_per_channel(tmp_path, rng):
    clean = tone_bursts(16000, 20)
    left = 0.1 * mix(clean, rng.standard_normal(len(clean)), 5)
    right = 0.1 * mix(clean, rng.standard_normal(len(clean)), 20)
    results = aq.analyze_file(write_wav(tmp_path / "stereo.wav", np.stack([left, right], axis=1), 16000))
    assert [q.channel for q in results] == [0, 1]
    assert results[0].snr == pytest.approx(5, abs=1.0)
    assert results[1].snr == pytest.approx(20, abs=1.0)


@pytest.mark.parametrize("width, message", [(1, "8-bit"), (3, "24-bit"), (4, "32-bit")])
def test_analyze_file_rejects_other_sample_widths(tmp_path, width, message):
    path = write_wav(tmp_path / "wide.wav", np.zeros(800), 8000, width=width)
    with pytest.raises(ValueError, match=message):
        aq.analyze_file(path)


@pytest.mark.parametrize("content", [b"", b"RIFF....WAVEfmt nonsense", b"not a wav at all"])
def test_analyze_file_rejects_non_wav(tmp_path, content):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="not a 16-bit PCM WAV"):
        aq.analyze_file(path)


def test_analyze_file_rejects_unsupported_rate(tmp_path):
    with pytest.raises(ValueError, match="44100"):
        aq.analyze_file(write_wav(tmp_path / "cd.wav", np.zeros(4410), 44100))


def test_cli_table_and_json(tmp_path, rng, capsys):
    path = write_wav(tmp_path / "call.wav", 0.1 * mix(tone_bursts(8000, 20), rng.standard_normal(160000), 10), 8000)
    assert aq.main([str(path)]) == 0
    table = capsys.readouterr().out
    assert "call.wav" in table and "snr dB" in table and "noise-floor" in table
    assert aq.main(["--json", str(path)]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["file"] == str(path) and row["snr"] == pytest.approx(10, abs=1.0)
    assert set(row) >= {"snr", "rt60", "snr_method", "snr_clamped", "speech_seconds", "decays", "channel"}


def test_cli_reports_bad_files_and_exits_nonzero(tmp_path, capsys):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"junk")
    assert aq.main([str(bad), str(tmp_path / "missing.wav")]) == 1
    err = capsys.readouterr().err
    assert "bad.wav" in err and "missing.wav" in err


@pytest.mark.slow
def test_module_runs_as_a_script(tmp_path, rng):
    path = write_wav(tmp_path / "s.wav", 0.1 * mix(tone_bursts(8000, 10), rng.standard_normal(80000), 20), 8000)
    command = [sys.executable, "-m", "conversations.audio_quality", "--json", str(path)]
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)[0]["snr"] == pytest.approx(20, abs=1.0)


def test_wada_is_the_fallback_when_no_noise_floor_is_found(monkeypatch):
    monkeypatch.setattr(aq, "_mixture_floor", lambda frames: None)
    monkeypatch.setattr(aq, "_spectral_floor", lambda y, nfft: (None, False))
    rng = np.random.default_rng(3)
    speech = rng.gamma(0.4, 1.0, 160_000) * rng.choice([-1.0, 1.0], 160_000)
    q = aq.analyze(0.05 * mix(speech, rng.standard_normal(len(speech)), 10), 8000)
    assert q.snr_method == "wada"
    assert q.snr == pytest.approx(10, abs=1.0)
