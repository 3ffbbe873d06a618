#!/usr/bin/env python3
"""Renders bench/flood_cost.sh's JSON lines as the "Latest run" section of
bench/FLOOD.md, in place (between its markers), so that the figures there
are the script's and no full run of bench/run.sh rewrites them.

Usage: python3 bench/flood_report.py RESULTS.jsonl [FLOOD.md]
"""

import json
import os
import subprocess
import sys
from datetime import datetime, timezone

START, END = "<!-- flood report -->", "<!-- end flood report -->"
HERDS = {"five": "default five-server herd", "ten": "ten servers, ring with chords (i+-1, i+-3)"}


def git(*args):
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def section(rows):
    by = {r["scenario"]: r for r in rows}
    herd = os.environ.get("HERD_COMMIT") or git("rev-parse", "--short", "HEAD")
    out = [
        START,
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- herd: {herd}",
        "- one shard per server on loopback, servers pinned alternately to CPU 0 and 1, generator on CPU 1",
        "",
        "| herd | N | copies per record (AT lines) | budget 1.25 (N - 1) | met | duplicates per record | every server holds every record |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind in ("five", "ten"):
        for key, what in ((f"flood-cost-{kind}", HERDS[kind]),
                          (f"flood-cost-restart-{kind}", None)):
            r = by.get(key)
            if r is None:
                continue
            if what is None:
                what = f"the same, {r.get('killed', '?')} killed -9 mid-stream and restarted"
            met = "yes" if r["copies_per_record"] <= r["budget_copies"] else "**no**"
            holds = {True: "yes", False: "**no**"}.get(r.get("every_server_holds_every_record"), "-")
            out.append(f"| {what} | {r['servers']} | **{r['copies_per_record']}** | {r['budget_copies']} | {met} "
                       f"| {r['duplicates_per_record']} | {holds} |")
    prop = [(k, by.get(f"propagation-2-hops-{k}")) for k in ("five", "ten")]
    if any(r for _, r in prop):
        out += ["", "| herd | two-hop propagation p50 | p99 | max | IAMATs | errors |", "|---|---|---|---|---|---|"]
        for kind, r in prop:
            if r:
                p = r["result"]
                out.append(f"| {kind} | {p['p50_us']:,} us | {p['p99_us']:,} us | {p['max_us']:,} us "
                           f"| {p['requests']:,} | {p['errors']} |")
    rep = [(k, by.get(f"repair-{k}")) for k in ("five", "ten")]
    if any(r for _, r in rep):
        out += ["", "| herd | repair: the neighbour behind the cut link holds the marker | the server beyond it |",
                "|---|---|---|"]
        for kind, r in rep:
            if r:
                p = r["result"]
                out.append(f"| {kind} | {p['repair_ms']:,} ms | {p['repair_beyond_ms']:,} ms |")
    out.append(END)
    return "\n".join(out) + "\n"


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    path = sys.argv[2] if len(sys.argv) == 3 else os.path.join(os.path.dirname(__file__), "FLOOD.md")
    text = open(path).read()
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        sys.exit(f"{path}: no {START} ... {END} markers")
    open(path, "w").write(text[:start] + section(rows) + text[end + len(END) + 1:])
    print(f"wrote the latest flood cost into {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
