"""Archive encryption with age (X25519): media and records sealed to ARCHIVE_PUBLIC_KEY before they leave the host.

`seal` streams a file through pyrage (memory stays flat whatever the file's size) into a temp name that is
fsynced and renamed, so a sealed file is either whole or absent; `unseal` does the same the other way.
Only public keys are ever configured: the private key (`quorum keygen` writes it) stays off the host, and
`quorum decrypt` reads it to open what was archived.

An encrypted record keeps a plaintext `summary` beside it, so lists and the index still show it. It keeps
what a list reads and nothing that names or profiles a person: id, room, status, start and end, the mix's
recorded/paused spans, each channel's times and host flag under a neutral `caller-N` label (calls and people
can still be counted), the secure pauses' times and ends, the audio entries' file names (with `.age`),
durations, `missing` reasons, `deleted_from_signalwire` flags, the mix's SNR (line quality, the list shows
it) and `encrypted: true`. It drops the callers' numbers (`from`, `to`, the number-based `connection_id`),
call sids (they lead to the numbers at SignalWire), secure-pause reasons and who resumed, announcements,
RT60 and every talk-time figure (who talked how much profiles the people on the call). So a caller search
never finds an encrypted conversation: the numbers it searches are sealed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import BinaryIO, Callable, List, Optional, Sequence, Tuple

import pyrage
from pyrage import x25519

from conversations.archive import fsync_dir, make_dirs_durably, valid_id

SEALED = ".age"  # the suffix of an encrypted file
RECORD = "conversation.json"
PUBLIC_PREFIX = "age1"
DEFAULT_IDENTITY_FILE = "quorum-archive-key.txt"
Fetch = Callable[[str, Path], None]  # (conversation id, into this directory): brings its sealed files there


class Unsealable(ValueError):
    """A sealed file these identities cannot open: encrypted to another key, or not a whole age file."""


def recipients(text: str) -> List[x25519.Recipient]:
    """The age X25519 public keys of ARCHIVE_PUBLIC_KEY (commas and/or whitespace between them); [] for none."""
    keys = []
    for number, entry in enumerate((e for e in re.split(r"[\s,]+", text) if e), start=1):
        if "SECRET-KEY" in entry.upper():
            raise ValueError(
                f"entry {number} is an age private key (AGE-SECRET-KEY-...): it must not be configured here; "
                "give its public key (age1...), which `quorum keygen` printed"
            )
        try:
            keys.append(x25519.Recipient.from_str(entry))
        except pyrage.RecipientError:
            # A mistyped public key is no secret; anything else is not echoed (it may be a pasted secret).
            shown = repr(entry) if entry.startswith(PUBLIC_PREFIX) else f"({len(entry)} characters, not shown)"
            raise ValueError(f"entry {number} {shown} is not an age X25519 public key (age1...)") from None
    return keys


def seal(source: Path, target: Path, keys: Sequence[x25519.Recipient]) -> None:
    """Encrypt `source` to `keys` into `target`, streamed; OSError if it cannot be read or written (no temp left)."""
    if not keys:
        raise ValueError("no public key to seal to")
    with open(source, "rb") as reader:
        _write_atomically(Path(target), lambda out: _through(pyrage.encrypt_io, reader, out, list(keys)))


def seal_bytes(data: bytes, keys: Sequence[x25519.Recipient]) -> bytes:
    """`data` encrypted to `keys` (the conversation record)."""
    if not keys:
        raise ValueError("no public key to seal to")
    return pyrage.encrypt(data, list(keys))


def unseal(source: Path, target: Path, keys: Sequence[x25519.Identity]) -> None:
    """Decrypt `source` into `target`, streamed; Unsealable if `keys` cannot open it (then `target` is untouched)."""
    with open(source, "rb") as reader:
        try:
            _write_atomically(Path(target), lambda out: _through(pyrage.decrypt_io, reader, out, list(keys)))
        except pyrage.DecryptError as error:
            if "no matching keys" in str(error).lower():
                raise Unsealable(f"{source}: not encrypted to this key") from None
            raise Unsealable(f"{source}: not a whole age file ({error})") from None


def identities(path: Path) -> List[x25519.Identity]:
    """The age identities in an identity file as age-keygen writes it (`#` comments, blank lines ignored)."""
    found = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(PUBLIC_PREFIX):
            raise ValueError(f"{path} line {number}: a public key; decrypting needs the private key file")
        try:
            found.append(x25519.Identity.from_str(line))
        except pyrage.IdentityError:
            raise ValueError(f"{path} line {number}: not an age identity (AGE-SECRET-KEY-1...)") from None
    if not found:
        raise ValueError(f"{path}: no age identity (AGE-SECRET-KEY-1...) in it")
    return found


def summary(record: dict) -> dict:
    """The plaintext part kept beside an encrypted record: what lists show, nothing sensitive (module docstring)."""
    labels: dict = {}
    return {
        "id": record.get("id"),
        "room": record.get("room"),
        "status": record.get("status"),
        "started_at": record.get("started_at"),
        "ended_at": record.get("ended_at"),
        "encrypted": True,
        "audio": {**_audio_summary(record.get("audio")), "snr": (record.get("audio") or {}).get("snr")},
        "recording_timeline": _picked(record.get("recording_timeline"), ("state", "start_ms", "end_ms")),
        "secure_pauses": _picked(record.get("secure_pauses"), ("start_ms", "end_ms", "by", "ended")),
        "channels": [
            {
                "connection_id": labels.setdefault(c.get("connection_id") or id(c), f"caller-{len(labels) + 1}"),
                "host": bool(c.get("host")),
                "start_ms": c.get("start_ms"),
                "end_ms": c.get("end_ms"),
                "audio": _audio_summary(c.get("audio")),
            }
            for c in record.get("channels") or []
            if isinstance(c, dict)
        ],
    }


def sealed_name(name: Optional[str]) -> Optional[str]:
    """A media file's name once sealed (`mix.wav` -> `mix.wav.age`); None stays None."""
    return name if name is None or name.endswith(SEALED) else name + SEALED


