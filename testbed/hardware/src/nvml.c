/*
 * Emulated libnvidia-ml.so.1: answers NVML queries from the node's device state (gpus.conf for the
 * static inventory, shared.bin for live usage, health, faults and Xid events).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "emu_common.h"
#include "nvml_emu.h"

#define API HAMI_EMU_EXPORT

struct nvmlDevice_st {
    int vis;  /* index in this process' visible list */
    int phys; /* index in gpus.conf / shared.bin */
};

#define EVENT_SET_MAGIC 0x45564e54u
struct nvmlEventSet_st {
    unsigned magic;
    int count;
    struct {
        int vis;
        unsigned long long mask;
        uint64_t cursor; /* last Xid seq delivered (or seen at registration) */
    } regs[HAMI_EMU_MAX_GPUS];
};

static pthread_mutex_t g_init_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_refcount;
static hami_emu_node_t g_node;
static struct nvmlDevice_st g_devs[HAMI_EMU_MAX_GPUS];

static const unsigned long long SUPPORTED_EVENTS = nvmlEventTypeSingleBitEccError | nvmlEventTypeDoubleBitEccError |
                                                   nvmlEventTypePState | nvmlEventTypeXidCriticalError |
                                                   nvmlEventTypeClock;

/* ---- init / shutdown ---- */

static nvmlReturn_t init_locked(unsigned flags) {
    (void)flags;
    if (g_refcount > 0) {
        g_refcount++;
        return NVML_SUCCESS;
    }
    int rc = hami_emu_load(&g_node);
    if (rc == HAMI_EMU_ERR_MISSING) return NVML_ERROR_DRIVER_NOT_LOADED;
    if (rc == HAMI_EMU_ERR_VERSION) return NVML_ERROR_LIB_RM_VERSION_MISMATCH;
    if (rc != HAMI_EMU_OK) return NVML_ERROR_UNKNOWN;
    for (int i = 0; i < g_node.visible_count; i++) {
        g_devs[i].vis = i;
        g_devs[i].phys = g_node.visible[i];
    }
    g_refcount = 1;
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    pthread_mutex_lock(&g_init_lock);
    nvmlReturn_t rc = init_locked(flags);
    pthread_mutex_unlock(&g_init_lock);
    return rc;
}

API nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }
API nvmlReturn_t nvmlInit(void) { return nvmlInitWithFlags(0); }

API nvmlReturn_t nvmlShutdown(void) {
    pthread_mutex_lock(&g_init_lock);
    nvmlReturn_t rc = NVML_SUCCESS;
    if (g_refcount == 0)
        rc = NVML_ERROR_UNINITIALIZED;
    else if (--g_refcount == 0)
        hami_emu_unload(&g_node);
    pthread_mutex_unlock(&g_init_lock);
    return rc;
}

API const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NO_PERMISSION: return "Insufficient Permissions";
    case NVML_ERROR_ALREADY_INITIALIZED: return "Already Initialized";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_INSUFFICIENT_POWER: return "Insufficient External Power";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_TIMEOUT: return "Timeout";
    case NVML_ERROR_IRQ_ISSUE: return "Interrupt Request Issue";
    case NVML_ERROR_LIBRARY_NOT_FOUND: return "NVML Shared Library Not Found";
    case NVML_ERROR_FUNCTION_NOT_FOUND: return "Function Not Found";
    case NVML_ERROR_CORRUPTED_INFOROM: return "Corrupted infoROM";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    case NVML_ERROR_RESET_REQUIRED: return "GPU requires restart";
    case NVML_ERROR_OPERATING_SYSTEM: return "The operating system has blocked the request.";
    case NVML_ERROR_LIB_RM_VERSION_MISMATCH: return "RM has detected an NVML/RM version mismatch.";
    case NVML_ERROR_IN_USE: return "In use by another client";
    case NVML_ERROR_MEMORY: return "Insufficient Memory";
    case NVML_ERROR_NO_DATA: return "No data";
    case NVML_ERROR_INSUFFICIENT_RESOURCES: return "Insufficient resources";
    case NVML_ERROR_ARGUMENT_VERSION_MISMATCH: return "Argument version mismatch";
    case NVML_ERROR_DEPRECATED: return "Deprecated";
    case NVML_ERROR_NOT_READY: return "Not ready";
    case NVML_ERROR_GPU_NOT_FOUND: return "GPU not found";
    case NVML_ERROR_INVALID_STATE: return "Invalid state";
    default: return "Unknown Error";
    }
}

/* ---- system queries ---- */

static nvmlReturn_t copy_out(char *dst, unsigned length, const char *src) {
    if (!dst) return NVML_ERROR_INVALID_ARGUMENT;
    return hami_emu_copy_str(dst, length, src) ? NVML_ERROR_INSUFFICIENT_SIZE : NVML_SUCCESS;
}

API nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    if (!g_refcount) return NVML_ERROR_UNINITIALIZED;
    return copy_out(version, length, g_node.driver_version);
}

API nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length) {
    /* like the real library this one works without nvmlInit */
    hami_emu_node_t tmp;
    const char *v = g_node.nvml_version;
    if (!g_refcount) {
        if (hami_emu_load(&tmp) != HAMI_EMU_OK) return copy_out(version, length, "12.0");
        static char cached[80];
        snprintf(cached, sizeof(cached), "%s", tmp.nvml_version);
        hami_emu_unload(&tmp);
        v = cached;
    }
    return copy_out(version, length, v);
}

API nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *cudaDriverVersion) {
    if (!cudaDriverVersion) return NVML_ERROR_INVALID_ARGUMENT;
    if (!g_refcount) return NVML_ERROR_UNINITIALIZED;
    *cudaDriverVersion = g_node.cuda_driver_version;
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *cudaDriverVersion) {
    return nvmlSystemGetCudaDriverVersion(cudaDriverVersion);
}

