#!/usr/bin/env bash
# bench/flood_cost.sh: what flooding costs the links of a herd, measured by
# the kernel. For the default five-server herd and a ten-server ring with
# chords (each server a neighbour of i+-1 and i+-3), one shard per server
# on loopback:
#
# - link bytes per record: every byte sent on every connection of a peer
#   port, both directions (bytes_acked of both ends of each link, from
#   `ss -ti`), while $RECORDS IAMATs for as many clients go to one server at
#   $RATE/s and until every server holds all of them; divided by the
#   records and by the mean length of their AT lines (newline included);
# - duplicates per record: records the herd's stores dropped as not newer
#   (herd_store_updates_total{result="stale"}), all servers, per record;
# - two-hop propagation p99: `herd-bench propagation`, its probe a
#   neighbour of a server one hop from where the IAMATs go;
# - repair time: the link from the sending server to its neighbour
#   (through a relay the script controls) is cut while IAMATs flow, and the
#   time from the cut until a record sent after it is held by that
#   neighbour and by a server beyond it.
#
# Writes one JSON line per herd to stdout, or appends them to $OUT. Every process it
# starts is stopped by PID on exit. Usage:
#   bench/flood_cost.sh                     (builds release binaries)
#   HERD=... BENCH=... bench/flood_cost.sh  (given binaries, e.g. an older build)
set -euo pipefail
cd "$(dirname "$0")/.."

RECORDS=${RECORDS:-20000}
RATE=${RATE:-4000}
PORT_BASE=${PORT_BASE:-41000}
OUT=${OUT:-}
HERDS=${HERDS:-"five ten"}
# Propagation probes: IAMATs at this rate, this many.
PROBE_COUNT=${PROBE_COUNT:-2000}
PROBE_RATE=${PROBE_RATE:-500}

if [ -z "${HERD:-}" ] || [ -z "${BENCH:-}" ]; then
  cargo build --release --bins >&2
  HERD=${HERD:-$PWD/target/release/herd}
  BENCH=${BENCH:-$PWD/target/release/herd-bench}
fi

work=$(mktemp -d)
results=$work/results.jsonl
: >"$results"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

p() { echo $((PORT_BASE + $1)); }

# Starts a command in the background, output to $work/$name.out; its PID
# goes to $last.
start() {
  local name=$1
  shift
  "$@" >"$work/$name.out" 2>&1 &
  last=$!
  pids+=("$last")
}

stop_all() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}

# The herd's config: names, neighbour lists and ports from offset $2.
# $1: file; $3: "probe NAME" to add a probe neighbour of server NAME.
write_config() {
  python3 - "$1" "$2" "$herd_kind" "$(p 0)" "${3:-}" <<'PY'
import json, sys
path, offset, kind, base, probe = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
if kind == "five":
    names = ["Goloman", "Hands", "Holiday", "Wilkes", "Welsh"]
    pairs = [("Goloman", "Hands"), ("Goloman", "Holiday"), ("Goloman", "Wilkes"),
             ("Hands", "Wilkes"), ("Holiday", "Wilkes"), ("Holiday", "Welsh")]
else:
    names = [f"S{i}" for i in range(10)]
    pairs = sorted({tuple(sorted((f"S{i}", f"S{(i + d) % 10}"))) for i in range(10) for d in (1, 3)})
servers = []
for k, name in enumerate(names):
    port = base + offset + k
    servers.append({
        "name": name,
        "listen": f"127.0.0.1:{port}",
        "peer_listen": f"127.0.0.1:{port + 100}",
        "admin_listen": f"127.0.0.1:{port + 200}",
        "neighbours": [b if a == name else a for a, b in pairs if name in (a, b)],
    })
if probe:
    at = probe
    for s in servers:
        if s["name"] == at:
            s["neighbours"].append("Probe")
    servers.append({"name": "Probe", "listen": f"127.0.0.1:{base + offset + 90}",
                    "peer_listen": f"127.0.0.1:{base + offset + 91}", "admin_listen": None,
                    "neighbours": [at]})
json.dump({"servers": servers}, open(path, "w"), indent=1)
PY
}

# Names of the herd's servers, in config order.
names_of() {
  python3 -c "import json,sys; print(' '.join(s['name'] for s in json.load(open(sys.argv[1]))['servers'] if s['name'] != 'Probe'))" "$1"
}

# A server's address of kind listen|peer_listen|admin_listen.
addr_of() {
  python3 -c "import json,sys; print([s for s in json.load(open(sys.argv[1]))['servers'] if s['name'] == sys.argv[2]][0][sys.argv[3]])" "$1" "$2" "$3"
}

# Starts every server of config $1 (not the probe), alternating CPUs, and
# waits until each answers /healthz.
start_herd() {
  local config=$1 k=0 name
  for name in $(names_of "$config"); do
    start "$name" "$HERD" serve "$name" --config "$config" --shards 1 --cpus $((k % 2)) \
      --log-dir "$work/logs" --log-level info
    k=$((k + 1))
  done
  for name in $(names_of "$config"); do
    for _ in $(seq 300); do
      curl -fs "http://$(addr_of "$config" "$name" admin_listen)/healthz" >/dev/null 2>&1 && break
      sleep 0.05
    done
  done
}

