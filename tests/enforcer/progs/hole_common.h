/*
 * Shared scaffolding of the shim's regression programs (hole_*.c): the driver entry points they use,
 * resolved through dlopen + dlsym of libcuda.so.1 (the shim, preloaded, wraps what it hooks), and a
 * CHECK macro that prints every failed expectation. A program exits 0 only if every CHECK held.
 */
#ifndef HOLE_COMMON_H
#define HOLE_COMMON_H
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef void *CUcontext;
typedef void *CUstream;
typedef void *CUmemoryPool;
typedef void *CUarray;
typedef unsigned long long CUmemGenericAllocationHandle;

typedef struct {
    int type;
    int requestedHandleTypes;
    struct {
        int type;
        int id;
    } location;
    void *win32HandleMetaData;
    unsigned char allocFlags[8];
} MemProp;

typedef struct {
    int allocType;
    int handleTypes;
    struct {
        int type;
        int id;
    } location;
    void *win32SecurityAttributes;
    size_t maxSize;
    unsigned short usage;
    unsigned char reserved[54];
} PoolProps;

typedef struct {
    size_t Width, Height;
    int Format;
    unsigned NumChannels;
} ArrayDesc;

typedef struct {
    size_t Width, Height, Depth;
    int Format;
    unsigned NumChannels, Flags;
} Array3DDesc;

enum { OK = 0, OOM = 2 };
#define MIB (1ULL << 20)

static int failures;
#define CHECK(cond, ...)                                                                                       \
    do {                                                                                                       \
        if (!(cond)) {                                                                                         \
            failures++;                                                                                        \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                                         \
            printf(__VA_ARGS__);                                                                               \
            printf("\n");                                                                                      \
        }                                                                                                      \
    } while (0)
