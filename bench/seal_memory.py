"""Sealing's memory: peak RSS growth of `seal` and `unseal` on one large file, in a fresh process each.

pyrage's encrypt_io and decrypt_io stream (64 KiB age chunks), so the growth should stay flat whatever
the size; a whole-file read would grow by the file's size. Also prints the throughput of each.

    python bench/seal_memory.py [--megabytes 100]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def measure(step: str, directory: Path) -> None:
    """Run one step here, printing its peak RSS growth (ru_maxrss, KiB) and its time."""
    from pyrage import x25519

    from conversations import sealing

    identity = x25519.Identity.from_str((directory / "key.txt").read_text().strip())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    began = time.perf_counter()
    if step == "seal":
        sealing.seal(directory / "plain", directory / "plain.age", [identity.to_public()])
    else:
        sealing.unseal(directory / "plain.age", directory / "back", [identity])
    took = time.perf_counter() - began
    growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    size = (directory / "plain").stat().st_size / 2**20
    print(f"{step:<7} {size:.0f} MiB: peak RSS growth {growth:.2f} MiB, {took:.2f} s ({size / took:.0f} MiB/s)")


def main() -> None:
    """Write the file and a key, then measure each step in a process of its own."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--step", choices=("seal", "unseal"), help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        measure(args.step, Path(args.dir))
        return
    from pyrage import x25519

    with tempfile.TemporaryDirectory() as directory:
        (Path(directory) / "key.txt").write_text(f"{x25519.Identity.generate()}\n")
        with open(Path(directory) / "plain", "wb") as out:
            for _ in range(args.megabytes):
                out.write(os.urandom(2**20))
        for step in ("seal", "unseal"):
            subprocess.run([sys.executable, __file__, "--step", step, "--dir", directory], check=True)
        same = (Path(directory) / "plain").read_bytes() == (Path(directory) / "back").read_bytes()
        print(f"round trip {'identical' if same else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
