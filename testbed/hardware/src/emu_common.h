/*
 * Internal helpers shared by the emulated libnvidia-ml and libcuda: inventory parsing, visibility,
 * the shared-region attach/lock and the accounting rules. Compiled into both libraries with hidden
 * visibility, so each library carries its own copy and no helper symbol leaks to applications.
 */
#ifndef HAMI_EMU_COMMON_H
#define HAMI_EMU_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "emu_state.h"

#define HAMI_EMU_HIDDEN __attribute__((visibility("hidden")))
#define HAMI_EMU_EXPORT __attribute__((visibility("default")))

/* load results */
#define HAMI_EMU_OK 0
#define HAMI_EMU_ERR_MISSING 1 /* env unset, directory or gpus.conf absent: "no driver" */
#define HAMI_EMU_ERR_CORRUPT 2 /* gpus.conf unreadable / malformed, shared.bin absent or short */
#define HAMI_EMU_ERR_VERSION 3 /* shared.bin magic or layout version differs from this build */

typedef struct hami_emu_gpu_info {
    int phys_index;
    char uuid[96];
    char name[96];
    char serial[32];
    char pci_bus_id[32]; /* 00000000:07:00.0 */
    unsigned domain, bus, device, function;
    unsigned pci_device_id, pci_subsystem_id;
    uint64_t memory_bytes;
    uint64_t reserved_bytes;
    int numa_node;
    int cc_major, cc_minor;
    int sm_count;
    unsigned minor_number;
    unsigned mig_mode;
    unsigned mig_capable;
    int pci_switch;
    unsigned nvlink_count;
    char cpu_affinity[256]; /* cpulist, e.g. "0-31,64-95" */
    unsigned max_sm_clock_mhz, idle_sm_clock_mhz, max_mem_clock_mhz;
    unsigned power_limit_mw, idle_power_mw;
    unsigned idle_temp_c;
    unsigned mem_bus_width, l2_cache_bytes, max_threads_per_sm;
    uint64_t context_bytes; /* device memory one CUDA context takes (module images, stacks, heap) */
} hami_emu_gpu_info_t;

typedef struct hami_emu_node {
    char driver_version[80];
    int cuda_driver_version;
    char nvml_version[80];
    int gpu_count;
    hami_emu_gpu_info_t gpus[HAMI_EMU_MAX_GPUS];
    int visible_count;
    int visible[HAMI_EMU_MAX_GPUS]; /* physical indexes, in visible order */
    hami_emu_shared_t *shm;
} hami_emu_node_t;

/* Parse gpus.conf, attach shared.bin, apply NVIDIA_VISIBLE_DEVICES. */
HAMI_EMU_HIDDEN int hami_emu_load(hami_emu_node_t *node);
HAMI_EMU_HIDDEN void hami_emu_unload(hami_emu_node_t *node);

/* Narrow the visible list by CUDA_VISIBLE_DEVICES (CUDA only; NVML ignores it, as the real one does). */
HAMI_EMU_HIDDEN void hami_emu_apply_cuda_visible(hami_emu_node_t *node);

HAMI_EMU_HIDDEN void hami_emu_lock(hami_emu_shared_t *shm);
HAMI_EMU_HIDDEN void hami_emu_unlock(hami_emu_shared_t *shm);
HAMI_EMU_HIDDEN int64_t hami_emu_now_ns(void);

/* All of the following expect the lock to be held. */
HAMI_EMU_HIDDEN void hami_emu_sweep_dead(hami_emu_gpu_t *gpu);
/* 0 on success, -1 when the card has too little free memory, -2 when the process table is full */
HAMI_EMU_HIDDEN int hami_emu_mem_reserve(hami_emu_gpu_t *gpu, uint64_t total_bytes, int32_t pid, uint64_t bytes);
HAMI_EMU_HIDDEN void hami_emu_mem_release(hami_emu_gpu_t *gpu, int32_t pid, uint64_t bytes);
HAMI_EMU_HIDDEN void hami_emu_ctx_attach(hami_emu_gpu_t *gpu, int32_t pid, int delta);
/* percent of [now - window, now) covered by kernel intervals (of one pid, or of all when pid is 0) */
HAMI_EMU_HIDDEN unsigned hami_emu_utilization(const hami_emu_gpu_t *gpu, int64_t now, int64_t window_ns, int32_t pid);
HAMI_EMU_HIDDEN void hami_emu_add_interval(hami_emu_gpu_t *gpu, int64_t start, int64_t end, int32_t pid);

/* Consume one injected failure: returns the code to fail with, or 0. Takes the lock itself. */
HAMI_EMU_HIDDEN int hami_emu_take_nvml_fault(hami_emu_shared_t *shm, int phys);
HAMI_EMU_HIDDEN int hami_emu_take_cuda_fault(hami_emu_shared_t *shm, int phys);

/* bounded string copy that reports whether dst was large enough (including the NUL) */
HAMI_EMU_HIDDEN int hami_emu_copy_str(char *dst, size_t len, const char *src);

#endif
