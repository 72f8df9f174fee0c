/*
 * libvnpu.so: this stack's in-container NPU memory limiter for HAMi's hami-core (soft split) Ascend
 * mode, loaded into every process of the container through /etc/ld.so.preload (the device plugin
 * mounts <hook dir>/ld.so.preload there and the library from <hook dir> at /hami-vnpu-core).
 *
 * It sits where HAMi's hami-vnpu-core sits: on the CANN runtime's memory calls, below AscendCL
 * (aclrtMalloc and the frameworks' allocators reach the device through them):
 *   rtMalloc       - refused with ACL_ERROR_RT_MEMORY_ALLOCATION when the container's usage plus the
 *                    request would pass NPU_MEM_QUOTA (MiB); otherwise passed on and charged;
 *   rtFree         - passed on; what the freed address was charged is returned to the quota;
 *   rtMemGetInfoEx - answers total = the quota and free = quota - usage - 128 MiB (hami-vnpu-core
 *                    keeps that much back as runtime overhead), not the card's numbers.
 * Without NPU_MEM_QUOTA (or 0) every call passes straight through, as upstream does.
 *
 * One quota for the whole container, as upstream keeps it: usage is shared by all its processes
 * through the file NPU_LOCAL_SHM_PATH (the device plugin points it into a per-container host
 * directory): a header with the quota and one slot per process (pid, bytes), mapped shared and
 * changed under flock. A slot whose process is gone (all processes of a container share one pid
 * namespace) is dropped, so memory of a crashed process returns to the quota.
 * Compute time slicing (NPU_PRIORITY) and the separate limiter daemon of hami-vnpu-core are not
 * reproduced (see testbed/DIFFERENCES.md).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))
#define MIB (1ULL << 20)
#define OVERHEAD_BYTES (128ULL * MIB)
#define MAX_PROCS 128
#define REGION_MAGIC 0x564e5055u /* "VNPU" */
#define REGION_VERSION 1u

/* the runtime's error numbers this library answers with (see the emulated runtime's header) */
#define RT_OK 0
#define RT_ERROR_PARAM_INVALID 107000
#define RT_ERROR_MEMORY_ALLOCATION 207001
#define RT_ERROR_INTERNAL 507899

typedef int32_t (*malloc_fn)(void **, uint64_t, uint32_t, uint16_t);
typedef int32_t (*free_fn)(void *);
typedef int32_t (*meminfo_fn)(uint32_t, size_t *, size_t *);

struct proc_slot {
    int32_t pid;
    uint32_t pad;
    uint64_t used;
};

struct region {
    uint32_t magic, version;
    uint64_t quota;
    struct proc_slot procs[MAX_PROCS];
};

struct tracked {
    uint64_t addr, size;
    struct tracked *next;
};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_state = -1; /* -1 not read; 0 no limit; 1 limited */
static uint64_t g_quota;
static int g_fd = -1;
static struct region *g_region;
static struct region g_private; /* no shared file: this process alone */
static struct tracked *g_tracked;

/* The runtime's own function. RTLD_NEXT misses a runtime an application dlopen()ed with RTLD_LOCAL
 * (Python's ctypes does), so then ask the loaded libruntime.so itself. */
static void *next_symbol(const char *name) {
    void *f = dlsym(RTLD_NEXT, name);
    if (f) return f;
    void *h = dlopen("libruntime.so", RTLD_NOW | RTLD_NOLOAD);
    if (!h) h = dlopen("libruntime.so", RTLD_NOW | RTLD_LOCAL);
    return h ? dlsym(h, name) : NULL;
}

static int pid_alive(int32_t pid) {
    return pid > 0 && (kill(pid, 0) == 0 || errno != ESRCH);
}

static int map_region(const char *path) {
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0) return -1;
    if (flock(fd, LOCK_EX) != 0) {
        close(fd);
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || (st.st_size < (off_t)sizeof(struct region) &&
                                ftruncate(fd, sizeof(struct region)) != 0)) {
        flock(fd, LOCK_UN);
        close(fd);
        return -1;
    }
    void *p = mmap(NULL, sizeof(struct region), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        flock(fd, LOCK_UN);
        close(fd);
        return -1;
    }
    struct region *r = p;
    if (r->magic != REGION_MAGIC || r->version != REGION_VERSION) {
        memset(r, 0, sizeof *r);
        r->magic = REGION_MAGIC;
        r->version = REGION_VERSION;
    }
    /* Every process of the container is given the same NPU_MEM_QUOTA, but a process can start a
     * child with another value: the shared quota only ever goes down, so no process of the
     * container raises it for the others (or for itself). */
    if (!r->quota || g_quota < r->quota) r->quota = g_quota;
    g_quota = r->quota;
    flock(fd, LOCK_UN);
    g_fd = fd;
    g_region = r;
    return 0;
}

/* called with g_lock held */
static int limited(void) {
    if (g_state >= 0) return g_state;
    const char *q = getenv("NPU_MEM_QUOTA");
    char *end = NULL;
    unsigned long long mib = q && *q ? strtoull(q, &end, 10) : 0;
    if (!q || !*q || (end && *end) || mib == 0) return g_state = 0;
    g_quota = mib * MIB;
    const char *path = getenv("NPU_LOCAL_SHM_PATH");
    if (!path || !*path || map_region(path) != 0) {
        if (path && *path) fprintf(stderr, "libvnpu: cannot share usage through %s: %s\n", path, strerror(errno));
        memset(&g_private, 0, sizeof g_private);
        g_private.quota = g_quota;
        g_region = &g_private;
    }
    return g_state = 1;
}

