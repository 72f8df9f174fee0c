/*
 * Initialisation, the table of real driver entry points, the dlsym override and the
 * cuGetProcAddress wrappers.
 *
 * cuGetProcAddress: the real driver resolves (name, cudaVersion, flags) first, so the ABI variant is
 * exactly the one the caller asked for; the returned pointer is then matched against the driver's
 * exported variants we wrap (cuCtxCreate_v2 vs _v4, cuLaunchKernel vs _ptsz, ...) and swapped for
 * the wrapper of that very variant. A pointer the shim does not recognise is returned unchanged.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

vgpu_real_t vgpu_real;
atomic_int vgpu_ready;
__thread int vgpu_depth __attribute__((tls_model("initial-exec")));

static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
static int init_running;
static void *(*real_dlsym)(void *, const char *);
static void *cuda_handle;
static void *nvml_handle;

int64_t vgpu_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* The shim exports dlsym and dlvsym itself, so any call it makes to either name lands on its own
 * definitions. libc's are therefore read from libc's dynamic symbol table (the default version of
 * each name), which no interposition can redirect. */
struct libc_syms {
    void *dlsym, *dlvsym;
};

static size_t gnu_hash_count(const uint32_t *h) {
    uint32_t nbuckets = h[0], symoffset = h[1], bloom = h[2];
    const uint32_t *buckets = h + 4 + bloom * (sizeof(size_t) / 4);
    const uint32_t *chain = buckets + nbuckets;
    uint32_t last = 0;
    for (uint32_t i = 0; i < nbuckets; i++)
        if (buckets[i] > last) last = buckets[i];
    if (last < symoffset) return symoffset;
    while (!(chain[last - symoffset] & 1)) last++;
    return (size_t)last + 1;
}

static int libc_scan(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    struct libc_syms *out = data;
    if (!info->dlpi_name || !strstr(info->dlpi_name, "libc.so")) return 0;
    const ElfW(Dyn) *dyn = NULL;
    for (int i = 0; i < info->dlpi_phnum; i++)
        if (info->dlpi_phdr[i].p_type == PT_DYNAMIC) dyn = (const ElfW(Dyn) *)(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr);
    if (!dyn) return 0;
    const ElfW(Sym) *sym = NULL;
    const char *str = NULL;
    const ElfW(Half) *versym = NULL;
    const uint32_t *gnu = NULL, *sysv = NULL;
    for (; dyn->d_tag != DT_NULL; dyn++) {
        uintptr_t v = dyn->d_un.d_ptr;
        if (v && v < info->dlpi_addr) v += info->dlpi_addr; /* not relocated in place on every arch */
        switch (dyn->d_tag) {
        case DT_SYMTAB: sym = (const ElfW(Sym) *)v; break;
        case DT_STRTAB: str = (const char *)v; break;
        case DT_VERSYM: versym = (const ElfW(Half) *)v; break;
        case DT_GNU_HASH: gnu = (const uint32_t *)v; break;
        case DT_HASH: sysv = (const uint32_t *)v; break;
        default: break;
        }
    }
    if (!sym || !str || (!gnu && !sysv)) return 0;
    size_t n = sysv ? sysv[1] : gnu_hash_count(gnu);
    for (size_t i = 0; i < n; i++) {
        if (sym[i].st_shndx == SHN_UNDEF || !sym[i].st_value) continue;
        if (versym && (versym[i] & 0x8000)) continue; /* a hidden (non-default) version */
        const char *nm = str + sym[i].st_name;
        if (!strcmp(nm, "dlsym")) out->dlsym = (void *)(info->dlpi_addr + sym[i].st_value);
        else if (!strcmp(nm, "dlvsym")) out->dlvsym = (void *)(info->dlpi_addr + sym[i].st_value);
    }
    return out->dlsym != NULL;
}

static void *(*real_dlvsym)(void *, const char *, const char *);

