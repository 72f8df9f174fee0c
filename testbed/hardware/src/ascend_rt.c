/*
 * Emulated CANN runtime (libruntime.so): the layer AscendCL calls for devices and device memory, and
 * the seam HAMi's hami-core NPU limiter interposes (rtMalloc / rtFree / rtMemGetInfoEx).
 *
 * Devices are the NPUs the emulated DCMI shows this process (ASCEND_VISIBLE_DEVICES, renumbered from
 * 0; a vNPU of ASCEND_VNPU_SPECS shows its template's memory). Device memory is accounting only:
 * rtMalloc hands out distinct device addresses with no host backing (nothing here reads or writes
 * device memory) and charges the card, shared with every process of the node through npu_rtmem.h;
 * used_mib.<phy> (a fault or background load written by the testbed) counts as used too. A request
 * above what the card has left answers ACL_ERROR_RT_MEMORY_ALLOCATION, as the real driver does.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "ascend_rt_emu.h"
#include "dcmi_emu.h"
#include "npu_rtmem.h"

#define EXPORT __attribute__((visibility("default")))
#define MAX_DEVS 64
#define MIB (1ULL << 20)
#define ADDR_BASE 0x124000000000ULL
#define ADDR_ALIGN (2ULL << 20)

typedef struct alloc {
    uint64_t addr, size;
    int dev;
    struct alloc *next;
} alloc_t;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_ready = -1; /* -1 not tried, 0 ok, else the error */
static const char *g_dir;
static int g_count;
static int g_phy[MAX_DEVS];
static unsigned long long g_total[MAX_DEVS]; /* bytes */
static unsigned long long g_mine[MAX_DEVS];  /* bytes this process holds */
static int g_fd[MAX_DEVS];                   /* this process's rtmem file per device, or -1 */
static uint64_t g_next_addr = ADDR_BASE;
static alloc_t *g_allocs;
static __thread int t_device = -1;

static rtError_t init_locked(void) {
    if (g_ready >= 0) return g_ready;
    g_dir = getenv("HAMI_EMU_NPU_STATE_DIR");
    if (dcmi_init() != DCMI_OK || !g_dir) return g_ready = ACL_ERROR_RT_DRV_INTERNAL_ERROR;
    for (unsigned i = 0; i < MAX_DEVS; i++) {
        unsigned phy;
        int card, dev;
        struct dcmi_get_memory_info_stru mem;
        if (dcmi_get_device_phyid_from_logicid(i, &phy) != DCMI_OK) break;
        if (dcmi_get_card_id_device_id_from_logicid(&card, &dev, i) != DCMI_OK) break;
        if (dcmi_get_device_memory_info_v3(card, dev, &mem) != DCMI_OK) break;
        g_phy[g_count] = (int)phy;
        g_total[g_count] = mem.memory_size * MIB;
        g_fd[g_count] = -1;
        g_count++;
    }
    return g_ready = ACL_SUCCESS;
}

static rtError_t ensure(void) {
    pthread_mutex_lock(&g_lock);
    rtError_t rc = init_locked();
    pthread_mutex_unlock(&g_lock);
    return rc;
}

static unsigned long long fault_used(int phy) {
    char p[4200];
    snprintf(p, sizeof p, "%s/used_mib.%d", g_dir, phy);
    FILE *f = fopen(p, "r");
    long v = 0;
    if (f) {
        if (fscanf(f, "%ld", &v) != 1) v = 0;
        fclose(f);
    }
    return v > 0 ? (unsigned long long)v * MIB : 0;
}

static unsigned long long used_bytes(int dev) {
    return fault_used(g_phy[dev]) + rtmem_sum(g_dir, g_phy[dev]);
}

/* this process's file for dev: created under a temporary name, locked, then renamed into place, so no
 * reader ever sees it unlocked */
static int own_file(int dev) {
    if (g_fd[dev] >= 0) return g_fd[dev];
    char dir[4200], tmp[4600], final[4600];
    rtmem_dir(dir, sizeof dir, g_dir);
    mkdir(dir, 0777);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(final, sizeof final, "%s/%d.%d-%ld-%ld", dir, g_phy[dev], (int)getpid(), (long)ts.tv_sec, ts.tv_nsec);
    snprintf(tmp, sizeof tmp, "%s/.new-%d-%ld-%ld", dir, (int)getpid(), (long)ts.tv_sec, ts.tv_nsec);
    int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) return -1;
    if (flock(fd, LOCK_SH) != 0 || rename(tmp, final) != 0) {
        unlink(tmp);
        close(fd);
        return -1;
    }
    return g_fd[dev] = fd;
}

static int publish(int dev) {
    int fd = own_file(dev);
    if (fd < 0) return -1;
    char buf[RTMEM_DIGITS + 2];
    snprintf(buf, sizeof buf, "%0*llu\n", RTMEM_DIGITS, g_mine[dev]);
    return pwrite(fd, buf, RTMEM_DIGITS + 1, 0) == RTMEM_DIGITS + 1 ? 0 : -1;
}

