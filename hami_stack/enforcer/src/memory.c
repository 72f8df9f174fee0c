/*
 * Allocation family: reserve in the shared region, let the driver allocate, remember what was
 * charged so the matching free gives exactly that back. Frees of pointers the shim does not know go
 * straight to the driver (unlike HAMi-core, which refused them).
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---- per-process table: (class, key) -> (device, bytes) ---- */
enum { CLS_PTR = 1, CLS_VMM = 2 };
typedef struct entry {
    uint64_t key;
    uint64_t bytes;
    int32_t cls; /* 0 free, -1 tombstone */
    int32_t dev;
} entry_t;

static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static entry_t *table;
static size_t table_cap, table_used, table_tomb;

static size_t hash(uint64_t k, int cls) {
    k ^= (uint64_t)cls * 0x9e3779b97f4a7c15ULL;
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return (size_t)k;
}

static int grow_locked(void) {
    size_t cap = table_cap ? table_cap * 2 : 1024;
    if (table_used * 4 < table_cap) cap = table_cap; /* mostly tombstones: rehash in place */
    entry_t *n = calloc(cap, sizeof(*n));
    if (!n) return -1;
    for (size_t i = 0; i < table_cap; i++) {
        if (table[i].cls <= 0) continue;
        size_t j = hash(table[i].key, table[i].cls) & (cap - 1);
        while (n[j].cls) j = (j + 1) & (cap - 1);
        n[j] = table[i];
    }
    free(table);
    table = n;
    table_cap = cap;
    table_tomb = 0;
    return 0;
}

static int track(int cls, uint64_t key, int dev, uint64_t bytes) {
    pthread_mutex_lock(&table_lock);
    if ((table_used + table_tomb + 1) * 2 > table_cap && grow_locked() != 0) {
        pthread_mutex_unlock(&table_lock);
        return -1;
    }
    size_t j = hash(key, cls) & (table_cap - 1);
    while (table[j].cls > 0 && !(table[j].cls == cls && table[j].key == key)) j = (j + 1) & (table_cap - 1);
    if (table[j].cls > 0) { /* a key reused without our seeing its free: keep the newest */
        vgpu_uncharge(table[j].dev, table[j].bytes);
    } else {
        if (table[j].cls < 0) table_tomb--;
        table_used++;
    }
    table[j] = (entry_t){key, bytes, cls, dev};
    pthread_mutex_unlock(&table_lock);
    return 0;
}

static int untrack(int cls, uint64_t key, int *dev, uint64_t *bytes) {
    pthread_mutex_lock(&table_lock);
    int found = 0;
    if (table_cap) {
        size_t j = hash(key, cls) & (table_cap - 1);
        while (table[j].cls) {
            if (table[j].cls == cls && table[j].key == key) {
                *dev = table[j].dev;
                *bytes = table[j].bytes;
                table[j].cls = -1;
                table_used--;
                table_tomb++;
                found = 1;
                break;
            }
            j = (j + 1) & (table_cap - 1);
        }
    }
    pthread_mutex_unlock(&table_lock);
    return found;
}

void vgpu_memory_prefork(void) { pthread_mutex_lock(&table_lock); }
void vgpu_memory_postfork_parent(void) { pthread_mutex_unlock(&table_lock); }
void vgpu_memory_after_fork_child(void) {
    /* the child owns none of the parent's device memory */
    free(table);
    table = NULL;
    table_cap = table_used = table_tomb = 0;
    pthread_mutex_init(&table_lock, NULL);
}

static uint64_t limit_of(int d) { return d >= 0 && d < VGPU_MAX_DEVICES ? vgpu_cfg.mem_limit[d] : 0; }

#define ENTER_OR_PASS(call)                                                                                    \
    do {                                                                                                       \
        vgpu_init();                                                                                           \
        if (vgpu_depth) return (call);                                                                         \
    } while (0)

/* charge, allocate through `call`, record under (cls, key) or give the charge back */
#define CHARGED_ALLOC(d, bytes, cls, call, keyexpr)                                                            \
    do {                                                                                                       \
        CUresult _c = vgpu_charge((d), (bytes), limit_of(d));                                                  \
        if (_c != CUDA_SUCCESS) return _c;                                                                     \
        vgpu_depth++;                                                                                          \
        CUresult _rc = (call);                                                                                 \
        vgpu_depth--;                                                                                          \
        if (_rc != CUDA_SUCCESS) {                                                                             \
            vgpu_uncharge((d), (bytes));                                                                       \
            return _rc;                                                                                        \
        }                                                                                                      \
        if (track((cls), (uint64_t)(keyexpr), (d), (bytes)) != 0)                                              \
            LOG_WARN("allocation table full; %llu bytes stay charged until exit", (unsigned long long)(bytes)); \
        return CUDA_SUCCESS;                                                                                   \
    } while (0)

