#!/usr/bin/env python3
"""Turns the JSON lines written by bench/run.sh into the summary table.

  report.py RESULTS.jsonl OUT.md     prints the report and writes it to OUT.md
"""

import json
import sys

MIB = 1 << 20
ARTICLE_RPS, ARTICLE_P95_MS = 408, 412  # the AWS article's upload-creation numbers


def load(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    by = {}
    for r in rows:
        by.setdefault(r["key"], []).append(r)
    return rows, by


def fmt(x, nd=1):
    if x is None:
        return "–"
    if isinstance(x, str):
        return x
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{nd}f}"


def size_label(n):
    return f"{n / 2**30:g} GiB" if n >= 2**30 else f"{n / MIB:g} MiB"


def disturbed(runs):
    """A warning when something besides the benchmark used > 10 % of a core."""
    worst = max((r.get("other_cpu_pct", 0) for r in runs), default=0)
    return f" ⚠ disturbed (other CPU up to {worst:.0f} %)" if worst > 10 else ""


def quick_note(by):
    """How many of vidhost's measured range requests its connections answered themselves."""
    quick = sum(r["quick"] for r in by.get("range_quick", []))
    asked = sum(r["wrk"]["requests"] for k, runs in by.items()
                if k.startswith("range_") and k.endswith(tuple(f"_vidhost_r{i}" for i in range(1, 10)))
                for r in runs)
    if not asked:
        return ""
    return (f"During vidhost's measured range runs its connections answered {quick:,} requests "
            "themselves (fastpath.rs, counted by `vidhost_delivery_quick_answers_total`; wrk "
            f"counted {asked:,} completed, and the server also answers those still in flight "
            "when wrk stops), the router the rest.")


def verdict(ok):
    return "ok" if ok else "**MISS**"


