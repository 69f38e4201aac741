# An S3 endpoint for machines without a registry (compose's MINIO_IMAGE defaults to
# minio/minio). moto's S3 server on :9000, with an `mc ready local` stand-in so the compose
# health check is the same for both. In-memory: use MinIO wherever a registry is reachable.
ARG PLATFORM_IMAGE=dockyard/platform:latest
FROM ${PLATFORM_IMAGE}
USER root
COPY wheels/ /tmp/wheels/
RUN /opt/dockyard/bin/pip install --quiet --no-cache-dir --no-index --find-links /tmp/wheels "moto[server]" \
    && rm -rf /tmp/wheels \
    && printf '#!/bin/sh\nexec python3 -c "import socket; socket.create_connection((\\"127.0.0.1\\", 9000), 2)"\n' > /usr/local/bin/mc \
    && chmod +x /usr/local/bin/mc
USER 10001
EXPOSE 9000
# MinIO's arguments (`server /data`) are accepted and ignored.
ENTRYPOINT ["/bin/sh", "-c", "exec /opt/dockyard/bin/moto_server -H 0.0.0.0 -p 9000", "--"]