#define REAL_OR_UNSUPPORTED(fn)                                                                                \
    do {                                                                                                       \
        if (!vgpu_real.fn) return CUDA_ERROR_NOT_SUPPORTED;                                                    \
    } while (0)

VGPU_API CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytesize) {
    vgpu_init();
    REAL_OR_UNSUPPORTED(cuMemAlloc_v2);
    if (vgpu_depth || !dptr || !bytesize) return vgpu_real.cuMemAlloc_v2(dptr, bytesize);
    int d = vgpu_current_index();
    if (d < 0) return vgpu_real.cuMemAlloc_v2(dptr, bytesize); /* no context: the driver reports it */
#ifdef VGPU_FAULT_ALLOC_UNLIMITED /* deliberate fault build only (hami_stack/faults) */
    return vgpu_real.cuMemAlloc_v2(dptr, bytesize);
#endif
    CHARGED_ALLOC(d, bytesize, CLS_PTR, vgpu_real.cuMemAlloc_v2(dptr, bytesize), *dptr);
}

/* Managed memory counts fully against the device limit (it can all become resident there). */
VGPU_API CUresult cuMemAllocManaged(CUdeviceptr *dptr, size_t bytesize, unsigned int flags) {
    vgpu_init();
    REAL_OR_UNSUPPORTED(cuMemAllocManaged);
    if (vgpu_depth || !dptr || !bytesize) return vgpu_real.cuMemAllocManaged(dptr, bytesize, flags);
    int d = vgpu_current_index();
    if (d < 0) return vgpu_real.cuMemAllocManaged(dptr, bytesize, flags);
#ifdef VGPU_FAULT_MANAGED_UNLIMITED /* deliberate fault build only (hami_stack/faults) */
    return vgpu_real.cuMemAllocManaged(dptr, bytesize, flags);
#endif
    CHARGED_ALLOC(d, bytesize, CLS_PTR, vgpu_real.cuMemAllocManaged(dptr, bytesize, flags), *dptr);
}

/* Pitched: charge an upper estimate first, then settle on the real pitch x height. */
VGPU_API CUresult cuMemAllocPitch_v2(CUdeviceptr *dptr, size_t *pPitch, size_t WidthInBytes, size_t Height,
                                     unsigned int ElementSizeBytes) {
    vgpu_init();
    REAL_OR_UNSUPPORTED(cuMemAllocPitch_v2);
    if (vgpu_depth || !dptr || !pPitch || !WidthInBytes || !Height)
        return vgpu_real.cuMemAllocPitch_v2(dptr, pPitch, WidthInBytes, Height, ElementSizeBytes);
    int d = vgpu_current_index();
    if (d < 0) return vgpu_real.cuMemAllocPitch_v2(dptr, pPitch, WidthInBytes, Height, ElementSizeBytes);
#ifdef VGPU_FAULT_PITCH_UNLIMITED /* deliberate fault build only (hami_stack/faults) */
    return vgpu_real.cuMemAllocPitch_v2(dptr, pPitch, WidthInBytes, Height, ElementSizeBytes);
#endif
    uint64_t w = ((uint64_t)WidthInBytes + 511) & ~511ULL;
    if (Height > UINT64_MAX / w) return CUDA_ERROR_OUT_OF_MEMORY;
    uint64_t est = w * Height;
    CUresult c = vgpu_charge(d, est, limit_of(d));
    if (c != CUDA_SUCCESS) return c;
    vgpu_depth++;
    CUresult rc = vgpu_real.cuMemAllocPitch_v2(dptr, pPitch, WidthInBytes, Height, ElementSizeBytes);
    vgpu_depth--;
    if (rc != CUDA_SUCCESS) {
        vgpu_uncharge(d, est);
        return rc;
    }
    uint64_t real = (uint64_t)*pPitch * Height;
    if (real > est) {
        if (vgpu_charge(d, real - est, limit_of(d)) != CUDA_SUCCESS) {
            vgpu_depth++;
            vgpu_real.cuMemFree_v2(*dptr);
            vgpu_depth--;
            vgpu_uncharge(d, est);
            return CUDA_ERROR_OUT_OF_MEMORY;
        }
    } else if (real < est) {
        vgpu_uncharge(d, est - real);
    }
    if (track(CLS_PTR, *dptr, d, real) != 0) LOG_WARN("allocation table full");
    return CUDA_SUCCESS;
}

