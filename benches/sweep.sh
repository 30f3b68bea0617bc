#!/usr/bin/env bash
# Capacity: the highest fixed publish rate each server sustains with p99 under P99_MS and
# nothing lost, for fanout (one reactor and the default), NATS and Redis in one run on one
# room, with the same load generator (`fanout bench --sweep`). Writes a markdown table of every
# step, a summary table with the ratios, and a PNG plot of p99 against offered load (gnuplot).
#
#   benches/sweep.sh                                   # 1 room x 1,000 subs x 10 pubs x 64 B
#   SUBSCRIBERS=100 START=1000 benches/sweep.sh        # the 100-subscriber room
#
# Environment (defaults in brackets): SUBSCRIBERS [1000], PUBLISHERS [10], SIZE [64] bytes,
# DURATION [3] and WARMUP [1] seconds per step, THREADS [2] bench client threads, START [100]
# msgs/s, FACTOR [1.25] between steps, STEPS [24] at most, P99_MS [10], SWEEP_SECONDS [300] per
# server, SERVERS ["fanout fanout-mt nats redis"], OUT [target/sweep/<date>], PNG
# [$OUT/p99-vs-load.png], FANOUT_PORT [17401], NATS_PORT [17423], REDIS_PORT [17380].
#
# Servers are started here, on 127.0.0.1 only, one at a time and fresh for each sweep (never
# through systemd), with the settings in benches/servers.sh, and stopped after it, also on
# error or Ctrl-C. A step is a whole bench run (DURATION + WARMUP + set-up + a drain of at most
# 3 s); a failing step is tried once more and the sweep stops at the first that fails twice,
# and no step starts past SWEEP_SECONDS, so each server takes at most SWEEP_SECONDS plus one
# step, and the script at most that times the servers, plus installing and building.
set -euo pipefail

cd "$(dirname "$0")/.."

SUBSCRIBERS=${SUBSCRIBERS:-1000}
PUBLISHERS=${PUBLISHERS:-10}
SIZE=${SIZE:-64}
DURATION=${DURATION:-3}
WARMUP=${WARMUP:-1}
THREADS=${THREADS:-2}
START=${START:-100}
FACTOR=${FACTOR:-1.25}
STEPS=${STEPS:-24}
P99_MS=${P99_MS:-10}
SWEEP_SECONDS=${SWEEP_SECONDS:-300}
read -r -a SERVERS <<<"${SERVERS:-fanout fanout-mt nats redis}"
OUT=${OUT:-target/sweep/$(date +%Y%m%d-%H%M%S)}
PNG=${PNG:-$OUT/p99-vs-load.png}
BENCH=target/release/fanout
# Ports of their own, so that a compare.sh run elsewhere on the machine does not stop this one.
FANOUT_PORT=${FANOUT_PORT:-17401}
NATS_PORT=${NATS_PORT:-17423}
REDIS_PORT=${REDIS_PORT:-17380}

# shellcheck source=benches/servers.sh
. benches/servers.sh

# Sweeps server $1; its JSON lines go to $OUT/$1.jsonl, its table to $OUT/$1.md.
sweep_server() {
  local server=$1
  log "sweeping $server"
  if ! start_server "$server"; then
    echo "{\"label\":\"$server\",\"sustained_per_sec\":null,\"stop\":\"server failed to start\"}" >"$OUT/$server.jsonl"
    : >"$OUT/$server.md"
    stop_server
    return 0
  fi
  timeout $((SWEEP_SECONDS + DURATION + WARMUP + 120)) "$BENCH" bench --sweep --label "$server" \
    --protocol "$(protocol_of "$server")" --addr "$HOST:$(port_of "$server")" --rooms 1 \
    --subscribers "$SUBSCRIBERS" --publishers "$PUBLISHERS" --size "$SIZE" \
    --duration "$DURATION" --warmup "$WARMUP" --threads "$THREADS" --server-pid "$SERVER_PID" \
    --sweep-start "$START" --sweep-factor "$FACTOR" --sweep-steps "$STEPS" --sweep-p99-ms "$P99_MS" \
    --sweep-seconds "$SWEEP_SECONDS" --json >"$OUT/$server.jsonl" 2>"$OUT/$server.md" ||
    log "the sweep of $server ended early (see $OUT/$server.md)"
  stop_server
}

# The field $2 of server $1's closing JSON line (empty if none or null).
closing_field() {
  local value
  value=$(json_field "$2" "$(grep sustained_per_sec "$OUT/$1.jsonl" | tail -n 1)")
  [ "$value" = null ] || echo "$value"
}

