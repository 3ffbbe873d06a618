#!/usr/bin/env bash
# nc smoke test of a running herd, as a person would try it: `herd up`, then
# IAMAT, WHATSAT (two hops away) and an invalid line through netcat-openbsd.
# Usage: tests/smoke.sh [HERD_BINARY] [CONFIG_JSON]
# Bounded: every wait gives up after a few seconds; stops only what it started.
set -euo pipefail

herd_bin=${1:-target/release/herd}
config=${2:-}
work=$(mktemp -d)
up_pid=
passed=0
failed=0

cleanup() {
  if [ -n "$up_pid" ]; then
    kill -TERM "$up_pid" 2>/dev/null || true
    wait "$up_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

check() { # name, condition result (0 = ok), detail
  if [ "$2" -eq 0 ]; then
    passed=$((passed + 1)); echo "ok: $1"
  else
    failed=$((failed + 1)); echo "FAILED: $1: $3"
  fi
}

command -v nc >/dev/null || { echo "smoke: nc not found: install netcat-openbsd" >&2; exit 1; }

"$herd_bin" up ${config:+--config "$config"} --log-dir "$work/logs" >"$work/up.out" 2>&1 &
up_pid=$!
for _ in $(seq 150); do
  grep -q "Ctrl-C" "$work/up.out" && break
  kill -0 "$up_pid" 2>/dev/null || { cat "$work/up.out"; exit 1; }
  sleep 0.1
done
grep -q "Ctrl-C" "$work/up.out" || { echo "herd up did not start"; cat "$work/up.out"; exit 1; }

# The banner lists "  <name> <host:port> neighbours: ...": first server and last.
first=$(awk '/neighbours:/ {print $1, $2; exit}' "$work/up.out")
last=$(awk '/neighbours:/ {l = $1 " " $2} END {print l}' "$work/up.out")
first_name=${first% *}; first_addr=${first#* }
last_addr=${last#* }
for addr in $(awk '/neighbours:/ {print $2}' "$work/up.out"); do
  for _ in $(seq 100); do nc -z "${addr%:*}" "${addr##*:}" && break; sleep 0.1; done
done

ask() { # addr, text: one connection, half-close, read all
  printf '%b' "$2" | nc -N -w 5 "${1%:*}" "${1##*:}"
}

client="smoke.$$.test"
reply=$(ask "$first_addr" "IAMAT $client +34.068930-118.445127 1621464827.959498503\n")
[[ "$reply" =~ ^AT\ $first_name\ [+-][0-9]+\.[0-9]{9}\ $client\ \+34\.068930-118\.445127\ 1621464827\.959498503$ ]]
check "IAMAT answered with an AT line" $? "$reply"

far=""
for _ in $(seq 100); do
  far=$(ask "$last_addr" "WHATSAT $client 10 2\n" || true)
  [ "$(printf '%s\n' "$far" | head -n 1)" = "$reply" ] && break
  sleep 0.1
done
[ "$(printf '%s\n' "$far" | head -n 1)" = "$reply" ]
check "record flooded to $last_addr, answered by WHATSAT" $? "$far"
[ "$(printf '%s\n' "$far" | grep -c '"place_id"')" -eq 2 ]
check "WHATSAT results cut to 2" $? "$far"
printf '%s\n' "$far" | grep -q '"status": "OK"'
check "WHATSAT JSON has status OK" $? "$far"

invalid=$(ask "$first_addr" "HELLO herd\n")
[ "$invalid" = "? HELLO herd" ]
check "invalid line copied back" $? "$invalid"

echo "smoke: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