static void find_real_dlsym(void) {
    if (real_dlsym) return;
    struct libc_syms found = {NULL, NULL};
    dl_iterate_phdr(libc_scan, &found);
    *(void **)&real_dlvsym = found.dlvsym;
    *(void **)&real_dlsym = found.dlsym;
}

/* Every wrapped variant: exported name, our wrapper, where the driver's pointer is kept. */
typedef struct hook {
    const char *name;
    void *wrapper;
    void **real;
} hook_t;

CUresult cuGetProcAddress(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags);
CUresult cuCtxCreate_v2(CUcontext *pctx, unsigned int flags, CUdevice dev);
CUresult cuCtxCreate_v3(CUcontext *pctx, CUexecAffinityParam *p, int n, unsigned int flags, CUdevice dev);
CUresult cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t bytesize, CUstream hStream);
CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *dptr, size_t bytesize, CUmemoryPool pool, CUstream hStream);
CUresult cuMemFreeAsync_ptsz(CUdeviceptr dptr, CUstream hStream);
CUresult cuLaunchKernel_ptsz(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                             unsigned bz, unsigned shm, CUstream s, void **params, void **extra);
CUresult cuLaunchKernelEx_ptsz(const CUlaunchConfig *config, CUfunction f, void **kernelParams, void **extra);
CUresult cuLaunchCooperativeKernel_ptsz(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                                        unsigned by, unsigned bz, unsigned shm, CUstream s, void **params);
CUresult cuGraphLaunch_ptsz(CUgraphExec hGraphExec, CUstream hStream);
CUresult cuMemMap(CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle handle,
                  unsigned long long flags);
CUresult cuMemUnmap(CUdeviceptr ptr, size_t size);
CUresult cuMemAddressFree(CUdeviceptr ptr, size_t size);
CUresult cuMemPoolCreate(CUmemoryPool *pool, const vgpu_CUmemPoolProps *props);
CUresult cuDeviceGetMemPool(CUmemoryPool *pool, CUdevice dev);
CUresult cuDeviceGetDefaultMemPool(CUmemoryPool *pool, CUdevice dev);
CUresult cuMemPoolDestroy(CUmemoryPool pool);
CUresult cuMemPoolTrimTo(CUmemoryPool pool, size_t minBytesToKeep);
CUresult cuMemPoolSetAttribute(CUmemoryPool pool, int attr, void *value);
CUresult cuArrayCreate_v2(CUarray_vgpu *pHandle, const vgpu_CUDA_ARRAY_DESCRIPTOR *desc);
CUresult cuArray3DCreate_v2(CUarray_vgpu *pHandle, const vgpu_CUDA_ARRAY3D_DESCRIPTOR *desc);
CUresult cuMipmappedArrayCreate(CUmipmappedArray_vgpu *pHandle, const vgpu_CUDA_ARRAY3D_DESCRIPTOR *desc,
                                unsigned int numMipmapLevels);
CUresult cuArrayDestroy(CUarray_vgpu h);
CUresult cuMipmappedArrayDestroy(CUmipmappedArray_vgpu h);
CUresult cuCtxDestroy_v2(CUcontext ctx);
CUresult cuCtxDestroy(CUcontext ctx);
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev);
CUresult cuDevicePrimaryCtxRelease(CUdevice dev);
CUresult cuDevicePrimaryCtxReset_v2(CUdevice dev);
CUresult cuDevicePrimaryCtxReset(CUdevice dev);
nvmlReturn_t nvmlDeviceGetComputeRunningProcesses(nvmlDevice_t device, unsigned int *infoCount,
                                                  nvmlProcessInfo_v1_t *infos);
nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(nvmlDevice_t device, unsigned int *infoCount,
                                                     nvmlProcessInfo_t *infos);

