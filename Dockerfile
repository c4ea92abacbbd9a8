# Mailroom: both listeners in one process, as a non-root user.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MAILROOM_DATA_DIR=/srv/mailroom/var \
    MAILROOM_SMTP_HOST=0.0.0.0 \
    MAILROOM_API_HOST=0.0.0.0

RUN useradd --system --create-home --home-dir /srv/mailroom --uid 10001 mailroom
WORKDIR /opt/mailroom
COPY pyproject.toml README.md constraints.txt ./
COPY app ./app
COPY capture ./capture
COPY policies ./policies
COPY migrations ./migrations
RUN pip install --no-cache-dir -c constraints.txt . && mkdir -p /srv/mailroom/var && chown -R mailroom /srv/mailroom

USER mailroom
WORKDIR /srv/mailroom
VOLUME ["/srv/mailroom/var"]
EXPOSE 2525 8000
HEALTHCHECK --interval=30s --timeout=5s CMD \
  python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"
ENTRYPOINT ["mailroom"]
CMD ["serve"]
