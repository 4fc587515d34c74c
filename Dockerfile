# ses-connector container image.
#
#   docker build -t ses-connector .
#
# Stages: `build` compiles (dependencies in their own cached layer), `runtime` is
# distroless with only the binary, running as the non-root user 65532.
# BUILDER and RUNTIME_IMAGE let CI put a locally built binary and a local base of
# the same contents into the unchanged final stage.

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot
ARG BUILDER=build

FROM ${RUST_IMAGE} AS build
WORKDIR /src
# Dependencies first: this layer is rebuilt only when Cargo.toml or Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
COPY .cargo .cargo
RUN mkdir -p src benches \
    && printf 'fn main() {}\n' > src/main.rs \
    && for bench in service allocations instructions redis_memory; do cp src/main.rs "benches/$bench.rs"; done \
    && : > src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src
COPY templates templates
COPY schemas/openapi.json schemas/openapi.json
COPY src src
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked \
    && install -D -m 0755 target/release/ses-connector /out/ses-connector

FROM ${BUILDER} AS binary

FROM ${RUNTIME_IMAGE} AS runtime
COPY --from=binary /out/ses-connector /usr/local/bin/ses-connector
USER 65532:65532
ENV SES_CONNECTOR_LISTEN=0.0.0.0:8080 \
    SES_CONNECTOR_LOG_FORMAT=json
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/ses-connector", "healthcheck", "--url", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["/usr/local/bin/ses-connector"]
CMD ["serve"]
