/*
 * The per-container shared region: creation/join, robust locking, per-process slots, dead-process
 * reclaim and the charge/uncharge primitives every allocation path goes through.
 *
 * Charging reserves under the lock *before* the driver allocates, so the container-wide sum can never
 * exceed the limit, whatever the interleaving of processes (no post-check race to lose).
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

vgpu_region_t *vgpu_region;
int vgpu_slot = -1;
int vgpu_region_private;

static pthread_mutex_t *region_mutex(void) { return (pthread_mutex_t *)(void *)vgpu_region->lock.bytes; }

_Static_assert(sizeof(pthread_mutex_t) <= VGPU_LOCK_BYTES, "mutex does not fit the region");

static void recompute_sums_locked(void) {
    for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
        uint64_t s = 0;
        for (int i = 0; i < VGPU_MAX_SLOTS; i++)
            if (vgpu_region->slots[i].pid) s += vgpu_region->slots[i].used[d];
        vgpu_region->used[d] = s;
    }
}

void vgpu_region_lock(void) {
    int rc = pthread_mutex_lock(region_mutex());
    if (rc == EOWNERDEAD) {
        /* the previous holder died inside the critical section: its half-done update is repaired
         * by recomputing the sums from the slots, and its own slot is reclaimed by the sweep */
        LOG_WARN("shared region lock owner died; recovering");
        recompute_sums_locked();
        vgpu_sweep_dead_locked();
        pthread_mutex_consistent(region_mutex());
    } else if (rc != 0) {
        LOG_ERROR("shared region lock failed (%s)", strerror(rc));
    }
}

void vgpu_region_unlock(void) { pthread_mutex_unlock(region_mutex()); }

static uint64_t proc_start_time(int pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
    if (!p) return 0;
    p += 2;
    if (*p == 'Z' || *p == 'X') return 0; /* a zombie holds no GPU memory any more */
    /* field 3 is the state; starttime is field 22 */
    for (int field = 3; field < 22 && p; field++) {
        p = strchr(p, ' ');
        if (p) p++;
    }
    return p ? strtoull(p, NULL, 10) : 0;
}

static int slot_alive(const vgpu_slot_t *s) {
    if (s->pid <= 0) return 0;
    if (kill(s->pid, 0) != 0 && errno == ESRCH) return 0;
    uint64_t st = proc_start_time(s->pid);
    if (st == 0) return 0;
    return s->start_time == 0 || st == s->start_time;
}

static void free_slot_locked(int i) {
    vgpu_slot_t *s = &vgpu_region->slots[i];
    for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
        uint64_t u = s->used[d];
        vgpu_region->used[d] = vgpu_region->used[d] >= u ? vgpu_region->used[d] - u : 0;
    }
    memset(s, 0, sizeof(*s));
    vgpu_region->generation++;
}

void vgpu_sweep_dead_locked(void) {
    if (vgpu_region_private) return;
    for (int i = 0; i < VGPU_MAX_SLOTS; i++) {
        vgpu_slot_t *s = &vgpu_region->slots[i];
        if (!s->pid || i == vgpu_slot) continue;
        if (!slot_alive(s)) {
            LOG_INFO("reclaiming slot of dead pid %d", s->pid);
            free_slot_locked(i);
        }
    }
}

static void init_region_fields(vgpu_region_t *r) {
    memset(r, 0, sizeof(*r));
    r->major = VGPU_REGION_MAJOR;
    r->minor = VGPU_REGION_MINOR;
    r->header_size = (uint32_t)sizeof(vgpu_region_t);
    r->slot_size = (uint32_t)sizeof(vgpu_slot_t);
    r->max_devices = VGPU_MAX_DEVICES;
    r->max_slots = VGPU_MAX_SLOTS;
    r->priority = vgpu_cfg.priority;
    r->policy = vgpu_cfg.policy;
    for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
        r->limit[d] = vgpu_cfg.mem_limit[d];
        r->sm_limit[d] = vgpu_cfg.sm_limit[d];
    }
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init((pthread_mutex_t *)(void *)r->lock.bytes, &a);
    pthread_mutexattr_destroy(&a);
    __atomic_store_n(&r->magic, VGPU_REGION_MAGIC, __ATOMIC_RELEASE);
}

