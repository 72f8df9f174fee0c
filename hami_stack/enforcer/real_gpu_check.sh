#!/usr/bin/env bash
# Builds the shim and runs the memory and compute checks against the real NVIDIA driver (a few
# minutes at most). Prints what it saw; exits 0 with a message when there is no usable GPU.
# Usage: hami_stack/enforcer/real_gpu_check.sh   (from the repository root; python3 and gcc needed)
set -u
cd "$(dirname "$0")/../.."
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "real_gpu_check: no working nvidia-smi / NVIDIA GPU here; nothing to check"
    exit 0
fi
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
SHIM=$("$PY" -c "from hami_stack.enforcer import ensure_built; print(ensure_built())") || { echo "shim build failed"; exit 1; }
gcc -O1 -std=gnu11 -Wall -Wextra -Ihami_stack/enforcer/include -o "$WORK/probe" tests/enforcer/progs/vgpu_probe.c -ldl || exit 1
echo "== GPU"; nvidia-smi -L | head -1
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}
fail=0
expect() { # name, pattern, output
    if grep -q -- "$2" <<<"$3"; then echo "ok   $1"; else echo "FAIL $1 (wanted '$2')"; fail=1; fi
}

echo "== memory: 1 GiB limit, resolution through dlsym and through cuGetProcAddress"
for mode in dlsym gpa; do
    out=$(CUDA_DEVICE_MEMORY_LIMIT=1g CUDA_DEVICE_MEMORY_SHARED_CACHE="$WORK/m-$mode.cache" LD_PRELOAD="$SHIM" \
          "$WORK/probe" $mode info totalmem alloc 805306368 alloc 268435456 alloc 1 info free alloc 1 freeall info 2>&1)
    echo "$out" | sed 's/^/    /'
    expect "$mode: cuMemGetInfo total = limit" "info rc=0 free=1073741824 total=1073741824" "$out"
    expect "$mode: cuDeviceTotalMem = limit" "totalmem rc=0 total=1073741824" "$out"
    expect "$mode: one byte over the limit is OOM" "alloc rc=2" "$out"
    expect "$mode: free at the limit reads 0" "info rc=0 free=0 total=1073741824" "$out"
done

echo "== memory: 4 processes filling one container concurrently (limit 2 GiB, 64 MiB chunks)"
total=0
for i in 1 2 3 4; do
    CUDA_DEVICE_MEMORY_LIMIT=2g CUDA_DEVICE_MEMORY_SHARED_CACHE="$WORK/fill.cache" LIBCUDA_LOG_LEVEL=0 LD_PRELOAD="$SHIM" \
        "$WORK/probe" dlsym fill 67108864 sleep 2 >"$WORK/fill.$i" 2>/dev/null &
done
wait
for i in 1 2 3 4; do n=$(sed -n 's/^fill ok=\([0-9]*\).*/\1/p' "$WORK/fill.$i"); total=$((total + ${n:-0})); done
echo "    chunks granted: $total (expected 32)"
[ "$total" -eq 32 ] && echo "ok   concurrent fill stays within the limit" || { echo "FAIL concurrent fill"; fail=1; }

measure() { # seconds -> mean GPU utilisation over the run, sampled by nvidia-smi
    local s=0 n=0 u
    sleep 2
    for _ in $(seq 1 $(( $1 * 2 ))); do
        u=$(nvidia-smi -i "${CUDA_VISIBLE_DEVICES%%,*}" --query-gpu=utilization.gpu --format=csv,noheader,nounits | head -1)
        s=$((s + u)); n=$((n + 1)); sleep 0.5
    done
    echo $((s / n))
}
echo "== compute: 10 ms kernels in a loop, unlimited vs CUDA_DEVICE_SM_LIMIT=30 (force)"
LD_PRELOAD="$SHIM" CUDA_DEVICE_MEMORY_SHARED_CACHE="$WORK/c0.cache" "$WORK/probe" dlsym loop 10000 8 >"$WORK/c0" 2>&1 &
base=$(measure 5); wait
CUDA_DEVICE_SM_LIMIT=30 GPU_CORE_UTILIZATION_POLICY=force LD_PRELOAD="$SHIM" CUDA_DEVICE_MEMORY_SHARED_CACHE="$WORK/c1.cache" \
    "$WORK/probe" dlsym loop 10000 8 >"$WORK/c1" 2>&1 &
lim=$(measure 5); wait
echo "    unlimited: ${base}% ($(cat "$WORK/c0" | tail -1)); limited to 30%: ${lim}% ($(tail -1 "$WORK/c1"))"
if [ "$lim" -ge 20 ] && [ "$lim" -le 40 ]; then echo "ok   30% limit held within +-10 points"; else echo "FAIL 30% limit: ${lim}%"; fail=1; fi
exit $fail