static void region_lock(void) {
    if (g_fd >= 0) flock(g_fd, LOCK_EX);
}

static void region_unlock(void) {
    if (g_fd >= 0) flock(g_fd, LOCK_UN);
}

/* usage of the live processes; drops dead ones. Under region_lock. */
static uint64_t region_used(void) {
    uint64_t sum = 0;
    for (int i = 0; i < MAX_PROCS; i++) {
        struct proc_slot *s = &g_region->procs[i];
        if (!s->pid) continue;
        if (s->pid != getpid() && !pid_alive(s->pid)) {
            memset(s, 0, sizeof *s);
            continue;
        }
        sum += s->used;
    }
    return sum;
}

static struct proc_slot *my_slot(int create) {
    struct proc_slot *free_slot = NULL;
    for (int i = 0; i < MAX_PROCS; i++) {
        struct proc_slot *s = &g_region->procs[i];
        if (s->pid == getpid()) return s;
        if (!s->pid && !free_slot) free_slot = s;
    }
    if (create && free_slot) {
        free_slot->pid = getpid();
        free_slot->used = 0;
    }
    return create ? free_slot : NULL;
}

static void uncharge(uint64_t size) {
    region_lock();
    struct proc_slot *s = my_slot(0);
    if (s) s->used = s->used >= size ? s->used - size : 0;
    region_unlock();
}

/* A forked child shares the parent's open file description, and so its flock: it must map the usage
 * file anew (and charges its own slot; the parent's allocations stay the parent's). */
static void child_after_fork(void) {
    if (g_region && g_region != &g_private) munmap(g_region, sizeof(struct region));
    if (g_fd >= 0) close(g_fd);
    g_fd = -1;
    g_region = NULL;
    g_state = -1;
    g_tracked = NULL; /* the parent's list: not freed here, the parent owns those blocks */
    pthread_mutex_init(&g_lock, NULL);
}

__attribute__((constructor)) static void register_fork_handler(void) {
    pthread_atfork(NULL, NULL, child_after_fork);
}

EXPORT int32_t rtMalloc(void **devPtr, uint64_t size, uint32_t type, uint16_t moduleId) {
    malloc_fn real = (malloc_fn)next_symbol("rtMalloc");
    if (!real) return RT_ERROR_INTERNAL;
    pthread_mutex_lock(&g_lock);
    int on = limited();
    pthread_mutex_unlock(&g_lock);
    if (!on || !devPtr || size == 0) return real(devPtr, size, type, moduleId);
    struct tracked *t = malloc(sizeof *t);
    if (!t) return RT_ERROR_INTERNAL;
    region_lock();
    uint64_t used = region_used();
    /* not used + size <= quota: a size near 2^64 would wrap the sum below the quota */
    struct proc_slot *s = used <= g_region->quota && size <= g_region->quota - used ? my_slot(1) : NULL;
    if (s) s->used += size; /* reserved before the call, so a concurrent process sees it */
    region_unlock();
    if (!s) {
        free(t);
        return RT_ERROR_MEMORY_ALLOCATION;
    }
    int32_t rc = real(devPtr, size, type, moduleId);
    if (rc != RT_OK) {
        uncharge(size);
        free(t);
        return rc;
    }
    pthread_mutex_lock(&g_lock);
    t->addr = (uint64_t)(uintptr_t)*devPtr;
    t->size = size;
    t->next = g_tracked;
    g_tracked = t;
    pthread_mutex_unlock(&g_lock);
    return RT_OK;
}

EXPORT int32_t rtFree(void *devPtr) {
    free_fn real = (free_fn)next_symbol("rtFree");
    if (!real) return RT_ERROR_INTERNAL;
    int32_t rc = real(devPtr);
    if (rc != RT_OK) return rc;
    pthread_mutex_lock(&g_lock);
    struct tracked **pp = &g_tracked;
    while (*pp && (*pp)->addr != (uint64_t)(uintptr_t)devPtr) pp = &(*pp)->next;
    struct tracked *t = *pp;
    if (t) *pp = t->next;
    pthread_mutex_unlock(&g_lock);
    if (t) {
        uncharge(t->size);
        free(t);
    }
    return rc;
}

EXPORT int32_t rtMemGetInfoEx(uint32_t memInfoType, size_t *free_bytes, size_t *total) {
    meminfo_fn real = (meminfo_fn)next_symbol("rtMemGetInfoEx");
    pthread_mutex_lock(&g_lock);
    int on = limited();
    pthread_mutex_unlock(&g_lock);
    if (!on) return real ? real(memInfoType, free_bytes, total) : RT_ERROR_INTERNAL;
    if (!free_bytes || !total) return RT_ERROR_PARAM_INVALID;
    region_lock();
    uint64_t used = region_used();
    region_unlock();
    uint64_t left = used < g_quota ? g_quota - used : 0;
    *total = (size_t)g_quota;
    *free_bytes = (size_t)(left > OVERHEAD_BYTES ? left - OVERHEAD_BYTES : 0);
    return RT_OK;
}