static CUresult free_ptr(CUresult (*real)(CUdeviceptr, CUstream), CUdeviceptr dptr, CUstream s, int async) {
    vgpu_depth++;
    CUresult rc = async ? real(dptr, s) : vgpu_real.cuMemFree_v2(dptr);
    vgpu_depth--;
    int d;
    uint64_t bytes;
    /* only a successful free gives the charge back; unknown pointers were never charged */
    if (rc == CUDA_SUCCESS && dptr && untrack(CLS_PTR, dptr, &d, &bytes)) vgpu_uncharge(d, bytes);
    return rc;
}

VGPU_API CUresult cuMemFree_v2(CUdeviceptr dptr) {
    vgpu_init();
    REAL_OR_UNSUPPORTED(cuMemFree_v2);
    if (vgpu_depth) return vgpu_real.cuMemFree_v2(dptr);
    return free_ptr(NULL, dptr, NULL, 0);
}

/* Stream-ordered allocations are charged to the device of the current context. */
static CUresult alloc_async(CUresult (*real)(CUdeviceptr *, size_t, CUstream), CUdeviceptr *dptr, size_t bytesize,
                            CUstream s) {
    vgpu_init();
    if (!real) return CUDA_ERROR_NOT_SUPPORTED;
    if (vgpu_depth || !dptr || !bytesize) return real(dptr, bytesize, s);
    int d = vgpu_current_index();
    if (d < 0) return real(dptr, bytesize, s);
#ifdef VGPU_FAULT_ASYNC_UNLIMITED /* deliberate fault build only (hami_stack/faults) */
    return real(dptr, bytesize, s);
#endif
    CHARGED_ALLOC(d, bytesize, CLS_PTR, real(dptr, bytesize, s), *dptr);
}

VGPU_API CUresult cuMemAllocAsync(CUdeviceptr *dptr, size_t bytesize, CUstream hStream) {
    vgpu_init();
    return alloc_async(vgpu_real.cuMemAllocAsync, dptr, bytesize, hStream);
}
VGPU_API CUresult cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t bytesize, CUstream hStream) {
    vgpu_init();
    return alloc_async(vgpu_real.cuMemAllocAsync_ptsz, dptr, bytesize, hStream);
}

static CUresult alloc_pool(CUresult (*real)(CUdeviceptr *, size_t, CUmemoryPool, CUstream), CUdeviceptr *dptr,
                           size_t bytesize, CUmemoryPool pool, CUstream s) {
    if (!real) return CUDA_ERROR_NOT_SUPPORTED;
    if (vgpu_depth || !dptr || !bytesize) return real(dptr, bytesize, pool, s);
    int d = vgpu_current_index();
    if (d < 0) return real(dptr, bytesize, pool, s);
#ifdef VGPU_FAULT_ASYNC_UNLIMITED /* deliberate fault build only (hami_stack/faults) */
    return real(dptr, bytesize, pool, s);
#endif
    CHARGED_ALLOC(d, bytesize, CLS_PTR, real(dptr, bytesize, pool, s), *dptr);
}

VGPU_API CUresult cuMemAllocFromPoolAsync(CUdeviceptr *dptr, size_t bytesize, CUmemoryPool pool, CUstream hStream) {
    vgpu_init();
    return alloc_pool(vgpu_real.cuMemAllocFromPoolAsync, dptr, bytesize, pool, hStream);
}
VGPU_API CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *dptr, size_t bytesize, CUmemoryPool pool,
                                               CUstream hStream) {
    vgpu_init();
    return alloc_pool(vgpu_real.cuMemAllocFromPoolAsync_ptsz, dptr, bytesize, pool, hStream);
}

VGPU_API CUresult cuMemFreeAsync(CUdeviceptr dptr, CUstream hStream) {
    vgpu_init();
    REAL_OR_UNSUPPORTED(cuMemFreeAsync);
    if (vgpu_depth) return vgpu_real.cuMemFreeAsync(dptr, hStream);
    return free_ptr(vgpu_real.cuMemFreeAsync, dptr, hStream, 1);
}
VGPU_API CUresult cuMemFreeAsync_ptsz(CUdeviceptr dptr, CUstream hStream) {
    vgpu_init();
    REAL_OR_UNSUPPORTED(cuMemFreeAsync_ptsz);
    if (vgpu_depth) return vgpu_real.cuMemFreeAsync_ptsz(dptr, hStream);
    return free_ptr(vgpu_real.cuMemFreeAsync_ptsz, dptr, hStream, 1);
}

