# Sourced by benches/compare.sh and benches/sweep.sh: installs, starts and stops the servers
# they measure, always on 127.0.0.1, started here and never through systemd:
#   fanout     fanout serve --listen 127.0.0.1:PORT --threads 1 (one reactor)
#   fanout-mt  fanout serve --listen 127.0.0.1:PORT --threads $(nproc) (one reactor per core)
#   nats       nats-server -a 127.0.0.1 -p PORT (defaults: 64 MiB pending limit per connection)
#   redis      redis-server --port PORT --save '' --appendonly no
#                           --client-output-buffer-limit "pubsub 0 0 0"
#              Redis' default pub/sub output limit (32 MiB hard, 8 MiB for 60 s) disconnects
#              subscribers that fall behind; "0 0 0" disables it, so Redis is measured on
#              delivering, like the others, and not on dropping clients.
# Over TLS (make_certs first; a P-256 CA and a server certificate for 127.0.0.1 in TLS_DIR):
#   fanout-tls  fanout serve ... --tls-listen 127.0.0.1:FANOUT_TLS_PORT --tls-cert --tls-key (one reactor)
#   nats-tls    nats-server -c FILE, FILE saying listen and tls { cert_file, key_file, timeout: 5 }
#               (the standard NATS TLS: a plain INFO line, then the handshake)
#   redis-tls   redis-server ... --port 0 --tls-port PORT --tls-cert-file --tls-key-file
#               --tls-ca-cert-file --tls-auth-clients no
# The caller sets OUT (a folder for the servers' logs) and BENCH (the fanout binary), and
# calls stop_server on exit (the traps below do).

HOST=127.0.0.1
FANOUT_PORT=${FANOUT_PORT:-17400}
NATS_PORT=${NATS_PORT:-17422}
REDIS_PORT=${REDIS_PORT:-17379}
FANOUT_TLS_PORT=${FANOUT_TLS_PORT:-17443}
TLS_DIR=""

log() { printf '%s\n' "$*" >&2; }

# Group digits: 1234567 -> 1,234,567.
group() { sed -e ':a' -e 's/\B[0-9]\{3\}\>/,&/' -e 'ta' <<<"$1"; }

# install_packages COMMAND:PACKAGE...: installs from the Debian packages each PACKAGE whose
# COMMAND is missing (apt-get, with sudo only when not root; apt-get update only if needed).
install_packages() {
  local missing=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
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

install_servers() { install_packages redis-server:redis-server nats-server:nats-server; }

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

# The protocol `fanout bench --protocol` speaks to server $1.
protocol_of() { echo "${1%%-*}"; }

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

# Starts server $1 in the background (its pid in SERVER_PID) and waits (10 s at most) until
# its port accepts.
start_server() {
  local name=$1 port
  port=$(port_of "$name")
  if (exec 3<>"/dev/tcp/$HOST/$port") 2>/dev/null; then
    local variable
    variable=$(protocol_of "$name")
    log "$HOST:$port is already in use: stop whatever listens there, or set ${variable^^}_PORT"
    return 1
  fi
  case $name in
    fanout) "$BENCH" serve --listen "$HOST:$port" --threads 1 --log-level warn >>"$OUT/$name.log" 2>&1 & ;;
    fanout-mt) "$BENCH" serve --listen "$HOST:$port" --threads "$(nproc)" --log-level warn >>"$OUT/$name.log" 2>&1 & ;;
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
    *)
      log "unknown server $name (fanout, fanout-mt, fanout-tls, nats, nats-tls, redis or redis-tls)"
      return 1
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

# json_field KEY LINE: the value of "KEY" in one of the bench's flat JSON lines.
json_field() {
  grep -o "\"$1\":[^,}]*" <<<"$2" | head -n 1 | cut -d: -f2
}

# Writes the machine, the servers' versions and the run's settings ($1) to $OUT/machine.txt
# and stderr.
describe_machine() {
  local cpu
  cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
  {
    echo "machine: $(nproc) CPUs, ${cpu:-unknown CPU}, $(uname -sr), $(free -g 2>/dev/null | awk '/Mem:/ {print $2 " GiB"}'), load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "servers: fanout $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nats-server --version 2>&1 | head -n1), $(redis-server --version | cut -d' ' -f1-3)"
    echo "runs: $1; results in $OUT"
  } | tee "$OUT/machine.txt" >&2
}
