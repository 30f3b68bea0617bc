# syntax=docker/dockerfile:1
# fanout in a container:
#   docker build -t fanout --build-arg FANOUT_COMMIT=$(git rev-parse --short HEAD) .
#   docker run --rm -p 7400:7400 -p 9400:9400 fanout
# Clients on 7400, the cluster port 7500 (used once cluster_listen is set), Prometheus metrics
# and /healthz on 9400; TLS clients on the port of tls_listen, when set (publish it with -p). Settings: mount your own /etc/fanout/fanout.toml (dist/fanout.toml is
# the example baked in) or add flags after the image name, which override the file. SIGHUP
# (docker kill -s HUP) reloads tokens and the log level; SIGTERM (docker stop) closes every
# connection with SHUTTING_DOWN and exits 0. One descriptor per client: raise the limit with
# --ulimit nofile=200000 when max_connections needs it.

# ---- build: a release binary ------------------------------------------------------------------
FROM rust:1-slim-bookworm AS build
WORKDIR /src
# No .git in the context: the commit for fanout_build_info comes in as a build argument.
ARG FANOUT_COMMIT=unknown
ENV FANOUT_COMMIT=${FANOUT_COMMIT}
COPY Cargo.toml Cargo.lock build.rs ./
# The workspace: the protocol crate and the load generator are members the server builds on.
COPY crates ./crates
COPY src ./src
COPY benches ./benches
# The registry and target caches survive between builds (BuildKit), so only what changed rebuilds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin fanout \
    && cp target/release/fanout /usr/local/bin/fanout

# ---- run: the binary, the example config, a user of its own -------------------------------------
FROM debian:bookworm-slim
RUN groupadd --system --gid 10001 fanout \
    && useradd --system --uid 10001 --gid fanout --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin fanout
COPY --from=build /usr/local/bin/fanout /usr/local/bin/fanout
COPY dist/fanout.toml /etc/fanout/fanout.toml
USER fanout:fanout
EXPOSE 7400 7500 9400
# 200 from /healthz while serving, 503 before the listeners are up and while draining. No curl
# in a slim image: bash's /dev/tcp speaks the one request.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9400 && printf 'GET /healthz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && read -r _ code _ <&3 && [ \"$code\" = 200 ]"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/fanout"]
# Inside a container: listen on every interface, metrics on for the health check.
CMD ["serve", "--config", "/etc/fanout/fanout.toml", "--listen", "0.0.0.0:7400", "--metrics", "0.0.0.0:9400"]
