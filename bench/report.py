#!/usr/bin/env python3
"""Writes bench/REPORT.md from the JSON lines bench/run.sh collected.

Usage: report.py RESULTS NOTES SERVER_CPU GEN_CPU
       report.py --sections RESULTS NOTES SERVER_CPU GEN_CPU
                 (only the sections of the scenarios that run alone, for
                 a run of some of them: bench/run.sh with SCENARIOS)
       report.py --splice SECTIONS FILE
                 (puts each "## " section of SECTIONS in place of the
                 section of the same title in FILE, between its report
                 markers if it has them, else before "## Every run")
Every target is stated as a ratio to a baseline of the same run; a baseline
row whose server CPU was under 95 % busy is flagged "generator-bound".
"""
import json
import os
import platform
import statistics
import subprocess
import sys
import time

SATURATED = 95.0
# Tokens on may cost IAMAT throughput at most this share of tokens off.
TOKENS_WITHIN = 0.03
# OwnTracks posts over HTTP: at least this share of the IAMAT line rate
# per core (issue 29).
POSTS_AT_LEAST = 0.25
# herd against the floor (issue 33): per shape, the least median herd/floor.
FLOOR_AT_LEAST = {1: 0.95, 16: 0.85, 32: 0.85}


def fmt(v, unit="", digits=0):
    if v is None:
        return "n/a"
    if isinstance(v, float) or digits:
        return f"{v:,.{digits}f}{unit}"
    return f"{v:,}{unit}"


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def paired_rounds(runs, order, a, b):
    """(round, run a, run b, which ran first) of every round in which both
    scenario `a`-rN and `b`-rN ran, in the order they ran."""
    out = []
    for n in order:
        if n.startswith(f"{a}-r"):
            k = n[len(a) + 2:]
            other = f"{b}-r{k}"
            if other in runs:
                first = a if order.index(n) < order.index(other) else b
                out.append((k, runs[n]["result"], runs[other]["result"], first))
    return out


def on_off_ratios(pairs):
    """The sorted on/off rate ratios of paired rounds."""
    return sorted(p[1]["achieved_rate"] / p[2]["achieved_rate"] for p in pairs
                  if p[1].get("achieved_rate") and p[2].get("achieved_rate"))


def tokens_control(runs, order, depth):
    """The median of the A/A control's rounds (`tokens-aa`, tokens off in
    both servers) and their ratios, or (None, [])."""
    ratios = on_off_ratios(paired_rounds(runs, order, f"tokens-aa-on-64x{depth}", f"tokens-aa-off-64x{depth}"))
    return (median(ratios), ratios)


