#!/usr/bin/env bash
# bench/run.sh: herd's standard scenarios, written up as bench/REPORT.md.
#
# Server pinned to CPU $SERVER_CPU, load generator (and flood sinks, probe,
# places-mock) on CPU $GEN_CPU, loopback only. Every figure is put next to
# a baseline measured in the same run: the bare glommio line server of
# herd-bench. Bounded: each load runs $DURATION s after $WARMUP s of
# warm-up; every process started here is stopped by PID on exit.
#
# Usage: bench/run.sh            (about four minutes)
#        DURATION=10 bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
SERVER_CPU=${SERVER_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
OUT=${OUT:-bench/REPORT.md}
PORT_BASE=${PORT_BASE:-31000}

cargo build --release --bins >&2
HERD=$PWD/target/release/herd
BENCH=$PWD/target/release/herd-bench

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
: >"$results"
: >"$notes"

note() { echo "$*" | tee -a "$notes" >&2; }

# Runs herd-bench load; appends its JSON line tagged with the scenario.
run_load() {
  local scenario=$1
  shift
  local line status=0
  line=$("$BENCH" load --label "$scenario" --json-only --cpus "$GEN_CPU" \
    --duration "$DURATION" --warmup "${RUN_WARMUP:-$WARMUP}" "$@" | sed -n 's/^JSON //p') || status=$?
  if [ -z "$line" ]; then
    note "$scenario: no result (herd-bench exit $status)"
    return 0
  fi
  echo "{\"scenario\": \"$scenario\", \"exit\": $status, \"result\": $line}" >>"$results"
  echo "$scenario: $line" >&2
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

# --- Baseline: the bare glommio line server -------------------------------
start bare taskset -c "$SERVER_CPU" "$BENCH" bare --listen "127.0.0.1:$(p 0)" --cpu "$SERVER_CPU"
bare=$last
wait_for "$work/bare.out" "listening"
run_load bare-64x1 --addr "127.0.0.1:$(p 0)" --connections 64 --depth 1 --server Bare
run_load bare-64x16 --addr "127.0.0.1:$(p 0)" --connections 64 --depth 16 --server Bare

# --- herd: one server, one shard, flooding to three sink neighbours -------
cfg=$work/target.json
herd_config "$cfg" "[
  {\"name\": \"Target\", \"listen\": \"127.0.0.1:$(p 10)\", \"neighbours\": [\"S1\", \"S2\", \"S3\"]},
  {\"name\": \"S1\", \"listen\": \"127.0.0.1:$(p 11)\", \"neighbours\": [\"Target\"]},
  {\"name\": \"S2\", \"listen\": \"127.0.0.1:$(p 12)\", \"neighbours\": [\"Target\"]},
  {\"name\": \"S3\", \"listen\": \"127.0.0.1:$(p 13)\", \"neighbours\": [\"Target\"]}]" \
  ', "limits": {"max_connections_per_shard": 20000}'
for i in 1 2 3; do
  start "sink$i" "$BENCH" sink --listen "127.0.0.1:$(p $((10 + i)))" --cpu "$GEN_CPU"
  wait_for "$work/sink$i.out" "listening"
done
start target taskset -c "$SERVER_CPU" "$HERD" serve Target --config "$cfg" --shards 1 --log-dir "$work/logs"
target=$last
wait_for "$work/target.out" "listening"
sleep 1 # the three links open
run_load herd-64x1 --addr "127.0.0.1:$(p 10)" --connections 64 --depth 1 --server Target --pid "$target"
run_load herd-64x16 --addr "127.0.0.1:$(p 10)" --connections 64 --depth 16 --server Target --pid "$target"
max=$(python3 -c "
import json, sys
for l in open('$results'):
    r = json.loads(l)
    if r['scenario'] == 'herd-64x1': print(int(r['result']['achieved_rate']))
")
if [ -n "$max" ]; then
  run_load herd-open-50 --addr "127.0.0.1:$(p 10)" --connections 64 --rate $((max / 2)) --server Target --pid "$target"
  run_load herd-open-80 --addr "127.0.0.1:$(p 10)" --connections 64 --rate $((max * 8 / 10)) --server Target --pid "$target"
  echo "$max" >"$work/max"
fi
# Idle-ish connections on top of the records stored so far: each of 10,000
# connections sends about one IAMAT every two seconds.
# Opening 10,000 connections takes the generator a moment: a longer warm-up
# and a looser send-lag limit (latency is not the point of this run).
RUN_WARMUP=4 run_load herd-10k-conns --addr "127.0.0.1:$(p 10)" --connections 10000 --rate 5000 --server Target \
  --pid "$target" --max-send-lag-ms 200
stop "$target"
records=$(grep -o 'records=[0-9]*' "$work/logs/Target.log" | tail -n 1 | cut -d= -f2 || true)
echo "{\"scenario\": \"records-held\", \"exit\": 0, \"result\": {\"records\": ${records:-null}}}" >>"$results"
# The bare server at the rate herd had at 80 %, for the open-loop comparison.
if [ -s "$work/max" ]; then
  run_load bare-open-80 --addr "127.0.0.1:$(p 0)" --connections 64 --rate $(($(cat "$work/max") * 8 / 10)) --server Bare
fi
stop "$bare"

# --- Shard scaling: the same load against 1 and 2 shards ------------------
for shards in 1 2; do
  cpus=$SERVER_CPU
  [ "$shards" = 2 ] && cpus="$SERVER_CPU,$GEN_CPU"
  start "scale$shards" taskset -c "$cpus" "$HERD" serve Target --config "$cfg" --shards "$shards" --log-dir "$work/logs$shards"
  t=$last
  wait_for "$work/scale$shards.out" "listening"
  sleep 1
  run_load "herd-shards-$shards" --addr "127.0.0.1:$(p 10)" --connections 64 --depth 4 --server Target
  stop "$t"
done
for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done

# --- WHATSAT against places-mock with 20 ms of upstream latency -----------
start mock taskset -c "$GEN_CPU" "$HERD" places-mock --listen "127.0.0.1:$(p 20)" --latency-ms 20
mock=$last
wait_for "$work/mock.out" "listening"
herd_config "$work/near.json" "[{\"name\": \"Near\", \"listen\": \"127.0.0.1:$(p 21)\", \"neighbours\": []}]" \
  ", \"places\": {\"provider\": \"mock\", \"base_url\": \"http://127.0.0.1:$(p 20)\"}"
start near taskset -c "$SERVER_CPU" "$HERD" serve Near --config "$work/near.json" --shards 1 --log-dir "$work/logs"
near=$last
wait_for "$work/near.out" "listening"
run_load whatsat-50pct --addr "127.0.0.1:$(p 21)" --connections 64 --depth 1 --clients 2000 \
  --whatsat-pct 50 --max-results 5 --server Near
upstream=$(curl -s "http://127.0.0.1:$(p 20)/stats" || echo '{}')
echo "{\"scenario\": \"whatsat-upstream\", \"exit\": 0, \"result\": $upstream}" >>"$results"
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
  servers+="{\"name\": \"${names[$i]}\", \"listen\": \"127.0.0.1:$(p ${ports[$i]})\", \"neighbours\": [${neigh[$i]}]},"
done
servers+="{\"name\": \"Probe\", \"listen\": \"127.0.0.1:$(p 35)\", \"neighbours\": [\"Holiday\"]}"
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

# --- Redis GEOADD, the same shape (64 connections, one in flight) ---------
if command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null; then
  start redis taskset -c "$SERVER_CPU" redis-server --port "$(p 40)" --save '' --appendonly no
redis=$last
  sleep 0.5
  rps=$(taskset -c "$GEN_CPU" redis-benchmark -p "$(p 40)" -c 64 -P 1 -n $((150000 * DURATION)) -r 1000000 -q \
    GEOADD herd -118.445127 34.068930 client:__rand_int__ | tr '\r' '\n' | grep -o '[0-9.]* requests per second' | tail -n 1 | cut -d' ' -f1 || true)
  echo "{\"scenario\": \"redis-geoadd-64x1\", \"exit\": 0, \"result\": {\"achieved_rate\": ${rps:-null}}}" >>"$results"
  stop "$redis"
else
  note "redis-server or redis-benchmark not installed: no GEOADD comparison (apt-get install redis-server redis-tools)"
fi

python3 bench/report.py "$results" "$notes" >"$OUT"
# The same report at the end of bench/README.md, between its markers.
python3 - "$OUT" bench/README.md <<'PY'
import sys
report, readme = open(sys.argv[1]).read(), open(sys.argv[2]).read()
head, rest = readme.split("<!-- report -->", 1)
tail = rest.split("<!-- /report -->", 1)[1]
body = report.replace("# herd bench report", "").strip()
open(sys.argv[2], "w").write(f"{head}<!-- report -->\n{body}\n<!-- /report -->{tail}")
PY
echo "wrote $OUT and bench/README.md" >&2
