#!/usr/bin/env python3
"""Turns scripts/bench.sh's results (TSV: case, tool, wall s, client cpu s, max RSS KiB,
registry cpu s, 1-min load at the end of the run) into the markdown table of
docs/PERFORMANCE.md: medians per case and tool, hoist/skopeo ratios, every run listed below.

  bench_report.py RESULTS RUNS RANDOM_MIB TEXT_MIB [LOAD_BEFORE LOAD_AFTER]   the main report
  bench_report.py --split RESULTS WORK       the section of `bench.sh --split` (see split_report)
  bench_report.py --splice main|split OUT MD puts MD into OUT as that part, keeps the rest
"""
import gzip
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
from collections import defaultdict
from datetime import datetime, timezone

# The split section sits between these markers in docs/PERFORMANCE.md, so each of the two runs of
# bench.sh replaces its own part only.
SPLIT_BEGIN = "<!-- bench.sh --split: begin -->"
SPLIT_END = "<!-- bench.sh --split: end -->"
# The main report sits between these, so the sections and text after it (scripts/engine-bench.sh's,
# the notes on what bounds each figure) stay when it is replaced.
MAIN_BEGIN = "<!-- bench.sh: begin -->"
MAIN_END = "<!-- bench.sh: end -->"
# Before the main report had markers, it ran from the top of the file to the first of these.
MAIN_FOLLOWERS = ("<!-- engine-bench", SPLIT_BEGIN)


def splice(part, out_path, md_path):
    new = open(md_path).read().rstrip("\n") + "\n"
    try:
        old = open(out_path).read()
    except FileNotFoundError:
        old = ""
    if part == "main":
        text = splice_main(old, MAIN_BEGIN + "\n" + new + MAIN_END + "\n")
    else:
        text = splice_split(old, SPLIT_BEGIN + "\n" + new + SPLIT_END + "\n")
    open(out_path, "w").write(text)
    print(text)


def splice_main(old, block):
    if MAIN_BEGIN in old and MAIN_END in old:
        head, rest = old.split(MAIN_BEGIN, 1)
        tail = rest.split(MAIN_END, 1)[1].lstrip("\n")
    else:
        head = ""
        tail = old[min([i for i in (old.find(m) for m in MAIN_FOLLOWERS) if i >= 0] + [len(old)]):]
    return head + block + ("\n" + tail if tail else "")


def splice_split(old, block):
    if SPLIT_BEGIN in old and SPLIT_END in old:
        head, rest = old.split(SPLIT_BEGIN, 1)
        tail = rest.split(SPLIT_END, 1)[1]
        others = (head.rstrip("\n") + "\n" + tail.lstrip("\n")).rstrip("\n") + "\n"
    else:
        others = old
    return others + "\n" + block


def machine_line():
    cpu_model = ""
    try:
        for l in open("/proc/cpuinfo"):
            if l.startswith("model name"):
                cpu_model = l.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu_model}, {platform.system()} {platform.release()}"


def layer_sizes(work, case):
    """Compressed layer sizes of the manifest the registry holds for CASE (none if absent)."""
    try:
        return [l["size"] for l in json.load(open(f"{work}/manifest-{case}.json"))["layers"]]
    except (OSError, ValueError, KeyError):
        return []


class Counting:
    """A reader that counts the bytes read through it."""

    def __init__(self, inner):
        self.inner, self.count = inner, 0

    def read(self, n=-1):
        data = self.inner.read(n)
        self.count += len(data)
        return data


def part_layout(layout):
    """(gzip bytes, tar bytes, files) of each layer of the image in the OCI layout LAYOUT."""
    try:
        index = json.load(open(f"{layout}/index.json"))
    except OSError:
        return []
    blob = lambda d: f"{layout}/blobs/" + d.replace(":", "/")
    manifest = json.load(open(blob(index["manifests"][0]["digest"])))
    parts = []
    for layer in manifest["layers"]:
        with gzip.open(blob(layer["digest"])) as z:
            counting = Counting(z)
            files = sum(1 for e in tarfile.open(fileobj=counting, mode="r|") if e.isfile())
            while counting.read(1 << 20):
                pass
        parts.append((layer["size"], counting.count, files))
    return parts