/* VMM: physical memory is charged at cuMemCreate for device locations; mapping is free. */
VGPU_API CUresult cuMemCreate(CUmemGenericAllocationHandle *handle, size_t size, const CUmemAllocationProp *prop,
                              unsigned long long flags) {
    vgpu_init();
    REAL_OR_UNSUPPORTED(cuMemCreate);
    if (vgpu_depth || !handle || !prop || !size || prop->location.type != CU_MEM_LOCATION_TYPE_DEVICE)
        return vgpu_real.cuMemCreate(handle, size, prop, flags);
    int d = vgpu_container_index(prop->location.id);
    if (d < 0) return vgpu_real.cuMemCreate(handle, size, prop, flags);
#ifdef VGPU_FAULT_VMM_UNLIMITED /* deliberate fault build only (hami_stack/faults) */
    return vgpu_real.cuMemCreate(handle, size, prop, flags);
#endif
    CHARGED_ALLOC(d, size, CLS_VMM, vgpu_real.cuMemCreate(handle, size, prop, flags), *handle);
}

VGPU_API CUresult cuMemRelease(CUmemGenericAllocationHandle handle) {
    vgpu_init();
    REAL_OR_UNSUPPORTED(cuMemRelease);
    if (vgpu_depth) return vgpu_real.cuMemRelease(handle);
    vgpu_depth++;
    CUresult rc = vgpu_real.cuMemRelease(handle);
    vgpu_depth--;
    int d;
    uint64_t bytes;
    if (rc == CUDA_SUCCESS && untrack(CLS_VMM, handle, &d, &bytes)) vgpu_uncharge(d, bytes);
    return rc;
}

/* ---- what the container sees ---- */

VGPU_API CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total) {
    vgpu_init();
    REAL_OR_UNSUPPORTED(cuMemGetInfo_v2);
    vgpu_depth++;
    CUresult rc = vgpu_real.cuMemGetInfo_v2(free_bytes, total);
    vgpu_depth--;
    if (rc != CUDA_SUCCESS || vgpu_depth || !free_bytes || !total) return rc;
    int d = vgpu_current_index();
    uint64_t lim = limit_of(d);
#ifdef VGPU_FAULT_CUDA_TOTAL_UNCLAMPED /* deliberate fault build only (hami_stack/faults) */
    lim = 0;
#endif
    if (!lim) return rc;
    uint64_t t = lim < *total ? lim : *total; /* never report more than the hardware has */
    uint64_t used = vgpu_used(d);
    uint64_t f = used < t ? t - used : 0;       /* over the limit reads as 0 free, never an error */
    if (f > *free_bytes) f = *free_bytes;        /* other tenants may hold the rest of the card */
    *total = (size_t)t;
    *free_bytes = (size_t)f;
    return rc;
}

VGPU_API CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice dev) {
    vgpu_init();
    REAL_OR_UNSUPPORTED(cuDeviceTotalMem_v2);
    vgpu_depth++;
    CUresult rc = vgpu_real.cuDeviceTotalMem_v2(bytes, dev);
    vgpu_depth--;
    if (rc != CUDA_SUCCESS || vgpu_depth || !bytes) return rc;
    uint64_t lim = limit_of(vgpu_container_index(dev));
#ifdef VGPU_FAULT_CUDA_TOTAL_UNCLAMPED /* deliberate fault build only (hami_stack/faults) */
    lim = 0;
#endif
    if (lim && lim < *bytes) *bytes = (size_t)lim;
    return rc;
}

/* ---- contexts: pass through, then learn the device (index map, region entry, limiter) ---- */

static CUresult after_ctx(CUresult rc, CUdevice dev) {
    if (rc == CUDA_SUCCESS && !vgpu_depth) {
        int d = vgpu_container_index(dev);
        if (d >= 0) vgpu_limiter_on_context(d);
    }
    return rc;
}

VGPU_API CUresult cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev) {
    vgpu_init();
    REAL_OR_UNSUPPORTED(cuDevicePrimaryCtxRetain);
    return after_ctx(vgpu_real.cuDevicePrimaryCtxRetain(pctx, dev), dev);
}

VGPU_API CUresult cuCtxCreate_v2(CUcontext *pctx, unsigned int flags, CUdevice dev) {
    vgpu_init();
    REAL_OR_UNSUPPORTED(cuCtxCreate_v2);
    return after_ctx(vgpu_real.cuCtxCreate_v2(pctx, flags, dev), dev);
}

VGPU_API CUresult cuCtxCreate_v3(CUcontext *pctx, CUexecAffinityParam *p, int n, unsigned int flags, CUdevice dev) {
    vgpu_init();
    REAL_OR_UNSUPPORTED(cuCtxCreate_v3);
    return after_ctx(vgpu_real.cuCtxCreate_v3(pctx, p, n, flags, dev), dev);
}

VGPU_API CUresult cuCtxCreate_v4(CUcontext *pctx, CUctxCreateParams *params, unsigned int flags, CUdevice dev) {
    vgpu_init();
    REAL_OR_UNSUPPORTED(cuCtxCreate_v4);
    return after_ctx(vgpu_real.cuCtxCreate_v4(pctx, params, flags, dev), dev);
}
