/* Logging and the strict parsing of the enforcement environment. */
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

/* A set but unparseable value is logged once and ignored (no change to that limit): returns -1 so
   the caller can fail closed when nothing else defines the limit. */
static int env_size(const char *name, uint64_t *out) {
    const char *v = getenv(name);
    if (!v) return 0;
    uint64_t b;
    if (vgpu_parse_size(v, &b) != 0) {
        LOG_ERROR("%s='%s' is not a size (digits with an optional k/m/g suffix); ignored", name, v);
        return -1;
    }
    if (b == 0) LOG_WARN("%s=%s: 0 means no memory limit", name, v);
    *out = b;
    return 1;
}

static int env_percent(const char *name, uint32_t *out) {
    const char *v = getenv(name);
    if (!v) return 0;
    uint32_t p;
    if (vgpu_parse_percent(v, &p) != 0) {
        LOG_ERROR("%s='%s' is not a percentage 0..100; ignored", name, v);
        return 0;
    }
    *out = p;
    return 1;
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
    uint32_t sm_global = 0;
    env_percent("CUDA_DEVICE_SM_LIMIT", &sm_global);
    for (int i = 0; i < VGPU_MAX_DEVICES; i++) {
        char name[64];
        uint64_t b = global;
        snprintf(name, sizeof(name), "CUDA_DEVICE_MEMORY_LIMIT_%d", i);
        int state = env_size(name, &b);
        vgpu_cfg.mem_limit[i] = b;
        /* Garbage must never leave a container unlimited: with no valid value to fall back on, the
           device refuses allocations instead (each refusal logs why). */
        if ((state < 0 && global_state != 1) || (state == 0 && global_state < 0)) vgpu_cfg.mem_blocked[i] = 1;
        uint32_t p = sm_global;
        snprintf(name, sizeof(name), "CUDA_DEVICE_SM_LIMIT_%d", i);
        env_percent(name, &p);
        vgpu_cfg.sm_limit[i] = p >= 100 ? 0 : p; /* 0 and 100 both mean "whole device" */
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

    for (int i = 0; i < VGPU_MAX_DEVICES; i++)
        if (vgpu_cfg.sm_limit[i] && vgpu_cfg.policy != VGPU_POLICY_DISABLE) vgpu_cfg.sm_any = 1;
}