def split_report(path, work):
    """The section of `bench.sh --split`: medians of wall time and bytes on the wire per case,
    the ratios the goals name, the layouts, every run."""
    env = os.environ
    rows = defaultdict(list)
    raw = []
    for line in open(path):
        case, tool, wall, cpu, net, load = line.rstrip("\n").split("\t")
        counts = {k: int(v) for k, v in (kv.split("=") for kv in net.split())}
        rows[case].append((float(wall), float(cpu), counts, float(load)))
        raw.append((case, tool, float(wall), float(cpu), counts, float(load)))

    def med(case, key):
        vals = [key(r) for r in rows.get(case, [])]
        return statistics.median(vals) if vals else None

    def wall(case):
        return med(case, lambda r: r[0])

    def ratio(a, b):
        return f"{a / b:.2f}x" if a and b else "-"

    mib = 1 << 20
    layer = int(env["LAYER_BYTES"])
    conn = env["CONN_MIB"]
    part = env["PART_SIZE"]
    skopeo = subprocess.run(["skopeo", "--version"], capture_output=True, text=True).stdout.strip()
    loads = [r[3] for v in rows.values() for r in v]
    out = ["## Split layers through a per-connection cap\n",
           "Generated by `scripts/bench.sh --split`; do not edit by hand.\n",
           f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; machine: {machine_line()}",
           f"- image: one layer, a tree of {env['TREE_FILES']} files ({env['TREE_MIB']} MiB, "
           f"{layer / mib:.1f} MiB as an uncompressed tar; file sizes 4 KiB to 32 MiB, 30 % of the "
           "files random, the rest text-like; `examples/sample_image --tree-mib`), in a docker-archive",
           f"- path: every TCP connection capped on its own at {conn} MiB/s in each direction "
           "(`examples/ecr_emulator --no-ecr --conn-mib-per-sec`, the tests' fault proxy), as per-flow "
           "shaping does, in front of Debian's docker-registry on loopback; a fresh proxy per "
           "measurement, which counts the bytes it forwarded (the bytes on the wire: layers, "
           "manifests, requests and answers)",
           f"- pushes: hoist `--split-layers {part}`, hoist `--split-layers off` and `skopeo copy "
           "docker-archive:... docker://PROXY/...` (gzip, --dest-tls-verify=false), all to one fresh "
           "registry per run (no blob in common); pulls: `skopeo copy docker://PROXY/... oci:DIR` of "
           f"hoist's split and unsplit images; {skopeo}; hoist: {env['BUILD_NOTE']}",
           f"- runs: {env['RUNS']}, the order of the cases alternated from run to run; medians shown",
           f"- machine load (2 cores shared with other builds and tests): 1/5/15-min load average "
           f"{env['LOAD_BEFORE']} before, {env['LOAD_AFTER']} after; 1-min load at the end of the "
           f"measurements {min(loads):.2f} to {max(loads):.2f} (median {statistics.median(loads):.2f})"
           if loads else "- machine load: -",
           ""]
    out.append("| case | wall s | client CPU s | MiB client -> registry | MiB registry -> client | connections (most at once) |")
    out.append("|---|---|---|---|---|---|")
    labels = [("push-split", f"push, hoist --split-layers {part}"),
              ("push-unsplit", "push, hoist --split-layers off"),
              ("push-skopeo", "push, skopeo copy"),
              ("pull-split", "pull (skopeo), split image"),
              ("pull-unsplit", "pull (skopeo), unsplit image")]
    for case, label in labels:
        if case not in rows:
            continue
        up = med(case, lambda r: r[2]["upstream_bytes"])
        down = med(case, lambda r: r[2]["downstream_bytes"])
        conns = med(case, lambda r: r[2]["connections"])
        most = med(case, lambda r: r[2]["connections_open_max"])
        out.append(f"| {label} | {wall(case):.2f} | {med(case, lambda r: r[1]):.2f} | {up / mib:.2f} | "
                   f"{down / mib:.2f} | {conns:.0f} ({most:.0f}) |")
    out.append("")
    out.append(f"- push wall-time ratio, hoist split / skopeo: {ratio(wall('push-split'), wall('push-skopeo'))} "
               "(goal: at most 0.40x); hoist unsplit / skopeo: "
               f"{ratio(wall('push-unsplit'), wall('push-skopeo'))}; hoist split / hoist unsplit: "
               f"{ratio(wall('push-split'), wall('push-unsplit'))}")
    out.append(f"- pull wall-time ratio, split / unsplit image: {ratio(wall('pull-split'), wall('pull-unsplit'))} "
               "(goal: at most 0.5x)")
    for case, label in labels[:3]:
        sizes = layer_sizes(work, case)
        if sizes:
            out.append(f"- layout, {label}: {len(sizes)} layer(s), gzip sizes "
                       + ", ".join(f"{s / mib:.1f}" for s in sizes)
                       + f" MiB (total {sum(sizes) / mib:.1f} MiB, {100 * sum(sizes) / layer:.0f} % of the tar)")
    parts = part_layout(f"{work}/pulled-pull-split")
    if parts:
        out.append(f"- parts of the split image (as pulled): " + "; ".join(
            f"{t / mib:.1f} MiB tar, {f} files, {g / mib:.1f} MiB gzip" for g, t, f in parts))
    out.append("\n### Every run\n")
    out.append("| case | tool | wall s | client CPU s | MiB up | MiB down | connections (most at once) | 1-min load |")
    out.append("|---|---|---|---|---|---|---|---|")
    for case, tool, w, cpu, c, load in raw:
        out.append(f"| {case} | {tool} | {w:.2f} | {cpu:.2f} | {c['upstream_bytes'] / mib:.2f} | "
                   f"{c['downstream_bytes'] / mib:.2f} | {c['connections']} ({c['connections_open_max']}) | {load:.2f} |")
    print("\n".join(out))


