#define _GNU_SOURCE
#include "emu_common.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

_Static_assert(sizeof(pthread_mutex_t) <= HAMI_EMU_MUTEX_BYTES, "mutex slot too small");

int64_t hami_emu_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int hami_emu_copy_str(char *dst, size_t len, const char *src) {
    size_t n = strlen(src);
    if (n + 1 > len) return -1;
    memcpy(dst, src, n + 1);
    return 0;
}

static char *trim(char *s) {
    while (*s && isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = '\0';
    return s;
}

static int parse_u64(const char *v, uint64_t *out) {
    char *end = NULL;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 0);
    if (errno || end == v || *end) return -1;
    *out = x;
    return 0;
}

static int parse_int(const char *v, int *out) {
    char *end = NULL;
    errno = 0;
    long x = strtol(v, &end, 0);
    if (errno || end == v || *end) return -1;
    *out = (int)x;
    return 0;
}

static int parse_uint(const char *v, unsigned *out) {
    uint64_t x;
    if (parse_u64(v, &x) || x > 0xffffffffULL) return -1;
    *out = (unsigned)x;
    return 0;
}

/* "00000000:07:00.0" (or the short 4-digit domain form) into its numeric parts */
static int parse_bus_id(const char *s, unsigned *dom, unsigned *bus, unsigned *dev, unsigned *fn) {
    char tail;
    if (sscanf(s, "%x:%x:%x.%x%c", dom, bus, dev, fn, &tail) == 4) return 0;
    *dom = 0;
    if (sscanf(s, "%x:%x.%x%c", bus, dev, fn, &tail) == 3) return 0;
    return -1;
}

static void gpu_defaults(hami_emu_gpu_info_t *g, int idx) {
    memset(g, 0, sizeof(*g));
    g->phys_index = idx;
    g->numa_node = -1;
    g->pci_switch = -1;
    g->max_sm_clock_mhz = 1410;
    g->idle_sm_clock_mhz = 210;
    g->max_mem_clock_mhz = 1593;
    g->power_limit_mw = 300000;
    g->idle_power_mw = 60000;
    g->idle_temp_c = 32;
    g->mem_bus_width = 5120;
    g->l2_cache_bytes = 40 * 1024 * 1024;
    g->max_threads_per_sm = 2048;
}

/* returns 0, or -1 for an unknown key or bad value */
static int set_gpu_key(hami_emu_gpu_info_t *g, const char *k, const char *v, unsigned *seen) {
    int rc = 0;
    if (!strcmp(k, "index")) {
        int idx;
        rc = parse_int(v, &idx);
        if (!rc && idx != g->phys_index) rc = -1;
    } else if (!strcmp(k, "uuid")) {
        rc = hami_emu_copy_str(g->uuid, sizeof(g->uuid), v);
        *seen |= 1;
    } else if (!strcmp(k, "name")) {
        rc = hami_emu_copy_str(g->name, sizeof(g->name), v);
        *seen |= 2;
    } else if (!strcmp(k, "memory_bytes")) {
        rc = parse_u64(v, &g->memory_bytes);
        *seen |= 4;
    } else if (!strcmp(k, "pci_bus_id")) {
        rc = hami_emu_copy_str(g->pci_bus_id, sizeof(g->pci_bus_id), v);
        if (!rc) rc = parse_bus_id(v, &g->domain, &g->bus, &g->device, &g->function);
        *seen |= 8;
    } else if (!strcmp(k, "serial")) {
        rc = hami_emu_copy_str(g->serial, sizeof(g->serial), v);
    } else if (!strcmp(k, "reserved_bytes")) {
        rc = parse_u64(v, &g->reserved_bytes);
    } else if (!strcmp(k, "pci_device_id")) {
        rc = parse_uint(v, &g->pci_device_id);
    } else if (!strcmp(k, "pci_subsystem_id")) {
        rc = parse_uint(v, &g->pci_subsystem_id);
    } else if (!strcmp(k, "numa_node")) {
        rc = parse_int(v, &g->numa_node);
    } else if (!strcmp(k, "compute_capability")) {
        char tail;
        rc = sscanf(v, "%d.%d%c", &g->cc_major, &g->cc_minor, &tail) == 2 ? 0 : -1;
    } else if (!strcmp(k, "sm_count")) {
        rc = parse_int(v, &g->sm_count);
    } else if (!strcmp(k, "minor_number")) {
        rc = parse_uint(v, &g->minor_number);
    } else if (!strcmp(k, "mig_mode")) {
        rc = parse_uint(v, &g->mig_mode);
    } else if (!strcmp(k, "mig_capable")) {
        rc = parse_uint(v, &g->mig_capable);
    } else if (!strcmp(k, "pci_switch")) {
        rc = parse_int(v, &g->pci_switch);
    } else if (!strcmp(k, "nvlink_count")) {
        rc = parse_uint(v, &g->nvlink_count);
    } else if (!strcmp(k, "cpu_affinity")) {
        rc = hami_emu_copy_str(g->cpu_affinity, sizeof(g->cpu_affinity), v);
    } else if (!strcmp(k, "max_sm_clock_mhz")) {
        rc = parse_uint(v, &g->max_sm_clock_mhz);
    } else if (!strcmp(k, "idle_sm_clock_mhz")) {
        rc = parse_uint(v, &g->idle_sm_clock_mhz);
    } else if (!strcmp(k, "max_mem_clock_mhz")) {
        rc = parse_uint(v, &g->max_mem_clock_mhz);
    } else if (!strcmp(k, "power_limit_mw")) {
        rc = parse_uint(v, &g->power_limit_mw);
    } else if (!strcmp(k, "idle_power_mw")) {
        rc = parse_uint(v, &g->idle_power_mw);
    } else if (!strcmp(k, "idle_temp_c")) {
        rc = parse_uint(v, &g->idle_temp_c);
    } else if (!strcmp(k, "mem_bus_width")) {
        rc = parse_uint(v, &g->mem_bus_width);
    } else if (!strcmp(k, "l2_cache_bytes")) {
        rc = parse_uint(v, &g->l2_cache_bytes);
    } else if (!strcmp(k, "max_threads_per_sm")) {
        rc = parse_uint(v, &g->max_threads_per_sm);
    } else if (!strcmp(k, "context_bytes")) {
        rc = parse_u64(v, &g->context_bytes);
    }
    /* unknown keys are tolerated so newer writers stay readable by older libraries */
    return rc;
}