static void use_private(const char *why) {
    LOG_ERROR("shared region %s unusable (%s); limits are enforced per process only, not across the "
              "container", vgpu_cfg.cache_path, why);
    void *p = mmap(NULL, sizeof(vgpu_region_t), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        static vgpu_region_t fallback; /* last resort: still enforce, from process memory */
        p = &fallback;
    }
    vgpu_region = p;
    vgpu_region_private = 1;
    init_region_fields(vgpu_region);
}

static int all_zero(const void *p, size_t n) {
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        if (c[i]) return 0;
    return 1;
}

/* Register this process. Called with the region lock held. */
static void register_slot_locked(void) {
    vgpu_sweep_dead_locked();
    int pid = (int)getpid();
    int live = 0, freeslot = -1;
    for (int i = 0; i < VGPU_MAX_SLOTS; i++) {
        vgpu_slot_t *s = &vgpu_region->slots[i];
        if (s->pid == pid) free_slot_locked(i); /* a previous life of this pid (crash loop) */
        if (s->pid) live++;
        else if (freeslot < 0) freeslot = i;
    }
    if (live == 0) {
        /* nobody else is attached: the file's limits are stale leftovers, this environment wins */
        for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
            vgpu_region->limit[d] = vgpu_cfg.mem_limit[d];
            vgpu_region->sm_limit[d] = vgpu_cfg.sm_limit[d];
            vgpu_region->used[d] = 0;
        }
        vgpu_region->priority = vgpu_cfg.priority;
        vgpu_region->policy = vgpu_cfg.policy;
    } else {
        for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
            uint64_t file = vgpu_region->limit[d], env = vgpu_cfg.mem_limit[d];
            if (file == env) continue;
            /* the stricter limit applies to everyone, so a mismatch can never widen a limit */
            uint64_t eff = !file ? env : !env ? file : (file < env ? file : env);
            LOG_ERROR("device %d: memory limit %llu in the environment differs from %llu in the shared region; "
                      "enforcing %llu", d, (unsigned long long)env, (unsigned long long)file,
                      (unsigned long long)eff);
            vgpu_region->limit[d] = eff;
            vgpu_cfg.mem_limit[d] = eff;
        }
    }
    if (freeslot < 0) {
        LOG_ERROR("shared region has no free process slot (%d in use)", VGPU_MAX_SLOTS);
        return;
    }
    vgpu_slot_t *s = &vgpu_region->slots[freeslot];
    memset(s, 0, sizeof(*s));
    s->pid = pid;
    s->start_time = proc_start_time(pid);
    s->status = VGPU_SLOT_RUNNING;
    s->priority = vgpu_cfg.priority;
    vgpu_slot = freeslot;
    vgpu_region->generation++;
}

static void on_exit_release(void) {
    if (!vgpu_region || vgpu_slot < 0) return;
    vgpu_region_lock();
    if (vgpu_slot >= 0 && vgpu_region->slots[vgpu_slot].pid == (int)getpid()) free_slot_locked(vgpu_slot);
    vgpu_slot = -1;
    vgpu_region_unlock();
}

/* Installed system-wide, a container has one region: another region file in the shim's directory
 * that a live process is registered in means this process named a second one, which would be a fresh
 * budget. Returns the other file's name, or NULL. */
static const char *live_sibling_region(char *out, size_t n) {
    char dir[PATH_MAX], self[PATH_MAX];
    const char *slash = strrchr(vgpu_cfg.cache_path, '/');
    if (!slash || (size_t)(slash - vgpu_cfg.cache_path) >= sizeof(dir)) return NULL;
    memcpy(dir, vgpu_cfg.cache_path, (size_t)(slash - vgpu_cfg.cache_path));
    dir[slash - vgpu_cfg.cache_path] = 0;
    if (!dir[0]) strcpy(dir, "/");
    if (!realpath(vgpu_cfg.cache_path, self)) self[0] = 0; /* not created yet: nothing can equal it */
    DIR *d = opendir(dir);
    if (!d) return NULL;
    const char *found = NULL;
    struct dirent *e;
    while (!found && (e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 7 || strcmp(e->d_name + len - 6, ".cache")) continue;
        char path[PATH_MAX], real[PATH_MAX];
        if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, e->d_name) >= sizeof(path)) continue;
        if (!realpath(path, real) || !strcmp(real, self)) continue;
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0) continue;
        struct stat st;
        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size >= (off_t)sizeof(vgpu_region_t)) {
            const vgpu_region_t *r = mmap(NULL, sizeof(vgpu_region_t), PROT_READ, MAP_SHARED, fd, 0);
            if (r != MAP_FAILED) {
                if (r->magic == VGPU_REGION_MAGIC && r->major == VGPU_REGION_MAJOR)
                    for (int i = 0; i < VGPU_MAX_SLOTS && !found; i++)
                        if (r->slots[i].pid && r->slots[i].pid != (int)getpid() && slot_alive(&r->slots[i])) {
                            snprintf(out, n, "%s", path);
                            found = out;
                        }
                munmap((void *)r, sizeof(vgpu_region_t));
            }
        }
        close(fd);
    }
    closedir(d);
    return found;
}

