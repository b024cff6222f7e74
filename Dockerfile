# syntax=docker/dockerfile:1
# The snapshots CLI as an image: `docker run IMAGE import ...`, `docker run IMAGE sync ...`.
# The same image runs the Kubernetes operator (`snapshots-operator`, see charts/).
# docker-compose.yml runs `sync` from it; the Kubernetes CronJobs run `sync --once`.

ARG BASE=python:3.12-slim
FROM ${BASE} AS build
WORKDIR /src
# .dockerignore lets through only what the package needs.
COPY pyproject.toml README.md ./
COPY snapshots ./snapshots
COPY operator ./operator
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[operator]"

FROM ${BASE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --user-group --create-home --home-dir /home/snapshots \
        --shell /usr/sbin/nologin snapshots
USER 10001:10001
WORKDIR /home/snapshots

# /metrics, /healthz and /readyz of `snapshots sync` (--metrics-port, SNAPSHOTS_METRICS_PORT).
EXPOSE 9840
# Liveness of `sync`: /healthz answers 200 while its loop turns. Other commands (`import`,
# `sync --once`, metrics disabled with port 0) have no endpoint and count as healthy. The port
# comes from SNAPSHOTS_METRICS_PORT (default 9840): set the port through it, not --metrics-port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request as u; a = open('/proc/1/cmdline', 'rb').read().split(b'\\0'); p = os.environ.get('SNAPSHOTS_METRICS_PORT') or '9840'; sys.exit(0 if b'sync' not in a or b'--once' in a or p == '0' else u.urlopen('http://127.0.0.1:' + p + '/healthz', timeout=4).status != 200)"]

ENTRYPOINT ["snapshots"]
CMD ["--help"]