#define H(fn) {#fn, (void *)fn, (void **)&vgpu_real.fn}
static const hook_t cuda_hooks[] = {
    H(cuGetProcAddress), H(cuGetProcAddress_v2),
    H(cuMemAlloc_v2), H(cuMemAllocManaged), H(cuMemAllocPitch_v2), H(cuMemFree_v2),
    H(cuMemAllocAsync), H(cuMemAllocAsync_ptsz), H(cuMemAllocFromPoolAsync), H(cuMemAllocFromPoolAsync_ptsz),
    H(cuMemFreeAsync), H(cuMemFreeAsync_ptsz), H(cuMemCreate), H(cuMemRelease),
    H(cuMemMap), H(cuMemUnmap), H(cuMemAddressFree), H(cuMemPoolCreate), H(cuDeviceGetMemPool),
    H(cuDeviceGetDefaultMemPool), H(cuMemPoolDestroy), H(cuMemPoolTrimTo), H(cuMemPoolSetAttribute), H(cuArrayCreate_v2), H(cuArray3DCreate_v2), H(cuMipmappedArrayCreate),
    H(cuArrayDestroy), H(cuMipmappedArrayDestroy), H(cuCtxDestroy_v2), H(cuCtxDestroy),
    H(cuDevicePrimaryCtxRelease_v2), H(cuDevicePrimaryCtxRelease), H(cuDevicePrimaryCtxReset_v2),
    H(cuDevicePrimaryCtxReset),
    H(cuMemGetInfo_v2), H(cuDeviceTotalMem_v2),
    H(cuDevicePrimaryCtxRetain), H(cuCtxCreate_v2), H(cuCtxCreate_v3), H(cuCtxCreate_v4),
    H(cuLaunchKernel), H(cuLaunchKernel_ptsz), H(cuLaunchKernelEx), H(cuLaunchKernelEx_ptsz),
    H(cuLaunchCooperativeKernel), H(cuLaunchCooperativeKernel_ptsz), H(cuGraphLaunch), H(cuGraphLaunch_ptsz),
};
static const hook_t nvml_hooks[] = {
    H(nvmlDeviceGetMemoryInfo), H(nvmlDeviceGetMemoryInfo_v2), H(nvmlDeviceGetComputeRunningProcesses),
    H(nvmlDeviceGetComputeRunningProcesses_v2), H(nvmlDeviceGetComputeRunningProcesses_v3),
};
#undef H
#define NHOOKS(t) (sizeof(t) / sizeof((t)[0]))

static void *lookup(void *handle, const char *name) {
    if (!handle) return NULL;
    return real_dlsym(handle, name);
}

static void load_cuda(void) {
    cuda_handle = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL | RTLD_NODELETE);
    if (!cuda_handle) {
        LOG_WARN("cannot load libcuda.so.1 (%s); CUDA calls will fail", dlerror());
        return;
    }
    for (size_t i = 0; i < NHOOKS(cuda_hooks); i++) *cuda_hooks[i].real = lookup(cuda_handle, cuda_hooks[i].name);
    vgpu_real.cuCtxGetDevice = (vgpu_cuCtxGetDevice_t)lookup(cuda_handle, "cuCtxGetDevice");
    *(void **)&vgpu_real.cuCtxGetCurrent = lookup(cuda_handle, "cuCtxGetCurrent");
    *(void **)&vgpu_real.cuCtxPushCurrent_v2 = lookup(cuda_handle, "cuCtxPushCurrent_v2");
    *(void **)&vgpu_real.cuCtxPopCurrent_v2 = lookup(cuda_handle, "cuCtxPopCurrent_v2");
    *(void **)&vgpu_real.cuStreamGetCtx = lookup(cuda_handle, "cuStreamGetCtx");
    *(void **)&vgpu_real.cuMemPoolGetAttribute = lookup(cuda_handle, "cuMemPoolGetAttribute");
    *(void **)&vgpu_real.cuDevicePrimaryCtxGetState = lookup(cuda_handle, "cuDevicePrimaryCtxGetState");
    vgpu_real.cuDeviceGetUuid_v2 = (vgpu_cuDeviceGetUuid_t)lookup(cuda_handle, "cuDeviceGetUuid_v2");
    vgpu_real.cuDeviceGetUuid = (vgpu_cuDeviceGetUuid_t)lookup(cuda_handle, "cuDeviceGetUuid");
}

