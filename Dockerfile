# warrend in a container: `docker build -t warrend .` then
#   docker run -d -p 2222:2222 -v warrend-state:/var/lib/warrend \
#     -v ./warrend.toml:/etc/warrend/warrend.toml:ro warrend
# The port-proxy example (one user publishes a name, another reaches it, nothing else
# exposed) is contrib/docker/compose.yaml. tests/packaging.rs checks this file against
# the config it ships, and builds the image where a container engine runs.

# Build: the same command the README documents, for warrend alone.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# protoc and its well-known types: the etcd client (cluster mode) compiles etcd's protobufs.
RUN apt-get update && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev \
    && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release --locked --bin warrend

# Run: glibc as in the builder, nothing else (no shell needed by warrend itself).
FROM debian:bookworm-slim
# A fixed numeric user, so runtimes that check "not root" (runAsNonRoot) can tell.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/warrend \
        --shell /usr/sbin/nologin warrend \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/warrend
COPY --from=build /src/target/release/warrend /usr/local/bin/warrend
COPY contrib/docker/default.toml /etc/warrend/warrend.toml
COPY LICENSE-MIT LICENSE-APACHE /usr/share/doc/warrend/
USER 10001:10001
# Host keys: generated here on first start; keep the volume, or clients see new keys.
VOLUME /var/lib/warrend
EXPOSE 2222
# Audit records are JSON lines on stdout (`docker logs`), diagnostics on stderr.
ENTRYPOINT ["/usr/local/bin/warrend"]
CMD ["-f", "/etc/warrend/warrend.toml"]