static int parse_conf(hami_emu_node_t *node, FILE *f) {
    char line[512];
    int current = -1, sections = 0, declared = -1;
    unsigned seen[HAMI_EMU_MAX_GPUS] = {0};
    while (fgets(line, sizeof(line), f)) {
        if (!strchr(line, '\n') && !feof(f)) return -1; /* overlong line */
        char *s = trim(line);
        if (!*s || *s == '#') continue;
        if (*s == '[') {
            int idx;
            char tail;
            if (sscanf(s, "[gpu.%d]%c", &idx, &tail) != 1) return -1;
            if (idx != sections || idx >= HAMI_EMU_MAX_GPUS) return -1; /* sections are dense and ordered */
            current = idx;
            sections++;
            gpu_defaults(&node->gpus[idx], idx);
            continue;
        }
        char *eq = strchr(s, '=');
        if (!eq) return -1;
        *eq = '\0';
        char *k = trim(s), *v = trim(eq + 1);
        if (current < 0) {
            int rc = 0;
            if (!strcmp(k, "driver_version"))
                rc = hami_emu_copy_str(node->driver_version, sizeof(node->driver_version), v);
            else if (!strcmp(k, "nvml_version"))
                rc = hami_emu_copy_str(node->nvml_version, sizeof(node->nvml_version), v);
            else if (!strcmp(k, "cuda_driver_version"))
                rc = parse_int(v, &node->cuda_driver_version);
            else if (!strcmp(k, "gpu_count"))
                rc = parse_int(v, &declared);
            if (rc) return -1;
        } else if (set_gpu_key(&node->gpus[current], k, v, &seen[current])) {
            return -1;
        }
    }
    if (declared != sections || !node->driver_version[0] || node->cuda_driver_version <= 0) return -1;
    for (int i = 0; i < sections; i++)
        if (seen[i] != 15) return -1; /* uuid, name, memory, pci bus id are mandatory */
    node->gpu_count = sections;
    if (!node->nvml_version[0]) {
        /* real NVML versions read "<cuda major>.<driver version>" */
        size_t n = strlen(node->driver_version);
        if (n + 4 > sizeof(node->nvml_version)) return -1;
        memcpy(node->nvml_version, "12.", 3);
        memcpy(node->nvml_version + 3, node->driver_version, n + 1);
    }
    return 0;
}

