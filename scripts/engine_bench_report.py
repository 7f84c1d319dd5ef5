"""The docs/PERFORMANCE.md section of scripts/engine-bench-modern.sh, from its results.

    python3 scripts/engine_bench_report.py RESULTS.tsv

RESULTS rows: store, case, wall s, then CPU s of the clients, hoistd, the engine, the
registry, then the bytes and the digest of the manifest pushed. The environment gives the context: LOAD_START, VERSIONS, RUNS, IMAGE_DESC, NOTE,
ENGINE_BENCH_PUSH_ARGS.
"""

import os
import platform
import statistics
import sys
import time

CASES = [
    ("docker-push", "docker push"),
    ("engine", "hoist push docker-daemon:"),
    ("save+push", "docker save + hoist push docker-archive:"),
    ("docker-repush", "docker push again, every blob present"),
    ("engine-repush", "hoist push docker-daemon: again, every blob present (new hoistd)"),
]
COLUMNS = ["wall", "client", "hoistd", "engine", "registry"]


def load(path, digests):
    rows = {}
    for line in open(path):
        store, case, *values, digest = line.rstrip("\n").split("\t")
        row = dict(zip(COLUMNS + ["pushed"], map(float, values)))
        row["cpu"] = sum(row[c] for c in COLUMNS[1:])
        rows.setdefault((store, case), []).append(row)
        digests.setdefault((store, case), set()).add(digest)
    return rows


def short(digests):
    return " ".join(sorted(d.split(":")[-1][:12] for d in digests))


def medians(runs):
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def cpu_model():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def ratios(store, med):
    engine, docker, save = (med.get((store, c)) for c in ("engine", "docker-push", "save+push"))
    if not engine:
        return []
    out = []
    if docker:
        out.append(f"{engine['wall'] / docker['wall']:.2f}x docker push's wall time and "
                   f"{engine['cpu'] / max(docker['cpu'], 0.01):.2f}x its CPU")
    if save:
        out.append(f"{engine['wall'] / save['wall']:.2f}x the wall time of docker save + push")
    return [f"- {store} store: hoist push docker-daemon: takes " + "; ".join(out) + "."]


def main():
    digests = {}
    rows = load(sys.argv[1], digests)
    med = {key: medians(runs) for key, runs in rows.items()}
    stores = list(dict.fromkeys(store for store, _ in rows))
    env = os.environ
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    out = ["<!-- engine-bench-modern: written by scripts/engine-bench-modern.sh -->",
           "## docker-daemon: on Docker 28, both image stores, against docker push\n"]
    if env.get("NOTE"):
        out.append(f"**{env['NOTE']}**\n")
    out += [
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; machine: {cpu_model()}, "
        f"{os.cpu_count()} cores, {mem_gib:.0f} GiB; load average (1, 5, 15 min) at the start "
        f"{env.get('LOAD_START', '?')}, at the end {' '.join(open('/proc/loadavg').read().split()[:3])}",
        f"- versions: {env.get('VERSIONS', '?')}",
        f"- image: {env.get('IMAGE_DESC', '?')}, `docker load`ed: an OCI archive on the containerd "
        "store (its gzip blobs kept as they are), a docker-archive on the classic store "
        "(classic: vfs storage driver; containerd: native snapshotter)",
        f"- how: scripts/engine-bench-modern.sh; per store {env.get('RUNS', '?')} run(s), the cases "
        "in an order rotated every run, each with a fresh registry (Debian's docker-registry, "
        "filesystem storage, plain HTTP on 127.0.0.1) and a fresh hoistd; medians of each "
        "column. CPU: user+system seconds from /proc/PID/stat before and after, of the clients "
        "(the chroot's docker CLI, hoist), hoistd, the engine (dockerd, containerd and their descendants) and "
        "the registry; total is their sum. Pushed: the config and layers the pushed manifest "
        "names (its digest's first hex digits after it). hoist push flags: "
        f"{env.get('ENGINE_BENCH_PUSH_ARGS') or 'none'}\n",
        "| store | case | wall s | CPU s total | clients | hoistd | engine | registry | pushed MiB, manifest |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for store in stores:
        for case, label in CASES:
            m = med.get((store, case))
            if m:
                out.append(f"| {store} | {label} | {m['wall']:.2f} | {m['cpu']:.2f} | "
                           f"{m['client']:.2f} | {m['hoistd']:.2f} | {m['engine']:.2f} | "
                           f"{m['registry']:.2f} | {m['pushed'] / 2**20:.1f}, "
                           f"{short(digests[(store, case)])} |")
    out.append("")
    for store in stores:
        out += ratios(store, med)
    out.append("<!-- /engine-bench-modern -->")
    print("\n".join(out))


if __name__ == "__main__":
    main()
