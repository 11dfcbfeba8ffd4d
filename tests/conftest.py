"""Fixtures only: a configured app whose SignalWire REST API is faked at the HTTP level (helpers: support.py)."""

import re
import shutil
import uuid

import pytest
import responses

from app import create_app, shutdown
from support import (
    CALL_RECORDINGS_LIST,
    CONFERENCE_RECORDINGS_LIST,
    LAML_MEDIA,
    LAML_RECORDINGS,
    MEDIA_BASE,
    RECORDING_DELETE,
    RECORDING_RESOURCE,
    RECORDING_UPDATE,
    RECORDINGS_ROOT,
    SignedCallbacks,
    start_redis_server,
    make_config,
    recordings_page,
    wav_bytes,
)
from s3_server import start_s3_server

# Whole files that start processes, servers, a browser or real Redis, or analyse seconds of audio: all `slow`.
SLOW_SUITES = {
    "test_audio_quality.py",
    "test_browser.py",
    "test_bucket.py",
    "test_bucket_archive.py",
    "test_churn.py",
    "test_compliance.py",
    "test_container.py",
    "test_emulator.py",
    "test_end_to_end.py",
    "test_fault_drill.py",
    "test_fault_table.py",
    "test_fuzz_routes.py",
    "test_gunicorn.py",
    "test_hardening.py",
    "test_openapi.py",
    "test_redis_index.py",
    "test_redis_store.py",
    "test_retention_end_to_end.py",
    "test_scale_out.py",
    "test_sealing.py",
    "test_secure_pause_e2e.py",
    "test_slow_clients.py",
    "test_talk_end_to_end.py",
}


def pytest_configure(config):
    """Declare the `slow` marker: `make test-fast` leaves those tests out."""
    config.addinivalue_line("markers", "slow: starts processes, servers or real Redis, or runs for seconds")


def pytest_collection_modifyitems(items):
    """Mark every test of a slow suite `slow`."""
    for item in items:
        if item.path.name in SLOW_SUITES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def _remove_test_archives():
    """Delete every archive the session's apps wrote."""
    yield
    shutil.rmtree(RECORDINGS_ROOT, ignore_errors=True)


@pytest.fixture
def signalwire():
    """SignalWire's REST API at the HTTP level: the SDK really builds and sends its requests."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as fake:
        fake.add(responses.POST, RECORDING_UPDATE, json={"sid": "r", "status": "paused"})
        fake.add(
            responses.GET,
            re.compile(re.escape(MEDIA_BASE) + r"[^/]+\.wav"),
            body=wav_bytes(),
            content_type="audio/x-wav",
        )
        fake.add(responses.GET, re.compile(re.escape(MEDIA_BASE) + r"[^/]+\.mp3"), status=404)
        # Before archiving, Quorum asks SignalWire for the conference's recordings: by default it lists none
        # and knows of no other, so what the callbacks reported is what is archived.
        fake.add(responses.GET, CONFERENCE_RECORDINGS_LIST, json=recordings_page([]))
        fake.add(responses.GET, CALL_RECORDINGS_LIST, json=recordings_page([]))
        fake.add(
            responses.GET, RECORDING_RESOURCE, status=404, json={"code": 20404, "message": "Not Found", "status": 404}
        )
        fake.add(responses.GET, LAML_MEDIA, body=wav_bytes(), content_type="audio/x-wav")
        fake.add(responses.GET, re.compile(re.escape(LAML_RECORDINGS) + r"[^/.]+\.mp3"), status=404)
        yield fake


@pytest.fixture
def deletions(signalwire):
    """DELETE /Recordings/{R} answers 204; the list holds the sids deleted, in order."""
    deleted = []

    def delete(request):
        deleted.append(RECORDING_DELETE.fullmatch(request.url).group(1))
        return 204, {}, ""

    signalwire.add_callback(responses.DELETE, RECORDING_DELETE, callback=delete)
    return deleted


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A real redis-server on a loopback port for the whole session, stopped at the end."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: run `make test` (it installs it) or apt-get install redis-server")
    try:
        server, url = start_redis_server(tmp_path_factory.mktemp("redis"))
    except RuntimeError as problem:
        pytest.fail(str(problem))
    yield url
    server.terminate()
    server.wait(10)


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on a loopback port for the whole session, stopped at the end."""
    server = start_s3_server()
    yield server
    server.stop()


@pytest.fixture
def bucket_name(s3_server):
    """A fresh, empty bucket on the session's S3 server."""
    return s3_server.create_bucket()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.slow)])
def config(request):
    """The default test configuration, once with each store."""
    if request.param == "memory":
        return make_config()
    return make_config(redis_url=request.getfixturevalue("redis_url"), redis_namespace=f"t{uuid.uuid4().hex[:8]}")


@pytest.fixture
def app(config, signalwire):
    """The app, its background threads stopped afterwards."""
    application = create_app(config)
    yield application
    shutdown(application)


@pytest.fixture
def client(app):
    """Flask's test client."""
    return app.test_client()


@pytest.fixture
def post_signed(app, client):
    """POST a form to a /voice path, signed for its public URL."""
    return SignedCallbacks(app, client).post
