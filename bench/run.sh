#!/usr/bin/env bash
# bench/run.sh: herd's standard scenarios, written up as bench/REPORT.md with
# plots in bench/plots/.
#
# Server pinned to CPU $SERVER_CPU, load generator (and flood sinks, probe,
# places-mock) on CPU $GEN_CPU, loopback only. Every figure is put next to
# a baseline measured in the same run: the bare glommio line server of
# herd-bench. Every load run records the busy share of both CPUs, so a row
# whose server CPU was not saturated says so. Bounded: each load runs
# $DURATION s after $WARMUP s of warm-up (the growth fill at most
# $GROWTH_MAX_S s); every process started here is stopped by PID on exit.
#
# Usage: bench/run.sh            (about ten minutes)
#        DURATION=10 bench/run.sh
#        SCENARIOS=tokens,tls,phones,floor bench/run.sh
#                   (only those scenarios, which start servers of their own;
#                   their sections replace the same sections of $OUT and of
#                   the copy in bench/README.md, the rest is left as it was)
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
SERVER_CPU=${SERVER_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
OUT=${OUT:-bench/REPORT.md}
PLOTS=${PLOTS:-bench/plots}
PORT_BASE=${PORT_BASE:-31000}
GROWTH_CLIENTS=${GROWTH_CLIENTS:-5000000}
GROWTH_MAX_S=${GROWTH_MAX_S:-120}
# Open loops refuse to run when the generator's warm-up send lag p99 is
# over this (the lag is inside every latency figure anyway, measured from
# the scheduled time, and reported in its own column).
MAX_LAG_MS=${MAX_LAG_MS:-20}
# The slow neighbour reads this many bytes a second.
SLOW_BYTES_PER_SEC=${SLOW_BYTES_PER_SEC:-65536}
# Alternated rounds of the tokens on/off, TLS/plain and posts/IAMAT
# comparisons.
TOKEN_ROUNDS=${TOKEN_ROUNDS:-4}
TLS_ROUNDS=${TLS_ROUNDS:-4}
PHONES_ROUNDS=${PHONES_ROUNDS:-4}
# Alternated rounds of herd against the floor and the bare server; whether
# to add 64x32 rows: "auto" (when the floor's core was under 95 % busy at
# 64x16 in round 1), "yes" or "no".
FLOOR_ROUNDS=${FLOOR_ROUNDS:-4}
FLOOR_DEEP=${FLOOR_DEEP:-auto}
# "all", or a comma-separated list of the scenarios that can run alone.
SCENARIOS=${SCENARIOS:-all}
ALONE="tokens tokens-aa tls phones floor"
if [ "$SCENARIOS" != all ]; then
  for s in ${SCENARIOS//,/ }; do
    [[ " $ALONE " == *" $s "* ]] || {
      echo "SCENARIOS: no scenario '$s' that runs alone (all, or some of: $ALONE)" >&2
      exit 2
    }
  done
fi

cargo build --release --bins >&2
HERD=$PWD/target/release/herd
BENCH=$PWD/target/release/herd-bench
PLACES_MOCK=$PWD/target/release/herd-places-mock

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
# 10,000 connections need as many descriptors on both sides.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

results=$work/results.jsonl
notes=$work/notes.txt
hist=$work/hist
mkdir -p "$hist" "$PLOTS"
: >"$results"
: >"$notes"

note() { echo "$*" | tee -a "$notes" >&2; }

# The CPUs the server of the next runs uses (the 2-shard run changes it).
server_cpus=$SERVER_CPU

# Runs herd-bench load; appends its JSON line tagged with the scenario and
# keeps its interval log for the plots.
run_load() {
  local scenario=$1
  shift
  local line status=0
  line=$("$BENCH" load --label "$scenario" --json-only --cpus "$GEN_CPU" --server-cpus "$server_cpus" \
    --duration "$DURATION" --warmup "${RUN_WARMUP:-$WARMUP}" --hist-log "$hist/$scenario.hlog" "$@" |
    sed -n 's/^JSON //p') || status=$?
  if [ -z "$line" ]; then
    note "$scenario: no result (herd-bench exit $status)"
    return 0
  fi
  echo "{\"scenario\": \"$scenario\", \"exit\": $status, \"result\": $line}" >>"$results"
  echo "$scenario: $line" >&2
}

# The achieved rate of a scenario already run, as an integer ('' if none).
rate_of() {
  python3 -c "
import json
for l in open('$results'):
    r = json.loads(l)
    if r['scenario'] == '$1' and r['result'].get('achieved_rate'): print(int(r['result']['achieved_rate']))
"
}

# The four load shapes of a scenario: closed loop 64 x 1, pipelined
# 64 x 16, and open loop at 50 % and 80 % of the 64 x 1 maximum (the open
# loop sends single requests, so its ceiling is the unpipelined one).
# Usage: modes PREFIX ADDR SERVER-NAME [extra load args...]
modes() {
  local prefix=$1 addr=$2 name=$3
  shift 3
  run_load "$prefix-64x1" --addr "$addr" --connections 64 --depth 1 --server "$name" "$@"
  run_load "$prefix-64x16" --addr "$addr" --connections 64 --depth 16 --server "$name" "$@"
  local max
  max=$(rate_of "$prefix-64x1")
  if [ -n "$max" ]; then
    run_load "$prefix-open-50" --addr "$addr" --connections 64 --rate $((max / 2)) --server "$name" \
      --max-send-lag-ms "$MAX_LAG_MS" "$@"
    run_load "$prefix-open-80" --addr "$addr" --connections 64 --rate $((max * 8 / 10)) --server "$name" \
      --max-send-lag-ms "$MAX_LAG_MS" "$@"
  fi
}

# Open loop at the healthy scenario's 50 % and 80 % rates: the same offered
# load, so a failure scenario's tail compares with the healthy one directly.
# Usage: at_healthy_rates PREFIX ADDR SERVER-NAME
at_healthy_rates() {
  local prefix=$1 addr=$2 name=$3 level r
  for level in 50 80; do
    r=$(rate_of "healthy-open-$level")
    [ -n "$r" ] && run_load "$prefix-at-healthy-open-$level" --addr "$addr" --connections 64 --rate "$r" \
      --server "$name" --max-send-lag-ms "$MAX_LAG_MS"
  done
}

# Waits until a line matching $2 appears in file $1 (bounded: 15 s).
wait_for() {
  for _ in $(seq 150); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  note "timed out waiting for '$2' in $1"
  cat "$1" >&2
  return 1
}

# Starts a command in the background, output to $work/$name.out; its PID
# goes to $last (not printed: a $(...) subshell would lose it from $pids).
start() {
  local name=$1
  shift
  "$@" >"$work/$name.out" 2>&1 &
  last=$!
  pids+=("$last")
}

stop() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

herd_config() { # file, JSON of servers, extra top-level JSON (may be empty)
  printf '{"servers": %s %s}\n' "$2" "$3" >"$1"
}

p() { echo $((PORT_BASE + $1)); }

# A sink as a neighbour of Target in a config: links dial peer addresses,
# so the sink's port is its peer address (its client address, never used,
# is elsewhere: a herd config keeps the two apart).
sink_entry() { # name, port offset
  printf '{"name": "%s", "listen": "127.0.0.1:%s", "peer_listen": "127.0.0.1:%s", "admin_listen": null, "neighbours": ["Target"]}' \
    "$1" "$(p $(($2 + 200)))" "$(p "$2")"
}

# A one-server herd "Target" at port offset $2 whose three neighbours S1..S3
# are at offsets $2+1..$2+3, with extra top-level JSON $3 (may be absent)
# and extra JSON in Target's entry $4 (may be absent). Written to file $1.
target_config() {
  local base=$2
  herd_config "$1" "[
  {\"name\": \"Target\", \"listen\": \"127.0.0.1:$(p "$base")\", \"peer_listen\": \"127.0.0.1:$(p $((base + 100)))\",
   \"admin_listen\": \"127.0.0.1:$(p $((base + 400)))\",
   \"neighbours\": [\"S1\", \"S2\", \"S3\"]${4:-}},
  $(sink_entry S1 $((base + 1))), $(sink_entry S2 $((base + 2))), $(sink_entry S3 $((base + 3)))]" \
    ', "limits": {"max_connections_per_shard": 20000}'"${3:-}"
}

# Starts herd serve Target from config $1 with $2 shards on CPUs $3; its
# PID goes to $target.
start_target() {
  local cfg=$1 shards=$2 cpus=$3 tag=$4
  start "target-$tag" taskset -c "$cpus" "$HERD" serve Target --config "$cfg" --shards "$shards" \
    --log-dir "$work/logs-$tag"
  target=$last
  wait_for "$work/target-$tag.out" "listening"
  sleep 1 # the links open (or fail to)
}

# Starts three sinks at port offsets $1+1..$1+3 (the neighbours S1..S3 of
# target_config's herd at $1); their PIDs go to $sinks.
start_sinks() {
  sinks=()
  local i
  for i in 1 2 3; do
    start "sink-$1-$i" "$BENCH" sink --listen "127.0.0.1:$(p $(($1 + i)))" --cpu "$GEN_CPU"
    wait_for "$work/sink-$1-$i.out" "listening"
    sinks+=("$last")
  done
}

# --- Client tokens: the same workload with tokens on and off --------------
# Two one-shard servers like the healthy one (three sinks each), one with
# clients.auth "token" and one without, up at once on the server's CPU;
# 64 connections with one client each in both (--clients 64; with tokens
# each connection sends one AUTH before the run). $TOKEN_ROUNDS rounds of
# 64x1 and 64x16. Two servers with the same config (tokens off in both),
# kept up and alternated, differed by a median of 0.94x (64x1) and 1.12x
# (64x16) over four rounds: more than the 3 % at stake. So both servers
# start fresh every round, the order is swapped every round and their
# places (ports and sinks) every second round (four rounds take each order
# in each place once). The report takes the median of the rounds' on/off
# ratios against "within 3 %"; even so, on the 2-vCPU VM this design's
# control (below) landed 5-6 % from 1 over eight rounds (2026-12-06), so a
# median within that of 1 measured no difference either way.
# With $1 "tokens-aa": its control, the same runs with tokens off in both
# servers ("on" names the place tokens would be), to show how far from 1
# this design's median lands with no difference at all (not in a full run;
# SCENARIOS=tokens,tokens-aa).
scenario_tokens() {
  local name=${1:-tokens} key=bench-token-key-0123456789abcdef round depth who order on off on_at off_at at_160
  local tokens=", \"clients\": {\"auth\": \"token\", \"token_key\": \"$key\"}" key_args=(--token-key "$key")
  if [ "$name" = tokens-aa ]; then
    tokens="" key_args=()
  fi
  start_sinks 160
  at_160=("${sinks[@]}")
  start_sinks 170
  for round in $(seq "$TOKEN_ROUNDS"); do
    order="on off"
    [ $((round % 2)) = 0 ] && order="off on"
    # Rounds 1, 2, 5, 6, ...: tokens on at 160; 3, 4, 7, 8, ...: at 170.
    on_at=160 off_at=170
    [ $(((round - 1) / 2 % 2)) = 1 ] && on_at=170 off_at=160
    target_config "$work/tokens-on.json" "$on_at" "$tokens"
    target_config "$work/tokens-off.json" "$off_at"
    for who in $order; do
      start_target "$work/tokens-$who.json" 1 "$SERVER_CPU" "$name-$who-r$round"
      [ "$who" = on ] && on=$target || off=$target
    done
    for depth in 1 16; do
      for who in $order; do
        if [ "$who" = on ]; then
          run_load "$name-on-64x$depth-r$round" --addr "127.0.0.1:$(p "$on_at")" --connections 64 --clients 64 \
            --depth "$depth" --server Target --pid "$on" "${key_args[@]}"
        else
          run_load "$name-off-64x$depth-r$round" --addr "127.0.0.1:$(p "$off_at")" --connections 64 --clients 64 \
            --depth "$depth" --server Target --pid "$off"
        fi
      done
    done
    stop "$on"
    stop "$off"
  done
  for pid in "${at_160[@]}" "${sinks[@]}"; do stop "$pid"; done
}

scenario_tokens_aa() {
  scenario_tokens tokens-aa
}

# --- Clients over TLS: one server's plain port against its TLS port -------
# A one-shard server like the healthy one with a client_tls_listen too (its
# certificate from herd certs, in a client_tls section: a tls section would
# make its links TLS, which the sinks do not speak). Loaded over each port
# in turn, $TLS_ROUNDS rounds of 64x1 and 64x16, the order swapped every
# round. The generator seals and opens records on its own CPU and may be
# what limits the TLS rate, so each run also reports the server's own CPU
# time per request (--pid): what TLS costs the server, either way.
scenario_tls() {
  local round depth kind order
  target_config "$work/tls.json" 180 \
    ", \"client_tls\": {\"cert\": \"$work/tls-certs/{name}.pem\", \"key\": \"$work/tls-certs/{name}-key.pem\"}" \
    ", \"client_tls_listen\": \"127.0.0.1:$(p 190)\""
  "$HERD" certs --config "$work/tls.json" --out "$work/tls-certs" >/dev/null
  start_sinks 180
  start_target "$work/tls.json" 1 "$SERVER_CPU" tls
  for round in $(seq "$TLS_ROUNDS"); do
    for depth in 1 16; do
      order="plain tls"
      [ $((round % 2)) = 0 ] && order="tls plain"
      for kind in $order; do
        if [ "$kind" = tls ]; then
          run_load "tls-tls-64x$depth-r$round" --addr "127.0.0.1:$(p 190)" --tls-ca "$work/tls-certs/ca.pem" \
            --connections 64 --depth "$depth" --server Target --pid "$target"
        else
          run_load "tls-plain-64x$depth-r$round" --addr "127.0.0.1:$(p 180)" --connections 64 \
            --depth "$depth" --server Target --pid "$target"
        fi
      done
    done
  done
  for pid in "$target" "${sinks[@]}"; do stop "$pid"; done
}

# --- Phones over HTTP: OwnTracks posts against IAMAT lines ----------------
# A one-shard server like the healthy one (three sinks) with an
# http_listen, loaded over its line port (IAMAT, 64 connections with one
# client each) and over its HTTP port (OwnTracks locations, herd-bench load
# --post owntracks: 64 connections, one device each, keep-alive, pipelined
# at depth 16) in turn: $PHONES_ROUNDS rounds of 64x1 and 64x16, the order
# swapped every round. Every post is a new location (stored and flooded),
# as every IAMAT is. The report gives the median of the rounds'
# posts/IAMAT ratios per depth against issue 29's ">= 0.25x the line rate
# per core" (one shard on one core here), and the server's CPU time per
# request of each (--pid).
scenario_phones() {
  local round depth kind order
  target_config "$work/phones.json" 140 "" ", \"http_listen\": \"127.0.0.1:$(p 145)\""
  start_sinks 140
  start_target "$work/phones.json" 1 "$SERVER_CPU" phones
  for round in $(seq "$PHONES_ROUNDS"); do
    for depth in 1 16; do
      order="iamat post"
      [ $((round % 2)) = 0 ] && order="post iamat"
      for kind in $order; do
        if [ "$kind" = post ]; then
          run_load "phones-post-64x$depth-r$round" --addr "127.0.0.1:$(p 145)" --post owntracks \
            --connections 64 --clients 64 --depth "$depth" --pid "$target"
        else
          run_load "phones-iamat-64x$depth-r$round" --addr "127.0.0.1:$(p 140)" --connections 64 --clients 64 \
            --depth "$depth" --server Target --pid "$target"
        fi
      done
    done
  done
  for pid in "$target" "${sinks[@]}"; do stop "$pid"; done
}

# --- Against the floor: herd, the floor and bare in alternated rounds -----
# The floor (herd-bench floor) is the bare server that also copies every
# reply to three sinks, one write per batch per sink: the I/O any server
# that answers and floods must do, with no parsing and no store. herd /
# floor is the cost of herd's own work; herd / bare adds the flood's I/O.
# Three servers up at once on the server's CPU: a one-shard herd like the
# healthy one (three herd-bench sink neighbours), the floor (three
# herd-bench sink discard sinks) and bare; all six sinks on the
# generator's CPU. $FLOOR_ROUNDS rounds of 64x1 and 64x16, the order
# swapped every round, each run with the server's own CPU share (--pid).
# When the floor's core is under 95 % busy at 64x16 in round 1 the
# generator, not the floor, was the limit there: every round then also
# runs 64x32 (FLOOR_DEEP=auto; yes or no force it).
scenario_floor() {
  local round depth kind order deep=$FLOOR_DEEP busy herd_sinks floor_sinks floor bare
  target_config "$work/floor.json" 210
  start_sinks 210
  herd_sinks=("${sinks[@]}")
  start_sinks 215
  floor_sinks=("${sinks[@]}")
  start_target "$work/floor.json" 1 "$SERVER_CPU" floor
  start floor-server taskset -c "$SERVER_CPU" "$BENCH" floor --listen "127.0.0.1:$(p 219)" --cpu "$SERVER_CPU" \
    --sink "127.0.0.1:$(p 216)" --sink "127.0.0.1:$(p 217)" --sink "127.0.0.1:$(p 218)"
  floor=$last
  wait_for "$work/floor-server.out" "listening"
  start floor-bare taskset -c "$SERVER_CPU" "$BENCH" bare --listen "127.0.0.1:$(p 220)" --cpu "$SERVER_CPU"
  bare=$last
  wait_for "$work/floor-bare.out" "listening"
  sleep 1 # the floor dials its sinks
  for round in $(seq "$FLOOR_ROUNDS"); do
    order="herd floor bare"
    [ $((round % 2)) = 0 ] && order="bare floor herd"
    for depth in 1 16 32; do
      if [ "$depth" = 32 ] && [ "$deep" != yes ]; then
        continue
      fi
      for kind in $order; do
        case $kind in
          herd) run_load "floor-herd-64x$depth-r$round" --addr "127.0.0.1:$(p 210)" --connections 64 \
            --depth "$depth" --server Target --pid "$target" ;;
          floor) run_load "floor-floor-64x$depth-r$round" --addr "127.0.0.1:$(p 219)" --connections 64 \
            --depth "$depth" --server Bare --pid "$floor" ;;
          bare) run_load "floor-bare-64x$depth-r$round" --addr "127.0.0.1:$(p 220)" --connections 64 \
            --depth "$depth" --server Bare --pid "$bare" ;;
        esac
      done
      if [ "$depth" = 16 ] && [ "$deep" = auto ]; then
        busy=$(python3 -c "
import json
for l in open('$results'):
    r = json.loads(l)
    if r['scenario'] == 'floor-floor-64x16-r$round': print(r['result'].get('server_cpu_busy_pct') or 0)
")
        deep=no
        if python3 -c "import sys; sys.exit(0 if float('${busy:-0}') < 95 else 1)"; then
          deep=yes
          note "floor: the floor's core was ${busy:-?} % busy at 64x16 in round $round (under 95 %: the generator was the limit), so every round also runs 64x32"
        fi
      fi
    done
  done
  grep -h "floor sink" "$work/floor-server.out" | tail -n 3 | while read -r l; do note "floor at the end: $l"; done
  for pid in "$target" "$floor" "$bare" "${herd_sinks[@]}" "${floor_sinks[@]}"; do stop "$pid"; done
}