def tokens_section(runs, order, rounds_note=""):
    """The tokens on/off comparison, or [] when it did not run."""
    out = []
    shapes = []
    for depth in (1, 16):
        pairs = paired_rounds(runs, order, f"tokens-on-64x{depth}", f"tokens-off-64x{depth}")
        aa = paired_rounds(runs, order, f"tokens-aa-on-64x{depth}", f"tokens-aa-off-64x{depth}")
        if pairs:
            shapes.append((depth, pairs, aa))
    if not shapes:
        return out
    n = max(len(p) for _, p, _ in shapes)
    out.append("## Client tokens\n")
    out.append(rounds_note)
    out.append(f"Target: **tokens on, IAMAT: within {TOKENS_WITHIN * 100:.0f} % of tokens off** (issue 28: one "
               "HMAC per connection, not per line). Two one-shard servers like the healthy one (each "
               "flooding to three sinks), one with `\"clients\": {\"auth\": \"token\", ...}` and one without, "
               "up at once on the server's CPU and started fresh every round; the same workload on both: 64 "
               "connections with one client each (`--clients 64`), and with tokens each connection sends one "
               f"`AUTH` before the run (`--token-key`). {n} rounds, the order swapped every round and the two "
               "servers' places (ports and sinks) every second round; met when the median of the rounds' "
               f"on/off ratios is at least {1 - TOKENS_WITHIN:.2f}. The A/A control, where run "
               "(`SCENARIOS=tokens,tokens-aa`), is the same design with tokens off in both servers: how far "
               "from 1 a median lands here with no difference at all. `bench/instructions.sh tokens` counts "
               "what tokens cost in instructions, which this noise does not move (bench/README.md).\n")
    out.append("| shape | median on/off | met | rounds' on/off ratios (sorted) | median tokens on | "
               "median tokens off | median server us/request on / off |")
    out.append("|---|---|---|---|---|---|---|")
    for depth, pairs, aa in shapes:
        ratios = on_off_ratios(pairs)
        mid = median(ratios)
        met = "n/a" if mid is None else ("yes" if mid >= 1 - TOKENS_WITHIN else "no")
        if mid is not None and mid > 1 + TOKENS_WITHIN:
            met += " (tokens on faster: the rounds' noise, not tokens)"
        control, _ = tokens_control(runs, order, depth)
        if control is not None and abs(control - 1) > TOKENS_WITHIN:
            met += f" (the A/A control's median is {control:.3f}: this run cannot resolve {TOKENS_WITHIN * 100:.0f} %)"
        for label, rows in ((f"IAMAT 64x{depth}", pairs), (f"A/A control 64x{depth}, tokens off in both", aa)):
            if not rows:
                continue
            rs = on_off_ratios(rows)
            m = median(rs)
            us_on = median(p[1].get("server_cpu_us_per_request") for p in rows)
            us_off = median(p[2].get("server_cpu_us_per_request") for p in rows)
            out.append(f"| {label} | {'n/a' if m is None else f'{m:.3f}'} | {met if rows is pairs else '-'} | "
                       f"{', '.join(f'{r:.3f}' for r in rs)} | "
                       f"{fmt(median(p[1].get('achieved_rate') for p in rows), '/s')} | "
                       f"{fmt(median(p[2].get('achieved_rate') for p in rows), '/s')} | "
                       f"{fmt(us_on, '', 2)} / {fmt(us_off, '', 2)} |")
    out.append("\nEvery round (server CPU % and generator CPU % busy over each measured window; a server "
               f"under {SATURATED:.0f} % busy in a closed loop waited for the generator):\n")
    out.append("| round | shape | first | tokens on /s | server % | gen % | server us/req | tokens off /s | "
               "server % | gen % | server us/req | on/off |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for depth, pairs, aa in shapes:
        for k, on, off, first, control in [p + (False,) for p in pairs] + [p + (True,) for p in aa]:
            r = (on["achieved_rate"] / off["achieved_rate"]
                 if on.get("achieved_rate") and off.get("achieved_rate") else None)
            out.append(f"| r{k} | 64x{depth}{' A/A' if control else ''} | "
                       f"{'on' if '-on-' in first else 'off'} | "
                       f"{fmt(on.get('achieved_rate'), '', 0)} | {fmt(on.get('server_cpu_busy_pct'), '', 1)} | "
                       f"{fmt(on.get('generator_cpu_busy_pct'), '', 1)} | "
                       f"{fmt(on.get('server_cpu_us_per_request'), '', 2)} | "
                       f"{fmt(off.get('achieved_rate'), '', 0)} | {fmt(off.get('server_cpu_busy_pct'), '', 1)} | "
                       f"{fmt(off.get('generator_cpu_busy_pct'), '', 1)} | "
                       f"{fmt(off.get('server_cpu_us_per_request'), '', 2)} | "
                       f"{'n/a' if r is None else f'{r:.3f}'} |")
    out.append("")
    return out


def tls_section(runs, order, rounds_note=""):
    """Plain against TLS on one server, or [] when it did not run."""
    out = []
    shapes = []
    for depth in (1, 16):
        pairs = paired_rounds(runs, order, f"tls-tls-64x{depth}", f"tls-plain-64x{depth}")
        if pairs:
            shapes.append((depth, pairs))
    if not shapes:
        return out
    n = max(len(p) for _, p in shapes)

    def bound(r):
        busy = r.get("server_cpu_busy_pct")
        return busy is not None and busy < SATURATED

    out.append("## Clients over TLS\n")
    out.append(rounds_note)
    out.append("One one-shard server like the healthy one (flooding to three sinks) with a `client_tls_listen` "
               "(its certificate from `herd certs`, in a `client_tls` section), loaded over its plain client "
               "port and over its TLS port in turn: 64 connections, closed loop (64x1) and pipelined (64x16), "
               f"{n} rounds, the order swapped every round. TLS 1.3 with AES-256-GCM (rustls and ring on both "
               "sides); handshakes before the measured window. `herd-bench load --tls-ca` seals and opens "
               "every record on the generator's CPU, so the generator may be what limits the TLS rate (a "
               f"server under {SATURATED:.0f} % busy says so); the server's own CPU time per request (user + "
               "system of its process over the measured window, from /proc/PID/stat, over the requests "
               "answered in it) says what TLS costs the server either way. Medians of the rounds:\n")
    out.append("| shape | plain /s | TLS /s | TLS / plain | server us/request plain | server us/request TLS | "
               "TLS costs the server | server CPU % plain / TLS | generator CPU % plain / TLS |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    for depth, pairs in shapes:
        tls = [p[1] for p in pairs]
        plain = [p[2] for p in pairs]
        rt, rp = median(r.get("achieved_rate") for r in tls), median(r.get("achieved_rate") for r in plain)
        ut = median(r.get("server_cpu_us_per_request") for r in tls)
        up = median(r.get("server_cpu_us_per_request") for r in plain)
        # The cost as the median of each round's difference, measured
        # minutes apart at most.
        diffs = [t.get("server_cpu_us_per_request") - p.get("server_cpu_us_per_request") for _, t, p, _ in pairs
                 if t.get("server_cpu_us_per_request") is not None
                 and p.get("server_cpu_us_per_request") is not None]
        d = median(diffs)
        cost = "n/a" if d is None or not up else f"{d:+.2f} us/request ({d / up * 100:+.0f} %)"
        nb = sum(1 for r in tls if bound(r))
        flag = f" ({nb} of {len(tls)} generator-bound)" if nb else ""
        shape = "closed loop 64x1" if depth == 1 else "pipelined 64x16"
        out.append(f"| {shape} | {fmt(rp, '/s')} | {fmt(rt, '/s')}{flag} | "
                   f"{'n/a' if not rt or not rp else f'{rt / rp:.2f}'} | {fmt(up, '', 2)} | {fmt(ut, '', 2)} | "
                   f"{cost} | {fmt(median(r.get('server_cpu_busy_pct') for r in plain), '', 1)} / "
                   f"{fmt(median(r.get('server_cpu_busy_pct') for r in tls), '', 1)} | "
                   f"{fmt(median(r.get('generator_cpu_busy_pct') for r in plain), '', 1)} / "
                   f"{fmt(median(r.get('generator_cpu_busy_pct') for r in tls), '', 1)} |")
    out.append("\nEvery round:\n")
    out.append("| round | shape | first | plain /s | server % | gen % | server us/req | TLS /s | server % | "
               "gen % | server us/req | TLS / plain | TLS costs (us/req) |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for depth, pairs in shapes:
        for k, t, p, first in pairs:
            r = (t["achieved_rate"] / p["achieved_rate"]
                 if t.get("achieved_rate") and p.get("achieved_rate") else None)
            ut, up = t.get("server_cpu_us_per_request"), p.get("server_cpu_us_per_request")
            out.append(f"| r{k} | 64x{depth} | {'TLS' if first.startswith('tls-tls') else 'plain'} | "
                       f"{fmt(p.get('achieved_rate'), '', 0)} | {fmt(p.get('server_cpu_busy_pct'), '', 1)} | "
                       f"{fmt(p.get('generator_cpu_busy_pct'), '', 1)} | {fmt(up, '', 2)} | "
                       f"{fmt(t.get('achieved_rate'), '', 0)}{' **generator-bound**' if bound(t) else ''} | "
                       f"{fmt(t.get('server_cpu_busy_pct'), '', 1)} | "
                       f"{fmt(t.get('generator_cpu_busy_pct'), '', 1)} | {fmt(ut, '', 2)} | "
                       f"{'n/a' if r is None else f'{r:.2f}'} | "
                       f"{'n/a' if ut is None or up is None else f'{ut - up:+.2f}'} |")
    out.append("")
    return out


def phones_rounds(runs, order, depth):
    """(round, posts run, IAMAT run, which ran first) of the phones
    scenario's rounds at `depth`."""
    return paired_rounds(runs, order, f"phones-post-64x{depth}", f"phones-iamat-64x{depth}")


def phones_section(runs, order, rounds_note=""):
    """OwnTracks posts against IAMAT lines on one server, or [] when it did
    not run."""
    out = []
    shapes = [(depth, phones_rounds(runs, order, depth)) for depth in (1, 16)]
    shapes = [(depth, pairs) for depth, pairs in shapes if pairs]
    if not shapes:
        return out
    n = max(len(p) for _, p in shapes)

    def bound(r):
        busy = r.get("server_cpu_busy_pct")
        return busy is not None and busy < SATURATED

    out.append("## Phones over HTTP\n")
    out.append(rounds_note)
    out.append(f"Target: **OwnTracks posts >= {POSTS_AT_LEAST}x the IAMAT line rate per core** (issue 29). One "
               "one-shard server like the healthy one (flooding to three sinks) with an `http_listen`, loaded "
               "over its line port (IAMAT, 64 connections with one client each, `--clients 64`) and over its "
               "HTTP port (`herd-bench load --post owntracks`: `POST /owntracks` with `X-Limit-U`/`X-Limit-D` "
               "and a JSON location as the app sends it, 64 keep-alive connections with one device each) in "
               "turn: closed loop (64x1) and pipelined (64x16, HTTP/1.1 pipelining: requests back to back, "
               f"responses in order), {n} rounds, the order swapped every round. Every post and every IAMAT is "
               "newer than its client's last (stored and flooded); every response is checked (200, `[]`, "
               "framed by its Content-Length). One shard on one core, so the rate is the rate per core; met "
               "when the median of the rounds' posts/IAMAT ratios is at least "
               f"{POSTS_AT_LEAST}. The server's CPU time per request (user + system over the measured "
               "window, `--pid`) says what a post costs against an IAMAT whichever side was the limit. "
               "Medians of the rounds:\n")
    out.append("| shape | IAMAT /s | posts /s | median posts / IAMAT | met | rounds' ratios (sorted) | "
               "server us/request IAMAT | server us/request post | server CPU % IAMAT / post | "
               "generator CPU % IAMAT / post |")
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    for depth, pairs in shapes:
        posts = [p[1] for p in pairs]
        lines = [p[2] for p in pairs]
        ratios = on_off_ratios(pairs)
        mid = median(ratios)
        met = "n/a" if mid is None else ("yes" if mid >= POSTS_AT_LEAST else "no")
        nb = sum(1 for r in posts if bound(r))
        flag = f" ({nb} of {len(posts)} generator-bound)" if nb else ""
        shape = "closed loop 64x1" if depth == 1 else "pipelined 64x16"
        out.append(f"| {shape} | {fmt(median(r.get('achieved_rate') for r in lines), '/s')} | "
                   f"{fmt(median(r.get('achieved_rate') for r in posts), '/s')}{flag} | "
                   f"{'n/a' if mid is None else f'{mid:.3f}'} | {met} | {', '.join(f'{r:.3f}' for r in ratios)} | "
                   f"{fmt(median(r.get('server_cpu_us_per_request') for r in lines), '', 2)} | "
                   f"{fmt(median(r.get('server_cpu_us_per_request') for r in posts), '', 2)} | "
                   f"{fmt(median(r.get('server_cpu_busy_pct') for r in lines), '', 1)} / "
                   f"{fmt(median(r.get('server_cpu_busy_pct') for r in posts), '', 1)} | "
                   f"{fmt(median(r.get('generator_cpu_busy_pct') for r in lines), '', 1)} / "
                   f"{fmt(median(r.get('generator_cpu_busy_pct') for r in posts), '', 1)} |")
    out.append(f"\nEvery round (a server under {SATURATED:.0f} % busy in a closed loop waited for the "
               "generator):\n")
    out.append("| round | shape | first | IAMAT /s | server % | gen % | server us/req | posts /s | server % | "
               "gen % | server us/req | posts / IAMAT | errors IAMAT / posts |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for depth, pairs in shapes:
        for k, post, line, first in pairs:
            r = (post["achieved_rate"] / line["achieved_rate"]
                 if post.get("achieved_rate") and line.get("achieved_rate") else None)
            out.append(f"| r{k} | 64x{depth} | {'posts' if '-post-' in first else 'IAMAT'} | "
                       f"{fmt(line.get('achieved_rate'), '', 0)} | {fmt(line.get('server_cpu_busy_pct'), '', 1)} | "
                       f"{fmt(line.get('generator_cpu_busy_pct'), '', 1)} | "
                       f"{fmt(line.get('server_cpu_us_per_request'), '', 2)} | "
                       f"{fmt(post.get('achieved_rate'), '', 0)}{' **generator-bound**' if bound(post) else ''} | "
                       f"{fmt(post.get('server_cpu_busy_pct'), '', 1)} | "
                       f"{fmt(post.get('generator_cpu_busy_pct'), '', 1)} | "
                       f"{fmt(post.get('server_cpu_us_per_request'), '', 2)} | "
                       f"{'n/a' if r is None else f'{r:.3f}'} | "
                       f"{fmt(line.get('errors'))} / {fmt(post.get('errors'))} |")
    out.append("")
    return out


def floor_shapes(runs, order):
    """[(depth, [(round, herd run, floor run, bare run or None, order of
    the three)])] of the floor scenario, for the depths that ran."""
    out = []
    for depth in (1, 16, 32):
        rounds = []
        for k, herd, floor, _ in paired_rounds(runs, order, f"floor-herd-64x{depth}", f"floor-floor-64x{depth}"):
            bare = runs.get(f"floor-bare-64x{depth}-r{k}", {}).get("result")
            names = [f"floor-{w}-64x{depth}-r{k}" for w in ("herd", "floor", "bare")]
            first = " ".join(n.split("-")[1] for n in sorted((n for n in names if n in order), key=order.index))
            rounds.append((k, herd, floor, bare, first))
        if rounds:
            out.append((depth, rounds))
    return out


def floor_ratios(rounds, which):
    """The sorted herd/floor (which=2) or herd/bare (which=3) ratios."""
    return sorted(r[1]["achieved_rate"] / r[which]["achieved_rate"] for r in rounds
                  if r[which] and r[1].get("achieved_rate") and r[which].get("achieved_rate"))


def floor_bound(r):
    busy = r.get("server_cpu_busy_pct") if r else None
    return busy is not None and busy < SATURATED


def floor_target_rows(runs, order):
    """The Targets rows of herd against the floor: [(name, measured,
    baseline, ratio, met)]."""
    rows = []
    for depth, rounds in floor_shapes(runs, order):
        ratios = floor_ratios(rounds, 2)
        if not ratios:
            continue
        mid = statistics.median(ratios)
        want = FLOOR_AT_LEAST[depth]
        name = {1: "IAMAT 64 x 1 stored and flooded >= 0.95x floor",
                16: "Pipelined 64 x 16 >= 0.85x floor",
                32: "Pipelined 64 x 32 >= 0.85x floor (the deeper pipeline: the generator did not saturate "
                    "the floor at 64 x 16)"}[depth]
        bound = sum(1 for r in rounds if floor_bound(r[2]))
        flag = f" **generator-bound in {bound} of {len(rounds)} rounds**" if bound else ""
        herd_busy = median(r[1].get("server_cpu_busy_pct") for r in rounds)
        floor_busy = median(r[2].get("server_cpu_busy_pct") for r in rounds)
        rows.append((f"{name} ({len(ratios)} rounds, order swapped each round)",
                     f"median herd {fmt(median(r[1].get('achieved_rate') for r in rounds), '/s')} "
                     f"(server {fmt(herd_busy, ' %', 1)} busy)",
                     f"median floor {fmt(median(r[2].get('achieved_rate') for r in rounds), '/s')} "
                     f"(server {fmt(floor_busy, ' %', 1)} busy){flag}; ratios "
                     f"{', '.join(f'{x:.2f}' for x in ratios)}",
                     f"{mid:.2f}", ("yes" if mid >= want else "no") + (" (unsaturated floor)" if bound else "")))
    return rows


def floor_section(runs, order, rounds_note=""):
    """herd against the floor and bare, or [] when it did not run."""
    out = []
    shapes = floor_shapes(runs, order)
    if not shapes:
        return out
    n = max(len(r) for _, r in shapes)
    out.append("## Against the floor\n")
    out.append(rounds_note)
    out.append("The floor (`herd-bench floor`) is the bare line server that also appends every reply it sends "
               "to one outgoing connection per neighbour (three discard sinks, `herd-bench sink`), written in "
               "batches by one task per sink: it parses nothing and stores nothing, the cheapest server that "
               "answers and floods. herd / floor is what herd's own work costs (parse, validate, store, "
               "order); herd / bare also counts the flood's I/O, which any flooding server pays. Three servers "
               "up at once on the server's CPU: a one-shard herd like the healthy one (three `herd-bench sink` "
               "neighbours), the floor and bare; the six sinks and the generator on the other CPU. 64 "
               f"connections, closed loop (64x1) and pipelined (64x16), {n} rounds, the order swapped every "
               "round; medians of the rounds' ratios. Busy % is each server process's own CPU share over the "
               f"measured window (`--pid`); a floor under {SATURATED:.0f} % busy waited for the generator "
               "(**generator-bound**), and then 64x32 runs too.\n")
    out.append("| target | measured | baseline (same run) | ratio | met |")
    out.append("|---|---|---|---|---|")
    for row in floor_target_rows(runs, order):
        out.append("| " + " | ".join(row) + " |")
    out.append("")
    out.append("| shape | herd /s | floor /s | bare /s | herd / floor (range) | herd / bare (range) | "
               "server busy % herd / floor / bare | generator busy % herd / floor / bare | "
               "server us/request herd / floor / bare |")
    out.append("|---|---|---|---|---|---|---|---|---|")

    def med(rounds, i, key, digits=0, unit=""):
        return fmt(median(r[i].get(key) for r in rounds if r[i]), unit, digits)

    def rng(rs):
        return "n/a" if not rs else f"**{statistics.median(rs):.2f}** ({rs[0]:.2f}-{rs[-1]:.2f})"

    for depth, rounds in shapes:
        bound = sum(1 for r in rounds if floor_bound(r[2]))
        flag = f" (**generator-bound** in {bound} of {len(rounds)})" if bound else ""
        out.append(f"| 64x{depth} | {med(rounds, 1, 'achieved_rate', 0, '/s')} | "
                   f"{med(rounds, 2, 'achieved_rate', 0, '/s')}{flag} | {med(rounds, 3, 'achieved_rate', 0, '/s')} | "
                   f"{rng(floor_ratios(rounds, 2))} | {rng(floor_ratios(rounds, 3))} | "
                   f"{med(rounds, 1, 'server_cpu_busy_pct', 1)} / {med(rounds, 2, 'server_cpu_busy_pct', 1)} / "
                   f"{med(rounds, 3, 'server_cpu_busy_pct', 1)} | "
                   f"{med(rounds, 1, 'generator_cpu_busy_pct', 1)} / {med(rounds, 2, 'generator_cpu_busy_pct', 1)} / "
                   f"{med(rounds, 3, 'generator_cpu_busy_pct', 1)} | "
                   f"{med(rounds, 1, 'server_cpu_us_per_request', 2)} / "
                   f"{med(rounds, 2, 'server_cpu_us_per_request', 2)} / "
                   f"{med(rounds, 3, 'server_cpu_us_per_request', 2)} |")
    out.append("\nEvery round (rate /s, then server % / generator % busy):\n")
    out.append("| round | shape | order | herd /s | herd server % / gen % | floor /s | floor server % / gen % | "
               "bare /s | bare server % / gen % | herd / floor | herd / bare |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for depth, rounds in shapes:
        for k, herd, floor, bare, first in rounds:
            def cell(r):
                if not r:
                    return "n/a | n/a"
                return (f"{fmt(r.get('achieved_rate'), '', 0)} | {fmt(r.get('server_cpu_busy_pct'), '', 1)} / "
                        f"{fmt(r.get('generator_cpu_busy_pct'), '', 1)}")

            def rr(r):
                return ("n/a" if not r or not r.get("achieved_rate") or not herd.get("achieved_rate")
                        else f"{herd['achieved_rate'] / r['achieved_rate']:.2f}")
            fl = cell(floor)
            if floor_bound(floor):
                fl = fl.replace(" | ", " **generator-bound** | ", 1)
            out.append(f"| r{k} | 64x{depth} | {first} | {cell(herd)} | {fl} | {cell(bare)} | {rr(floor)} | "
                       f"{rr(bare)} |")
    out.append("")
    return out


def sections_of(blob):
    """The "## " sections of a markdown text: [(title line, text)]."""
    out = []
    for part in ("\n" + blob).split("\n## ")[1:]:
        title = "## " + part.split("\n", 1)[0]
        out.append((title, ("## " + part).rstrip("\n") + "\n"))
    return out


def splice(sections_path, path):
    """Puts every section of `sections_path` in place of the one of the
    same title in `path` (only between its report markers, if it has them),
    or before its "## Every run" when it has none."""
    text = open(path).read()
    head, body, tail = "", text, ""
    if "<!-- report -->" in text:
        head, rest = text.split("<!-- report -->", 1)
        body, tail = rest.split("<!-- /report -->", 1)
        head, tail = head + "<!-- report -->", "<!-- /report -->" + tail
    for title, section in sections_of(open(sections_path).read()):
        start = body.find(f"\n{title}\n")
        if start >= 0:
            end = body.find("\n## ", start + 1)
            end = len(body) if end < 0 else end + 1
            body = body[:start + 1] + section + ("\n" if end < len(body) else "") + body[end:]
        else:
            at = body.find("\n## Every run")
            at = len(body) if at < 0 else at + 1
            body = body[:at] + section + "\n" + body[at:]
    body = splice_target_rows(open(sections_path).read(), body)
    open(path, "w").write(head + body + tail)


# Targets rows that a scenario run alone also puts in the Targets table.
SPLICED_TARGETS = ("IAMAT 64 x 1 stored and flooded >= 0.95x floor", "Pipelined 64 x 16 >= 0.85x floor",
                   "Pipelined 64 x 32 >= 0.85x floor")


def splice_target_rows(sections, body):
    """Puts each row of `sections` whose target is one of SPLICED_TARGETS
    in place of the row of the same target in the "## Targets" table of
    `body`, or at that table's end."""
    start = body.find("\n## Targets\n")
    if start < 0:
        return body
    end = body.find("\n## ", start + 1)
    end = len(body) if end < 0 else end
    lines = body[start:end].split("\n")
    for new in sections.split("\n"):
        key = next((t for t in SPLICED_TARGETS if new.startswith(f"| {t}")), None)
        if key is None:
            continue
        at = next((i for i, l in enumerate(lines) if l.startswith(f"| {key}")), None)
        if at is not None:
            lines[at] = new
        else:
            last = max(i for i, l in enumerate(lines) if l.startswith("|"))
            lines.insert(last + 1, new)
    return body[:start] + "\n".join(lines) + body[end:]


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:  # noqa: BLE001 - a missing tool only blanks one line
        return ""


def main():
    args = sys.argv[1:]
    if args[:1] == ["--splice"]:
        splice(args[1], args[2])
        return
    only_sections = args[:1] == ["--sections"]
    if only_sections:
        args = args[1:]
    results_path, notes_path = args[0], args[1]
    server_cpu, gen_cpu = (args[2], args[3]) if len(args) > 3 else ("0", "1")
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

    if only_sections:
        when = (f"Measured alone (`bench/run.sh` with `SCENARIOS`) on "
                f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} at herd "
                f"{sh('git rev-parse --short HEAD')}, server on CPU {server_cpu}, generator and sinks on "
                f"CPU {gen_cpu}; the rest of this report is from the full run named at its top.\n")
        out = (tokens_section(runs, order, when) + tls_section(runs, order, when)
               + phones_section(runs, order, when) + floor_section(runs, order, when))
        print("\n".join(out))
        return

    def ratio(a, b):
        return None if a is None or b is None or b == 0 else a / b

    def fr(r):
        return "n/a" if r is None else f"{r:.2f}"

    def baseline_bound(name):
        return name.startswith("bare") and res(name, "generator_bound") is True

    cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
    out = []
    out.append("# herd bench report\n")
    out.append(f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    mem = sh("free -g | awk '/Mem:/ {print $2}'")
    out.append(f"- machine: {os.cpu_count()} CPUs ({cpu or 'unknown model'}), "
               f"Linux {platform.release()}, {mem} GiB")
    out.append(f"- herd: {sh('git rev-parse --short HEAD')} built by {sh('rustc --version')}")
    out.append(f"- layout: server pinned to CPU {server_cpu}; load generator, flood sinks, probe and "
               f"places-mock on CPU {gen_cpu}; loopback")
    out.append("- every reply validated; latency from the scheduled send time in open loop; "
               "CPU busy % from /proc/stat over each measured window\n")

    out.append("## Targets\n")
    out.append("| target | measured | baseline (same run) | ratio | met |")
    out.append("|---|---|---|---|---|")

    def row(name, measured, baseline, r, met):
        out.append(f"| {name} | {measured} | {baseline} | {r} | {met} |")

    def yes(ok):
        return "n/a" if ok is None else ("yes" if ok else "no")

    def rate_row(name, herd, base, want, base_label="bare"):
        h, b = res(herd, "achieved_rate"), res(base, "achieved_rate")
        r = ratio(h, b)
        flag = " (baseline generator-bound)" if baseline_bound(base) else ""
        row(name, fmt(h, "/s"), f"{base_label} {fmt(b, '/s')}{flag}", fr(r), yes(None if r is None else r >= want))

    rate_row("IAMAT 64x1, stored and flooded, >= 0.9x bare", "healthy-64x1", "bare-64x1", 0.9)
    rate_row("IAMAT 64x16 pipelined, >= 0.8x bare", "healthy-64x16", "bare-64x16", 0.8)
    # The interleaved rounds: each round's herd rate over the bare rate
    # measured next to it, the order swapped every round; the median ratio.
    for depth, want in ((1, 0.9), (16, 0.8)):
        pairs = []
        for n in order:
            prefix = f"tput-herd-64x{depth}-r"
            if n.startswith(prefix):
                bare = f"tput-bare-64x{depth}-r{n[len(prefix):]}"
                h, b = res(n, "achieved_rate"), res(bare, "achieved_rate")
                saturated = res(bare, "server_cpu_busy_pct")
                rr = ratio(h, b)
                if rr is not None:
                    pairs.append((rr, h, b, saturated))
        if not pairs:
            continue
        rs = sorted(p[0] for p in pairs)
        mid = statistics.median(rs)
        bound = sum(1 for p in pairs if p[3] is not None and p[3] < SATURATED)
        flag = f" ({bound} generator-bound)" if bound else ""
        row(f"interleaved ({len(pairs)} rounds, order swapped each round): IAMAT 64x{depth}, median of the "
            f"rounds' ratios >= {want}x bare",
            f"median herd {fmt(statistics.median(p[1] for p in pairs), '/s')}",
            f"median bare {fmt(statistics.median(p[2] for p in pairs), '/s')}{flag}; "
            f"ratios {', '.join(f'{r:.2f}' for r in rs)}",
            fr(mid), yes(mid >= want))
    for depth in (1, 16):
        h, redis = res(f"healthy-64x{depth}", "achieved_rate"), res(f"redis-geoadd-64x{depth}", "achieved_rate")
        rr = ratio(h, redis)
        row(f"IAMAT 64x{depth} ahead of Redis GEOADD -P {depth}", fmt(h, "/s"), f"Redis {fmt(redis, '/s')}",
            fr(rr), yes(None if rr is None else rr > 1))
    for bad in ("down", "slow"):
        for level in (50, 80):
            what = "every neighbour down" if bad == "down" else "one neighbour slow"
            h = res(f"healthy-open-{level}", "p99_us")
            # At the scenario's own 50/80 % of max, and at the healthy rate
            # (the same offered load).
            for run, how in ((f"{bad}-open-{level}", "of its own max"),
                             (f"{bad}-at-healthy-open-{level}", "at the healthy rate")):
                b = res(run, "p99_us")
                rr = ratio(b, h)
                row(f"open loop at {level} % ({how}), {what}: p99 <= 1.25x healthy", fmt(b, " us", 1),
                    f"healthy p99 {fmt(h, ' us', 1)}", fr(rr), yes(None if rr is None else rr <= 1.25))
    # The interleaved runs: medians of p99 over the rounds, each failure
    # against the healthy server measured in the same minutes.
    def median_p99(kind, level):
        vals = [v for v in (res(n, "p99_us") for n in order if n.startswith(f"paired-{kind}-{level}-r"))
                if v is not None]
        return (statistics.median(vals) if vals else None), len(vals)

    for bad in ("down", "slow"):
        what = "every neighbour down" if bad == "down" else "one neighbour slow"
        for level in (50, 80):
            h, hn = median_p99("healthy", level)
            b, bn = median_p99(bad, level)
            rr = ratio(b, h)
            row(f"interleaved ({bn} rounds), open loop at the healthy {level} % rate, {what}: "
                "median p99 <= 1.25x healthy median", fmt(b, " us", 1),
                f"healthy median p99 {fmt(h, ' us', 1)} ({hn} rounds)", fr(rr),
                yes(None if rr is None else rr <= 1.25))
    o80, bo80 = res("healthy-open-80", "p99_us"), res("bare-at-healthy-open-80", "p99_us")
    row("open loop at 80 % of max: p99 < 1 ms (and vs the bare server at that rate)", fmt(o80, " us", 1),
        f"bare p99 {fmt(bo80, ' us', 1)}", fr(ratio(o80, bo80)), yes(None if o80 is None else o80 < 1000))
    wc, wi = res("whatsat-cached-64x1", "achieved_rate"), res("near-iamat-64x1", "achieved_rate")
    rw = ratio(wc, wi)
    row("cached WHATSAT, 20 results, >= 0.4x IAMAT", fmt(wc, "/s"), f"IAMAT {fmt(wi, '/s')}", fr(rw),
        yes(None if rw is None else rw >= 0.4))
    gm, sm = res("growth", "max_us"), res("healthy-64x16", "max_us")
    rg = ratio(gm, sm)
    row("growth to 5 M clients: max latency <= 2x steady max", fmt(gm, " us", 1),
        f"steady (healthy 64x16) max {fmt(sm, ' us', 1)}", fr(rg), yes(None if rg is None else rg <= 2))
    for mode, want in (("everysec", 0.8), ("always", 0.5)):
        for depth in (1, 16):
            rate_row(f"IAMAT 64x{depth} with the journal, fsync {mode}, >= {want}x persistence off",
                     f"journal-{mode}-64x{depth}", f"healthy-64x{depth}", want, "persistence off")
        for depth in (1, 16):
            h, redis = res(f"journal-{mode}-64x{depth}", "achieved_rate"), res(f"redis-aof-{mode}-64x{depth}", "achieved_rate")
            rr = ratio(h, redis)
            row(f"IAMAT 64x{depth}, journal fsync {mode}, ahead of Redis GEOADD -P {depth} with appendfsync {mode}",
                fmt(h, "/s"), f"Redis {fmt(redis, '/s')}", fr(rr), yes(None if rr is None else rr > 1))
        jp, hp = res(f"journal-{mode}-at-healthy-open-80", "p99_us"), res("healthy-open-80", "p99_us")
        row(f"open loop at the healthy 80 % rate, fsync {mode}: p99 (no target)", fmt(jp, " us", 1),
            f"persistence off p99 {fmt(hp, ' us', 1)}", fr(ratio(jp, hp)), "-")
    cm, compactions = res("journal-compaction", "max_us"), res("journal-compactions", "compactions")
    rc = ratio(cm, sm)
    row(f"journal compaction under load ({fmt(compactions)} rewrites): max latency <= 2x steady max",
        fmt(cm, " us", 1), f"steady (healthy 64x16) max {fmt(sm, ' us', 1)}", fr(rc),
        yes(None if rc is None or not compactions else rc <= 2))
    jg = res("journal-growth", "max_us")
    rj = ratio(jg, sm)
    row("growth to 5 M clients with the journal: max latency <= 2x steady max", fmt(jg, " us", 1),
        f"steady (healthy 64x16) max {fmt(sm, ' us', 1)}", fr(rj), yes(None if rj is None else rj <= 2))
    rss = res("healthy-10k-conns", "server_vmrss_mib")
    records = res("records-held", "records")
    # The target is in MiB (issue 33, the guide's table); this row once
    # checked 150 MB (143 MiB).
    row("10,000 connections + 1 M records <= 150 MiB RSS",
        f"{fmt(rss, ' MiB', 1)} with {fmt(records)} records", "-", "-",
        yes(None if rss is None or records is None else rss <= 150 and records >= 1_000_000))
    pp99 = res("propagation-2-hops", "p99_us")
    row("update visible two hops away: p99 < 2 ms", fmt(pp99, " us", 1), "-", "-",
        yes(None if pp99 is None else pp99 < 2000))
    s1, s2 = res("shards-1-64x16", "achieved_rate"), res("shards-2-64x16", "achieved_rate")
    row("2 shards vs 1, 64x16 (cores allowing)", fmt(s2, "/s"), f"1 shard {fmt(s1, '/s')}", fr(ratio(s2, s1)),
        f"see note: the 2nd shard shares CPU {gen_cpu} with the generator")

    for depth in (1, 16):
        pairs = paired_rounds(runs, order, f"tokens-on-64x{depth}", f"tokens-off-64x{depth}")
        ratios = on_off_ratios(pairs)
        if ratios:
            mid = statistics.median(ratios)
            control, control_ratios = tokens_control(runs, order, depth)
            aa = "" if control is None else f"; A/A control median {control:.3f} ({len(control_ratios)} rounds)"
            row(f"tokens on ({len(ratios)} rounds, order swapped each round): IAMAT 64x{depth}, median of the "
                f"rounds' ratios within {TOKENS_WITHIN * 100:.0f} % of tokens off",
                f"median on {fmt(median(p[1].get('achieved_rate') for p in pairs), '/s')}",
                f"median off {fmt(median(p[2].get('achieved_rate') for p in pairs), '/s')}; "
                f"ratios {', '.join(f'{r:.3f}' for r in ratios)}{aa}",
                f"{mid:.3f}", yes(mid >= 1 - TOKENS_WITHIN))
    for depth in (1, 16):
        pairs = phones_rounds(runs, order, depth)
        ratios = on_off_ratios(pairs)
        if ratios:
            mid = statistics.median(ratios)
            row(f"OwnTracks posts over HTTP ({len(ratios)} rounds, order swapped each round), 64x{depth}: median "
                f"of the rounds' posts/IAMAT ratios >= {POSTS_AT_LEAST}x the IAMAT line rate per core",
                f"median posts {fmt(median(p[1].get('achieved_rate') for p in pairs), '/s')}",
                f"median IAMAT {fmt(median(p[2].get('achieved_rate') for p in pairs), '/s')}; "
                f"ratios {', '.join(f'{r:.3f}' for r in ratios)}",
                f"{mid:.3f}", yes(mid >= POSTS_AT_LEAST))
    for r in floor_target_rows(runs, order):
        row(*r)
    out.append("")
    out.extend(tokens_section(runs, order))
    out.extend(tls_section(runs, order))
    out.extend(phones_section(runs, order))
    out.extend(floor_section(runs, order))
    out.append("\n## Every run\n")
    out.append("A baseline (`bare-*`) closed-loop row whose server CPU was under "
               f"{SATURATED:.0f} % busy is marked **generator-bound**: it measured the generator.\n")
    out.append("| scenario | mode | conns x depth | target rate | achieved rate | p50 us | p99 us | p99.9 us "
               "| p99.99 us | max us | send lag p99 us | errors | gen CPU % | server CPU % | server RSS MiB |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in order:
        r = runs[name]["result"]
        if "p50_us" not in r:
            continue
        depth = r.get("depth")
        label = f"{name} **generator-bound**" if baseline_bound(name) else name
        out.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            label, r.get("mode", "-"), f"{r.get('connections', '-')} x {depth if depth else '-'}",
            fmt(r.get("target_rate")), fmt(r.get("achieved_rate"), "", 0),
            fmt(r.get("p50_us"), "", 1), fmt(r.get("p99_us"), "", 1), fmt(r.get("p999_us"), "", 1),
            fmt(r.get("p9999_us"), "", 1), fmt(r.get("max_us"), "", 1),
            fmt(r.get("send_lag_p99_us"), "", 1) if r.get("mode") == "open" else "-", fmt(r.get("errors")),
            fmt(r.get("generator_cpu_busy_pct"), "", 1), fmt(r.get("server_cpu_busy_pct"), "", 1),
            fmt(r.get("server_vmrss_mib"), "", 1)))

    plots = [
        ("closed", "Closed loop, herd vs bare"),
        ("open", "Open loop, herd vs bare at the same rates"),
        ("failure", "Neighbours healthy, down or slow"),
        ("failure-timeline", "Neighbours healthy, down or slow, per second"),
        ("growth", "Growth vs steady state"),
        ("growth-timeline", "Growth, per second"),
        ("whatsat", "WHATSAT"),
        ("shards", "1 vs 2 shards"),
        ("journal", "Journal vs persistence off"),
        ("journal-timeline", "Journal compaction and growth, per second"),
        ("conns", "10,000 connections"),
    ]
    out.append("\n## Plots\n")
    out.append("Percentile plots: latency (log) against percentile on a 1/(1-p) axis, so the tail "
               "gets the room. Timelines: p99 (thick) and maximum (thin) of each second.\n")
    for file, title in plots:
        if os.path.exists(os.path.join(os.path.dirname(os.path.abspath(sys.argv[0])), "plots", f"{file}.svg")):
            out.append(f"### {title}\n\n![{title}](plots/{file}.svg)\n")

    up = runs.get("whatsat-upstream", {}).get("result", {})
    wreq = sum(res(f"whatsat-mix-{m}", "requests") or 0 for m in ("64x1", "64x16", "open-50", "open-80"))
    if up and wreq:
        whatsats = wreq / 2
        out.append("\n## WHATSAT against places-mock (20 ms upstream latency)\n")
        out.append(f"- WHATSATs in the four measured windows: about {whatsats:,.0f} (50 % of {wreq:,}), "
                   "over 2,000 clients")
        out.append(f"- upstream requests over the whole scenario, warm-ups included: {up.get('requests', 'n/a'):,}")
        if up.get("requests"):
            out.append(f"- upstream requests per WHATSAT: at most {up['requests'] / whatsats:.4f}: "
                       "the rest were answered by the per-shard cache or coalesced with an identical "
                       "request in flight")

    out.append("\n## The generator\n")
    for name in ("bare-64x1", "bare-64x16"):
        g, s = res(name, "generator_cpu_busy_pct"), res(name, "server_cpu_busy_pct")
        if g is not None and s is not None:
            state = "saturated" if s >= SATURATED else "NOT saturated (generator-bound)"
            out.append(f"- {name}: server CPU {s:.1f} % busy ({state}), generator CPU {g:.1f} % busy, "
                       f"{fmt(res(name, 'achieved_rate'), '/s')}")
    out.append("\n## Notes\n")
    out.append(f"- The 2-shard runs pin the second shard to CPU {gen_cpu}, which the load generator also uses: "
               "this 2-core machine cannot show shard scaling cleanly.")
    out.append("- Open-loop rates are 50 % and 80 % of the same scenario's closed-loop 64x1 maximum: an open "
               "loop sends single requests, so the unpipelined rate is its ceiling.")
    for n in notes:
        out.append(f"- {n}")
    failed = [n for n in order if runs[n].get("exit", 0) != 0]
    if failed:
        out.append(f"- runs with errors (herd-bench exit != 0): {', '.join(failed)}")
    print("\n".join(out))


if __name__ == "__main__":
    main()
