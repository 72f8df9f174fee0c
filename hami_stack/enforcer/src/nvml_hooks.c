/*
 * NVML views inside a limited container: memory reports total = min(limit, device), used = container
 * usage, free clamped at 0; the running-process lists show only the container's processes, each with
 * the memory the shim accounts to it. Devices without a memory limit are passed through untouched.
 */
#include <string.h>

#include "internal.h"

static int nvml_index(nvmlDevice_t device) {
    unsigned int i;
    if (!vgpu_nvml_ready() || !vgpu_real.nvmlDeviceGetIndex) return -1;
    vgpu_depth++;
    nvmlReturn_t r = vgpu_real.nvmlDeviceGetIndex(device, &i);
    vgpu_depth--;
    return r == NVML_SUCCESS && i < VGPU_MAX_DEVICES ? (int)i : -1;
}

static void clamp(int d, unsigned long long *total, unsigned long long *used, unsigned long long *free_b) {
    if (vgpu_cfg.mem_blocked[d]) { /* the limit does not parse: nothing is available (fail closed) */
        *total = *used = *free_b = 0;
        return;
    }
    uint64_t lim = vgpu_cfg.mem_limit[d];
#ifdef VGPU_FAULT_NVML_TOTAL_UNCLAMPED /* deliberate fault build only (hami_stack/faults) */
    lim = *total;
#endif
    uint64_t t = lim < *total ? lim : *total;
    uint64_t u = vgpu_used(d);
    *total = t;
    *used = u;
    *free_b = u < t ? t - u : 0;
}

VGPU_API nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory) {
    vgpu_init();
    vgpu_nvml_ready();
    if (!vgpu_real.nvmlDeviceGetMemoryInfo) return NVML_ERROR_FUNCTION_NOT_FOUND;
    nvmlReturn_t r = vgpu_real.nvmlDeviceGetMemoryInfo(device, memory);
    if (r != NVML_SUCCESS || vgpu_depth || !memory) return r;
    int d = nvml_index(device);
    if (d >= 0 && (vgpu_cfg.mem_limit[d] || vgpu_cfg.mem_blocked[d]))
        clamp(d, &memory->total, &memory->used, &memory->free);
    return r;
}

VGPU_API nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory) {
    vgpu_init();
    vgpu_nvml_ready();
    if (!vgpu_real.nvmlDeviceGetMemoryInfo_v2) return NVML_ERROR_FUNCTION_NOT_FOUND;
    nvmlReturn_t r = vgpu_real.nvmlDeviceGetMemoryInfo_v2(device, memory);
    if (r != NVML_SUCCESS || vgpu_depth || !memory) return r;
    int d = nvml_index(device);
    if (d >= 0 && (vgpu_cfg.mem_limit[d] || vgpu_cfg.mem_blocked[d])) {
        clamp(d, &memory->total, &memory->used, &memory->free);
        memory->reserved = 0; /* the container's view: total = used + free */
    }
    return r;
}

/* Filter a process list to the container and report accounted memory. `stride` is the caller's
 * entry size (v1 entries are smaller); returns what the real API would for the filtered list. */
