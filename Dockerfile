# The Sentinel worker image (for docker-compose.yml). The broker is the official
# apache/kafka image; this image only runs Python.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY streams ./streams
COPY detectors ./detectors
COPY alerting ./alerting
COPY config ./config
RUN pip install --no-cache-dir -c constraints.txt '.[service]'
ENV SENTINEL_WORKER__DATA_DIR=/data/worker \
    SENTINEL_WORKER__WEB_HOST=0.0.0.0
VOLUME ["/data"]
ENTRYPOINT ["sentinel"]
CMD ["run"]