/* ---- device lookup ---- */

API nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *deviceCount) {
    if (!g_refcount) return NVML_ERROR_UNINITIALIZED;
    if (!deviceCount) return NVML_ERROR_INVALID_ARGUMENT;
    *deviceCount = (unsigned)g_node.visible_count;
    return NVML_SUCCESS;
}
API nvmlReturn_t nvmlDeviceGetCount(unsigned int *deviceCount) { return nvmlDeviceGetCount_v2(deviceCount); }

static int handle_phys(nvmlDevice_t d) {
    if (d < g_devs || d >= g_devs + g_node.visible_count) return -1;
    return d->phys;
}

static hami_emu_gpu_t *shared_gpu(int phys) { return &g_node.shm->gpus[phys]; }
static const hami_emu_gpu_info_t *info(int phys) { return &g_node.gpus[phys]; }

/* Common prologue of every per-device query: initialised, valid handle, GPU not lost, no fault armed. */
#define DEVICE_ENTER(dev, phys)                                                \
    if (!g_refcount) return NVML_ERROR_UNINITIALIZED;                          \
    int phys = handle_phys(dev);                                               \
    if (phys < 0) return NVML_ERROR_INVALID_ARGUMENT;                          \
    if (shared_gpu(phys)->health == HAMI_EMU_LOST) return NVML_ERROR_GPU_IS_LOST; \
    {                                                                          \
        int fault_ = hami_emu_take_nvml_fault(g_node.shm, phys);               \
        if (fault_) return (nvmlReturn_t)fault_;                               \
    }

/* Handle lookups fail for a lost card but do not consume injected faults: those target the queries
 * made with the handle ("the next N calls on this GPU"). */
static nvmlReturn_t hand_out(int vis, nvmlDevice_t *device) {
    if (shared_gpu(g_devs[vis].phys)->health == HAMI_EMU_LOST) return NVML_ERROR_GPU_IS_LOST;
    *device = &g_devs[vis];
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    if (!g_refcount) return NVML_ERROR_UNINITIALIZED;
    if (!device || index >= (unsigned)g_node.visible_count) return NVML_ERROR_INVALID_ARGUMENT;
    return hand_out((int)index, device);
}
API nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device) {
    return nvmlDeviceGetHandleByIndex_v2(index, device);
}

API nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device) {
    if (!g_refcount) return NVML_ERROR_UNINITIALIZED;
    if (!uuid || !device) return NVML_ERROR_INVALID_ARGUMENT;
    for (int i = 0; i < g_node.visible_count; i++)
        if (!strcasecmp(info(g_devs[i].phys)->uuid, uuid)) return hand_out(i, device);
    return NVML_ERROR_NOT_FOUND;
}

API nvmlReturn_t nvmlDeviceGetHandleBySerial(const char *serial, nvmlDevice_t *device) {
    if (!g_refcount) return NVML_ERROR_UNINITIALIZED;
    if (!serial || !device) return NVML_ERROR_INVALID_ARGUMENT;
    for (int i = 0; i < g_node.visible_count; i++)
        if (info(g_devs[i].phys)->serial[0] && !strcmp(info(g_devs[i].phys)->serial, serial))
            return hand_out(i, device);
    return NVML_ERROR_NOT_FOUND;
}

API nvmlReturn_t nvmlDeviceGetHandleByPciBusId_v2(const char *pciBusId, nvmlDevice_t *device) {
    if (!g_refcount) return NVML_ERROR_UNINITIALIZED;
    if (!pciBusId || !device) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned dom = 0, bus, dev, fn = 0;
    char tail;
    if (sscanf(pciBusId, "%x:%x:%x.%x%c", &dom, &bus, &dev, &fn, &tail) != 4) {
        dom = 0;
        fn = 0;
        if (sscanf(pciBusId, "%x:%x.%x%c", &bus, &dev, &fn, &tail) != 3) return NVML_ERROR_INVALID_ARGUMENT;
    }
    for (int i = 0; i < g_node.visible_count; i++) {
        const hami_emu_gpu_info_t *g = info(g_devs[i].phys);
        if (g->domain == dom && g->bus == bus && g->device == dev && g->function == fn) return hand_out(i, device);
    }
    return NVML_ERROR_NOT_FOUND;
}
API nvmlReturn_t nvmlDeviceGetHandleByPciBusId(const char *pciBusId, nvmlDevice_t *device) {
    return nvmlDeviceGetHandleByPciBusId_v2(pciBusId, device);
}

/* ---- identity ---- */

API nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    DEVICE_ENTER(device, phys);
    return copy_out(name, length, info(phys)->name);
}

API nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
    DEVICE_ENTER(device, phys);
    return copy_out(uuid, length, info(phys)->uuid);
}

API nvmlReturn_t nvmlDeviceGetSerial(nvmlDevice_t device, char *serial, unsigned int length) {
    DEVICE_ENTER(device, phys);
    if (!info(phys)->serial[0]) return NVML_ERROR_NOT_SUPPORTED;
    return copy_out(serial, length, info(phys)->serial);
}

API nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t device, unsigned int *minorNumber) {
    DEVICE_ENTER(device, phys);
    if (!minorNumber) return NVML_ERROR_INVALID_ARGUMENT;
    *minorNumber = info(phys)->minor_number;
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index) {
    DEVICE_ENTER(device, phys);
    if (!index) return NVML_ERROR_INVALID_ARGUMENT;
    *index = (unsigned)device->vis;
    return NVML_SUCCESS;
}

