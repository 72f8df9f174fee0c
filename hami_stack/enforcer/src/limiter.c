/*
 * Compute limiter: holds a container near CUDA_DEVICE_SM_LIMIT percent of a device's SM time.
 *
 * Design (per process, per device):
 *  - A watcher thread wakes every TICK_MS. It reads NVML per-process utilisation over the last second
 *    for the device, sums the samples of the container's processes (host pids in the shared region)
 *    into u, and counts this process' launches over the same second into n.
 *  - n launches produced u percent, so one launch costs u/n; the rate that yields the limit is
 *    n * limit / u launches per second. The rate is smoothed (half old, half new) and published as a
 *    pacing interval. Because n and u cover the same window, the estimate does not compound the
 *    NVML lag the way an integrating controller would. Each process of a container gets
 *    limit * (its share of u), so the container as a whole converges to the limit.
 *  - Launch: a token bucket with one token of burst (GCRA): each launch takes the next slot on
 *    the device's timeline and sleeps until it; no limit or an inactive limiter costs one load.
 *  - force: always active. default: active while processes outside the container are busy on the
 *    device. disable: never (no thread, no counting).
 *  - When this process' host pid cannot be found in NVML (pid namespaces), u falls back to the
 *    whole device's utilisation, which over-estimates: the fallback throttles more, never less.
 * Launch paths covered: cuLaunchKernel, cuLaunchKernelEx, cuLaunchCooperativeKernel and cuGraphLaunch
 * (a graph launch counts as one launch), plus their _ptsz variants.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define TICK_MS 100
#define WINDOW_TICKS 10 /* NVML utilisation covers about one second */

static atomic_llong interval_ns[VGPU_MAX_DEVICES]; /* 0: not throttled */
static atomic_llong next_ns[VGPU_MAX_DEVICES];
static atomic_ullong launch_count[VGPU_MAX_DEVICES];
static atomic_int device_seen[VGPU_MAX_DEVICES];
static atomic_int watcher_started;
static atomic_int last_kernel_sec_cache;
static int hostpid; /* as NVML reports this process; 0 unknown */

