/*
 * Test driver for the shim: runs the commands given on the command line against the CUDA driver and
 * prints one line per command ("<cmd> rc=<CUresult> ..."). Entry points are resolved one of three
 * ways (first argument): "link" (linked against libcuda, symbol interposition), "dlsym" (dlopen +
 * dlsym) or "gpa" (only cuGetProcAddress, as the CUDA runtime does).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vgpu_cuda.h"
#include "vgpu_nvml.h"

typedef CUresult (*init_t)(unsigned);
typedef CUresult (*devget_t)(CUdevice *, int);
typedef CUresult (*retain_t)(CUcontext *, CUdevice);
typedef CUresult (*setcur_t)(CUcontext);
typedef CUresult (*alloc_t)(CUdeviceptr *, size_t);
typedef CUresult (*managed_t)(CUdeviceptr *, size_t, unsigned);
typedef CUresult (*pitch_t)(CUdeviceptr *, size_t *, size_t, size_t, unsigned);
typedef CUresult (*free_t)(CUdeviceptr);
typedef CUresult (*async_t)(CUdeviceptr *, size_t, CUstream);
typedef CUresult (*freeasync_t)(CUdeviceptr, CUstream);
typedef CUresult (*create_t)(CUmemGenericAllocationHandle *, size_t, const CUmemAllocationProp *, unsigned long long);
typedef CUresult (*release_t)(CUmemGenericAllocationHandle);
typedef CUresult (*info_t)(size_t *, size_t *);
typedef CUresult (*total_t)(size_t *, CUdevice);
typedef CUresult (*modload_t)(void **, const void *);
typedef CUresult (*getfn_t)(CUfunction *, void *, const char *);
typedef CUresult (*launch_t)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                             CUstream, void **, void **);
typedef CUresult (*sync_t)(void);
typedef CUresult (*gpa_t)(const char *, void **, int, cuuint64_t, CUdriverProcAddressQueryResult *);

static struct {
    init_t cuInit;
    devget_t cuDeviceGet;
    retain_t cuDevicePrimaryCtxRetain;
    setcur_t cuCtxSetCurrent;
    alloc_t cuMemAlloc;
    managed_t cuMemAllocManaged;
    pitch_t cuMemAllocPitch;
    free_t cuMemFree;
    async_t cuMemAllocAsync;
    freeasync_t cuMemFreeAsync;
    create_t cuMemCreate;
    release_t cuMemRelease;
    info_t cuMemGetInfo;
    total_t cuDeviceTotalMem;
    modload_t cuModuleLoadData;
    getfn_t cuModuleGetFunction;
    launch_t cuLaunchKernel;
    sync_t cuCtxSynchronize;
} F;

static void *cuda;

static void *resolve(const char *mode, const char *base, const char *versioned, int ver) {
    void *p = NULL;
    if (!strcmp(mode, "gpa")) {
        static gpa_t gpa;
        if (!gpa) gpa = (gpa_t)dlsym(cuda, "cuGetProcAddress_v2");
        CUdriverProcAddressQueryResult st;
        if (!gpa || gpa(base, &p, ver, 0, &st) != CUDA_SUCCESS) p = NULL;
    } else {
        p = dlsym(!strcmp(mode, "link") ? RTLD_DEFAULT : cuda, versioned);
    }
    return p;
}

#define RES(field, base, ver, name) F.field = (typeof(F.field))resolve(mode, base, name, ver)

/* One image for both drivers: the emulated one reads the HAMIEMU-KERNEL comment, a real one JIT-compiles
 * the PTX, which spins on %globaltimer for the requested microseconds. */
static const char SPIN_IMAGE[] =
    "// HAMIEMU-KERNEL name=spin duration_param=0 unit=us\n"
    ".version 7.0\n.target sm_50\n.address_size 64\n"
    ".visible .entry spin(.param .u64 us)\n{\n"
    "  .reg .u64 %rd<6>;\n  .reg .pred %p;\n"
    "  ld.param.u64 %rd1, [us];\n  mul.lo.u64 %rd1, %rd1, 1000;\n  mov.u64 %rd2, %globaltimer;\n"
    "LOOP:\n  mov.u64 %rd3, %globaltimer;\n  sub.u64 %rd4, %rd3, %rd2;\n"
    "  setp.lt.u64 %p, %rd4, %rd1;\n  @%p bra LOOP;\n  ret;\n}\n";

