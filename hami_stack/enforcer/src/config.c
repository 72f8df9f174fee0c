/* Logging and the strict parsing of the enforcement environment. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <libgen.h>
#include <limits.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "internal.h"

int vgpu_log_level = VGPU_LOG_WARN;
vgpu_config_t vgpu_cfg;

static const char *level_name(int level) {
    switch (level) {
    case VGPU_LOG_ERROR: return "ERROR";
    case VGPU_LOG_WARN: return "WARN";
    case VGPU_LOG_INFO: return "INFO";
    default: return "DEBUG";
    }
}

void vgpu_log(int level, const char *fmt, ...) {
    /* errors are printed at every level: an OOM must never be silent */
    if (level > vgpu_log_level && level != VGPU_LOG_ERROR) return;
    char buf[1024];
    int n = snprintf(buf, sizeof(buf), "[HAMI-vgpu pid=%d %s] ", (int)getpid(), level_name(level));
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof(buf)) n += vsnprintf(buf + n, sizeof(buf) - (size_t)n, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n >= sizeof(buf) - 1) n = (int)sizeof(buf) - 2;
    buf[n++] = '\n';
    /* one write() per line keeps lines of concurrent processes whole */
    ssize_t w = write(STDERR_FILENO, buf, (size_t)n);
    (void)w;
}

/* Digits with an optional k/m/g suffix (case-insensitive powers of 1024); nothing else. */
int vgpu_parse_size(const char *s, uint64_t *out) {
    if (!s || !*s) return -1;
    uint64_t v = 0;
    const char *p = s;
    if (!isdigit((unsigned char)*p)) return -1;
    while (isdigit((unsigned char)*p)) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10) return -1;
        v = v * 10 + d;
        p++;
    }
    unsigned shift = 0;
    if (*p) {
        switch (*p) {
        case 'k': case 'K': shift = 10; break;
        case 'm': case 'M': shift = 20; break;
        case 'g': case 'G': shift = 30; break;
        default: return -1;
        }
        if (p[1]) return -1; /* "1Gi", "1GB", "1g " are rejected rather than misread */
    }
    if (shift && v > (UINT64_MAX >> shift)) return -1;
    *out = v << shift;
    return 0;
}

/* A plain decimal integer 0..100 (no suffix, no sign). */
int vgpu_parse_percent(const char *s, uint32_t *out) {
    if (!s || !*s) return -1;
    uint32_t v = 0;
    for (const char *p = s; *p; p++) {
        if (!isdigit((unsigned char)*p)) return -1;
        v = v * 10 + (uint32_t)(*p - '0');
        if (v > 100) return -1;
    }
    *out = v;
    return 0;
}

static int parse_int(const char *s, long lo, long hi, long *out) {
    if (!s || !*s) return -1;
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || !end || *end || v < lo || v > hi || isspace((unsigned char)*s)) return -1;
    *out = v;
    return 0;
}

/*
 * Limit grammar (also in hami_stack/enforcer/README.md). Every value is checked strictly and a bad one
 * fails closed: the device it applies to refuses every allocation and reports 0 bytes total/free.
 *
 *   CUDA_DEVICE_MEMORY_LIMIT, CUDA_DEVICE_MEMORY_LIMIT_<i> (i = 0..15, the container device index):
 *     size   := digits [suffix]        digits: decimal 0-9 only (no sign, space, hex, octal, fraction)
 *     suffix := k | K | m | M | g | G  powers of 1024 (KiB, MiB, GiB); no suffix means bytes
 *     The value must fit 64 bits. "1Gi", "1GB", "1.5g", "0x10m", " 4m" are errors, not guesses.
 *     0 (with or without a suffix) means "no limit" (HAMi-core's meaning, which HAMi relies on with "0m").
 *     The indexed form takes precedence; an indexed 0 counts as unset (as in HAMi-core), so it never
 *     lifts a global limit. A bad indexed value blocks its device even when a global one is valid; a
 *     bad global value blocks every device without a valid non-zero indexed value.
 *   CUDA_DEVICE_SM_LIMIT, CUDA_DEVICE_SM_LIMIT_<i>: percent := digits, 0..100. 0 and 100 mean "whole
 *     device" (no compute limit); an indexed 0 counts as unset. A bad or out-of-range value (e.g.
 *     "abc", "150", "50%", "50m") blocks the device's memory as above and sets its SM limit to 1 %.
 */

