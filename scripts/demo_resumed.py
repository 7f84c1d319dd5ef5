#!/usr/bin/env python3
"""demo_resumed.py < EVENTS: reads a job's events (`hoist watch --json JOB`, NDJSON) and says
where each interrupted blob went on: `resumed` (at the offset the registry had acknowledged) or
`restarted` (from 0). Exits 1 unless the biggest blob resumed and never restarted: the demo's
promise is a resume, and it must not show a restart under that name."""
import json
import sys

MIB = 1 << 20


def size_text(n):
    return f"{n} bytes" if n < MIB else f"{n // MIB} MiB"


def short(digest):
    algorithm, hex_ = digest.split(":", 1)
    return f"{algorithm}:{hex_[:12]}"


planned = {}
resumed = {}
restarted = {}
for line in sys.stdin:
    if not line.strip():
        continue
    ev = json.loads(line)
    kind = ev.get("type")
    if kind == "blob":
        planned[ev["digest"]] = ev["size_bytes"]
    elif kind == "resumed":
        resumed.setdefault(ev["digest"], []).append(ev)
        print(f"resumed {short(ev['digest'])} at {size_text(ev['offset_bytes'])} of {size_text(ev['size_bytes'])}")
    elif kind == "restarted":
        restarted.setdefault(ev["digest"], []).append(ev)
        print(f"restarted {short(ev['digest'])} from 0 (had {size_text(ev['offset_bytes'])} of {size_text(ev['size_bytes'])}): {ev['reason']}")

if not planned:
    print("demo: the job's events name no blob", file=sys.stderr)
    sys.exit(1)
big = max(planned, key=planned.get)
if big in restarted:
    print(f"demo: the big blob {short(big)} started again from 0 instead of resuming", file=sys.stderr)
    sys.exit(1)
if big not in resumed:
    print(f"demo: the big blob {short(big)} was not resumed after the restart", file=sys.stderr)
    sys.exit(1)
ev = resumed[big][-1]
print(f"the big blob {short(big)} resumed at {size_text(ev['offset_bytes'])} of {size_text(ev['size_bytes'])}: "
      "the parts the registry acknowledged before the kill were not sent again")
