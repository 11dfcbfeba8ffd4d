"""Accuracy and speed benchmark for audio_quality on a synthetic espeak-ng corpus.

    bench/audio_quality_setup.sh                      # espeak-ng + blind-rt60, once
    .venv/bin/python bench/audio_quality_bench.py --quick   # about 1-2 minutes on 2 cores
    .venv/bin/python bench/audio_quality_bench.py           # full: about 8 minutes

The corpus is built offline: espeak-ng sentences (test voices and sentences, disjoint from
the "dev" split used to choose the method's settings), convolved with exponentially decaying
room impulse responses whose RT60 is exact by construction, and mixed with white, pink or
babble noise at an exact whole-file SNR, as talk with pauses and as gap-free continuous talk.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
import wave
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from conversations import audio_quality as aq  # noqa: E402
from audio_corpus import Speaker, espeak_available, make_clip  # noqa: E402

SNR_LEVELS = [0, 5, 10, 15, 20, 25]
RT60_BANDS = [(0.2, 0.4), (0.4, 0.7), (0.7, 1.0), (1.0, 1.2)]
RT60_SNRS = [30, 20, 10]
SEED_BASE = 10_000  # the dev runs used seeds below this


def corpus_dir(args) -> Path:
    """Where rendered espeak-ng sentences are cached between runs."""
    return Path(args.cache or Path(tempfile.gettempdir()) / "quorum_audio_corpus")


def snr_task(job: dict) -> dict:
    """Make one SNR clip and score our estimate and plain WADA against the truth."""
    clip = make_clip(Speaker(job["cache"], 8000), **job["clip"])
    q = aq.analyze(clip.samples, clip.sample_rate)
    return {
        **job["key"],
        "truth": clip.snr_db,
        "ours": q.snr,
        "method": q.snr_method,
        "wada": aq.wada_snr(clip.samples),
    }


def rt60_task(job: dict) -> dict:
    """Make one reverberant clip and score our RT60 estimate against the truth."""
    clip = make_clip(Speaker(job["cache"], 8000), **job["clip"])
    q = aq.analyze(clip.samples, clip.sample_rate)
    return {**job["key"], "truth": clip.rt60, "ours": q.rt60, "decays": q.decays}


def snr_jobs(args) -> list[dict]:
    """Noise type x SNR x pauses/continuous, in mild rooms (dry or RT60 0.2-0.5 s)."""
    jobs, seed = [], SEED_BASE
    for noise in ["white", "pink", "babble"]:
        for snr in SNR_LEVELS:
            for pauses in [True, False]:
                for _ in range(args.reps):
                    seed += 1
                    rng = np.random.default_rng(seed)
                    rt60 = None if rng.random() < 0.25 else float(rng.uniform(0.2, 0.5))
                    clip = dict(
                        seed=seed, split=args.split, seconds=20, noise=noise, snr_db=snr, rt60=rt60, pauses=pauses
                    )
                    key = dict(noise=noise, snr=snr, talk="pauses" if pauses else "continuous", room="mild")
                    jobs.append(dict(cache=str(corpus_dir(args)), clip=clip, key=key))
    for snr in [10, 20]:  # late reverberation is counted as signal but looks like noise to any blind method
        for _ in range(args.reps):
            seed += 1
            rt60 = float(np.random.default_rng(seed).uniform(0.8, 1.2))
            clip = dict(seed=seed, split=args.split, seconds=20, noise="white", snr_db=snr, rt60=rt60, pauses=False)
            key = dict(noise="white", snr=snr, talk="continuous", room="RT60 0.8-1.2")
            jobs.append(dict(cache=str(corpus_dir(args)), clip=clip, key=key))
    return jobs


def rt60_jobs(args) -> list[dict]:
    """True-RT60 band x SNR with pauses, plus conditions outside the valid range."""
    jobs, seed = [], SEED_BASE + 50_000
    conditions = [(band, snr, "valid") for band in RT60_BANDS for snr in RT60_SNRS]
    conditions += [((None, None), 30, "dry room"), ((1.6, 2.0), 30, "RT60 > 1.5 s"), ((0.4, 1.0), 5, "SNR 5 dB")]
    conditions += [((0.4, 1.0), 20, "continuous talk")]
    for band, snr, kind in conditions:
        for rep in range(args.reps + 1):
            seed += 1
            rng = np.random.default_rng(seed)
            rt60 = None if band[0] is None else float(rng.uniform(*band))
            noise = ["white", "pink"][rep % 2]
            pauses = kind != "continuous talk"
            clip = dict(seed=seed, split=args.split, seconds=30, noise=noise, snr_db=snr, rt60=rt60, pauses=pauses)
            key = dict(band=f"{band[0]}-{band[1]}" if band[0] else "dry", snr=snr, kind=kind)
            jobs.append(dict(cache=str(corpus_dir(args)), clip=clip, key=key))
    return jobs


def run_all(task, jobs, workers: int) -> list[dict]:
    """Run jobs on a process pool."""
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(task, jobs, chunksize=2))


def stats(errors: list[float | None]) -> tuple[float, float, float]:
    """Bias, mean absolute error and None rate of a list of errors (None = no estimate)."""
    got = np.array([e for e in errors if e is not None], dtype=float)
    none_rate = 1 - len(got) / len(errors) if errors else 0.0
    if not len(got):
        return float("nan"), float("nan"), none_rate
    return float(got.mean()), float(np.abs(got).mean()), none_rate


def report_snr(rows: list[dict]) -> dict:
    """Print the SNR table per condition and return the headline MAEs."""
    print("\n## SNR (dB): error = estimate - truth, whole-file SNR")
    print(
        f"{'noise':<7} {'talk':<11} {'room':<13} {'SNR':>4} {'n':>3} | {'bias':>6} {'MAE':>5} {'None':>5} | "
        f"{'WADA bias':>9} {'MAE':>5}"
    )
    groups = defaultdict(list)
    for r in rows:
        groups[(r["noise"], r["talk"], r["room"], r["snr"])].append(r)
    for (noise, talk, room, snr), rs in groups.items():
        b, mae, none = stats([None if r["ours"] is None else r["ours"] - r["truth"] for r in rs])
        wb, wmae, _ = stats([r["wada"] - r["truth"] for r in rs])
        print(
            f"{noise:<7} {talk:<11} {room:<13} {snr:>4} {len(rs):>3} | {b:>+6.2f} {mae:>5.2f} {none:>5.0%} | "
            f"{wb:>+9.2f} {wmae:>5.2f}"
        )
    print("\nSummary over 0-25 dB, mild rooms:")
    headline = {}
    for label, noises, talk, target in [
        ("white+pink, pauses", ("white", "pink"), "pauses", 1.0),
        ("white+pink, continuous", ("white", "pink"), "continuous", 1.5),
        ("babble, pauses", ("babble",), "pauses", 3.0),
        ("babble, continuous", ("babble",), "continuous", 3.0),
    ]:
        rs = [r for r in rows if r["noise"] in noises and r["talk"] == talk and r["room"] == "mild"]
        b, mae, none = stats([None if r["ours"] is None else r["ours"] - r["truth"] for r in rs])
        wb, wmae, _ = stats([r["wada"] - r["truth"] for r in rs])
        verdict = "met" if mae <= target else "NOT met"
        print(
            f"  {label:<24} MAE {mae:4.2f} dB (bias {b:+.2f}, None {none:.0%}); WADA alone MAE {wmae:4.2f}; "
            f"target <= {target} dB: {verdict}"
        )
        headline[label] = mae
    return headline


def report_rt60(rows: list[dict]) -> dict:
    """Print the RT60 table per true-RT60 band and SNR, and the out-of-range behaviour."""
    print("\n## RT60 (s): error = estimate - truth")
    print(f"{'true RT60':<10} {'SNR':>4} {'n':>3} | {'bias':>6} {'MAE':>5} {'None':>5} {'decays':>6}")
    groups = defaultdict(list)
    for r in rows:
        if r["kind"] == "valid":
            groups[(r["band"], r["snr"])].append(r)
    for (band, snr), rs in groups.items():
        b, mae, none = stats([None if r["ours"] is None else r["ours"] - r["truth"] for r in rs])
        print(
            f"{band:<10} {snr:>4} {len(rs):>3} | {b:>+6.3f} {mae:>5.3f} {none:>5.0%} "
            f"{np.mean([r['decays'] for r in rs]):>6.0f}"
        )
    headline = {}
    for label, snrs, target in [("SNR >= 20 dB", (30, 20), 0.12), ("SNR 10 dB", (10,), 0.2)]:
        rs = [r for r in rows if r["kind"] == "valid" and r["snr"] in snrs]
        b, mae, none = stats([None if r["ours"] is None else r["ours"] - r["truth"] for r in rs])
        verdict = "met" if mae <= target else "NOT met"
        print(
            f"  0.2-1.2 s, {label:<13} MAE {mae:.3f} s (bias {b:+.3f}, None {none:.0%}); "
            f"target <= {target} s: {verdict}"
        )
        headline[label] = mae
    rs = [r for r in rows if r["kind"] == "continuous talk"]
    b, mae, none = stats([None if r["ours"] is None else r["ours"] - r["truth"] for r in rs])
    print(
        f"  0.4-1.0 s, continuous talk (no pauses), SNR 20 dB: MAE {mae:.3f} s (bias {b:+.3f}, "
        f"None {none:.0%}); no target"
    )
    print("Outside the valid range (None is the wanted answer):")
    for kind in ["dry room", "RT60 > 1.5 s", "SNR 5 dB"]:
        rs = [r for r in rows if r["kind"] == kind]
        values = [r["ours"] for r in rs if r["ours"] is not None]
        shown = f"estimates {', '.join(f'{v:.2f}' for v in values)} s" if values else "no estimates"
        print(f"  {kind:<13} n={len(rs):>2}  None {1 - len(values) / len(rs):4.0%}  {shown}")
    return headline


def blind_rt60_comparison(args) -> None:
    """Side by side with the blind-rt60 package (default settings) on a few clips, time-bounded."""
    print("\n## Side by side with blind-rt60 (PyPI, default settings)")
    try:
        from blind_rt60 import BlindRT60
    except ImportError:
        print("blind-rt60 is not installed (run bench/audio_quality_setup.sh); comparison skipped")
        return
    speaker = Speaker(corpus_dir(args), 8000)
    seconds = 15 if args.quick else 30
    truths = [0.3, 0.6, 1.0] if args.quick else [0.25, 0.4, 0.55, 0.7, 0.85, 1.0, 1.1, 1.2]
    print(
        f"{'true':>5} {'ours':>6} {'blind-rt60':>10} | {'ours s':>7} {'theirs s':>8}   ({seconds} s clips, SNR 30 dB)"
    )
    spent, audio, ours_time, errors = 0.0, 0.0, 0.0, defaultdict(list)
    for i, rt60 in enumerate(truths):
        if spent > args.blind_budget:
            print(f"time budget of {args.blind_budget:.0f} s used up; stopping after {i} clips")
            break
        clip = make_clip(speaker, SEED_BASE + 90_000 + i, args.split, seconds, "white", 30, rt60)
        if i == 0:
            aq.analyze(clip.samples, 8000)  # warm-up: builds the cached WADA table and noise-floor calibration
        t0 = time.process_time()
        ours = aq.analyze(clip.samples, 8000).rt60
        t1 = time.process_time()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                theirs = float(BlindRT60(fs=8000)(clip.samples, 8000))
        except Exception as exc:  # a third-party failure must not stop the benchmark
            print(f"blind-rt60 failed: {exc!r}")
            return
        t2 = time.process_time()
        spent += t2 - t1
        ours_time += t1 - t0
        audio += seconds
        errors["ours"].append(None if ours is None else ours - rt60)
        errors["theirs"].append(theirs - rt60)
        print(
            f"{rt60:>5.2f} {'-' if ours is None else f'{ours:.2f}':>6} {theirs:>10.2f} | "
            f"{t1 - t0:>7.2f} {t2 - t1:>8.1f}"
        )
    if audio:
        ob, omae, _ = stats(errors["ours"])
        tb, tmae, _ = stats(errors["theirs"])
        ratio = np.mean([(e + t) / t for e, t in zip(errors["theirs"], truths)])
        print(
            f"MAE ours {omae:.3f} s (bias {ob:+.3f}); "
            f"blind-rt60 {tmae:.3f} s (bias {tb:+.3f}, estimate/truth {ratio:.2f}x)"
        )
        print(
            f"CPU per hour of audio: ours {ours_time / audio * 3600:.1f} s (RT60 and SNR together); "
            f"blind-rt60 {spent / audio * 3600 / 60:.0f} min (RT60 only, extrapolated)"
        )


# ru_maxrss survives exec on Linux (it would report the parent's size), so read VmHWM instead
SPEED_CHILD = r"""
import json, os, sys, time
def hwm_kb():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
sys.path.insert(0, sys.argv[2])
from conversations import audio_quality as aq
base = hwm_kb()
t0, c0 = time.perf_counter(), time.process_time()
[q] = aq.analyze_file(sys.argv[1])
print(json.dumps({"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0,
                  "base_kb": base, "peak_kb": hwm_kb(), "snr": q.snr, "rt60": q.rt60}))