static pthread_once_t nvml_once = PTHREAD_ONCE_INIT;
static int nvml_ok;

static void load_nvml(void) {
    nvml_handle = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_GLOBAL | RTLD_NODELETE);
    if (!nvml_handle) {
        LOG_INFO("libnvidia-ml.so.1 not loadable; device mapping falls back to CUDA ordinals");
        return;
    }
    for (size_t i = 0; i < NHOOKS(nvml_hooks); i++) *nvml_hooks[i].real = lookup(nvml_handle, nvml_hooks[i].name);
#define R(fn) vgpu_real.fn = (vgpu_##fn##_t)lookup(nvml_handle, #fn)
    R(nvmlInit_v2);
    R(nvmlDeviceGetHandleByIndex_v2);
    R(nvmlDeviceGetHandleByUUID);
    R(nvmlDeviceGetIndex);
    R(nvmlDeviceGetUtilizationRates);
    R(nvmlDeviceGetProcessUtilization);
#undef R
    if (vgpu_real.nvmlInit_v2 && vgpu_real.nvmlInit_v2() == NVML_SUCCESS) nvml_ok = 1;
    else LOG_WARN("nvmlInit_v2 failed inside the shim; compute limiting has no utilisation feedback");
}

static void nvml_once_fn(void) {
    vgpu_depth++;
    load_nvml();
    vgpu_depth--;
}

int vgpu_nvml_ready(void) {
    pthread_once(&nvml_once, nvml_once_fn);
    return nvml_ok;
}

static void fork_prepare(void) { vgpu_memory_prefork(); }
static void fork_parent(void) { vgpu_memory_postfork_parent(); }
static void fork_child(void) {
    vgpu_memory_after_fork_child();
    vgpu_region_after_fork_child();
    vgpu_limiter_after_fork_child();
}

void vgpu_init_slow(void) {
    pthread_mutex_lock(&init_lock);
    if (atomic_load(&vgpu_ready) || init_running) {
        /* re-entry from our own initialisation (dlopen of the driver runs its constructors) */
        pthread_mutex_unlock(&init_lock);
        return;
    }
    init_running = 1;
    vgpu_depth++;
    find_real_dlsym();
    vgpu_config_load();
    load_cuda();
    vgpu_region_open();
    pthread_atfork(fork_prepare, fork_parent, fork_child);
    for (int d = 0; d < VGPU_MAX_DEVICES; d++)
        if (vgpu_cfg.mem_limit[d] || vgpu_cfg.sm_limit[d])
            LOG_INFO("device %d: memory limit %llu bytes, SM limit %u%%", d,
                     (unsigned long long)vgpu_cfg.mem_limit[d], vgpu_cfg.sm_limit[d]);
    vgpu_depth--;
    atomic_store_explicit(&vgpu_ready, 1, memory_order_release);
    init_running = 0;
    pthread_mutex_unlock(&init_lock);
}

/* ---- device index mapping ---- */

static int index_map[VGPU_MAX_DEVICES * 4];
static atomic_int index_known[VGPU_MAX_DEVICES * 4];

