/*
 * Allocation family: reserve in the shared region, let the driver allocate, remember what was
 * charged so the matching free gives exactly that back. Frees of pointers the shim does not know go
 * straight to the driver (unlike HAMi-core, which refused them).
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---- per-process table: (class, key) -> (device, bytes, aux) ----
 * CLS_PTR  linear allocation (alloc, managed, pitch, async, pool): aux = owning context
 * CLS_ARR  CUDA array / mipmapped array:                           aux = owning context
 * CLS_VMM  cuMemCreate handle: aux = live mappings | VMM_RELEASED once cuMemRelease has run
 * CLS_MAP  one cuMemMap of a tracked handle at key = address:      aux = the handle
 * CLS_POOL allocation out of a memory pool: bytes = the pool (the pool is charged its reserve)
 * The charge of a VMM handle stays until it is released AND its last mapping is gone, because that is
 * when the driver gives the physical memory back. */
enum { CLS_PTR = 1, CLS_VMM = 2, CLS_MAP = 3, CLS_ARR = 4, CLS_POOL = 5 };
#define VMM_RELEASED (1ULL << 63)
typedef struct entry {
    uint64_t key;
    uint64_t bytes;
    uint64_t aux;
    int32_t cls; /* 0 free, -1 tombstone */
    int32_t dev;
} entry_t;

static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static entry_t *table;
static size_t table_cap, table_used, table_tomb;
static size_t live_maps; /* CLS_MAP entries: unmaps scan the table only when there are any */

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

static entry_t *find_locked(int cls, uint64_t key) {
    if (!table_cap) return NULL;
    size_t j = hash(key, cls) & (table_cap - 1);
    while (table[j].cls) {
        if (table[j].cls == cls && table[j].key == key) return &table[j];
        j = (j + 1) & (table_cap - 1);
    }
    return NULL;
}

static void remove_locked(entry_t *e) {
    if (e->cls == CLS_MAP) live_maps--;
    e->cls = -1;
    table_used--;
    table_tomb++;
}

static int track_locked(int cls, uint64_t key, int dev, uint64_t bytes, uint64_t aux) {
    if ((table_used + table_tomb + 1) * 2 > table_cap && grow_locked() != 0) return -1;
    size_t j = hash(key, cls) & (table_cap - 1);
    while (table[j].cls > 0 && !(table[j].cls == cls && table[j].key == key)) j = (j + 1) & (table_cap - 1);
    if (table[j].cls > 0) { /* a key reused without our seeing its free: keep the newest */
        if (cls != CLS_MAP && cls != CLS_POOL) vgpu_uncharge(table[j].dev, table[j].bytes);
    } else {
        if (table[j].cls < 0) table_tomb--;
        table_used++;
        if (cls == CLS_MAP) live_maps++;
    }
    table[j] = (entry_t){key, bytes, aux, cls, dev};
    return 0;
}

static int track(int cls, uint64_t key, int dev, uint64_t bytes, uint64_t aux) {
    pthread_mutex_lock(&table_lock);
    int rc = track_locked(cls, key, dev, bytes, aux);
    pthread_mutex_unlock(&table_lock);
    return rc;
}

static int untrack(int cls, uint64_t key, int *dev, uint64_t *bytes) {
    pthread_mutex_lock(&table_lock);
    entry_t *e = find_locked(cls, key);
    if (e) {
        *dev = e->dev;
        *bytes = e->bytes;
        remove_locked(e);
    }
    pthread_mutex_unlock(&table_lock);
    return e != NULL;
}

static void forget_pools(void);

void vgpu_memory_prefork(void) { pthread_mutex_lock(&table_lock); }
void vgpu_memory_postfork_parent(void) { pthread_mutex_unlock(&table_lock); }
void vgpu_memory_after_fork_child(void) {
    /* the child owns none of the parent's device memory */
    free(table);
    table = NULL;
    table_cap = table_used = table_tomb = live_maps = 0;
    pthread_mutex_init(&table_lock, NULL);
    forget_pools();
}

/* Every linear allocation is charged in whole granules of the driver's allocator (cuMemAlloc hands
 * out 512-byte aligned blocks; a 1-byte request occupies one), so many tiny allocations cannot use
 * more device memory than the limit. */
#define ALLOC_GRANULE 512ULL
static inline uint64_t granules(uint64_t bytes) {
    return bytes > UINT64_MAX - (ALLOC_GRANULE - 1) ? UINT64_MAX & ~(ALLOC_GRANULE - 1)
                                                    : (bytes + ALLOC_GRANULE - 1) & ~(ALLOC_GRANULE - 1);
}

static CUcontext current_ctx(void) {
    CUcontext c = NULL;
    if (vgpu_real.cuCtxGetCurrent && vgpu_real.cuCtxGetCurrent(&c) != CUDA_SUCCESS) c = NULL;
    return c;
}

/* Per-thread memo of the current context's device: one driver call (cuCtxGetCurrent) per allocation
 * instead of two. Any context teardown bumps the generation, so a context re-created at the same
 * address is never mistaken for the old one. */