static int find_uuid(const hami_emu_node_t *node, const char *s, size_t n, int prefix_ok) {
    int found = -1;
    for (int i = 0; i < node->gpu_count; i++) {
        const char *u = node->gpus[i].uuid;
        size_t ul = strlen(u);
        if (ul == n && !strncasecmp(u, s, n)) return i;
        /* CUDA_VISIBLE_DEVICES accepts an unambiguous UUID prefix */
        if (prefix_ok && n < ul && n > 4 && !strncasecmp(u, s, n)) {
            if (found >= 0) return -1;
            found = i;
        }
    }
    return found;
}

static int contains(const int *list, int n, int v) {
    for (int i = 0; i < n; i++)
        if (list[i] == v) return 1;
    return 0;
}

/* NVIDIA_VISIBLE_DEVICES as the container toolkit reads it. Unset means "no device request": none,
 * unless HAMI_EMU_GPU_ALL=1 marks a host-level process (node agent, device plugin without the var). */
static void apply_nvidia_visible(hami_emu_node_t *node) {
    const char *env = getenv("NVIDIA_VISIBLE_DEVICES");
    node->visible_count = 0;
    if (!env) {
        const char *all = getenv("HAMI_EMU_GPU_ALL");
        if (all && !strcmp(all, "1"))
            for (int i = 0; i < node->gpu_count; i++) node->visible[node->visible_count++] = i;
        return;
    }
    char buf[1024];
    if (hami_emu_copy_str(buf, sizeof(buf), env)) return;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *t = trim(tok);
        if (!*t) continue;
        if (!strcmp(t, "all")) {
            node->visible_count = 0;
            for (int i = 0; i < node->gpu_count; i++) node->visible[node->visible_count++] = i;
            return;
        }
        if (!strcmp(t, "none") || !strcmp(t, "void")) {
            node->visible_count = 0;
            return;
        }
        int idx = -1;
        if (isdigit((unsigned char)t[0])) {
            int v;
            if (!parse_int(t, &v) && v >= 0 && v < node->gpu_count) idx = v;
        } else {
            idx = find_uuid(node, t, strlen(t), 0);
        }
        /* unknown names are skipped: the real toolkit refuses to start such a container, which the
         * node agent checks before it ever gets here */
        if (idx >= 0 && !contains(node->visible, node->visible_count, idx))
            node->visible[node->visible_count++] = idx;
    }
}

void hami_emu_apply_cuda_visible(hami_emu_node_t *node) {
    const char *env = getenv("CUDA_VISIBLE_DEVICES");
    if (!env) return;
    char buf[1024];
    int out[HAMI_EMU_MAX_GPUS], n = 0;
    if (hami_emu_copy_str(buf, sizeof(buf), env)) return;
    char *save = NULL;
    /* like the real driver, parsing stops at the first entry that names no device */
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *t = trim(tok);
        int phys = -1;
        if (isdigit((unsigned char)t[0])) {
            int v;
            if (!parse_int(t, &v) && v >= 0 && v < node->visible_count) phys = node->visible[v];
        } else if (*t) {
            int u = find_uuid(node, t, strlen(t), 1);
            if (u >= 0 && contains(node->visible, node->visible_count, u)) phys = u;
        }
        if (phys < 0 || contains(out, n, phys)) break;
        out[n++] = phys;
    }
    memcpy(node->visible, out, sizeof(int) * (size_t)n);
    node->visible_count = n;
}

