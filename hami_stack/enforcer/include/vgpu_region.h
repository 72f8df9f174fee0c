/*
 * Layout of the per-container shared region: the file named by CUDA_DEVICE_MEMORY_SHARED_CACHE,
 * mmap'ed MAP_SHARED by every process of one container and read by the node monitor.
 *
 * This header is the single C declaration. hami_stack/monitor/region.py mirrors it with ctypes and a
 * test compares both against the vgpu_layout program (sizeof/offsetof dump). Any incompatible change
 * bumps VGPU_REGION_MAJOR (readers refuse another major); appending fields at the end of the header
 * bumps VGPU_REGION_MINOR only. Fields are fixed-width; no pointers, so 64-bit readers agree.
 *
 * Consistency: `lock` (robust, process-shared pthread mutex) guards slot registration and every
 * change of slots[].used / used[]. used[d] always equals the sum of slots[].used[d]; a holder killed
 * mid-update is detected through EOWNERDEAD and the sums are recomputed from the slots.
 */
#ifndef VGPU_REGION_H
#define VGPU_REGION_H

#include <stdint.h>

#define VGPU_REGION_MAGIC 0x31504756494d4148ULL /* "HAMIVGP1" little-endian */
#define VGPU_REGION_MAJOR 1u
#define VGPU_REGION_MINOR 0u
#define VGPU_MAX_DEVICES 16
#define VGPU_MAX_SLOTS 1024
#define VGPU_UUID_LEN 96
#define VGPU_LOCK_BYTES 64 /* room for a pthread_mutex_t on every glibc ABI we target */

/* slot status */
#define VGPU_SLOT_FREE 0u
#define VGPU_SLOT_RUNNING 1u

/* policy values (GPU_CORE_UTILIZATION_POLICY) */
#define VGPU_POLICY_DEFAULT 0u
#define VGPU_POLICY_FORCE 1u
#define VGPU_POLICY_DISABLE 2u

/* One process of the container. pid 0 marks a free slot. */
typedef struct vgpu_slot {
    int32_t pid;         /* pid in the container's namespace */
    int32_t hostpid;     /* pid as NVML reports it; 0 while unknown */
    uint64_t start_time; /* /proc/<pid>/stat starttime (clock ticks): tells a reused pid apart */
    uint32_t status;
    int32_t priority;
    int64_t last_kernel_unix_s;            /* wall-clock second of the newest launch, 0: none */
    uint64_t used[VGPU_MAX_DEVICES];       /* bytes accounted to this process per device */
    uint32_t sm_util[VGPU_MAX_DEVICES];    /* last SM utilisation (percent) measured for this process */
    uint64_t launches[VGPU_MAX_DEVICES];   /* kernel launches seen by the compute limiter */
} vgpu_slot_t;

typedef struct vgpu_region {
    uint64_t magic; /* written last at creation (release order); readers check it first */
    uint32_t major;
    uint32_t minor;
    uint32_t header_size; /* sizeof(vgpu_region_t) of the writer */
    uint32_t slot_size;   /* sizeof(vgpu_slot_t) */
    uint32_t max_devices;
    uint32_t max_slots;
    union {
        unsigned char bytes[VGPU_LOCK_BYTES];
        uint64_t align;
    } lock;
    uint64_t generation; /* bumped by every accounting change; lets pollers skip unchanged regions */
    int32_t priority;    /* CUDA_TASK_PRIORITY of the creator */
    uint32_t policy;     /* VGPU_POLICY_* of the creator */
    uint32_t utilization_switch; /* reserved for a node monitor's contention feedback; 0: unused */
    uint32_t device_count;       /* devices the shim has seen (highest index + 1) */
    uint64_t limit[VGPU_MAX_DEVICES];   /* memory limit in bytes; 0: none */
    uint32_t sm_limit[VGPU_MAX_DEVICES]; /* percent; 0: none */
    uint64_t used[VGPU_MAX_DEVICES];    /* sum of slots[].used */
    char uuid[VGPU_MAX_DEVICES][VGPU_UUID_LEN];
    uint64_t physical[VGPU_MAX_DEVICES]; /* device memory as the driver reports it; 0: unknown */
    vgpu_slot_t slots[VGPU_MAX_SLOTS];
} vgpu_region_t;

#endif
