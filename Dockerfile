# The Sonae appliance image: the counter app (`sonae serve`); run a second
# container from the same image with `sonae worker` for sync and probes.
FROM debian:12-slim

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SONAE_HOME=/var/lib/sonae \
    SONAE_CONFIG=/etc/sonae/sonae.toml \
    SONAE_WEB_RUNBOOKS_DIR=/opt/sonae/runbooks \
    PATH=/opt/sonae/venv/bin:$PATH

# pango for WeasyPrint; IPAex and IPAmj明朝 for certificates (IPAmj covers
# 行政事務標準文字 and their IVS); poppler + zbar to read QR codes back;
# the CUPS client to hand certificates to the ward's print server.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3 python3-venv libpango-1.0-0 libpangoft2-1.0-0 \
        fonts-ipaexfont fonts-ipamj-mincho poppler-utils zbar-tools cups-client cups-ipp-utils \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --system --home-dir /var/lib/sonae --shell /usr/sbin/nologin sonae \
    && mkdir -p /var/lib/sonae /etc/sonae /opt/sonae \
    && chown sonae:sonae /var/lib/sonae

WORKDIR /opt/sonae
COPY pyproject.toml README.md ./
COPY fallback ./fallback
COPY sync ./sync
COPY printing ./printing
COPY cloudsim ./cloudsim
COPY runbooks ./runbooks
RUN python3 -m venv /opt/sonae/venv \
    && /opt/sonae/venv/bin/pip install --no-cache-dir . \
    && /opt/sonae/venv/bin/sonae --help >/dev/null

USER sonae
VOLUME ["/var/lib/sonae"]
EXPOSE 8080
# Keys and sonae.toml are mounted read-only at /etc/sonae (never inside the volume).
CMD ["sonae", "serve", "--host", "0.0.0.0", "--port", "8080"]