# Waits (bounded: 30 s) until every server of config $1 is ready: links up
# both ways and caught up.
wait_ready() {
  local name
  for name in $(names_of "$1"); do
    for _ in $(seq 600); do
      curl -fs "http://$(addr_of "$1" "$name" admin_listen)/readyz" >/dev/null 2>&1 && break
      sleep 0.05
    done
  done
}

# Bytes sent so far on every TCP connection of the peer ports of config $1
# (both ends of each link: what each end sent, acknowledged by the other).
link_bytes() {
  ss -tinH state established | python3 -c '
import json, re, sys
cfg = json.load(open(sys.argv[1]))
ports = {s["peer_listen"].rsplit(":", 1)[1] for s in cfg["servers"] if s["name"] != "Probe"}
total = 0
lines = sys.stdin.read().splitlines()
i = 0
while i < len(lines):
    head = lines[i].split()
    info = lines[i + 1] if i + 1 < len(lines) else ""
    i += 2
    local, peer = head[2].rsplit(":", 1)[1], head[3].rsplit(":", 1)[1]
    if local in ports or peer in ports:
        m = re.search(r"bytes_acked:(\d+)", info)
        total += int(m.group(1)) if m else 0
print(total)' "$1"
}

# One metric summed over every server of config $1.
metric_sum() {
  local config=$1 series=$2 name total=0 v
  for name in $(names_of "$config"); do
    v=$(curl -fs "http://$(addr_of "$config" "$name" admin_listen)/metrics" |
      awk -v s="$series" '$1 == s {print $2}' | head -n 1)
    total=$(python3 -c "print(int(float('${v:-0}')) + $total)")
  done
  echo "$total"
}

# Waits (bounded: 60 s) until every server of config $1 holds $2 records.
wait_records() {
  local config=$1 want=$2 name have
  for name in $(names_of "$config"); do
    for _ in $(seq 1200); do
      have=$(curl -fs "http://$(addr_of "$config" "$name" admin_listen)/metrics" |
        awk '$1 ~ /^herd_records\{/ {n += $2} END {print n + 0}')
      [ "$have" -ge "$want" ] && break
      sleep 0.05
    done
    [ "$have" -ge "$want" ] || { echo "$name holds $have of $want records" >&2; return 1; }
  done
}

# Mean length of the AT lines of the load's records (newline included),
# from a sample read back with WHATSAT from server $2 of config $1.
mean_at_line() {
  python3 - "$(addr_of "$1" "$2" listen)" <<'PY'
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
lengths = []
for conn in range(8):
    for n in (0, 7, 99, 1234 // 8):
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(f"WHATSAT bench-{conn}-{n} 1 0\n".encode())
            s.shutdown(socket.SHUT_WR)
            data = b""
            while b"\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        line = data.split(b"\n", 1)[0]
        if line.startswith(b"AT "):
            lengths.append(len(line) + 1)
print(sum(lengths) / len(lengths) if lengths else 0)
PY
}

for herd_kind in $HERDS; do
  # --- Link bytes and duplicates -------------------------------------------
  config=$work/$herd_kind.json
  write_config "$config" 0
  start_herd "$config"
  wait_ready "$config"
  first=$(names_of "$config" | cut -d' ' -f1)
  sleep 1
  bytes_before=$(link_bytes "$config")
  stale_before=$(metric_sum "$config" 'herd_store_updates_total{result="stale"}')
  "$BENCH" load --addr "$(addr_of "$config" "$first" listen)" --connections 8 --rate "$RATE" \
    --requests "$RECORDS" --clients "$RECORDS" --warmup 0 --duration $((RECORDS / RATE + 5)) \
    --max-send-lag-ms 50 --cpus 1 --json-only --label "flood-$herd_kind" >"$work/load.out" 2>&1 || true
  wait_records "$config" "$RECORDS"
  # Let the links' last SEQ and ACK lines go out, as they would anyway.
  sleep 1.5
  bytes_after=$(link_bytes "$config")
  stale_after=$(metric_sum "$config" 'herd_store_updates_total{result="stale"}')
  line_len=$(mean_at_line "$config" "$first")
  stop_all
  python3 - "$herd_kind" "$RECORDS" "$bytes_before" "$bytes_after" "$stale_before" "$stale_after" "$line_len" <<'PY' >>"$results"
import json, sys
kind, records, b0, b1, s0, s1, line = sys.argv[1], int(sys.argv[2]), *map(float, sys.argv[3:])
n = 5 if kind == "five" else 10
print(json.dumps({"scenario": f"flood-cost-{kind}", "servers": n, "records": records,
                  "link_bytes": int(b1 - b0), "at_line_bytes": round(line, 1),
                  "copies_per_record": round((b1 - b0) / records / line, 2) if line else None,
                  "budget_copies": 1.25 * (n - 1),
                  "duplicates_per_record": round((s1 - s0) / records, 2)}))
PY
done
if [ -z "${OUT:-}" ]; then cat "$results"; else cat "$results" >>"$OUT"; fi