# The sustained rate of server $1 (empty if none).
sustained_of() { closing_field "$1" sustained_per_sec; }

# Every step of every server under one header, then each server's closing sentence.
write_steps_table() {
  local server
  {
    echo "| server | offered msgs/s | offered deliveries/s | delivered msgs/s | p50 ms | p99 ms | lost | server CPU | bench CPU | verdict |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    for server in "${SERVERS[@]}"; do
      grep "^| $server |" "$OUT/$server.md" || true
    done
    echo
    for server in "${SERVERS[@]}"; do
      grep "^$server sustains" "$OUT/$server.md" || echo "$server: no result (see $OUT/$server.md)"
    done
  } >"$OUT/steps.md"
}

# One line per server: sustained msgs/s and deliveries/s, and its ratio to the better peer; "≥"
# where the sweep ended (out of steps or time) before a step failed twice.
write_summary_table() {
  local server best_peer=0 rate
  for server in nats redis; do
    rate=$(sustained_of "$server" 2>/dev/null || true)
    if [ -n "${rate:-}" ] && awk -v a="$rate" -v b="$best_peer" 'BEGIN { exit !(a > b) }'; then
      best_peer=$rate
    fi
  done
  {
    echo "| server | sustained msgs/s | deliveries/s | / better peer |"
    echo "|---|---:|---:|---:|"
    for server in "${SERVERS[@]}"; do
      rate=$(sustained_of "$server" 2>/dev/null || true)
      if [ -z "${rate:-}" ]; then
        echo "| $server | none | - | - |"
        continue
      fi
      local ratio="-" at_least=""
      [ "$best_peer" = 0 ] || ratio=$(awk -v r="$rate" -v p="$best_peer" 'BEGIN { printf "%.2f", r / p }')
      [ "$(closing_field "$server" stop 2>/dev/null || true)" = '"failed_twice"' ] || at_least="≥ "
      echo "| $server | $at_least$(group "$rate") | $at_least$(group $((rate * SUBSCRIBERS))) | $ratio |"
    done
  } >"$OUT/summary.md"
}

# p99 (ms) against offered msgs/s, one line per server, the bound as a dashed line.
plot() {
  local server plots=()
  for server in "${SERVERS[@]}"; do
    { grep '"p99_us"' "$OUT/$server.jsonl" || true; } | while read -r line; do
      awk -v o="$(json_field offered_per_sec "$line")" -v p="$(json_field p99_us "$line")" \
        'BEGIN { printf "%s %.3f\n", o, p / 1000 }'
    done >"$OUT/$server.dat"
    [ -s "$OUT/$server.dat" ] && plots+=("'$OUT/$server.dat' using 1:2 with linespoints title '$server'")
  done
  [ ${#plots[@]} -gt 0 ] || return 0
  local joined
  joined=$(printf '%s, ' "${plots[@]}")
  timeout 60 gnuplot <<EOF
set terminal png size 800,500
set output '$PNG'
set title "p99 latency against offered load: 1 room, $(group "$SUBSCRIBERS") subscribers, $PUBLISHERS publishers, $SIZE B"
set xlabel 'offered load, msgs/s published (x $(group "$SUBSCRIBERS") deliveries each)'
set ylabel 'p99 latency, ms'
set logscale xy
set yrange [*:$(cat "$OUT"/*.dat | awk -v m="$P99_MS" '$2 > m { m = $2 } END { print m * 2 }')]
set grid
set key top left
plot ${joined} $P99_MS with lines dashtype 2 linecolor rgb 'gray' title '$P99_MS ms bound'
EOF
  log "plot in $PNG"
}

main() {
  mkdir -p "$OUT"
  install_servers
  install_packages gnuplot:gnuplot-nox
  log "building fanout (release)"
  timeout 1800 cargo build --release --quiet
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  describe_machine "1 room x $SUBSCRIBERS subs x $PUBLISHERS pubs x $SIZE B; steps of ${DURATION} s after ${WARMUP} s warm-up from $START msgs/s x $FACTOR, at most $STEPS steps and ${SWEEP_SECONDS} s per server; ${THREADS} bench threads, loopback"
  local server
  for server in "${SERVERS[@]}"; do
    sweep_server "$server"
  done
  echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/machine.txt" >&2
  write_steps_table
  write_summary_table
  plot
  cat "$OUT/steps.md" "$OUT/summary.md"
}

main "$@"
