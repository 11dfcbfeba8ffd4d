"""Archive sealing with age: files and records round-trip through real pyrage, only the right key opens them,
the plaintext summary holds no caller's number, and `quorum keygen` / `quorum decrypt` work end to end."""

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pyrage
import pytest
from pyrage import x25519

from config import RoomRule
from console.views import conversation_facts
from conversations import sealing
from conversations.archive_index import fields, numbers
from conversations.record import record
from conversations.signalwire_copies import with_deleted
from quorum import policy, secure_pause, talk
from quorum.talk import SPEECH_START, SPEECH_STOP
from recording_state import Caller
from support import json_keys, sid, wav_bytes

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_800_000_000.0
A, B = sid("a"), sid("b")
NUMBERS = {A: "+15551230001", B: "+15551230002"}
CALLED = "+15559990000"
REASON = "card number read out"


def key_pair():
    """A fresh identity and its public key."""
    identity = x25519.Identity.generate()
    return identity, identity.to_public()


def a_record() -> dict:
    """A real finished conversation record: two callers with numbers, a secure pause with a reason, talk figures,
    the mix and one channel recording archived."""
    conf = policy.conference_started(policy.new_conference("Sales", sid("conf"), T0, RoomRule(), now=T0))
    for call, number in NUMBERS.items():
        conf = policy.participant_event(conf, call, True, T0)
        conf = policy.connection_event(conf, call, True, T0, Caller(from_=number, to=CALLED, record=True))
    conf = policy.recording_status(conf, "mix", "in-progress", T0)
    conf = policy.recording_created(conf, A, "own-a", T0)
    for kind, call, at in ((SPEECH_START, A, T0 + 1), (SPEECH_STOP, A, T0 + 4), (SPEECH_START, B, T0 + 12)):
        conf = talk.speech_event(conf, kind, call, at)
    conf = secure_pause.resume(secure_pause.begin(conf, T0 + 5, "api", REASON, 300), T0 + 10, "dashboard")
    conf = policy.conference_ended(conf, T0 + 30)
    entry = {"duration_ms": 30000, "snr": 21.5, "rt60": 0.41, "deleted_from_signalwire": False, "missing": None}
    media = {
        "mix": {**entry, "wav_file": "mix.wav", "mp3_file": "mix.mp3"},
        "own-a": {**entry, "wav_file": "channel-01.wav", "mp3_file": None},
    }
    return record(conf, T0 + 30, media, "ready")