static int attach_shared(hami_emu_node_t *node, const char *dir) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/shared.bin", dir);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) return HAMI_EMU_ERR_CORRUPT;
    struct stat st;
    if (fstat(fd, &st)) {
        close(fd);
        return HAMI_EMU_ERR_CORRUPT;
    }
    if ((size_t)st.st_size < sizeof(hami_emu_shared_t)) {
        /* a short file with our magic but another layout version was written by another build */
        struct {
            uint64_t magic;
            uint32_t version;
        } head = {0, 0};
        ssize_t got = pread(fd, &head, sizeof(head), 0);
        close(fd);
        int other = got == (ssize_t)sizeof(head) && head.magic == HAMI_EMU_MAGIC &&
                    head.version != HAMI_EMU_LAYOUT_VERSION;
        return other ? HAMI_EMU_ERR_VERSION : HAMI_EMU_ERR_CORRUPT;
    }
    void *p = mmap(NULL, sizeof(hami_emu_shared_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return HAMI_EMU_ERR_CORRUPT;
    hami_emu_shared_t *shm = p;
    if (shm->magic != HAMI_EMU_MAGIC || shm->layout_version != HAMI_EMU_LAYOUT_VERSION ||
        shm->header_size != sizeof(hami_emu_shared_t) || shm->gpu_struct_size != sizeof(hami_emu_gpu_t)) {
        munmap(p, sizeof(hami_emu_shared_t));
        return HAMI_EMU_ERR_VERSION;
    }
    if ((int)shm->gpu_count != node->gpu_count) {
        munmap(p, sizeof(hami_emu_shared_t));
        return HAMI_EMU_ERR_CORRUPT;
    }
    node->shm = shm;
    return HAMI_EMU_OK;
}

int hami_emu_load(hami_emu_node_t *node) {
    memset(node, 0, sizeof(*node));
    const char *dir = getenv("HAMI_EMU_GPU_STATE_DIR");
    if (!dir || !*dir) return HAMI_EMU_ERR_MISSING;
    char path[4096];
    snprintf(path, sizeof(path), "%s/gpus.conf", dir);
    FILE *f = fopen(path, "re");
    if (!f) return errno == ENOENT || errno == ENOTDIR ? HAMI_EMU_ERR_MISSING : HAMI_EMU_ERR_CORRUPT;
    int rc = parse_conf(node, f);
    fclose(f);
    if (rc) return HAMI_EMU_ERR_CORRUPT;
    rc = attach_shared(node, dir);
    if (rc) return rc;
    apply_nvidia_visible(node);
    return HAMI_EMU_OK;
}

void hami_emu_unload(hami_emu_node_t *node) {
    if (node->shm) munmap(node->shm, sizeof(hami_emu_shared_t));
    node->shm = NULL;
}

/* The region lock is a robust process-shared mutex: if a holder dies the next locker repairs it. */
void hami_emu_lock(hami_emu_shared_t *shm) {
    pthread_mutex_t *m = (pthread_mutex_t *)(void *)shm->lock.bytes;
    int rc = pthread_mutex_lock(m);
    if (rc == EOWNERDEAD) pthread_mutex_consistent(m);
}

void hami_emu_unlock(hami_emu_shared_t *shm) {
    shm->generation++;
    pthread_mutex_unlock((pthread_mutex_t *)(void *)shm->lock.bytes);
}

static int pid_alive(int32_t pid) {
    return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM);
}

void hami_emu_sweep_dead(hami_emu_gpu_t *gpu) {
    for (int i = 0; i < HAMI_EMU_MAX_PROCS; i++) {
        hami_emu_proc_t *p = &gpu->procs[i];
        if (p->pid && !pid_alive(p->pid)) {
            gpu->used_bytes = gpu->used_bytes >= p->used_bytes ? gpu->used_bytes - p->used_bytes : 0;
            memset(p, 0, sizeof(*p));
        }
    }
}

static hami_emu_proc_t *proc_slot(hami_emu_gpu_t *gpu, int32_t pid, int create) {
    hami_emu_proc_t *free_slot = NULL;
    for (int i = 0; i < HAMI_EMU_MAX_PROCS; i++) {
        if (gpu->procs[i].pid == pid) return &gpu->procs[i];
        if (!gpu->procs[i].pid && !free_slot) free_slot = &gpu->procs[i];
    }
    if (!create || !free_slot) return NULL;
    free_slot->pid = pid;
    free_slot->contexts = 0;
    free_slot->used_bytes = 0;
    return free_slot;
}

static void maybe_free_slot(hami_emu_proc_t *p) {
    if (p->contexts == 0 && p->used_bytes == 0) memset(p, 0, sizeof(*p));
}

int hami_emu_mem_reserve(hami_emu_gpu_t *gpu, uint64_t total_bytes, int32_t pid, uint64_t bytes) {
    hami_emu_sweep_dead(gpu);
    if (bytes > total_bytes || gpu->used_bytes > total_bytes - bytes) return -1;
    hami_emu_proc_t *p = proc_slot(gpu, pid, 1);
    if (!p) return -2;
    p->used_bytes += bytes;
    gpu->used_bytes += bytes;
    return 0;
}

void hami_emu_mem_release(hami_emu_gpu_t *gpu, int32_t pid, uint64_t bytes) {
    hami_emu_proc_t *p = proc_slot(gpu, pid, 0);
    if (!p) return;
    if (bytes > p->used_bytes) bytes = p->used_bytes;
    p->used_bytes -= bytes;
    gpu->used_bytes = gpu->used_bytes >= bytes ? gpu->used_bytes - bytes : 0;
    maybe_free_slot(p);
}

