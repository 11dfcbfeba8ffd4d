"""The archive's index in Redis, for an archive several hosts share: ArchiveIndex's interface over sorted sets.

Keys (P is the key prefix, e.g. "quorum:archive:"); a row's sort key, its *member*, is
`started_at \\0 id \\0 directory`, so byte order is (started_at, id) order and every set is read newest first:
- `P z:[room, status]`  sorted sets (score 0, ordered by member) for each filter a list can ask for:
                        `[null, null]` holds every row, `["R", null]` room R's, `[null, "S"]` status S's,
                        `["R", "S"]` both: any room/status/date/`newer_than` query is one lexicographic range.
- `P rec`               hash member -> conversation.json's text (a page is one HMGET).
- `P callers`           sorted set of `reversed caller digits \\0 member`: "the last digits" is a range.
- `P ids`               sorted set of `id \\0 member`: the rows of an id (hidden ids, `directory_of`).
- `P rooms`             set of rooms with a row.
- `P ver`, `P meta`     hashes directory -> version, and -> what its row added (so it can be taken out again).
- `P gen`               bumped by every write: a read that saw it change is read again.
- `P complete`          set by each finished sync: until then `read` refuses (NOT_BUILT).
Each row is written or deleted by one Lua script, atomically and only if its version is still the one the
writer last saw (a sync's compare-and-set): two hosts' syncs and saves never lose or double a row.
"""

from __future__ import annotations

import json
from typing import Callable, Dict, FrozenSet, Iterable, List, Optional, Set, Tuple, TypeVar, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from conversations.archive_index import NOT_BUILT, IndexUnusable, Query, digits, fields, numbers

T = TypeVar("T")
SEP = "\x00"
ANY = "*"  # the expected version of an unconditional write
BATCH = 500  # rows a sync loads and writes per pipelined round trip
ATTEMPTS = 3  # reads of a list while other hosts write, before the last answer is taken as it is

# ARGV: prefix, directory, the version expected ('*': any, '': no row), the new version ('': delete the row),
# the new row's meta JSON, its text. Answers 1 if it wrote, 0 if the row's version was not the one expected.
_WRITE = """
local p, dir = ARGV[1], ARGV[2]
local had = redis.call('hget', p .. 'ver', dir)
if ARGV[3] ~= '*' and (had or '') ~= ARGV[3] then return 0 end
if had then
  local old = cjson.decode(redis.call('hget', p .. 'meta', dir))
  for _, key in ipairs(old.z) do redis.call('zrem', key, old.m) end
  for _, entry in ipairs(old.c) do redis.call('zrem', p .. 'callers', entry) end
  redis.call('zrem', p .. 'ids', old.i)
  redis.call('hdel', p .. 'rec', old.m)
  for n, room in ipairs(old.r) do
    if redis.call('zcard', old.rk[n]) == 0 then redis.call('srem', p .. 'rooms', room) end
  end
  redis.call('hdel', p .. 'ver', dir)
  redis.call('hdel', p .. 'meta', dir)
end
if ARGV[4] ~= '' then
  local new = cjson.decode(ARGV[5])
  for _, key in ipairs(new.z) do redis.call('zadd', key, 0, new.m) end
  for _, entry in ipairs(new.c) do redis.call('zadd', p .. 'callers', 0, entry) end
  redis.call('zadd', p .. 'ids', 0, new.i)
  redis.call('hset', p .. 'rec', new.m, ARGV[6])
  for _, room in ipairs(new.r) do redis.call('sadd', p .. 'rooms', room) end
  redis.call('hset', p .. 'ver', dir, ARGV[4])
  redis.call('hset', p .. 'meta', dir, ARGV[5])
end
redis.call('incr', p .. 'gen')
return 1
"""


def _filter_key(prefix: str, room: Optional[str], status: Optional[str]) -> str:
    """The sorted set of the rows with this room and status (None: any)."""
    return f"{prefix}z:{json.dumps([room, status])}"