def strings(value):
    """Every string in a JSON value, keys included."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)
    elif isinstance(value, str):
        yield value


# --- sealing and unsealing ------------------------------------------------------------------------


def test_a_file_round_trips_and_the_sealed_bytes_are_not_the_plain_ones(tmp_path):
    identity, public = key_pair()
    plain = tmp_path / "mix.wav"
    plain.write_bytes(wav_bytes(3.0))
    sealing.seal(plain, tmp_path / "out" / "mix.wav.age", [public])
    sealed = (tmp_path / "out" / "mix.wav.age").read_bytes()
    assert sealed.startswith(b"age-encryption.org/v1\n") and plain.read_bytes()[:64] not in sealed
    sealing.unseal(tmp_path / "out" / "mix.wav.age", tmp_path / "back.wav", [identity])
    assert (tmp_path / "back.wav").read_bytes() == plain.read_bytes()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["mix.wav.age"]  # no temp file left


def test_bytes_round_trip(tmp_path):
    identity, public = key_pair()
    text = json.dumps(a_record()).encode()
    sealed = sealing.seal_bytes(text, [public])
    assert pyrage.decrypt(sealed, [identity]) == text
    (tmp_path / "conversation.json.age").write_bytes(sealed)
    sealing.unseal(tmp_path / "conversation.json.age", tmp_path / "conversation.json", [identity])
    assert json.loads((tmp_path / "conversation.json").read_text()) == a_record()


def test_sealing_to_no_key_is_refused_before_anything_is_written(tmp_path):
    (tmp_path / "plain").write_bytes(b"x")
    with pytest.raises(ValueError, match="no public key"):
        sealing.seal(tmp_path / "plain", tmp_path / "plain.age", [])
    with pytest.raises(ValueError, match="no public key"):
        sealing.seal_bytes(b"x", [])
    assert [p.name for p in tmp_path.iterdir()] == ["plain"]


def test_another_key_is_refused_and_nothing_is_written(tmp_path):
    _, public = key_pair()
    stranger, _ = key_pair()
    (tmp_path / "plain").write_bytes(b"secret audio")
    sealing.seal(tmp_path / "plain", tmp_path / "plain.age", [public])
    with pytest.raises(sealing.Unsealable, match="not encrypted to this key"):
        sealing.unseal(tmp_path / "plain.age", tmp_path / "back", [stranger])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain", "plain.age"]


def test_a_truncated_sealed_file_is_refused_and_nothing_is_written(tmp_path):
    identity, public = key_pair()
    (tmp_path / "plain").write_bytes(os.urandom(200_000))
    sealing.seal(tmp_path / "plain", tmp_path / "plain.age", [public])
    whole = (tmp_path / "plain.age").read_bytes()
    (tmp_path / "cut.age").write_bytes(whole[: len(whole) - 1000])
    with pytest.raises(sealing.Unsealable, match="not a whole age file"):
        sealing.unseal(tmp_path / "cut.age", tmp_path / "back", [identity])
    assert not (tmp_path / "back").exists() and not list(tmp_path.glob(".back.*"))


def test_each_of_several_recipients_can_decrypt(tmp_path):
    pairs = [key_pair() for _ in range(3)]
    (tmp_path / "plain").write_bytes(b"for three keys")
    sealing.seal(tmp_path / "plain", tmp_path / "plain.age", [public for _, public in pairs])
    for n, (identity, _) in enumerate(pairs):
        sealing.unseal(tmp_path / "plain.age", tmp_path / f"back-{n}", [identity])
        assert (tmp_path / f"back-{n}").read_bytes() == b"for three keys"


def test_an_unreadable_source_leaves_no_temp_file(tmp_path):
    _, public = key_pair()
    (tmp_path / "out").mkdir()
    (tmp_path / "a-directory").mkdir()
    for source in (tmp_path / "missing.wav", tmp_path / "a-directory"):
        with pytest.raises(OSError):
            sealing.seal(source, tmp_path / "out" / "mix.wav.age", [public])
    assert list((tmp_path / "out").iterdir()) == []


def test_a_failed_disk_write_raises_its_oserror_and_leaves_no_temp_file(tmp_path):
    # A file size limit (RLIMIT_FSIZE) makes the write fail with EFBIG part way, as a full disk would.
    (tmp_path / "big.wav").write_bytes(os.urandom(2_000_000))
    (tmp_path / "out").mkdir()
    script = textwrap.dedent(
        f"""
        import errno, resource, signal, sys
        from pathlib import Path
        from pyrage import x25519
        from conversations import sealing
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, resource.RLIM_INFINITY))
        try:
            sealing.seal(Path({str(tmp_path / "big.wav")!r}), Path({str(tmp_path / "out" / "big.wav.age")!r}),
                         [x25519.Identity.generate().to_public()])
        except OSError as error:
            sys.exit(0 if error.errno == errno.EFBIG else 3)
        sys.exit(4)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert list((tmp_path / "out").iterdir()) == []


# --- keys -----------------------------------------------------------------------------------------


def test_recipients_are_split_on_commas_and_whitespace():
    publics = [str(key_pair()[1]) for _ in range(3)]
    text = f" {publics[0]},{publics[1]}\n\t, {publics[2]} ,"
    assert [str(key) for key in sealing.recipients(text)] == publics
    assert sealing.recipients("") == [] and sealing.recipients(" \n, ") == []


