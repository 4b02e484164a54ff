# syntax=docker/dockerfile:1
# quotapilot container image.
#
#   docker build -t quotapilot .
#   docker run -d --name quotapilot \
#     -v /etc/quotapilot:/etc/quotapilot:ro -v quotapilot-state:/var/lib/quotapilot \
#     -e QUOTAPILOT_HTTP__LISTEN=0.0.0.0:9187 -p 127.0.0.1:9187:9187 quotapilot
#
# Config: /etc/quotapilot/quotapilot.toml (mount it), overridden by QUOTAPILOT_* variables; with
# variables only, run `quotapilot run` without --config (`docker run … quotapilot run`).
# quotapilot listens on 127.0.0.1 by default, which is unreachable from outside a container:
# set QUOTAPILOT_HTTP__LISTEN=0.0.0.0:9187 (or [http] listen) explicitly to publish the port.
# Secrets: mount them as files (e.g. Docker secrets in /run/secrets) and point *_file at them.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ------------------------------------------------------------------------------------ build
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Only what the wheel is built from (see .dockerignore); the three packages are mapped to
# quotapilot.* by pyproject.toml's package-dir.
COPY pyproject.toml README.md ./
COPY daemon ./daemon
COPY forecasting ./forecasting
COPY alerts ./alerts
RUN python -m venv /opt/quotapilot \
 && /opt/quotapilot/bin/pip install --no-compile /src

# ---------------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="quotapilot" \
      org.opencontainers.image.description="Forecasts VAST Data quotas and grows them before they fill" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 quotapilot \
 && useradd --system --uid 10001 --gid quotapilot --no-create-home \
      --home-dir /var/lib/quotapilot --shell /usr/sbin/nologin quotapilot \
 && install -d -o quotapilot -g quotapilot -m 0700 /var/lib/quotapilot \
 && install -d -m 0755 /etc/quotapilot
COPY --from=build /opt/quotapilot /opt/quotapilot
ENV PATH=/opt/quotapilot/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    QUOTAPILOT_LOG__FORMAT=json \
    CREDENTIALS_DIRECTORY=/run/secrets
# The SQLite state (observations, audit trail, alert outbox) must outlive the container.
VOLUME ["/var/lib/quotapilot"]
EXPOSE 9187
USER 10001:10001
# 200 while every cluster was polled recently, 503 (exit 1) otherwise. Uses the default port:
# if you change [http] listen's port, override HEALTHCHECK too.
HEALTHCHECK --interval=30s --timeout=5s --start-period=3m --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9187/healthz', timeout=4).status == 200 else 1)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["quotapilot"]
CMD ["run", "--config", "/etc/quotapilot/quotapilot.toml"]
