/*
 * Compute limiter: holds a container at CUDA_DEVICE_SM_LIMIT percent of a device's busy time, for any
 * kernel length.
 *
 * Unit: device busy time, not launches or blocks. A watcher thread wakes every TICK_MS and reads NVML
 * per-process utilisation (the percent of the last WINDOW_NS the container's processes had kernels
 * running, summed over the container's host pids). The window reading W(t) turns into the container's
 * cumulative busy time since this process started watching, C(t) = W(t) + C(t - window) (C before the
 * start is extrapolated backwards at the rate seen at the start, so busy time of other container
 * processes before we started is not charged to us). Each tick:
 *     credit += limit * dt - (C(t) - C(t - dt))     (capped at CREDIT_CAP_NS of banked budget)
 * i.e. a debt-based token bucket measured in busy nanoseconds. While credit is negative the debt is
 * turned into a wake-up time, now + debt / limit (the time the budget needs to pay it back), and every
 * launch on that device sleeps until then. A 2 s kernel at SM=30 therefore runs, and the next launch
 * waits 4.7 s: launches are paced by what they cost, with no floor on the launch rate. The credit starts
 * at 0, so the first second is limited like any other (no initial burst).
 * Several processes of one container each run this loop on the container's total: whenever the
 * container is over budget they all wait, so the container as a whole holds the limit.
 *
 * Policy (GPU_CORE_UTILIZATION_POLICY, as upstream HAMi-core defines it):
 *   force   - always limited.
 *   disable - never limited (no thread, no measuring).
 *   default - limited while the region's utilisation switch is on. Upstream starts the switch on and
 *             only HAMi's node monitor turns it off when the GPU is not contended; here the switch is
 *             on unless a node monitor writes VGPU_SWITCH_OFF into the region, so a process alone on
 *             a GPU with no monitor is limited exactly as under force.
 * The container's busy fraction is the smaller of its processes' summed NVML per-process utilisation and
 * the device's utilisation (see the watcher). When this process' host pid cannot be found in NVML (pid
 * namespaces), it falls back to the whole device's, which over-estimates: it throttles more, never less.
 *
 * Cost while idle: a launch reads one flag (plus the coarse clock for "last kernel" bookkeeping); the
 * device is looked up and the clock read only while some device of this process is in debt.
 * Launch paths covered: cuLaunchKernel, cuLaunchKernelEx, cuLaunchCooperativeKernel and cuGraphLaunch,
 * plus their _ptsz variants.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define TICK_MS 10
#define WINDOW_NS 1000000000LL         /* NVML utilisation covers one second */
#define CREDIT_CAP_NS 100000000LL      /* at most 100 ms of wall time's budget banked while idle */
#define HIST 512                       /* ticks of C(t) history: > window / tick, with room for slow ticks */
#define VGPU_SWITCH_OFF 2u             /* written by a node monitor: GPU not contended (default policy) */

static atomic_llong wake_ns[VGPU_MAX_DEVICES]; /* launches on d sleep until this; 0: no debt */
static atomic_int device_seen[VGPU_MAX_DEVICES]; /* this process made a context or launched on d */
static atomic_int g_gate = 1; /* 0: launches pass untouched; 1: look (watcher not started, or some debt) */
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

static int limiter_active(int d) {
#ifdef VGPU_FAULT_LIMITER_OFF /* deliberate fault build only (hami_stack/faults) */
    (void)d;
    return 0;
#else
    if (!vgpu_cfg.sm_limit[d] || vgpu_cfg.policy == VGPU_POLICY_DISABLE) return 0;
    if (vgpu_cfg.policy == VGPU_POLICY_FORCE) return 1;
    return !vgpu_region || vgpu_region->utilization_switch != VGPU_SWITCH_OFF;
#endif
}