/* 1: set and valid, 0: unset, -1: set but not valid (logged) */
static int env_size(const char *name, uint64_t *out) {
    const char *v = getenv(name);
    if (!v) return 0;
    uint64_t b;
    if (vgpu_parse_size(v, &b) != 0) {
        LOG_ERROR("%s='%s' is not a size (decimal digits with an optional k/m/g suffix); the device refuses "
                  "allocations (fail closed)", name, v);
        return -1;
    }
    *out = b;
    return 1;
}

static int env_percent(const char *name, uint32_t *out) {
    const char *v = getenv(name);
    if (!v) return 0;
    uint32_t p;
    if (vgpu_parse_percent(v, &p) != 0) {
        LOG_ERROR("%s='%s' is not a percentage 0..100; the device refuses allocations (fail closed)", name, v);
        return -1;
    }
    *out = p;
    return 1;
}

/*
 * Where the shared region may live. When the shim is installed system-wide (listed in
 * /etc/ld.so.preload, a read-only mount the device plugin provides, so no process can drop or swap
 * the shim), the region must be a file directly inside the directory the shim itself was loaded from
 * (the plugin's per-container directory, /usr/local/vgpu under HAMi, where the plugin also puts the
 * cache it names). A process that points CUDA_DEVICE_MEMORY_SHARED_CACHE anywhere else would get a
 * fresh, empty budget: it is refused every allocation instead and sees 0 bytes (fail closed). An unset
 * variable means <that directory>/cudevshr.cache. Loaded through LD_PRELOAD instead, the process owns
 * its whole environment (it could equally drop the shim), so the variable is honoured as given.
 */
#ifndef VGPU_PRELOAD_LIST
#define VGPU_PRELOAD_LIST "/etc/ld.so.preload"
#endif

static int preloaded_system_wide(const char *self) {
    FILE *f = fopen(VGPU_PRELOAD_LIST, "re");
    if (!f) return 0;
    char tok[PATH_MAX], real[PATH_MAX];
    int found = 0;
    /* the list is separated by white space or colons, as ld.so reads it */
    while (!found && fscanf(f, " %4095[^: \t\n]", tok) == 1) {
        if (realpath(tok, real) && !strcmp(real, self)) found = 1;
        if (fscanf(f, "%*[: \t\n]") == EOF) break;
    }
    fclose(f);
    return found;
}

static void check_cache_path(void) {
    Dl_info info;
    char self[PATH_MAX], dir[PATH_MAX], want[PATH_MAX], parent[PATH_MAX];
    if (!dladdr((void *)check_cache_path, &info) || !info.dli_fname || !realpath(info.dli_fname, self)) return;
    if (!preloaded_system_wide(self)) return;
    vgpu_cfg.cache_enforced = 1;
    strcpy(dir, self);
    strcpy(dir, dirname(dir));
    if (!getenv("CUDA_DEVICE_MEMORY_SHARED_CACHE") || !*getenv("CUDA_DEVICE_MEMORY_SHARED_CACHE")) {
        if ((size_t)snprintf(vgpu_cfg.cache_path, sizeof(vgpu_cfg.cache_path), "%s/cudevshr.cache", dir) <
            sizeof(vgpu_cfg.cache_path))
            return;
    }
    strcpy(want, vgpu_cfg.cache_path);
    const char *base = strrchr(want, '/');
    int ok = base && base[1] && strcmp(base + 1, ".") && strcmp(base + 1, "..");
    if (ok) {
        want[base - want] = 0;
        ok = realpath(want[0] ? want : "/", parent) && !strcmp(parent, dir);
    }
    if (!ok) {
        LOG_ERROR("CUDA_DEVICE_MEMORY_SHARED_CACHE='%s' is not a file in the shim's directory %s; every "
                  "allocation is refused (fail closed: a region elsewhere would be a fresh budget)",
                  vgpu_cfg.cache_path, dir);
        vgpu_cfg.cache_refused = 1;
        for (int i = 0; i < VGPU_MAX_DEVICES; i++) vgpu_cfg.mem_blocked[i] = 1;
    }
}

