/*
 * The shim's own declarations of the NVML subset it intercepts or calls. Names, values and struct
 * layouts follow the public NVML API; the real nvml.h is never included. Checked against the
 * emulated library's header by tests/enforcer (prototype redeclaration under -Werror).
 */
#ifndef VGPU_NVML_H
#define VGPU_NVML_H

#ifndef VGPU_USE_REAL_TYPES

typedef enum nvmlReturn_enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_FUNCTION_NOT_FOUND = 13,
    NVML_ERROR_UNKNOWN = 999
} nvmlReturn_t;

typedef struct nvmlDevice_st *nvmlDevice_t;

typedef struct nvmlMemory_st {
    unsigned long long total;
    unsigned long long free;
    unsigned long long used;
} nvmlMemory_t;

typedef struct nvmlMemory_v2_st {
    unsigned int version;
    unsigned long long total;
    unsigned long long reserved;
    unsigned long long free;
    unsigned long long used;
} nvmlMemory_v2_t;

typedef struct nvmlUtilization_st {
    unsigned int gpu;
    unsigned int memory;
} nvmlUtilization_t;

typedef struct nvmlProcessInfo_v1_st {
    unsigned int pid;
    unsigned long long usedGpuMemory;
} nvmlProcessInfo_v1_t;

typedef struct nvmlProcessInfo_st {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlProcessInfo_t;

typedef struct nvmlProcessUtilizationSample_st {
    unsigned int pid;
    unsigned long long timeStamp;
    unsigned int smUtil;
    unsigned int memUtil;
    unsigned int encUtil;
    unsigned int decUtil;
} nvmlProcessUtilizationSample_t;

#endif /* VGPU_USE_REAL_TYPES */

/* intercepted */
nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory);
nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory);
nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t device, unsigned int *infoCount,
                                                     nvmlProcessInfo_t *infos);

/* called through the driver */
typedef nvmlReturn_t (*vgpu_nvmlInit_v2_t)(void);
typedef nvmlReturn_t (*vgpu_nvmlDeviceGetHandleByIndex_v2_t)(unsigned int index, nvmlDevice_t *device);
typedef nvmlReturn_t (*vgpu_nvmlDeviceGetHandleByUUID_t)(const char *uuid, nvmlDevice_t *device);
typedef nvmlReturn_t (*vgpu_nvmlDeviceGetIndex_t)(nvmlDevice_t device, unsigned int *index);
typedef nvmlReturn_t (*vgpu_nvmlDeviceGetUtilizationRates_t)(nvmlDevice_t device, nvmlUtilization_t *utilization);
typedef nvmlReturn_t (*vgpu_nvmlDeviceGetProcessUtilization_t)(nvmlDevice_t device,
                                                              nvmlProcessUtilizationSample_t *utilization,
                                                              unsigned int *processSamplesCount,
                                                              unsigned long long lastSeenTimeStamp);

#endif