#define EXPECT_RC(call, want)                                                                                  \
    do {                                                                                                       \
        int _rc = (call);                                                                                      \
        CHECK(_rc == (want), "%s returned %d, expected %d", #call, _rc, (want));                              \
    } while (0)

static void *cuda;
static void *sym(const char *name) {
    void *p = dlsym(cuda, name);
    if (!p) {
        printf("FAIL: libcuda.so.1 lacks %s\n", name);
        exit(3);
    }
    return p;
}
#define FN(ret, name, ...) ((ret(*)(__VA_ARGS__))sym(name))

#define cuInit(f) FN(CUresult, "cuInit", unsigned)(f)
#define cuDevicePrimaryCtxRetain(c, d) FN(CUresult, "cuDevicePrimaryCtxRetain", CUcontext *, CUdevice)(c, d)
#define cuDevicePrimaryCtxRelease(d) FN(CUresult, "cuDevicePrimaryCtxRelease_v2", CUdevice)(d)
#define cuDevicePrimaryCtxReset(d) FN(CUresult, "cuDevicePrimaryCtxReset_v2", CUdevice)(d)
#define cuCtxSetCurrent(c) FN(CUresult, "cuCtxSetCurrent", CUcontext)(c)
#define cuCtxCreate(c, f, d) FN(CUresult, "cuCtxCreate_v2", CUcontext *, unsigned, CUdevice)(c, f, d)
#define cuCtxDestroy(c) FN(CUresult, "cuCtxDestroy_v2", CUcontext)(c)
#define cuMemAlloc(p, n) FN(CUresult, "cuMemAlloc_v2", CUdeviceptr *, size_t)(p, n)
#define cuMemFree(p) FN(CUresult, "cuMemFree_v2", CUdeviceptr)(p)
#define cuMemGetInfo(f, t) FN(CUresult, "cuMemGetInfo_v2", size_t *, size_t *)(f, t)
#define cuDeviceTotalMem(b, d) FN(CUresult, "cuDeviceTotalMem_v2", size_t *, CUdevice)(b, d)
#define cuStreamCreate(s, f) FN(CUresult, "cuStreamCreate", CUstream *, unsigned)(s, f)
#define cuMemAllocAsync(p, n, s) FN(CUresult, "cuMemAllocAsync", CUdeviceptr *, size_t, CUstream)(p, n, s)
#define cuMemFreeAsync(p, s) FN(CUresult, "cuMemFreeAsync", CUdeviceptr, CUstream)(p, s)
#define cuMemAllocFromPoolAsync(p, n, pool, s)                                                                 \
    FN(CUresult, "cuMemAllocFromPoolAsync", CUdeviceptr *, size_t, CUmemoryPool, CUstream)(p, n, pool, s)
#define cuMemPoolCreate(p, props) FN(CUresult, "cuMemPoolCreate", CUmemoryPool *, const PoolProps *)(p, props)
#define cuDeviceGetMemPool(p, d) FN(CUresult, "cuDeviceGetMemPool", CUmemoryPool *, CUdevice)(p, d)
#define cuMemPoolSetAttribute(p, a, v) FN(CUresult, "cuMemPoolSetAttribute", CUmemoryPool, int, void *)(p, a, v)
#define cuMemPoolTrimTo(p, n) FN(CUresult, "cuMemPoolTrimTo", CUmemoryPool, size_t)(p, n)
#define cuMemPoolDestroy(p) FN(CUresult, "cuMemPoolDestroy", CUmemoryPool)(p)
#define cuMemCreate(h, n, prop, f)                                                                             \
    FN(CUresult, "cuMemCreate", CUmemGenericAllocationHandle *, size_t, const MemProp *, unsigned long long)(h, n, prop, f)
#define cuMemRelease(h) FN(CUresult, "cuMemRelease", CUmemGenericAllocationHandle)(h)
#define cuMemAddressReserve(p, n, a, addr, f)                                                                  \
    FN(CUresult, "cuMemAddressReserve", CUdeviceptr *, size_t, size_t, CUdeviceptr, unsigned long long)(p, n, a, addr, f)
#define cuMemAddressFree(p, n) FN(CUresult, "cuMemAddressFree", CUdeviceptr, size_t)(p, n)
#define cuMemMap(p, n, o, h, f)                                                                                \
    FN(CUresult, "cuMemMap", CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle, unsigned long long)(p, n, o, h, f)
#define cuMemUnmap(p, n) FN(CUresult, "cuMemUnmap", CUdeviceptr, size_t)(p, n)
#define cuArrayCreate(a, d) FN(CUresult, "cuArrayCreate_v2", CUarray *, const ArrayDesc *)(a, d)
#define cuArray3DCreate(a, d) FN(CUresult, "cuArray3DCreate_v2", CUarray *, const Array3DDesc *)(a, d)
#define cuArrayDestroy(a) FN(CUresult, "cuArrayDestroy", CUarray)(a)
#define cuMipmappedArrayCreate(a, d, n)                                                                        \
    FN(CUresult, "cuMipmappedArrayCreate", CUarray *, const Array3DDesc *, unsigned)(a, d, n)
#define cuMipmappedArrayDestroy(a) FN(CUresult, "cuMipmappedArrayDestroy", CUarray)(a)

/* cuInit, then the primary context of device `dev` made current */
static CUcontext setup(int dev) {
    cuda = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
    if (!cuda) {
        printf("FAIL dlopen libcuda.so.1: %s\n", dlerror());
        exit(3);
    }
    CUcontext c = NULL;
    if (cuInit(0) != OK || cuDevicePrimaryCtxRetain(&c, dev) != OK || cuCtxSetCurrent(c) != OK) {
        printf("FAIL: no context on device %d\n", dev);
        exit(3);
    }
    return c;
}

static __attribute__((unused)) size_t used_now(void) {
    size_t f = 0, t = 0;
    cuMemGetInfo(&f, &t);
    return t - f;
}

static __attribute__((unused)) int finish(const char *name) {
    printf("%s %s\n", failures ? "FAILED" : "PASSED", name);
    return failures ? 1 : 0;
}
#endif