/* per-device controller state (watcher thread only) */
typedef struct ctl {
    int started;
    int64_t t0;        /* first tick */
    double rate0;      /* busy ns per ns seen in the first reading: extrapolates C before t0 */
    int64_t ht[HIST];  /* tick times */
    double hc[HIST];   /* C at those times (busy ns) */
    unsigned hn;       /* ticks recorded */
    double credit;     /* busy ns of budget left; negative: debt */
} ctl_t;

/* C at time t, interpolated from the history (extrapolated before the first tick) */
static double c_at(const ctl_t *c, int64_t t) {
    if (t <= c->t0 || !c->hn) return -c->rate0 * (double)(c->t0 - t);
    const unsigned newest = c->hn - 1, lo = c->hn > HIST ? c->hn - HIST : 0;
    if (t >= c->ht[newest % HIST]) return c->hc[newest % HIST];
    for (unsigned k = newest; k > lo; k--) {
        const int64_t ta = c->ht[(k - 1) % HIST], tb = c->ht[k % HIST];
        if (t >= ta) {
            const double ca = c->hc[(k - 1) % HIST], cb = c->hc[k % HIST];
            return tb > ta ? ca + (cb - ca) * (double)(t - ta) / (double)(tb - ta) : cb;
        }
    }
    return c->hc[lo % HIST]; /* older than the history: HIST ticks span several windows */
}

static void *watcher(void *arg) {
    (void)arg;
    vgpu_depth++; /* NVML calls from here must reach the driver, not our wrappers */
    nvmlDevice_t handles[VGPU_MAX_DEVICES] = {0};
    static ctl_t ctl[VGPU_MAX_DEVICES];
    static nvmlProcessUtilizationSample_t samples[512];
    memset(ctl, 0, sizeof(ctl));
    for (;;) {
        sleep_ns(TICK_MS * 1000000LL);
        int holding = 0;
        for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
            if (!vgpu_cfg.sm_limit[d] || !atomic_load_explicit(&device_seen[d], memory_order_relaxed)) continue;
            if (!handles[d] && vgpu_real.nvmlDeviceGetHandleByIndex_v2 &&
                vgpu_real.nvmlDeviceGetHandleByIndex_v2((unsigned)d, &handles[d]) != NVML_SUCCESS)
                handles[d] = NULL;
            if (!handles[d]) continue;
            ctl_t *c = &ctl[d];
            if (!limiter_active(d)) {
                c->started = 0; /* no banked credit or old debt when the limit comes back */
                atomic_store(&wake_ns[d], 0);
                continue;
            }
            detect_hostpid(handles[d]);
            unsigned int ns = 512, u = 0, mine = 0;
            nvmlReturn_t r = vgpu_real.nvmlDeviceGetProcessUtilization
                                 ? vgpu_real.nvmlDeviceGetProcessUtilization(handles[d], samples, &ns, 0)
                                 : NVML_ERROR_FUNCTION_NOT_FOUND;
            if (r != NVML_SUCCESS) ns = 0;
            for (unsigned i = 0; i < ns; i++) {
                unsigned su = samples[i].smUtil > 100 ? 100 : samples[i].smUtil; /* garbage never wins */
                if (hostpid && samples[i].pid == (unsigned)hostpid) mine = su;
                if (hostpid && vgpu_is_container_pid(samples[i].pid)) u += su;
            }
            /* the container's processes can overlap (the emulated device runs them concurrently): their
             * summed per-process time over-counts the union, and so does the whole device's busy time
             * when other containers run; the smaller one is exact when the container is alone and too
             * high otherwise (throttles more, never less). Without a host pid only the device's. */
            nvmlUtilization_t du;
            if (vgpu_real.nvmlDeviceGetUtilizationRates &&
                vgpu_real.nvmlDeviceGetUtilizationRates(handles[d], &du) == NVML_SUCCESS) {
                if (!hostpid || du.gpu < u) u = du.gpu;
            } else if (!hostpid) {
                holding |= atomic_load(&wake_ns[d]) != 0;
                continue; /* no reading this tick: keep the current debt */
            }
            if (u > 100) u = 100;
            const int64_t now = vgpu_now_ns();
            const double w = (double)u / 100.0 * (double)WINDOW_NS; /* busy ns in (now - window, now] */
            if (!c->started) {
                memset(c, 0, sizeof(*c));
                c->started = 1;
                c->t0 = now;
                c->rate0 = w / (double)WINDOW_NS;
            }
            const double prev = c->hn ? c->hc[(c->hn - 1) % HIST] : 0.0;
            const int64_t prev_t = c->hn ? c->ht[(c->hn - 1) % HIST] : now;
            double cnow = w + c_at(c, now - WINDOW_NS);
            if (cnow < prev) cnow = prev; /* rounding of the percent reading: busy time never shrinks */
            c->ht[c->hn % HIST] = now;
            c->hc[c->hn % HIST] = cnow;
            c->hn++;
            const double share = vgpu_cfg.sm_limit[d] / 100.0;
            c->credit += share * (double)(now - prev_t) - (cnow - prev);
            if (c->credit > share * CREDIT_CAP_NS) c->credit = share * CREDIT_CAP_NS;
            long long wake = c->credit < 0 ? now + (long long)(-c->credit / share) : 0;
            atomic_store(&wake_ns[d], wake);
            if (wake) holding = 1;
            if (vgpu_slot >= 0) vgpu_region->slots[vgpu_slot].sm_util[d] = hostpid ? mine : u;
            LOG_DEBUG("device %d: util %u%% (limit %u%%), busy %.1f ms, credit %.1f ms", d, u,
                      vgpu_cfg.sm_limit[d], cnow / 1e6, c->credit / 1e6);
        }
        atomic_store_explicit(&g_gate, holding, memory_order_release);
    }
    return NULL;
}