static void format_uuid(const CUuuid *u, char *out, size_t n) {
    const unsigned char *b = (const unsigned char *)u->bytes;
    snprintf(out, n, "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2],
             b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

/* The container index is the NVML index (NVML ignores CUDA_VISIBLE_DEVICES, as HAMi's
 * CUDA_DEVICE_MEMORY_LIMIT_<i> does), found through the device UUID; the CUDA ordinal is only
 * the fallback when NVML is unavailable. */
int vgpu_container_index(CUdevice ordinal) {
    if (ordinal < 0 || ordinal >= VGPU_MAX_DEVICES * 4) return -1;
    if (LIKELY(atomic_load_explicit(&index_known[ordinal], memory_order_acquire))) return index_map[ordinal];
    vgpu_depth++;
    int idx = ordinal < VGPU_MAX_DEVICES ? ordinal : -1;
    CUuuid u;
    char uuid[VGPU_UUID_LEN] = "";
    vgpu_cuDeviceGetUuid_t get = vgpu_real.cuDeviceGetUuid_v2 ? vgpu_real.cuDeviceGetUuid_v2 : vgpu_real.cuDeviceGetUuid;
    int have_uuid = get && get(&u, ordinal) == CUDA_SUCCESS;
    if (have_uuid) format_uuid(&u, uuid, sizeof(uuid));
    if (have_uuid && vgpu_nvml_ready() && vgpu_real.nvmlDeviceGetHandleByUUID && vgpu_real.nvmlDeviceGetIndex) {
        nvmlDevice_t h;
        unsigned int i;
        if (vgpu_real.nvmlDeviceGetHandleByUUID(uuid, &h) == NVML_SUCCESS &&
            vgpu_real.nvmlDeviceGetIndex(h, &i) == NVML_SUCCESS)
            idx = i < VGPU_MAX_DEVICES ? (int)i : -1;
        else
            LOG_WARN("CUDA device %d (%s) not found through NVML; using its CUDA ordinal", ordinal, uuid);
    }
    size_t phys = 0;
    if (vgpu_real.cuDeviceTotalMem_v2 && vgpu_real.cuDeviceTotalMem_v2(&phys, ordinal) != CUDA_SUCCESS) phys = 0;
    if (idx >= 0) {
        vgpu_note_device(idx, phys, uuid);
        if (vgpu_cfg.mem_limit[idx] && phys && vgpu_cfg.mem_limit[idx] > phys)
            LOG_WARN("device %d: memory limit %llu exceeds the device's %llu bytes; reporting the device size", idx,
                     (unsigned long long)vgpu_cfg.mem_limit[idx], (unsigned long long)phys);
    }
    vgpu_depth--;
    index_map[ordinal] = idx;
    atomic_store_explicit(&index_known[ordinal], 1, memory_order_release);
    return idx;
}

int vgpu_current_index(void) {
    CUdevice dev;
    if (!vgpu_real.cuCtxGetDevice || vgpu_real.cuCtxGetDevice(&dev) != CUDA_SUCCESS) return -1;
    return vgpu_container_index(dev);
}

/* ---- dlsym override ---- */

static void *wrapper_for(const hook_t *t, size_t n, const char *name) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(t[i].name, name)) return t[i].wrapper;
    return NULL;
}

/* Any lookup of a wrapped name yields the wrapper, whatever the handle: a driver handle, RTLD_DEFAULT,
 * a RTLD_DEEPBIND handle, and RTLD_NEXT too. For RTLD_NEXT the real dlsym resolves relative to the shim
 * (its caller), which finds the driver's definition; an application asking "the next one after me"
 * would find the shim's, so the wrapper is the faithful answer (and the only safe one). */
static void *hooked(const char *name) {
    if (name[0] == 'c' && name[1] == 'u') return wrapper_for(cuda_hooks, NHOOKS(cuda_hooks), name);
    if (name[0] == 'n' && !strncmp(name, "nvml", 4)) return wrapper_for(nvml_hooks, NHOOKS(nvml_hooks), name);
    return NULL;
}

static void *wrap_found(void *p, void *w) {
    if (!p || p == w) return p;
    vgpu_init();
    return w;
}

VGPU_API void *dlsym(void *handle, const char *name) {
    find_real_dlsym();
    if (!real_dlsym) return NULL;
    void *w = hooked(name);
    /* a tail call: libc sees the application's return address, so its RTLD_NEXT stays its own */
    if (!w) return real_dlsym(handle, name);
    return wrap_found(real_dlsym(handle, name), w);
}