static nvmlReturn_t running(nvmlDevice_t device, unsigned int *count, void *out, size_t stride, nvmlReturn_t raw_rc,
                            nvmlProcessInfo_t *all, unsigned int n_all) {
    int d = nvml_index(device);
    unsigned kept = 0;
    for (unsigned i = 0; i < n_all; i++) {
        for (int s = 0; s < VGPU_MAX_SLOTS; s++) {
            const vgpu_slot_t *sl = &vgpu_region->slots[s];
            if (!sl->pid || (unsigned)sl->hostpid != all[i].pid) continue;
            all[kept] = all[i];
            all[kept].usedGpuMemory = d >= 0 ? sl->used[d] : all[i].usedGpuMemory;
            kept++;
            break;
        }
    }
    (void)raw_rc;
    if (*count < kept || (kept && !out)) {
        *count = kept;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    for (unsigned i = 0; i < kept; i++) {
        char *dst = (char *)out + i * stride;
        if (stride == sizeof(nvmlProcessInfo_v1_t)) {
            nvmlProcessInfo_v1_t v1 = {all[i].pid, all[i].usedGpuMemory};
            memcpy(dst, &v1, sizeof(v1));
        } else {
            memcpy(dst, &all[i], sizeof(all[i]));
        }
    }
    *count = kept;
    return NVML_SUCCESS;
}

static int virtualised(nvmlDevice_t device) {
    int d = nvml_index(device);
    return d >= 0 && (vgpu_cfg.mem_limit[d] || vgpu_cfg.mem_blocked[d]);
}

#define MAX_PROCS 1024
static __thread nvmlProcessInfo_t proc_buf[MAX_PROCS];

VGPU_API nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t device, unsigned int *infoCount,
                                                              nvmlProcessInfo_t *infos) {
    vgpu_init();
    vgpu_nvml_ready();
    if (!vgpu_real.nvmlDeviceGetComputeRunningProcesses_v3) return NVML_ERROR_FUNCTION_NOT_FOUND;
    if (vgpu_depth || !infoCount || !virtualised(device))
        return vgpu_real.nvmlDeviceGetComputeRunningProcesses_v3(device, infoCount, infos);
    unsigned int n = MAX_PROCS;
    nvmlReturn_t r = vgpu_real.nvmlDeviceGetComputeRunningProcesses_v3(device, &n, proc_buf);
    if (r != NVML_SUCCESS) return r;
    return running(device, infoCount, infos, sizeof(nvmlProcessInfo_t), r, proc_buf, n);
}

VGPU_API nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(nvmlDevice_t device, unsigned int *infoCount,
                                                              nvmlProcessInfo_t *infos) {
    vgpu_init();
    vgpu_nvml_ready();
    if (!vgpu_real.nvmlDeviceGetComputeRunningProcesses_v2) return NVML_ERROR_FUNCTION_NOT_FOUND;
    if (vgpu_depth || !infoCount || !virtualised(device))
        return vgpu_real.nvmlDeviceGetComputeRunningProcesses_v2(device, infoCount, infos);
    unsigned int n = MAX_PROCS;
    nvmlReturn_t r = vgpu_real.nvmlDeviceGetComputeRunningProcesses_v2(device, &n, proc_buf);
    if (r != NVML_SUCCESS) return r;
    return running(device, infoCount, infos, sizeof(nvmlProcessInfo_t), r, proc_buf, n);
}

VGPU_API nvmlReturn_t nvmlDeviceGetComputeRunningProcesses(nvmlDevice_t device, unsigned int *infoCount,
                                                           nvmlProcessInfo_v1_t *infos) {
    vgpu_init();
    vgpu_nvml_ready();
    if (!vgpu_real.nvmlDeviceGetComputeRunningProcesses) return NVML_ERROR_FUNCTION_NOT_FOUND;
    if (vgpu_depth || !infoCount || !virtualised(device))
        return vgpu_real.nvmlDeviceGetComputeRunningProcesses(device, infoCount, infos);
    /* the v1 list is read through the v3 entry point when present so entries have one shape */
    unsigned int n = MAX_PROCS;
    nvmlReturn_t r = vgpu_real.nvmlDeviceGetComputeRunningProcesses_v3
                         ? vgpu_real.nvmlDeviceGetComputeRunningProcesses_v3(device, &n, proc_buf)
                         : NVML_ERROR_FUNCTION_NOT_FOUND;
    if (r != NVML_SUCCESS) return vgpu_real.nvmlDeviceGetComputeRunningProcesses(device, infoCount, infos);
    return running(device, infoCount, infos, sizeof(nvmlProcessInfo_v1_t), r, proc_buf, n);
}