void hami_emu_ctx_attach(hami_emu_gpu_t *gpu, int32_t pid, int delta) {
    hami_emu_sweep_dead(gpu);
    hami_emu_proc_t *p = proc_slot(gpu, pid, delta > 0);
    if (!p) return;
    if (delta < 0 && p->contexts < (uint32_t)-delta)
        p->contexts = 0;
    else
        p->contexts = (uint32_t)((int64_t)p->contexts + delta);
    maybe_free_slot(p);
}

void hami_emu_add_interval(hami_emu_gpu_t *gpu, int64_t start, int64_t end, int32_t pid) {
    gpu->kernel_launches++;
    /* a kernel queued right behind (or overlapping) one of the same process extends that interval:
     * the busy time is the same and the ring holds more of the window */
    for (uint32_t k = 1; k <= 4; k++) {
        hami_emu_interval_t *prev = &gpu->busy[(gpu->interval_next + HAMI_EMU_MAX_INTERVALS - k) % HAMI_EMU_MAX_INTERVALS];
        if (prev->pid == pid && prev->end_ns > prev->start_ns && start >= prev->start_ns && start <= prev->end_ns) {
            if (end > prev->end_ns) prev->end_ns = end;
            return;
        }
    }
    hami_emu_interval_t *iv = &gpu->busy[gpu->interval_next % HAMI_EMU_MAX_INTERVALS];
    iv->start_ns = start;
    iv->end_ns = end;
    iv->pid = pid;
    gpu->interval_next = (gpu->interval_next + 1) % HAMI_EMU_MAX_INTERVALS;
}

static int cmp_iv(const void *a, const void *b) {
    const int64_t x = ((const int64_t *)a)[0], y = ((const int64_t *)b)[0];
    return (x > y) - (x < y);
}

unsigned hami_emu_utilization(const hami_emu_gpu_t *gpu, int64_t now, int64_t window_ns, int32_t pid) {
    /* clip every interval to the window and measure the union, like "percent of time a kernel ran";
     * every recorded interval counts (no cap on how many fall in the window) */
    static const size_t cap = HAMI_EMU_MAX_INTERVALS;
    int64_t(*iv)[2] = malloc(cap * sizeof(*iv)); /* too large for a caller's stack */
    if (!iv) return 0;
    size_t n = 0;
    const int64_t lo = now - window_ns;
    for (size_t i = 0; i < cap; i++) {
        int64_t s = gpu->busy[i].start_ns, e = gpu->busy[i].end_ns;
        if (e <= s || (pid && gpu->busy[i].pid != pid)) continue;
        if (s < lo) s = lo;
        if (e > now) e = now;
        if (e <= s) continue;
        iv[n][0] = s;
        iv[n][1] = e;
        n++;
    }
    qsort(iv, n, sizeof(iv[0]), cmp_iv);
    int64_t covered = 0, cs = 0, ce = 0;
    for (size_t i = 0; i < n; i++) {
        if (i == 0 || iv[i][0] > ce) {
            covered += ce - cs;
            cs = iv[i][0];
            ce = iv[i][1];
        } else if (iv[i][1] > ce) {
            ce = iv[i][1];
        }
    }
    covered += ce - cs;
    free(iv);
    unsigned pct = (unsigned)((covered * 100 + window_ns / 2) / window_ns);
    return pct > 100 ? 100 : pct;
}

static int take_fault(hami_emu_shared_t *shm, int phys, int nvml) {
    hami_emu_gpu_t *gpu = &shm->gpus[phys];
    /* unlocked peek: the common case (no fault armed) must not serialise every call */
    if (!(nvml ? gpu->nvml_fail_count : gpu->cuda_fail_count)) return 0;
    int code = 0;
    hami_emu_lock(shm);
    if (nvml && gpu->nvml_fail_count) {
        gpu->nvml_fail_count--;
        code = gpu->nvml_fail_code;
    } else if (!nvml && gpu->cuda_fail_count) {
        gpu->cuda_fail_count--;
        code = gpu->cuda_fail_code;
    }
    hami_emu_unlock(shm);
    return code;
}

int hami_emu_take_nvml_fault(hami_emu_shared_t *shm, int phys) { return take_fault(shm, phys, 1); }
int hami_emu_take_cuda_fault(hami_emu_shared_t *shm, int phys) { return take_fault(shm, phys, 0); }