static void sleep_ns(int64_t ns) {
    struct timespec ts = {(time_t)(ns / 1000000000LL), (long)(ns % 1000000000LL)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void mark_kernel(void) {
    /* a coarse wall clock is enough for "seconds since the last kernel" */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    int sec = (int)ts.tv_sec;
    if (atomic_load_explicit(&last_kernel_sec_cache, memory_order_relaxed) != sec) {
        atomic_store_explicit(&last_kernel_sec_cache, sec, memory_order_relaxed);
        if (vgpu_slot >= 0) vgpu_region->slots[vgpu_slot].last_kernel_unix_s = ts.tv_sec;
    }
}

static void throttle(int d) {
    atomic_fetch_add_explicit(&launch_count[d], 1, memory_order_relaxed);
    int64_t iv = atomic_load_explicit(&interval_ns[d], memory_order_relaxed);
    if (!iv) return;
    int64_t now = vgpu_now_ns();
    long long nxt = atomic_load_explicit(&next_ns[d], memory_order_relaxed), allowed, want;
    do {
        allowed = nxt > now - iv ? nxt : now - iv; /* at most one interval of credit banked */
        want = allowed + iv;
    } while (!atomic_compare_exchange_weak_explicit(&next_ns[d], &nxt, want, memory_order_relaxed,
                                                    memory_order_relaxed));
    if (allowed > now) sleep_ns(allowed - now);
}

static void detect_hostpid(nvmlDevice_t h) {
    if (hostpid) return;
    unsigned int me = (unsigned int)getpid();
    nvmlProcessInfo_t procs[256];
    unsigned int n = 256;
    if (vgpu_real.nvmlDeviceGetComputeRunningProcesses_v3 &&
        vgpu_real.nvmlDeviceGetComputeRunningProcesses_v3(h, &n, procs) == NVML_SUCCESS) {
        for (unsigned i = 0; i < n; i++)
            if (procs[i].pid == me) hostpid = (int)me;
        if (!hostpid) {
            /* in a pid namespace: our host pid is the one running process no other slot claims */
            int cand = 0, count = 0;
            for (unsigned i = 0; i < n; i++)
                if (!vgpu_is_container_pid(procs[i].pid) && kill((pid_t)procs[i].pid, 0) != 0) {
                    cand = (int)procs[i].pid;
                    count++;
                }
            if (count == 1) hostpid = cand;
        }
    }
    if (hostpid && vgpu_slot >= 0) {
        vgpu_region_lock();
        if (vgpu_slot >= 0) vgpu_region->slots[vgpu_slot].hostpid = hostpid;
        vgpu_region_unlock();
        LOG_DEBUG("host pid %d", hostpid);
    }
}

static int limiter_active(int d, unsigned others) {
#ifdef VGPU_FAULT_LIMITER_OFF /* deliberate fault build only (hami_stack/faults) */
    return 0;
#endif
    if (!vgpu_cfg.sm_limit[d] || vgpu_cfg.policy == VGPU_POLICY_DISABLE) return 0;
    if (vgpu_cfg.policy == VGPU_POLICY_FORCE) return 1;
    return others > 0;
}

static void *watcher(void *arg) {
    (void)arg;
    vgpu_depth++; /* NVML calls from here must reach the driver, not our wrappers */
    nvmlDevice_t handles[VGPU_MAX_DEVICES] = {0};
    unsigned long long hist[VGPU_MAX_DEVICES][WINDOW_TICKS + 1];
    memset(hist, 0, sizeof(hist));
    int tick = 0;
    double rate[VGPU_MAX_DEVICES] = {0};
    static nvmlProcessUtilizationSample_t samples[512];
    for (;;) {
        sleep_ns(TICK_MS * 1000000LL);
        tick++;
        for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
            if (!vgpu_cfg.sm_limit[d] || !atomic_load(&device_seen[d])) continue;
            unsigned long long c = atomic_load_explicit(&launch_count[d], memory_order_relaxed);
            hist[d][tick % (WINDOW_TICKS + 1)] = c;
            unsigned long long n = c - hist[d][(tick + 1) % (WINDOW_TICKS + 1)]; /* launches in the window */
            if (!handles[d] && vgpu_real.nvmlDeviceGetHandleByIndex_v2 &&
                vgpu_real.nvmlDeviceGetHandleByIndex_v2((unsigned)d, &handles[d]) != NVML_SUCCESS)
                handles[d] = NULL;
            if (!handles[d]) continue;
            detect_hostpid(handles[d]);
            unsigned int ns = 512, u = 0, mine = 0, others = 0;
            nvmlReturn_t r = vgpu_real.nvmlDeviceGetProcessUtilization
                                 ? vgpu_real.nvmlDeviceGetProcessUtilization(handles[d], samples, &ns, 0)
                                 : NVML_ERROR_FUNCTION_NOT_FOUND;
            if (r != NVML_SUCCESS) ns = 0;
            for (unsigned i = 0; i < ns; i++) {
                unsigned su = samples[i].smUtil > 100 ? 100 : samples[i].smUtil; /* garbage never wins */
                if (hostpid && samples[i].pid == (unsigned)hostpid) mine = su;
                if (hostpid && vgpu_is_container_pid(samples[i].pid)) u += su;
                else others += su;
            }
            if (!hostpid) {
                nvmlUtilization_t du;
                if (vgpu_real.nvmlDeviceGetUtilizationRates &&
                    vgpu_real.nvmlDeviceGetUtilizationRates(handles[d], &du) == NVML_SUCCESS)
                    u = du.gpu > 100 ? 100 : du.gpu;
                others = vgpu_cfg.policy == VGPU_POLICY_FORCE ? 0 : others;
            }
            if (vgpu_slot >= 0) {
                vgpu_region->slots[vgpu_slot].sm_util[d] = hostpid ? mine : u;
                vgpu_region->slots[vgpu_slot].launches[d] = c;
            }
            if (!limiter_active(d, others)) {
                rate[d] = 0;
                atomic_store(&interval_ns[d], 0);
                continue;
            }
            if (!u || !n) continue; /* no evidence this second: keep the current pace */
            double target = (double)n * vgpu_cfg.sm_limit[d] / (double)u; /* launches per second */
            rate[d] = rate[d] > 0 ? 0.5 * rate[d] + 0.5 * target : target;
            if (rate[d] < 0.5) rate[d] = 0.5; /* at least one launch every two seconds */
            atomic_store(&interval_ns[d], (long long)(1e9 / rate[d]));
            LOG_DEBUG("device %d: util %u%% (limit %u%%), %llu launches/s -> pace %.1f/s", d, u,
                      vgpu_cfg.sm_limit[d], n, rate[d]);
        }
    }
    return NULL;
}

static void start_watcher(void) {
    int expected = 0;
    if (!atomic_compare_exchange_strong(&watcher_started, &expected, 1)) return;
    if (!vgpu_nvml_ready()) {
        LOG_WARN("NVML unavailable: SM limit cannot be measured and is not enforced");
        return;
    }
    pthread_t t;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &a, watcher, NULL) != 0) LOG_ERROR("cannot start the compute limiter thread");
    pthread_attr_destroy(&a);
}

