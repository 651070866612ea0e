# syntax=docker/dockerfile:1
# pim-operator's container image: a static (musl) binary on an empty base image.
# No shell, no package manager, no libc; runs as UID/GID 65532 (nonroot).
#
#   docker build -t pim-operator:0.1.0 .
#   kind load docker-image pim-operator:0.1.0        # for the README's kind quickstart
#
# The default command is `pim-operator run` (config from PIM_CONFIG, else the defaults); the
# chart and the kustomize base pass `run --config /etc/pim-operator/config.yaml`.

ARG RUST_VERSION=1.89

FROM rust:${RUST_VERSION}-alpine AS builder
# musl-dev: the C runtime that ring (rustls' crypto) links against statically. Versions are
# not pinned: Alpine drops old package versions, and the Rust image tag pins the release.
# hadolint ignore=DL3018
RUN apk add --no-cache musl-dev ca-certificates
WORKDIR /build
# The whole crate (.dockerignore leaves out target/, .git/ and the install manifests): Cargo
# reads every target Cargo.toml names, benches and tests included, before it builds one.
COPY . .
# The registry and target caches make rebuilds incremental; the binary is copied out of
# the cache mount so the next stage can take it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/build/target \
    cargo build --release --locked --bin pim-operator \
 && install -D -m 0755 target/release/pim-operator /out/pim-operator
# Check the binary is static (musl's ldd fails on a static binary): the runtime image has no
# C library.
RUN /out/pim-operator --version \
 && if ldd /out/pim-operator >/dev/null 2>&1; then echo "not a static binary" >&2; exit 1; fi
# The nonroot user, for tools that look the UID up; the image has no other account.
RUN printf 'nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin\n' > /out/passwd \
 && printf 'nonroot:x:65532:\n' > /out/group

FROM scratch
COPY --from=builder /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=builder /out/passwd /etc/passwd
COPY --from=builder /out/group /etc/group
COPY --from=builder /out/pim-operator /usr/local/bin/pim-operator
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
# Metrics, /healthz and /readyz.
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/pim-operator"]
CMD ["run"]
LABEL org.opencontainers.image.title="pim-operator" \
      org.opencontainers.image.description="Privileged Identity Management for Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"
