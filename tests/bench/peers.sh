#!/usr/bin/env bash
# What users would run instead, side by side with `tblob`, in one run on
# this machine (bench only, never CI): speed on one random file and stored
# bytes on real, compressible data with history.
#
#   tests/bench/peers.sh            # 256 MiB random file
#   TBLOB_PEERS_MIB=64 tests/bench/peers.sh
#
# - Speed: store (put / backup / make) and restore (get / restore /
#   extract) of a random file, MB/s of wall time, next to `cp` + fsync (the
#   disk) and `b3sum` on one thread (the hash).
# - Disk: three successive versions of one crate's source as uncompressed
#   tar (cranelift-codegen 0.133.0, 0.134.0, 0.135.8, fetched with cargo
#   from the registry), stored one after the other into one repository per
#   tool: the bytes the repository holds at the end. `tblob` at its default
#   CDC, then at 16 KiB and 4 KiB averages.
#
# Installs restic, borgbackup, casync and b3sum from Debian's packages if
# missing. Builds `tblob` in release. Caches are warm for every tool alike
# (no tool's timing includes reading its input from a cold disk).
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
work="${TBLOB_PEERS_DIR:-$root/target/peers}"
mib="${TBLOB_PEERS_MIB:-256}"
versions=(0.133.0 0.134.0 0.135.8)

