#!/usr/bin/env bash
# Writes the fixed split cases of this directory: layer tars (gzip-compressed, NAME.tar.gz) that
# real tools write and that a split must apply exactly as the whole layer does. Each has zero
# fillers of over 1 MiB between its entries, so a split at 1 MiB puts them in different parts.
# GNU tar writes the cases it can (sparse files, append with -r, names that are not UTF-8);
# Python's tarfile the ones it cannot (a size on a header-only entry, a path reused by a link).
# Deterministic: fixed mtimes, owners and fillers; GNU tar names a sparse file's placeholder
# after its process ID (GNUSparseFile.PID), so it runs as PID 1 of a new PID namespace (as root;
# otherwise that name changes). Run it from anywhere to regenerate.
set -euo pipefail
out="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export TZ=UTC LC_ALL=C
gnutar() {
  local run=()
  if [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null; then run=(unshare --pid --fork); fi
  "${run[@]}" tar --numeric-owner --owner=0 --group=0 --mtime=@1600000000 "$@"
}
filler() { head -c $((1100 * 1024)) /dev/zero >"$1"; }
finish() { gzip -9n <"$work/$1.tar" >"$out/$1.tar.gz"; }

# A directory with content, later a file of that name, later an empty 0700 directory of that
# name (tar -c, then tar -r twice): the last entry wins, a 0700 directory.
d="$work/dir-file-dir" && mkdir -p "$d/x" && cd "$d"
echo inside >x/a && filler fill0
gnutar -cf ../dir-file-dir.tar x fill0
rm -r x && echo now-a-file >x && filler fill1
gnutar -rf ../dir-file-dir.tar x fill1
rm x && mkdir -m 0700 x
gnutar -rf ../dir-file-dir.tar --no-recursion x
finish dir-file-dir

# GNU tar's PAX sparse formats 0.1 and 1.0 (the real name in GNU.sparse.name), with a hard
# link to the sparse file after a filler.
for v in 0.1 1.0; do
  d="$work/sparse-$v" && mkdir -p "$d" && cd "$d"
  truncate -s 3M s && printf 'data at 1 MiB' | dd of=s bs=1 seek=$((1 << 20)) conv=notrunc status=none
  printf 'tail' | dd of=s bs=1 seek=$((3 * 1024 * 1024 - 4)) conv=notrunc status=none
  filler fill0 && ln s s-link
  gnutar --format=posix --sparse --sparse-version="$v" --pax-option=delete=atime,delete=ctime \
    -cf "../sparse-$v.tar" s fill0 s-link
  finish "sparse-$v"
done

# Two directories whose names differ only in a byte that is not UTF-8, a file in each, and a
# hard link to the first directory's file after the second's.
d="$work/non-utf8" && mkdir -p "$d" && cd "$d"
mkdir $'d\xfe' $'d\xff'
echo first >$'d\xfe/f' && echo second >$'d\xff/f'
filler fill0 && filler fill1 && ln $'d\xfe/f' $'d\xfe/g'
gnutar --no-recursion -cf ../non-utf8.tar $'d\xfe' $'d\xfe/f' fill0 $'d\xff' $'d\xff/f' fill1 $'d\xfe/g'
finish non-utf8

# Python's tarfile for the entries GNU tar never writes.
python3 - "$work" <<'PY'
import io, sys, tarfile
work = sys.argv[1]
FILL = bytes(1100 * 1024)

def info(name, kind=tarfile.REGTYPE, size=0, link="", mode=0o644):
    t = tarfile.TarInfo(name)
    t.type, t.size, t.linkname, t.mode, t.mtime = kind, size, link, mode, 1600000000
    return t

def write(name, entries):
    with tarfile.open(f"{work}/{name}.tar", "w", format=tarfile.GNU_FORMAT) as tar:
        for t, data in entries:
            # A header-only entry with a size writes no data: addfile copies none without a file.
            tar.addfile(t, io.BytesIO(data) if data is not None else None)

def file(name, data, mode=0o644):
    return info(name, size=len(data), mode=mode), data

# A path written as a file, then, after a filler, as a hard link to an earlier file: the
# link (last) wins.
write("reused-path", [
    file("t", b"the file t\n"), file("fill0", FILL), file("l", b"the old l\n"),
    file("fill1", FILL), (info("l", tarfile.LNKTYPE, link="t"), None),
])

# A directory and a hard link whose headers carry a size (no data follows), each followed by
# a tar stored as a file: a reader that skips the size reads the inner tar's headers.
inner = io.BytesIO()
with tarfile.open(fileobj=inner, mode="w", format=tarfile.GNU_FORMAT) as t:
    for n in ("inner/a", "inner/b"):
        ti, data = file(n, b"inner " + n.encode() + b"\n")
        t.addfile(ti, io.BytesIO(data))
inner = inner.getvalue()
write("header-only-size", [
    file("t", b"the file t\n"), file("fill0", FILL),
    (info("d", tarfile.DIRTYPE, size=1536, mode=0o755), None), file("d/inner.tar", inner),
    file("fill1", FILL),
    (info("t-link", tarfile.LNKTYPE, size=700, link="t"), None), file("after.tar", inner),
])
PY
finish reused-path
finish header-only-size
ls -l "$out"
