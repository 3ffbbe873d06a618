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
# - two-hop propagation p99: `herd-bench propagation` ($PROBE_COUNT IAMATs
#   at $PROBE_RATE/s), its probe a neighbour of a server one hop from where
#   the IAMATs go (the probe speaks only the earlier link rules, so it is
#   flooded to);
# - repair time: the sending server reaches one of its neighbours (its
#   child in its own tree) only through a relay this script runs; while
#   IAMATs flow at $RATE/s the relay is killed, a marker IAMAT goes to the
#   sender at once, and the time until that neighbour, and the server
#   beyond it, hold the marker is the repair time (with no trees, the
#   records flood around the dead link anyway).
#
# Writes one JSON line per herd to stdout, or appends them to $OUT. Every process it
# starts is stopped by PID on exit. Usage:
#   bench/flood_cost.sh                     (builds release binaries)
#   HERD=... BENCH=... bench/flood_cost.sh  (given binaries, e.g. an older build)
set -euo pipefail
cd "$(dirname "$0")/.."

RECORDS=${RECORDS:-20000}
RATE=${RATE:-4000}
# Below the ephemeral range (32768-60999), where outgoing connections of
# the herd and the load could hold a port the script means to listen on.
PORT_BASE=${PORT_BASE:-24000}
OUT=${OUT:-}
HERDS=${HERDS:-"five ten"}
# Which measurements: cost (link bytes and duplicates), restart (the same
# with a server killed -9 and restarted), propagation, repair.
PARTS=${PARTS:-"cost restart propagation repair"}
# Limits for every server, as JSON (e.g. '{"link_tree": false}'); none by
# default.
LIMITS=${LIMITS:-}
export LIMITS
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
  stop_all
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
# $1: file; $3: a server to give a probe neighbour (may be empty); $4: a
# peer address to write for server $5 instead of its own (a relay).
write_config() {
  python3 - "$1" "$2" "$herd_kind" "$(p 0)" "${3:-}" "${4:-}" "${5:-}" <<'PY'
import json, os, sys
path, offset, kind, base, probe = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
relay, relayed = sys.argv[6], sys.argv[7]
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
if relay:
    for s in servers:
        if s["name"] == relayed:
            s["peer_listen"] = relay
if probe:
    at = probe
    for s in servers:
        if s["name"] == at:
            s["neighbours"].append("Probe")
    servers.append({"name": "Probe", "listen": f"127.0.0.1:{base + offset + 90}",
                    "peer_listen": f"127.0.0.1:{base + offset + 91}", "admin_listen": None,
                    "neighbours": [at]})
config = {"servers": servers}
if os.environ.get("LIMITS"):
    config["limits"] = json.loads(os.environ["LIMITS"])
json.dump(config, open(path, "w"), indent=1)
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

# Counts the bytes sent on every TCP connection of the peer ports of config
# $1 (both ends of each link: what each end sent, acknowledged by the
# other), from now until stop_counting, in the background: `ss -ti` every
# 50 ms, each socket's highest bytes_acked kept, so connections that close
# (a killed server's) still count up to their last sample.
start_counting() {
  rm -f "$work/count.stop" "$work/count.out"
  start counter python3 -c '
import json, os, re, subprocess, sys, time
cfg = json.load(open(sys.argv[1]))
stop, out = sys.argv[2], sys.argv[3]
ports = {s["peer_listen"].rsplit(":", 1)[1] for s in cfg["servers"] if s["name"] != "Probe"}
first, last = {}, {}
def sample():
    text = subprocess.run(["ss", "-tinaH"], capture_output=True, text=True).stdout
    seen, key = {}, None
    for line in text.splitlines():
        if not line[:1].isspace():
            head = line.split()
            key = (head[3], head[4]) if len(head) >= 5 else None
            if key and not (key[0].rsplit(":", 1)[-1] in ports or key[1].rsplit(":", 1)[-1] in ports):
                key = None
            continue
        m = re.search(r"bytes_acked:(\d+)", line)
        if key and m:
            seen[key] = int(m.group(1))
    return seen
for key, v in sample().items():
    first[key] = v
    last[key] = v
while not os.path.exists(stop):
    for key, v in sample().items():
        first.setdefault(key, 0)
        last[key] = max(last.get(key, 0), v)
    time.sleep(0.05)
for key, v in sample().items():
    first.setdefault(key, 0)
    last[key] = max(last.get(key, 0), v)
# Written whole, then renamed: the script polls for the file.
open(out + ".part", "w").write(str(sum(last[k] - first[k] for k in last)))
os.rename(out + ".part", out)
' "$1" "$work/count.stop" "$work/count.out"
  sleep 0.3
}

# Stops the counting and prints the bytes counted. Called as
# `$(stop_counting)`, a subshell, which cannot `wait` for the counter (not
# its child): it polls for the counter's answer instead (bounded: 10 s).
stop_counting() {
  touch "$work/count.stop"
  for _ in $(seq 200); do
    [ -s "$work/count.out" ] && break
    sleep 0.05
  done
  cat "$work/count.out" 2>/dev/null || { cat "$work/counter.out" >&2; echo 0; }
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

# A TCP relay on $1 to $2, in the background ($last); killing it kills
# every connection it carries, and refuses new ones.
start_relay() {
  start relay python3 -c '
import socket, sys, threading
listen, target = sys.argv[1].rsplit(":", 1), sys.argv[2].rsplit(":", 1)
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((listen[0], int(listen[1])))
srv.listen(64)
print("listening", flush=True)
def pump(a, b):
    try:
        while True:
            data = a.recv(65536)
            if not data:
                break
            b.sendall(data)
    except OSError:
        pass
    for s in (a, b):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
while True:
    client, _ = srv.accept()
    try:
        server = socket.create_connection((target[0], int(target[1])))
    except OSError:
        client.close()
        continue
    for a, b in ((client, server), (server, client)):
        threading.Thread(target=pump, args=(a, b), daemon=True).start()
' "$1" "$2"
  relay=$last
  for _ in $(seq 100); do
    grep -q listening "$work/relay.out" 2>/dev/null && break
    sleep 0.05
  done
}

# Kills the relay (PID $1), sends a marker IAMAT to $2 at once, and prints
# how long until $3 and $4 (client addresses) hold it, in ms (bounded: 30 s).
repair_after_kill() {
  python3 - "$1" "$2" "$3" "$4" <<'PY'
import json, os, signal, socket, sys, time
relay, sender, near, far = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
def ask(addr, line):
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(line.encode())
        s.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.decode(errors="replace")
os.kill(relay, signal.SIGKILL)
t0 = time.monotonic()
client = f"repair-marker-{os.getpid()}"
ask(sender, f"IAMAT {client} +1-2 {time.time():.9f}\n")
found = {}
while len(found) < 2 and time.monotonic() - t0 < 30:
    for name, addr in (("near", near), ("far", far)):
        if name not in found and ask(addr, f"WHATSAT {client} 1 0\n").startswith("AT "):
            found[name] = round((time.monotonic() - t0) * 1000, 1)
    time.sleep(0.005)
print(json.dumps({"repair_ms": found.get("near"), "repair_beyond_ms": found.get("far")}))
PY
}

# Whether $PARTS names $1.
want() {
  case " $PARTS " in *" $1 "*) return 0 ;; esac
  return 1
}

for herd_kind in $HERDS; do
  if [ "$herd_kind" = five ]; then first=Goloman; else first=S0; fi
  # --- Link bytes and duplicates -------------------------------------------
  if want cost; then
    config=$work/$herd_kind.json
    write_config "$config" 0
    start_herd "$config"
    wait_ready "$config"
    sleep 1
    start_counting "$config"
    stale_before=$(metric_sum "$config" 'herd_store_updates_total{result="stale"}')
    "$BENCH" load --addr "$(addr_of "$config" "$first" listen)" --connections 8 --rate "$RATE" \
      --requests "$RECORDS" --clients "$RECORDS" --warmup 0 --duration $((RECORDS / RATE + 5)) \
      --max-send-lag-ms 50 --cpus 1 --json-only --label "flood-$herd_kind" >"$work/load.out" 2>&1 || true
    holds=true
    wait_records "$config" "$RECORDS" || holds=false
    # Let the links' last SEQ and ACK lines go out, as they would anyway.
    sleep 1.5
    bytes=$(stop_counting)
    stale_after=$(metric_sum "$config" 'herd_store_updates_total{result="stale"}')
    line_len=$(mean_at_line "$config" "$first")
    stop_all
    python3 - "$herd_kind" "$RECORDS" "$holds" 0 "$bytes" "$stale_before" "$stale_after" "$line_len" <<'PY' >>"$results"
import json, sys
kind, records, holds = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "true"
b0, b1, s0, s1, line = map(float, sys.argv[4:])
n = 5 if kind == "five" else 10
print(json.dumps({"scenario": f"flood-cost-{kind}", "servers": n, "records": records,
                  "every_server_holds_every_record": holds,
                  "link_bytes": int(b1 - b0), "at_line_bytes": round(line, 1),
                  "copies_per_record": round((b1 - b0) / records / line, 2) if line else None,
                  "budget_copies": 1.25 * (n - 1),
                  "duplicates_per_record": round((s1 - s0) / records, 2)}))
PY
  fi

  # --- The same with a server killed (-9) mid-stream and restarted --------
  if want restart; then
    # Holiday (Welsh's only neighbour) and S5 go down after half the records
    # and come back a second later, empty: the bytes then include its refill.
    if [ "$herd_kind" = five ]; then victim=Holiday; else victim=S5; fi
    config=$work/$herd_kind-restart.json
    write_config "$config" 900
    start_herd "$config"
    wait_ready "$config"
    sleep 1
    start_counting "$config"
    stale_before=$(metric_sum "$config" 'herd_store_updates_total{result="stale"}')
    start load "$BENCH" load --addr "$(addr_of "$config" "$first" listen)" --connections 8 --rate "$RATE" \
      --requests "$RECORDS" --clients "$RECORDS" --warmup 0 --duration $((RECORDS / RATE + 5)) \
      --max-send-lag-ms 50 --cpus 1 --json-only --label "restart-$herd_kind"
    load=$last
    sleep "$(python3 -c "print($RECORDS / $RATE / 2)")"
    k=0
    for name in $(names_of "$config"); do
      [ "$name" = "$victim" ] && break
      k=$((k + 1))
    done
    victim_pid=${pids[$k]}
    kill -9 "$victim_pid" 2>/dev/null || true
    wait "$victim_pid" 2>/dev/null || true
    sleep 1
    start "$victim" "$HERD" serve "$victim" --config "$config" --shards 1 --cpus $((k % 2)) \
      --log-dir "$work/logs" --log-level info
    wait "$load" 2>/dev/null || true
    restart_ok=true
    wait_records "$config" "$RECORDS" || restart_ok=false
    sleep 1.5
    bytes=$(stop_counting)
    # The restarted server's count starts over: its stale records before
    # the kill are not in this.
    stale_after=$(metric_sum "$config" 'herd_store_updates_total{result="stale"}')
    line_len=$(mean_at_line "$config" "$first")
    stop_all
    python3 - "$herd_kind" "$RECORDS" "$bytes" "$line_len" "$restart_ok" "$victim" "$stale_before" "$stale_after" <<'PY' >>"$results"
import json, sys
kind, records, b, line, ok, victim = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5], sys.argv[6]
s0, s1 = float(sys.argv[7]), float(sys.argv[8])
n = 5 if kind == "five" else 10
print(json.dumps({"scenario": f"flood-cost-restart-{kind}", "servers": n, "records": records,
                  "killed": victim, "every_server_holds_every_record": ok == "true",
                  "link_bytes": int(b),
                  "copies_per_record": round(b / records / line, 2) if line else None,
                  "budget_copies": 1.25 * (n - 1),
                  "duplicates_per_record": round((s1 - s0) / records, 2)}))