if [ "$SCENARIOS" != all ]; then
  for s in ${SCENARIOS//,/ }; do
    "scenario_${s//-/_}"
  done
  # Only these scenarios' sections, put in place of the same sections of
  # the last full report and of its copy in bench/README.md.
  python3 bench/report.py --sections "$results" "$notes" "$SERVER_CPU" "$GEN_CPU" >"$work/sections.md"
  python3 bench/report.py --splice "$work/sections.md" "$OUT"
  python3 bench/report.py --splice "$work/sections.md" bench/README.md
  echo "wrote the sections of $SCENARIOS into $OUT and bench/README.md" >&2
  exit 0
fi

# --- Baseline: the bare glommio line server -------------------------------
start bare taskset -c "$SERVER_CPU" "$BENCH" bare --listen "127.0.0.1:$(p 0)" --cpu "$SERVER_CPU"
bare=$last
wait_for "$work/bare.out" "listening"
modes bare "127.0.0.1:$(p 0)" Bare

# --- Healthy: one shard flooding to three sink neighbours ------------------
target_config "$work/healthy.json" 10
for i in 1 2 3; do
  start "sink$i" "$BENCH" sink --listen "127.0.0.1:$(p $((10 + i)))" --cpu "$GEN_CPU"
  wait_for "$work/sink$i.out" "listening"
done
start_target "$work/healthy.json" 1 "$SERVER_CPU" healthy
modes healthy "127.0.0.1:$(p 10)" Target --pid "$target"
# Idle-ish connections on top of the records stored so far: each of 10,000
# connections is one phone that sends its own location about every two
# seconds (one client each: with the default million clients split over
# them, they named some 45,000 clients the fill never stored, and the row
# below measured 1.045 M records, not 1 M). Opening them takes the
# generator a moment: a longer warm-up and a looser send-lag limit
# (latency is not the point of this run).
RUN_WARMUP=4 run_load healthy-10k-conns --addr "127.0.0.1:$(p 10)" --connections 10000 --rate 5000 \
  --clients 10000 --server Target --pid "$target" --max-send-lag-ms 200
stop "$target"
records=$(grep -o 'records=[0-9]*' "$work/logs-healthy/Target.log" | tail -n 1 | cut -d= -f2 || true)
echo "{\"scenario\": \"records-held\", \"exit\": 0, \"result\": {\"records\": ${records:-null}}}" >>"$results"

# The bare server at herd's open-loop rates: whose tail is longer at the
# same offered load.
at_healthy_rates bare "127.0.0.1:$(p 0)" Bare

# --- Throughput, interleaved: bare and herd in alternated rounds ----------
# On this VM one closed-loop run of the same server moves by 10 to 15 %
# from one minute to the next, and whichever of two servers runs first in
# a pair is favoured by a few per cent: one run of each decides nothing
# against a 0.9x target. Here the bare server and a fresh healthy herd
# (the same three sinks, filled with the same million clients first) take
# $TPUT_ROUNDS rounds of 64x1 and 64x16, the order swapped every round;
# the report takes the median of the rounds' ratios.
TPUT_ROUNDS=${TPUT_ROUNDS:-4}
start_target "$work/healthy.json" 1 "$SERVER_CPU" tput
RUN_WARMUP=0 run_load tput-fill --addr "127.0.0.1:$(p 10)" --connections 64 --depth 16 \
  --requests 1000000 --server Target
for round in $(seq "$TPUT_ROUNDS"); do
  for depth in 1 16; do
    order="bare:0:Bare herd:10:Target"
    [ $((round % 2)) = 0 ] && order="herd:10:Target bare:0:Bare"
    for who in $order; do
      IFS=: read -r kind offset name <<<"$who"
      run_load "tput-$kind-64x$depth-r$round" --addr "127.0.0.1:$(p "$offset")" --connections 64 \
        --depth "$depth" --server "$name"
    done
  done
done
stop "$target"
stop "$bare"

# --- Client tokens, clients over TLS, phones over HTTP (functions above) --
scenario_tokens
scenario_tls
scenario_phones
scenario_floor

# --- Growth: 5 M distinct clients, filled at full speed (healthy links) ---
start_target "$work/healthy.json" 1 "$SERVER_CPU" growth
RUN_WARMUP=0 DURATION=$GROWTH_MAX_S run_load growth --addr "127.0.0.1:$(p 10)" --connections 64 --depth 16 \
  --clients "$GROWTH_CLIENTS" --requests "$GROWTH_CLIENTS" --server Target --pid "$target"
stop "$target"

# --- Persistence: the journal against persistence off (the healthy runs) --
# The same herd and sinks as the healthy runs, with a journal in $work
# (not tmpfs). Each mode: closed loop 64x1 and 64x16, and open loop at the
# healthy 80 % rate (the same offered load).
for fsync in everysec always; do
  target_config "$work/journal-$fsync.json" 10 ", \"persistence\": {\"dir\": \"$work/journal-$fsync\", \"fsync\": \"$fsync\"}"
  start_target "$work/journal-$fsync.json" 1 "$SERVER_CPU" "journal-$fsync"
  run_load "journal-$fsync-64x1" --addr "127.0.0.1:$(p 10)" --connections 64 --depth 1 --server Target --pid "$target"
  run_load "journal-$fsync-64x16" --addr "127.0.0.1:$(p 10)" --connections 64 --depth 16 --server Target --pid "$target"
  r=$(rate_of healthy-open-80)
  [ -n "$r" ] && run_load "journal-$fsync-at-healthy-open-80" --addr "127.0.0.1:$(p 10)" --connections 64 --rate "$r" \
    --server Target --pid "$target" --max-send-lag-ms "$MAX_LAG_MS"
  stop "$target"
  rm -rf "$work/journal-$fsync"
done
# Compaction under load: 100,000 clients updated over and over (64x16), so
# the journal outgrows twice the live records again and again; its maximum
# latency against the steady one, and how many rewrites it took.
target_config "$work/journal-compact.json" 10 ", \"persistence\": {\"dir\": \"$work/journal-compact\", \"fsync\": \"everysec\"}"
start_target "$work/journal-compact.json" 1 "$SERVER_CPU" journal-compact
DURATION=$((DURATION * 3)) run_load journal-compaction --addr "127.0.0.1:$(p 10)" --connections 64 --depth 16 \
  --clients 100000 --server Target --pid "$target"
compactions=$(curl -s "http://127.0.0.1:$(p 410)/metrics" | sed -n 's/^herd_journal_compactions_total //p' || true)
echo "{\"scenario\": \"journal-compactions\", \"exit\": 0, \"result\": {\"compactions\": ${compactions:-null}}}" >>"$results"
stop "$target"
rm -rf "$work/journal-compact"
# Growth to $GROWTH_CLIENTS clients with the journal (everysec): every
# record a new one, so the file only grows.
target_config "$work/journal-growth.json" 10 ", \"persistence\": {\"dir\": \"$work/journal-growth\", \"fsync\": \"everysec\"}"
start_target "$work/journal-growth.json" 1 "$SERVER_CPU" journal-growth
RUN_WARMUP=0 DURATION=$GROWTH_MAX_S run_load journal-growth --addr "127.0.0.1:$(p 10)" --connections 64 --depth 16 \
  --clients "$GROWTH_CLIENTS" --requests "$GROWTH_CLIENTS" --server Target --pid "$target"
stop "$target"
rm -rf "$work/journal-growth"

# --- All neighbours down: nothing listens at their addresses --------------
target_config "$work/down.json" 50
start_target "$work/down.json" 1 "$SERVER_CPU" down
modes down "127.0.0.1:$(p 50)" Target --pid "$target"
at_healthy_rates down "127.0.0.1:$(p 50)" Target
stop "$target"

# --- One neighbour slow: S3 reads $SLOW_BYTES_PER_SEC bytes/s --------------
target_config "$work/slow.json" 60
start slow1 "$BENCH" sink --listen "127.0.0.1:$(p 61)" --cpu "$GEN_CPU"
wait_for "$work/slow1.out" "listening"
start slow2 "$BENCH" sink --listen "127.0.0.1:$(p 62)" --cpu "$GEN_CPU"
wait_for "$work/slow2.out" "listening"
start slow3 "$BENCH" sink --listen "127.0.0.1:$(p 63)" --cpu "$GEN_CPU" --bytes-per-sec "$SLOW_BYTES_PER_SEC"
wait_for "$work/slow3.out" "listening"
start_target "$work/slow.json" 1 "$SERVER_CPU" slow
modes slow "127.0.0.1:$(p 60)" Target --pid "$target"
at_healthy_rates slow "127.0.0.1:$(p 60)" Target
stop "$target"

# --- Failure, interleaved: healthy, down and slow side by side ------------
# The runs above measure each failure minutes after the healthy runs, and
# this VM's stalls move a p99 of a millisecond or two by several times
# between minutes. Here three servers (healthy with three sinks, every
# neighbour down, one neighbour slow) run at once on the server's CPU,
# only one loaded at a time, and take the healthy 50 % and 80 % rates in
# turn, $PAIRED_ROUNDS rounds: the report compares medians of p99.
PAIRED_ROUNDS=${PAIRED_ROUNDS:-3}
target_config "$work/paired-healthy.json" 70
target_config "$work/paired-down.json" 80
target_config "$work/paired-slow.json" 90
for i in 1 2 3; do
  start "paired-sink$i" "$BENCH" sink --listen "127.0.0.1:$(p $((70 + i)))" --cpu "$GEN_CPU"
  wait_for "$work/paired-sink$i.out" "listening"
done
for i in 1 2 3; do
  slow_args=()
  [ "$i" = 3 ] && slow_args=(--bytes-per-sec "$SLOW_BYTES_PER_SEC")
  start "paired-slow-sink$i" "$BENCH" sink --listen "127.0.0.1:$(p $((90 + i)))" --cpu "$GEN_CPU" "${slow_args[@]}"
  wait_for "$work/paired-slow-sink$i.out" "listening"
done
start_target "$work/paired-healthy.json" 1 "$SERVER_CPU" paired-healthy
paired_healthy=$target
start_target "$work/paired-down.json" 1 "$SERVER_CPU" paired-down
paired_down=$target
start_target "$work/paired-slow.json" 1 "$SERVER_CPU" paired-slow
paired_slow=$target
for round in $(seq "$PAIRED_ROUNDS"); do
  for level in 50 80; do
    r=$(rate_of "healthy-open-$level")
    [ -z "$r" ] && continue
    for kind in healthy:70 down:80 slow:90; do
      run_load "paired-${kind%%:*}-$level-r$round" --addr "127.0.0.1:$(p "${kind##*:}")" --connections 64 \
        --rate "$r" --server Target --max-send-lag-ms "$MAX_LAG_MS"
    done
  done
done
for pid in "$paired_healthy" "$paired_down" "$paired_slow"; do stop "$pid"; done

# --- Shard scaling: 1 and 2 shards, flooding to the healthy sinks ---------
for shards in 1 2; do
  cpus=$SERVER_CPU
  [ "$shards" = 2 ] && cpus="$SERVER_CPU,$GEN_CPU"
  server_cpus=$cpus
  start_target "$work/healthy.json" "$shards" "$cpus" "shards$shards"
  modes "shards-$shards" "127.0.0.1:$(p 10)" Target
  stop "$target"
done
server_cpus=$SERVER_CPU
for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done

# --- WHATSAT: places-mock with 20 ms of upstream latency ------------------
# Over Places API (New), the default: the mock checks the key and field mask
# as Google does and the server translates each answer to the legacy JSON.
start mock taskset -c "$GEN_CPU" "$PLACES_MOCK" --listen "127.0.0.1:$(p 20)" --latency-ms 20
mock=$last
wait_for "$work/mock.out" "listening"
herd_config "$work/near.json" "[{\"name\": \"Near\", \"listen\": \"127.0.0.1:$(p 21)\", \"peer_listen\": \"127.0.0.1:$(p 121)\", \"admin_listen\": \"127.0.0.1:$(p 421)\", \"neighbours\": []}]" \
  ", \"places\": {\"provider\": \"mock\", \"base_url\": \"http://127.0.0.1:$(p 20)\", \"key\": \"bench-key\"}"
start near taskset -c "$SERVER_CPU" "$HERD" serve Near --config "$work/near.json" --shards 1 --log-dir "$work/logs"
near=$last
wait_for "$work/near.out" "listening"
# Half WHATSATs over 2,000 clients: most lookups are new (clients move).
modes whatsat-mix "127.0.0.1:$(p 21)" Near --clients 2000 --whatsat-pct 50 --max-results 5
upstream=$(curl -s "http://127.0.0.1:$(p 20)/stats" || echo '{}')
echo "{\"scenario\": \"whatsat-upstream\", \"exit\": 0, \"result\": $upstream}" >>"$results"
# Cached WHATSATs with 20 results against IAMATs on the same server: one
# client per connection, so after the first lookup every answer is cached.
run_load near-iamat-64x1 --addr "127.0.0.1:$(p 21)" --connections 64 --depth 1 --server Near
run_load whatsat-cached-64x1 --addr "127.0.0.1:$(p 21)" --connections 64 --depth 1 --server Near \
  --clients 64 --whatsat-pct 100 --max-results 20
stop "$near"
stop "$mock"

# --- Propagation across the default topology -------------------------------
# A probe (the bench) joins as a neighbour of Holiday: two hops from Goloman,
# where Welsh also is.
servers=""
ports=(30 31 32 33 34)
names=(Goloman Hands Holiday Wilkes Welsh)
neigh=('"Hands", "Holiday", "Wilkes"' '"Goloman", "Wilkes"' '"Goloman", "Welsh", "Wilkes", "Probe"'
  '"Goloman", "Hands", "Holiday"' '"Holiday"')
for i in 0 1 2 3 4; do
  servers+="{\"name\": \"${names[$i]}\", \"listen\": \"127.0.0.1:$(p ${ports[$i]})\","
  servers+=" \"peer_listen\": \"127.0.0.1:$(p $((ports[i] + 100)))\", \"admin_listen\": \"127.0.0.1:$(p $((ports[i] + 400)))\","
  servers+=" \"neighbours\": [${neigh[$i]}]},"
done
# Holiday dials the probe's links at its peer address.
servers+="{\"name\": \"Probe\", \"listen\": \"127.0.0.1:$(p 235)\", \"peer_listen\": \"127.0.0.1:$(p 35)\", \"admin_listen\": null,"
servers+=" \"neighbours\": [\"Holiday\"]}"
herd_config "$work/herd.json" "[$servers]" ""
for name in "${names[@]}"; do
  start "$name" taskset -c "$SERVER_CPU" "$HERD" serve "$name" --config "$work/herd.json" --shards 1 \
    --log-dir "$work/logs"
  wait_for "$work/$name.out" "listening"
done
line=$("$BENCH" propagation --json-only --send "127.0.0.1:$(p 30)" --probe-listen "127.0.0.1:$(p 35)" \
  --probe-name Probe --count 2000 --rate 500 --cpus "$GEN_CPU" | sed -n 's/^JSON //p') || true
[ -n "$line" ] && echo "{\"scenario\": \"propagation-2-hops\", \"exit\": 0, \"result\": $line}" >>"$results"
for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done

# --- Redis GEOADD, the same shapes (64 connections, 1 and 16 in flight) ---
if command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null; then
  # Without persistence, then with its append-only file synced as herd's
  # journal can be (everysec, always), in a folder of the run.
  for aof in no everysec always; do
    if [ "$aof" = no ]; then
      persistence=(--appendonly no) name=redis-geoadd
    else
      mkdir -p "$work/redis-$aof"
      persistence=(--appendonly yes --appendfsync "$aof" --dir "$work/redis-$aof") name=redis-aof-$aof
    fi
    start redis taskset -c "$SERVER_CPU" redis-server --port "$(p 40)" --save '' "${persistence[@]}"
    redis=$last
    sleep 0.5
    for depth in 1 16; do
      rps=$(taskset -c "$GEN_CPU" redis-benchmark -p "$(p 40)" -c 64 -P "$depth" -n $((150000 * DURATION * depth / 4 + 150000)) \
        -r 1000000 -q GEOADD herd -118.445127 34.068930 client:__rand_int__ |
        tr '\r' '\n' | grep -o '[0-9.]* requests per second' | tail -n 1 | cut -d' ' -f1 || true)
      echo "{\"scenario\": \"$name-64x$depth\", \"exit\": 0, \"result\": {\"achieved_rate\": ${rps:-null}}}" >>"$results"
    done
    stop "$redis"
    rm -rf "$work/redis-$aof"
  done
else
  note "redis-server or redis-benchmark not installed: no GEOADD comparison (apt-get install redis-server redis-tools)"
fi

# --- Plots -----------------------------------------------------------------
plot() { # kind, file, title, scenarios...
  local kind=$1 file=$2 title=$3
  shift 3
  local series=()
  for s in "$@"; do
    [ -s "$hist/$s.hlog" ] && series+=("$s=$hist/$s.hlog")
  done
  if [ ${#series[@]} -gt 0 ]; then
    "$BENCH" plot --kind "$kind" --out "$PLOTS/$file.svg" --title "$title" "${series[@]}" ||
      note "plot $file failed"
  fi
}
plot percentiles closed "Closed loop: herd flooding to 3 neighbours vs the bare server" \
  bare-64x1 healthy-64x1 bare-64x16 healthy-64x16
plot percentiles open "Open loop: herd (healthy) vs the bare server at the same rates" \
  healthy-open-50 bare-at-healthy-open-50 healthy-open-80 bare-at-healthy-open-80
plot percentiles failure "Open loop at the healthy rates: neighbours healthy, down or slow" \
  healthy-open-50 down-at-healthy-open-50 slow-at-healthy-open-50 \
  healthy-open-80 down-at-healthy-open-80 slow-at-healthy-open-80
plot timeline failure-timeline "Open loop at the healthy 80 % rate, per second: neighbours healthy, down or slow" \
  healthy-open-80 down-at-healthy-open-80 slow-at-healthy-open-80
plot percentiles growth "Growth to $GROWTH_CLIENTS clients (64 x 16) vs steady state" growth healthy-64x16
plot timeline growth-timeline "Growth to $GROWTH_CLIENTS clients, per second" growth
plot percentiles whatsat "WHATSAT: 50 % mix over places-mock (20 ms), and cached 20-result answers" \
  whatsat-mix-64x1 whatsat-mix-open-50 whatsat-mix-open-80 near-iamat-64x1 whatsat-cached-64x1
plot percentiles shards "1 shard vs 2 shards (64 x 16)" shards-1-64x16 shards-2-64x16
plot percentiles journal "Journal (everysec, always) vs persistence off" \
  healthy-64x1 journal-everysec-64x1 journal-always-64x1 healthy-64x16 journal-everysec-64x16 journal-always-64x16 \
  healthy-open-80 journal-everysec-at-healthy-open-80 journal-always-at-healthy-open-80
plot timeline journal-timeline "Journal compaction under load and growth with the journal, per second" \
  journal-compaction journal-growth growth
plot percentiles conns "10,000 connections, 5,000 IAMAT/s" healthy-10k-conns

python3 bench/report.py "$results" "$notes" "$SERVER_CPU" "$GEN_CPU" >"$OUT"
# The same report at the end of bench/README.md, between its markers.
python3 - "$OUT" bench/README.md <<'PY'
import sys
report, readme = open(sys.argv[1]).read(), open(sys.argv[2]).read()
head, rest = readme.split("<!-- report -->", 1)
tail = rest.split("<!-- /report -->", 1)[1]
body = report.replace("# herd bench report", "").strip()
open(sys.argv[2], "w").write(f"{head}<!-- report -->\n{body}\n<!-- /report -->{tail}")
PY
echo "wrote $OUT, $PLOTS/ and bench/README.md" >&2
