# Shell helpers shared by scripts/demo.sh and scripts/bench.sh (sourced, not run).

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