def keygen_main(argv: Sequence[str]) -> int:
    """`quorum keygen [--out FILE]`: a new identity file (mode 0600, never overwritten); prints its public key."""
    parser = argparse.ArgumentParser(prog="quorum keygen", description="Make a key pair for ARCHIVE_PUBLIC_KEY.")
    parser.add_argument("--out", default=DEFAULT_IDENTITY_FILE, help=f"the identity file ({DEFAULT_IDENTITY_FILE})")
    out = Path(parser.parse_args(argv).out)
    identity = x25519.Identity.generate()
    public = str(identity.to_public())
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    text = f"# created: {created}\n# public key: {public}\n{identity}\n"
    try:
        _write_new(out, text)
    except OSError as error:
        why = "exists: not overwritten (it may be the only key to the archive)" if out.exists() else error.strerror
        print(f"quorum keygen: {out}: {why}", file=sys.stderr)
        return 1
    print(f"quorum keygen: private key in {out} (keep it off this host); ARCHIVE_PUBLIC_KEY is:", file=sys.stderr)
    print(public)
    return 0


def decrypt_main(argv: Sequence[str], fetch: Optional[Fetch] = None) -> int:
    """`quorum decrypt --identity FILE PATH... [--out DIR]`; with `fetch`, a PATH may be a conversation id too."""
    parser = argparse.ArgumentParser(prog="quorum decrypt", description="Decrypt archived .age files.")
    parser.add_argument("--identity", required=True, help="the identity file `quorum keygen` wrote")
    parser.add_argument("--out", help="directory to decrypt into (default: beside each file)")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="a .age file or a conversation directory")
    args = parser.parse_args(argv)
    try:
        keys = identities(Path(args.identity))
    except (OSError, ValueError) as error:
        return _failed([f"{args.identity}: {getattr(error, 'strerror', None) or error}"])
    out = Path(args.out) if args.out else None
    failures: List[str] = []
    for text in args.paths:
        try:
            pairs = _pairs(text, out, fetch)
        except (OSError, ValueError) as error:
            failures.append(f"{text}: {getattr(error, 'strerror', None) or error}")
            continue
        for source, target in pairs:
            failures.extend(_decrypt_one(source, target, keys))
    return _failed(failures)


