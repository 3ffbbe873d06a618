#!/usr/bin/env bash
# bench/instructions.sh: what herd's work costs in instructions, which this
# VM's noise cannot move (rates between two runs of one server move by
# 5-10 %; this machine has no hardware counters, so callgrind counts).
#
# Each measurement is one one-shard herd (no neighbours) under `valgrind
# --tool=callgrind`, counters zeroed once it listens, then $REQUESTS
# requests from 64 connections with one client each, then a dump: the
# user-space instructions of the whole process per request. The kernel's
# part of a request is not counted. Every process it starts is stopped by
# PID on exit. Usage:
#   bench/instructions.sh [tokens|posts]          (builds release binaries)
#   HERD=... BENCH=... bench/instructions.sh ...  (given binaries)
#
# - tokens (the default): IAMATs with tokens off and on, at each depth in
#   $DEPTHS (with tokens, each connection sends one AUTH first, as the
#   bench's tokens scenario does). "On" is given without the AUTHs' token
#   checks (one HMAC each: a connection pays one, however many lines it
#   sends; here they would weigh by how many IAMATs the run has) and with
#   them, and what one check costs. The target is 3 %.
# - posts: OwnTracks posts (`--post owntracks`, as the phones scenario
#   sends them) against IAMAT lines, at each depth: the target is a post
#   rate of at least 0.25x the IAMAT line rate.
set -euo pipefail
cd "$(dirname "$0")/.."

WHAT=${1:-tokens}
REQUESTS=${REQUESTS:-50000}
DEPTHS=${DEPTHS:-"1 16"}
PORT_BASE=${PORT_BASE:-25000}
KEY=bench-token-key-0123456789abcdef
case $WHAT in
  tokens | posts) ;;
  *) echo "usage: bench/instructions.sh [tokens|posts]" >&2; exit 2 ;;
esac
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
if [ -z "${HERD:-}" ] || [ -z "${BENCH:-}" ]; then
  cargo build --release --bins >&2
  HERD=${HERD:-$PWD/target/release/herd}
  BENCH=${BENCH:-$PWD/target/release/herd-bench}
fi

work=$(mktemp -d)
server=
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# Instructions of callgrind dump $1 (the whole process, every thread).
instructions() {
  callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}'
}

# Inclusive instructions of the token checks in dump $1.
auth_instructions() {
  callgrind_annotate --inclusive=yes --threshold=100 "$1" 2>/dev/null |
    awk '/client_auth::check_token/ && !/=>/ {gsub(",", "", $1); print $1; exit}'
}

# measure KIND DEPTH PORT, KIND one of iamat, tokens (IAMATs after an AUTH)
# and post: prints "instructions requests auth_instructions".
measure() {
  local kind=$1 depth=$2 port=$3 clients="" load_args=() dir=$work/$1-$2
  mkdir -p "$dir"
  case $kind in
    tokens)
      clients=", \"clients\": {\"auth\": \"token\", \"token_key\": \"$KEY\"}"
      load_args=(--addr "127.0.0.1:$port" --server Target --token-key "$KEY")
      ;;
    post) load_args=(--addr "127.0.0.1:$((port + 2))" --post owntracks) ;;
    *) load_args=(--addr "127.0.0.1:$port" --server Target) ;;
  esac
  printf '{"servers": [{"name": "Target", "listen": "127.0.0.1:%s", "peer_listen": "127.0.0.1:%s", "http_listen": "127.0.0.1:%s", "admin_listen": null, "neighbours": []}]%s}\n' \
    "$port" "$((port + 1))" "$((port + 2))" "$clients" >"$dir/config.json"
  valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" \
    "$HERD" serve Target --config "$dir/config.json" --shards 1 --cpus 1 --log-dir "$dir/logs" >"$dir/server.out" 2>&1 &
  server=$!
  for _ in $(seq 600); do grep -q listening "$dir/server.out" && break; sleep 0.1; done
  grep -q listening "$dir/server.out" || { echo "herd under valgrind did not start: $dir/server.out" >&2; exit 1; }
  callgrind_control --zero "$server" >/dev/null 2>&1
  "$BENCH" load "${load_args[@]}" --connections 64 --clients 64 --depth "$depth" --requests "$REQUESTS" \
    --duration 600 --warmup 0 --cpus 0 --json-only >"$dir/load.out" 2>&1
  callgrind_control --dump "$server" >/dev/null 2>&1
  kill -INT "$server"
  wait "$server" 2>/dev/null || true
  server=
  local requests
  requests=$(sed -n 's/^JSON //p' "$dir/load.out" | python3 -c 'import json, sys; r = json.load(sys.stdin); print(r["requests"] if r["errors"] == 0 else 0)')
  [ "$requests" -gt 0 ] || { echo "the load failed or had errors: $dir/load.out" >&2; exit 1; }
  echo "$(instructions "$dir/cg.out.1") $requests $(auth_instructions "$dir/cg.out.1")"
}

if [ "$WHAT" = tokens ]; then
  echo "| shape | instructions per IAMAT, tokens off | tokens on, without the AUTHs' checks | on / off | with them | one AUTH's token check |"
  echo "|---|---|---|---|---|---|"
else
  echo "| shape | instructions per IAMAT | per OwnTracks post | post / IAMAT |"
  echo "|---|---|---|---|"
fi
port=$PORT_BASE
for depth in $DEPTHS; do
  second=tokens
  [ "$WHAT" = posts ] && second=post
  # Assigned first: a failed measurement then stops the script.
  base=$(measure iamat "$depth" "$port")
  other=$(measure "$second" "$depth" $((port + 10)))
  read -r base_ir base_n _ <<<"$base"
  read -r other_ir other_n other_auth <<<"$other"
  port=$((port + 20))
  python3 - "$WHAT" "$depth" "$base_ir" "$base_n" "$other_ir" "$other_n" "${other_auth:-0}" <<'PY'
import sys
what, depth = sys.argv[1], sys.argv[2]
base_ir, base_n, ir, n, auth = map(int, sys.argv[3:])
base = base_ir / base_n
if what == "tokens":
    on, on_all = (ir - auth) / n, ir / n
    print(f"| 64x{depth} | {base:,.0f} | {on:,.0f} | {on / base:.3f} | {on_all / base:.3f} | {auth / 64:,.0f} |")
else:
    post = ir / n
    print(f"| 64x{depth} | {base:,.0f} | {post:,.0f} | {post / base:.2f} |")
PY
done