static void start_watcher(void) {
    int expected = 0;
    if (!atomic_compare_exchange_strong(&watcher_started, &expected, 1)) return;
    if (!vgpu_nvml_ready()) {
        LOG_WARN("NVML unavailable: SM limit cannot be measured and is not enforced");
        atomic_store(&g_gate, 0);
        return;
    }
    pthread_t t;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &a, watcher, NULL) != 0) {
        LOG_ERROR("cannot start the compute limiter thread");
        atomic_store(&g_gate, 0);
    }
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
    atomic_store(&g_gate, 1);
    hostpid = 0;
    for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
        atomic_store(&wake_ns[d], 0);
        atomic_store(&device_seen[d], 0);
    }
}

/* the limited path: start the watcher on first use, then wait out the device's debt */
static void __attribute__((noinline)) launch_gate(void) {
    if (!vgpu_cfg.sm_any || vgpu_depth) {
        if (!vgpu_cfg.sm_any) atomic_store_explicit(&g_gate, 0, memory_order_relaxed);
        return;
    }
    int d = vgpu_current_index(); /* the stream's context is the current one for every caller we know */
    if (d < 0 || !vgpu_cfg.sm_limit[d]) return;
    if (UNLIKELY(!atomic_load_explicit(&device_seen[d], memory_order_relaxed))) vgpu_limiter_on_context(d);
    int64_t now;
    for (;;) {
        int64_t wake = atomic_load_explicit(&wake_ns[d], memory_order_relaxed);
        now = vgpu_now_ns();
        if (wake <= now) break;
        sleep_ns(wake - now); /* the debt is paid back when the budget has caught up */
    }
    /* no device in debt any more: later launches skip this path until the watcher finds a new debt
     * (a debt it publishes meanwhile is seen at its next tick) */
    for (int i = 0; i < VGPU_MAX_DEVICES; i++)
        if (atomic_load_explicit(&wake_ns[i], memory_order_relaxed) > now) return;
    atomic_store_explicit(&g_gate, 0, memory_order_relaxed);
}

static inline void before_launch(void) {
    mark_kernel();
    if (UNLIKELY(atomic_load_explicit(&g_gate, memory_order_relaxed))) launch_gate();
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