def _pairs(text: str, out: Optional[Path], fetch: Optional[Fetch]) -> List[Tuple[Path, Path]]:
    """(sealed file, where it is decrypted) for one PATH, the record last: the archive writes it last too."""
    path = Path(text)
    if not path.exists() and fetch is not None and valid_id(text):
        path = out = (out or Path.cwd()) / text  # fetched into DIR/ID, decrypted there
        make_dirs_durably(path)
        fetch(text, path)
    if path.is_dir():
        found = sorted(p for p in path.glob(f"*{SEALED}") if not p.name.startswith(".") and p.is_file())
        found.sort(key=lambda p: p.name == RECORD + SEALED)
    elif not path.exists():
        raise ValueError("no such file or directory")
    else:
        found = [path] if path.name.endswith(SEALED) else []
    if not found:
        raise ValueError(f"no {SEALED} file here")
    return [(source, (out or source.parent) / source.name[: -len(SEALED)]) for source in found]


def _decrypt_one(source: Path, target: Path, keys: List[x25519.Identity]) -> List[str]:
    """Decrypt one file, printing where it went; its failure as a line (none on success)."""
    if not _replaceable(target):
        return [f"{source}: {target} exists: not replaced (decrypt into another --out DIR)"]
    try:
        unseal(source, target, keys)
    except Unsealable as error:
        return [str(error)]
    except OSError as error:
        return [f"{source}: {error.strerror or error}"]
    print(target)
    return []


def _replaceable(target: Path) -> bool:
    """Whether decrypting may write `target`: nothing is there, or only the plaintext summary the record supersedes."""
    try:
        return not target.exists() or target.name == RECORD and json.loads(target.read_text()).get("encrypted") is True
    except (OSError, ValueError, AttributeError):
        return False


def _failed(failures: List[str]) -> int:
    """Print each failure on its own line; the exit code."""
    for line in failures:
        print(f"quorum decrypt: {line}", file=sys.stderr)
    return 1 if failures else 0


def _audio_summary(audio) -> dict:
    """An audio entry's sealed file names, duration, why it is missing and whether SignalWire's copy is gone."""
    audio = audio if isinstance(audio, dict) else {}
    return {
        "wav_file": sealed_name(audio.get("wav_file")),
        "mp3_file": sealed_name(audio.get("mp3_file")),
        "duration_ms": audio.get("duration_ms"),
        "missing": audio.get("missing"),
        "deleted_from_signalwire": bool(audio.get("deleted_from_signalwire")),
    }


def _picked(entries, keys: tuple) -> List[dict]:
    """Only these keys of each entry (a timeline's spans, the secure pauses)."""
    return [{key: entry.get(key) for key in keys} for entry in entries or [] if isinstance(entry, dict)]


def _through(work: Callable, reader: BinaryIO, writer: BinaryIO, keys: list) -> None:
    """`work(reader, writer, keys)` (pyrage's encrypt_io or decrypt_io); an I/O failure raised as its OSError."""
    failed: List[OSError] = []

    def kept(call: Callable) -> Callable:
        def call_keeping_its_error(argument):
            try:
                return call(argument)
            except OSError as error:
                failed.append(error)
                raise

        return call_keeping_its_error

    try:
        work(SimpleNamespace(read=kept(reader.read)), SimpleNamespace(write=kept(writer.write)), keys)
    except (pyrage.EncryptError, pyrage.DecryptError, OSError) as error:
        if failed:
            raise failed[0] from None
        if isinstance(error, OSError):  # not our files': pyrage's stream check failing (a cut or altered file)
            raise pyrage.DecryptError(str(error)) from None
        raise


def _write_atomically(target: Path, fill: Callable[[BinaryIO], None]) -> None:
    """Write `target` as `fill` writes it: temp name beside it, fsync, rename, fsync the directory; no temp left."""
    make_dirs_durably(target.parent)
    handle, temp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            fill(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def _write_new(path: Path, text: str) -> None:
    """Create `path` with mode 0600 and `text` in it, fsynced; FileExistsError if it is there (it stays as it was)."""
    with open(path, "x", opener=lambda name, flags: os.open(name, flags, 0o600)) as file:
        try:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        except BaseException:
            path.unlink(missing_ok=True)
            raise
