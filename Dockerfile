# sitelog: one image, the `sitelog` binary as entrypoint (collect, process, schema migrate, …).
#   docker build -t sitelog:latest .
# Build stage: the workspace's release build. librdkafka is compiled by rdkafka-sys with its
# own configure/make (no cmake feature), linked against the system OpenSSL (TLS, SASL SCRAM)
# and libzstd (compression = "zstd"), as Cargo.toml's rdkafka features say.
FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl-dev libzstd-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY schema schema
COPY ingest ingest
COPY processor processor
COPY src src
# Declared [[bench]] targets must exist for cargo to read the manifest.
COPY benches benches
# Embedded at build time (src/stack.rs: the local stack scripts; example configs).
COPY deploy deploy
RUN cargo build --release --locked --bin sitelog \
 && cp target/release/sitelog /usr/local/bin/sitelog

# Runtime: Debian 12 slim with the shared libraries the build linked, CA certificates for
# TLS to Kafka and ClickHouse, and an unprivileged user.
FROM debian:12-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 libzstd1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 sitelog \
 && useradd --system --uid 10001 --gid sitelog --home-dir /var/lib/sitelog --shell /usr/sbin/nologin sitelog \
 && install -d -o sitelog -g sitelog -m 0700 /var/lib/sitelog /var/lib/sitelog/visitor-keys
COPY --from=build /usr/local/bin/sitelog /usr/local/bin/sitelog
USER 10001:10001
WORKDIR /var/lib/sitelog
ENTRYPOINT ["/usr/local/bin/sitelog"]
CMD ["--help"]
