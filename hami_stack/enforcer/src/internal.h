/* Internal interfaces of libvgpu.so; everything here has hidden visibility. */
#ifndef VGPU_INTERNAL_H
#define VGPU_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "vgpu_cuda.h"
#include "vgpu_nvml.h"
#include "vgpu_region.h"

#define VGPU_API __attribute__((visibility("default")))
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)

/* ---- logging (log.c) ---- */
enum { VGPU_LOG_ERROR = 0, VGPU_LOG_WARN = 2, VGPU_LOG_INFO = 3, VGPU_LOG_DEBUG = 4 };
extern int vgpu_log_level;
void vgpu_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define LOG_ERROR(...) vgpu_log(VGPU_LOG_ERROR, __VA_ARGS__)
#define LOG_WARN(...) vgpu_log(VGPU_LOG_WARN, __VA_ARGS__)
#define LOG_INFO(...) vgpu_log(VGPU_LOG_INFO, __VA_ARGS__)
#define LOG_DEBUG(...) vgpu_log(VGPU_LOG_DEBUG, __VA_ARGS__)

/* ---- driver types the shim's public header does not declare (layouts as in the driver API) ---- */
typedef struct CUarray_st *CUarray_vgpu;
typedef struct CUmipmappedArray_st *CUmipmappedArray_vgpu;
typedef struct vgpu_CUDA_ARRAY_DESCRIPTOR {
    size_t Width;
    size_t Height;
    int Format; /* CUarray_format */
    unsigned int NumChannels;
} vgpu_CUDA_ARRAY_DESCRIPTOR;
typedef struct vgpu_CUDA_ARRAY3D_DESCRIPTOR {
    size_t Width;
    size_t Height;
    size_t Depth;
    int Format;
    unsigned int NumChannels;
    unsigned int Flags;
} vgpu_CUDA_ARRAY3D_DESCRIPTOR;
typedef struct vgpu_CUmemPoolProps {
    int allocType;
    int handleTypes;
    CUmemLocation location;
    void *win32SecurityAttributes;
    size_t maxSize;
    unsigned short usage;
    unsigned char reserved[54];
} vgpu_CUmemPoolProps;

/* ---- configuration from the environment (config.c) ---- */
typedef struct vgpu_config {
    uint64_t mem_limit[VGPU_MAX_DEVICES]; /* bytes, 0: none */
    /* a limit was asked for but no value for this device parses: allocations are refused (fail closed) */
    uint8_t mem_blocked[VGPU_MAX_DEVICES];
    uint32_t sm_limit[VGPU_MAX_DEVICES];  /* 1..99 limits; 0: none */
    uint32_t policy;                      /* VGPU_POLICY_* */
    int32_t priority;
    int sm_any; /* some device has an SM limit and the policy is not disable */
    char cache_path[4096];
    int cache_enforced; /* installed system-wide: the region must sit in the shim's directory */
    int cache_refused;  /* ... and the environment named another place: private region, all refused */
} vgpu_config_t;
extern vgpu_config_t vgpu_cfg;
void vgpu_config_load(void);
/* strict parsers, exposed for the unit test program: 0 ok, -1 rejected */
int vgpu_parse_size(const char *s, uint64_t *out);
int vgpu_parse_percent(const char *s, uint32_t *out);

