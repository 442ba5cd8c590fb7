# syntax=docker/dockerfile:1
# Sluice container image: built in the official Rust image, run on distroless
# (glibc, no shell, no package manager) as an unprivileged user.
#   docker build -t sluice .
#   docker run --rm -p 8080:8080 -v $PWD/sluice.yaml:/etc/sluice/sluice.yaml:ro sluice
#
# tests/deploy.rs checks this file: the build command below must stay exactly
# `cargo build --release --locked --bin sluice` (the release binary the test
# suite's notes refer to), the user must be non-root and match the pods'
# runAsUser, and the entrypoint must be the `sluice` binary Cargo.toml declares.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and build artefacts between builds; the
# binary (and the one shared library distroless lacks, zlib, which librdkafka
# links) is copied out to /out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin sluice \
 && install -D -m 0755 target/release/sluice /out/usr/local/bin/sluice \
 && libz="$(ldd target/release/sluice | awk '$1 == "libz.so.1" { print $3 }')" \
 && if [ -n "$libz" ]; then \
      install -D -m 0644 "$(readlink -f "$libz")" "/out/usr/lib/$(gcc -dumpmachine)/libz.so.1"; \
    fi

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="sluice" \
      org.opencontainers.image.description="PostHog, Amplitude and signed webhooks in; Brevo out" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/ /
# distroless' "nonroot" user, numeric so Kubernetes' runAsNonRoot can verify it.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["serve", "--config", "/etc/sluice/sluice.yaml"]
