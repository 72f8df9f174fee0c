/*
 * Emulated AscendCL (libascendcl.so): the application-facing device and memory calls, each a thin
 * layer over the emulated runtime (libruntime.so). The runtime is called through its exported
 * symbols, as the real AscendCL calls it, so a limiter preloaded into the process (HAMi's hami-core
 * mode: /etc/ld.so.preload) interposes the runtime calls made on an application's behalf.
 */
#include <stddef.h>
#include <stdint.h>

#include "ascend_rt_emu.h"

#define EXPORT __attribute__((visibility("default")))

static int g_init;

EXPORT aclError aclInit(const char *configPath) {
    (void)configPath;
    if (g_init) return ACL_ERROR_REPEAT_INITIALIZE;
    g_init = 1;
    return ACL_SUCCESS;
}

EXPORT aclError aclFinalize(void) {
    if (!g_init) return ACL_ERROR_UNINITIALIZE;
    g_init = 0;
    return ACL_SUCCESS;
}

#define NEED_INIT() \
    do { \
        if (!g_init) return ACL_ERROR_UNINITIALIZE; \
    } while (0)

EXPORT aclError aclrtSetDevice(int32_t deviceId) {
    NEED_INIT();
    return rtSetDevice(deviceId);
}

EXPORT aclError aclrtResetDevice(int32_t deviceId) {
    NEED_INIT();
    return rtDeviceReset(deviceId);
}

EXPORT aclError aclrtGetDevice(int32_t *deviceId) {
    NEED_INIT();
    return rtGetDevice(deviceId);
}

EXPORT aclError aclrtGetDeviceCount(uint32_t *count) {
    NEED_INIT();
    if (!count) return ACL_ERROR_INVALID_PARAM;
    int32_t n = 0;
    aclError rc = rtGetDeviceCount(&n);
    if (rc == ACL_SUCCESS) *count = (uint32_t)n;
    return rc;
}

EXPORT aclError aclrtMalloc(void **devPtr, size_t size, int policy) {
    (void)policy; /* huge/normal page policies: one kind of memory here */
    NEED_INIT();
    if (!devPtr || size == 0) return ACL_ERROR_INVALID_PARAM;
    return rtMalloc(devPtr, (uint64_t)size, 0, 0);
}

EXPORT aclError aclrtFree(void *devPtr) {
    NEED_INIT();
    if (!devPtr) return ACL_ERROR_INVALID_PARAM;
    return rtFree(devPtr);
}

EXPORT aclError aclrtGetMemInfo(int attr, size_t *free_bytes, size_t *total) {
    NEED_INIT();
    if (!free_bytes || !total) return ACL_ERROR_INVALID_PARAM;
    return rtMemGetInfoEx(attr == ACL_DDR_MEM ? RT_MEMORYINFO_DDR : RT_MEMORYINFO_HBM, free_bytes, total);
}
