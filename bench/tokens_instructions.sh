#!/usr/bin/env bash
# bench/tokens_instructions.sh: what client tokens cost herd in instructions,
# which this VM's noise cannot move (rates between two runs of one server
# move by 5-10 %, and the tokens target is 3 %; this machine has no
# hardware counters, so callgrind counts).
#
# For tokens off and on, and each depth in $DEPTHS: one one-shard herd (no
# neighbours) under `valgrind --tool=callgrind`, counters zeroed once it
# listens, then $REQUESTS IAMATs from 64 connections with one client each
# (with tokens, each connection sends one AUTH first, as the bench's tokens
# scenario does), then a dump. Prints user-space instructions per IAMAT for
# both and their ratio, with the AUTHs' token checks (one HMAC each) taken
# out of "on" (a connection pays one, however many lines it sends; here
# they would weigh by how many IAMATs the run has), and what one costs. Every
# process it starts is stopped by PID on exit. Usage:
#   bench/tokens_instructions.sh                     (builds release binaries)
#   HERD=... BENCH=... bench/tokens_instructions.sh  (given binaries)
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${REQUESTS:-50000}
DEPTHS=${DEPTHS:-"1 16"}
PORT_BASE=${PORT_BASE:-25000}
KEY=bench-token-key-0123456789abcdef
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

# measure MODE DEPTH PORT: prints "instructions requests auth_instructions".
measure() {
  local mode=$1 depth=$2 port=$3 clients="" key_args=() dir=$work/$1-$2
  mkdir -p "$dir"
  if [ "$mode" = on ]; then
    clients=", \"clients\": {\"auth\": \"token\", \"token_key\": \"$KEY\"}"
    key_args=(--token-key "$KEY")
  fi
  printf '{"servers": [{"name": "Target", "listen": "127.0.0.1:%s", "peer_listen": "127.0.0.1:%s", "admin_listen": null, "neighbours": []}]%s}\n' \
    "$port" "$((port + 1))" "$clients" >"$dir/config.json"
  valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" \
    "$HERD" serve Target --config "$dir/config.json" --shards 1 --cpus 1 --log-dir "$dir/logs" >"$dir/server.out" 2>&1 &
  server=$!
  for _ in $(seq 600); do grep -q listening "$dir/server.out" && break; sleep 0.1; done
  grep -q listening "$dir/server.out" || { echo "herd under valgrind did not start: $dir/server.out" >&2; exit 1; }
  callgrind_control --zero "$server" >/dev/null 2>&1
  "$BENCH" load --addr "127.0.0.1:$port" --connections 64 --clients 64 --depth "$depth" --requests "$REQUESTS" \
    --duration 600 --warmup 0 --cpus 0 --server Target "${key_args[@]}" --json-only >"$dir/load.out" 2>&1
  callgrind_control --dump "$server" >/dev/null 2>&1
  kill -INT "$server"
  wait "$server" 2>/dev/null || true
  server=
  local done
  done=$(sed -n 's/^JSON //p' "$dir/load.out" | python3 -c 'import json, sys; r = json.load(sys.stdin); print(r["requests"] if r["errors"] == 0 else 0)')
  [ "$done" -gt 0 ] || { echo "the load failed or had errors: $dir/load.out" >&2; exit 1; }
  echo "$(instructions "$dir/cg.out.1") $done $(auth_instructions "$dir/cg.out.1")"
}

echo "| shape | instructions per IAMAT, tokens off | tokens on, without the AUTHs' checks | on / off | with them | one AUTH's token check |"
echo "|---|---|---|---|---|---|"
port=$PORT_BASE
for depth in $DEPTHS; do
  read -r off_ir off_n _ <<<"$(measure off "$depth" "$port")"
  read -r on_ir on_n on_auth <<<"$(measure on "$depth" $((port + 10)))"
  port=$((port + 20))
  python3 - "$depth" "$off_ir" "$off_n" "$on_ir" "$on_n" "${on_auth:-0}" <<'PY'
import sys
depth, off_ir, off_n, on_ir, on_n, auth = sys.argv[1], *map(int, sys.argv[2:])
off, on, on_all = off_ir / off_n, (on_ir - auth) / on_n, on_ir / on_n
print(f"| 64x{depth} | {off:,.0f} | {on:,.0f} | {on / off:.3f} | {on_all / off:.3f} | {auth / 64:,.0f} |")
PY
done
