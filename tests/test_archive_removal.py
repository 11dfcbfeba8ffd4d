"""The archive's one removal (`Archive.remove`) and the listing retention reads: durable, and never
outside RECORDINGS_DIR."""

from pathlib import Path

import pytest

from conversations.archive import TRASH, Archive
from support import sid

DAY = 86400.0
T0 = 1_800_000_000.0  # 2027-01-15 08:00 UTC
A, B, C = sid("conv-a"), sid("conv-b"), sid("conv-c")


def archived(archive: Archive, room: str, started: float, conversation_id: str) -> Path:
    """A complete conversation directory: media first, conversation.json last."""
    directory = archive.directory_for(room, started, conversation_id)
    archive.write_file(directory, "mix.wav", b"RIFF")
    archive.save(directory, {"id": conversation_id, "room": room})
    return directory


def test_remove_takes_the_conversation_away_whole_and_prunes_emptied_parents(tmp_path):
    archive = Archive(tmp_path)
    old = archived(archive, "+15550001111", T0, A)
    neighbour = archived(archive, "+15550001111", T0 + 60, B)
    lonely = archived(archive, "+15550002222", T0, C)
    assert archive.remove(old) is True
    assert not old.exists() and neighbour.is_dir()  # the day still holds B
    assert archive.remove(lonely) is True
    assert not lonely.parent.exists() and not lonely.parent.parent.exists()  # its day and room were emptied
    assert list((tmp_path / TRASH).iterdir()) == []
    assert [c["id"] for c in archive.all()] == [B]


def test_removing_twice_or_what_is_not_there_is_harmless(tmp_path):
    archive = Archive(tmp_path)
    directory = archived(archive, "room", T0, A)
    assert archive.remove(directory) is True
    assert archive.remove(directory) is False  # another process got there first


@pytest.mark.parametrize(
    "target",
    [
        lambda root: root,
        lambda root: root / "room",
        lambda root: root / "room" / "2027-01-15",
        lambda root: root / "room" / "2027-01-15" / A / "mix.wav",
        lambda root: root.parent,
        lambda root: root / ".." / "elsewhere" / "2027-01-15" / A,
        lambda root: root / ".outbox" / "2027-01-15" / A,
        lambda root: root / "room" / "2027-01-15" / "x",
    ],
)
def test_remove_refuses_anything_but_a_conversation_directory(tmp_path, target):
    root = tmp_path / "archive"
    archive = Archive(root)
    archived(archive, "room", T0, A)
    (tmp_path / "elsewhere" / "2027-01-15" / A).mkdir(parents=True)
    (root / ".outbox" / "2027-01-15" / A).mkdir(parents=True)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    with pytest.raises(ValueError):
        archive.remove(target(root))
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_remove_never_follows_a_symlink_out_of_the_archive(tmp_path):
    outside = tmp_path / "outside"
    (outside / "2027-01-15" / A).mkdir(parents=True)
    (outside / "2027-01-15" / A / "keep.txt").write_text("not the archive's")
    root = tmp_path / "archive"
    root.mkdir()
    (root / "room").symlink_to(outside)
    with pytest.raises(ValueError):
        Archive(root).remove(root / "room" / "2027-01-15" / A)
    assert (outside / "2027-01-15" / A / "keep.txt").read_text() == "not the archive's"


def test_a_removal_cut_short_is_finished_by_the_next_empty_trash(tmp_path):
    archive = Archive(tmp_path)
    half = tmp_path / TRASH / f"{A}.interrupted"
    half.mkdir(parents=True)
    (half / "mix.wav").write_bytes(b"RIFF")
    archive.empty_trash()
    assert list((tmp_path / TRASH).iterdir()) == []


def test_started_before_lists_the_conversations_of_days_that_began_before_the_cutoff(tmp_path):
    archive = Archive(tmp_path)
    old = archived(archive, "room", T0 - 3 * DAY, A)
    edge = archived(archive, "room", T0, B)  # 08:00 on the cutoff's own day
    archived(archive, "room", T0 + DAY, C)  # a later day's: not listed
    (tmp_path / ".outbox").mkdir()
    (tmp_path / "room" / "not-a-day").mkdir()
    assert set(archive.started_before(T0 + 3600)) == {old, edge}
    assert set(archive.started_before(T0 - 3 * DAY - 9 * 3600)) == set()  # 23:00 the day before A's day began