void vgpu_config_load(void) {
    memset(&vgpu_cfg, 0, sizeof(vgpu_cfg));
    long lv;
    const char *l = getenv("LIBCUDA_LOG_LEVEL");
    if (l) {
        if (parse_int(l, 0, 4, &lv) == 0)
            vgpu_log_level = (int)lv;
        else
            LOG_ERROR("LIBCUDA_LOG_LEVEL='%s' is not 0..4; using %d", l, vgpu_log_level);
    }

    uint64_t global = 0;
    int global_state = env_size("CUDA_DEVICE_MEMORY_LIMIT", &global);
    if (global_state == 1 && global == 0) LOG_INFO("CUDA_DEVICE_MEMORY_LIMIT=0: no memory limit");
    uint32_t sm_global = 0;
    int sm_global_state = env_percent("CUDA_DEVICE_SM_LIMIT", &sm_global);
    for (int i = 0; i < VGPU_MAX_DEVICES; i++) {
        char name[64];
        uint64_t b = 0;
        snprintf(name, sizeof(name), "CUDA_DEVICE_MEMORY_LIMIT_%d", i);
        int state = env_size(name, &b);
        if (state == 1 && b == 0) state = 0; /* an indexed 0 is "unset": the global value applies */
        int bad = state < 0 || (state == 0 && global_state < 0);
        vgpu_cfg.mem_limit[i] = bad ? 0 : state == 1 ? b : global;

        uint32_t p = 0;
        snprintf(name, sizeof(name), "CUDA_DEVICE_SM_LIMIT_%d", i);
        int sm_state = env_percent(name, &p);
        if (sm_state == 1 && p == 0) sm_state = 0;
        int sm_bad = sm_state < 0 || (sm_state == 0 && sm_global_state < 0);
        if (sm_state == 0) p = sm_global;
#ifdef VGPU_FAULT_UNLIMITED_THROTTLED /* deliberate fault build only (hami_stack/faults) */
        if (p == 0) p = 50; /* "no core limit" enforced as a default half share */
#endif
        vgpu_cfg.sm_limit[i] = sm_bad ? 1 : p >= 100 ? 0 : p; /* 0 and 100 both mean "whole device" */
        vgpu_cfg.mem_blocked[i] = (uint8_t)(bad || sm_bad);
    }

    vgpu_cfg.policy = VGPU_POLICY_DEFAULT;
    const char *pol = getenv("GPU_CORE_UTILIZATION_POLICY");
    if (pol && *pol) {
        if (!strcasecmp(pol, "force"))
            vgpu_cfg.policy = VGPU_POLICY_FORCE;
        else if (!strcasecmp(pol, "disable"))
            vgpu_cfg.policy = VGPU_POLICY_DISABLE;
        else if (strcasecmp(pol, "default"))
            LOG_ERROR("GPU_CORE_UTILIZATION_POLICY='%s' is not default|force|disable; using default", pol);
    }

    vgpu_cfg.priority = 1;
    const char *pr = getenv("CUDA_TASK_PRIORITY");
    if (pr) {
        if (parse_int(pr, -1000, 1000, &lv) == 0)
            vgpu_cfg.priority = (int32_t)lv;
        else
            LOG_ERROR("CUDA_TASK_PRIORITY='%s' is not an integer; using 1", pr);
    }

    const char *cache = getenv("CUDA_DEVICE_MEMORY_SHARED_CACHE");
    if (!cache || !*cache) cache = "/tmp/cudevshr.cache";
    if (strlen(cache) >= sizeof(vgpu_cfg.cache_path)) {
        LOG_ERROR("CUDA_DEVICE_MEMORY_SHARED_CACHE is too long; using /tmp/cudevshr.cache");
        cache = "/tmp/cudevshr.cache";
    }
    strcpy(vgpu_cfg.cache_path, cache);
    check_cache_path();

    for (int i = 0; i < VGPU_MAX_DEVICES; i++)
        if (vgpu_cfg.sm_limit[i] && vgpu_cfg.policy != VGPU_POLICY_DISABLE) vgpu_cfg.sm_any = 1;
}
