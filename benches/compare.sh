#!/usr/bin/env bash
# Side-by-side comparison of fanout, NATS (core pub/sub) and Redis pub/sub on loopback: the
# same five workloads against each, driven by the same load generator (`fanout bench`, which
# speaks all three protocols with the same payloads and the same accounting), one table at the
# end. See benches/README-compare.md for the settings and how to read the numbers.
#
#   benches/compare.sh                      # 5 s measured + 1 s warm-up per run
#   DURATION=3 WARMUP=1 benches/compare.sh  # shorter
#   TLS=1 benches/compare.sh                # each server plain and over TLS (benches/compare-tls.sh)
#
# Environment: DURATION, WARMUP (seconds), THREADS (bench client threads, default 2),
# FANOUT_PORT / NATS_PORT / REDIS_PORT (defaults 17400 / 17422 / 17379), FANOUT_TLS_PORT (17443),
# OUT (results folder), TLS (1: the TLS comparison below).
#
# Servers are started here, by this script, on 127.0.0.1 only, one at a time and fresh for each
# run (never through systemd), and stopped again, also on error or Ctrl-C:
#   fanout  fanout serve --listen 127.0.0.1:PORT (defaults: 4 MiB output limit per connection)
#   NATS    nats-server -a 127.0.0.1 -p PORT (defaults: 64 MiB pending limit per connection)
#   Redis   redis-server --port PORT --save '' --appendonly no
#                        --client-output-buffer-limit "pubsub 0 0 0"
#           Redis' default pub/sub output limit (32 MiB hard, 8 MiB for 60 s) disconnects
#           subscribers that fall behind; "0 0 0" disables it, so Redis is measured on
#           delivering, like the others, and not on dropping clients.
# TLS=1 runs each server plain and over TLS, one after the other (fanout with one reactor only),
# with a throwaway CA and a server certificate for 127.0.0.1 made here by openssl in a temporary
# folder (removed on exit); every TLS server presents it and the bench verifies it:
#   fanout-tls  fanout serve --listen ... --tls-listen 127.0.0.1:FANOUT_TLS_PORT --tls-cert --tls-key
#   nats-tls    nats-server -c FILE, FILE saying listen and tls { cert_file, key_file, timeout: 5 }
#               (the standard NATS TLS: a plain INFO line, then the handshake)
#   redis-tls   redis-server ... --port 0 --tls-port PORT --tls-cert-file --tls-key-file
#               --tls-ca-cert-file --tls-auth-clients no
# Every step has a time limit, so the whole script is bounded (about 15 x (DURATION + WARMUP +
# 5) s when all goes well; at most 15 x (DURATION + WARMUP + 80) s plus the build).
set -euo pipefail

cd "$(dirname "$0")/.."

DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
THREADS=${THREADS:-2}
HOST=127.0.0.1
FANOUT_PORT=${FANOUT_PORT:-17400}
NATS_PORT=${NATS_PORT:-17422}
REDIS_PORT=${REDIS_PORT:-17379}
OUT=${OUT:-target/compare/$(date +%Y%m%d-%H%M%S)}
BENCH=target/release/fanout
# fanout runs twice: with one reactor (like Redis, single-threaded) and with one per core (the
# default; like NATS, which uses every core). On a 2-core machine the load generator needs a core
# too, so the one-reactor row is usually the faster.
SERVERS=(fanout fanout-mt nats redis)
TLS=${TLS:-0}
FANOUT_TLS_PORT=${FANOUT_TLS_PORT:-17443}
TLS_DIR=""
if [ "$TLS" = 1 ]; then
  SERVERS=(fanout fanout-tls nats nats-tls redis redis-tls)
fi

# id | label | flags (the same for every server)
WORKLOADS=(
  "1|1 room x 100 subs x 1 pub x 64 B|--rooms 1 --subscribers 100 --publishers 1 --size 64"
  "2|1 room x 1000 subs x 10 pubs x 64 B|--rooms 1 --subscribers 1000 --publishers 10 --size 64"
  "3|1 room x 100 subs x 10 pubs x 1 KiB|--rooms 1 --subscribers 100 --publishers 10 --size 1024"
  "4|10k msgs/s x 100 subs x 1 pub x 64 B|--rooms 1 --subscribers 100 --publishers 1 --size 64 --rate 10000"
  "5|100 rooms x 20 subs x 1 pub x 64 B|--rooms 100 --subscribers 2000 --publishers 100 --size 64"
)

