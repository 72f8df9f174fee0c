/*
 * Layout of the per-node emulated GPU state shared by every process on a node.
 *
 * The state directory ($HAMI_EMU_GPU_STATE_DIR) holds:
 *   gpus.conf   static inventory, "key=value" lines, one "[gpu.N]" section per GPU (written by Python)
 *   shared.bin  this struct, mmap'ed MAP_SHARED by every process that loads the emulated libraries
 *
 * This header is the single C declaration of the shared layout; testbed/hardware/state.py mirrors it
 * with ctypes and a test compares both through the emu_layout program (sizeof/offsetof dump).
 * Any change to a struct here must bump HAMI_EMU_LAYOUT_VERSION so stale mappings are refused.
 */
#ifndef HAMI_EMU_STATE_H
#define HAMI_EMU_STATE_H

#include <stdint.h>

#define HAMI_EMU_MAGIC 0x31555047494d4148ULL /* "HAMIGPU1" little-endian */
#define HAMI_EMU_LAYOUT_VERSION 2u
#define HAMI_EMU_MAX_GPUS 16
#define HAMI_EMU_MAX_PROCS 64      /* per GPU */
#define HAMI_EMU_MAX_XIDS 32       /* ring of recent Xid events per GPU */
/* ring of recent kernel busy intervals per GPU: enough for a 1 s window of 200 us kernels from three
 * processes (back-to-back kernels of one process merge into one interval) */
#define HAMI_EMU_MAX_INTERVALS 16384
#define HAMI_EMU_MUTEX_BYTES 64    /* room for a pthread_mutex_t on any glibc ABI we target */

/* health values */
#define HAMI_EMU_HEALTHY 0u
#define HAMI_EMU_UNHEALTHY 1u /* reported through events / health only; queries still work */
#define HAMI_EMU_LOST 2u      /* fallen off the bus: NVML returns GPU_IS_LOST, CUDA fails */

/* One process' memory on one GPU. pid 0 marks a free slot. */
typedef struct hami_emu_proc {
    int32_t pid;
    uint32_t contexts; /* live contexts of this pid on this GPU (reported by NVML as a running process) */
    uint64_t used_bytes;
} hami_emu_proc_t;

/* One Xid event. seq starts at 1; a reader remembers the last seq it saw. */
typedef struct hami_emu_xid {
    uint64_t seq;
    uint64_t xid;
    int64_t time_ns; /* CLOCK_MONOTONIC */
} hami_emu_xid_t;

/* One emulated kernel execution [start_ns, end_ns) on CLOCK_MONOTONIC; end may lie in the future. */
typedef struct hami_emu_interval {
    int64_t start_ns;
    int64_t end_ns;
    int32_t pid;
    uint32_t reserved;
} hami_emu_interval_t;

typedef struct hami_emu_gpu {
    uint64_t used_bytes; /* sum of procs[].used_bytes */
    uint32_t health;
    uint32_t mem_query_unsupported; /* nonzero: NVML memory queries return NOT_SUPPORTED */
    uint32_t nvml_fail_count;       /* the next N NVML device calls on this GPU fail ... */
    int32_t nvml_fail_code;         /* ... with this nvmlReturn_t */
    uint32_t cuda_fail_count;       /* the next N CUDA calls touching this GPU fail ... */
    int32_t cuda_fail_code;         /* ... with this CUresult */
    uint64_t xid_seq;               /* seq of the newest Xid event (0: none yet) */
    uint64_t kernel_launches;
    uint32_t interval_next; /* ring write position in busy[] */
    uint32_t reserved0;
    hami_emu_xid_t xids[HAMI_EMU_MAX_XIDS]; /* slot = (seq - 1) % HAMI_EMU_MAX_XIDS */
    hami_emu_interval_t busy[HAMI_EMU_MAX_INTERVALS];
    hami_emu_proc_t procs[HAMI_EMU_MAX_PROCS];
} hami_emu_gpu_t;

typedef struct hami_emu_shared {
    uint64_t magic;
    uint32_t layout_version;
    uint32_t gpu_count;       /* GPUs described in gpus.conf */
    uint32_t header_size;     /* sizeof(hami_emu_shared_t), checked on attach */
    uint32_t gpu_struct_size; /* sizeof(hami_emu_gpu_t) */
    uint64_t generation;      /* bumped by every writer; lets pollers notice changes cheaply */
    /* robust, process-shared pthread mutex guarding everything below and above */
    union {
        unsigned char bytes[HAMI_EMU_MUTEX_BYTES];
        uint64_t align;
    } lock;
    hami_emu_gpu_t gpus[HAMI_EMU_MAX_GPUS];
} hami_emu_shared_t;

#endif
