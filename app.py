"""Quorum: record SignalWire conferences only while a quorum is on the line.

`create_app(config)` is the factory (`gunicorn 'app:create_app()'`); `python app.py`
serves on PORT, optionally behind an ngrok tunnel.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NoReturn, Optional, Union

import redis
from flask import Flask, Response, current_app, jsonify, request

from config import Config, ConfigError
from console import api, dashboard, health, request_logs, secure_pause
from console.metrics import Metrics
from conversations import audio_quality, sealing
from conversations.archive import Archive, ArchiveUnavailable
from conversations.archive_index import ArchiveIndex
from conversations.bucket import Bucket, BucketError, parse_s3_url
from conversations.bucket_archive import BUCKET_INDEX_NAME, BucketArchive
from conversations.redis_index import RedisIndex
from conversations.event_callbacks import EventSender, FileOutbox, Outbox, RedisOutbox
from conversations.media_download import MediaSource, allowed_origins
from conversations.processing import ConversationProcessor
from conversations.recording_fetch import DOWNLOAD_TIMEOUT_S
from conversations.retention import Retention
from conversations.signalwire_copies import SignalWireCopies
from quorum import laml, redis_outage, webhooks
from quorum.command_queue import CommandQueue
from quorum.controller import RecordingController
from quorum.housekeeper import Housekeeper
from quorum.gateway import SignalWireGateway, build_announcer, build_client
from quorum.log_throttle import Throttle
from quorum.secure_pauser import SecurePauser
from quorum.state_file import FileBackedStore, StateFile
from recording_state import MemoryStore, StateStore

log = logging.getLogger("quorum")

# SignalWire's callbacks are a few KB; nothing Quorum accepts comes near this.
MAX_BODY_BYTES = 64 * 1024
# The one extension key: the app's Services.
SERVICES = "quorum"


@dataclass(frozen=True)
class Services:
    """Everything the routes and the background threads share: built once, by `build_services`."""

    config: Config
    store: StateStore
    gateway: SignalWireGateway
    commands: CommandQueue
    controller: RecordingController
    housekeeper: Housekeeper
    archive: Archive
    processor: ConversationProcessor
    events: Optional[EventSender]
    metrics: Metrics
    copies: SignalWireCopies
    retention: Retention
    secure: SecurePauser
    outage: Optional[redis_outage.RedisOutage] = None  # the watch of REDIS_URL, when set
    refusals: Throttle = field(default_factory=Throttle)  # refused signatures: a log line a minute at most

    def start(self) -> None:
        """Start the sweeps, reconciler rounds and the archive index's sync (the queues' threads run already)."""
        with redis_outage.tolerated():  # else the re-drive tick does it
            self.secure.sweep()  # the timers of secure pauses a previous run left on
        self.housekeeper.start()
        self.archive.start()

    def stop(self) -> None:
        """Stop the background threads after the work under way finishes."""
        self.housekeeper.stop()
        self.secure.stop()
        self.commands.shutdown()
        self.processor.shutdown()
        self.copies.shutdown()
        self.archive.stop()
        if self.events:
            self.events.stop()
        if self.outage:
            self.outage.stop()
        if isinstance(self.store, FileBackedStore):
            self.store.close()  # last: everything above may still change the state


def build_services(
    config: Config, client=None, store: Optional[StateStore] = None, archive_clock: Optional[Callable[[], float]] = None
) -> Services:
    """Wire every part once; `client` (the SignalWire SDK client) and `store` default from `config`;
    `archive_clock` is the clock of the archive's upkeep (retention, deletion and archiving retries), for tests to
    move."""
    archive = prepared_archive(config)
    store = store if store is not None else build_store(config)
    # Before anything reads Redis: an unreachable REDIS_URL is said once, here, and Quorum starts all the same.
    outage = redis_outage.watch(config.redis_url) if config.redis_url else None
    metrics = Metrics(store)
    gateway = SignalWireGateway(
        client if client is not None else build_client(config),
        observe=metrics.observe_rest,
        announcer=build_announcer(config),
    )
    secret = config.event_callback_secret  # Config requires it with EVENT_CALLBACK_URL
    events = (
        EventSender(
            config.event_callback_url,
            secret,
            build_outbox(config),
            workers=config.event_callback_concurrency,
            max_queued=config.event_queue_max,
        )
        if config.event_callback_url and secret
        else None
    )
    media = MediaSource(
        allowed_origins(config.signalwire_space_url, config.signalwire_api_url),
        max_bytes=config.max_recording_mb * 1024 * 1024,
        timeout_s=DOWNLOAD_TIMEOUT_S,
    )
    copies = SignalWireCopies(
        archive, store, gateway.delete_recording, config.delete_from_signalwire, clock=archive_clock or time.time
    )
    retention = Retention(archive, store, copies, config.archive_retention_days, clock=archive_clock or time.time)
    # The lock outlives the longest action (a read of three requests, each with connect and read timeouts),
    # so two processes never command one room at once.
    commands = CommandQueue(
        store,
        gateway,
        lock_ttl_s=6 * config.signalwire_timeout_s + 5,
        recording_callback=lambda room, call: laml.recording_callback_url(config.public_url, room, call),
        announce_url=lambda room: laml.announce_url(config.public_url, room),
        on_done=events.notify if events else lambda conf, action: None,
        workers=config.signalwire_concurrency,
        reads_per_s=config.reconcile_max_reads_per_s,
        observe_crossing=metrics.crossing_seconds.observe,
    )
    metrics.watch_queue(commands.depth)
    metrics.watch_archive(archive.staged)
    # Archiving asks SignalWire for each conference's recordings: GETs within the readers' shared budget.
    processor = ConversationProcessor(
        store,
        archive,
        events,
        audio_quality.analyze_file,
        media,
        gateway,
        copies=copies,
        reads=commands.reads.take_budget,
        list_calls=config.participant_recording != "off",
        clock=archive_clock or time.time,
    )
    controller = RecordingController(
        store,
        commands,
        processor,
        config.rule_for,
        config.end_grace_s,
        config.reconcile_interval_s,
        config.records_caller,
        gateway=gateway,
        repair_interval_s=config.repair_interval_s,
    )
    secure = SecurePauser(
        store,
        commands.kick,
        config.secure_pause_max_s,
        notify=events.notify_secure_pause if events else lambda conf, pause: None,
    )
    housekeeper = Housekeeper(
        controller,
        sweep_s=max(0.05, min(30.0, config.end_grace_s / 2)),
        reconcile_s=config.reconcile_interval_s,
        on_sweep=lambda: _archive_upkeep(archive, copies, retention),
        repair_s=controller.repair_tick_s,
        on_redrive=secure.sweep,
    )
    return Services(
        config,
        store,
        gateway,
        commands,
        controller,
        housekeeper,
        archive,
        processor,
        events,
        metrics,
        copies,
        retention,
        secure,
        outage,
    )


def prepared_archive(config: Config) -> Archive:
    """The archive ARCHIVE_URL names (default: RECORDINGS_DIR), made and proved writable; ConfigError naming the
    setting if it is not."""
    archive = build_archive(config)
    setting = "ARCHIVE_URL" if config.archive_url.startswith("file:") else "RECORDINGS_DIR"
    try:
        archive.prepare()
    except OSError as error:
        raise ConfigError(
            setting, f"cannot write the archive at {config.archive_root()}: {error.strerror or error}"
        ) from None
    except BucketError as error:
        raise ConfigError("ARCHIVE_URL", f"cannot write the archive at {config.archive_url}: {error}") from None
    return archive


def build_archive(config: Config) -> Archive:
    """A local archive, or with ARCHIVE_URL=s3://... the bucket's, staged in RECORDINGS_DIR and listed through
    Redis (REDIS_URL) or a local index rebuilt from the bucket."""
    try:
        keys = sealing.recipients(config.archive_public_key)
    except ValueError as problem:
        raise ConfigError("ARCHIVE_PUBLIC_KEY", str(problem)) from None
    if not config.archive_url.startswith("s3:"):
        if keys:
            raise ConfigError("ARCHIVE_PUBLIC_KEY", "encrypts the archive on object storage: set ARCHIVE_URL=s3://...")
        return Archive(Path(config.archive_root()))
    try:
        name, prefix = parse_s3_url(config.archive_url)
    except ValueError as problem:
        raise ConfigError("ARCHIVE_URL", str(problem)) from None
    root = Path(config.recordings_dir)
    index: Union[ArchiveIndex, RedisIndex]
    if config.redis_url:
        index = RedisIndex.from_url(config.redis_url, f"{config.redis_namespace}:archive:")
    else:
        index = ArchiveIndex(root / BUCKET_INDEX_NAME)
    return BucketArchive(root, Bucket(name, prefix), index, keys, config.archive_link_s)


def _archive_upkeep(archive: Archive, copies: SignalWireCopies, retention: Retention) -> None:
    """The archive's share of each sweep: its own upkeep, SignalWire deletions that are due, retention when due."""
    archive.sweep()
    copies.sweep()
    retention.sweep()


