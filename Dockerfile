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
#     -e XPSYNC_TARGET__CREDENTIALS__SECRET_ID=s3-cross-partition-sync-credentials \
#     -e XPSYNC_QUEUE__URL=https://sqs.cn-northwest-1.amazonaws.com.cn/123456789012/xpsync-events \
#     xpsync
#
# The binary uses rustls (no OpenSSL): at run time it needs glibc, libgcc_s and the
# CA certificates, all of which the distroless "cc" image carries, and nothing else.

# ---------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------
FROM rust:1-bookworm AS builder

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
FROM gcr.io/distroless/cc-debian12:nonroot

LABEL org.opencontainers.image.title="xpsync" \
      org.opencontainers.image.description="Keeps an S3 bucket in one AWS partition in sync with a bucket in another" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=builder /usr/local/bin/xpsync /usr/local/bin/xpsync

# JSON logs for CloudWatch; any other setting is given the same way at run time.
ENV XPSYNC_LOG__FORMAT=json

# distroless defines nonroot (uid and gid 65532) in the image's own /etc/passwd, which
# is where the container runtime resolves the name; nothing on the host needs to.
# hadolint ignore=DL3066
USER nonroot

# /healthz, /readyz and /metrics (server.listen).
EXPOSE 9464

# Exec form: the image has no shell, and no curl; `xpsync healthcheck` GETs /healthz
# on the port of server.listen. ECS ignores this and uses the task definition's
# healthCheck, which runs the same command.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/xpsync", "healthcheck"]

ENTRYPOINT ["/usr/local/bin/xpsync"]
CMD ["run"]
