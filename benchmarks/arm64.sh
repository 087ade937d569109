#!/usr/bin/env bash
# The arm64 stage of CI: the edge runtime installed and run on Debian bookworm arm64 (the base of
# 64-bit Raspberry Pi OS) under qemu-user emulation, compared with x86 on the same commit.
#
#   bash benchmarks/arm64.sh              (as root; .ci/run calls it after the x86 runtime environments)
#   bash benchmarks/arm64.sh --rootfs-only  (step 1 alone; .ci/run starts it in the background first, so
#                                            debootstrap overlaps the x86 stages; the lock orders the two)
#
# 1. builds the root file system once with debootstrap (cached in $CXR_ARM64_CACHE, default
#    /var/cache/cxr-edge-arm64; rebuilt when missing or when ROOTFS_KEY changes) and keeps the two
#    Python 3.11 virtual environments inside it between runs: ai-edge-litert (numpy 2) and
#    tflite-runtime 2.14 (numpy < 2);
# 2. installs this checkout into both with pip and runs there the TensorFlow-free tests (all of them with
#    ai-edge-litert; with tflite-runtime the files that exercise the interpreter and the numerics,
#    CXR_ARM64_TFLITE_TESTS, since x86 runs all of them on tflite-runtime already), and follows
#    the README's Raspberry Pi OS install (venv with --system-site-packages over Debian's numpy 1.24
#    and Pillow, pip, install-service, a safe model update) in a third venv made anew each run;
# 3. runs benchmarks/platform_probe.py (cxr-edge classify --json on the 24 full-resolution samples,
#    every heatmap model through the Python API, the real web server on 127.0.0.1) on x86 and on
#    arm64 as a Raspberry Pi 4 (Cortex-A72) and a Pi 5 (Cortex-A76);
# 4. python -m benchmarks.arm64 compares them, writes benchmarks/results/arm64.json and fails
#    beyond the measured tolerances.
# Emulated wall times are recorded only as CI times, never as a device's speed.
set -euo pipefail
# All in one function: bash reads it whole before running it, so editing this file mid-run is safe.
main() {
rootfs_only=0
[ "${1:-}" != --rootfs-only ] || rootfs_only=1
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${CXR_ARM64_CACHE:-/var/cache/cxr-edge-arm64}
ROOTFS=$CACHE/rootfs-bookworm-arm64
DATA=$(cd "${CXR_SHARED_DATA:-$ROOT/../shared/data}" && pwd)
MIRROR=${CXR_DEBIAN_MIRROR:-http://deb.debian.org/debian}
X86_LITERT=${CXR_X86_LITERT:-$ROOT/.venv-litert}
X86_TFLITE=${CXR_X86_TFLITE:-$ROOT/.venv-tflite}
OUT=${CXR_ARM64_OUT:-$ROOT/benchmarks/results/arm64.json}
# Change the key to force a rebuild of every cached rootfs (e.g. new packages).
# python3-numpy and python3-pil are what python3-picamera2 brings on Raspberry Pi OS (the README's venv
# sees them through --system-site-packages).
ROOTFS_PACKAGES=python3,python3-venv,python3-numpy,python3-pil,ca-certificates
ROOTFS_KEY="bookworm arm64 minbase $ROOTFS_PACKAGES; v1"
TEST_EXTRAS=(pytest scikit-image jsonschema openapi-spec-validator)
# "all" runs every TensorFlow-free test there too (about 4 more minutes under qemu).
TFLITE_TESTS=${CXR_ARM64_TFLITE_TESTS:-test_classifier.py test_cam.py test_imaging.py test_bad_inputs.py test_population.py test_dicom.py}
[ "$TFLITE_TESTS" != all ] || TFLITE_TESTS=.
start=$(date +%s)
now() { echo $(( $(date +%s) - start )); }
say() { printf '  arm64 (%ss): %s\n' "$(now)" "$*"; }
[ "$(id -u)" -eq 0 ] || { echo "error: the arm64 stage needs root (debootstrap, chroot, mount)" >&2; exit 2; }
[ "$rootfs_only" = 1 ] || [ -x "$X86_LITERT/bin/python" ] || { echo "error: no x86 reference environment at $X86_LITERT (run .ci/run)" >&2; exit 2; }
[ -d "$DATA/fullres_sample" ] || { echo "error: no samples at $DATA/fullres_sample" >&2; exit 2; }

# -- host tools and the aarch64 binfmt handler -------------------------------------------------
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
[ -x /usr/bin/qemu-aarch64-static ] || need+=(qemu-user-static)
command -v update-binfmts >/dev/null || need+=(binfmt-support)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
[ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
if ! grep -qs '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64; then
  update-binfmts --enable qemu-aarch64 || update-binfmts --import qemu-aarch64
fi
grep -qs '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 \
  || { echo "error: binfmt_misc has no enabled qemu-aarch64 handler" >&2; exit 1; }

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9   # one run at a time per cache

mounts_under() { findmnt -rn -o TARGET | grep -E "^$1(/|$)" || true; }
safe_remove() {  # never delete through a mount (the data folder is bind-mounted into the rootfs)
  if [ -n "$(mounts_under "$1")" ]; then echo "error: mounts under $1; not removing it" >&2; exit 1; fi
  rm -rf --one-file-system "$1"
}
cleanup() {  # the rootfs and a half-built one (debootstrap mounts /proc in it)
  local target
  for target in $( (mounts_under "$ROOTFS"; mounts_under "$ROOTFS.new") | sort -r); do
    umount "$target" 2>/dev/null || umount -l "$target"
  done
}
trap cleanup EXIT
cleanup  # mounts left by a run that was killed

# -- 1. the root file system (cached) -----------------------------------------------------------
rootfs_state=reused
rootfs_s=0
if [ "$(cat "$ROOTFS/.cxr-edge-rootfs" 2>/dev/null)" != "$ROOTFS_KEY" ]; then
  rootfs_state=built
  say "debootstrap bookworm arm64 into $ROOTFS (a few minutes; cached for the next run)"
  mark=$(date +%s)
  safe_remove "$ROOTFS.new"
  nice -n 19 debootstrap --arch=arm64 --variant=minbase --include="$ROOTFS_PACKAGES" \
    bookworm "$ROOTFS.new" "$MIRROR" > "$CACHE/debootstrap.log" 2>&1 \
    || { tail -20 "$CACHE/debootstrap.log" >&2; cleanup; exit 1; }
  cleanup
  echo "$ROOTFS_KEY" > "$ROOTFS.new/.cxr-edge-rootfs"
  safe_remove "$ROOTFS"
  mv "$ROOTFS.new" "$ROOTFS"
  rootfs_s=$(( $(date +%s) - mark ))
fi
# --rootfs-only leaves what it did in $CXR_ARM64_PREP_STATE for the full run to report (.ci/run sets it).
PREP_STATE=${CXR_ARM64_PREP_STATE:-}
if [ "$rootfs_only" = 1 ]; then
  say "rootfs $rootfs_state"
  [ -z "$PREP_STATE" ] || echo "$rootfs_state $rootfs_s" > "$PREP_STATE"
  return 0
fi
if [ "$rootfs_state" = reused ] && [ -n "$PREP_STATE" ] && [ -s "$PREP_STATE" ]; then
  read -r prep_state prep_s < "$PREP_STATE"
  if [ "$prep_state" = built ]; then rootfs_state="built in the background"; rootfs_s=$prep_s; fi
fi

# The host's resolver and CA bundle, for pip inside.
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
cp /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/cxr-host-ca.crt"
mount -t proc proc "$ROOTFS/proc"
mount -t tmpfs -o size=256m tmpfs "$ROOTFS/dev/shm"
mkdir -p "$ROOTFS/srv/cxr/shared/data"
mount --bind "$DATA" "$ROOTFS/srv/cxr/shared/data"
mount -o remount,bind,ro "$ROOTFS/srv/cxr/shared/data"
# XNNPACK's cpuinfo needs the processor lists of /sys. The host's /sys describes an x86 CPU, on
# which ai-edge-litert 2.3 crashes under qemu; without any /sys cpuinfo fails and XNNPACK is
# silently not used (TFLite's built-in kernels run instead, one int8 step apart from XNNPACK: the
# 0.9102 vs 0.9141 of issue 13). So the rootfs gets the two files a 4-core Pi has, and no host /sys.
mkdir -p "$ROOTFS/sys/devices/system/cpu"
printf '0-3\n' > "$ROOTFS/sys/devices/system/cpu/possible"
printf '0-3\n' > "$ROOTFS/sys/devices/system/cpu/present"
# /proc/cpuinfo as a Raspberry Pi 4 (Cortex-A72) and a Pi 5 (Cortex-A76) print it; qemu 7.2 shows
# the host's x86 one otherwise. qemu's -cpu model (QEMU_CPU) sets the features the code really sees.
profiles_dir=$CACHE/cpuinfo
mkdir -p "$profiles_dir"
for i in 0 1 2 3; do
  printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n' "$i"
done > "$profiles_dir/pi4"
for i in 0 1 2 3; do
  printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: 0xd0b\nCPU revision\t: 1\n\n' "$i"
done > "$profiles_dir/pi5"
declare -A QEMU_CPU_OF=([pi4]=cortex-a72 [pi5]=cortex-a76)
profile=pi4
set_profile() {
  profile=$1
  if findmnt -rn "$ROOTFS/proc/cpuinfo" >/dev/null; then umount "$ROOTFS/proc/cpuinfo"; fi
  mount --bind "$profiles_dir/$profile" "$ROOTFS/proc/cpuinfo"
}
in_arm64() {  # run a command inside, with a clean environment, at the lowest priority
  nice -n 19 chroot "$ROOTFS" /usr/bin/env -i QEMU_CPU="${QEMU_CPU_OF[$profile]}" PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    LANG=C.UTF-8 PIP_CERT=/etc/ssl/certs/cxr-host-ca.crt PIP_DEFAULT_TIMEOUT=120 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CXR_SHARED_DATA=/srv/cxr/shared/data CXR_TEST_TIME_SCALE=30 TF_CPP_MIN_LOG_LEVEL=2 "$@"
}
set_profile pi4
in_arm64 /usr/bin/python3 -c "import platform, sys; assert platform.machine() == 'aarch64', platform.machine(); print('  arm64: Python', sys.version.split()[0], 'on', platform.machine())"

# -- 2. install this checkout with pip, run the TensorFlow-free tests ---------------------------
# Inside, the checkout and the data keep their layout (cxr-edge/ beside shared/data), as the tests expect.
say "copying the checkout into the rootfs"
safe_remove "$ROOTFS/srv/cxr/cxr-edge"
mkdir -p "$ROOTFS/srv/cxr/cxr-edge"
tar -C "$ROOT" --exclude='./.venv*' --exclude=./.git --exclude='*/__pycache__' --exclude=./build -cf - . \
  | tar -C "$ROOTFS/srv/cxr/cxr-edge" -xf -
mark=$(date +%s)
for venv in litert tflite; do
  say "pip install '.[$venv,dicom,web]' in /opt/venv-$venv (Python 3.11)"
  in_arm64 /bin/bash -ec "set -o pipefail
    [ -x /opt/venv-$venv/bin/python ] || python3 -m venv /opt/venv-$venv
    cd /srv/cxr/cxr-edge
    /opt/venv-$venv/bin/pip uninstall -q -y cxr-edge >/dev/null 2>&1 || true
    /opt/venv-$venv/bin/pip install -q --no-compile '.[$venv,dicom,web]' ${TEST_EXTRAS[*]} 2>&1 | { grep -v -e DEPRECATION -e '^ *$' || true; }
    /opt/venv-$venv/bin/python -c \"import importlib.util, sys; sys.exit(importlib.util.find_spec('tensorflow') is not None)\" \
      || { echo 'error: TensorFlow is installed in /opt/venv-$venv; the runtime must not need it' >&2; exit 1; }
    cd /tmp && /opt/venv-$venv/bin/python -c \"import numpy, edge_runtime.interpreter as i; print('  arm64: numpy', numpy.__version__, 'runtime', i.find_interpreter_class()[1])\""
done
# The README's Raspberry Pi OS commands, as written there (python3-picamera2 itself comes from the
# Raspberry Pi archive, which is not reachable here; its numpy and Pillow are Debian's).
say "the README's Raspberry Pi OS install: venv --system-site-packages, pip, install-service"
cat > "$ROOTFS/tmp/pios-install.sh" <<'EOF'
set -eo pipefail
for path in /opt/cxr-edge /etc/cxr-edge /etc/systemd/system/cxr-edge-serve.service; do
  [ ! -e "$path" ] || rm -rf --one-file-system "$path"
done
# README, "Raspberry Pi OS": the venv, the pip command, the service.
python3 -m venv --system-site-packages /opt/cxr-edge/venv
/opt/cxr-edge/venv/bin/pip install -q --no-compile '/srv/cxr/cxr-edge[litert,dicom,web]' 'numpy<2' 2>&1 | { grep -v -e DEPRECATION -e '^ *$' || true; }
cd /tmp
/opt/cxr-edge/venv/bin/python -c "import numpy; assert numpy.__file__.startswith('/usr/lib/python3/'), numpy.__file__; print('  arm64: the Pi OS venv keeps Debian numpy', numpy.__version__, 'at', numpy.__file__)"
/opt/cxr-edge/venv/bin/cxr-edge classify --no-log --json /srv/cxr/shared/data/fullres_sample/NORMAL/IM-0230-0001.jpeg
/opt/cxr-edge/venv/bin/cxr-edge install-service serve
test "$(stat -c '%a %U' /etc/cxr-edge/token)" = "600 cxr-edge"
test "$(stat -c '%U' /opt/cxr-edge/models/cxr_binary_160.spec.json)" = root
# README, "updating a model safely": a new folder, checked, then switched atomically.
new=/opt/cxr-edge/models-test
mv /opt/cxr-edge/models /opt/cxr-edge/models-shipped && ln -s models-shipped /opt/cxr-edge/models
mkdir "$new" && cp /opt/cxr-edge/models-shipped/* "$new/"
CXR_MODELS="$new" /opt/cxr-edge/venv/bin/cxr-edge classify --no-log /srv/cxr/shared/data/fullres_sample/NORMAL/IM-0230-0001.jpeg >/dev/null
ln -sfn models-test /opt/cxr-edge/models.next && mv -T /opt/cxr-edge/models.next /opt/cxr-edge/models
test "$(readlink /opt/cxr-edge/models)" = models-test
CXR_MODELS=/opt/cxr-edge/models /opt/cxr-edge/venv/bin/cxr-edge models >/dev/null
# a damaged file is refused before the switch
printf x >> "$new/cxr_binary_160_int8_cam.tflite"
if CXR_MODELS="$new" /opt/cxr-edge/venv/bin/cxr-edge classify --no-log /srv/cxr/shared/data/fullres_sample/NORMAL/IM-0230-0001.jpeg 2>/dev/null; then
  echo "error: a damaged model file was accepted" >&2; exit 1
fi
EOF
in_arm64 /bin/bash /tmp/pios-install.sh
cp "$ROOTFS/etc/systemd/system/cxr-edge-serve.service" "$CACHE/pios-serve.service"
pip_s=$(( $(date +%s) - mark ))

mark=$(date +%s)
for venv in litert tflite; do
  files=.
  [ "$venv" = litert ] || files=$TFLITE_TESTS
  say "TensorFlow-free tests in /opt/venv-$venv: $files"
  in_arm64 /bin/bash -ec "cd /srv/cxr/cxr-edge/tests && PYTHONSAFEPATH=1 /opt/venv-$venv/bin/python -m pytest -q \
    -p no:cacheprovider -m 'not browser' --rootdir /srv/cxr/cxr-edge -c /srv/cxr/cxr-edge/pytest.ini $files"
done
tests_s=$(( $(date +%s) - mark ))

# -- 3. the same probe on x86 and on arm64 (Pi 4 and Pi 5 CPU models) ---------------------------
mark=$(date +%s)
work=$(mktemp -d)
say "x86 reference probes"
(cd /tmp && "$X86_LITERT/bin/python" "$ROOT/benchmarks/platform_probe.py" --samples "$DATA/fullres_sample" \
   --out "$work/x86-litert.json")
pairs=(--pair litert-pi4 "$work/x86-litert.json" "$work/arm64-litert-pi4.json"
       --pair litert-pi5 "$work/x86-litert.json" "$work/arm64-litert-pi5.json")
if [ -x "$X86_TFLITE/bin/python" ]; then
  (cd /tmp && "$X86_TFLITE/bin/python" "$ROOT/benchmarks/platform_probe.py" --samples "$DATA/fullres_sample" \
     --out "$work/x86-tflite.json")
  pairs+=(--pair tflite-pi4 "$work/x86-tflite.json" "$work/arm64-tflite-pi4.json")
fi
for run in litert:pi4 litert:pi5 tflite:pi4; do
  venv=${run%%:*}
  [ "$venv" = litert ] || [ -x "$X86_TFLITE/bin/python" ] || continue
  set_profile "${run##*:}"
  say "arm64 probe: $venv as a ${run##*:} (${QEMU_CPU_OF[$profile]})"
  skip=threads,kernels  # the investigation steps, on the Pi 4 profile with ai-edge-litert only
  [ "$run" != litert:pi4 ] || skip=""
  in_arm64 /bin/bash -ec "cd /tmp && /opt/venv-$venv/bin/python /srv/cxr/cxr-edge/benchmarks/platform_probe.py \
    --samples /srv/cxr/shared/data/fullres_sample --out /tmp/arm64-$venv-$profile.json --skip '$skip'"
  cp "$ROOTFS/tmp/arm64-$venv-$profile.json" "$work/"
done
probes_s=$(( $(date +%s) - mark ))
cleanup

# -- 4. compare, record, fail beyond tolerance --------------------------------------------------
cat > "$work/stage.json" <<EOF
{"note": "wall times of this CI stage on a 2-core x86 host under qemu-user emulation: CI planning only, not a device's speed",
 "rootfs": "$rootfs_state", "rootfs_build_s": $rootfs_s, "tflite_tests": "$TFLITE_TESTS", "pip_s": $pip_s, "tests_s": $tests_s, "probes_s": $probes_s,
 "total_s": $(now), "qemu": "$(qemu-aarch64-static --version | head -1)",
 "cpu_profiles": {"pi4": "qemu -cpu cortex-a72, /proc/cpuinfo of a Cortex-A72", "pi5": "qemu -cpu cortex-a76, /proc/cpuinfo of a Cortex-A76"}}
EOF
say "comparing with x86"
(cd "$ROOT" && "$X86_LITERT/bin/python" -m benchmarks.arm64 "${pairs[@]}" --stage "$work/stage.json" --out "$OUT")
rm -rf "$work"
say "done: rootfs $rootfs_state, stage $(now) s"
}

main "$@"
