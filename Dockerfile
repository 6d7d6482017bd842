# syntax=docker/dockerfile:1
# router container image. Build with `make image` (podman, see deploy/README.md) or plain
# `docker build -t router .`. Runs as uid 10001 under tini; state lives in /var/lib/router.
ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: a virtualenv at /opt/venv with the router and its dependencies -------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
RUN python3 -m venv /opt/venv
WORKDIR /src
# pip's index and CA come as build secrets (podman/docker build --secret id=pipconf / id=cacert); they
# are used only when given, so a plain `docker build` uses pip's defaults. Never pass them as ARGs.
# Dependencies first (their own layer, re-used while pyproject.toml is unchanged), then the package.
COPY pyproject.toml ./
RUN --mount=type=secret,id=pipconf --mount=type=secret,id=cacert \
    set -eu; \
    if [ -s /run/secrets/pipconf ]; then export PIP_CONFIG_FILE=/run/secrets/pipconf; fi; \
    if [ -s /run/secrets/cacert ]; then export PIP_CERT=/run/secrets/cacert; fi; \
    /opt/venv/bin/python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > /tmp/requirements.txt; \
    /opt/venv/bin/pip install -r /tmp/requirements.txt
COPY README.md ./
COPY router ./router
RUN --mount=type=secret,id=pipconf --mount=type=secret,id=cacert \
    set -eu; \
    if [ -s /run/secrets/pipconf ]; then export PIP_CONFIG_FILE=/run/secrets/pipconf; fi; \
    if [ -s /run/secrets/cacert ]; then export PIP_CERT=/run/secrets/cacert; fi; \
    /opt/venv/bin/pip install --no-deps . \
    && /opt/venv/bin/router --version

# --- final image ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
# tini as PID 1: forwards SIGTERM to the router and reaps the function worker processes it spawns.
RUN set -eu; \
    export DEBIAN_FRONTEND=noninteractive; \
    apt-get update -qq; \
    apt-get install -y -qq --no-install-recommends tini >/dev/null; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*; \
    tini --version
RUN useradd --uid 10001 --user-group --no-log-init --no-create-home --home-dir /var/lib/router \
        --shell /usr/sbin/nologin router \
    && install -d -o router -g router -m 0750 /var/lib/router \
    && install -d -m 0755 /etc/router /app
COPY --from=builder /opt/venv /opt/venv
COPY examples /app/examples
COPY config/example.yaml /app/config/example.yaml
COPY deploy/config.yaml /etc/router/config.yaml
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ROUTER_CONFIG=/etc/router/config.yaml \
    ROUTER_HOST=0.0.0.0 \
    ROUTER_PORT=8080
WORKDIR /app
USER router:router
# Fails the build when the bundled config no longer validates.
RUN router validate /etc/router/config.yaml
EXPOSE 8080
# ROUTER_PORT must match server.port when that is changed (deploy/config.yaml reads it).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/livez' % os.environ.get('ROUTER_PORT', '8080'), timeout=2)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["tini", "--", "router"]
CMD ["run", "--config", "/etc/router/config.yaml"]
