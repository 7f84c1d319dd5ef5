# Shell helpers shared by the scripts that run a registry, hoistd or an engine (sourced, not run).

# A TCP port that was free a moment ago on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_registry DIR: Debian's docker-registry with fresh filesystem storage in DIR, on a free
# loopback port, plain HTTP. Sets REG (host:port) and REG_PID; returns once /v2/ answers.
start_registry() {
  local dir=$1
  mkdir -p "$dir/storage"
  local port
  port=$(free_port)
  REG=127.0.0.1:$port
  cat > "$dir/config.yml" <<YAML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
  redirect:
    disable: true
http:
  addr: $REG
  secret: hoist-local
YAML
  docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
  REG_PID=$!
  for _ in $(seq 1 100); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://$REG/v2/', timeout=1)" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "the registry did not start; its log:" >&2
  cat "$dir/log" >&2
  return 1
}

# hoistd_start BIN STATE_DIR: BIN/hoistd with fresh state in STATE_DIR (its log beside it, in
# STATE_DIR.log). Sets SOCK and HOISTD_PID; returns once the socket exists.
hoistd_start() {
  local bin=$1 state=$2 root=()
  [ "$(id -u)" -ne 0 ] || root=(--allow-root)
  rm -rf "$state"
  mkdir -p "$state"
  SOCK=$state/hoist.sock
  "$bin/hoistd" --socket "$SOCK" --state-dir "$state" "${root[@]}" >"$state.log" 2>&1 &
  HOISTD_PID=$!
  for _ in $(seq 1 100); do [ -S "$SOCK" ] && return 0; sleep 0.05; done
  echo "hoistd did not start; its log:" >&2
  cat "$state.log" >&2
  return 1
}

hoistd_stop() {
  [ -n "${HOISTD_PID:-}" ] || return 0
  kill -TERM "$HOISTD_PID" 2>/dev/null || true
  wait "$HOISTD_PID" 2>/dev/null || true
  HOISTD_PID=""
}

# cpu_seconds GROUP...: for each GROUP (a space-separated list of PIDs, possibly empty), the
# user+system CPU seconds of those processes and all their descendants, children they have
# reaped included (a difference of two readings then counts short-lived helpers too).
cpu_seconds() {
  python3 - "$@" <<'PY'
import os, sys
tick = os.sysconf("SC_CLK_TCK")
procs = {}
for name in os.listdir("/proc"):
    if not name.isdigit():
        continue
    try:
        fields = open(f"/proc/{name}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    # After the command: state, ppid, ...; utime, stime, cutime, cstime are 11 to 14.
    procs[int(name)] = (int(fields[1]), sum(int(x) for x in fields[11:15]))
out = []
for group in sys.argv[1:]:
    tree = {int(p) for p in group.split()}
    while True:
        more = {p for p, (ppid, _) in procs.items() if ppid in tree} - tree
        if not more:
            break
        tree |= more
    out.append(f"{sum(procs[p][1] for p in tree if p in procs) / tick:.2f}")
print(" ".join(out))
PY
}

# cpu_run FILE CMD...: runs CMD (with this stdin) and appends the CPU seconds it and its
# children used to FILE (one number a line); fails as CMD fails.
cpu_run() {
  python3 -c '
import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
use = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "a") as out:
    out.write(f"{use.ru_utime + use.ru_stime:.3f}\n")
sys.exit(code)
' "$@"
}

# hoist_bins ROOT EXAMPLE...: sets BIN (the directory of hoist, hoistd and examples/EXAMPLE)
# and BUILD (how they were made): HOIST_BIN_DIR when set, else a release build of ROOT with
# the dependencies installed first.
hoist_bins() {
  local root=$1 examples=() example
  shift
  if [ -n "${HOIST_BIN_DIR:-}" ]; then
    BIN=$HOIST_BIN_DIR
    BUILD="prebuilt (HOIST_BIN_DIR)"
    return 0
  fi
  for example in "$@"; do examples+=(--example "$example"); done
  "$root/scripts/install-deps.sh"
  (cd "$root" && cargo build --release --locked --bins "${examples[@]}" >&2)
  BIN=${CARGO_TARGET_DIR:-$root/target}/release
  BUILD=release
}

# splice_section FILE NAME SECTION: SECTION (its first line `<!-- NAME: ...`, its last
# `<!-- /NAME -->`) replaces the one between those markers in FILE, or is appended.
splice_section() {
  python3 - "$@" <<'PY'
import re, sys
path, name, section = sys.argv[1:]
text = open(path).read()
pattern = re.compile(rf"<!-- {re.escape(name)}:.*?<!-- /{re.escape(name)} -->", re.S)
if pattern.search(text):
    text = pattern.sub(lambda _: section, text)
else:
    text = text.rstrip("\n") + "\n\n" + section + "\n"
open(path, "w").write(text)
PY
}
