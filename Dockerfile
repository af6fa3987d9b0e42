# syntax=docker/dockerfile:1.7
# One image for every Tokenpulse service (build context: the repository root).
#
#   docker build -t tokenpulse:local .
#   docker run --rm tokenpulse:local run scoring        # distributed mode, one service
#   docker run --rm -p 8000:8000 tokenpulse:local up --host 0.0.0.0   # embedded mode
#
# The builder installs the locked environment (uv.lock, no dev tools) into
# /app/.venv; the runtime stage copies only that venv and the bundled history.
# Both stages use the same base image, so the venv's interpreter path and ABI
# match. Deployment guide: deploy/README.md.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ARG UV_VERSION=0.13.9
RUN pip install --no-cache-dir --disable-pip-version-check "uv==${UV_VERSION}"

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv

WORKDIR /src

# 1. Third-party dependencies only: this layer is rebuilt when uv.lock or a
#    pyproject.toml changes, not on every source edit.
COPY pyproject.toml uv.lock ./
COPY shared/pyproject.toml shared/
COPY services/ingest/pyproject.toml services/ingest/
COPY services/scoring/pyproject.toml services/scoring/
COPY services/alerts/pyproject.toml services/alerts/
COPY services/gateway/pyproject.toml services/gateway/
COPY clients/python/pyproject.toml clients/python/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --all-packages --no-dev --no-install-workspace

# 2. The workspace packages themselves, installed as regular (non-editable)
#    wheels so the runtime image needs no source tree.
COPY README.md ./
COPY tokenpulse/ tokenpulse/
COPY shared/ shared/
COPY services/ services/
COPY clients/ clients/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --all-packages --no-dev --no-editable \
    && /app/.venv/bin/tokenpulse --help >/dev/null

# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="tokenpulse" \
      org.opencontainers.image.description="Tokenpulse: open crypto market intelligence (ingest, scoring, alerts, gateway)"

# LightGBM's wheel links the system OpenMP runtime (libgomp), which the slim image lacks.
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/*

# A fixed numeric uid/gid so Kubernetes can check runAsNonRoot and volumes can
# be chowned predictably.
RUN groupadd --system --gid 10001 tokenpulse \
    && useradd --system --uid 10001 --gid tokenpulse --home-dir /var/lib/tokenpulse \
       --no-create-home --shell /usr/sbin/nologin tokenpulse \
    && install -d -o tokenpulse -g tokenpulse -m 0750 /var/lib/tokenpulse

COPY --from=builder /app/.venv /app/.venv
COPY data/ /app/data/

# Container healthcheck: a tokenpulse process runs and its HTTP /healthz answers (the gateway
# and `up` on TOKENPULSE_PORT, ingest, scoring and alerts on TOKENPULSE_METRICS_PORT).
# Standard library only, so the image needs neither curl nor procps.
COPY --chmod=0755 <<'EOF' /usr/local/bin/tokenpulse-healthcheck
#!/usr/local/bin/python3
"""Exit 0 if the tokenpulse process in this container is healthy."""
import os
import sys
import urllib.request


def tokenpulse_processes():
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
            with open(f"/proc/{pid}/stat") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if any(os.path.basename(a) == "tokenpulse" for a in argv[:2]) and state not in ("Z", "X"):
            yield argv


procs = list(tokenpulse_processes())
if not procs:
    sys.exit("no running tokenpulse process")
if any(cmd in argv for argv in procs for cmd in ("gateway", "up")):
    port = os.environ.get("TOKENPULSE_PORT", "8000")
else:  # ingest, scoring, alerts: their operations endpoint, when on
    port = os.environ.get("TOKENPULSE_METRICS_PORT", "0")
    if port in ("", "0"):
        sys.exit(0)
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as resp:
        sys.exit(0 if resp.status == 200 else f"/healthz answered {resp.status}")
except Exception as exc:
    sys.exit(f"/healthz unreachable: {exc}")
EOF

# (DL3064 flags the word TOKEN in TOKENPULSE_*; none of these is a secret.)
# hadolint ignore=DL3064
ENV PATH="/app/.venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TOKENPULSE_BUNDLE_DIR=/app/data \
    TOKENPULSE_HOST=0.0.0.0 \
    TOKENPULSE_PORT=8000 \
    TOKENPULSE_METRICS_PORT=9464

# Writable state (embedded ClickHouse of `up`, or of a gateway without
# TOKENPULSE_CLICKHOUSE_URL) lives under ./.tokenpulse: mount a volume here.
WORKDIR /var/lib/tokenpulse
USER 10001:10001
EXPOSE 8000 9464

HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["tokenpulse-healthcheck"]

ENTRYPOINT ["tokenpulse"]
CMD ["--help"]