static atomic_uint ctx_gen;
static __thread CUcontext t_ctx __attribute__((tls_model("initial-exec")));
static __thread int t_idx __attribute__((tls_model("initial-exec")));
static __thread unsigned t_gen __attribute__((tls_model("initial-exec")));

static int current_index_ctx(CUcontext *out) {
    CUcontext c = current_ctx();
    *out = c;
    if (!c) return -1;
    unsigned g = atomic_load_explicit(&ctx_gen, memory_order_acquire);
    if (LIKELY(c == t_ctx && t_gen == g)) return t_idx;
    int d = vgpu_current_index();
    t_ctx = c;
    t_idx = d;
    t_gen = g;
    return d;
}

/* container device of context c (the current one is asked directly; another is made current briefly) */
static int ctx_index(CUcontext c, CUcontext cur) {
    if (!c || c == cur) {
        CUcontext again;
        return current_index_ctx(&again);
    }
    if (!vgpu_real.cuCtxPushCurrent_v2 || !vgpu_real.cuCtxPopCurrent_v2) return -1;
    if (vgpu_real.cuCtxPushCurrent_v2(c) != CUDA_SUCCESS) return -1;
    int d = vgpu_current_index();
    CUcontext popped;
    vgpu_real.cuCtxPopCurrent_v2(&popped);
    return d;
}

/* Give back every charge the driver drops when context c goes away (linear allocations, arrays). */
static void resync_all_pools(void);

static void release_context(CUcontext c) {
    atomic_fetch_add_explicit(&ctx_gen, 1, memory_order_acq_rel);
    if (!c) return;
    uint64_t back[VGPU_MAX_DEVICES] = {0};
    int pooled = 0;
    pthread_mutex_lock(&table_lock);
    for (size_t i = 0; i < table_cap; i++) {
        entry_t *e = &table[i];
        if (e->cls <= 0 || e->aux != (uint64_t)(uintptr_t)c) continue;
        if (e->cls == CLS_PTR || e->cls == CLS_ARR) {
            if (e->dev >= 0 && e->dev < VGPU_MAX_DEVICES) back[e->dev] += e->bytes;
            remove_locked(e);
        } else if (e->cls == CLS_POOL) {
            pooled = 1;
            remove_locked(e);
        }
    }
    pthread_mutex_unlock(&table_lock);
    for (int d = 0; d < VGPU_MAX_DEVICES; d++)
        if (back[d]) vgpu_uncharge(d, back[d]);
    if (pooled) resync_all_pools(); /* the driver gave those back to their pools */
}

static uint64_t limit_of(int d) { return d >= 0 && d < VGPU_MAX_DEVICES ? vgpu_cfg.mem_limit[d] : 0; }
static int blocked(int d) { return d >= 0 && d < VGPU_MAX_DEVICES && vgpu_cfg.mem_blocked[d]; }

/* charge, allocate through `call`, record under (cls, key) or give the charge back */
#define CHARGED_ALLOC(d, bytes, cls, call, keyexpr, aux)                                                       \
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
        if (track((cls), (uint64_t)(keyexpr), (d), (bytes), (uint64_t)(uintptr_t)(aux)) != 0)                  \
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
    CUcontext ctx;
    int d = current_index_ctx(&ctx);
    if (d < 0) return vgpu_real.cuMemAlloc_v2(dptr, bytesize); /* no context: the driver reports it */
#ifdef VGPU_FAULT_ALLOC_UNLIMITED /* deliberate fault build only (hami_stack/faults) */
    return vgpu_real.cuMemAlloc_v2(dptr, bytesize);
#endif
    CHARGED_ALLOC(d, granules(bytesize), CLS_PTR, vgpu_real.cuMemAlloc_v2(dptr, bytesize), *dptr, ctx);
}

/* Managed memory counts fully against the device limit (it can all become resident there). */
VGPU_API CUresult cuMemAllocManaged(CUdeviceptr *dptr, size_t bytesize, unsigned int flags) {
    vgpu_init();
    REAL_OR_UNSUPPORTED(cuMemAllocManaged);
    if (vgpu_depth || !dptr || !bytesize) return vgpu_real.cuMemAllocManaged(dptr, bytesize, flags);
    CUcontext ctx;
    int d = current_index_ctx(&ctx);
    if (d < 0) return vgpu_real.cuMemAllocManaged(dptr, bytesize, flags);
#ifdef VGPU_FAULT_MANAGED_UNLIMITED /* deliberate fault build only (hami_stack/faults) */
    return vgpu_real.cuMemAllocManaged(dptr, bytesize, flags);
#endif
    CHARGED_ALLOC(d, granules(bytesize), CLS_PTR, vgpu_real.cuMemAllocManaged(dptr, bytesize, flags), *dptr, ctx);
}