"""


def write_long_wav(path: Path, hours: float, args) -> None:
    """Tile reverberant, noisy corpus clips (varying levels) into one long 8 kHz mono WAV."""
    speaker = Speaker(corpus_dir(args), 8000)
    clips = [
        make_clip(speaker, SEED_BASE + 95_000 + i, args.split, 30, "pink", 15 + i, 0.3 + 0.1 * i) for i in range(6)
    ]
    target = int(hours * 3600 * 8000)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        written, i = 0, 0
        while written < target:
            x = clips[i % len(clips)].samples[: target - written] * (0.5 + 0.5 * (i % 3))
            w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())
            written += len(x)
            i += 1


def speed(args) -> None:
    """Time analyze_file on one hour of 8 kHz audio on one core, and its peak memory."""
    print("\n## Speed: analyze_file on 1 hour of 8 kHz mono 16-bit audio, one core")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "hour.wav"
        write_long_wav(path, 1.0, args)
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        runs = []
        for _ in range(2 if args.quick else 3):
            out = subprocess.run(
                [sys.executable, "-c", SPEED_CHILD, str(path), str(ROOT)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            runs.append(json.loads(out.stdout))
    best = min(runs, key=lambda r: r["wall"])
    walls = ", ".join(f"{r['wall']:.2f}" for r in runs)
    verdict = "met" if best["wall"] <= 10 else "NOT met"
    print(
        f"wall {best['wall']:.2f} s, CPU {best['cpu']:.2f} s per hour of audio (best of {len(runs)}; all: {walls}); "
        f"target <= 10 s: {verdict}"
    )
    print(
        f"peak RSS {best['peak_kb'] / 1024:.0f} MB, "
        f"of which {(best['peak_kb'] - best['base_kb']) / 1024:.0f} MB above the "
        f"{best['base_kb'] / 1024:.0f} MB after imports "
        f"(the whole hour as float64 would be {3600 * 8000 * 8 / 2**20:.0f} MB)"
    )
    print(f"figures for the hour: snr {best['snr']}, rt60 {best['rt60']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer clips, a few minutes in all")
    parser.add_argument(
        "--split", default="test", choices=["test", "dev"], help="voices and sentences to use (dev was used for tuning)"
    )
    parser.add_argument("--cache", help="directory for rendered sentences (default: a temp dir)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip", nargs="*", default=[], choices=["snr", "rt60", "blind", "speed"])
    args = parser.parse_args()
    args.reps = 2 if args.quick else 5
    args.blind_budget = 80.0 if args.quick else 400.0
    if not espeak_available():
        print("espeak-ng not found: run bench/audio_quality_setup.sh first", file=sys.stderr)
        return 2
    started = time.perf_counter()
    print(f"# audio_quality benchmark ({'quick' if args.quick else 'full'}, split={args.split})")
    if "snr" not in args.skip:
        report_snr(run_all(snr_task, snr_jobs(args), args.workers))
    if "rt60" not in args.skip:
        report_rt60(run_all(rt60_task, rt60_jobs(args), args.workers))
    if "blind" not in args.skip:
        blind_rt60_comparison(args)
    if "speed" not in args.skip:
        speed(args)
    print(
        f"\nbenchmark took {time.perf_counter() - started:.0f} s; "
        f"peak RSS of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