def test_a_pasted_private_key_is_refused_without_echoing_it():
    identity, public = key_pair()
    secret = str(identity)
    for text in (secret, f"{public}, {secret}", secret.lower()):
        with pytest.raises(ValueError) as refused:
            sealing.recipients(text)
        message = str(refused.value)
        assert "private key" in message and "must not be configured here" in message
        assert secret[15:].lower() not in message.lower()


def test_a_bad_entry_is_named_and_only_a_public_looking_one_echoed():
    _, public = key_pair()
    with pytest.raises(ValueError, match=r"entry 2 'age1typo' is not an age X25519 public key"):
        sealing.recipients(f"{public} age1typo")
    with pytest.raises(ValueError, match=r"entry 1 \(22 characters, not shown\)") as refused:
        sealing.recipients("s3cr3t-p4ssw0rd-pasted")
    assert "s3cr3t" not in str(refused.value)


def test_an_identity_file_is_read_as_age_keygen_writes_it(tmp_path):
    identity, public = key_pair()
    path = tmp_path / "key.txt"
    path.write_text(f"# created: 2026-01-01T00:00:00Z\n# public key: {public}\n\n{identity}\n")
    (found,) = sealing.identities(path)
    assert str(found.to_public()) == str(public)


@pytest.mark.parametrize(
    "text, problem",
    [
        ("# only a comment\n", "no age identity"),
        ("AGE-SECRET-KEY-1NOTBECH32\n", "line 1: not an age identity"),
        ("{public}\n", "line 1: a public key; decrypting needs the private key file"),
    ],
)
def test_a_bad_identity_file_is_refused_clearly(tmp_path, text, problem):
    path = tmp_path / "key.txt"
    path.write_text(text.format(public=key_pair()[1]))
    with pytest.raises(ValueError, match=problem) as refused:
        sealing.identities(path)
    assert "NOTBECH32" not in str(refused.value)


# --- the plaintext summary ------------------------------------------------------------------------


def test_the_summary_keeps_no_caller_number_call_sid_or_pause_reason_anywhere():
    full = a_record()
    assert set(NUMBERS.values()) <= set(strings(full)) and REASON in set(strings(full))  # they were there
    kept = " ".join(strings(sealing.summary(full)))
    digits_kept = "".join(ch for ch in kept if ch.isdigit())
    for secret in (*NUMBERS.values(), CALLED):
        assert secret[2:] not in digits_kept, secret
    for secret in (A, B, A.replace("-", ""), REASON):
        assert secret not in kept, secret
    dropped = {"from", "to", "call_sid", "talk", "rt60", "reason", "resumed_by", "announcements"}
    assert dropped <= json_keys(full) and dropped.isdisjoint(json_keys(sealing.summary(full)))
    assert numbers(sealing.summary(full)) == []  # so a caller search never finds it


def test_the_summary_keeps_what_the_index_and_the_lists_read():
    full = a_record()
    kept = sealing.summary(full)
    assert fields(kept) == fields(full) and kept["encrypted"] is True
    facts, full_facts = conversation_facts(kept), conversation_facts(full)
    for column in ("id", "room", "status", "started", "length", "recorded", "paused", "callers", "secure_pauses"):
        assert facts[column] == full_facts[column], column
    assert facts["mix"] == full_facts["mix"]  # the line's SNR
    assert (kept["audio"]["wav_file"], kept["audio"]["mp3_file"]) == ("mix.wav.age", "mix.mp3.age")
    assert [c["audio"]["wav_file"] for c in kept["channels"]] == ["channel-01.wav.age", None]
    assert [c["connection_id"] for c in kept["channels"]] == ["caller-1", "caller-2"]


