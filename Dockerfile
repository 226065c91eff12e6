# minifaktory: a Faktory-compatible job server on SQLite.
#
#   docker build -t minifaktory .
#   docker run -d -p 7419:7419 -p 7420:7420 -v minifaktory-data:/var/lib/minifaktory \
#       -e FAKTORY_PASSWORD=change-me minifaktory
#
# The database lives in the volume /var/lib/minifaktory whatever FAKTORY_ENV says (the
# storage dir is given with -d, so a development server does not write to ~/.faktory).
# /etc/minifaktory is the config dir: conf.d/*.toml, and private.key.pem + public.cert.pem
# to serve TLS. See docs/operations.md.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FAKTORY_ENV=production
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl \
    && rm -rf /wheels \
    && groupadd --system --gid 10001 minifaktory \
    && useradd --system --uid 10001 --gid minifaktory --no-create-home \
        --home-dir /var/lib/minifaktory --shell /usr/sbin/nologin minifaktory \
    && mkdir -p /var/lib/minifaktory /etc/minifaktory/conf.d \
    && chown minifaktory:minifaktory /var/lib/minifaktory
VOLUME ["/var/lib/minifaktory"]
EXPOSE 7419 7420
USER minifaktory
WORKDIR /var/lib/minifaktory
HEALTHCHECK --interval=30s --timeout=10s --start-period=10s --retries=3 \
    CMD ["minifaktory", "health"]
CMD ["minifaktory", "-b", "0.0.0.0:7419", "-w", "0.0.0.0:7420", "-d", "/var/lib/minifaktory", "-c", "/etc/minifaktory"]