/* ---- real driver entry points (loader.c) ---- */
typedef struct vgpu_real {
    CUresult (*cuGetProcAddress)(const char *, void **, int, cuuint64_t);
    CUresult (*cuGetProcAddress_v2)(const char *, void **, int, cuuint64_t, CUdriverProcAddressQueryResult *);
    CUresult (*cuMemAlloc_v2)(CUdeviceptr *, size_t);
    CUresult (*cuMemAllocManaged)(CUdeviceptr *, size_t, unsigned int);
    CUresult (*cuMemAllocPitch_v2)(CUdeviceptr *, size_t *, size_t, size_t, unsigned int);
    CUresult (*cuMemFree_v2)(CUdeviceptr);
    CUresult (*cuMemAllocAsync)(CUdeviceptr *, size_t, CUstream);
    CUresult (*cuMemAllocAsync_ptsz)(CUdeviceptr *, size_t, CUstream);
    CUresult (*cuMemAllocFromPoolAsync)(CUdeviceptr *, size_t, CUmemoryPool, CUstream);
    CUresult (*cuMemAllocFromPoolAsync_ptsz)(CUdeviceptr *, size_t, CUmemoryPool, CUstream);
    CUresult (*cuMemFreeAsync)(CUdeviceptr, CUstream);
    CUresult (*cuMemFreeAsync_ptsz)(CUdeviceptr, CUstream);
    CUresult (*cuMemCreate)(CUmemGenericAllocationHandle *, size_t, const CUmemAllocationProp *, unsigned long long);
    CUresult (*cuMemRelease)(CUmemGenericAllocationHandle);
    CUresult (*cuMemMap)(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle, unsigned long long);
    CUresult (*cuMemUnmap)(CUdeviceptr, size_t);
    CUresult (*cuMemAddressFree)(CUdeviceptr, size_t);
    CUresult (*cuMemPoolCreate)(CUmemoryPool *, const vgpu_CUmemPoolProps *);
    CUresult (*cuDeviceGetMemPool)(CUmemoryPool *, CUdevice);
    CUresult (*cuDeviceGetDefaultMemPool)(CUmemoryPool *, CUdevice);
    CUresult (*cuMemPoolDestroy)(CUmemoryPool);
    CUresult (*cuMemPoolTrimTo)(CUmemoryPool, size_t);
    CUresult (*cuMemPoolSetAttribute)(CUmemoryPool, int, void *);
    CUresult (*cuArrayCreate_v2)(CUarray_vgpu *, const vgpu_CUDA_ARRAY_DESCRIPTOR *);
    CUresult (*cuArray3DCreate_v2)(CUarray_vgpu *, const vgpu_CUDA_ARRAY3D_DESCRIPTOR *);
    CUresult (*cuMipmappedArrayCreate)(CUmipmappedArray_vgpu *, const vgpu_CUDA_ARRAY3D_DESCRIPTOR *, unsigned int);
    CUresult (*cuArrayDestroy)(CUarray_vgpu);
    CUresult (*cuMipmappedArrayDestroy)(CUmipmappedArray_vgpu);
    CUresult (*cuCtxDestroy_v2)(CUcontext);
    CUresult (*cuCtxDestroy)(CUcontext);
    CUresult (*cuDevicePrimaryCtxRelease_v2)(CUdevice);
    CUresult (*cuDevicePrimaryCtxRelease)(CUdevice);
    CUresult (*cuDevicePrimaryCtxReset_v2)(CUdevice);
    CUresult (*cuDevicePrimaryCtxReset)(CUdevice);
    CUresult (*cuMemGetInfo_v2)(size_t *, size_t *);
    CUresult (*cuDeviceTotalMem_v2)(size_t *, CUdevice);
    CUresult (*cuDevicePrimaryCtxRetain)(CUcontext *, CUdevice);
    CUresult (*cuCtxCreate_v2)(CUcontext *, unsigned int, CUdevice);
    CUresult (*cuCtxCreate_v3)(CUcontext *, CUexecAffinityParam *, int, unsigned int, CUdevice);
    CUresult (*cuCtxCreate_v4)(CUcontext *, CUctxCreateParams *, unsigned int, CUdevice);
    CUresult (*cuLaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                               CUstream, void **, void **);
    CUresult (*cuLaunchKernel_ptsz)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                                    unsigned, CUstream, void **, void **);
    CUresult (*cuLaunchKernelEx)(const CUlaunchConfig *, CUfunction, void **, void **);
    CUresult (*cuLaunchKernelEx_ptsz)(const CUlaunchConfig *, CUfunction, void **, void **);
    CUresult (*cuLaunchCooperativeKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                                          unsigned, CUstream, void **);
    CUresult (*cuLaunchCooperativeKernel_ptsz)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                                               unsigned, unsigned, CUstream, void **);
    CUresult (*cuGraphLaunch)(CUgraphExec, CUstream);
    CUresult (*cuGraphLaunch_ptsz)(CUgraphExec, CUstream);
    /* not wrapped */
    vgpu_cuCtxGetDevice_t cuCtxGetDevice;
    CUresult (*cuCtxGetCurrent)(CUcontext *);
    CUresult (*cuCtxPushCurrent_v2)(CUcontext);
    CUresult (*cuCtxPopCurrent_v2)(CUcontext *);
    CUresult (*cuStreamGetCtx)(CUstream, CUcontext *);
    CUresult (*cuMemPoolGetAttribute)(CUmemoryPool, int, void *);
    CUresult (*cuDevicePrimaryCtxGetState)(CUdevice, unsigned int *, int *);
    vgpu_cuDeviceGetUuid_t cuDeviceGetUuid_v2;
    vgpu_cuDeviceGetUuid_t cuDeviceGetUuid;
    /* NVML */
    nvmlReturn_t (*nvmlDeviceGetMemoryInfo)(nvmlDevice_t, nvmlMemory_t *);
    nvmlReturn_t (*nvmlDeviceGetMemoryInfo_v2)(nvmlDevice_t, nvmlMemory_v2_t *);
    nvmlReturn_t (*nvmlDeviceGetComputeRunningProcesses)(nvmlDevice_t, unsigned int *, nvmlProcessInfo_v1_t *);
    nvmlReturn_t (*nvmlDeviceGetComputeRunningProcesses_v2)(nvmlDevice_t, unsigned int *, nvmlProcessInfo_t *);
    nvmlReturn_t (*nvmlDeviceGetComputeRunningProcesses_v3)(nvmlDevice_t, unsigned int *, nvmlProcessInfo_t *);
    vgpu_nvmlInit_v2_t nvmlInit_v2;
    vgpu_nvmlDeviceGetHandleByIndex_v2_t nvmlDeviceGetHandleByIndex_v2;
    vgpu_nvmlDeviceGetHandleByUUID_t nvmlDeviceGetHandleByUUID;
    vgpu_nvmlDeviceGetIndex_t nvmlDeviceGetIndex;
    vgpu_nvmlDeviceGetUtilizationRates_t nvmlDeviceGetUtilizationRates;
    vgpu_nvmlDeviceGetProcessUtilization_t nvmlDeviceGetProcessUtilization;
} vgpu_real_t;
extern vgpu_real_t vgpu_real;
extern atomic_int vgpu_ready; /* 1 once vgpu_init() has run in this process */
void vgpu_init_slow(void);
static inline void vgpu_init(void) {
    if (UNLIKELY(!atomic_load_explicit(&vgpu_ready, memory_order_acquire))) vgpu_init_slow();
}
int vgpu_nvml_ready(void); /* loads NVML lazily; 1 when usable */