if len(sys.argv) > 1 and sys.argv[1] == "--splice":
    splice(sys.argv[2], sys.argv[3], sys.argv[4])
    sys.exit(0)
if len(sys.argv) > 1 and sys.argv[1] == "--split":
    split_report(sys.argv[2], sys.argv[3])
    sys.exit(0)

path, runs, random_mib, text_mib = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
load_before = sys.argv[5] if len(sys.argv) > 5 else "?"
load_after = sys.argv[6] if len(sys.argv) > 6 else "?"
# Bytes of the OCI layout's blobs (what the registry receives in the oci-gzip case), in GB.
oci_gb = int(os.environ.get("OCI_GZIP_BYTES", "0")) / 1e9
rows = defaultdict(list)
raw = []
for line in open(path):
    case, tool, wall, cpu, rss, reg, load = line.rstrip("\n").split("\t")
    rows[(case, tool)].append((float(wall), float(cpu), int(rss), float(reg), float(load)))
    raw.append((case, tool, wall, cpu, rss, reg, load))

def med(case, tool, i):
    vals = [r[i] for r in rows.get((case, tool), [])]
    return statistics.median(vals) if vals else None

def fmt(v, nd=2):
    return "-" if v is None else f"{v:.{nd}f}"

gib = (int(random_mib) + int(text_mib)) / 1024
skopeo = subprocess.run(["skopeo", "--version"], capture_output=True, text=True).stdout.strip()