void vgpu_region_open(void) {
    const char *path = vgpu_cfg.cache_path;
    char other[PATH_MAX];
    if (vgpu_cfg.cache_enforced && !vgpu_cfg.cache_refused && live_sibling_region(other, sizeof(other))) {
        LOG_ERROR("CUDA_DEVICE_MEMORY_SHARED_CACHE='%s' is not the container's region: %s is in use by a "
                  "live process; every allocation is refused (fail closed: a second region would be a fresh "
                  "budget)", path, other);
        vgpu_cfg.cache_refused = 1;
        for (int i = 0; i < VGPU_MAX_DEVICES; i++) vgpu_cfg.mem_blocked[i] = 1;
    }
    if (vgpu_cfg.cache_refused) { /* never touch (or create) the file the process named */
        use_private("not in the shim's directory");
        vgpu_region_lock();
        register_slot_locked();
        vgpu_region_unlock();
        return;
    }
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        mode_t old = umask(0);
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
        umask(old);
    }
    if (fd < 0) {
        char why[128];
        snprintf(why, sizeof(why), "open: %s", strerror(errno));
        use_private(why);
    } else {
        /* creation and the version check happen under an exclusive file lock, so exactly one
         * process initialises and nobody maps a half-written header */
        flock(fd, LOCK_EX);
        struct stat st;
        const char *bad = NULL;
        if (fstat(fd, &st) != 0) bad = "fstat failed";
        uint64_t hdr[3] = {0, 0, 0};
        if (!bad && st.st_size > 0 && pread(fd, hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr) &&
            st.st_size >= (off_t)sizeof(hdr))
            bad = "unreadable header";
        /* Decided under the lock from the file itself: two processes can both "create" the file
         * (O_CREAT without O_EXCL), and the second must not re-initialise a region, and its mutex,
         * that the first is already using. */
        int fresh = st.st_size == 0;
        if (!bad && !fresh) {
            if (hdr[0] == VGPU_REGION_MAGIC) {
                uint32_t major = (uint32_t)(hdr[1] & 0xffffffffu);
                if (major != VGPU_REGION_MAJOR)
                    bad = "written by an incompatible layout version (delete the file to reset it)";
                else if (st.st_size < (off_t)sizeof(vgpu_region_t))
                    bad = "shorter than the layout it claims";
            } else if (st.st_size < (off_t)sizeof(vgpu_region_t)) {
                char probe[4096];
                ssize_t n = pread(fd, probe, sizeof(probe), 0);
                if (n > 0 && !all_zero(probe, (size_t)n))
                    bad = "not a HAMi vGPU region of this layout (delete the file to reset it)";
                else
                    fresh = 1;
            } else {
                char probe[4096];
                ssize_t n = pread(fd, probe, sizeof(probe), 0);
                if (n > 0 && !all_zero(probe, (size_t)n))
                    bad = "unknown magic (delete the file to reset it)";
                else
                    fresh = 1;
            }
        }
        if (!bad && fresh && ftruncate(fd, (off_t)sizeof(vgpu_region_t)) != 0) bad = "cannot size the file";
        void *p = MAP_FAILED;
        if (!bad) {
            p = mmap(NULL, sizeof(vgpu_region_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            if (p == MAP_FAILED) bad = "mmap failed";
        }
        if (!bad) {
            vgpu_region = p;
            if (fresh || __atomic_load_n(&vgpu_region->magic, __ATOMIC_ACQUIRE) != VGPU_REGION_MAGIC)
                init_region_fields(vgpu_region);
        }
        flock(fd, LOCK_UN);
        close(fd);
        if (bad) use_private(bad);
    }
    vgpu_region_lock();
    register_slot_locked();
    vgpu_region_unlock();
    atexit(on_exit_release);
}

void vgpu_region_after_fork_child(void) {
    /* the child is a new process: it needs its own slot; the parent's usage stays the parent's */
    vgpu_slot = -1;
    if (!vgpu_region) return;
    vgpu_region_lock();
    register_slot_locked();
    vgpu_region_unlock();
}

/* What the limit is checked against: the container's cumulative use across every process, except in
 * the deliberate fault builds (hami_stack/faults) that check each call alone or each process alone. */
#if defined(VGPU_FAULT_PER_CALL_LIMIT)
static inline uint64_t fault_per_call(uint64_t used) { return used & 0; }
#define CHECKED_USE(d, used) fault_per_call(used)
#elif defined(VGPU_FAULT_PER_PROCESS_LIMIT)
#define CHECKED_USE(d, used) (vgpu_slot >= 0 ? vgpu_region->slots[vgpu_slot].used[d] : (used))
#else
#define CHECKED_USE(d, used) (used)
#endif

CUresult vgpu_charge(int d, uint64_t bytes, uint64_t limit) {
    if (d < 0 || d >= VGPU_MAX_DEVICES) return CUDA_SUCCESS;
    if (vgpu_cfg.mem_blocked[d]) {
        LOG_ERROR("device %d: a memory or SM limit in the environment is not valid; refusing %llu bytes "
                  "(fail closed)", d, (unsigned long long)bytes);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    vgpu_region_lock();
    uint64_t used = vgpu_region->used[d];
    if (limit && (bytes > limit || CHECKED_USE(d, used) > limit - bytes)) {
        /* a neighbour that died without cleaning up must not cause a false OOM */
        vgpu_sweep_dead_locked();
        used = vgpu_region->used[d];
        if (bytes > limit || CHECKED_USE(d, used) > limit - bytes) {
            vgpu_region_unlock();
            LOG_ERROR("device %d: out of memory: container usage %llu + request %llu exceeds limit %llu", d,
                      (unsigned long long)used, (unsigned long long)bytes, (unsigned long long)limit);
            return CUDA_ERROR_OUT_OF_MEMORY;
        }
    }
    vgpu_region->used[d] = used + bytes;
    if (vgpu_slot >= 0) vgpu_region->slots[vgpu_slot].used[d] += bytes;
    vgpu_region->generation++;
    vgpu_region_unlock();
    return CUDA_SUCCESS;
}

void vgpu_uncharge(int d, uint64_t bytes) {
    if (d < 0 || d >= VGPU_MAX_DEVICES || !bytes) return;
    vgpu_region_lock();
    vgpu_region->used[d] = vgpu_region->used[d] >= bytes ? vgpu_region->used[d] - bytes : 0;
    if (vgpu_slot >= 0) {
        uint64_t *u = &vgpu_region->slots[vgpu_slot].used[d];
        *u = *u >= bytes ? *u - bytes : 0;
    }
    vgpu_region->generation++;
    vgpu_region_unlock();
}

uint64_t vgpu_used(int d) {
    if (d < 0 || d >= VGPU_MAX_DEVICES) return 0;
    return __atomic_load_n(&vgpu_region->used[d], __ATOMIC_RELAXED);
}

int vgpu_is_container_pid(unsigned int hostpid) {
    if (!hostpid) return 0;
    for (int i = 0; i < VGPU_MAX_SLOTS; i++) {
        const vgpu_slot_t *s = &vgpu_region->slots[i];
        if (s->pid && (unsigned)s->hostpid == hostpid) return 1;
    }
    return 0;
}

void vgpu_note_device(int d, uint64_t physical, const char *uuid) {
    if (d < 0 || d >= VGPU_MAX_DEVICES) return;
    vgpu_region_lock();
    if (physical) vgpu_region->physical[d] = physical;
    if (uuid && *uuid) {
        strncpy(vgpu_region->uuid[d], uuid, VGPU_UUID_LEN - 1);
        vgpu_region->uuid[d][VGPU_UUID_LEN - 1] = 0;
    }
    if ((uint32_t)d + 1 > vgpu_region->device_count) vgpu_region->device_count = (uint32_t)d + 1;
    vgpu_region_unlock();
}