/* node-wide lock around check-and-charge, so two processes cannot both take the last free bytes */
static int node_lock(void) {
    char dir[4200], p[4600];
    rtmem_dir(dir, sizeof dir, g_dir);
    mkdir(dir, 0777);
    snprintf(p, sizeof p, "%s/.lock", dir);
    int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd >= 0 && flock(fd, LOCK_EX) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void node_unlock(int fd) {
    if (fd >= 0) close(fd);
}

EXPORT rtError_t rtGetDeviceCount(int32_t *count) {
    if (!count) return ACL_ERROR_RT_PARAM_INVALID;
    rtError_t rc = ensure();
    if (rc) return rc;
    *count = g_count;
    return ACL_SUCCESS;
}

EXPORT rtError_t rtSetDevice(int32_t device) {
    rtError_t rc = ensure();
    if (rc) return rc;
    if (device < 0 || device >= g_count) return ACL_ERROR_RT_INVALID_DEVICEID;
    t_device = device;
    return ACL_SUCCESS;
}

EXPORT rtError_t rtGetDevice(int32_t *device) {
    if (!device) return ACL_ERROR_RT_PARAM_INVALID;
    if (t_device < 0) return ACL_ERROR_RT_CONTEXT_NULL;
    *device = t_device;
    return ACL_SUCCESS;
}

EXPORT rtError_t rtDeviceReset(int32_t device) {
    rtError_t rc = ensure();
    if (rc) return rc;
    if (device < 0 || device >= g_count) return ACL_ERROR_RT_INVALID_DEVICEID;
    if (t_device == device) t_device = -1;
    return ACL_SUCCESS;
}

EXPORT rtError_t rtGetDevicePhyIdByIndex(uint32_t devIndex, uint32_t *phyId) {
    if (!phyId) return ACL_ERROR_RT_PARAM_INVALID;
    rtError_t rc = ensure();
    if (rc) return rc;
    if (devIndex >= (uint32_t)g_count) return ACL_ERROR_RT_INVALID_DEVICEID;
    *phyId = (uint32_t)g_phy[devIndex];
    return ACL_SUCCESS;
}

EXPORT rtError_t rtMalloc(void **devPtr, uint64_t size, uint32_t type, uint16_t moduleId) {
    (void)type;
    (void)moduleId;
    if (!devPtr || size == 0) return ACL_ERROR_RT_PARAM_INVALID;
    rtError_t rc = ensure();
    if (rc) return rc;
    int dev = t_device;
    if (dev < 0) return ACL_ERROR_RT_CONTEXT_NULL;
    alloc_t *a = malloc(sizeof *a);
    if (!a) return ACL_ERROR_RT_INTERNAL_ERROR;
    pthread_mutex_lock(&g_lock);
    int lk = node_lock();
    unsigned long long used = used_bytes(dev);
    if (lk < 0 || used > g_total[dev] || size > g_total[dev] - used) { /* no wrap of used + size */
        node_unlock(lk);
        pthread_mutex_unlock(&g_lock);
        free(a);
        return lk < 0 ? ACL_ERROR_RT_INTERNAL_ERROR : ACL_ERROR_RT_MEMORY_ALLOCATION;
    }
    g_mine[dev] += size;
    if (publish(dev) != 0) {
        g_mine[dev] -= size;
        node_unlock(lk);
        pthread_mutex_unlock(&g_lock);
        free(a);
        return ACL_ERROR_RT_INTERNAL_ERROR;
    }
    node_unlock(lk);
    a->addr = g_next_addr;
    a->size = size;
    a->dev = dev;
    a->next = g_allocs;
    g_allocs = a;
    g_next_addr += (size + ADDR_ALIGN - 1) / ADDR_ALIGN * ADDR_ALIGN + ADDR_ALIGN;
    pthread_mutex_unlock(&g_lock);
    *devPtr = (void *)(uintptr_t)a->addr;
    return ACL_SUCCESS;
}

EXPORT rtError_t rtFree(void *devPtr) {
    if (!devPtr) return ACL_ERROR_RT_PARAM_INVALID;
    pthread_mutex_lock(&g_lock);
    alloc_t **pp = &g_allocs;
    while (*pp && (*pp)->addr != (uint64_t)(uintptr_t)devPtr) pp = &(*pp)->next;
    alloc_t *a = *pp;
    if (!a) {
        pthread_mutex_unlock(&g_lock);
        return ACL_ERROR_RT_PARAM_INVALID; /* not an address this process was given */
    }
    *pp = a->next;
    g_mine[a->dev] -= a->size;
    publish(a->dev);
    pthread_mutex_unlock(&g_lock);
    free(a);
    return ACL_SUCCESS;
}

EXPORT rtError_t rtMemGetInfoEx(uint32_t memInfoType, size_t *free_bytes, size_t *total) {
    (void)memInfoType;
    if (!free_bytes || !total) return ACL_ERROR_RT_PARAM_INVALID;
    rtError_t rc = ensure();
    if (rc) return rc;
    int dev = t_device;
    if (dev < 0) return ACL_ERROR_RT_CONTEXT_NULL;
    unsigned long long used = used_bytes(dev);
    *total = (size_t)g_total[dev];
    *free_bytes = (size_t)(used >= g_total[dev] ? 0 : g_total[dev] - used);
    return ACL_SUCCESS;
}