log() { printf '%s\n' "$*" >&2; }

# Group digits: 1234567 -> 1,234,567.
group() { sed -e ':a' -e 's/\B[0-9]\{3\}\>/,&/' -e 'ta' <<<"$1"; }

install_servers() {
  local missing=()
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  command -v nats-server >/dev/null 2>&1 || missing+=(nats-server)
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]} from the Debian packages"
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  if ! timeout 900 "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >&2; then
    timeout 600 "${sudo[@]}" apt-get update -qq >&2
    timeout 900 "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >&2
  fi
}

SERVER_PID=""
stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  kill "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}
cleanup() {
  stop_server
  [ -z "$TLS_DIR" ] || rm -rf "$TLS_DIR"
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

port_of() {
  case $1 in
    fanout | fanout-mt) echo "$FANOUT_PORT" ;;
    fanout-tls) echo "$FANOUT_TLS_PORT" ;;
    nats | nats-tls) echo "$NATS_PORT" ;;
    redis | redis-tls) echo "$REDIS_PORT" ;;
  esac
}

# Makes a throwaway CA (ca.pem) and a server certificate for 127.0.0.1 and localhost
# (server.pem, server.key) in a new temporary folder, TLS_DIR, and a nats-server config using them.
make_certs() {
  TLS_DIR=$(mktemp -d "${TMPDIR:-/tmp}/fanout-compare-tls.XXXXXX")
  local d=$TLS_DIR
  {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=fanout-bench-ca \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
      -keyout "$d/ca.key" -out "$d/ca.pem"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
      -keyout "$d/server.key" -out "$d/server.csr"
    printf '%s\n' 'subjectAltName=IP:127.0.0.1,DNS:localhost' 'basicConstraints=critical,CA:FALSE' \
      'keyUsage=critical,digitalSignature' 'extendedKeyUsage=serverAuth' >"$d/server.ext"
    openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial -days 2 \
      -extfile "$d/server.ext" -out "$d/server.pem"
  } >"$d/openssl.log" 2>&1 || {
    cat "$d/openssl.log" >&2
    return 1
  }
  cat >"$d/nats.conf" <<CONF
listen: $HOST:$NATS_PORT
tls {
  cert_file: "$d/server.pem"
  key_file: "$d/server.key"
  timeout: 5
}
CONF
}

# Starts server $1 in the background and waits (10 s at most) until its port accepts.
start_server() {
  local name=$1 port
  port=$(port_of "$name")
  if (exec 3<>"/dev/tcp/$HOST/$port") 2>/dev/null; then
    log "$HOST:$port is already in use: stop whatever listens there, or set ${name^^}_PORT"
    return 1
  fi
  case $name in
    fanout) "$BENCH" serve --listen "$HOST:$port" --threads 1 --log-level warn >>"$OUT/$name.log" 2>&1 & ;;
    fanout-mt) "$BENCH" serve --listen "$HOST:$port" --log-level warn >>"$OUT/$name.log" 2>&1 & ;;
    fanout-tls)
      "$BENCH" serve --listen "$HOST:$FANOUT_PORT" --tls-listen "$HOST:$port" --tls-cert "$TLS_DIR/server.pem" \
        --tls-key "$TLS_DIR/server.key" --threads 1 --log-level warn >>"$OUT/$name.log" 2>&1 &
      ;;
    nats) nats-server -a "$HOST" -p "$port" >>"$OUT/$name.log" 2>&1 & ;;
    nats-tls) nats-server -c "$TLS_DIR/nats.conf" >>"$OUT/$name.log" 2>&1 & ;;
    redis)
      redis-server --bind "$HOST" --port "$port" --save '' --appendonly no \
        --client-output-buffer-limit "pubsub 0 0 0" --daemonize no >>"$OUT/$name.log" 2>&1 &
      ;;
    redis-tls)
      redis-server --bind "$HOST" --port 0 --tls-port "$port" --tls-cert-file "$TLS_DIR/server.pem" \
        --tls-key-file "$TLS_DIR/server.key" --tls-ca-cert-file "$TLS_DIR/ca.pem" --tls-auth-clients no \
        --save '' --appendonly no --client-output-buffer-limit "pubsub 0 0 0" --daemonize no \
        >>"$OUT/$name.log" 2>&1 &
      ;;
  esac
  SERVER_PID=$!
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/$HOST/$port") 2>/dev/null; then
      return 0
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  log "$name did not start on $HOST:$port (see $OUT/$name.log)"
  return 1
}

