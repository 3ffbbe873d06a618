#!/usr/bin/env python3
"""Writes bench/REPORT.md from the JSON lines bench/run.sh collected."""
import json
import os
import platform
import subprocess
import sys
import time


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:  # noqa: BLE001 - a missing tool only blanks one line
        return ""


def main():
    results_path, notes_path = sys.argv[1], sys.argv[2]
    runs = {}
    order = []
    for line in open(results_path):
        r = json.loads(line)
        runs[r["scenario"]] = r
        order.append(r["scenario"])
    notes = [n for n in open(notes_path).read().splitlines() if n.strip()]

    def res(name, key):
        r = runs.get(name)
        return None if r is None else r["result"].get(key)

    def fmt(v, unit="", digits=0):
        if v is None:
            return "n/a"
        if isinstance(v, float) or digits:
            return f"{v:,.{digits}f}{unit}"
        return f"{v:,}{unit}"

    def ratio(a, b):
        return None if a is None or b is None or b == 0 else a / b

    cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
    out = []
    out.append("# herd bench report\n")
    out.append(f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    mem = sh("free -g | awk '/Mem:/ {print $2}'")
    out.append(f"- machine: {os.cpu_count()} CPUs ({cpu or 'unknown model'}), "
               f"Linux {platform.release()}, {mem} GiB")
    out.append(f"- herd: {sh('git rev-parse --short HEAD')} built by {sh('rustc --version')}")
    out.append("- layout: server pinned to CPU 0; load generator, flood sinks, probe and places-mock on CPU 1; loopback")
    out.append("- every request validated; latency from the scheduled send time in open loop\n")

    out.append("## Targets\n")
    out.append("| target | measured | baseline (same run) | ratio | met |")
    out.append("|---|---|---|---|---|")

    def row(name, measured, baseline, r, met):
        out.append(f"| {name} | {measured} | {baseline} | {r} | {met} |")

    h1, b1 = res("herd-64x1", "achieved_rate"), res("bare-64x1", "achieved_rate")
    r1 = ratio(h1, b1)
    row("IAMAT 64x1, stored and flooded, >= 90 % of bare", fmt(h1, "/s"), f"bare {fmt(b1, '/s')}",
        fmt(r1, "", 2) if r1 else "n/a", "yes" if r1 and r1 >= 0.9 else "no")
    redis = res("redis-geoadd-64x1", "achieved_rate")
    rr = ratio(h1, redis)
    row("IAMAT 64x1 ahead of Redis GEOADD", fmt(h1, "/s"), f"Redis {fmt(redis, '/s')}",
        fmt(rr, "", 2) if rr else "n/a", "yes" if rr and rr > 1 else ("no" if rr else "n/a"))
    h16, b16 = res("herd-64x16", "achieved_rate"), res("bare-64x16", "achieved_rate")
    row("IAMAT 64x16 pipelined >= 1.2 M/s on one core", fmt(h16, "/s"), f"bare {fmt(b16, '/s')}",
        fmt(ratio(h16, b16), "", 2) if h16 and b16 else "n/a", "yes" if h16 and h16 >= 1.2e6 else "no")
    o80, bo80 = res("herd-open-80", "p99_us"), res("bare-open-80", "p99_us")
    row("open loop at 80 % of max: p99 < 1 ms", fmt(o80, " us", 1), f"bare p99 {fmt(bo80, ' us', 1)}",
        fmt(ratio(o80, bo80), "", 2) if o80 and bo80 else "n/a", "yes" if o80 and o80 < 1000 else "no")
    rss = res("herd-10k-conns", "server_vmrss_mib")
    records = res("records-held", "records")
    row("10,000 connections + 1 M records <= 150 MB RSS",
        f"{fmt(rss, ' MiB', 1)} with {fmt(records)} records", "-", "-",
        "yes" if rss and records and rss * 1.048576 <= 150 and records >= 1_000_000 else "no")
    pp99 = res("propagation-2-hops", "p99_us")
    row("update visible two hops away: p99 < 2 ms", fmt(pp99, " us", 1), "-", "-",
        "yes" if pp99 and pp99 < 2000 else "no")
    s1, s2 = res("herd-shards-1", "achieved_rate"), res("herd-shards-2", "achieved_rate")
    row("2 shards vs 1 (cores allowing)", fmt(s2, "/s"), f"1 shard {fmt(s1, '/s')}",
        fmt(ratio(s2, s1), "", 2) if s1 and s2 else "n/a",
        "see note: the 2nd shard shares CPU 1 with the generator")

    out.append("\n## Every run\n")
    out.append("| scenario | mode | conns x depth | target rate | achieved rate | p50 us | p90 us | p99 us | p99.9 us | max us | errors | server RSS MiB |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in order:
        r = runs[name]["result"]
        if "p50_us" not in r:
            continue
        depth = r.get("depth")
        out.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            name, r.get("mode", "-"), f"{r.get('connections', '-')} x {depth if depth else '-'}",
            fmt(r.get("target_rate")), fmt(r.get("achieved_rate"), "", 0),
            fmt(r.get("p50_us"), "", 1), fmt(r.get("p90_us"), "", 1), fmt(r.get("p99_us"), "", 1),
            fmt(r.get("p999_us"), "", 1), fmt(r.get("max_us"), "", 1), fmt(r.get("errors")),
            fmt(r.get("server_vmrss_mib"), "", 1)))

    up = runs.get("whatsat-upstream", {}).get("result", {})
    wreq = res("whatsat-50pct", "requests")
    if up and wreq:
        whatsats = wreq / 2
        out.append("\n## WHATSAT against places-mock (20 ms upstream latency)\n")
        out.append(f"- WHATSATs in the measured window: about {whatsats:,.0f} (50 % of {wreq:,}), over 2,000 clients")
        out.append(f"- upstream requests over the whole run, warm-up included: {up.get('requests', 'n/a'):,}")
        if up.get("requests"):
            out.append(f"- upstream requests per WHATSAT: at most {up['requests'] / whatsats:.4f}: "
                       "the rest were answered by the per-shard cache or coalesced with an identical request in flight")
    out.append("\n## Notes\n")
    out.append("- The 2-shard run pins the second shard to CPU 1, which the load generator also uses: "
               "this 2-core machine cannot show shard scaling cleanly.")
    for n in notes:
        out.append(f"- {n}")
    failed = [n for n in order if runs[n].get("exit", 0) != 0]
    if failed:
        out.append(f"- runs with errors (herd-bench exit != 0): {', '.join(failed)}")
    print("\n".join(out))


if __name__ == "__main__":
    main()
