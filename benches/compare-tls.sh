#!/usr/bin/env bash
# The comparison of benches/compare.sh with TLS: every server plain and over TLS, one run, one
# table (fanout, fanout-tls, nats, nats-tls, redis, redis-tls). The same environment as
# compare.sh (DURATION, WARMUP, THREADS, ports, OUT), plus FANOUT_TLS_PORT. See compare.sh's
# header for how each TLS server is started, and benches/README-compare.md.
#
#   benches/compare-tls.sh
#   DURATION=3 WARMUP=1 benches/compare-tls.sh
set -euo pipefail
TLS=1 exec "$(dirname "$0")/compare.sh" "$@"
