# The linkerd-mcp image: mesh-collector and mesh-mcp (the Helm chart runs both from it).
# Not built by `make test` (no container engine on the build machines).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# protoc is vendored (proto/build.rs): no system packages needed.
RUN cargo build --release --locked -p mesh-collector -p mesh-mcp

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/mesh-collector /src/target/release/mesh-mcp /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["mesh-mcp"]