/* Pitched: charge an upper estimate first, then settle on the real pitch x height. */
VGPU_API CUresult cuMemAllocPitch_v2(CUdeviceptr *dptr, size_t *pPitch, size_t WidthInBytes, size_t Height,
                                     unsigned int ElementSizeBytes) {
    vgpu_init();
    REAL_OR_UNSUPPORTED(cuMemAllocPitch_v2);
    if (vgpu_depth || !dptr || !pPitch || !WidthInBytes || !Height)
        return vgpu_real.cuMemAllocPitch_v2(dptr, pPitch, WidthInBytes, Height, ElementSizeBytes);
    CUcontext ctx;
    int d = current_index_ctx(&ctx);
    if (d < 0) return vgpu_real.cuMemAllocPitch_v2(dptr, pPitch, WidthInBytes, Height, ElementSizeBytes);
#ifdef VGPU_FAULT_PITCH_UNLIMITED /* deliberate fault build only (hami_stack/faults) */
    return vgpu_real.cuMemAllocPitch_v2(dptr, pPitch, WidthInBytes, Height, ElementSizeBytes);
#endif
    uint64_t w = ((uint64_t)WidthInBytes + 511) & ~511ULL;
    if (Height > UINT64_MAX / w) return CUDA_ERROR_OUT_OF_MEMORY;
    uint64_t est = granules(w * Height);
    CUresult c = vgpu_charge(d, est, limit_of(d));
    if (c != CUDA_SUCCESS) return c;
    vgpu_depth++;
    CUresult rc = vgpu_real.cuMemAllocPitch_v2(dptr, pPitch, WidthInBytes, Height, ElementSizeBytes);
    vgpu_depth--;
    if (rc != CUDA_SUCCESS) {
        vgpu_uncharge(d, est);
        return rc;
    }
    uint64_t real = granules((uint64_t)*pPitch * Height);
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
    if (track(CLS_PTR, *dptr, d, real, (uint64_t)(uintptr_t)ctx) != 0) LOG_WARN("allocation table full");
    return CUDA_SUCCESS;
}

static void pool_resync(CUmemoryPool p);

static CUresult free_ptr(CUresult (*real)(CUdeviceptr, CUstream), CUdeviceptr dptr, CUstream s, int async) {
    vgpu_depth++;
    CUresult rc = async ? real(dptr, s) : vgpu_real.cuMemFree_v2(dptr);
    vgpu_depth--;
    int d;
    uint64_t bytes;
    /* only a successful free gives the charge back; unknown pointers were never charged */
    if (rc == CUDA_SUCCESS && dptr) {
        if (untrack(CLS_PTR, dptr, &d, &bytes)) {
#if !defined(VGPU_FAULT_FREE_NOT_CREDITED) /* deliberate fault build only (hami_stack/faults) */
            vgpu_uncharge(d, bytes);
#endif
        } else if (untrack(CLS_POOL, dptr, &d, &bytes)) pool_resync((CUmemoryPool)(uintptr_t)bytes);
    }
    return rc;
}

VGPU_API CUresult cuMemFree_v2(CUdeviceptr dptr) {
    vgpu_init();
    REAL_OR_UNSUPPORTED(cuMemFree_v2);
    if (vgpu_depth) return vgpu_real.cuMemFree_v2(dptr);
    return free_ptr(NULL, dptr, NULL, 0);
}

/* The context a stream belongs to: the current one for the NULL/legacy/per-thread handles. */
static CUcontext stream_ctx(CUstream s, CUcontext cur) {
    if ((uintptr_t)s <= 2) return cur;
    CUcontext c = NULL;
    if (vgpu_real.cuStreamGetCtx && vgpu_real.cuStreamGetCtx(s, &c) == CUDA_SUCCESS && c) return c;
    return cur;
}

/* ---- memory pools ----
 * A pool holds device memory (its reserve) of which allocations use a part; freed memory may stay
 * reserved (release threshold) and is still in use on the card. So a pool is charged its reserve, as
 * the driver reports it (CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT), re-read after every allocation and
 * free from it; before an allocation, only the growth it can cause (request - idle reserve) is checked
 * against the limit. Pools are learned from creation, from the device queries, and from use. */
enum { POOL_RESERVED = 5, POOL_USED = 7 }; /* CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT, _USED_MEM_CURRENT */
#define MAX_POOLS 256
static struct pool_rec {
    CUmemoryPool pool;
    int dev;
    uint64_t charged;
} pools[MAX_POOLS];
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;

/* a forked child holds none of its parent's pool reserves */
static void forget_pools(void) {
    memset(pools, 0, sizeof(pools));
    pthread_mutex_init(&pool_lock, NULL);
}

static struct pool_rec *pool_find_locked(CUmemoryPool p, int dev_if_new) {
    struct pool_rec *free_rec = NULL;
    for (int i = 0; i < MAX_POOLS; i++) {
        if (pools[i].pool == p) return &pools[i];
        if (!free_rec && !pools[i].pool) free_rec = &pools[i];
    }
    if (!free_rec || dev_if_new < 0) return NULL;
    *free_rec = (struct pool_rec){p, dev_if_new, 0};
    return free_rec;
}

static void note_pool(CUmemoryPool p, int d) {
    if (!p || d < 0) return;
    pthread_mutex_lock(&pool_lock);
    pool_find_locked(p, d);
    pthread_mutex_unlock(&pool_lock);
}

