/*
 * Our own declarations of the slice of Huawei's CANN runtime C API (libruntime.so, the "RTS" layer)
 * and AscendCL (libascendcl.so) that the emulated Ascend runtime provides: device selection, device
 * memory allocation and the memory query. Names, argument orders and error numbers are restated
 * from CANN's public API documentation and from the symbols HAMi's in-container NPU limiter
 * (hami-vnpu-core) interposes (rtMalloc, rtFree, rtMemGetInfoEx); the real headers ship with CANN and
 * were not available here, so these declarations are NOT checked against them.
 */
#ifndef HAMI_ASCEND_RT_EMU_H
#define HAMI_ASCEND_RT_EMU_H

#include <stddef.h>
#include <stdint.h>

typedef int32_t rtError_t;
typedef int aclError;

#define ACL_SUCCESS 0
#define ACL_ERROR_INVALID_PARAM 100000
#define ACL_ERROR_UNINITIALIZE 100001
#define ACL_ERROR_REPEAT_INITIALIZE 100002
#define ACL_ERROR_RT_PARAM_INVALID 107000
#define ACL_ERROR_RT_INVALID_DEVICEID 107001
#define ACL_ERROR_RT_CONTEXT_NULL 107002
#define ACL_ERROR_RT_MEMORY_ALLOCATION 207001 /* out of device memory */
#define ACL_ERROR_RT_INTERNAL_ERROR 507899
#define ACL_ERROR_RT_DRV_INTERNAL_ERROR 507900

/* what rtMemGetInfoEx / aclrtGetMemInfo report on (the emulated NPU has one device memory: all alike) */
#define RT_MEMORYINFO_DDR 0
#define RT_MEMORYINFO_HBM 1
#define ACL_DDR_MEM 0
#define ACL_HBM_MEM 1

/* libruntime.so */
rtError_t rtSetDevice(int32_t device);
rtError_t rtGetDevice(int32_t *device);
rtError_t rtGetDeviceCount(int32_t *count);
rtError_t rtDeviceReset(int32_t device);
rtError_t rtGetDevicePhyIdByIndex(uint32_t devIndex, uint32_t *phyId);
rtError_t rtMalloc(void **devPtr, uint64_t size, uint32_t type, uint16_t moduleId);
rtError_t rtFree(void *devPtr);
rtError_t rtMemGetInfoEx(uint32_t memInfoType, size_t *free, size_t *total);

/* libascendcl.so (calls the runtime through its exported symbols, so a preloaded limiter sees them) */
aclError aclInit(const char *configPath);
aclError aclFinalize(void);
aclError aclrtSetDevice(int32_t deviceId);
aclError aclrtResetDevice(int32_t deviceId);
aclError aclrtGetDevice(int32_t *deviceId);
aclError aclrtGetDeviceCount(uint32_t *count);
aclError aclrtMalloc(void **devPtr, size_t size, int policy);
aclError aclrtFree(void *devPtr);
aclError aclrtGetMemInfo(int attr, size_t *free, size_t *total);

#endif