static void fill_pci(int phys, nvmlPciInfo_t *pci) {
    const hami_emu_gpu_info_t *g = info(phys);
    memset(pci, 0, sizeof(*pci));
    snprintf(pci->busIdLegacy, sizeof(pci->busIdLegacy), "%04X:%02X:%02X.%X", g->domain & 0xffff, g->bus, g->device,
             g->function);
    snprintf(pci->busId, sizeof(pci->busId), "%08X:%02X:%02X.%X", g->domain, g->bus, g->device, g->function);
    pci->domain = g->domain;
    pci->bus = g->bus;
    pci->device = g->device;
    pci->pciDeviceId = g->pci_device_id;
    pci->pciSubSystemId = g->pci_subsystem_id;
}

API nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci) {
    DEVICE_ENTER(device, phys);
    if (!pci) return NVML_ERROR_INVALID_ARGUMENT;
    fill_pci(phys, pci);
    return NVML_SUCCESS;
}
API nvmlReturn_t nvmlDeviceGetPciInfo_v2(nvmlDevice_t device, nvmlPciInfo_t *pci) {
    return nvmlDeviceGetPciInfo_v3(device, pci);
}
API nvmlReturn_t nvmlDeviceGetPciInfo(nvmlDevice_t device, nvmlPciInfo_t *pci) {
    return nvmlDeviceGetPciInfo_v3(device, pci);
}

API nvmlReturn_t nvmlDeviceGetNumaNodeId(nvmlDevice_t device, unsigned int *node) {
    DEVICE_ENTER(device, phys);
    if (!node) return NVML_ERROR_INVALID_ARGUMENT;
    if (info(phys)->numa_node < 0) return NVML_ERROR_NOT_SUPPORTED;
    *node = (unsigned)info(phys)->numa_node;
    return NVML_SUCCESS;
}

static nvmlReturn_t fill_affinity(int phys, unsigned size, unsigned long *set) {
    if (!size || !set) return NVML_ERROR_INVALID_ARGUMENT;
    memset(set, 0, sizeof(unsigned long) * size);
    const char *s = info(phys)->cpu_affinity;
    const unsigned bits = (unsigned)(sizeof(unsigned long) * 8);
    while (*s) {
        char *end;
        unsigned long lo = strtoul(s, &end, 10), hi = lo;
        if (end == s) break;
        s = end;
        if (*s == '-') {
            hi = strtoul(s + 1, &end, 10);
            s = end;
        }
        for (unsigned long c = lo; c <= hi && c < (unsigned long)size * bits; c++) set[c / bits] |= 1UL << (c % bits);
        if (*s == ',') s++;
        else if (*s) break;
    }
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetCpuAffinity(nvmlDevice_t device, unsigned int cpuSetSize, unsigned long *cpuSet) {
    DEVICE_ENTER(device, phys);
    return fill_affinity(phys, cpuSetSize, cpuSet);
}

API nvmlReturn_t nvmlDeviceGetCpuAffinityWithinScope(nvmlDevice_t device, unsigned int cpuSetSize,
                                                     unsigned long *cpuSet, nvmlAffinityScope_t scope) {
    DEVICE_ENTER(device, phys);
    if (scope > 1) return NVML_ERROR_INVALID_ARGUMENT;
    return fill_affinity(phys, cpuSetSize, cpuSet);
}

API nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t device, int *major, int *minor) {
    DEVICE_ENTER(device, phys);
    if (!major || !minor) return NVML_ERROR_INVALID_ARGUMENT;
    *major = info(phys)->cc_major;
    *minor = info(phys)->cc_minor;
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t device, unsigned int *currentMode, unsigned int *pendingMode) {
    DEVICE_ENTER(device, phys);
    if (!currentMode || !pendingMode) return NVML_ERROR_INVALID_ARGUMENT;
    if (!info(phys)->mig_capable) return NVML_ERROR_NOT_SUPPORTED;
    *currentMode = *pendingMode = info(phys)->mig_mode;
    return NVML_SUCCESS;
}

/* ---- live state ---- */

static uint64_t used_now(int phys) {
    hami_emu_lock(g_node.shm);
    hami_emu_sweep_dead(shared_gpu(phys));
    uint64_t used = shared_gpu(phys)->used_bytes;
    hami_emu_unlock(g_node.shm);
    return used;
}

API nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory) {
    DEVICE_ENTER(device, phys);
    if (!memory) return NVML_ERROR_INVALID_ARGUMENT;
    if (shared_gpu(phys)->mem_query_unsupported) return NVML_ERROR_NOT_SUPPORTED;
    const hami_emu_gpu_info_t *g = info(phys);
    uint64_t used = used_now(phys) + g->reserved_bytes; /* v1 counts the driver reservation as used */
    if (used > g->memory_bytes) used = g->memory_bytes;
    memory->total = g->memory_bytes;
    memory->used = used;
    memory->free = g->memory_bytes - used;
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory) {
    DEVICE_ENTER(device, phys);
    if (!memory) return NVML_ERROR_INVALID_ARGUMENT;
    if (memory->version != nvmlMemory_v2) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    if (shared_gpu(phys)->mem_query_unsupported) return NVML_ERROR_NOT_SUPPORTED;
    const hami_emu_gpu_info_t *g = info(phys);
    uint64_t used = used_now(phys), reserved = g->reserved_bytes;
    if (reserved > g->memory_bytes) reserved = g->memory_bytes;
    if (used > g->memory_bytes - reserved) used = g->memory_bytes - reserved;
    memory->total = g->memory_bytes;
    memory->reserved = reserved;
    memory->used = used;
    memory->free = g->memory_bytes - reserved - used;
    return NVML_SUCCESS;
}

