# sendvault: one replica per container. Build: docker build -t sendvault .
# The build stage makes a virtualenv with sendvault and its postgres extra; the final stage is
# the slim Python image, that virtualenv and an unprivileged user, nothing else (no compiler,
# no pip cache, no source tree).
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m venv /opt/sendvault \
    && /opt/sendvault/bin/pip install ".[postgres]"

FROM python:3.11-slim-bookworm
# A fixed uid, so files mounted from the host (the database client key must be owned by the
# process reading it, mode 0600) can be given to it: chown 10001:10001.
RUN groupadd --system --gid 10001 sendvault \
    && useradd --system --uid 10001 --gid sendvault --home-dir /var/lib/sendvault \
       --shell /usr/sbin/nologin sendvault \
    && install -d -m 0700 -o sendvault -g sendvault /var/lib/sendvault
COPY --from=build /opt/sendvault /opt/sendvault
ENV PATH=/opt/sendvault/bin:$PATH \
    SENDVAULT_HOME=/var/lib/sendvault \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /var/lib/sendvault
# 8443: the token API (HTTPS); 8080: 308 to HTTPS; 9464: metrics (admin_host, keep it private).
EXPOSE 8443 8080 9464
# SIGTERM lets open requests finish (see docs/operations.md).
STOPSIGNAL SIGTERM
ENTRYPOINT ["sendvault"]
CMD ["serve"]