out = []
out.append("# Performance: hoist vs skopeo\n")
out.append("Generated by `scripts/bench.sh`; do not edit by hand.\n")
out.append(f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")
out.append(f"- machine: {machine_line()}")
out.append(f"- image: {random_mib} MiB random layer + {text_mib} MiB text-like layer ({gib:.2f} GiB); "
           "its docker-archive and its OCI layout with gzip layers (what the registry receives: "
           f"{oci_gb:.2f} GB) are written by skopeo copy from the uncompressed layout")
out.append(f"- registry: Debian's docker-registry on loopback, fresh storage per run; {skopeo}")
out.append(f"- runs: {runs} per case, alternating tools; medians shown")
loads = [r[4] for v in rows.values() for r in v]
out.append(f"- machine load (shared with other builds and tests): 1/5/15-min load average {load_before} before, "
           f"{load_after} after; 1-min load at the end of the runs {min(loads):.2f} to {max(loads):.2f} "
           f"(median {statistics.median(loads):.2f}) on {os.cpu_count()} cores. Wall times suffer from it; "
           "CPU seconds much less, so compare those first.")
out.append("- client CPU: hoist's CLI plus hoistd (under /usr/bin/time); skopeo's process. Registry CPU: "
           "the registry's user + system seconds over the run, from /proc (it is fresh for every run).\n")
out.append("| case | hoist wall s | skopeo wall s | wall ratio | hoist CPU s/GiB | skopeo CPU s/GiB | hoist registry CPU s | skopeo registry CPU s | hoist peak RSS MiB | skopeo peak RSS MiB |")
out.append("|---|---|---|---|---|---|---|---|---|---|")
for case, label in [("archive-gzip", "docker-archive -> gzip"),
                    ("archive-zstd", "docker-archive -> zstd"),
                    ("oci-gzip", "OCI layout, gzip layers as is")]:
    hw, sw = med(case, "hoist", 0), med(case, "skopeo", 0)
    hc, sc = med(case, "hoist", 1), med(case, "skopeo", 1)
    hr, sr = med(case, "hoist", 2), med(case, "skopeo", 2)
    ratio = (hw / sw) if hw and sw else None
    out.append(
        f"| {label} | {fmt(hw)} | {fmt(sw)} | {fmt(ratio)}x | "
        f"{fmt(hc / gib if hc is not None else None)} | {fmt(sc / gib if sc is not None else None)} | "
        f"{fmt(med(case, 'hoist', 3))} | {fmt(med(case, 'skopeo', 3))} | "
        f"{fmt(hr / 1024 if hr else None, 0)} | {fmt(sr / 1024 if sr else None, 0)} |"
    )
out.append("")
out.append("What bounds the wall time on this machine: a push needs the client's and the registry's CPU "
           f"seconds, and both run on the same {os.cpu_count()} cores, so (client CPU + registry CPU) / cores "
           "is a floor for the wall time, however well the work overlaps (other builds on the machine "
           "raise it further).\n")
out.append("| case | hoist CPU floor s | hoist wall s | 0.5x skopeo wall s | 0.9x skopeo wall s | registry CPU s per GB received (hoist) |")
out.append("|---|---|---|---|---|---|")
for case, label in [("archive-gzip", "docker-archive -> gzip"),
                    ("archive-zstd", "docker-archive -> zstd"),
                    ("oci-gzip", "OCI layout, gzip layers as is")]:
    hc, hreg, hw, sw = med(case, "hoist", 1), med(case, "hoist", 3), med(case, "hoist", 0), med(case, "skopeo", 0)
    if hc is None:
        continue
    floor = (hc + hreg) / os.cpu_count()
    out.append(f"| {label} | {fmt(floor)} | {fmt(hw)} | {fmt(sw * 0.5 if sw else None)} | "
               f"{fmt(sw * 0.9 if sw else None)} | {fmt(hreg / oci_gb if case == 'oci-gzip' and oci_gb else None)} |")
repush = med("repush", "hoist", 0)
resume = med("resume", "hoist", 0)
base = med("archive-gzip", "hoist", 0)
out.append("")
out.append(f"- re-push of the same image to a new tag: {fmt(repush)} s")
if resume is not None and base:
    out.append(f"- kill -9 at 50 % and restart, total: {fmt(resume)} s ({resume / base:.2f}x the uninterrupted gzip push; Debian's registry cancels the uploads whose PATCH was cut, so those blobs start again)")
ecr_base = med("ecr-archive-gzip", "hoist", 0)
ecr_resume = med("ecr-resume", "hoist", 0)
if ecr_base and ecr_resume is not None:
    out.append(f"- through the ECR emulation (atomic parts, `examples/ecr_emulator`): uninterrupted gzip push {fmt(ecr_base)} s; kill -9 at 50 % and restart, total {fmt(ecr_resume)} s ({ecr_resume / ecr_base:.2f}x)")
for case, label in [("archive-gzip", "docker-archive -> gzip"), ("oci-gzip", "OCI layout, gzip as is")]:
    with_c, without = med(case, "hoist", 0), med(case + "-nocensus", "hoist", 0)
    cpu_with, cpu_without = med(case, "hoist", 1), med(case + "-nocensus", "hoist", 1)
    if with_c and without:
        out.append(f"- ELF census cost, {label}: {fmt(with_c)} s with it, {fmt(without)} s without "
                   f"(--allow-arch-mismatch): {100 * (with_c - without) / without:+.0f} % wall, "
                   f"client CPU {fmt(cpu_with)} s vs {fmt(cpu_without)} s")
for (case, tool), v in sorted(rows.items()):
    if case.startswith("big-"):
        out.append(f"- hoistd peak RSS (VmHWM) pushing a {int(case[4:]) / 1024:.1f} GiB image "
                   f"(uncompressed OCI layers, compressed to gzip; scripts/push-rss.sh): "
                   f"{v[0][2] / 1024:.1f} MiB, {v[0][0]:.1f} s")
out.append("\n## Every run\n")
out.append("| case | tool | wall s | client CPU s | peak RSS MiB | registry CPU s | 1-min load |")
out.append("|---|---|---|---|---|---|---|")
for case, tool, wall, cpu, rss, reg, load in raw:
    out.append(f"| {case} | {tool} | {wall} | {cpu} | {int(rss) / 1024:.0f} | {reg} | {load} |")
print("\n".join(out))