def main():
    src, out_path = sys.argv[1], sys.argv[2]
    rows, by = load(src)
    meta = by.get("meta", [{}])[0]
    wall = by.get("wall", [{}])[0].get("seconds")
    wrk = {r["key"]: r for r in rows if r["key"].startswith(("range_", "api_")) and "wrk" in r}

    summary = []  # (measurement, vidhost, reference, ratio, target, verdict)

    # (a) + (b)
    for r in by.get("upload", []):
        u = r["upload"]
        setting = ("server default" if r["part_setting"] == "default"
                   else f"MIN_PART_SIZE_BYTES={r['part_setting']}")
        ratio = u["mb_per_s"] / r["dd_mb_per_s"]
        if r.get("busy_before_pct", 0) >= 15:  # the wait for a quiet machine timed out
            setting += f" ⚠ machine {r['busy_before_pct']} % busy before"
        summary.append((f"(a) {size_label(u['bytes'])} multipart upload, {u['parallel']} in flight, "
                        f"{u['part_count']} parts of "
                        f"{u['part_size'] // MIB} MiB ({setting}) — MB/s vs dd conv=fsync",
                        fmt(u["mb_per_s"]), fmt(r["dd_mb_per_s"]), f"{ratio:.2f}",
                        "≥ 0.80", verdict(ratio >= 0.80)))
        peak = u["peak_rss_kib"] / 1024
        summary.append((f"(b) server peak RSS during (a), {u['part_size'] // MIB} MiB parts — MiB",
                        fmt(peak), "64 (target)", f"{peak / 64:.2f}", "≤ 64 MiB",
                        verdict(peak <= 64)))

    # (c): the mean over the interleaved rounds
    def rounds(prefix):
        return [r["wrk"] for k, r in wrk.items() if k.startswith(prefix + "_r")]

    def raw_rounds(chunk):
        return [r for k, r in wrk.items() if k.startswith(f"range_{chunk}_")]

    def mean(xs):
        return sum(xs) / len(xs)

    for chunk, label in ((1048576, "1 MiB"), (65536, "64 KiB")):
        vs, ns = rounds(f"range_{chunk}_vidhost"), rounds(f"range_{chunk}_nginx")
        if not (vs and ns):
            continue
        n_r = f"mean of {len(vs)} rounds" if len(vs) > 1 else "1 round"
        n_r += disturbed(raw_rounds(chunk))
        v_rps, n_rps = mean([w["rps"] for w in vs]), mean([w["rps"] for w in ns])
        r = v_rps / n_rps
        summary.append((f"(c) random {label} ranges of /play/…/original, -c64 — req/s vs nginx "
                        f"({n_r})", fmt(v_rps), fmt(n_rps), f"{r:.2f}", "≥ 0.90",
                        verdict(r >= 0.90)))
        v_p99, n_p99 = mean([w["p99_ms"] for w in vs]), mean([w["p99_ms"] for w in ns])
        r = v_p99 / n_p99
        summary.append((f"(c) random {label} ranges — p99 ms vs nginx ({n_r})",
                        fmt(v_p99, 2), fmt(n_p99, 2), f"{r:.2f}", "≤ 1.20", verdict(r <= 1.20)))
        bad = sum(w["non2xx"] + w["socket_errors"] for w in vs)
        if bad:
            summary.append((f"(c) random {label} ranges — vidhost errors (status ≥ 400 + socket)",
                            str(bad), str(sum(w["non2xx"] + w["socket_errors"] for w in ns)),
                            "", "0", verdict(False)))

    # (d)
    for db in ("sqlite", "postgres"):
        c, h = wrk.get(f"api_{db}_create"), wrk.get(f"api_{db}_healthz")
        if not (c and h):
            continue
        warn = disturbed([c, h])
        c, h = c["wrk"], h["wrk"]
        r = c["rps"] / h["rps"]
        summary.append((f"(d) {db}: POST /uploads/multipart, -c10 — req/s vs GET /healthz{warn}",
                        fmt(c["rps"]), fmt(h["rps"]), f"{r:.2f}", "≥ 0.50", verdict(r >= 0.5)))
        summary.append((f"(d) {db}: creation req/s vs 10 × article ({ARTICLE_RPS} req/s on AWS)",
                        fmt(c["rps"]), "4,080", f"{c['rps'] / 4080:.2f} (× article "
                        f"{c['rps'] / ARTICLE_RPS:.1f})", "≥ 1.00", verdict(c["rps"] >= 4080)))
        summary.append((f"(d) {db}: creation p95 / p99 ms (healthz p95 / p99)",
                        f"{fmt(c['p95_ms'], 2)} / {fmt(c['p99_ms'], 2)}",
                        f"{fmt(h['p95_ms'], 2)} / {fmt(h['p99_ms'], 2)}",
                        f"p95 {ARTICLE_P95_MS / max(c['p95_ms'], 1e-3):.0f}× below article's "
                        f"{ARTICLE_P95_MS} ms", "p99 < 25 ms", verdict(c["p99_ms"] < 25)))
        me = wrk.get(f"api_{db}_me")
        if me:
            m = me["wrk"]
            summary.append((f"(d) {db}: reference — GET /api/v1/me (the same auth, no write) req/s "
                            f"vs GET /healthz; creation vs it",
                            fmt(m["rps"]), fmt(h["rps"]),
                            f"{m['rps'] / h['rps']:.2f} (creation {c['rps'] / m['rps']:.2f} × it)",
                            "–", ""))
        errs = c["non2xx"] + c["socket_errors"]
        setup = by.get(f"api_setup_{db}", [{}])[0]
        summary.append((f"(d) {db}: creation errors (non-2xx + socket) of {c['responses']:,} "
                        f"creations declaring {size_label(setup.get('create_size', 0))}"
                        + (" — stopped at the count cap" if c["capped"] else ""),
                        str(errs), str(h["non2xx"] + h["socket_errors"]) + " (healthz)", "",
                        "0", verdict(errs == 0)))

    lines = ["# vidhost benchmark — latest run", ""]
    lines.append(f"{meta.get('date', '')} · {meta.get('host', '')} · {meta.get('cpus')} CPUs · "
                 f"{meta.get('mem_gib')} GiB RAM · Linux {meta.get('kernel', '')} · "
                 f"git {meta.get('git', '')} · binary built {meta.get('binary_mtime', '')} · "
                 f"{meta.get('nginx', '')} · {meta.get('wrk', '')} · load average before the run "
                 f"{meta.get('loadavg', '?')}, after {by.get('wall', [{}])[0].get('loadavg', '?')} "
                 f"· wall time {fmt(wall)} s")
    lines += ["", "## Summary", "",
              "| measurement | vidhost | reference | ratio | target | |",
              "| --- | ---: | ---: | ---: | --- | --- |"]
    lines += ["| " + " | ".join(r) + " |" for r in summary]

    lines += ["", "## (a)/(b) uploads in detail", "",
              "| part size | parts | total s | parts s | complete s | MB/s | dd MB/s | "
              "peak RSS MiB (HWM reset / 10 ms samples) | HWM since start MiB | server CPU % (of which kernel) "
              "| machine busy % | iowait % |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in by.get("upload", []):
        u = r["upload"]
        lines.append(
            f"| {u['part_size'] // MIB} MiB ({r['part_setting']}) | {u['part_count']} | "
            f"{u['seconds']} | {u['parts_seconds']} | {u['complete_seconds']} | {u['mb_per_s']} | "
            f"{r['dd_mb_per_s']} | {u['peak_rss_kib'] / 1024:.1f} / "
            f"{u['sampled_max_rss_kib'] / 1024:.1f} | {u['hwm_since_start_kib'] / 1024:.1f} | "
            f"{u['server_cpu_pct_of_core']} ({u.get('server_sys_cpu_pct_of_core', '–')}) | "
            f"{u['machine_busy_pct']} | {u['machine_iowait_pct']} |")

    lines += ["", "## wrk runs in detail", "",
              "| run | req/s | MB/s read | p50 ms | p95 ms | p99 ms | max ms | non-2xx | socket errors "
              "| server CPU % (of which kernel) | PostgreSQL CPU % | wrk CPU % | irq CPU % | other CPU % "
              "| machine busy % | iowait % |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
              "| ---: | ---: |"]
    for key, r in wrk.items():
        w = r["wrk"]
        lines.append(f"| {key}{' (capped)' if w['capped'] else ''} | {fmt(w['rps'])} | "
                     f"{fmt(w['mb_per_s'])} | {w['p50_ms']:.2f} | {w['p95_ms']:.2f} | "
                     f"{w['p99_ms']:.2f} | {w['max_ms']:.2f} | {w['non2xx']} | "
                     f"{w['socket_errors']} | {r['server_cpu_pct']} ({r.get('server_sys_cpu_pct', '–')}) | "
                     f"{r['db_cpu_pct'] if 'postgres' in key else '–'} | {r.get('wrk_cpu_pct', '–')} | "
                     f"{r.get('irq_cpu_pct', '–')} | "
                     f"{r.get('other_cpu_pct', '–')} | {r.get('machine_busy_pct', '–')} | "
                     f"{r.get('machine_iowait_pct', '–')} |")

    setup = by.get("range_setup", [{}])[0]
    lines += ["", "## How it was measured", "",
              "- Everything runs on this one machine over loopback: wrk, python, dd, nginx, "
              "PostgreSQL and vidhost share its CPUs, so a server that needs CPU competes with "
              "its load generator.",
              "- (a) The file is a 1 s ffmpeg testsrc MP4 followed by random bytes. Upload time "
              "runs from the creation request to the answer of `complete`; parts are PUT with "
              "sendfile(2) over 8 keep-alive connections. dd runs right before each upload into "
              "the server's data dir (`bs=8M conv=fsync`, page cache not dropped). MB = 10^6 bytes.",
              "- (b) VmHWM of the server is reset (`echo 5 > /proc/PID/clear_refs`) right before "
              "the upload and read right after; VmRSS is also sampled every 10 ms. "
              "\"HWM since start\" includes start-up and the Argon2id login (19 MiB).",
              f"- (c) nginx serves the server's objects directory (the same file, the same page "
              f"cache): stock `sendfile on; tcp_nopush off;`, `worker_processes auto` "
              f"(= {setup.get('nginx_workers', '?')} workers here), access log off, other settings at "
              f"nginx defaults (keepalive_requests 1000). wrk -t2 -c64, {setup.get('file_bytes', 0) // MIB} MiB "
              "file, uniformly random offsets, 2 s warm-up per target (not counted); vidhost and "
              "nginx rounds alternate and the summary shows the mean of the rounds. The range "
              "script has no Lua `response` callback (wrk would copy every 1 MiB body into Lua "
              "and become the bottleneck), so its errors are wrk's count of status ≥ 400; both "
              "servers' 206 answers are checked once by hand before. " + quick_note(by),
              "- (d) wrk -t2 -c10, 10 s per run unless capped; the creation body declares "
              f"`size` = {size_label(by.get('api_setup_sqlite', [{}])[0].get('create_size', 0))} "
              "(creating a multipart upload reserves nothing on disk: the staging file comes "
              "with the first part; a capped run's rate is over the time it ran); "
              "errors are non-2xx answers counted in the Lua `response` callback plus socket "
              "errors. The PostgreSQL cluster is scripts/pg-test.sh's: fsync=off, "
              "synchronous_commit=off (a throw-away test cluster), so PostgreSQL commits are "
              "not durable there while SQLite's are.",
              "- Server CPU % is utime+stime of the server process(es) over the run, in % of "
              "one core (200 % = both cores); wrk CPU % likewise; irq CPU % is interrupt and "
              "softirq time (mostly the loopback TCP stack, charged to no process); other CPU % "
              "is what the rest of the machine used meanwhile (busy jiffies minus all of those; "
              "> ~10 % means another job disturbed the run). Machine busy % and iowait % are in % of all CPUs "
              "(/proc/stat). Before (a), (c) and each half of (d) the script waits (≤ 3 min) for "
              "the machine to be < 15 % busy."]
    text = "\n".join(lines) + "\n"
    with open(out_path, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