missing=()
for tool in restic:restic borg:borgbackup casync:casync b3sum:b3sum; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
if ((${#missing[@]})); then
    echo "installing ${missing[*]} from Debian's packages" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

(cd "$root" && cargo build --release -q -p tensor-blob-host --bin tblob)
tblob="${CARGO_TARGET_DIR:-$root/target}/release/tblob"

rm -rf "$work"
mkdir -p "$work/in" "$work/out"
export RESTIC_PASSWORD=peers BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
export TBLOB_CACHE_DIR="$work/cache"

now() { date +%s.%N; }
# MB/s of $2 bytes in the seconds since $1.
rate() { awk -v t0="$1" -v t1="$(now)" -v b="$2" 'BEGIN { printf "%.0f", b / 1e6 / (t1 - t0) }'; }
bytes_of() { du -sb "$1" | cut -f1; }

# --- the inputs ------------------------------------------------------------
random="$work/in/random.bin"
head -c "$((mib << 20))" /dev/urandom >"$random"
size=$(stat -c %s "$random")
cat "$random" >/dev/null

crates="$work/crates"
mkdir -p "$crates/src"
{
    echo '[package]'
    echo 'name = "peers-data"'
    echo 'version = "0.0.0"'
    echo 'edition = "2021"'
    # Its own workspace: target/ is inside this repository's.
    echo '[workspace]'
    echo '[dependencies]'
} >"$crates/Cargo.toml"
touch "$crates/src/lib.rs"
tars=()
for v in "${versions[@]}"; do
    # One version at a time: cargo resolves one cranelift-codegen per
    # major (0.x) line, and each of these is its own.
    sed -i '/^cranelift-codegen/d' "$crates/Cargo.toml"
    echo "cranelift-codegen = \"=$v\"" >>"$crates/Cargo.toml"
    (cd "$crates" && cargo fetch -q)
    crate=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/cranelift-codegen-"$v".crate | head -1)
    mkdir -p "$work/src-$v"
    tar -xzf "$crate" -C "$work/src-$v"
    tar -cf "$work/in/cranelift-codegen-$v.tar" -C "$work/src-$v" .
    tars+=("$work/in/cranelift-codegen-$v.tar")
done
tar_bytes=0
for t in "${tars[@]}"; do tar_bytes=$((tar_bytes + $(stat -c %s "$t"))); done

printf '\n%s MiB random file; tar set %s bytes (%s versions); %s\n\n' \
    "$mib" "$tar_bytes" "${#versions[@]}" "$(nproc) cores"
printf '%-34s %12s %12s %16s\n' "tool" "store MB/s" "restore MB/s" "tar set stored"

row() { printf '%-34s %12s %12s %16s\n' "$@"; }

# --- baselines -------------------------------------------------------------
t0=$(now)
dd if="$random" of="$work/out/cp.bin" bs=4M conv=fsync status=none
row "cp + fsync (the disk)" "$(rate "$t0" "$size")" "" ""
rm -f "$work/out/cp.bin"
t0=$(now)
b3sum --num-threads 1 "$random" >/dev/null
row "b3sum, one thread (the hash)" "$(rate "$t0" "$size")" "" ""

# --- tblob -----------------------------------------------------------------
tblob_run() { # label, extra put options...
    local label="$1"
    shift
    local store="$work/tblob-$label"
    "$tblob" --store "$store" demo >/dev/null 2>&1 || true # compile cache warm
    rm -rf "$store"
    local t0 id put get stored
    t0=$(now)
    id=$("$tblob" --store "$store" put "$random" "$@")
    put=$(rate "$t0" "$size")
    t0=$(now)
    "$tblob" --store "$store" get "$id" -o "$work/out/tblob.bin"
    get=$(rate "$t0" "$size")
    cmp -s "$random" "$work/out/tblob.bin" || { echo "tblob get: bytes differ" >&2; exit 1; }
    rm -rf "$store" "$work/out/tblob.bin"
    for t in "${tars[@]}"; do "$tblob" --store "$store" put "$t" "$@" >/dev/null; done
    stored=$(($(bytes_of "$store") - $(stat -c %s "$store/tenants/default/reserve")))
    row "tblob put/get ($label)" "$put" "$get" "$stored"
    rm -rf "$store"
}
tblob_run "CDC default"
tblob_run "CDC 16 KiB" --chunk-size 16384
tblob_run "CDC 4 KiB" --chunk-size 4096

# --- restic ----------------------------------------------------------------
repo="$work/restic"
restic -q -r "$repo" init --repository-version 2 >/dev/null
t0=$(now)
restic -q -r "$repo" backup "$random" >/dev/null
put=$(rate "$t0" "$size")
t0=$(now)
restic -q -r "$repo" restore latest --target "$work/out/restic" >/dev/null
get=$(rate "$t0" "$size")
cmp -s "$random" "$work/out/restic$random"
rm -rf "$repo" "$work/out/restic"
restic -q -r "$repo" init --repository-version 2 >/dev/null
for t in "${tars[@]}"; do restic -q -r "$repo" backup "$t" >/dev/null; done
row "restic $(restic version | cut -d' ' -f2) (zstd auto)" "$put" "$get" "$(bytes_of "$repo")"
rm -rf "$repo"

# --- borg ------------------------------------------------------------------
repo="$work/borg"
borg init --encryption=none "$repo"
t0=$(now)
borg create --compression none "$repo::a" "$random"
put=$(rate "$t0" "$size")
t0=$(now)
(mkdir -p "$work/out/borg" && cd "$work/out/borg" && borg extract "$repo::a")
get=$(rate "$t0" "$size")
cmp -s "$random" "$work/out/borg$random"
rm -rf "$repo" "$work/out/borg"
borg init --encryption=none "$repo"
i=0
for t in "${tars[@]}"; do borg create "$repo::v$i" "$t"; i=$((i + 1)); done
row "borg $(borg --version | cut -d' ' -f2) (store: none; tar: lz4)" "$put" "$get" "$(bytes_of "$repo")"
rm -rf "$repo"

# --- casync ----------------------------------------------------------------
cstore="$work/casync.castr"
t0=$(now)
casync make --store="$cstore" "$work/out/random.caibx" "$random" >/dev/null
put=$(rate "$t0" "$size")
t0=$(now)
casync extract --store="$cstore" "$work/out/random.caibx" "$work/out/casync.bin"
get=$(rate "$t0" "$size")
cmp -s "$random" "$work/out/casync.bin"
rm -rf "$cstore" "$work/out/random.caibx" "$work/out/casync.bin"
i=0
for t in "${tars[@]}"; do
    casync make --store="$cstore" "$work/out/v$i.caibx" "$t" >/dev/null
    i=$((i + 1))
done
row "casync (xz chunks)" "$put" "$get" "$(bytes_of "$cstore")"
rm -rf "$cstore" "$work/out"/*.caibx

echo
echo "tar set stored: the repository's bytes after all ${#versions[@]} versions (tblob: the store directory less its fixed 512 KiB space reserve)"
