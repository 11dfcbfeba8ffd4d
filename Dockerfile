# Quorum's production image: gunicorn with serving.py's settings, as `quorum run`, a non-root user, a health check.
# compose.yaml puts nginx (deploy/nginx.conf) in front and Redis beside it. tests/test_container.py runs these
# steps without a container engine: the same files, the same install command, the same user rights and check.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml requirements.txt constraints.txt README.md LICENSE ./
COPY app.py config.py frozen.py recording_state.py serving.py ./
COPY quorum ./quorum
COPY console ./console
COPY conversations ./conversations
COPY emulator ./emulator
RUN python -m venv /opt/quorum && /opt/quorum/bin/pip install --no-cache-dir -c constraints.txt .

FROM python:3.11-slim-bookworm
# The archive's mount point belongs to quorum: a named volume mounted there takes its owner from it.
RUN useradd --system --uid 10001 --create-home --home-dir /var/lib/quorum quorum \
    && install -d -o quorum -g quorum /var/lib/quorum/recordings
COPY --from=build /opt/quorum /opt/quorum
ENV PATH=/opt/quorum/bin:$PATH PYTHONUNBUFFERED=1 PORT=5000 RECORDINGS_DIR=/var/lib/quorum/recordings
USER quorum
WORKDIR /var/lib/quorum
EXPOSE 5000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['PORT'], timeout=4)"]
CMD ["quorum", "run"]