static CUdeviceptr ptrs[4096];
static int nptrs;
static CUmemGenericAllocationHandle handles[256];
static int nhandles;

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) return 2;
    const char *mode = argv[1];
    cuda = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
    if (!cuda) {
        printf("error dlopen %s\n", dlerror());
        return 3;
    }
    int ver = 12080;
    RES(cuInit, "cuInit", ver, "cuInit");
    RES(cuDeviceGet, "cuDeviceGet", ver, "cuDeviceGet");
    RES(cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain", ver, "cuDevicePrimaryCtxRetain");
    RES(cuCtxSetCurrent, "cuCtxSetCurrent", ver, "cuCtxSetCurrent");
    RES(cuMemAlloc, "cuMemAlloc", ver, "cuMemAlloc_v2");
    RES(cuMemAllocManaged, "cuMemAllocManaged", ver, "cuMemAllocManaged");
    RES(cuMemAllocPitch, "cuMemAllocPitch", ver, "cuMemAllocPitch_v2");
    RES(cuMemFree, "cuMemFree", ver, "cuMemFree_v2");
    RES(cuMemAllocAsync, "cuMemAllocAsync", ver, "cuMemAllocAsync");
    RES(cuMemFreeAsync, "cuMemFreeAsync", ver, "cuMemFreeAsync");
    RES(cuMemCreate, "cuMemCreate", ver, "cuMemCreate");
    RES(cuMemRelease, "cuMemRelease", ver, "cuMemRelease");
    RES(cuMemGetInfo, "cuMemGetInfo", ver, "cuMemGetInfo_v2");
    RES(cuDeviceTotalMem, "cuDeviceTotalMem", ver, "cuDeviceTotalMem_v2");
    RES(cuModuleLoadData, "cuModuleLoadData", ver, "cuModuleLoadData");
    RES(cuModuleGetFunction, "cuModuleGetFunction", ver, "cuModuleGetFunction");
    RES(cuLaunchKernel, "cuLaunchKernel", ver, "cuLaunchKernel");
    RES(cuCtxSynchronize, "cuCtxSynchronize", ver, "cuCtxSynchronize");
    if (!F.cuInit || !F.cuMemAlloc || !F.cuLaunchKernel) {
        printf("error resolve\n");
        return 3;
    }
    CUresult rc = F.cuInit(0);
    CUdevice dev = 0;
    CUcontext ctx = NULL;
    int ordinal = getenv("PROBE_DEVICE") ? atoi(getenv("PROBE_DEVICE")) : 0;
    if (!rc) rc = F.cuDeviceGet(&dev, ordinal);
    if (!rc) rc = F.cuDevicePrimaryCtxRetain(&ctx, dev);
    if (!rc) rc = F.cuCtxSetCurrent(ctx);
    printf("init rc=%d\n", rc);
    if (rc) return 4;
    CUfunction spin = NULL;
    for (int i = 2; i < argc; i++) {
        const char *c = argv[i];
        if (!strcmp(c, "alloc") || !strcmp(c, "managed") || !strcmp(c, "async")) {
            size_t n = strtoull(argv[++i], NULL, 10);
            CUdeviceptr p = 0;
            rc = !strcmp(c, "alloc")     ? F.cuMemAlloc(&p, n)
                 : !strcmp(c, "managed") ? F.cuMemAllocManaged(&p, n, 1)
                                         : F.cuMemAllocAsync(&p, n, NULL);
            if (!rc) ptrs[nptrs++] = p;
            printf("%s rc=%d\n", c, rc);
        } else if (!strcmp(c, "pitch")) {
            size_t w = strtoull(argv[++i], NULL, 10), h = strtoull(argv[++i], NULL, 10), pitch = 0;
            CUdeviceptr p = 0;
            rc = F.cuMemAllocPitch(&p, &pitch, w, h, 4);
            if (!rc) ptrs[nptrs++] = p;
            printf("pitch rc=%d pitch=%zu\n", rc, pitch);
        } else if (!strcmp(c, "create")) {
            size_t n = strtoull(argv[++i], NULL, 10);
            CUmemAllocationProp prop;
            memset(&prop, 0, sizeof(prop));
            prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
            prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
            prop.location.id = ordinal;
            CUmemGenericAllocationHandle h = 0;
            rc = F.cuMemCreate(&h, n, &prop, 0);
            if (!rc) handles[nhandles++] = h;
            printf("create rc=%d\n", rc);
        } else if (!strcmp(c, "release")) {
            rc = nhandles ? F.cuMemRelease(handles[--nhandles]) : 0;
            printf("release rc=%d\n", rc);
        } else if (!strcmp(c, "free")) {
            rc = nptrs ? F.cuMemFree(ptrs[--nptrs]) : 0;
            printf("free rc=%d\n", rc);
        } else if (!strcmp(c, "freeasync")) {
            rc = nptrs ? F.cuMemFreeAsync(ptrs[--nptrs], NULL) : 0;
            printf("freeasync rc=%d\n", rc);
        } else if (!strcmp(c, "freeall")) {
            while (nptrs) F.cuMemFree(ptrs[--nptrs]);
            printf("freeall rc=0\n");
        } else if (!strcmp(c, "fill")) {
            /* allocate `chunk` bytes until refused; prints how many succeeded */
            size_t n = strtoull(argv[++i], NULL, 10);
            int ok = 0;
            CUdeviceptr p;
            while (nptrs < 4096 && (rc = F.cuMemAlloc(&p, n)) == CUDA_SUCCESS) {
                ptrs[nptrs++] = p;
                ok++;
            }
            printf("fill ok=%d rc=%d\n", ok, rc);
        } else if (!strcmp(c, "info")) {
            size_t fr = 0, tot = 0;
            rc = F.cuMemGetInfo(&fr, &tot);
            printf("info rc=%d free=%zu total=%zu\n", rc, fr, tot);
        } else if (!strcmp(c, "infonull")) {
            rc = F.cuMemGetInfo(NULL, NULL);
            printf("infonull rc=%d\n", rc);
        } else if (!strcmp(c, "allocnull")) {
            rc = F.cuMemAlloc(NULL, 1024);
            printf("allocnull rc=%d\n", rc);
        } else if (!strcmp(c, "totalmem")) {
            size_t t = 0;
            rc = F.cuDeviceTotalMem(&t, dev);
            printf("totalmem rc=%d total=%zu\n", rc, t);
        } else if (!strcmp(c, "ready")) {
            printf("ready\n");
        } else if (!strcmp(c, "hold")) {
            for (;;) pause();
        } else if (!strcmp(c, "sleep")) {
            usleep((useconds_t)(atof(argv[++i]) * 1e6));
        } else if (!strcmp(c, "loop")) {
            /* launch a kernel of `us` microseconds and wait for it, for `secs` seconds */
            long us = atol(argv[++i]);
            double secs = atof(argv[++i]);
            if (!spin) {
                void *mod = NULL;
                rc = F.cuModuleLoadData(&mod, SPIN_IMAGE);
                if (!rc) rc = F.cuModuleGetFunction(&spin, mod, "spin");
                if (rc) {
                    printf("loop rc=%d\n", rc);
                    continue;
                }
            }
            struct timespec t0, t;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            long n = 0;
            unsigned long long d = (unsigned long long)us;
            void *params[] = {&d};
            do {
                rc = F.cuLaunchKernel(spin, 1, 1, 1, 1, 1, 1, 0, NULL, params, NULL);
                if (!rc) rc = F.cuCtxSynchronize();
                if (rc) break;
                n++;
                clock_gettime(CLOCK_MONOTONIC, &t);
            } while ((double)(t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 < secs);
            printf("loop rc=%d launches=%ld\n", rc, n);
        } else {
            printf("unknown %s\n", c);
            return 5;
        }
    }
    return 0;
}
