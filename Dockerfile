# syntax=docker/dockerfile:1
# The sluice image: the gateway binary, libonnxruntime.so for the embedded engine, the
# bundled demo model models/sluice-tiny, config/, workflows/ and the demo sales database.
#
#   docker build -t sluice:0.1.0 .
#   docker run --rm -p 8080:8080 sluice:0.1.0      # serves config/sluice.toml on :8080
#
# Three stages: `ort` fetches libonnxruntime.so with the Makefile's own `make ort` (the
# pinned onnxruntime wheel from PyPI, ORT_VERSION in the Makefile), `builder` compiles
# the release binary with the toolchain the repository is developed with, `runtime` is
# Debian slim with ca-certificates, a non-root user and those files only.

# --- libonnxruntime.so, exactly as `make ort` puts it in .ort/ ------------------------
FROM debian:12.11-slim AS ort
# Debian package versions are not pinned: the release (12.11) is, and its archive only
# carries security fixes.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates make python3 python3-pip \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Makefile ./
RUN make ort && test -s .ort/libonnxruntime.so

# --- the release binary ----------------------------------------------------------------
# The version of the local toolchain (`rustc --version`); Cargo.toml's rust-version is
# the floor.
FROM rust:1.95.0-slim-bookworm AS builder
WORKDIR /src
# benches/ is listed because Cargo.toml declares [[bench]] targets, which cargo resolves
# for every build.
COPY Cargo.toml Cargo.lock ./
COPY benches ./benches
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin sluice \
 && cp target/release/sluice /usr/local/bin/sluice

# --- runtime -------------------------------------------------------------------------
FROM debian:12.11-slim AS runtime
LABEL org.opencontainers.image.title="sluice" \
      org.opencontainers.image.description="Self-hosted, OpenAI-compatible LLM inference gateway" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"
# ca-certificates for HTTPS upstreams; libstdc++6 (already in the base) is what
# libonnxruntime.so links besides glibc. See the note on DL3008 above.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libstdc++6 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 sluice \
 && useradd --system --uid 10001 --gid sluice --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin sluice \
 && mkdir -p /app/data \
 && chown sluice:sluice /app/data
# Relative paths in the config files (models/, workflows/, examples/, data/, .ort/)
# start at the working directory, as they do at the repository root.
WORKDIR /app
COPY --from=builder /usr/local/bin/sluice /usr/local/bin/sluice
# sluice looks for .ort/libonnxruntime.so under the working directory; ORT_DYLIB_PATH
# keeps it found when the working directory is changed (e.g. a pod's workingDir).
COPY --from=ort /src/.ort/libonnxruntime.so /app/.ort/libonnxruntime.so
COPY models/sluice-tiny /app/models/sluice-tiny
COPY config /app/config
COPY workflows /app/workflows
COPY examples/sales.db /app/examples/sales.db
# data/ (the workflow run store) is the only place sluice writes: mount a volume there
# to keep runs across restarts.
VOLUME ["/app/data"]
ENV SLUICE__SERVER__LISTEN=0.0.0.0:8080 \
    ORT_DYLIB_PATH=/app/.ort/libonnxruntime.so
USER 10001:10001
EXPOSE 8080
# `sluice healthcheck` GETs /healthz on loopback at SLUICE__SERVER__LISTEN's port and
# exits 0 or 1 (no curl in the image); it gives up after 3 s itself, before Docker's 5 s.
# The start period covers loading the model's tiers.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["sluice", "healthcheck"]
ENTRYPOINT ["sluice"]
CMD ["serve", "--config", "config/sluice.toml"]
