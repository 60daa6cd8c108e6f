# Multi-stage build of a static Antibody binary (musl, rustls: no OpenSSL, no libc at runtime).
# This machine has no container engine; the file is kept buildable for CI elsewhere:
#   docker build -t ghcr.io/vael/antibody:0.1.0 .
FROM rust:1.95-alpine AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs* ./
COPY proto ./proto
COPY src ./src
# Workspace members (not built here; cargo reads their manifests).
COPY bench ./bench
COPY test-support ./test-support
RUN cargo build --release --locked --bin antibody \
 && strip target/release/antibody

FROM scratch
COPY --from=build /src/target/release/antibody /antibody
COPY antibody.yml /etc/antibody/antibody.yml
USER 65532:65532
EXPOSE 8080 50051
ENTRYPOINT ["/antibody"]
CMD ["run", "--config=/etc/antibody/antibody.yml", "--http-addr=0.0.0.0:8080"]