def test_signalwire_deletion_rewrites_the_summary_flags_by_sealed_name():
    kept = with_deleted(sealing.summary(a_record()), {"mix.wav.age", "channel-01.wav.age"})
    assert kept["audio"]["deleted_from_signalwire"] is True
    assert [c["audio"]["deleted_from_signalwire"] for c in kept["channels"]] == [True, False]
    assert sealing.summary(kept)["audio"] == kept["audio"]  # a summary of a summary: names not sealed twice


# --- the CLI --------------------------------------------------------------------------------------


def quorum(*args, cwd):
    """Run the `quorum` command (app.cli) in a fresh interpreter."""
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); import app; app.cli({list(args)!r})"
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=60)


def sealed_conversation(directory: Path, public) -> dict:
    """A conversation directory as the archive seals it: media and record sealed, the summary in the clear."""
    full = a_record()
    directory.mkdir(parents=True)
    for name, seconds in (("mix.wav", 3.0), ("mix.mp3", 1.0), ("channel-01.wav", 2.0)):
        (directory / f"plain-{name}").write_bytes(wav_bytes(seconds))
        sealing.seal(directory / f"plain-{name}", directory / f"{name}.age", [public])
    (directory / "conversation.json.age").write_bytes(sealing.seal_bytes(json.dumps(full).encode(), [public]))
    (directory / "conversation.json").write_text(json.dumps(sealing.summary(full)))
    return full


def test_keygen_writes_a_private_file_once_and_decrypt_opens_a_sealed_conversation(tmp_path):
    made = quorum("keygen", "--out", "key.txt", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    public = made.stdout.strip()
    assert public.startswith("age1") and "ARCHIVE_PUBLIC_KEY" in made.stderr
    assert stat.S_IMODE((tmp_path / "key.txt").stat().st_mode) == 0o600
    before = (tmp_path / "key.txt").read_text()
    again = quorum("keygen", "--out", "key.txt", cwd=tmp_path)
    assert again.returncode == 1 and "not overwritten" in again.stderr and again.stdout == ""
    assert (tmp_path / "key.txt").read_text() == before

    conversation = tmp_path / "Sales" / "2027-01-15" / sid("conf")
    full = sealed_conversation(conversation, sealing.recipients(public)[0])
    opened = quorum("decrypt", "--identity", "key.txt", str(conversation), "--out", "plain", cwd=tmp_path)
    assert opened.returncode == 0, opened.stderr
    out = tmp_path / "plain"
    assert sorted(p.name for p in out.iterdir()) == ["channel-01.wav", "conversation.json", "mix.mp3", "mix.wav"]
    assert json.loads((out / "conversation.json").read_text()) == full
    for name in ("mix.wav", "mix.mp3", "channel-01.wav"):
        assert (out / name).read_bytes() == (conversation / f"plain-{name}").read_bytes()
    assert opened.stdout.splitlines()[-1].endswith("conversation.json")  # the record last, as the archive writes

    beside = quorum("decrypt", "--identity", "key.txt", str(conversation / "mix.wav.age"), cwd=tmp_path)
    assert beside.returncode == 0 and (conversation / "mix.wav").read_bytes() == (out / "mix.wav").read_bytes()
    in_place = quorum("decrypt", "--identity", "key.txt", str(conversation / "conversation.json.age"), cwd=tmp_path)
    assert in_place.returncode == 0  # the summary is superseded by the record it stood in for
    assert json.loads((conversation / "conversation.json").read_text()) == full


def test_decrypt_with_the_wrong_key_says_so_once_per_file_and_writes_nothing(tmp_path):
    _, public = key_pair()
    stranger, _ = key_pair()
    (tmp_path / "stranger.txt").write_text(f"{stranger}\n")
    conversation = tmp_path / "conv"
    sealed_conversation(conversation, public)
    refused = quorum("decrypt", "--identity", "stranger.txt", "conv", "missing.age", "--out", "plain", cwd=tmp_path)
    assert refused.returncode == 1 and refused.stdout == ""
    lines = refused.stderr.splitlines()
    assert len(lines) == 5 and all(line.startswith("quorum decrypt: ") for line in lines), lines
    assert sum("not encrypted to this key" in line for line in lines) == 4
    assert lines[-1] == "quorum decrypt: missing.age: no such file or directory"
    assert list((tmp_path / "plain").iterdir()) == []


def test_decrypt_refuses_to_replace_a_file_that_is_not_the_summary(tmp_path):
    identity, public = key_pair()
    (tmp_path / "key.txt").write_text(f"{identity}\n")
    (tmp_path / "mix.wav").write_bytes(b"mine")
    sealing.seal(tmp_path / "mix.wav", tmp_path / "x" / "mix.wav.age", [public])
    (tmp_path / "x" / "mix.wav").write_bytes(b"already here")
    refused = quorum("decrypt", "--identity", "key.txt", "x/mix.wav.age", cwd=tmp_path)
    assert refused.returncode == 1 and "exists: not replaced" in refused.stderr
    assert (tmp_path / "x" / "mix.wav").read_bytes() == b"already here"


def test_decrypt_by_conversation_id_through_a_fetch_callable(tmp_path, capsys, monkeypatch):
    identity, public = key_pair()
    (tmp_path / "key.txt").write_text(f"{identity}\n")
    stored = tmp_path / "store" / sid("conf")
    full = sealed_conversation(stored, public)

    def fetch(conversation_id: str, into: Path) -> None:
        for path in (tmp_path / "store" / conversation_id).glob("*.age"):
            shutil.copy(path, into / path.name)

    monkeypatch.chdir(tmp_path)
    argv = ["--identity", "key.txt", sid("conf"), "--out", "plain"]
    assert sealing.decrypt_main(argv, fetch=fetch) == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "plain" / sid("conf") / "conversation.json").read_text()) == full
    assert sealing.decrypt_main(["--identity", "key.txt", "not-an-id!"], fetch=fetch) == 1