# json_field KEY FILE: the value of "KEY" in the bench's JSON line (the last line of FILE).
json_field() {
  tail -n 1 "$2" | grep -o "\"$1\":[^,}]*" | head -n 1 | cut -d: -f2
}

main() {
  mkdir -p "$OUT"
  install_servers
  [ "$TLS" != 1 ] || make_certs
  log "building fanout (release)"
  timeout 1800 cargo build --release --quiet
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 4500 ]; then
    log "warning: ulimit -n is $(ulimit -n); workload 5 needs about 2,100 descriptors per side"
  fi

  local cpu
  cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
  {
    echo "machine: $(nproc) CPUs, ${cpu:-unknown CPU}, $(uname -sr), $(free -g 2>/dev/null | awk '/Mem:/ {print $2 " GiB"}')"
    echo "servers: fanout $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nats-server --version 2>&1 | head -n1), $(redis-server --version | cut -d' ' -f1-3)"
    [ "$TLS" != 1 ] || echo "tls: $(openssl version | cut -d' ' -f1-2) made a P-256 CA and server certificate; fanout rustls+ring, NATS Go crypto/tls, Redis OpenSSL"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "runs: ${DURATION} s measured after ${WARMUP} s warm-up, ${THREADS} bench threads, loopback; results in $OUT"
  } | tee "$OUT/machine.txt" >&2

  local rows=()
  for workload in "${WORKLOADS[@]}"; do
    IFS='|' read -r id label flags <<<"$workload"
    for server in "${SERVERS[@]}"; do
      local file="$OUT/w$id-$server.txt" row
      log "workload $id ($label) on $server"
      if ! start_server "$server"; then
        rows+=("$id|$label|$server|server failed to start")
        stop_server
        continue
      fi
      local tls_flags=()
      [[ $server != *-tls ]] || tls_flags=(--tls-ca "$TLS_DIR/ca.pem")
      # shellcheck disable=SC2086 # flags are words on purpose
      if timeout $((DURATION + WARMUP + 60)) "$BENCH" bench --protocol "${server%%-*}" --addr "$HOST:$(port_of "$server")" \
        "${tls_flags[@]}" $flags --duration "$DURATION" --warmup "$WARMUP" --threads "$THREADS" \
        --server-pid "$SERVER_PID" --json >"$file" 2>"$file.err" && tail -n 1 "$file" | grep -q '^{'; then
        row=$(awk -v d="$(json_field delivered "$file")" -v r="$(json_field delivered_per_sec "$file")" \
          -v p="$(json_field p99 "$file")" -v l="$(json_field lost "$file")" \
          -v s="$(json_field server_cpu_s "$file")" -v b="$(json_field bench_cpu_s "$file")" 'BEGIN {
            per = (s == "null" || d == 0) ? "-" : sprintf("%.2f", s / (d / 1e6));
            bper = (b == "null" || d == 0) ? "-" : sprintf("%.2f", b / (d / 1e6));
            printf "%.0f|%.0f|%d|%s|%s", r, p, l, per, bper }')
        rows+=("$id|$label|$server|$row")
      else
        rows+=("$id|$label|$server|bench failed: $(tail -n 1 "$file.err" 2>/dev/null)")
      fi
      stop_server
    done
  done

  echo
  printf '%-40s %-9s %16s %12s %12s %18s %17s\n' workload server "delivered msgs/s" "p99 us" lost \
    "server CPU-s/M msg" "bench CPU-s/M msg"
  for row in "${rows[@]}"; do
    IFS='|' read -r id label server rate p99 lost per bper <<<"$row"
    if [ -z "${p99:-}" ]; then
      printf '%-40s %-9s %s\n' "$id. $label" "$server" "$rate"
    else
      printf '%-40s %-9s %16s %12s %12s %18s %17s\n' "$id. $label" "$server" \
        "$(group "$rate")" "$(group "$p99")" "$(group "$lost")" "$per" "$bper"
    fi
  done | tee "$OUT/table.txt"
}

main "$@"