PY
  fi

  # --- Two-hop propagation: IAMATs at the first server, timed at a probe --
  # The probe hangs off the first server's neighbour that is its child in
  # its own tree (Holiday of Goloman; S1 of S0), two links from the sender.
  if [ "$herd_kind" = five ]; then near=Holiday far=Welsh; else near=S1 far=S2; fi
  if want propagation; then
    config=$work/$herd_kind-probe.json
    write_config "$config" 300 "$near"
    start_herd "$config"
    probe_listen=$(addr_of "$config" Probe peer_listen)
    line=$("$BENCH" propagation --json-only --send "$(addr_of "$config" "$first" listen)" \
      --probe-listen "$probe_listen" --probe-name Probe --count "$PROBE_COUNT" --rate "$PROBE_RATE" \
      --cpus 1 --label "propagation-$herd_kind" | sed -n 's/^JSON //p') || true
    stop_all
    [ -n "$line" ] && echo "{\"scenario\": \"propagation-2-hops-$herd_kind\", \"result\": $line}" >>"$results"
  fi

  # --- Repair: the eager link from the sender to $near dies under load ----
  if want repair; then
    config=$work/$herd_kind-repair.json
    write_config "$config" 600
    relay_addr=127.0.0.1:$(p 690)
    start_relay "$relay_addr" "$(addr_of "$config" "$near" peer_listen)"
    sender_config=$work/$herd_kind-repair-sender.json
    write_config "$sender_config" 600 "" "$relay_addr" "$near"
    k=0
    for name in $(names_of "$config"); do
      cfg=$config
      [ "$name" = "$first" ] && cfg=$sender_config
      start "$name" "$HERD" serve "$name" --config "$cfg" --shards 1 --cpus $((k % 2)) \
        --log-dir "$work/logs" --log-level info
      k=$((k + 1))
    done
    wait_ready "$config"
    start load "$BENCH" load --addr "$(addr_of "$config" "$first" listen)" --connections 8 --rate "$RATE" \
      --warmup 0 --duration 6 --max-send-lag-ms 50 --cpus 1 --json-only --label "repair-$herd_kind"
    load=$last
    sleep 2
    line=$(repair_after_kill "$relay" "$(addr_of "$config" "$first" listen)" \
      "$(addr_of "$config" "$near" listen)" "$(addr_of "$config" "$far" listen)") || true
    wait "$load" 2>/dev/null || true
    stop_all
    [ -n "$line" ] && echo "{\"scenario\": \"repair-$herd_kind\", \"result\": $line}" >>"$results"
  fi
done
if [ -z "${OUT:-}" ]; then cat "$results"; else cat "$results" >>"$OUT"; fi
