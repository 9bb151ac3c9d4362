# The Sonae appliance image: `sonae serve` by default; run a second
# container from the same image with `sonae worker` (compose.yaml does both).
# A production image: no cloudsim, no demo or test packages, every Python
# package from requirements.lock with its hash.
#
#   docker build -t sonae .
#   behind a TLS-intercepting proxy, hand the build the ward's CA (PEM):
#   docker build --secret id=ward_ca,src=/path/to/ward-ca.pem -t sonae .
#
# Debian 12 slim, pinned by digest (docker-library/repo-info,
# repos/debian/remote/bookworm-20260918-slim.md); README "The image" says
# how to move the pin to a newer build. A ward that pulls through its own
# registry mirror names the same image there: --build-arg DEBIAN_BASE=….
ARG DEBIAN_BASE=debian:bookworm-20260918-slim@sha256:3783cc01769c7b2b1b83a5c5ad96c815348e28ed7da68e2e3687004faa906251
FROM ${DEBIAN_BASE} AS runtime

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# pango for WeasyPrint; IPAex and IPAmj明朝 for certificates (IPAmj covers
# 行政事務標準文字 and their IVS); poppler + zbar to read QR codes back;
# the CUPS client to hand certificates to the ward's print server.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3 ca-certificates libpango-1.0-0 libpangoft2-1.0-0 \
        fonts-ipaexfont fonts-ipamj-mincho poppler-utils zbar-tools cups-client cups-ipp-utils \
    && apt-get clean && rm -rf /var/lib/apt/lists/*

# The build stage: the venv, filled from the lock, then Sonae as a wheel
# without resolving anything. Only the venv leaves this stage.
FROM runtime AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv \
    && apt-get clean && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY requirements.lock ./
# The ward's CA, when given as a build secret, is trusted by pip for this
# step only: it is never written into a layer.
RUN --mount=type=secret,id=ward_ca \
    if [ -s /run/secrets/ward_ca ]; then export PIP_CERT=/run/secrets/ward_ca; fi \
    && python3 -m venv /opt/sonae/venv \
    && /opt/sonae/venv/bin/pip install --no-cache-dir --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY fallback ./fallback
COPY sync ./sync
COPY printing ./printing
RUN /opt/sonae/venv/bin/pip install --no-cache-dir --no-deps --no-build-isolation . \
    && /opt/sonae/venv/bin/sonae --help >/dev/null \
    && ! /opt/sonae/venv/bin/python3 -c "import cloudsim" 2>/dev/null

FROM runtime
ARG SONAE_UID=10001
ENV SONAE_HOME=/var/lib/sonae \
    SONAE_CONFIG=/etc/sonae/sonae.toml \
    SONAE_WEB_RUNBOOKS_DIR=/opt/sonae/runbooks \
    PATH=/opt/sonae/venv/bin:$PATH

# One fixed uid, so that the host can own the mounted keys (mode 0600)
# and the state volume for it: `docker build --build-arg SONAE_UID=…`.
RUN groupadd --system --gid "$SONAE_UID" sonae \
    && useradd --system --uid "$SONAE_UID" --gid sonae --home-dir /var/lib/sonae --shell /usr/sbin/nologin sonae \
    && mkdir -p /var/lib/sonae /etc/sonae \
    && chown sonae:sonae /var/lib/sonae && chmod 0700 /var/lib/sonae

COPY --from=build /opt/sonae/venv /opt/sonae/venv
COPY runbooks /opt/sonae/runbooks

USER sonae
VOLUME ["/var/lib/sonae"]
# Keys and sonae.toml are mounted read-only at /etc/sonae (never inside the
# volume). `sonae serve` listens on web.host and web.port from sonae.toml:
# in a container with its own network set web.host = "0.0.0.0" and publish
# web.port; compose.yaml uses the host's network, so the file alone decides.
EXPOSE 8080
CMD ["sonae", "serve"]