def test_the_quorum_usage_lists_keygen_and_decrypt(tmp_path):
    usage = quorum("--help", cwd=tmp_path)
    assert usage.returncode == 0 and "keygen" in usage.stderr and "decrypt" in usage.stderr


# --- the age CLI ----------------------------------------------------------------------------------

needs_age = pytest.mark.skipif(shutil.which("age") is None, reason="the age CLI is not installed (apt-get install age)")


@needs_age
def test_the_age_cli_decrypts_what_seal_wrote_with_a_quorum_keygen_file(tmp_path):
    made = quorum("keygen", "--out", "key.txt", cwd=tmp_path)
    (tmp_path / "mix.wav").write_bytes(wav_bytes(2.0))
    sealing.seal(tmp_path / "mix.wav", tmp_path / "mix.wav.age", sealing.recipients(made.stdout))
    opened = subprocess.run(
        ["age", "-d", "-i", "key.txt", "-o", "back.wav", "mix.wav.age"], cwd=tmp_path, capture_output=True, timeout=30
    )
    assert opened.returncode == 0, opened.stderr
    assert (tmp_path / "back.wav").read_bytes() == (tmp_path / "mix.wav").read_bytes()


@needs_age
def test_unseal_opens_what_the_age_cli_encrypted_to_an_age_keygen_key(tmp_path):
    subprocess.run(["age-keygen", "-o", "key.txt"], cwd=tmp_path, capture_output=True, check=True, timeout=30)
    (public,) = [line.split(": ")[1] for line in (tmp_path / "key.txt").read_text().splitlines() if "public" in line]
    (tmp_path / "plain").write_bytes(os.urandom(100_000))
    subprocess.run(["age", "-r", public, "-o", "plain.age", "plain"], cwd=tmp_path, check=True, timeout=30)
    sealing.unseal(tmp_path / "plain.age", tmp_path / "back", sealing.identities(tmp_path / "key.txt"))
    assert (tmp_path / "back").read_bytes() == (tmp_path / "plain").read_bytes()