/* dlvsym accepts unversioned definitions (the driver's) for any version: the same rule applies */
VGPU_API void *dlvsym(void *handle, const char *name, const char *version) {
    find_real_dlsym();
    if (!real_dlvsym) return NULL;
    void *w = hooked(name);
    if (!w) return real_dlvsym(handle, name, version);
    return wrap_found(real_dlvsym(handle, name, version), w);
}

/* ---- cuGetProcAddress ---- */

typedef struct ver_entry {
    const char *name;
    int since;
    int per_thread; /* the variant returned with CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM */
    const char *variant;
} ver_entry_t;

/* Fallback when the driver hands out a pointer that is not one of its exported variants: choose the
 * variant the way the driver does, newest introducing version <= the requested one. */
static const ver_entry_t versions[] = {
    {"cuGetProcAddress", 11030, 0, "cuGetProcAddress"}, {"cuGetProcAddress", 12000, 0, "cuGetProcAddress_v2"},
    {"cuMemAlloc", 3020, 0, "cuMemAlloc_v2"}, {"cuMemAllocManaged", 6000, 0, "cuMemAllocManaged"},
    {"cuMemAllocPitch", 3020, 0, "cuMemAllocPitch_v2"}, {"cuMemFree", 3020, 0, "cuMemFree_v2"},
    {"cuMemAllocAsync", 11020, 0, "cuMemAllocAsync"}, {"cuMemAllocAsync", 11020, 1, "cuMemAllocAsync_ptsz"},
    {"cuMemAllocFromPoolAsync", 11020, 0, "cuMemAllocFromPoolAsync"},
    {"cuMemAllocFromPoolAsync", 11020, 1, "cuMemAllocFromPoolAsync_ptsz"},
    {"cuMemFreeAsync", 11020, 0, "cuMemFreeAsync"}, {"cuMemFreeAsync", 11020, 1, "cuMemFreeAsync_ptsz"},
    {"cuMemCreate", 10020, 0, "cuMemCreate"}, {"cuMemRelease", 10020, 0, "cuMemRelease"},
    {"cuMemMap", 10020, 0, "cuMemMap"}, {"cuMemUnmap", 10020, 0, "cuMemUnmap"},
    {"cuMemAddressFree", 10020, 0, "cuMemAddressFree"}, {"cuMemPoolCreate", 11020, 0, "cuMemPoolCreate"},
    {"cuDeviceGetMemPool", 11020, 0, "cuDeviceGetMemPool"},
    {"cuDeviceGetDefaultMemPool", 11020, 0, "cuDeviceGetDefaultMemPool"},
    {"cuMemPoolDestroy", 11020, 0, "cuMemPoolDestroy"}, {"cuMemPoolTrimTo", 11020, 0, "cuMemPoolTrimTo"},
    {"cuMemPoolSetAttribute", 11020, 0, "cuMemPoolSetAttribute"},
    {"cuArrayCreate", 3020, 0, "cuArrayCreate_v2"}, {"cuArray3DCreate", 3020, 0, "cuArray3DCreate_v2"},
    {"cuMipmappedArrayCreate", 5000, 0, "cuMipmappedArrayCreate"}, {"cuArrayDestroy", 2000, 0, "cuArrayDestroy"},
    {"cuMipmappedArrayDestroy", 5000, 0, "cuMipmappedArrayDestroy"},
    {"cuCtxDestroy", 4000, 0, "cuCtxDestroy_v2"}, {"cuDevicePrimaryCtxRelease", 7000, 0, "cuDevicePrimaryCtxRelease"},
    {"cuDevicePrimaryCtxRelease", 11000, 0, "cuDevicePrimaryCtxRelease_v2"},
    {"cuDevicePrimaryCtxReset", 7000, 0, "cuDevicePrimaryCtxReset"},
    {"cuDevicePrimaryCtxReset", 11000, 0, "cuDevicePrimaryCtxReset_v2"},
    {"cuMemGetInfo", 3020, 0, "cuMemGetInfo_v2"}, {"cuDeviceTotalMem", 3020, 0, "cuDeviceTotalMem_v2"},
    {"cuDevicePrimaryCtxRetain", 7000, 0, "cuDevicePrimaryCtxRetain"},
    {"cuCtxCreate", 3020, 0, "cuCtxCreate_v2"}, {"cuCtxCreate", 11040, 0, "cuCtxCreate_v3"},
    {"cuCtxCreate", 12050, 0, "cuCtxCreate_v4"},
    {"cuLaunchKernel", 4000, 0, "cuLaunchKernel"}, {"cuLaunchKernel", 7000, 1, "cuLaunchKernel_ptsz"},
    {"cuLaunchKernelEx", 11060, 0, "cuLaunchKernelEx"}, {"cuLaunchKernelEx", 11060, 1, "cuLaunchKernelEx_ptsz"},
    {"cuLaunchCooperativeKernel", 9000, 0, "cuLaunchCooperativeKernel"},
    {"cuLaunchCooperativeKernel", 9000, 1, "cuLaunchCooperativeKernel_ptsz"},
    {"cuGraphLaunch", 10000, 0, "cuGraphLaunch"}, {"cuGraphLaunch", 10000, 1, "cuGraphLaunch_ptsz"},
};