/* nesting guard: a wrapper called from inside the driver (or from another wrapper) passes through */
extern __thread int vgpu_depth __attribute__((tls_model("initial-exec")));

/* CUDA ordinal (after CUDA_VISIBLE_DEVICES) -> container device index (NVML index), -1 if unknown */
int vgpu_container_index(CUdevice ordinal);
int vgpu_current_index(void); /* device of the current context, -1 without one */

/* ---- shared region (region.c) ---- */
extern vgpu_region_t *vgpu_region;
extern int vgpu_slot; /* this process' slot, -1 when not registered */
extern int vgpu_region_private; /* 1: fallback to a process-private region */
void vgpu_region_open(void);
void vgpu_region_lock(void);
void vgpu_region_unlock(void);
/* charge bytes on device d against limit (0: none); CUDA_ERROR_OUT_OF_MEMORY without charging */
CUresult vgpu_charge(int d, uint64_t bytes, uint64_t limit);
void vgpu_uncharge(int d, uint64_t bytes);
uint64_t vgpu_used(int d);
void vgpu_sweep_dead_locked(void);
int vgpu_is_container_pid(unsigned int hostpid);
void vgpu_region_after_fork_child(void);
void vgpu_note_device(int d, uint64_t physical, const char *uuid);

/* ---- memory (memory.c) ---- */
void vgpu_memory_after_fork_child(void);
void vgpu_memory_prefork(void);
void vgpu_memory_postfork_parent(void);

/* ---- compute limiter (limiter.c) ---- */
void vgpu_limiter_after_fork_child(void);
void vgpu_limiter_on_context(int d);

/* ---- time ---- */
int64_t vgpu_now_ns(void);

#endif