def _meta(prefix: str, directory: str, text: str) -> Optional[str]:
    """The JSON of what a row adds to the index (sets, member, callers, room), or None if not a conversation."""
    try:
        record = json.loads(text)
    except ValueError:
        return None
    found = fields(record)
    if found is None:
        return None
    member = SEP.join((found.started_at, found.id, directory))
    reversed_digits = sorted({digits(n)[::-1] for n in numbers(record) if digits(n)})
    keys = [_filter_key(prefix, None, None)]
    if found.room is not None:
        keys.append(_filter_key(prefix, found.room, None))
    if found.status is not None:
        keys.append(_filter_key(prefix, None, found.status))
        if found.room is not None:
            keys.append(_filter_key(prefix, found.room, found.status))
    rooms = [found.room] if found.room is not None else []
    entries = [rev + SEP + member for rev in reversed_digits]
    row = {
        "m": member,
        "z": keys,
        "c": entries,
        "i": found.id + SEP + member,
        "r": rooms,
        "rk": keys[1:2] if rooms else [],
    }
    return json.dumps(row, ensure_ascii=False)  # raw UTF-8: Lua's members are then byte for byte Python's


class RedisView:
    """Queries over the index in Redis, as IndexView answers them; a few round trips each, which a write may come
    between (RedisIndex.read then reads the list again)."""

    def __init__(self, client: redis.Redis, prefix: str):
        self._redis = client
        self._prefix = prefix
        self._hidden: Dict[Tuple[str, FrozenSet], List[str]] = {}
        self._callers: Dict[Query, List[str]] = {}

    def count(self, query: Query, newer_than: Optional[Tuple[str, str]] = None) -> int:
        """How many conversations match (only those newer than the sort key `newer_than`, if given)."""
        key, low, high = self._range(query, newer_than)
        if query.caller is not None:
            return len(self._by_caller(query, key, low, high))
        hidden = self._hidden_in(key, query.hidden, low, high)
        return self._redis.zlexcount(key, _low(low), _high(high)) - len(hidden)

    def page(self, query: Query, offset: int, limit: int) -> List[dict]:
        """Matching conversations `offset` to `offset + limit`, newest first."""
        if limit <= 0:
            return []
        key, low, high = self._range(query, None)
        if query.caller is not None:
            return self._records(self._by_caller(query, key, low, high)[offset : offset + limit])
        hidden = self._hidden_in(key, query.hidden, low, high)
        start = offset
        if hidden:  # each hidden row ranked at or before the start (newest first) moves the start one further
            pipe = self._redis.pipeline(transaction=True)
            for member in hidden:
                pipe.zlexcount(key, "(" + member, _high(high))
            for rank in sorted(pipe.execute()):
                start += rank <= start
        members = cast(List[str], self._redis.zrevrangebylex(key, _high(high), _low(low), start, limit + len(hidden)))
        shown = set(hidden)
        return self._records([m for m in members if m not in shown][:limit])

    def rooms(self) -> List[str]:
        """Every room with an archived conversation, sorted."""
        return sorted(cast(Set[str], self._redis.smembers(self._prefix + "rooms")))

    def _range(self, query: Query, newer_than: Optional[Tuple[str, str]]) -> Tuple[str, str, Optional[str]]:
        """The query's sorted set and its members' bounds: [low, high) (high None: no upper bound)."""
        low = query.since or ""
        if newer_than is not None:  # past every member of that (started_at, id), whatever its directory
            low = max(low, newer_than[0] + SEP + newer_than[1] + "\x01")
        return _filter_key(self._prefix, query.room, query.status), low, query.until

    def _hidden_in(self, key: str, hidden: FrozenSet[str], low: str, high: Optional[str]) -> List[str]:
        """The members of the hidden ids in `key` and [low, high), newest first."""
        if not hidden:
            return []
        if (key, hidden) not in self._hidden:  # the same for every call of one list: asked once
            self._hidden[(key, hidden)] = self._in_set(key, self._members_of(sorted(hidden)))
        return sorted((m for m in self._hidden[(key, hidden)] if _inside(m, low, high)), reverse=True)

    def _members_of(self, ids: List[str]) -> List[str]:
        """Every member of rows with these ids."""
        pipe = self._redis.pipeline(transaction=True)
        for id_ in ids:
            pipe.zrangebylex(self._prefix + "ids", "[" + id_ + SEP, "(" + id_ + "\x01")
        return [entry[len(id_) + 1 :] for id_, entries in zip(ids, pipe.execute()) for entry in entries]

    def _in_set(self, key: str, members: List[str]) -> List[str]:
        """Those of `members` in the sorted set `key`."""
        if not members:
            return []
        return [m for m, score in zip(members, self._redis.zmscore(key, members)) if score is not None]

    def _by_caller(self, query: Query, key: str, low: str, high: Optional[str]) -> List[str]:
        """Members matching a caller query in [low, high), newest first."""
        if query not in self._callers:  # the same for every call of one list but `newer_than`: read once
            self._callers[query] = self._caller_rows(query, key, query.since or "", high)
        return [m for m in self._callers[query] if m >= low]

    def _caller_rows(self, query: Query, key: str, low: str, high: Optional[str]) -> List[str]:
        """Members matching a caller query in [low, high), newest first: from the caller's entries, checked against
        `key`. One range of the callers' set and one ZMSCORE: the cost grows with the rows the digits match."""
        wanted = digits(query.caller or "")[::-1]
        # The byte 0xFF follows every UTF-8 byte: the range is every entry the digits begin, whatever digits follow.
        entries = cast(
            List[str], self._redis.zrangebylex(self._prefix + "callers", "[" + wanted, b"(" + wanted.encode() + b"\xff")
        )
        inside = [m for m in {e.split(SEP, 1)[1] for e in entries} if _inside(m, low, high)]
        if query.room is not None or query.status is not None:  # else every row is in `key`
            inside = self._in_set(key, inside)
        hidden = set(self._members_of(sorted(query.hidden)))
        return sorted((m for m in inside if m not in hidden), reverse=True)

    def _records(self, members: List[str]) -> List[dict]:
        """The records of these members, in order."""
        texts = cast(List[str], self._redis.hmget(self._prefix + "rec", members)) if members else []
        return [json.loads(text) for text in texts]