static void *swap_for_wrapper(const char *symbol, void *p, int cudaVersion, cuuint64_t flags) {
    if (!p) return p;
    for (size_t i = 0; i < NHOOKS(cuda_hooks); i++) {
        /* a driver whose table goes through its GOT hands out the preloaded definitions: ours */
        if (cuda_hooks[i].wrapper == p) return p;
        if (*cuda_hooks[i].real == p) return cuda_hooks[i].wrapper;
    }
    int per_thread = (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) != 0;
    const ver_entry_t *best = NULL;
    for (size_t i = 0; i < NHOOKS(versions); i++) {
        const ver_entry_t *v = &versions[i];
        if (strcmp(v->name, symbol) || v->since > cudaVersion) continue;
        int pt_ok = v->per_thread == per_thread;
        if (!pt_ok && v->per_thread) continue;
        if (!best || v->since > best->since || (pt_ok && best->per_thread != per_thread)) best = v;
    }
    if (!best) return p;
    for (size_t i = 0; i < NHOOKS(cuda_hooks); i++)
        if (!strcmp(cuda_hooks[i].name, best->variant) && *cuda_hooks[i].real) {
            /* the driver's private pointer is what the wrapper must call for this variant */
            *cuda_hooks[i].real = p;
            return cuda_hooks[i].wrapper;
        }
    return p;
}

VGPU_API CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags,
                                      CUdriverProcAddressQueryResult *symbolStatus) {
    vgpu_init();
    if (!vgpu_real.cuGetProcAddress_v2) return CUDA_ERROR_NOT_SUPPORTED;
    vgpu_depth++;
    CUresult rc = vgpu_real.cuGetProcAddress_v2(symbol, pfn, cudaVersion, flags, symbolStatus);
    vgpu_depth--;
    if (rc == CUDA_SUCCESS && symbol && pfn) *pfn = swap_for_wrapper(symbol, *pfn, cudaVersion, flags);
    return rc;
}

VGPU_API CUresult cuGetProcAddress(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags) {
    vgpu_init();
    if (!vgpu_real.cuGetProcAddress) return CUDA_ERROR_NOT_SUPPORTED;
    vgpu_depth++;
    CUresult rc = vgpu_real.cuGetProcAddress(symbol, pfn, cudaVersion, flags);
    vgpu_depth--;
    if (rc == CUDA_SUCCESS && symbol && pfn) *pfn = swap_for_wrapper(symbol, *pfn, cudaVersion, flags);
    return rc;
}

/* No constructor: under /etc/ld.so.preload every process of the container loads the shim, and only
 * the ones that touch CUDA or NVML should join the region (first wrapper call or wrapped dlsym). */
