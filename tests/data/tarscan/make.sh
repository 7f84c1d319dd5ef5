#!/bin/sh
# Makes the GNU tar PAX sparse fixtures the tarscan unit tests read (run once, from this
# directory, with GNU tar 1.34): a 3 MiB file of two short data runs between holes, and a
# hard link to it, in each of GNU tar's PAX sparse formats. The archives name the file
# `GNUSparseFile.N/sparse` in its header and `real/sparse` in `GNU.sparse.name`.
set -eu
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/real"
truncate -s 3M "$work/real/sparse"
printf 'hello' | dd of="$work/real/sparse" bs=1 seek=1048576 conv=notrunc 2>/dev/null
printf 'end' | dd of="$work/real/sparse" bs=1 seek=3145000 conv=notrunc 2>/dev/null
ln "$work/real/sparse" "$work/real/link"
for v in 0.0 0.1 1.0; do
  tar -C "$work" --format=posix --sparse --sparse-version=$v --mtime=@0 --owner=0 --group=0 \
    --numeric-owner --pax-option=delete=atime,delete=ctime -cf "sparse-$v.tar" real
done
