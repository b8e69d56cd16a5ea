# The linkerd-mcp image: mesh-collector, mesh-mcp and mesh-chatbot (the Helm chart runs all
# three from it).
# Not built by `make test` (no container engine on the build machines).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# protoc is vendored (proto/build.rs): no system packages needed.
RUN cargo build --release --locked -p mesh-collector -p mesh-mcp -p mesh-chatbot

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/mesh-collector /src/target/release/mesh-mcp \
    /src/target/release/mesh-chatbot /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["mesh-mcp"]