/* Memory health, the queries a health checker polls. An unhealthy card (fault "unhealthy", or a device
 * Xid) reports what a real one does after an uncorrectable ECC error it could not repair: a row
 * remapping that is pending and failed (Ampere and later, compute capability >= 8), or pending retired
 * pages (older cards, where row remapping is NOT_SUPPORTED; page retirement is NOT_SUPPORTED on cards
 * that remap rows). A healthy card reports neither. */
API nvmlReturn_t nvmlDeviceGetRemappedRows(nvmlDevice_t device, unsigned int *corrRows, unsigned int *uncRows,
                                           unsigned int *isPending, unsigned int *failureOccurred) {
    DEVICE_ENTER(device, phys);
    if (!corrRows || !uncRows || !isPending || !failureOccurred) return NVML_ERROR_INVALID_ARGUMENT;
    if (info(phys)->cc_major < 8) return NVML_ERROR_NOT_SUPPORTED;
    unsigned bad = shared_gpu(phys)->health != HAMI_EMU_HEALTHY;
    *corrRows = 0;
    *uncRows = bad;
    *isPending = bad;
    *failureOccurred = bad;
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetRetiredPagesPendingStatus(nvmlDevice_t device, nvmlEnableState_t *isPending) {
    DEVICE_ENTER(device, phys);
    if (!isPending) return NVML_ERROR_INVALID_ARGUMENT;
    if (info(phys)->cc_major >= 8) return NVML_ERROR_NOT_SUPPORTED;
    *isPending = shared_gpu(phys)->health != HAMI_EMU_HEALTHY ? NVML_FEATURE_ENABLED : NVML_FEATURE_DISABLED;
    return NVML_SUCCESS;
}

static int64_t util_window_ns(void) {
    const char *w = getenv("HAMI_EMU_UTIL_WINDOW_MS");
    long ms = w ? strtol(w, NULL, 10) : 0;
    return (ms > 0 ? ms : 1000) * 1000000LL;
}

static unsigned util_now(int phys) {
    hami_emu_lock(g_node.shm);
    unsigned u = hami_emu_utilization(shared_gpu(phys), hami_emu_now_ns(), util_window_ns(), 0);
    hami_emu_unlock(g_node.shm);
    return u;
}

API nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *utilization) {
    DEVICE_ENTER(device, phys);
    if (!utilization) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned u = util_now(phys);
    utilization->gpu = u;
    /* emulated kernels do not model memory traffic; report a fixed fraction of the busy time */
    utilization->memory = u / 4;
    return NVML_SUCCESS;
}

/* One sample per process that ran kernels in the utilisation window and since lastSeenTimeStamp
 * (microseconds of wall-clock time, as real NVML reports them). */