def _low(low: str) -> str:
    """A member bound for ZRANGEBYLEX: at or after `low`."""
    return "[" + low if low else "-"


def _high(high: Optional[str]) -> str:
    """A member bound for ZRANGEBYLEX: before `high`."""
    return "+" if high is None else "(" + high


def _inside(member: str, low: str, high: Optional[str]) -> bool:
    """Whether a member is in [low, high): Python orders strings by code point, as Redis orders UTF-8 bytes."""
    return member >= low and (high is None or member < high)


class RedisIndex:
    """The index in Redis, the same interface as ArchiveIndex: its client must be made with decode_responses=True
    (its answers are then str, which the casts below say)."""

    def __init__(self, client: redis.Redis, key_prefix: str):
        self._redis = client
        self._prefix = key_prefix
        self._write = client.register_script(_WRITE)

    @classmethod
    def from_url(cls, url: str, key_prefix: str) -> "RedisIndex":
        """Connect with RedisStore's timeouts, so a dead Redis fails a list (read from the files) instead of hanging.
        One retry at once, not redis-py's three with backoff: a hung Redis costs a list 4 s, not some 15."""
        client = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=2,
            socket_connect_timeout=2,
            health_check_interval=30,
            retry=Retry(NoBackoff(), 1),
        )
        return cls(client, key_prefix)

    def read(self, work: Callable[[RedisView], T]) -> T:
        """`work` over the index, again if another host wrote meanwhile; IndexUnusable if unbuilt or unreachable."""
        try:
            for _ in range(ATTEMPTS - 1):
                answer, unchanged = self._attempt(work)
                if unchanged:
                    return answer
            return self._attempt(work)[0]
        except redis.RedisError as error:
            raise IndexUnusable(str(error)) from error

    def _attempt(self, work: Callable[[RedisView], T]) -> Tuple[T, bool]:
        """`work`'s answer, and whether no write came between its first read and its last."""
        complete, before = self._redis.mget(self._prefix + "complete", self._prefix + "gen")
        if complete is None:
            raise IndexUnusable(NOT_BUILT)
        answer = work(RedisView(self._redis, self._prefix))
        return answer, self._redis.get(self._prefix + "gen") == before

    def put(self, directory: str, text: str, version: int) -> None:
        """Add or replace one conversation's row (`version` changes whenever the record is rewritten)."""
        meta = _meta(self._prefix, directory, text)
        if meta is None:  # not a conversation, so not listed: as the file scan would have it
            self.delete(directory)
            return
        self._write(args=[self._prefix, directory, ANY, str(version), meta, text])

    def delete(self, directory: str) -> None:
        """Drop one conversation's row."""
        self._write(args=[self._prefix, directory, ANY, "", "", ""])

    def versions(self) -> Dict[str, int]:
        """Each indexed directory's version; none if Redis cannot be read."""
        try:
            known = cast(Dict[str, str], self._redis.hgetall(self._prefix + "ver"))
        except redis.RedisError:
            return {}
        return {directory: int(version) for directory, version in known.items()}

    def clear(self) -> None:
        """Drop every key of this index (a rebuild from scratch: benchmarks, a repair by hand)."""
        for key in self._redis.scan_iter(match=self._prefix + "*", count=1000):
            self._redis.delete(key)

    def directory_of(self, conversation_id: str) -> Optional[str]:
        """Where the conversation with this id lives (the newest, if several); None if unknown or unreadable."""
        try:
            members = RedisView(self._redis, self._prefix)._members_of([conversation_id])
        except redis.RedisError:
            return None
        return max(members).rsplit(SEP, 1)[1] if members else None

    def sync(
        self, files: Callable[[], Iterable[Tuple[str, int]]], load: Callable[[str], Optional[str]]
    ) -> Tuple[int, int]:
        """Make the rows match `files()`, (directory, version) each: (rows written, rows dropped).

        Each change is a compare-and-set against the version this sync read before listing the files: a row
        another host wrote or deleted since is left as that host made it (its write saw newer files)."""
        known = cast(Dict[str, str], self._redis.hgetall(self._prefix + "ver"))
        found = {directory: str(version) for directory, version in files()}
        stale = [d for d, v in known.items() if found.get(d) != v]  # removed or rewritten
        fresh = [d for d, v in found.items() if known.get(d) != v]
        written, dropped = self._apply(fresh, found, known, load)
        dropped += self._drop([d for d in stale if d not in found], known)
        self._redis.set(self._prefix + "complete", str(len(found)))
        return written, dropped

    def _apply(
        self, fresh: List[str], found: Dict[str, str], known: Dict[str, str], load: Callable[[str], Optional[str]]
    ) -> Tuple[int, int]:
        """Write the rows of new and rewritten files, in batches; a rewritten one unreadable now is dropped."""
        written = dropped = 0
        for start in range(0, len(fresh), BATCH):
            batch = fresh[start : start + BATCH]
            pipe = self._redis.pipeline(transaction=False)
            sent = []  # (had a row, writes one) of each script call, in order
            for directory in batch:
                text = load(directory)
                meta = None if text is None else _meta(self._prefix, directory, text)
                if meta is None and directory not in known:
                    continue  # unreadable or not a conversation, and no row to drop
                row = [found[directory], meta, text or ""] if meta is not None else ["", "", ""]
                self._write(args=[self._prefix, directory, known.get(directory, ""), *row], client=pipe)
                sent.append((directory in known, meta is not None))
            for (had, writes), done in zip(sent, pipe.execute() if sent else []):
                written += bool(done) and writes
                dropped += bool(done) and had
        return written, dropped

    def _drop(self, removed: List[str], known: Dict[str, str]) -> int:
        """Delete the rows of removed files, each only if no host has written it since this sync read it."""
        dropped = 0
        for start in range(0, len(removed), BATCH):
            pipe = self._redis.pipeline(transaction=False)
            for directory in removed[start : start + BATCH]:
                self._write(args=[self._prefix, directory, known[directory], "", "", ""], client=pipe)
            dropped += sum(pipe.execute())
        return dropped