def services(app: Optional[Flask] = None) -> Services:
    """The services of `app` (default: the current app)."""
    return (app or current_app).extensions[SERVICES]


def create_app(
    config: Optional[Config] = None,
    *,
    client=None,
    store: Optional[StateStore] = None,
    archive_clock: Optional[Callable[[], float]] = None,
) -> Flask:
    """Build the services, start them, and serve them through the Flask app (arguments: see build_services)."""
    from_env = config is None
    if config is None:
        config = _config_or_exit()
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    request_logs.configure_werkzeug(config.log_level, config.log_caller_numbers)
    if not config.validate_signatures:
        log.warning(
            "VALIDATE_SIGNATURES=false: anyone who can reach this server can forge callbacks. "
            "Use this only for local experiments."
        )
    try:
        built = build_services(config, client, store, archive_clock)  # RECORDINGS_DIR and STATE_FILE open here
    except ConfigError as error:
        if not from_env:
            raise
        _exit_with(error)
    built.start()

    app = Flask(__name__, template_folder="console/templates", static_folder="console/static")
    app.config["QUORUM"] = config
    # Werkzeug caps urlencoded bodies only through this: without it a form is read whole before any check.
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.before_request(_refuse_oversized_body)
    app.extensions[SERVICES] = built
    for blueprint in (webhooks.bp, api.bp, secure_pause.bp, health.bp, dashboard.bp):
        app.register_blueprint(blueprint)
    app.register_error_handler(redis.RedisError, _store_unavailable)
    # The SDK logs every request's URL and form at INFO, and urllib3 logs every URL at DEBUG:
    # noise, the account in every line, and recording media URLs (which need no auth) in the log.
    for noisy in ("twilio.http_client", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return app


def build_store(config: Config) -> StateStore:
    """Redis when REDIS_URL is set (several workers or hosts), else this process's memory, kept in STATE_FILE."""
    if config.redis_url:
        from quorum.redis_store import RedisStore

        return RedisStore.from_url(config.redis_url, config.redis_namespace, config.end_grace_s)
    path = config.state_path()
    return FileBackedStore(StateFile(path)) if path else MemoryStore()


def build_outbox(config: Config) -> Outbox:
    """Where undelivered event callbacks outlive a restart: Redis when shared, else files in the archive root."""
    if config.redis_url:
        return RedisOutbox(
            redis.Redis.from_url(config.redis_url, socket_timeout=2, socket_connect_timeout=2),
            f"{config.redis_namespace}:events",
        )
    return FileOutbox(Path(config.recordings_dir) / ".outbox")


def _refuse_oversized_body():
    """413 on a body over the cap, before anything reads it whole (a declared length is never read)."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return Response(status=413, headers={"Connection": "close"})
    if request.content_length is None and "wsgi.input_terminated" in request.environ:
        # A chunked body: Werkzeug's limited stream silently truncates at the cap, so read up to it
        # (kept for the form parser) and let one more byte raise the 413.
        request.get_data(cache=True)
        request.stream.read(1)
    return None


def _store_unavailable(error: Exception):
    """Redis is down: answer 503 so SignalWire retries, without a line per request (one per outage)."""
    redis_outage.reported(error)
    return jsonify(error="state store unavailable"), 503


def shutdown(app: Flask) -> None:
    """Stop the app's background threads after the work under way finishes."""
    services(app).stop()


def _config_or_exit() -> Config:
    """Read the settings, or stop with one line naming the bad one."""
    return _or_exit(Config.from_env)


def _or_exit(build: Callable):
    """`build()`, or stop with one line naming the setting it refused."""
    try:
        return build()
    except ConfigError as error:
        _exit_with(error)


def _exit_with(error: ConfigError) -> NoReturn:
    """Stop start-up with one line naming the setting, and no traceback."""
    print(f"quorum: configuration error: {error}", file=sys.stderr)
    raise SystemExit(2) from None


def main() -> None:
    """Serve on PORT with Werkzeug's development server; with USE_NGROK, open a tunnel and point the number at it."""
    # SIGTERM (a service manager, Ctrl-C's cousin) ends the server through the `finally` below.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    config = _config_or_exit()
    client = build_client(config)
    if config.use_ngrok:
        from quorum import tunnel as ngrok_tunnel

        try:
            config = ngrok_tunnel.expose(config, SignalWireGateway(client))
        except ngrok_tunnel.TunnelFailed as failed:
            print(f"quorum: ngrok tunnel not opened: {failed}", file=sys.stderr)
            raise SystemExit(2) from None
    try:
        app = create_app(config, client=client)
    except ConfigError as error:
        _exit_with(error)
    log.info("voice webhook: %s/voice/inbound", config.public_url)
    try:
        app.run(host="0.0.0.0", port=config.port, threaded=True)
    finally:
        shutdown(app)


def check_config() -> None:
    """Read the settings and say in one line whether Quorum would start with them (the archive writable too)."""
    config = _config_or_exit()
    try:
        prepared_archive(config)
    except ConfigError as error:
        _exit_with(error)
    store = "Redis" if config.redis_url else "memory"
    print(
        f"quorum: configuration OK: webhook {config.public_url or '(ngrok)'}/voice/inbound, {store} store, "
        f"archive {config.archive_url or config.recordings_dir}" + (" (encrypted)" if config.archive_public_key else "")
    )


def run_production(args: list) -> None:
    """Serve with gunicorn and Quorum's settings (serving.py), extra `args` passed on to gunicorn."""
    _config_or_exit()  # a bad setting: one line now, not one per worker
    os.execvp(sys.executable, [sys.executable, "-m", "gunicorn", "-c", "python:serving", *args, "app:create_app()"])


def _fetch_sealed(conversation_id: str, into: Path) -> None:
    """Download one conversation's objects from the configured bucket (`quorum decrypt ID`); ValueError if none."""
    archive = build_archive(_config_or_exit())
    if not isinstance(archive, BucketArchive):
        raise ValueError("not a path, and ARCHIVE_URL names no bucket to fetch a conversation from")
    try:
        found = archive.download(conversation_id, into)
    except ArchiveUnavailable as error:
        raise ValueError(str(error)) from None
    if not found:
        raise ValueError("no such conversation in the archive")


COMMANDS = {
    "run": ("serve for real with gunicorn (production)", run_production),
    "dev": ("serve with the development server, behind ngrok if USE_NGROK=true", lambda args: main()),
    "demo": ("play the demo against the bundled SignalWire emulator, no account needed", None),
    "check-config": ("check the settings and exit", lambda args: check_config()),
    "point-number": ("point a number's voice webhook and StatusCallback at PUBLIC_URL", None),
    "keygen": ("make the age key pair for ARCHIVE_PUBLIC_KEY: the private key into a file", None),
    "decrypt": ("decrypt archived .age files: quorum decrypt --identity FILE PATH... [--out DIR]", None),
}


def cli(argv: Optional[list] = None) -> None:
    """The `quorum` command: `quorum run | dev | demo | check-config | point-number | keygen | decrypt [args]`."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(
            "usage: quorum COMMAND [args]\n"
            + "\n".join(f"  {name:<13} {what}" for name, (what, _) in COMMANDS.items()),
            file=sys.stderr,
        )
        raise SystemExit(0 if argv[:1] in (["-h"], ["--help"]) else 2)
    if argv[0] == "demo":
        from emulator.demo import main as demo

        raise SystemExit(demo(argv[1:]))
    if argv[0] == "point-number":
        from quorum.__main__ import main as point

        raise SystemExit(point(argv))
    if argv[0] in ("keygen", "decrypt"):
        raise SystemExit(
            sealing.keygen_main(argv[1:]) if argv[0] == "keygen" else sealing.decrypt_main(argv[1:], _fetch_sealed)
        )
    command = COMMANDS[argv[0]][1]
    assert command is not None  # only demo, point-number, keygen and decrypt have none, all run above
    command(argv[1:])


if __name__ == "__main__":
    main()
