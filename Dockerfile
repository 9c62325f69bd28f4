# The xpsync worker image.
#
#   docker build -t xpsync .
#   docker run --rm xpsync --version
#
# Every setting comes from the environment as XPSYNC_<TABLE>__<KEY> (see
# config/xpsync.example.toml), so the task definition needs no file:
#
#   docker run --rm -p 9464:9464 \
#     -e XPSYNC_SOURCE__REGION=cn-northwest-1 -e XPSYNC_SOURCE__BUCKET=my-source-bucket \
#     -e XPSYNC_TARGET__REGION=us-west-2     -e XPSYNC_TARGET__BUCKET=my-target-bucket \
#     -e XPSYNC_TARGET__CREDENTIALS__SECRET_ID=xpsync/target-credentials \
#     -e XPSYNC_QUEUE__URL=https://sqs.cn-northwest-1.amazonaws.com.cn/123456789012/xpsync-events \
#     xpsync
#
# The binary uses rustls (no OpenSSL): at run time it needs glibc, libgcc_s and the
# CA certificates, all of which the distroless "cc" image carries, and nothing else.
#
# Build arguments (deploy/README.md, "Building the image", has the commands):
#
#   REGISTRY_MIRROR  a registry that mirrors both base images under their upstream
#                    paths (library/rust, distroless/cc-debian12), such as an ECR of
#                    the China regions: Docker Hub and gcr.io are slow or unreachable
#                    from mainland China. Empty: the upstream registries.
#   RUST_DIGEST,     the base images' digests, "@sha256:<64 hex digits>", to pin them:
#   RUNTIME_DIGEST   with a digest, the tag is only a label and the build gets exactly
#                    that image. Print the current ones with
#                    `docker buildx imagetools inspect rust:1-bookworm` and
#                    `docker buildx imagetools inspect gcr.io/distroless/cc-debian12:nonroot`
#                    (the "Digest:" line of the index). Empty: whatever the tag
#                    points at today.
#   VERSION, REVISION, SOURCE
#                    the OCI labels org.opencontainers.image.version (the release,
#                    as in Cargo.toml), .revision (the git commit) and .source (the
#                    repository's URL).

ARG REGISTRY_MIRROR=""
ARG RUST_DIGEST=""
ARG RUNTIME_DIGEST=""

# ---------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------
FROM ${REGISTRY_MIRROR:-docker.io}/library/rust:1-bookworm${RUST_DIGEST} AS builder

WORKDIR /build

# Dependencies first, in their own layer: it is rebuilt only when Cargo.toml or
# Cargo.lock change, not on every edit of the sources. The placeholder crate has the
# same targets (a library and the xpsync binary) as the real one.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src target/release/xpsync target/release/deps/xpsync-* \
       target/release/deps/libxpsync-* target/release/.fingerprint/xpsync-*

# Then xpsync itself.
COPY src ./src
COPY config ./config
RUN cargo build --release --locked \
    && install -m 0755 target/release/xpsync /usr/local/bin/xpsync \
    && /usr/local/bin/xpsync --version

# ---------------------------------------------------------------------------
# Run: no shell, no package manager, a non-root user (uid 65532)
# ---------------------------------------------------------------------------
FROM ${REGISTRY_MIRROR:-gcr.io}/distroless/cc-debian12:nonroot${RUNTIME_DIGEST}

ARG VERSION=""
ARG REVISION=""
ARG SOURCE=""

LABEL org.opencontainers.image.title="xpsync" \
      org.opencontainers.image.description="Keeps an S3 bucket in one AWS partition in sync with a bucket in another" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}"

COPY --from=builder /usr/local/bin/xpsync /usr/local/bin/xpsync

# JSON logs for CloudWatch; any other setting is given the same way at run time.
ENV XPSYNC_LOG__FORMAT=json

# The distroless "nonroot" user and group, by number: the runtime needs no name
# lookup, and Kubernetes' runAsNonRoot can verify a numeric user.
USER 65532:65532

# /healthz, /readyz and /metrics (server.listen).
EXPOSE 9464

# Exec form: the image has no shell, and no curl; `xpsync healthcheck` GETs /healthz
# on the port of server.listen. ECS ignores this and uses the task definition's
# healthCheck, which runs the same command.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/xpsync", "healthcheck"]

ENTRYPOINT ["/usr/local/bin/xpsync"]
CMD ["run"]