void vgpu_limiter_on_context(int d) {
    /* learn the host pid now: NVML process lists and per-process utilisation are keyed on it */
    if (!hostpid && d >= 0 && d < VGPU_MAX_DEVICES && vgpu_nvml_ready() && vgpu_real.nvmlDeviceGetHandleByIndex_v2) {
        nvmlDevice_t h;
        vgpu_depth++;
        if (vgpu_real.nvmlDeviceGetHandleByIndex_v2((unsigned)d, &h) == NVML_SUCCESS) detect_hostpid(h);
        vgpu_depth--;
    }
    if (!vgpu_cfg.sm_any || d < 0 || d >= VGPU_MAX_DEVICES || !vgpu_cfg.sm_limit[d]) return;
    atomic_store(&device_seen[d], 1);
    start_watcher();
}

void vgpu_limiter_after_fork_child(void) {
    /* threads do not survive fork: the child starts its own watcher on first use */
    atomic_store(&watcher_started, 0);
    hostpid = 0;
    for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
        atomic_store(&interval_ns[d], 0);
        atomic_store(&launch_count[d], 0);
        atomic_store(&device_seen[d], 0);
    }
}

/* device of a launch: the stream's context is the current one for every caller we know of */
static inline void before_launch(void) {
    mark_kernel();
    if (LIKELY(!vgpu_cfg.sm_any) || vgpu_depth) return;
    int d = vgpu_current_index();
    if (d < 0 || !vgpu_cfg.sm_limit[d]) return;
    if (UNLIKELY(!atomic_load_explicit(&device_seen[d], memory_order_relaxed))) vgpu_limiter_on_context(d);
    throttle(d);
}

VGPU_API CUresult cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                                 unsigned bz, unsigned shm, CUstream s, void **params, void **extra) {
    vgpu_init();
    if (UNLIKELY(!vgpu_real.cuLaunchKernel)) return CUDA_ERROR_NOT_SUPPORTED;
    before_launch();
    return vgpu_real.cuLaunchKernel(f, gx, gy, gz, bx, by, bz, shm, s, params, extra);
}

VGPU_API CUresult cuLaunchKernel_ptsz(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                                      unsigned by, unsigned bz, unsigned shm, CUstream s, void **params,
                                      void **extra) {
    vgpu_init();
    if (UNLIKELY(!vgpu_real.cuLaunchKernel_ptsz)) return CUDA_ERROR_NOT_SUPPORTED;
    before_launch();
    return vgpu_real.cuLaunchKernel_ptsz(f, gx, gy, gz, bx, by, bz, shm, s, params, extra);
}

VGPU_API CUresult cuLaunchKernelEx(const CUlaunchConfig *config, CUfunction f, void **kernelParams, void **extra) {
    vgpu_init();
    if (UNLIKELY(!vgpu_real.cuLaunchKernelEx)) return CUDA_ERROR_NOT_SUPPORTED;
    before_launch();
    return vgpu_real.cuLaunchKernelEx(config, f, kernelParams, extra);
}

VGPU_API CUresult cuLaunchKernelEx_ptsz(const CUlaunchConfig *config, CUfunction f, void **kernelParams,
                                        void **extra) {
    vgpu_init();
    if (UNLIKELY(!vgpu_real.cuLaunchKernelEx_ptsz)) return CUDA_ERROR_NOT_SUPPORTED;
    before_launch();
    return vgpu_real.cuLaunchKernelEx_ptsz(config, f, kernelParams, extra);
}

VGPU_API CUresult cuLaunchCooperativeKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                                            unsigned by, unsigned bz, unsigned shm, CUstream s, void **params) {
    vgpu_init();
    if (UNLIKELY(!vgpu_real.cuLaunchCooperativeKernel)) return CUDA_ERROR_NOT_SUPPORTED;
    before_launch();
    return vgpu_real.cuLaunchCooperativeKernel(f, gx, gy, gz, bx, by, bz, shm, s, params);
}

VGPU_API CUresult cuLaunchCooperativeKernel_ptsz(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                                                 unsigned by, unsigned bz, unsigned shm, CUstream s,
                                                 void **params) {
    vgpu_init();
    if (UNLIKELY(!vgpu_real.cuLaunchCooperativeKernel_ptsz)) return CUDA_ERROR_NOT_SUPPORTED;
    before_launch();
    return vgpu_real.cuLaunchCooperativeKernel_ptsz(f, gx, gy, gz, bx, by, bz, shm, s, params);
}

VGPU_API CUresult cuGraphLaunch(CUgraphExec g, CUstream s) {
    vgpu_init();
    if (UNLIKELY(!vgpu_real.cuGraphLaunch)) return CUDA_ERROR_NOT_SUPPORTED;
    before_launch();
    return vgpu_real.cuGraphLaunch(g, s);
}

VGPU_API CUresult cuGraphLaunch_ptsz(CUgraphExec g, CUstream s) {
    vgpu_init();
    if (UNLIKELY(!vgpu_real.cuGraphLaunch_ptsz)) return CUDA_ERROR_NOT_SUPPORTED;
    before_launch();
    return vgpu_real.cuGraphLaunch_ptsz(g, s);
}