static int pool_index(CUmemoryPool p) {
    pthread_mutex_lock(&pool_lock);
    struct pool_rec *r = pool_find_locked(p, -1);
    int d = r ? r->dev : -1;
    pthread_mutex_unlock(&pool_lock);
    return d;
}

static int pool_attr(CUmemoryPool p, int attr, uint64_t *v) {
    cuuint64_t x = 0;
    if (!vgpu_real.cuMemPoolGetAttribute || vgpu_real.cuMemPoolGetAttribute(p, attr, &x) != CUDA_SUCCESS) return -1;
    *v = x;
    return 0;
}

/* bring the pool's charge to its reserve; pool_lock held */
static void pool_settle_locked(struct pool_rec *r) {
    uint64_t reserved;
    if (pool_attr(r->pool, POOL_RESERVED, &reserved) != 0) return;
    if (reserved > r->charged) vgpu_charge(r->dev, reserved - r->charged, 0); /* already on the card */
    else if (reserved < r->charged) vgpu_uncharge(r->dev, r->charged - reserved);
    r->charged = reserved;
}

static void pool_resync(CUmemoryPool p) {
    pthread_mutex_lock(&pool_lock);
    struct pool_rec *r = pool_find_locked(p, -1);
    if (r) pool_settle_locked(r);
    pthread_mutex_unlock(&pool_lock);
}

static void resync_all_pools(void) {
    pthread_mutex_lock(&pool_lock);
    for (int i = 0; i < MAX_POOLS; i++)
        if (pools[i].pool) pool_settle_locked(&pools[i]);
    pthread_mutex_unlock(&pool_lock);
}

/* Allocate from pool p on container device d: check the growth, allocate, settle on the reserve. */
#define POOL_ALLOC(d, p, bytes, call, ctx)                                                                     \
    do {                                                                                                       \
        uint64_t _need = granules(bytes), _res = 0, _used = 0;                                                 \
        pthread_mutex_lock(&pool_lock);                                                                        \
        struct pool_rec *_r = pool_find_locked((p), (d));                                                      \
        if (!_r || pool_attr((p), POOL_RESERVED, &_res) || pool_attr((p), POOL_USED, &_used)) {                \
            pthread_mutex_unlock(&pool_lock); /* no view of the pool: charge the allocation itself */          \
            CHARGED_ALLOC(d, _need, CLS_PTR, call, *dptr, ctx);                                                \
        }                                                                                                      \
        pool_settle_locked(_r);                                                                                \
        uint64_t _idle = _res > _used ? _res - _used : 0, _grow = _need > _idle ? _need - _idle : 0;          \
        CUresult _c = vgpu_charge((d), _grow, limit_of(d));                                                    \
        if (_c != CUDA_SUCCESS) {                                                                              \
            pthread_mutex_unlock(&pool_lock);                                                                  \
            return _c;                                                                                         \
        }                                                                                                      \
        _r->charged += _grow;                                                                                  \
        vgpu_depth++;                                                                                          \
        CUresult _rc = (call);                                                                                 \
        vgpu_depth--;                                                                                          \
        pool_settle_locked(_r);                                                                                \
        pthread_mutex_unlock(&pool_lock);                                                                      \
        if (_rc == CUDA_SUCCESS &&                                                                             \
            track(CLS_POOL, *dptr, (d), (uint64_t)(uintptr_t)(p), (uint64_t)(uintptr_t)(ctx)) != 0)           \
            LOG_WARN("allocation table full");                                                                 \
        return _rc;                                                                                            \
    } while (0)

/* CUDA ordinal of context c's device */
static int ctx_ordinal(CUcontext c, CUcontext cur) {
    CUdevice dev = -1;
    if (!vgpu_real.cuCtxGetDevice) return -1;
    if (!c || c == cur) return vgpu_real.cuCtxGetDevice(&dev) == CUDA_SUCCESS ? dev : -1;
    if (!vgpu_real.cuCtxPushCurrent_v2 || vgpu_real.cuCtxPushCurrent_v2(c) != CUDA_SUCCESS) return -1;
    if (vgpu_real.cuCtxGetDevice(&dev) != CUDA_SUCCESS) dev = -1;
    CUcontext popped;
    vgpu_real.cuCtxPopCurrent_v2(&popped);
    return dev;
}

/* Stream-ordered allocations come from the current pool of the stream's device. */
static CUresult alloc_async(CUresult (*real)(CUdeviceptr *, size_t, CUstream), CUdeviceptr *dptr, size_t bytesize,
                            CUstream s) {
    if (!real) return CUDA_ERROR_NOT_SUPPORTED;
    if (vgpu_depth || !dptr || !bytesize) return real(dptr, bytesize, s);
    CUcontext cur = current_ctx();
    CUcontext c = stream_ctx(s, cur);
    int ord = ctx_ordinal(c, cur);
    int d = ord >= 0 ? vgpu_container_index(ord) : -1;
    if (d < 0) return real(dptr, bytesize, s);
#ifdef VGPU_FAULT_ASYNC_UNLIMITED /* deliberate fault build only (hami_stack/faults) */
    return real(dptr, bytesize, s);
#endif
    CUmemoryPool pool = NULL;
    if (!vgpu_real.cuDeviceGetMemPool || vgpu_real.cuDeviceGetMemPool(&pool, ord) != CUDA_SUCCESS || !pool)
        CHARGED_ALLOC(d, granules(bytesize), CLS_PTR, real(dptr, bytesize, s), *dptr, c);
    POOL_ALLOC(d, pool, bytesize, real(dptr, bytesize, s), c);
}