API nvmlReturn_t nvmlDeviceGetProcessUtilization(nvmlDevice_t device, nvmlProcessUtilizationSample_t *utilization,
                                                 unsigned int *processSamplesCount,
                                                 unsigned long long lastSeenTimeStamp) {
    DEVICE_ENTER(device, phys);
    if (!processSamplesCount) return NVML_ERROR_INVALID_ARGUMENT;
    nvmlProcessUtilizationSample_t found[HAMI_EMU_MAX_PROCS * 4]; /* distinct pids with kernels in the window */
    unsigned n = 0;
    struct timespec rt;
    clock_gettime(CLOCK_REALTIME, &rt);
    const int64_t now = hami_emu_now_ns(), window = util_window_ns();
    const int64_t real_now_us = (int64_t)rt.tv_sec * 1000000LL + rt.tv_nsec / 1000;
    hami_emu_lock(g_node.shm);
    const hami_emu_gpu_t *gpu = shared_gpu(phys);
    for (int i = 0; i < HAMI_EMU_MAX_INTERVALS; i++) {
        const hami_emu_interval_t *iv = &gpu->busy[i];
        if (iv->end_ns <= iv->start_ns || iv->end_ns <= now - window || iv->start_ns >= now || iv->pid <= 0) continue;
        unsigned j = 0;
        while (j < n && found[j].pid != (unsigned)iv->pid) j++;
        if (j == sizeof(found) / sizeof(found[0])) continue;
        int64_t last = iv->end_ns < now ? iv->end_ns : now;
        unsigned long long ts = (unsigned long long)(real_now_us - (now - last) / 1000);
        if (j == n) {
            found[n].pid = (unsigned)iv->pid;
            found[n].timeStamp = ts;
            found[n].smUtil = hami_emu_utilization(gpu, now, window, iv->pid);
            found[n].memUtil = found[n].smUtil / 4;
            found[n].encUtil = found[n].decUtil = 0;
            n++;
        } else if (ts > found[j].timeStamp) {
            found[j].timeStamp = ts;
        }
    }
    hami_emu_unlock(g_node.shm);
    unsigned kept = 0;
    for (unsigned i = 0; i < n; i++)
        if (found[i].timeStamp > lastSeenTimeStamp) found[kept++] = found[i];
    if (!kept) return NVML_ERROR_NOT_FOUND;
    if (!utilization || *processSamplesCount < kept) {
        *processSamplesCount = kept;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    memcpy(utilization, found, sizeof(found[0]) * kept);
    *processSamplesCount = kept;
    return NVML_SUCCESS;
}

/* Fills processes with contexts or memory on the GPU; entry size differs between API versions. */
static nvmlReturn_t running_processes(nvmlDevice_t device, unsigned *count, void *infos, int v1) {
    DEVICE_ENTER(device, phys);
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    hami_emu_proc_t found[HAMI_EMU_MAX_PROCS];
    unsigned n = 0;
    hami_emu_lock(g_node.shm);
    hami_emu_gpu_t *gpu = shared_gpu(phys);
    hami_emu_sweep_dead(gpu);
    for (int i = 0; i < HAMI_EMU_MAX_PROCS; i++)
        if (gpu->procs[i].pid) found[n++] = gpu->procs[i];
    hami_emu_unlock(g_node.shm);
    if (*count < n || (n && !infos)) {
        *count = n;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    for (unsigned i = 0; i < n; i++) {
        if (v1) {
            nvmlProcessInfo_v1_t *p = (nvmlProcessInfo_v1_t *)infos + i;
            p->pid = (unsigned)found[i].pid;
            p->usedGpuMemory = found[i].used_bytes;
        } else {
            nvmlProcessInfo_t *p = (nvmlProcessInfo_t *)infos + i;
            p->pid = (unsigned)found[i].pid;
            p->usedGpuMemory = found[i].used_bytes;
            p->gpuInstanceId = 0xFFFFFFFFu; /* MIG off */
            p->computeInstanceId = 0xFFFFFFFFu;
        }
    }
    *count = n;
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t device, unsigned int *infoCount,
                                                         nvmlProcessInfo_t *infos) {
    return running_processes(device, infoCount, infos, 0);
}
API nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(nvmlDevice_t device, unsigned int *infoCount,
                                                         nvmlProcessInfo_t *infos) {
    return running_processes(device, infoCount, infos, 0);
}
API nvmlReturn_t nvmlDeviceGetComputeRunningProcesses(nvmlDevice_t device, unsigned int *infoCount,
                                                      nvmlProcessInfo_v1_t *infos) {
    return running_processes(device, infoCount, infos, 1);
}

/* compute-only datacenter parts: never any graphics clients */
API nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v3(nvmlDevice_t device, unsigned int *infoCount,
                                                          nvmlProcessInfo_t *infos) {
    (void)infos;
    DEVICE_ENTER(device, phys);
    (void)phys;
    if (!infoCount) return NVML_ERROR_INVALID_ARGUMENT;
    *infoCount = 0;
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device, nvmlTemperatureSensors_t sensorType,
                                          unsigned int *temp) {
    DEVICE_ENTER(device, phys);
    if (!temp || sensorType != NVML_TEMPERATURE_GPU) return NVML_ERROR_INVALID_ARGUMENT;
    *temp = info(phys)->idle_temp_c + util_now(phys) * 30 / 100;
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int *power) {
    DEVICE_ENTER(device, phys);
    if (!power) return NVML_ERROR_INVALID_ARGUMENT;
    const hami_emu_gpu_info_t *g = info(phys);
    unsigned span = g->power_limit_mw > g->idle_power_mw ? g->power_limit_mw - g->idle_power_mw : 0;
    *power = g->idle_power_mw + (unsigned)((unsigned long long)span * util_now(phys) * 8 / 1000);
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t device, unsigned int *limit) {
    DEVICE_ENTER(device, phys);
    if (!limit) return NVML_ERROR_INVALID_ARGUMENT;
    *limit = info(phys)->power_limit_mw;
    return NVML_SUCCESS;
}

static nvmlReturn_t clock_of(int phys, nvmlClockType_t type, int current, unsigned *clock) {
    const hami_emu_gpu_info_t *g = info(phys);
    if (!clock) return NVML_ERROR_INVALID_ARGUMENT;
    switch (type) {
    case NVML_CLOCK_GRAPHICS:
    case NVML_CLOCK_SM:
        *clock = (!current || util_now(phys) > 0) ? g->max_sm_clock_mhz : g->idle_sm_clock_mhz;
        return NVML_SUCCESS;
    case NVML_CLOCK_MEM: *clock = g->max_mem_clock_mhz; return NVML_SUCCESS;
    case NVML_CLOCK_VIDEO: *clock = g->max_sm_clock_mhz * 9 / 10; return NVML_SUCCESS;
    default: return NVML_ERROR_INVALID_ARGUMENT;
    }
}

API nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t device, nvmlClockType_t type, unsigned int *clock) {
    DEVICE_ENTER(device, phys);
    return clock_of(phys, type, 1, clock);
}

API nvmlReturn_t nvmlDeviceGetMaxClockInfo(nvmlDevice_t device, nvmlClockType_t type, unsigned int *clock) {
    DEVICE_ENTER(device, phys);
    return clock_of(phys, type, 0, clock);
}

/* ---- topology ---- */

API nvmlReturn_t nvmlDeviceGetTopologyCommonAncestor(nvmlDevice_t device1, nvmlDevice_t device2,
                                                     nvmlGpuTopologyLevel_t *pathInfo) {
    DEVICE_ENTER(device1, p1);
    int p2 = handle_phys(device2);
    if (p2 < 0 || !pathInfo) return NVML_ERROR_INVALID_ARGUMENT;
    if (shared_gpu(p2)->health == HAMI_EMU_LOST) return NVML_ERROR_GPU_IS_LOST;
    const hami_emu_gpu_info_t *a = info(p1), *b = info(p2);
    if (p1 == p2)
        *pathInfo = NVML_TOPOLOGY_INTERNAL;
    else if (a->pci_switch >= 0 && a->pci_switch == b->pci_switch)
        *pathInfo = NVML_TOPOLOGY_SINGLE;
    else if (a->numa_node >= 0 && a->numa_node == b->numa_node)
        *pathInfo = NVML_TOPOLOGY_NODE;
    else
        *pathInfo = NVML_TOPOLOGY_SYSTEM;
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetNvLinkState(nvmlDevice_t device, unsigned int link, nvmlEnableState_t *isActive) {
    DEVICE_ENTER(device, phys);
    if (!isActive) return NVML_ERROR_INVALID_ARGUMENT;
    if (!info(phys)->nvlink_count) return NVML_ERROR_NOT_SUPPORTED;
    if (link >= info(phys)->nvlink_count) return NVML_ERROR_INVALID_ARGUMENT;
    *isActive = NVML_FEATURE_ENABLED;
    return NVML_SUCCESS;
}

/* ---- events ---- */

static int track_set(nvmlEventSet_t set, nvmlEventSet_t replace_with);

API nvmlReturn_t nvmlEventSetCreate(nvmlEventSet_t *set) {
    if (!g_refcount) return NVML_ERROR_UNINITIALIZED;
    if (!set) return NVML_ERROR_INVALID_ARGUMENT;
    struct nvmlEventSet_st *s = calloc(1, sizeof(*s));
    if (!s) return NVML_ERROR_MEMORY;
    s->magic = EVENT_SET_MAGIC;
    if (!track_set(NULL, s)) {
        free(s);
        return NVML_ERROR_INSUFFICIENT_RESOURCES;
    }
    *set = s;
    return NVML_SUCCESS;
}

/* live event sets, so a freed or made-up set pointer is refused rather than dereferenced */
static nvmlEventSet_t g_sets[256];
static pthread_mutex_t g_sets_lock = PTHREAD_MUTEX_INITIALIZER;

static int valid_set(nvmlEventSet_t set) {
    int found = 0;
    pthread_mutex_lock(&g_sets_lock);
    for (size_t i = 0; set && i < sizeof(g_sets) / sizeof(g_sets[0]) && !found; i++) found = g_sets[i] == set;
    pthread_mutex_unlock(&g_sets_lock);
    return found && set->magic == EVENT_SET_MAGIC;
}

static int track_set(nvmlEventSet_t set, nvmlEventSet_t replace_with) {
    pthread_mutex_lock(&g_sets_lock);
    int done = 0;
    for (size_t i = 0; i < sizeof(g_sets) / sizeof(g_sets[0]) && !done; i++) {
        if (g_sets[i] == set) {
            g_sets[i] = replace_with;
            done = 1;
        }
    }
    pthread_mutex_unlock(&g_sets_lock);
    return done;
}

API nvmlReturn_t nvmlDeviceGetSupportedEventTypes(nvmlDevice_t device, unsigned long long *eventTypes) {
    DEVICE_ENTER(device, phys);
    (void)phys;
    if (!eventTypes) return NVML_ERROR_INVALID_ARGUMENT;
    *eventTypes = SUPPORTED_EVENTS;
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceRegisterEvents(nvmlDevice_t device, unsigned long long eventTypes, nvmlEventSet_t set) {
    DEVICE_ENTER(device, phys);
    if (!valid_set(set)) return NVML_ERROR_INVALID_ARGUMENT;
    if (eventTypes & ~SUPPORTED_EVENTS) return NVML_ERROR_NOT_SUPPORTED;
    hami_emu_lock(g_node.shm);
    uint64_t cursor = shared_gpu(phys)->xid_seq; /* only events raised after registration are delivered */
    hami_emu_unlock(g_node.shm);
    for (int i = 0; i < set->count; i++) {
        if (set->regs[i].vis == device->vis) {
            set->regs[i].mask |= eventTypes;
            return NVML_SUCCESS;
        }
    }
    if (set->count >= HAMI_EMU_MAX_GPUS) return NVML_ERROR_INSUFFICIENT_RESOURCES;
    set->regs[set->count].vis = device->vis;
    set->regs[set->count].mask = eventTypes;
    set->regs[set->count].cursor = cursor;
    set->count++;
    return NVML_SUCCESS;
}

/* one non-blocking pass over the registrations; 1 if an event was delivered */
static int poll_events(nvmlEventSet_t set, nvmlEventData_t *data) {
    int delivered = 0;
    hami_emu_lock(g_node.shm);
    for (int i = 0; i < set->count && !delivered; i++) {
        if (!(set->regs[i].mask & nvmlEventTypeXidCriticalError)) continue;
        hami_emu_gpu_t *gpu = shared_gpu(g_devs[set->regs[i].vis].phys);
        if (gpu->xid_seq <= set->regs[i].cursor) continue;
        uint64_t next = set->regs[i].cursor + 1;
        /* events that fell out of the ring are lost, as they would be for a slow real reader */
        if (gpu->xid_seq > HAMI_EMU_MAX_XIDS && next < gpu->xid_seq - HAMI_EMU_MAX_XIDS + 1)
            next = gpu->xid_seq - HAMI_EMU_MAX_XIDS + 1;
        const hami_emu_xid_t *x = &gpu->xids[(next - 1) % HAMI_EMU_MAX_XIDS];
        data->device = &g_devs[set->regs[i].vis];
        data->eventType = nvmlEventTypeXidCriticalError;
        data->eventData = x->xid;
        data->gpuInstanceId = 0xFFFFFFFFu;
        data->computeInstanceId = 0xFFFFFFFFu;
        set->regs[i].cursor = next;
        delivered = 1;
    }
    hami_emu_unlock(g_node.shm);
    return delivered;
}

API nvmlReturn_t nvmlEventSetWait_v2(nvmlEventSet_t set, nvmlEventData_t *data, unsigned int timeoutms) {
    if (!g_refcount) return NVML_ERROR_UNINITIALIZED;
    if (!valid_set(set) || !data) return NVML_ERROR_INVALID_ARGUMENT;
    const int64_t deadline = hami_emu_now_ns() + (int64_t)timeoutms * 1000000LL;
    /* The emulated board has no interrupt to block on, so this polls; the pause grows from 2 ms to
     * 50 ms while nothing happens: a plugin's health loop waiting in here was ~500 wakeups/s and the
     * largest share of an idle node's CPU, and an event is still seen within 50 ms. */
    int64_t pause_ns = 2000000;
    for (;;) {
        if (poll_events(set, data)) return NVML_SUCCESS;
        const int64_t left = deadline - hami_emu_now_ns();
        if (left <= 0) return NVML_ERROR_TIMEOUT;
        const int64_t ns = pause_ns < left ? pause_ns : left;
        struct timespec ts = {(time_t)(ns / 1000000000LL), (long)(ns % 1000000000LL)};
        nanosleep(&ts, NULL);
        if (pause_ns < 50000000) pause_ns = pause_ns * 2 > 50000000 ? 50000000 : pause_ns * 2;
    }
}
API nvmlReturn_t nvmlEventSetWait(nvmlEventSet_t set, nvmlEventData_t *data, unsigned int timeoutms) {
    return nvmlEventSetWait_v2(set, data, timeoutms);
}

API nvmlReturn_t nvmlEventSetFree(nvmlEventSet_t set) {
    if (!g_refcount) return NVML_ERROR_UNINITIALIZED;
    if (!valid_set(set)) return NVML_ERROR_INVALID_ARGUMENT;
    track_set(set, NULL);
    set->magic = 0;
    free(set);
    return NVML_SUCCESS;
}

/* ---- static properties of the emulated board (a data-centre card in a server) ---- */

#define OUT_ENABLED(ptr, value)                           \
    do {                                                  \
        if (!(ptr)) return NVML_ERROR_INVALID_ARGUMENT;   \
        *(ptr) = (value);                                 \
    } while (0)

API nvmlReturn_t nvmlDeviceGetArchitecture(nvmlDevice_t device, nvmlDeviceArchitecture_t *arch) {
    DEVICE_ENTER(device, phys);
    if (!arch) return NVML_ERROR_INVALID_ARGUMENT;
    const hami_emu_gpu_info_t *g = info(phys);
    int cc = g->cc_major * 10 + g->cc_minor;
    *arch = cc >= 90 ? NVML_DEVICE_ARCH_HOPPER : cc >= 89 ? NVML_DEVICE_ARCH_ADA : cc >= 80 ? NVML_DEVICE_ARCH_AMPERE
          : cc >= 75 ? NVML_DEVICE_ARCH_TURING : cc >= 70 ? NVML_DEVICE_ARCH_VOLTA : NVML_DEVICE_ARCH_UNKNOWN;
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetPersistenceMode(nvmlDevice_t device, nvmlEnableState_t *mode) {
    DEVICE_ENTER(device, phys);
    (void)phys;
    OUT_ENABLED(mode, NVML_FEATURE_ENABLED); /* servers run the persistence daemon */
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetComputeMode(nvmlDevice_t device, nvmlComputeMode_t *mode) {
    DEVICE_ENTER(device, phys);
    (void)phys;
    OUT_ENABLED(mode, NVML_COMPUTEMODE_DEFAULT);
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetEccMode(nvmlDevice_t device, nvmlEnableState_t *current, nvmlEnableState_t *pending) {
    DEVICE_ENTER(device, phys);
    (void)phys;
    if (!current || !pending) return NVML_ERROR_INVALID_ARGUMENT;
    *current = *pending = NVML_FEATURE_ENABLED; /* the CUDA side reports ECC enabled too */
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetTotalEccErrors(nvmlDevice_t device, nvmlMemoryErrorType_t errorType,
                                             nvmlEccCounterType_t counterType, unsigned long long *eccCounts) {
    DEVICE_ENTER(device, phys);
    if (!eccCounts || (unsigned)errorType >= NVML_MEMORY_ERROR_TYPE_COUNT ||
        (unsigned)counterType >= NVML_ECC_COUNTER_TYPE_COUNT)
        return NVML_ERROR_INVALID_ARGUMENT;
    /* uncorrectable errors are the injected ECC Xids (48); corrected ones are never injected */
    unsigned long long n = 0;
    if (errorType == NVML_MEMORY_ERROR_TYPE_UNCORRECTED) {
        hami_emu_lock(g_node.shm);
        const hami_emu_gpu_t *gpu = shared_gpu(phys);
        uint64_t first = gpu->xid_seq > HAMI_EMU_MAX_XIDS ? gpu->xid_seq - HAMI_EMU_MAX_XIDS + 1 : 1;
        for (uint64_t s = first; s <= gpu->xid_seq; s++)
            if (gpu->xids[(s - 1) % HAMI_EMU_MAX_XIDS].xid == 48) n++;
        hami_emu_unlock(g_node.shm);
    }
    *eccCounts = n;
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetDisplayMode(nvmlDevice_t device, nvmlEnableState_t *display) {
    DEVICE_ENTER(device, phys);
    (void)phys;
    OUT_ENABLED(display, NVML_FEATURE_DISABLED);
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetDisplayActive(nvmlDevice_t device, nvmlEnableState_t *isActive) {
    DEVICE_ENTER(device, phys);
    (void)phys;
    OUT_ENABLED(isActive, NVML_FEATURE_DISABLED);
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetPowerManagementMode(nvmlDevice_t device, nvmlEnableState_t *mode) {
    DEVICE_ENTER(device, phys);
    (void)phys;
    OUT_ENABLED(mode, NVML_FEATURE_ENABLED);
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetPowerManagementLimit(nvmlDevice_t device, unsigned int *limit) {
    DEVICE_ENTER(device, phys);
    OUT_ENABLED(limit, info(phys)->power_limit_mw);
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetPowerManagementDefaultLimit(nvmlDevice_t device, unsigned int *defaultLimit) {
    DEVICE_ENTER(device, phys);
    OUT_ENABLED(defaultLimit, info(phys)->power_limit_mw);
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetPowerManagementLimitConstraints(nvmlDevice_t device, unsigned int *minLimit,
                                                              unsigned int *maxLimit) {
    DEVICE_ENTER(device, phys);
    if (!minLimit || !maxLimit) return NVML_ERROR_INVALID_ARGUMENT;
    *maxLimit = info(phys)->power_limit_mw;
    *minLimit = info(phys)->power_limit_mw / 4; /* e.g. 100 W on a 400 W A100 SXM */
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetPerformanceState(nvmlDevice_t device, nvmlPstates_t *pState) {
    DEVICE_ENTER(device, phys);
    (void)phys;
    OUT_ENABLED(pState, NVML_PSTATE_0); /* persistence mode keeps data-centre cards in P0 */
    return NVML_SUCCESS;
}

static unsigned pcie_gen(int phys) {
    const hami_emu_gpu_info_t *g = info(phys);
    int cc = g->cc_major * 10 + g->cc_minor;
    return cc >= 90 ? 5 : cc >= 80 ? 4 : 3;
}

API nvmlReturn_t nvmlDeviceGetMaxPcieLinkGeneration(nvmlDevice_t device, unsigned int *maxLinkGen) {
    DEVICE_ENTER(device, phys);
    OUT_ENABLED(maxLinkGen, pcie_gen(phys));
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetCurrPcieLinkGeneration(nvmlDevice_t device, unsigned int *currLinkGen) {
    DEVICE_ENTER(device, phys);
    OUT_ENABLED(currLinkGen, pcie_gen(phys));
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetMaxPcieLinkWidth(nvmlDevice_t device, unsigned int *maxLinkWidth) {
    DEVICE_ENTER(device, phys);
    (void)phys;
    OUT_ENABLED(maxLinkWidth, 16u);
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetCurrPcieLinkWidth(nvmlDevice_t device, unsigned int *currLinkWidth) {
    DEVICE_ENTER(device, phys);
    (void)phys;
    OUT_ENABLED(currLinkWidth, 16u);
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetMultiGpuBoard(nvmlDevice_t device, unsigned int *multiGpuBool) {
    DEVICE_ENTER(device, phys);
    (void)phys;
    OUT_ENABLED(multiGpuBool, 0u);
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetBoardId(nvmlDevice_t device, unsigned int *boardId) {
    DEVICE_ENTER(device, phys);
    const hami_emu_gpu_info_t *g = info(phys);
    OUT_ENABLED(boardId, (g->domain << 16) | (g->bus << 8) | (g->device << 3) | g->function);
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceOnSameBoard(nvmlDevice_t device1, nvmlDevice_t device2, int *onSameBoard) {
    DEVICE_ENTER(device1, phys);
    int other = handle_phys(device2);
    if (other < 0 || !onSameBoard) return NVML_ERROR_INVALID_ARGUMENT;
    *onSameBoard = other == phys; /* one GPU per board */
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t device, unsigned int *count) {
    DEVICE_ENTER(device, phys);
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    if (!info(phys)->mig_capable) return NVML_ERROR_NOT_SUPPORTED;
    *count = 7; /* seven GPU instances on every MIG-capable model */
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceIsMigDeviceHandle(nvmlDevice_t device, unsigned int *isMigDevice) {
    DEVICE_ENTER(device, phys);
    (void)phys;
    OUT_ENABLED(isMigDevice, 0u); /* MIG devices are not emulated: every handle is a full GPU */
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlSystemGetProcessName(unsigned int pid, char *name, unsigned int length) {
    if (!g_refcount) return NVML_ERROR_UNINITIALIZED;
    if (!name || !length) return NVML_ERROR_INVALID_ARGUMENT;
    char path[64], buf[256];
    snprintf(path, sizeof(path), "/proc/%u/comm", pid);
    FILE *f = fopen(path, "r");
    if (!f) return NVML_ERROR_NOT_FOUND;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    while (n && (buf[n - 1] == '\n')) n--;
    buf[n] = '\0';
    return copy_out(name, length, buf);
}

API nvmlReturn_t nvmlUnitGetCount(unsigned int *unitCount) {
    if (!g_refcount) return NVML_ERROR_UNINITIALIZED;
    OUT_ENABLED(unitCount, 0u); /* units are S-class enclosures; servers report none */
    return NVML_SUCCESS;
}

/* Graphics and MPS process lists: a compute server runs neither graphics clients nor an MPS server, so
 * the lists are empty. The older entry points take older structs; none is written for an empty list.
 * Not declared in nvml_emu.h: the real header shows these names only as macros for the _v3 variants. */
static nvmlReturn_t empty_process_list(nvmlDevice_t device, unsigned int *infoCount) {
    DEVICE_ENTER(device, phys);
    (void)phys;
    if (!infoCount) return NVML_ERROR_INVALID_ARGUMENT;
    *infoCount = 0;
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses(nvmlDevice_t device, unsigned int *infoCount, void *infos) {
    (void)infos;
    return empty_process_list(device, infoCount);
}

API nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v2(nvmlDevice_t device, unsigned int *infoCount, void *infos) {
    (void)infos;
    return empty_process_list(device, infoCount);
}

API nvmlReturn_t nvmlDeviceGetMPSComputeRunningProcesses(nvmlDevice_t device, unsigned int *infoCount, void *infos) {
    (void)infos;
    return empty_process_list(device, infoCount);
}
