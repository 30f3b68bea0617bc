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
# run (never through systemd), and stopped again, also on error or Ctrl-C; their settings are
# in benches/servers.sh. TLS=1 runs each server plain and over TLS, one after the other (fanout
# with one reactor only), with a throwaway CA and server certificate for 127.0.0.1 made by
# openssl in a temporary folder (removed on exit); the bench verifies it (servers.sh has the
# TLS servers' settings).
# Every step has a time limit, so the whole script is bounded (about 15 x (DURATION + WARMUP +
# 5) s when all goes well; at most 15 x (DURATION + WARMUP + 80) s plus the build).
set -euo pipefail

cd "$(dirname "$0")/.."

DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
THREADS=${THREADS:-2}
OUT=${OUT:-target/compare/$(date +%Y%m%d-%H%M%S)}
BENCH=target/release/fanout
# fanout runs twice: with one reactor (like Redis, single-threaded; the default on a machine of at
# most 2 cores) and with one per core (like NATS, which uses every core; the default above). On a
# 2-core machine the load generator needs a core too, so the one-reactor row is usually the faster.
SERVERS=(fanout fanout-mt nats redis)
TLS=${TLS:-0}
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

# shellcheck source=benches/servers.sh
. benches/servers.sh

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

  local tls_note=""
  [ "$TLS" != 1 ] || tls_note="; TLS: $(openssl version | cut -d' ' -f1-2) made a P-256 CA and server certificate (fanout rustls+ring, NATS Go crypto/tls, Redis OpenSSL)"
  describe_machine "${DURATION} s measured after ${WARMUP} s warm-up, ${THREADS} bench threads, loopback${tls_note}"

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
      if timeout $((DURATION + WARMUP + 60)) "$BENCH" bench --protocol "$(protocol_of "$server")" --addr "$HOST:$(port_of "$server")" \
        "${tls_flags[@]}" $flags --duration "$DURATION" --warmup "$WARMUP" --threads "$THREADS" \
        --server-pid "$SERVER_PID" --json >"$file" 2>"$file.err" && tail -n 1 "$file" | grep -q '^{'; then
        local json
        json=$(tail -n 1 "$file")
        row=$(awk -v d="$(json_field delivered "$json")" -v r="$(json_field delivered_per_sec "$json")" \
          -v p="$(json_field p99 "$json")" -v l="$(json_field lost "$json")" \
          -v s="$(json_field server_cpu_s "$json")" -v b="$(json_field bench_cpu_s "$json")" 'BEGIN {
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
