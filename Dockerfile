# syntax=docker/dockerfile:1
#
# Production image of the hub (Faust worker on Kafka + Redis).
#
#   docker build -t cmdm-hub .
#   docker run --rm -p 6066:6066 \
#     -e HUB_KAFKA__BOOTSTRAP_SERVERS=kafka:9092 \
#     -e HUB_REDIS__URL=redis://redis:6379/0 -e HUB_PII_KEY \
#     -e HUB_CONFIG_FILE=/etc/hub/hub.yaml -v "$PWD/deploy/hub.yaml:/etc/hub/hub.yaml:ro" \
#     cmdm-hub            # = `hub run`; HUB_PII_KEY (required, kept): `hub new-key` makes one
#
# Two stages: some dependencies may build from source (no wheel for this
# platform), so the compiler lives only in the build stage and the runtime
# image gets a ready virtualenv.

# --------------------------------------------------------------------------
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY . .
RUN pip install --upgrade pip setuptools wheel \
 && pip install . \
 && hub --help >/dev/null

# --------------------------------------------------------------------------
FROM python:3.11-slim AS runtime

LABEL org.opencontainers.image.title="cmdm-hub" \
      org.opencontainers.image.description="Real-time customer master data hub (Faust worker on Kafka + Redis)"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HUB_WEB__HOST=0.0.0.0 \
    HUB_WEB__PORT=6066 \
    HUB_LOG_JSON=true

# Non-root user; its home is the working directory, where the Faust worker
# keeps its local table state (<app id>-data/).
RUN groupadd --system --gid 10001 hub \
 && useradd --system --uid 10001 --gid hub --create-home --home-dir /home/hub --shell /usr/sbin/nologin hub

COPY --from=build /opt/venv /opt/venv

USER hub:hub
WORKDIR /home/hub

# Worker HTTP port: /health, /metrics and the lookup API.
EXPOSE 6066

# /health on the worker's own web port (6066 unless HUB_WEB__PORT says otherwise).
# urlopen raises on connection errors and on non-2xx answers -> exit code 1.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('HUB_WEB__PORT', '6066'), timeout=4)"]

ENTRYPOINT ["hub"]
CMD ["run"]