VGPU_API CUresult cuMemAllocAsync(CUdeviceptr *dptr, size_t bytesize, CUstream hStream) {
    vgpu_init();
    return alloc_async(vgpu_real.cuMemAllocAsync, dptr, bytesize, hStream);
}
VGPU_API CUresult cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t bytesize, CUstream hStream) {
    vgpu_init();
    return alloc_async(vgpu_real.cuMemAllocAsync_ptsz, dptr, bytesize, hStream);
}

/* Pool allocations land on the pool's device (known from its creation or the device query), else on
 * the device of the stream's context. */
static CUresult alloc_pool(CUresult (*real)(CUdeviceptr *, size_t, CUmemoryPool, CUstream), CUdeviceptr *dptr,
                           size_t bytesize, CUmemoryPool pool, CUstream s) {
    if (!real) return CUDA_ERROR_NOT_SUPPORTED;
    if (vgpu_depth || !dptr || !bytesize) return real(dptr, bytesize, pool, s);
    CUcontext cur = current_ctx();
    CUcontext c = stream_ctx(s, cur);
    int d = pool_index(pool);
    if (d < 0) d = ctx_index(c, cur);
    if (d < 0) return real(dptr, bytesize, pool, s);
#ifdef VGPU_FAULT_ASYNC_UNLIMITED /* deliberate fault build only (hami_stack/faults) */
    return real(dptr, bytesize, pool, s);
#endif
    POOL_ALLOC(d, pool, bytesize, real(dptr, bytesize, pool, s), c);
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

VGPU_API CUresult cuMemPoolCreate(CUmemoryPool *pool, const vgpu_CUmemPoolProps *props) {
    vgpu_init();
    REAL_OR_UNSUPPORTED(cuMemPoolCreate);
    CUresult rc = vgpu_real.cuMemPoolCreate(pool, props);
    if (rc == CUDA_SUCCESS && !vgpu_depth && pool && props && props->location.type == CU_MEM_LOCATION_TYPE_DEVICE)
        note_pool(*pool, vgpu_container_index(props->location.id));
    return rc;
}

/* trimming or lowering the release threshold hands reserve back to the card at once */
VGPU_API CUresult cuMemPoolTrimTo(CUmemoryPool pool, size_t minBytesToKeep) {
    vgpu_init();
    REAL_OR_UNSUPPORTED(cuMemPoolTrimTo);
    CUresult rc = vgpu_real.cuMemPoolTrimTo(pool, minBytesToKeep);
    if (rc == CUDA_SUCCESS && !vgpu_depth) pool_resync(pool);
    return rc;
}

VGPU_API CUresult cuMemPoolSetAttribute(CUmemoryPool pool, int attr, void *value) {
    vgpu_init();
    REAL_OR_UNSUPPORTED(cuMemPoolSetAttribute);
    CUresult rc = vgpu_real.cuMemPoolSetAttribute(pool, attr, value);
    if (rc == CUDA_SUCCESS && !vgpu_depth) pool_resync(pool);
    return rc;
}

/* a destroyed pool gives its reserve back (one with allocations outstanding lives until they go) */
VGPU_API CUresult cuMemPoolDestroy(CUmemoryPool pool) {
    vgpu_init();
    REAL_OR_UNSUPPORTED(cuMemPoolDestroy);
    if (vgpu_depth) return vgpu_real.cuMemPoolDestroy(pool);
    pthread_mutex_lock(&pool_lock);
    vgpu_depth++;
    CUresult rc = vgpu_real.cuMemPoolDestroy(pool);
    vgpu_depth--;
    struct pool_rec *r = rc == CUDA_SUCCESS ? pool_find_locked(pool, -1) : NULL;
    uint64_t reserved;
    if (r && pool_attr(pool, POOL_RESERVED, &reserved) == 0) {
        pool_settle_locked(r);
    } else if (r) {
        vgpu_uncharge(r->dev, r->charged);
        memset(r, 0, sizeof(*r));
    }
    pthread_mutex_unlock(&pool_lock);
    return rc;
}

VGPU_API CUresult cuDeviceGetMemPool(CUmemoryPool *pool, CUdevice dev) {
    vgpu_init();
    REAL_OR_UNSUPPORTED(cuDeviceGetMemPool);
    CUresult rc = vgpu_real.cuDeviceGetMemPool(pool, dev);
    if (rc == CUDA_SUCCESS && !vgpu_depth && pool) note_pool(*pool, vgpu_container_index(dev));
    return rc;
}

VGPU_API CUresult cuDeviceGetDefaultMemPool(CUmemoryPool *pool, CUdevice dev) {
    vgpu_init();
    REAL_OR_UNSUPPORTED(cuDeviceGetDefaultMemPool);
    CUresult rc = vgpu_real.cuDeviceGetDefaultMemPool(pool, dev);
    if (rc == CUDA_SUCCESS && !vgpu_depth && pool) note_pool(*pool, vgpu_container_index(dev));
    return rc;
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

/* ---- VMM: charged from cuMemCreate until the physical memory is really gone ---- */

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
    /* the driver only accepts whole multiples of its reported granularity, so size is what it backs */
    CHARGED_ALLOC(d, size, CLS_VMM, vgpu_real.cuMemCreate(handle, size, prop, flags), *handle, 0);
}

/* drop a handle's charge once it is released and unmapped; table lock held, returns bytes to give back */
static uint64_t vmm_settle_locked(entry_t *h, int *dev) {
    if (!(h->aux & VMM_RELEASED) || (h->aux & ~VMM_RELEASED)) return 0;
    uint64_t b = h->bytes;
    *dev = h->dev;
    remove_locked(h);
    return b;
}

VGPU_API CUresult cuMemRelease(CUmemGenericAllocationHandle handle) {
    vgpu_init();
    REAL_OR_UNSUPPORTED(cuMemRelease);
    if (vgpu_depth) return vgpu_real.cuMemRelease(handle);
    vgpu_depth++;
    CUresult rc = vgpu_real.cuMemRelease(handle);
    vgpu_depth--;
    if (rc != CUDA_SUCCESS) return rc;
    int d = -1;
    uint64_t back = 0;
    pthread_mutex_lock(&table_lock);
    entry_t *h = find_locked(CLS_VMM, handle);
    if (h) {
        h->aux |= VMM_RELEASED; /* still mapped: the physical memory stays until the last unmap */
        back = vmm_settle_locked(h, &d);
    }
    pthread_mutex_unlock(&table_lock);
    if (back) vgpu_uncharge(d, back);
    return rc;
}

VGPU_API CUresult cuMemMap(CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle handle,
                           unsigned long long flags) {
    vgpu_init();
    REAL_OR_UNSUPPORTED(cuMemMap);
    if (vgpu_depth) return vgpu_real.cuMemMap(ptr, size, offset, handle, flags);
    vgpu_depth++;
    CUresult rc = vgpu_real.cuMemMap(ptr, size, offset, handle, flags);
    vgpu_depth--;
    if (rc != CUDA_SUCCESS) return rc;
    pthread_mutex_lock(&table_lock);
    entry_t *h = find_locked(CLS_VMM, handle);
    if (h) {
        int dev = h->dev;
        h->aux++;
        if (track_locked(CLS_MAP, ptr, dev, size, handle) != 0) LOG_WARN("allocation table full");
    }
    pthread_mutex_unlock(&table_lock);
    return rc;
}

/* forget the mappings starting in [ptr, ptr+size) and settle their handles */
static void unmapped(CUdeviceptr ptr, size_t size) {
    uint64_t back[VGPU_MAX_DEVICES] = {0};
    pthread_mutex_lock(&table_lock);
    for (size_t i = 0; live_maps && i < table_cap; i++) {
        entry_t *m = &table[i];
        if (m->cls != CLS_MAP || m->key < ptr || m->key - ptr >= size) continue;
        uint64_t handle = m->aux;
        remove_locked(m);
        entry_t *h = find_locked(CLS_VMM, handle);
        if (!h) continue;
        if (h->aux & ~VMM_RELEASED) h->aux--;
        int d = -1;
        uint64_t b = vmm_settle_locked(h, &d);
        if (b && d >= 0 && d < VGPU_MAX_DEVICES) back[d] += b;
    }
    pthread_mutex_unlock(&table_lock);
    for (int d = 0; d < VGPU_MAX_DEVICES; d++)
        if (back[d]) vgpu_uncharge(d, back[d]);
}

VGPU_API CUresult cuMemUnmap(CUdeviceptr ptr, size_t size) {
    vgpu_init();
    REAL_OR_UNSUPPORTED(cuMemUnmap);
    if (vgpu_depth) return vgpu_real.cuMemUnmap(ptr, size);
    vgpu_depth++;
    CUresult rc = vgpu_real.cuMemUnmap(ptr, size);
    vgpu_depth--;
    if (rc == CUDA_SUCCESS) unmapped(ptr, size);
    return rc;
}

/* freeing a reservation drops whatever is still mapped in it */
VGPU_API CUresult cuMemAddressFree(CUdeviceptr ptr, size_t size) {
    vgpu_init();
    REAL_OR_UNSUPPORTED(cuMemAddressFree);
    if (vgpu_depth) return vgpu_real.cuMemAddressFree(ptr, size);
    vgpu_depth++;
    CUresult rc = vgpu_real.cuMemAddressFree(ptr, size);
    vgpu_depth--;
    if (rc == CUDA_SUCCESS) unmapped(ptr, size);
    return rc;
}

/* ---- CUDA arrays: device memory like any other ---- */

static uint64_t format_bytes(unsigned f) {
    switch (f) {
    case 0x01: case 0x08: return 1;                  /* (un)signed int8 */
    case 0x02: case 0x09: case 0x10: return 2;       /* (un)signed int16, half */
    case 0x03: case 0x0a: case 0x20: return 4;       /* (un)signed int32, float */
    default: return 16;                              /* unknown or block-compressed: the widest element */
    }
}

/* bytes of one level; 0 when it does not fit 64 bits (the driver will refuse it anyway) */
static uint64_t level_bytes(uint64_t w, uint64_t h, uint64_t dd, unsigned fmt, unsigned ch) {
    uint64_t b = format_bytes(fmt) * (ch ? ch : 1);
    uint64_t dims[3] = {w ? w : 1, h ? h : 1, dd ? dd : 1};
    for (int i = 0; i < 3; i++) {
        if (dims[i] > UINT64_MAX / b) return UINT64_MAX;
        b *= dims[i];
    }
    return granules(b);
}

static uint64_t array3d_bytes(const vgpu_CUDA_ARRAY3D_DESCRIPTOR *a, unsigned levels) {
    uint64_t total = 0, w = a->Width, h = a->Height, dd = a->Depth;
    int layered = (a->Flags & 0x01) != 0; /* CUDA_ARRAY3D_LAYERED: Depth counts layers, not shrunk */
    if (!levels) levels = 1;
    for (unsigned l = 0; l < levels; l++) {
        uint64_t b = level_bytes(w, h, dd, (unsigned)a->Format, a->NumChannels);
        if (b > UINT64_MAX - total) return UINT64_MAX;
        total += b;
        w = w > 1 ? w / 2 : w;
        h = h > 1 ? h / 2 : h;
        if (!layered) dd = dd > 1 ? dd / 2 : dd;
    }
    return total;
}

#define ARRAY_ALLOC(cls_bytes, call, keyexpr)                                                                  \
    do {                                                                                                       \
        CUcontext _cur;                                                                                        \
        int d = current_index_ctx(&_cur);                                                                      \
        if (d < 0) return (call);                                                                              \
        uint64_t _b = (cls_bytes);                                                                             \
        if (_b == UINT64_MAX) return CUDA_ERROR_OUT_OF_MEMORY;                                                 \
        CHARGED_ALLOC(d, _b, CLS_ARR, call, keyexpr, _cur);                                                    \
    } while (0)

VGPU_API CUresult cuArrayCreate_v2(CUarray_vgpu *pHandle, const vgpu_CUDA_ARRAY_DESCRIPTOR *desc) {
    vgpu_init();
    REAL_OR_UNSUPPORTED(cuArrayCreate_v2);
    if (vgpu_depth || !pHandle || !desc) return vgpu_real.cuArrayCreate_v2(pHandle, desc);
    ARRAY_ALLOC(level_bytes(desc->Width, desc->Height, 1, (unsigned)desc->Format, desc->NumChannels),
                vgpu_real.cuArrayCreate_v2(pHandle, desc), (uintptr_t)*pHandle);
}

VGPU_API CUresult cuArray3DCreate_v2(CUarray_vgpu *pHandle, const vgpu_CUDA_ARRAY3D_DESCRIPTOR *desc) {
    vgpu_init();
    REAL_OR_UNSUPPORTED(cuArray3DCreate_v2);
    if (vgpu_depth || !pHandle || !desc) return vgpu_real.cuArray3DCreate_v2(pHandle, desc);
    ARRAY_ALLOC(array3d_bytes(desc, 1), vgpu_real.cuArray3DCreate_v2(pHandle, desc), (uintptr_t)*pHandle);
}

VGPU_API CUresult cuMipmappedArrayCreate(CUmipmappedArray_vgpu *pHandle, const vgpu_CUDA_ARRAY3D_DESCRIPTOR *desc,
                                         unsigned int numMipmapLevels) {
    vgpu_init();
    REAL_OR_UNSUPPORTED(cuMipmappedArrayCreate);
    if (vgpu_depth || !pHandle || !desc) return vgpu_real.cuMipmappedArrayCreate(pHandle, desc, numMipmapLevels);
    ARRAY_ALLOC(array3d_bytes(desc, numMipmapLevels), vgpu_real.cuMipmappedArrayCreate(pHandle, desc, numMipmapLevels),
                (uintptr_t)*pHandle);
}

static CUresult array_destroyed(CUresult rc, uint64_t key) {
    int d;
    uint64_t bytes;
    if (rc == CUDA_SUCCESS && key && untrack(CLS_ARR, key, &d, &bytes)) vgpu_uncharge(d, bytes);
    return rc;
}

VGPU_API CUresult cuArrayDestroy(CUarray_vgpu h) {
    vgpu_init();
    REAL_OR_UNSUPPORTED(cuArrayDestroy);
    if (vgpu_depth) return vgpu_real.cuArrayDestroy(h);
    vgpu_depth++;
    CUresult rc = vgpu_real.cuArrayDestroy(h);
    vgpu_depth--;
    return array_destroyed(rc, (uint64_t)(uintptr_t)h);
}

VGPU_API CUresult cuMipmappedArrayDestroy(CUmipmappedArray_vgpu h) {
    vgpu_init();
    REAL_OR_UNSUPPORTED(cuMipmappedArrayDestroy);
    if (vgpu_depth) return vgpu_real.cuMipmappedArrayDestroy(h);
    vgpu_depth++;
    CUresult rc = vgpu_real.cuMipmappedArrayDestroy(h);
    vgpu_depth--;
    return array_destroyed(rc, (uint64_t)(uintptr_t)h);
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
    if (UNLIKELY(blocked(d))) { /* the limit does not parse: nothing is available (fail closed) */
        *total = 0;
        *free_bytes = 0;
        return rc;
    }
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
    int d = vgpu_container_index(dev);
    uint64_t lim = limit_of(d);
#ifdef VGPU_FAULT_CUDA_TOTAL_UNCLAMPED /* deliberate fault build only (hami_stack/faults) */
    lim = 0;
#endif
    if (UNLIKELY(blocked(d))) {
        *bytes = 0;
        return rc;
    }
    if (lim && lim < *bytes) *bytes = (size_t)lim;
    return rc;
}

/* ---- contexts: pass through, then learn the device (index map, region entry, limiter) ---- */

#define MAX_ORDINALS (VGPU_MAX_DEVICES * 4)
static CUcontext primary_ctx[MAX_ORDINALS]; /* learned at retain: what a release to zero destroys */
static int primary_refs[MAX_ORDINALS];      /* our count of retains, when the driver cannot be asked */

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
    CUresult rc = vgpu_real.cuDevicePrimaryCtxRetain(pctx, dev);
    if (rc == CUDA_SUCCESS && pctx && dev >= 0 && dev < MAX_ORDINALS)
    {
        __atomic_store_n(&primary_ctx[dev], *pctx, __ATOMIC_RELAXED);
        __atomic_add_fetch(&primary_refs[dev], 1, __ATOMIC_RELAXED);
    }
    return after_ctx(rc, dev);
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

/* Destroying a context frees what was allocated in it: its charges go with it. */
static CUresult ctx_destroy(CUresult (*real)(CUcontext), CUcontext ctx) {
    vgpu_init();
    if (!real) return CUDA_ERROR_NOT_SUPPORTED;
    if (vgpu_depth) return real(ctx);
    vgpu_depth++;
    CUresult rc = real(ctx);
    vgpu_depth--;
    if (rc == CUDA_SUCCESS) release_context(ctx);
    return rc;
}
VGPU_API CUresult cuCtxDestroy_v2(CUcontext ctx) { return ctx_destroy(vgpu_real.cuCtxDestroy_v2, ctx); }
VGPU_API CUresult cuCtxDestroy(CUcontext ctx) { return ctx_destroy(vgpu_real.cuCtxDestroy, ctx); }

/* A primary context reset, or released to zero references, is destroyed by the driver. */
static CUresult primary_down(CUresult (*real)(CUdevice), CUdevice dev, int reset) {
    vgpu_init();
    if (!real) return CUDA_ERROR_NOT_SUPPORTED;
    if (vgpu_depth) return real(dev);
    vgpu_depth++;
    CUresult rc = real(dev);
    int gone = reset, ok = dev >= 0 && dev < MAX_ORDINALS;
    if (rc == CUDA_SUCCESS && ok) {
        int left = 0;
        if (reset) __atomic_store_n(&primary_refs[dev], 0, __ATOMIC_RELAXED);
        else left = __atomic_sub_fetch(&primary_refs[dev], 1, __ATOMIC_RELAXED);
        unsigned int flags = 0;
        int active = 1;
        if (!reset && vgpu_real.cuDevicePrimaryCtxGetState &&
            vgpu_real.cuDevicePrimaryCtxGetState(dev, &flags, &active) == CUDA_SUCCESS)
            gone = !active; /* the driver's own count wins */
        else if (!reset)
            gone = left <= 0;
        if (left < 0) __atomic_store_n(&primary_refs[dev], 0, __ATOMIC_RELAXED);
    }
    vgpu_depth--;
    if (rc == CUDA_SUCCESS && gone && ok)
        release_context(__atomic_load_n(&primary_ctx[dev], __ATOMIC_RELAXED));
    return rc;
}
VGPU_API CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev) {
    return primary_down(vgpu_real.cuDevicePrimaryCtxRelease_v2, dev, 0);
}
VGPU_API CUresult cuDevicePrimaryCtxRelease(CUdevice dev) {
    return primary_down(vgpu_real.cuDevicePrimaryCtxRelease, dev, 0);
}
VGPU_API CUresult cuDevicePrimaryCtxReset_v2(CUdevice dev) {
    return primary_down(vgpu_real.cuDevicePrimaryCtxReset_v2, dev, 1);
}
VGPU_API CUresult cuDevicePrimaryCtxReset(CUdevice dev) {
    return primary_down(vgpu_real.cuDevicePrimaryCtxReset, dev, 1);
}
