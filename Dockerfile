# The xpsync worker image, for linux/amd64 and linux/arm64.
#
#   docker build -t xpsync .
#   docker run --rm xpsync --version
#   docker buildx build --platform linux/amd64,linux/arm64 -t REPOSITORY:TAG --push .
#
# Needs BuildKit (the default builder of Docker Engine 23 and later, and docker
# buildx): the build stage runs on the builder's own platform and cross-compiles for
# the target one (TARGETARCH), so an arm64 image built on an x86-64 host is compiled
# natively, not emulated; RUN --mount caches the crates downloaded. No
# `# syntax=` line: the Dockerfile frontend built into BuildKit reads this file, so
# nothing is pulled from Docker Hub for it.
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
#   CARGO_REGISTRY_MIRROR
#                    a crates.io mirror, as a Cargo registry URL, e.g.
#                    sparse+https://mirrors.ustc.edu.cn/crates.io-index/ or
#                    sparse+https://rsproxy.cn/index/ (crates.io and its CDN are slow
#                    from mainland China). Written into $CARGO_HOME/config.toml as a
#                    source replacement; Cargo.lock's checksums still hold every
#                    crate to the bytes crates.io published. Empty: crates.io.
#   DEBIAN_MIRROR    a Debian mirror host for the cross linker's packages, e.g.
#                    mirrors.tuna.tsinghua.edu.cn (replaces deb.debian.org). Empty:
#                    deb.debian.org. Only read when cross-compiling.
#   RUSTUP_DIST_SERVER
#                    a rustup mirror, e.g. https://mirrors.tuna.tsinghua.edu.cn/rustup,
#                    for the target's standard library. Empty: static.rust-lang.org.
#                    Only read when cross-compiling.
#   VERSION, REVISION, SOURCE
#                    the OCI labels org.opencontainers.image.version (the release,
#                    as in Cargo.toml), .revision (the git commit) and .source (the
#                    repository's URL).

ARG REGISTRY_MIRROR=""
ARG RUST_DIGEST=""
ARG RUNTIME_DIGEST=""

# ---------------------------------------------------------------------------
# Build, on the builder's platform, for the target's
# ---------------------------------------------------------------------------
FROM --platform=$BUILDPLATFORM ${REGISTRY_MIRROR:-docker.io}/library/rust:1-bookworm${RUST_DIGEST} AS builder

ARG BUILDARCH
ARG TARGETARCH
ARG CARGO_REGISTRY_MIRROR=""
ARG DEBIAN_MIRROR=""
ARG RUSTUP_DIST_SERVER=""

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /build

# The Rust target, and, when it is not the builder's own architecture, its C
# toolchain: the linker, and the compiler of the C parts of dependencies (ring,
# aws-lc-sys), named through Cargo's and the cc crate's variables. Written to
# /build/target.env for the RUN steps below.
# hadolint ignore=DL3008
RUN case "$TARGETARCH" in \
      amd64) rust_target=x86_64-unknown-linux-gnu gnu=x86_64-linux-gnu deb=gcc-x86-64-linux-gnu libc=libc6-dev-amd64-cross ;; \
      arm64) rust_target=aarch64-unknown-linux-gnu gnu=aarch64-linux-gnu deb=gcc-aarch64-linux-gnu libc=libc6-dev-arm64-cross ;; \
      *) echo "unsupported TARGETARCH '$TARGETARCH' (amd64 or arm64)" >&2; exit 1 ;; \
    esac \
    && echo "export RUST_TARGET=$rust_target" > /build/target.env \
    && if [ "$TARGETARCH" != "$BUILDARCH" ]; then \
         if [ -n "$DEBIAN_MIRROR" ]; then \
           sed -i "s|deb.debian.org|$DEBIAN_MIRROR|g" /etc/apt/sources.list.d/debian.sources; \
         fi \
         && apt-get update \
         && apt-get install -y --no-install-recommends "$deb" "$libc" \
         && rm -rf /var/lib/apt/lists/* \
         && if [ -n "$RUSTUP_DIST_SERVER" ]; then export RUSTUP_DIST_SERVER; fi \
         && rustup target add "$rust_target" \
         && target_var="$(echo "$rust_target" | tr 'a-z-' 'A-Z_')" \
         && { echo "export CARGO_TARGET_${target_var}_LINKER=$gnu-gcc"; \
              echo "export CC_${rust_target//-/_}=$gnu-gcc"; \
              echo "export CXX_${rust_target//-/_}=$gnu-g++"; \
              echo "export AR_${rust_target//-/_}=$gnu-ar"; } >> /build/target.env; \
       fi \
    && if [ -n "$CARGO_REGISTRY_MIRROR" ]; then \
         printf '[source.crates-io]\nreplace-with = "mirror"\n\n[source.mirror]\nregistry = "%s"\n' \
           "$CARGO_REGISTRY_MIRROR" >> "$CARGO_HOME/config.toml"; \
       fi \
    && cat /build/target.env

# Dependencies first, in a layer of their own, built from the manifest with the
# package's own version set to 0.0.0 (the same idea as cargo-chef's recipe): a
# release that only bumps the version, or changes only src/, keeps this layer and
# does not rebuild a single dependency. The placeholder crate has the same targets
# (a library and the xpsync binary) as the real one. The registry cache mount keeps
# the downloaded crates across builds on the same builder.
COPY Cargo.toml Cargo.lock ./
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    source /build/target.env \
    && sed -i '0,/^version = ".*"/s//version = "0.0.0"/' Cargo.toml \
    && sed -i '/^name = "xpsync"$/{n;s/^version = ".*"/version = "0.0.0"/}' Cargo.lock \
    && mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked --target "$RUST_TARGET" \
    && rm -rf src Cargo.toml Cargo.lock \
       target/"$RUST_TARGET"/release/xpsync target/"$RUST_TARGET"/release/deps/xpsync-* \
       target/"$RUST_TARGET"/release/deps/libxpsync-* target/"$RUST_TARGET"/release/.fingerprint/xpsync-*

# Then xpsync itself. Run --version where the binary can run (the builder's own
# architecture); check a cross-compiled one's ELF machine field (e_machine: 0x3e
# x86-64, 0xb7 aarch64).
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY config ./config
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    source /build/target.env \
    && cargo build --release --locked --target "$RUST_TARGET" \
    && install -D -m 0755 target/"$RUST_TARGET"/release/xpsync /out/xpsync \
    && machine="$(od -An -tx1 -j18 -N2 /out/xpsync | tr -d ' ')" \
    && case "$TARGETARCH:$machine" in amd64:3e00|arm64:b700) ;; \
         *) echo "/out/xpsync is for ELF machine $machine, not $TARGETARCH" >&2; exit 1 ;; esac \
    && if [ "$TARGETARCH" = "$BUILDARCH" ]; then /out/xpsync --version; fi

# ---------------------------------------------------------------------------
# Run: no shell, no package manager, a non-root user (uid 65532), of the target's
# platform
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

COPY --from=builder /out/xpsync /usr/local/bin/xpsync

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
