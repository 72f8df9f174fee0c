/*
 * Emulated libcuda.so.1. Device memory is host memory (bounded by HAMI_EMU_HOST_BACKING_MIB per process;
 * beyond it allocations are address ranges without backing, still accounted on the card), and kernels
 * are declared in a tiny text image format:
 *
 *     HAMIEMU-KERNEL name=<entry> [op=busy|fill] [duration_us=N | duration_ms=N | duration_param=I [unit=ns|us|ms]]
 *
 * One kernel per line, anywhere in the image: the line may sit inside a PTX comment so that one image
 * runs on the real driver (which compiles the PTX) and on this one (which reads the comment).
 * op=fill takes (CUdeviceptr dst, size_t n, unsigned int byte) parameters and sets n bytes of dst.
 * A launched kernel occupies its stream for its duration; the interval is written into the node's
 * shared region, where the emulated NVML turns it into utilisation.
 */
#define _GNU_SOURCE
#define HAMI_EMU_LEGACY_API
#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "cuda_emu.h"
#include "emu_common.h"

/* cuda_unsupported.c: entry points HAMi-core hooks that the emulated model has no feature for */
HAMI_EMU_HIDDEN void *hami_emu_cuda_unsupported(const char *name);

#define API HAMI_EMU_EXPORT
#define DEFAULT_CUDA_VERSION 13000
#define VMM_GRANULARITY (2ULL << 20)
#define MAGIC_CTX 0x43545831u
#define MAGIC_STREAM 0x5354524du
#define MAGIC_EVENT 0x45564e31u
#define MAGIC_MODULE 0x4d4f4431u
#define MAGIC_FUNC 0x46554e31u
#define MAGIC_HANDLE 0x484e444cu
#define MAX_KERNELS 64
#define CTX_STACK 16

struct CUstream_st {
    unsigned magic;
    struct CUctx_st *ctx;
    int64_t tail_ns; /* when the last queued kernel finishes */
    unsigned flags;
    int priority;
    unsigned long long id;
};

static unsigned long long g_next_stream_id = 3; /* 0-2 name the legacy and per-thread default streams */

struct CUctx_st {
    unsigned magic;
    int ordinal;
    int phys;
    int primary;
    int refcount; /* primary contexts only */
    int64_t tail_ns;
    struct CUstream_st legacy;
    unsigned flags;
    int cache_config;
    size_t limits[7];
    int limit_set[7];
};

struct CUevent_st {
    unsigned magic;
    unsigned flags;
    int recorded;
    int64_t time_ns;
};

enum { OP_BUSY = 0, OP_FILL = 1 };

struct CUfunc_st {
    unsigned magic;
    struct CUmod_st *mod;
    char name[128];
    int op;
    int64_t duration_ns;
    int duration_param; /* -1: fixed duration */
    int64_t param_unit_ns;
    int max_dynamic_shared;
    int carveout;
};

struct CUmod_st {
    unsigned magic;
    int count;
    struct CUfunc_st funcs[MAX_KERNELS];
};

struct vmm_handle {
    unsigned magic;
    int phys;
    size_t size;
    int mappings;
    int released;
};

/* KIND_ARRAY: a CUDA array (base is its handle, no address range); KIND_HOST: page-locked host memory
 * (allocated, map_size > 0, or registered, map_size == 0), reachable as a device pointer through UVA */
enum { KIND_ALLOC = 0, KIND_RESERVE = 1, KIND_MAPPING = 2, KIND_ARRAY = 3, KIND_HOST = 4 };

struct CUmemPoolHandle_st;

struct region {
    uintptr_t base;
    size_t size;     /* bytes the caller may touch */
    size_t map_size; /* bytes mmap'ed (KIND_ALLOC, KIND_RESERVE) */
    uint64_t accounted;
    int phys;
    int kind;
    int backed;
    struct CUctx_st *ctx;       /* owner for KIND_ALLOC (freed with it) */
    struct vmm_handle *handle;  /* KIND_MAPPING */
    struct CUmemPoolHandle_st *pool; /* KIND_ALLOC from a memory pool: the pool holds the device memory */
    unsigned host_flags;        /* KIND_HOST */
    int managed;                /* KIND_ALLOC from cuMemAllocManaged */
    struct region *next;
};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_initialized;
static CUresult g_init_result = CUDA_ERROR_NOT_INITIALIZED;
static hami_emu_node_t g_node;
static int32_t g_pid;
static struct CUctx_st g_primary[HAMI_EMU_MAX_GPUS];
static struct region *g_regions;
static size_t g_backed_bytes;
static __thread struct CUctx_st *t_stack[CTX_STACK];
static __thread int t_depth;

/* Live handles handed to the application. Every handle argument is looked up here before it is
 * dereferenced, so a stale or made-up handle gets an error code instead of a crash. */
static void **g_live;
static size_t g_live_n, g_live_cap;
static pthread_mutex_t g_live_lock = PTHREAD_MUTEX_INITIALIZER;

static int live_add(void *p) {
    pthread_mutex_lock(&g_live_lock);
    int ok = 1;
    if (g_live_n == g_live_cap) {
        size_t cap = g_live_cap ? g_live_cap * 2 : 64;
        void **n = realloc(g_live, cap * sizeof(void *));
        if (n) {
            g_live = n;
            g_live_cap = cap;
        } else {
            ok = 0;
        }
    }
    if (ok) g_live[g_live_n++] = p;
    pthread_mutex_unlock(&g_live_lock);
    return ok;
}

static void live_del(const void *p) {
    pthread_mutex_lock(&g_live_lock);
    for (size_t i = 0; i < g_live_n; i++) {
        if (g_live[i] == p) {
            g_live[i] = g_live[--g_live_n];
            break;
        }
    }
    pthread_mutex_unlock(&g_live_lock);
}

static int live_has(const void *p) {
    if (!p) return 0;
    pthread_mutex_lock(&g_live_lock);
    int found = 0;
    for (size_t i = 0; i < g_live_n && !found; i++) found = g_live[i] == p;
    pthread_mutex_unlock(&g_live_lock);
    return found;
}

static void sleep_until(int64_t t) {
    for (;;) {
        int64_t now = hami_emu_now_ns();
        if (now >= t) return;
        int64_t d = t - now;
        struct timespec ts = {(time_t)(d / 1000000000LL), (long)(d % 1000000000LL)};
        nanosleep(&ts, NULL);
    }
}

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

static size_t backing_cap(void) {
    const char *e = getenv("HAMI_EMU_HOST_BACKING_MIB");
    long mib = e ? strtol(e, NULL, 10) : 512;
    return mib < 0 ? 0 : (size_t)mib << 20;
}

/* ---- init, versions, errors ---- */

API CUresult cuInit(unsigned int Flags) {
    if (Flags != 0) return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&g_lock);
    if (!g_initialized) {
        g_initialized = 1;
        int rc = hami_emu_load(&g_node);
        if (rc == HAMI_EMU_ERR_MISSING)
            g_init_result = CUDA_ERROR_NO_DEVICE;
        else if (rc == HAMI_EMU_ERR_VERSION)
            g_init_result = CUDA_ERROR_SYSTEM_DRIVER_MISMATCH;
        else if (rc != HAMI_EMU_OK)
            g_init_result = CUDA_ERROR_UNKNOWN;
        else {
            hami_emu_apply_cuda_visible(&g_node);
            g_pid = (int32_t)getpid();
            g_init_result = g_node.visible_count ? CUDA_SUCCESS : CUDA_ERROR_NO_DEVICE;
            for (int i = 0; i < g_node.visible_count; i++) {
                g_primary[i].ordinal = i;
                g_primary[i].phys = g_node.visible[i];
                g_primary[i].primary = 1;
            }
        }
    }
    CUresult rc = g_init_result;
    pthread_mutex_unlock(&g_lock);
    return rc;
}

API CUresult cuDriverGetVersion(int *driverVersion) {
    if (!driverVersion) return CUDA_ERROR_INVALID_VALUE;
    if (g_init_result == CUDA_SUCCESS) {
        *driverVersion = g_node.cuda_driver_version;
        return CUDA_SUCCESS;
    }
    /* works before cuInit, like the real one: peek at the inventory without attaching */
    hami_emu_node_t tmp;
    int v = DEFAULT_CUDA_VERSION;
    if (hami_emu_load(&tmp) == HAMI_EMU_OK) {
        v = tmp.cuda_driver_version;
        hami_emu_unload(&tmp);
    }
    *driverVersion = v;
    return CUDA_SUCCESS;
}

static const struct {
    CUresult code;
    const char *name;
    const char *text;
} g_errors[] = {
    {CUDA_SUCCESS, "CUDA_SUCCESS", "no error"},
    {CUDA_ERROR_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
    {CUDA_ERROR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
    {CUDA_ERROR_NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"},
    {CUDA_ERROR_DEINITIALIZED, "CUDA_ERROR_DEINITIALIZED", "driver shutting down"},
    {CUDA_ERROR_STUB_LIBRARY, "CUDA_ERROR_STUB_LIBRARY", "CUDA driver is a stub library"},
    {CUDA_ERROR_DEVICE_UNAVAILABLE, "CUDA_ERROR_DEVICE_UNAVAILABLE", "CUDA-capable device(s) is/are busy or unavailable"},
    {CUDA_ERROR_NO_DEVICE, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"},
    {CUDA_ERROR_INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal"},
    {CUDA_ERROR_DEVICE_NOT_LICENSED, "CUDA_ERROR_DEVICE_NOT_LICENSED", "device doesn't have valid Grid license"},
    {CUDA_ERROR_INVALID_IMAGE, "CUDA_ERROR_INVALID_IMAGE", "device kernel image is invalid"},
    {CUDA_ERROR_INVALID_CONTEXT, "CUDA_ERROR_INVALID_CONTEXT", "invalid device context"},
    {CUDA_ERROR_ECC_UNCORRECTABLE, "CUDA_ERROR_ECC_UNCORRECTABLE", "uncorrectable ECC error encountered"},
    {CUDA_ERROR_INVALID_PTX, "CUDA_ERROR_INVALID_PTX", "a PTX JIT compilation failed"},
    {CUDA_ERROR_INVALID_SOURCE, "CUDA_ERROR_INVALID_SOURCE", "device kernel image is invalid"},
    {CUDA_ERROR_FILE_NOT_FOUND, "CUDA_ERROR_FILE_NOT_FOUND", "file not found"},
    {CUDA_ERROR_OPERATING_SYSTEM, "CUDA_ERROR_OPERATING_SYSTEM", "OS call failed or operation not supported on this OS"},
    {CUDA_ERROR_INVALID_HANDLE, "CUDA_ERROR_INVALID_HANDLE", "invalid resource handle"},
    {CUDA_ERROR_NOT_FOUND, "CUDA_ERROR_NOT_FOUND", "named symbol not found"},
    {CUDA_ERROR_NOT_READY, "CUDA_ERROR_NOT_READY", "device not ready"},
    {CUDA_ERROR_ILLEGAL_ADDRESS, "CUDA_ERROR_ILLEGAL_ADDRESS", "an illegal memory access was encountered"},
    {CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES, "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES", "too many resources requested for launch"},
    {CUDA_ERROR_PRIMARY_CONTEXT_ACTIVE, "CUDA_ERROR_PRIMARY_CONTEXT_ACTIVE", "primary context active"},
    {CUDA_ERROR_CONTEXT_IS_DESTROYED, "CUDA_ERROR_CONTEXT_IS_DESTROYED", "context is destroyed"},
    {CUDA_ERROR_LAUNCH_FAILED, "CUDA_ERROR_LAUNCH_FAILED", "unspecified launch failure"},
    {CUDA_ERROR_NOT_PERMITTED, "CUDA_ERROR_NOT_PERMITTED", "operation not permitted"},
    {CUDA_ERROR_NOT_SUPPORTED, "CUDA_ERROR_NOT_SUPPORTED", "operation not supported"},
    {CUDA_ERROR_SYSTEM_DRIVER_MISMATCH, "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH",
     "system has unsupported display driver / cuda driver combination"},
    {CUDA_ERROR_UNKNOWN, "CUDA_ERROR_UNKNOWN", "unknown error"},
};

static CUresult error_lookup(CUresult error, const char **pStr, int text) {
    if (!pStr) return CUDA_ERROR_INVALID_VALUE;
    for (size_t i = 0; i < sizeof(g_errors) / sizeof(g_errors[0]); i++) {
        if (g_errors[i].code == error) {
            *pStr = text ? g_errors[i].text : g_errors[i].name;
            return CUDA_SUCCESS;
        }
    }
    *pStr = NULL;
    return CUDA_ERROR_INVALID_VALUE;
}

API CUresult cuGetErrorName(CUresult error, const char **pStr) { return error_lookup(error, pStr, 0); }
API CUresult cuGetErrorString(CUresult error, const char **pStr) { return error_lookup(error, pStr, 1); }

/* ---- shared helpers ---- */

#define REQUIRE_INIT()                                          \
    do {                                                        \
        if (g_init_result != CUDA_SUCCESS) return CUDA_ERROR_NOT_INITIALIZED; \
    } while (0)

static hami_emu_gpu_t *sgpu(int phys) { return &g_node.shm->gpus[phys]; }
static const hami_emu_gpu_info_t *ginfo(int phys) { return &g_node.gpus[phys]; }

/* A lost GPU fails everything with the generic error real drivers give after Xid 79; an armed fault
 * fails this call with its code. */
static CUresult device_gate(int phys) {
    if (sgpu(phys)->health == HAMI_EMU_LOST) return CUDA_ERROR_UNKNOWN;
    int fault = hami_emu_take_cuda_fault(g_node.shm, phys);
    return fault ? (CUresult)fault : CUDA_SUCCESS;
}

static int valid_ordinal(CUdevice dev) { return dev >= 0 && dev < g_node.visible_count; }

static int valid_ctx(struct CUctx_st *c) {
    int primary = c >= g_primary && c < g_primary + HAMI_EMU_MAX_GPUS;
    return (primary || live_has(c)) && c->magic == MAGIC_CTX;
}

static struct CUctx_st *current_ctx(void) {
    struct CUctx_st *c = t_depth ? t_stack[t_depth - 1] : NULL;
    return valid_ctx(c) ? c : NULL;
}

static uint64_t usable_bytes(int phys) {
    const hami_emu_gpu_info_t *g = ginfo(phys);
    return g->memory_bytes > g->reserved_bytes ? g->memory_bytes - g->reserved_bytes : 0;
}

/* ---- devices ---- */

API CUresult cuDeviceGetCount(int *count) {
    REQUIRE_INIT();
    if (!count) return CUDA_ERROR_INVALID_VALUE;
    *count = g_node.visible_count;
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGet(CUdevice *device, int ordinal) {
    REQUIRE_INIT();
    if (!device) return CUDA_ERROR_INVALID_VALUE;
    if (!valid_ordinal(ordinal)) return CUDA_ERROR_INVALID_DEVICE;
    *device = ordinal;
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGetName(char *name, int len, CUdevice dev) {
    REQUIRE_INIT();
    if (!name || len <= 0) return CUDA_ERROR_INVALID_VALUE;
    if (!valid_ordinal(dev)) return CUDA_ERROR_INVALID_DEVICE;
    /* the real driver truncates to the buffer instead of failing */
    snprintf(name, (size_t)len, "%s", ginfo(g_node.visible[dev])->name);
    return CUDA_SUCCESS;
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

API CUresult cuDeviceGetUuid_v2(CUuuid *uuid, CUdevice dev) {
    REQUIRE_INIT();
    if (!uuid) return CUDA_ERROR_INVALID_VALUE;
    if (!valid_ordinal(dev)) return CUDA_ERROR_INVALID_DEVICE;
    const char *s = ginfo(g_node.visible[dev])->uuid;
    if (!strncasecmp(s, "GPU-", 4)) s += 4;
    int n = 0;
    memset(uuid->bytes, 0, sizeof(uuid->bytes));
    for (; *s && n < 32; s++) {
        int v = hexval((unsigned char)*s);
        if (v < 0) continue; /* dashes */
        uuid->bytes[n / 2] = (char)(uuid->bytes[n / 2] | (n % 2 ? v : v << 4));
        n++;
    }
    return CUDA_SUCCESS;
}
API CUresult cuDeviceGetUuid(CUuuid *uuid, CUdevice dev) { return cuDeviceGetUuid_v2(uuid, dev); }

API CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice dev) {
    REQUIRE_INIT();
    if (!bytes) return CUDA_ERROR_INVALID_VALUE;
    if (!valid_ordinal(dev)) return CUDA_ERROR_INVALID_DEVICE;
    *bytes = (size_t)ginfo(g_node.visible[dev])->memory_bytes;
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGetPCIBusId(char *pciBusId, int len, CUdevice dev) {
    REQUIRE_INIT();
    if (!pciBusId || len <= 0) return CUDA_ERROR_INVALID_VALUE;
    if (!valid_ordinal(dev)) return CUDA_ERROR_INVALID_DEVICE;
    const hami_emu_gpu_info_t *g = ginfo(g_node.visible[dev]);
    snprintf(pciBusId, (size_t)len, "%04X:%02X:%02X.%X", g->domain, g->bus, g->device, g->function);
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGetAttribute(int *pi, CUdevice_attribute attrib, CUdevice dev) {
    REQUIRE_INIT();
    if (!pi) return CUDA_ERROR_INVALID_VALUE;
    if (!valid_ordinal(dev)) return CUDA_ERROR_INVALID_DEVICE;
    const hami_emu_gpu_info_t *g = ginfo(g_node.visible[dev]);
    int v;
    switch ((int)attrib) {
    case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: v = 1024; break;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X: v = 1024; break;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y: v = 1024; break;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z: v = 64; break;
    case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X: v = 2147483647; break;
    case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y: v = 65535; break;
    case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z: v = 65535; break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK: v = 49152; break;
    case CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY: v = 65536; break;
    case CU_DEVICE_ATTRIBUTE_WARP_SIZE: v = 32; break;
    case CU_DEVICE_ATTRIBUTE_MAX_PITCH: v = 2147483647; break;
    case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK: v = 65536; break;
    case CU_DEVICE_ATTRIBUTE_CLOCK_RATE: v = (int)g->max_sm_clock_mhz * 1000; break;
    case CU_DEVICE_ATTRIBUTE_TEXTURE_ALIGNMENT: v = 512; break;
    case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: v = g->sm_count; break;
    case CU_DEVICE_ATTRIBUTE_KERNEL_EXEC_TIMEOUT: v = 0; break;
    case CU_DEVICE_ATTRIBUTE_INTEGRATED: v = 0; break;
    case CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY: v = 1; break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_MODE: v = 0; break;
    case CU_DEVICE_ATTRIBUTE_CONCURRENT_KERNELS: v = 1; break;
    case CU_DEVICE_ATTRIBUTE_ECC_ENABLED: v = 1; break;
    case CU_DEVICE_ATTRIBUTE_PCI_BUS_ID: v = (int)g->bus; break;
    case CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID: v = (int)g->device; break;
    case CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID: v = (int)g->domain; break;
    case CU_DEVICE_ATTRIBUTE_TCC_DRIVER: v = 0; break;
    case CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE: v = (int)g->max_mem_clock_mhz * 1000; break;
    case CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH: v = (int)g->mem_bus_width; break;
    case CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE: v = (int)g->l2_cache_bytes; break;
    case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR: v = (int)g->max_threads_per_sm; break;
    case CU_DEVICE_ATTRIBUTE_ASYNC_ENGINE_COUNT: v = 2; break;
    case CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING: v = 1; break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: v = g->cc_major; break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: v = g->cc_minor; break;
    case CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY: v = 1; break;
    case CU_DEVICE_ATTRIBUTE_MULTI_GPU_BOARD: v = 0; break;
    case CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS: v = 1; break;
    case CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED: v = 1; break;
    case CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED: v = 1; break;
    default: return CUDA_ERROR_INVALID_VALUE;
    }
    *pi = v;
    return CUDA_SUCCESS;
}

/* ---- contexts ---- */

/* A context takes the model's context memory on its card for as long as it lives, as a real one does;
 * returns CUDA_ERROR_OUT_OF_MEMORY (and attaches nothing) when the card cannot hold another context. */
static CUresult ctx_attach(int phys, int delta) {
    uint64_t bytes = ginfo(phys)->context_bytes;
    CUresult rc = CUDA_SUCCESS;
    hami_emu_lock(g_node.shm);
    if (delta > 0 && bytes && hami_emu_mem_reserve(sgpu(phys), usable_bytes(phys), g_pid, bytes) != 0)
        rc = CUDA_ERROR_OUT_OF_MEMORY;
    if (!rc) {
        if (delta < 0 && bytes) hami_emu_mem_release(sgpu(phys), g_pid, bytes);
        hami_emu_ctx_attach(sgpu(phys), g_pid, delta);
    }
    hami_emu_unlock(g_node.shm);
    return rc;
}

static void push_ctx(struct CUctx_st *c) {
    if (t_depth < CTX_STACK) t_stack[t_depth++] = c;
    else t_stack[CTX_STACK - 1] = c;
}

static void free_region_locked(struct region *r);

/* frees every plain allocation made in ctx (what destroying a real context does) */
static void release_ctx_allocations(struct CUctx_st *c) {
    pthread_mutex_lock(&g_lock);
    struct region **pp = &g_regions;
    while (*pp) {
        struct region *r = *pp;
        if ((r->kind == KIND_ALLOC || r->kind == KIND_ARRAY || r->kind == KIND_HOST) && r->ctx == c) {
            *pp = r->next;
            free_region_locked(r);
        } else {
            pp = &r->next;
        }
    }
    pthread_mutex_unlock(&g_lock);
}

static void drop_from_stacks(struct CUctx_st *c) {
    for (int i = 0; i < t_depth; i++)
        if (t_stack[i] == c) t_stack[i] = NULL;
    while (t_depth && !t_stack[t_depth - 1]) t_depth--;
}

API CUresult cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev) {
    REQUIRE_INIT();
    if (!pctx) return CUDA_ERROR_INVALID_VALUE;
    if (!valid_ordinal(dev)) return CUDA_ERROR_INVALID_DEVICE;
    CUresult rc = device_gate(g_node.visible[dev]);
    if (rc) return rc;
    struct CUctx_st *c = &g_primary[dev];
    pthread_mutex_lock(&g_lock);
    int first = c->refcount++ == 0;
    if (first) {
        c->magic = MAGIC_CTX;
        c->tail_ns = 0;
        c->legacy.magic = MAGIC_STREAM;
        c->legacy.ctx = c;
        c->legacy.tail_ns = 0;
    }
    pthread_mutex_unlock(&g_lock);
    if (first && (rc = ctx_attach(c->phys, +1)) != CUDA_SUCCESS) {
        pthread_mutex_lock(&g_lock);
        c->refcount = 0;
        c->magic = 0;
        pthread_mutex_unlock(&g_lock);
        return rc;
    }
    *pctx = c;
    return CUDA_SUCCESS;
}

static CUresult primary_release(CUdevice dev, int reset) {
    REQUIRE_INIT();
    if (!valid_ordinal(dev)) return CUDA_ERROR_INVALID_DEVICE;
    struct CUctx_st *c = &g_primary[dev];
    pthread_mutex_lock(&g_lock);
    int last = 0;
    if (c->refcount > 0) {
        c->refcount = reset ? 0 : c->refcount - 1;
        last = c->refcount == 0;
    } else if (!reset) {
        pthread_mutex_unlock(&g_lock);
        return CUDA_ERROR_INVALID_CONTEXT;
    }
    pthread_mutex_unlock(&g_lock);
    if (last) {
        release_ctx_allocations(c);
        ctx_attach(c->phys, -1);
        c->magic = 0;
        drop_from_stacks(c);
    }
    return CUDA_SUCCESS;
}

API CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev) { return primary_release(dev, 0); }
API CUresult cuDevicePrimaryCtxRelease(CUdevice dev) { return primary_release(dev, 0); }
API CUresult cuDevicePrimaryCtxReset_v2(CUdevice dev) { return primary_release(dev, 1); }
API CUresult cuDevicePrimaryCtxReset(CUdevice dev) { return primary_release(dev, 1); }

static CUresult ctx_create(CUcontext *pctx, unsigned int flags, CUdevice dev) {
    REQUIRE_INIT();
    if (!pctx) return CUDA_ERROR_INVALID_VALUE;
    if (flags > 0x1f) return CUDA_ERROR_INVALID_VALUE;
    if (!valid_ordinal(dev)) return CUDA_ERROR_INVALID_DEVICE;
    CUresult rc = device_gate(g_node.visible[dev]);
    if (rc) return rc;
    struct CUctx_st *c = calloc(1, sizeof(*c));
    if (!c) return CUDA_ERROR_OUT_OF_MEMORY;
    c->magic = MAGIC_CTX;
    c->ordinal = dev;
    c->phys = g_node.visible[dev];
    c->legacy.magic = MAGIC_STREAM;
    c->legacy.ctx = c;
    if ((rc = ctx_attach(c->phys, +1)) != CUDA_SUCCESS) {
        free(c);
        return rc;
    }
    if (!live_add(c)) {
        ctx_attach(c->phys, -1);
        free(c);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    push_ctx(c);
    *pctx = c;
    return CUDA_SUCCESS;
}

API CUresult cuCtxCreate_v2(CUcontext *pctx, unsigned int flags, CUdevice dev) { return ctx_create(pctx, flags, dev); }

API CUresult cuCtxCreate_v4(CUcontext *pctx, CUctxCreateParams *ctxCreateParams, unsigned int flags, CUdevice dev) {
    if (ctxCreateParams && (ctxCreateParams->numExecAffinityParams || ctxCreateParams->cigParams))
        return CUDA_ERROR_NOT_SUPPORTED; /* affinity / CIG contexts are not emulated */
    return ctx_create(pctx, flags, dev);
}

API CUresult cuCtxDestroy_v2(CUcontext ctx) {
    REQUIRE_INIT();
    if (!valid_ctx(ctx) || ctx->primary) return CUDA_ERROR_INVALID_CONTEXT;
    release_ctx_allocations(ctx);
    ctx_attach(ctx->phys, -1);
    drop_from_stacks(ctx);
    live_del(ctx);
    ctx->magic = 0;
    free(ctx);
    return CUDA_SUCCESS;
}
API CUresult cuCtxDestroy(CUcontext ctx) { return cuCtxDestroy_v2(ctx); }

API CUresult cuCtxPushCurrent_v2(CUcontext ctx) {
    REQUIRE_INIT();
    if (!valid_ctx(ctx)) return CUDA_ERROR_INVALID_CONTEXT;
    push_ctx(ctx);
    return CUDA_SUCCESS;
}
API CUresult cuCtxPushCurrent(CUcontext ctx) { return cuCtxPushCurrent_v2(ctx); }

API CUresult cuCtxPopCurrent_v2(CUcontext *pctx) {
    REQUIRE_INIT();
    if (!t_depth) return CUDA_ERROR_INVALID_CONTEXT;
    struct CUctx_st *c = t_stack[--t_depth];
    if (pctx) *pctx = c;
    return CUDA_SUCCESS;
}
API CUresult cuCtxPopCurrent(CUcontext *pctx) { return cuCtxPopCurrent_v2(pctx); }

API CUresult cuCtxSetCurrent(CUcontext ctx) {
    REQUIRE_INIT();
    if (ctx && !valid_ctx(ctx)) return CUDA_ERROR_INVALID_CONTEXT;
    if (!ctx) {
        if (t_depth) t_depth--;
        return CUDA_SUCCESS;
    }
    if (t_depth)
        t_stack[t_depth - 1] = ctx;
    else
        push_ctx(ctx);
    return CUDA_SUCCESS;
}

API CUresult cuCtxGetCurrent(CUcontext *pctx) {
    REQUIRE_INIT();
    if (!pctx) return CUDA_ERROR_INVALID_VALUE;
    *pctx = current_ctx();
    return CUDA_SUCCESS;
}

API CUresult cuCtxGetDevice(CUdevice *device) {
    REQUIRE_INIT();
    if (!device) return CUDA_ERROR_INVALID_VALUE;
    struct CUctx_st *c = current_ctx();
    if (!c) return CUDA_ERROR_INVALID_CONTEXT;
    *device = c->ordinal;
    return CUDA_SUCCESS;
}

API CUresult cuCtxSynchronize(void) {
    REQUIRE_INIT();
    struct CUctx_st *c = current_ctx();
    if (!c) return CUDA_ERROR_INVALID_CONTEXT;
    sleep_until(c->tail_ns);
    return CUDA_SUCCESS;
}

/* ---- memory ---- */

API CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total) {
    REQUIRE_INIT();
    if (!free_bytes || !total) return CUDA_ERROR_INVALID_VALUE;
    struct CUctx_st *c = current_ctx();
    if (!c) return CUDA_ERROR_INVALID_CONTEXT;
    CUresult rc = device_gate(c->phys);
    if (rc) return rc;
    hami_emu_lock(g_node.shm);
    hami_emu_sweep_dead(sgpu(c->phys));
    uint64_t used = sgpu(c->phys)->used_bytes;
    hami_emu_unlock(g_node.shm);
    uint64_t usable = usable_bytes(c->phys);
    *free_bytes = (size_t)(used < usable ? usable - used : 0);
    *total = (size_t)ginfo(c->phys)->memory_bytes;
    return CUDA_SUCCESS;
}

static CUresult account(int phys, uint64_t bytes) {
    hami_emu_lock(g_node.shm);
    int rc = hami_emu_mem_reserve(sgpu(phys), usable_bytes(phys), g_pid, bytes);
    hami_emu_unlock(g_node.shm);
    return rc == 0 ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

static void unaccount(int phys, uint64_t bytes) {
    hami_emu_lock(g_node.shm);
    hami_emu_mem_release(sgpu(phys), g_pid, bytes);
    hami_emu_unlock(g_node.shm);
}

/* map an address range; backed when it fits under the per-process cap of real host memory */
static void *map_range(size_t size, int want_backing, int *backed) {
    size_t cap = backing_cap();
    *backed = want_backing && g_backed_bytes + size <= cap;
    int prot = *backed ? PROT_READ | PROT_WRITE : PROT_NONE;
    void *p = mmap(NULL, size, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return NULL;
    if (*backed) g_backed_bytes += size;
    return p;
}

static void pool_return_locked(struct CUmemPoolHandle_st *pool, uint64_t bytes);
static void array_handle_free(void *h);

static void free_region_locked(struct region *r) {
    if (r->pool) {
        munmap((void *)r->base, r->map_size);
        if (r->backed) g_backed_bytes -= r->map_size;
        pool_return_locked(r->pool, r->accounted);
        free(r);
        return;
    }
    if (r->kind == KIND_ARRAY) {
        array_handle_free((void *)r->base);
    } else if (r->kind == KIND_HOST) {
        if (r->map_size) munmap((void *)r->base, r->map_size);
    } else if (r->kind == KIND_ALLOC || r->kind == KIND_RESERVE) {
        munmap((void *)r->base, r->map_size);
        if (r->backed) g_backed_bytes -= r->map_size;
    } else if (r->kind == KIND_MAPPING) {
        mprotect((void *)r->base, r->size, PROT_NONE);
        madvise((void *)r->base, r->size, MADV_DONTNEED);
        if (r->backed) g_backed_bytes -= r->size;
    }
    if (r->accounted) unaccount(r->phys, r->accounted);
    free(r);
}

static CUresult alloc_common(CUdeviceptr *dptr, size_t bytesize, struct CUctx_st *c) {
    if (!dptr) return CUDA_ERROR_INVALID_VALUE;
    if (!c) return CUDA_ERROR_INVALID_CONTEXT;
    if (bytesize == 0) return CUDA_ERROR_INVALID_VALUE;
    CUresult rc = device_gate(c->phys);
    if (rc) return rc;
    if ((uint64_t)bytesize > usable_bytes(c->phys)) return CUDA_ERROR_OUT_OF_MEMORY;
    uint64_t accounted = ((uint64_t)bytesize + 511) & ~511ULL; /* the driver hands out 512-byte granules */
    rc = account(c->phys, accounted);
    if (rc) return rc;
    struct region *r = calloc(1, sizeof(*r));
    if (!r) {
        unaccount(c->phys, accounted);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t map_size = (bytesize + page - 1) / page * page;
    pthread_mutex_lock(&g_lock);
    void *p = map_range(map_size, 1, &r->backed);
    if (!p) {
        pthread_mutex_unlock(&g_lock);
        free(r);
        unaccount(c->phys, accounted);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    r->base = (uintptr_t)p;
    r->size = bytesize;
    r->map_size = map_size;
    r->accounted = accounted;
    r->phys = c->phys;
    r->kind = KIND_ALLOC;
    r->ctx = c;
    r->next = g_regions;
    g_regions = r;
    pthread_mutex_unlock(&g_lock);
    *dptr = (CUdeviceptr)r->base;
    return CUDA_SUCCESS;
}

API CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytesize) {
    REQUIRE_INIT();
    return alloc_common(dptr, bytesize, current_ctx());
}

static struct region *find_region_locked(uintptr_t p, int kind);

API CUresult cuMemAllocManaged(CUdeviceptr *dptr, size_t bytesize, unsigned int flags) {
    REQUIRE_INIT();
    if (flags != CU_MEM_ATTACH_GLOBAL && flags != CU_MEM_ATTACH_HOST) return CUDA_ERROR_INVALID_VALUE;
    CUresult rc = alloc_common(dptr, bytesize, current_ctx());
    if (rc == CUDA_SUCCESS) {
        pthread_mutex_lock(&g_lock);
        struct region *r = find_region_locked((uintptr_t)*dptr, KIND_ALLOC);
        if (r) r->managed = 1;
        pthread_mutex_unlock(&g_lock);
    }
    return rc;
}

API CUresult cuMemAllocPitch_v2(CUdeviceptr *dptr, size_t *pPitch, size_t WidthInBytes, size_t Height,
                                unsigned int ElementSizeBytes) {
    REQUIRE_INIT();
    if (!pPitch || !WidthInBytes || !Height) return CUDA_ERROR_INVALID_VALUE;
    if (ElementSizeBytes != 4 && ElementSizeBytes != 8 && ElementSizeBytes != 16) return CUDA_ERROR_INVALID_VALUE;
    size_t pitch = (WidthInBytes + 511) / 512 * 512;
    if (Height > SIZE_MAX / pitch) return CUDA_ERROR_OUT_OF_MEMORY;
    CUresult rc = alloc_common(dptr, pitch * Height, current_ctx());
    if (rc == CUDA_SUCCESS) *pPitch = pitch;
    return rc;
}

static int valid_stream(CUstream s) {
    /* NULL, CU_STREAM_LEGACY (0x1) and CU_STREAM_PER_THREAD (0x2) name the context's default stream */
    return (uintptr_t)s <= 2 || (live_has(s) && s->magic == MAGIC_STREAM);
}

static struct CUstream_st *resolve_stream(CUstream s, struct CUctx_st *c) {
    return (uintptr_t)s <= 2 ? &c->legacy : s;
}

static struct CUmemPoolHandle_st *current_pool(int ordinal);
static CUresult pool_alloc(CUdeviceptr *dptr, size_t bytesize, struct CUmemPoolHandle_st *pool, struct CUctx_st *c);

API CUresult cuMemAllocAsync(CUdeviceptr *dptr, size_t bytesize, CUstream hStream) {
    REQUIRE_INIT();
    if (!valid_stream(hStream)) return CUDA_ERROR_INVALID_HANDLE;
    struct CUctx_st *c = (uintptr_t)hStream > 2 ? hStream->ctx : current_ctx();
    if (!c) return CUDA_ERROR_INVALID_CONTEXT;
    /* stream-ordered allocations come from the current pool of the stream's device */
    return pool_alloc(dptr, bytesize, current_pool(c->ordinal), c);
}

static struct region *find_region_locked(uintptr_t p, int kind) {
    for (struct region *r = g_regions; r; r = r->next)
        if (r->kind == kind && p >= r->base && p < r->base + r->size) return r;
    return NULL;
}

API CUresult cuMemFree_v2(CUdeviceptr dptr) {
    REQUIRE_INIT();
    if (dptr == 0) return CUDA_SUCCESS;
    pthread_mutex_lock(&g_lock);
    struct region **pp = &g_regions;
    while (*pp && !((*pp)->kind == KIND_ALLOC && (*pp)->base == (uintptr_t)dptr)) pp = &(*pp)->next;
    if (!*pp) {
        pthread_mutex_unlock(&g_lock);
        return CUDA_ERROR_INVALID_VALUE;
    }
    struct region *r = *pp;
    *pp = r->next;
    free_region_locked(r);
    pthread_mutex_unlock(&g_lock);
    return CUDA_SUCCESS;
}

API CUresult cuMemFreeAsync(CUdeviceptr dptr, CUstream hStream) {
    REQUIRE_INIT();
    if (!valid_stream(hStream)) return CUDA_ERROR_INVALID_HANDLE;
    if (dptr == 0) return CUDA_ERROR_INVALID_VALUE;
    return cuMemFree_v2(dptr);
}

/* Resolve [p, p+n) to a single allocation or mapping; *backed tells whether bytes really exist. */
static CUresult device_range(uintptr_t p, size_t n, int *backed, int *phys) {
    pthread_mutex_lock(&g_lock);
    struct region *r = find_region_locked(p, KIND_ALLOC);
    if (!r) r = find_region_locked(p, KIND_MAPPING);
    if (!r) r = find_region_locked(p, KIND_HOST);
    CUresult rc = CUDA_ERROR_INVALID_VALUE;
    if (r && n <= r->base + r->size - p) {
        *backed = r->backed;
        *phys = r->phys;
        rc = CUDA_SUCCESS;
    }
    pthread_mutex_unlock(&g_lock);
    if (rc == CUDA_SUCCESS && *phys >= 0) rc = device_gate(*phys); /* host memory has no device */
    return rc;
}

API CUresult cuMemcpyHtoD_v2(CUdeviceptr dstDevice, const void *srcHost, size_t ByteCount) {
    REQUIRE_INIT();
    if (!ByteCount) return CUDA_SUCCESS;
    if (!srcHost) return CUDA_ERROR_INVALID_VALUE;
    int backed, phys;
    CUresult rc = device_range((uintptr_t)dstDevice, ByteCount, &backed, &phys);
    if (rc) return rc;
    if (backed) memcpy((void *)(uintptr_t)dstDevice, srcHost, ByteCount);
    return CUDA_SUCCESS;
}

API CUresult cuMemcpyDtoH_v2(void *dstHost, CUdeviceptr srcDevice, size_t ByteCount) {
    REQUIRE_INIT();
    if (!ByteCount) return CUDA_SUCCESS;
    if (!dstHost) return CUDA_ERROR_INVALID_VALUE;
    int backed, phys;
    CUresult rc = device_range((uintptr_t)srcDevice, ByteCount, &backed, &phys);
    if (rc) return rc;
    if (backed)
        memcpy(dstHost, (const void *)(uintptr_t)srcDevice, ByteCount);
    else
        memset(dstHost, 0, ByteCount); /* unbacked device memory reads as zeros */
    return CUDA_SUCCESS;
}

API CUresult cuMemcpyDtoD_v2(CUdeviceptr dstDevice, CUdeviceptr srcDevice, size_t ByteCount) {
    REQUIRE_INIT();
    if (!ByteCount) return CUDA_SUCCESS;
    int db, sb, phys;
    CUresult rc = device_range((uintptr_t)dstDevice, ByteCount, &db, &phys);
    if (!rc) rc = device_range((uintptr_t)srcDevice, ByteCount, &sb, &phys);
    if (rc) return rc;
    if (db && sb)
        memmove((void *)(uintptr_t)dstDevice, (const void *)(uintptr_t)srcDevice, ByteCount);
    else if (db)
        memset((void *)(uintptr_t)dstDevice, 0, ByteCount);
    return CUDA_SUCCESS;
}

API CUresult cuMemsetD8_v2(CUdeviceptr dstDevice, unsigned char uc, size_t N) {
    REQUIRE_INIT();
    if (!N) return CUDA_SUCCESS;
    int backed, phys;
    CUresult rc = device_range((uintptr_t)dstDevice, N, &backed, &phys);
    if (rc) return rc;
    if (backed) memset((void *)(uintptr_t)dstDevice, uc, N);
    return CUDA_SUCCESS;
}

API CUresult cuMemsetD32_v2(CUdeviceptr dstDevice, unsigned int ui, size_t N) {
    REQUIRE_INIT();
    if (!N) return CUDA_SUCCESS;
    if (dstDevice % 4 || N > SIZE_MAX / 4) return CUDA_ERROR_INVALID_VALUE;
    int backed, phys;
    CUresult rc = device_range((uintptr_t)dstDevice, N * 4, &backed, &phys);
    if (rc) return rc;
    if (backed) {
        unsigned int *p = (unsigned int *)(uintptr_t)dstDevice;
        for (size_t i = 0; i < N; i++) p[i] = ui;
    }
    return CUDA_SUCCESS;
}

/* ---- virtual memory management ---- */

static CUresult check_prop(const CUmemAllocationProp *prop) {
    if (!prop || prop->type != CU_MEM_ALLOCATION_TYPE_PINNED || prop->location.type != CU_MEM_LOCATION_TYPE_DEVICE)
        return CUDA_ERROR_INVALID_VALUE;
    if (!valid_ordinal(prop->location.id)) return CUDA_ERROR_INVALID_DEVICE;
    return CUDA_SUCCESS;
}

API CUresult cuMemGetAllocationGranularity(size_t *granularity, const CUmemAllocationProp *prop,
                                           CUmemAllocationGranularity_flags option) {
    REQUIRE_INIT();
    if (!granularity || option > CU_MEM_ALLOC_GRANULARITY_RECOMMENDED) return CUDA_ERROR_INVALID_VALUE;
    CUresult rc = check_prop(prop);
    if (rc) return rc;
    *granularity = (size_t)VMM_GRANULARITY;
    return CUDA_SUCCESS;
}

API CUresult cuMemCreate(CUmemGenericAllocationHandle *handle, size_t size, const CUmemAllocationProp *prop,
                         unsigned long long flags) {
    REQUIRE_INIT();
    if (!handle || flags || !size || size % VMM_GRANULARITY) return CUDA_ERROR_INVALID_VALUE;
    CUresult rc = check_prop(prop);
    if (rc) return rc;
    int phys = g_node.visible[prop->location.id];
    rc = device_gate(phys);
    if (rc) return rc;
    if ((uint64_t)size > usable_bytes(phys)) return CUDA_ERROR_OUT_OF_MEMORY;
    rc = account(phys, size);
    if (rc) return rc;
    struct vmm_handle *h = calloc(1, sizeof(*h));
    if (!h) {
        unaccount(phys, size);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    h->magic = MAGIC_HANDLE;
    h->phys = phys;
    h->size = size;
    if (!live_add(h)) {
        free(h);
        unaccount(phys, size);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    *handle = (CUmemGenericAllocationHandle)(uintptr_t)h;
    return CUDA_SUCCESS;
}

static struct vmm_handle *as_handle(CUmemGenericAllocationHandle handle) {
    struct vmm_handle *h = (struct vmm_handle *)(uintptr_t)handle;
    return live_has(h) && h->magic == MAGIC_HANDLE ? h : NULL;
}

/* physical memory goes back to the card once the handle is released and no mapping remains */
static void maybe_drop_handle(struct vmm_handle *h) {
    if (h->released && h->mappings == 0) {
        unaccount(h->phys, h->size);
        live_del(h);
        h->magic = 0;
        free(h);
    }
}

API CUresult cuMemRelease(CUmemGenericAllocationHandle handle) {
    REQUIRE_INIT();
    pthread_mutex_lock(&g_lock);
    struct vmm_handle *h = as_handle(handle);
    if (!h || h->released) {
        pthread_mutex_unlock(&g_lock);
        return CUDA_ERROR_INVALID_VALUE;
    }
    h->released = 1;
    maybe_drop_handle(h);
    pthread_mutex_unlock(&g_lock);
    return CUDA_SUCCESS;
}

API CUresult cuMemAddressReserve(CUdeviceptr *ptr, size_t size, size_t alignment, CUdeviceptr addr,
                                 unsigned long long flags) {
    REQUIRE_INIT();
    (void)addr; /* a hint only */
    if (!ptr || !size || size % VMM_GRANULARITY || flags) return CUDA_ERROR_INVALID_VALUE;
    if (alignment && (alignment & (alignment - 1))) return CUDA_ERROR_INVALID_VALUE;
    struct region *r = calloc(1, sizeof(*r));
    if (!r) return CUDA_ERROR_OUT_OF_MEMORY;
    pthread_mutex_lock(&g_lock);
    int backed;
    void *p = map_range(size, 0, &backed);
    if (!p) {
        pthread_mutex_unlock(&g_lock);
        free(r);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    r->base = (uintptr_t)p;
    r->size = r->map_size = size;
    r->kind = KIND_RESERVE;
    r->phys = -1;
    r->next = g_regions;
    g_regions = r;
    pthread_mutex_unlock(&g_lock);
    *ptr = (CUdeviceptr)r->base;
    return CUDA_SUCCESS;
}

static void unmap_range_locked(uintptr_t base, size_t size) {
    struct region **pp = &g_regions;
    while (*pp) {
        struct region *r = *pp;
        if (r->kind == KIND_MAPPING && r->base >= base && r->base < base + size) {
            *pp = r->next;
            struct vmm_handle *h = r->handle;
            free_region_locked(r);
            h->mappings--;
            maybe_drop_handle(h);
        } else {
            pp = &r->next;
        }
    }
}

API CUresult cuMemAddressFree(CUdeviceptr ptr, size_t size) {
    REQUIRE_INIT();
    pthread_mutex_lock(&g_lock);
    struct region **pp = &g_regions;
    while (*pp && !((*pp)->kind == KIND_RESERVE && (*pp)->base == (uintptr_t)ptr && (*pp)->size == size))
        pp = &(*pp)->next;
    if (!*pp) {
        pthread_mutex_unlock(&g_lock);
        return CUDA_ERROR_INVALID_VALUE;
    }
    struct region *r = *pp;
    *pp = r->next;
    unmap_range_locked(r->base, r->size);
    free_region_locked(r);
    pthread_mutex_unlock(&g_lock);
    return CUDA_SUCCESS;
}

API CUresult cuMemMap(CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle handle,
                      unsigned long long flags) {
    REQUIRE_INIT();
    if (flags || !size || size % VMM_GRANULARITY || offset % VMM_GRANULARITY) return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&g_lock);
    CUresult rc = CUDA_ERROR_INVALID_VALUE;
    struct vmm_handle *h = as_handle(handle);
    struct region *res = find_region_locked((uintptr_t)ptr, KIND_RESERVE);
    if (!h || h->released || offset > h->size || size > h->size - offset || !res ||
        size > res->base + res->size - (uintptr_t)ptr || find_region_locked((uintptr_t)ptr, KIND_MAPPING))
        goto out;
    struct region *m = calloc(1, sizeof(*m));
    if (!m) {
        rc = CUDA_ERROR_OUT_OF_MEMORY;
        goto out;
    }
    m->base = (uintptr_t)ptr;
    m->size = size;
    m->kind = KIND_MAPPING;
    m->phys = h->phys;
    m->handle = h;
    m->backed = g_backed_bytes + size <= backing_cap() &&
                mprotect((void *)m->base, size, PROT_READ | PROT_WRITE) == 0;
    if (m->backed) g_backed_bytes += size;
    h->mappings++;
    m->next = g_regions;
    g_regions = m;
    rc = CUDA_SUCCESS;
out:
    pthread_mutex_unlock(&g_lock);
    return rc;
}

API CUresult cuMemUnmap(CUdeviceptr ptr, size_t size) {
    REQUIRE_INIT();
    pthread_mutex_lock(&g_lock);
    struct region *m = find_region_locked((uintptr_t)ptr, KIND_MAPPING);
    if (!m || m->base != (uintptr_t)ptr || !size) {
        pthread_mutex_unlock(&g_lock);
        return CUDA_ERROR_INVALID_VALUE;
    }
    unmap_range_locked((uintptr_t)ptr, size);
    pthread_mutex_unlock(&g_lock);
    return CUDA_SUCCESS;
}

API CUresult cuMemSetAccess(CUdeviceptr ptr, size_t size, const CUmemAccessDesc *desc, size_t count) {
    REQUIRE_INIT();
    if (!desc || !count || !size) return CUDA_ERROR_INVALID_VALUE;
    for (size_t i = 0; i < count; i++) {
        if (desc[i].location.type != CU_MEM_LOCATION_TYPE_DEVICE) return CUDA_ERROR_INVALID_VALUE;
        if (!valid_ordinal(desc[i].location.id)) return CUDA_ERROR_INVALID_DEVICE;
    }
    pthread_mutex_lock(&g_lock);
    struct region *m = find_region_locked((uintptr_t)ptr, KIND_MAPPING);
    pthread_mutex_unlock(&g_lock);
    return m ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

/* ---- arrays and mipmapped arrays ---- */

#define MAGIC_ARRAY 0x41525231u
#define MAGIC_MIPMAP 0x4d49504du

/* CUarray and CUmipmappedArray handles: device memory without a device pointer, owned by a context */
struct CUarray_st {
    unsigned magic;
    struct region *r;
    CUDA_ARRAY3D_DESCRIPTOR desc;
    int is3d;
};
struct CUmipmappedArray_st { /* same layout: array_register handles both */
    unsigned magic;
    struct region *r;
    CUDA_ARRAY3D_DESCRIPTOR desc;
    int is3d;
};

static void array_handle_free(void *h) {
    live_del(h);
    *(unsigned *)h = 0;
    free(h);
}

static uint64_t granule(uint64_t bytes) { return (bytes + 511) & ~511ULL; }

static int format_bytes(CUarray_format f) {
    switch ((int)f) {
    case CU_AD_FORMAT_UNSIGNED_INT8:
    case CU_AD_FORMAT_SIGNED_INT8: return 1;
    case CU_AD_FORMAT_UNSIGNED_INT16:
    case CU_AD_FORMAT_SIGNED_INT16:
    case CU_AD_FORMAT_HALF: return 2;
    case CU_AD_FORMAT_UNSIGNED_INT32:
    case CU_AD_FORMAT_SIGNED_INT32:
    case CU_AD_FORMAT_FLOAT: return 4;
    default: return 0;
    }
}

/* bytes of one array level; 0 when the description is invalid or overflows */
static uint64_t array_level_bytes(size_t w, size_t h, size_t d, CUarray_format fmt, unsigned channels) {
    int eb = format_bytes(fmt);
    if (!eb || (channels != 1 && channels != 2 && channels != 4) || !w) return 0;
    uint64_t elem = (uint64_t)eb * channels, n = elem;
    size_t dims[3] = {w, h ? h : 1, d ? d : 1};
    for (int i = 0; i < 3; i++) {
        if (dims[i] > UINT64_MAX / n) return 0;
        n *= dims[i];
    }
    return n;
}

static CUresult check_array3d(const CUDA_ARRAY3D_DESCRIPTOR *d) {
    if (!d || !d->Width) return CUDA_ERROR_INVALID_VALUE;
    if (d->Flags & ~(unsigned)(CUDA_ARRAY3D_LAYERED | CUDA_ARRAY3D_SURFACE_LDST | CUDA_ARRAY3D_CUBEMAP))
        return CUDA_ERROR_NOT_SUPPORTED; /* sparse, depth-texture, colour-attachment arrays are not emulated */
    if ((d->Flags & CUDA_ARRAY3D_CUBEMAP) && (d->Width != d->Height || !d->Depth ||
                                             d->Depth % 6 || (!(d->Flags & CUDA_ARRAY3D_LAYERED) && d->Depth != 6)))
        return CUDA_ERROR_INVALID_VALUE;
    if (d->Depth && !d->Height) return CUDA_ERROR_INVALID_VALUE;
    if (!format_bytes(d->Format)) return CUDA_ERROR_NOT_SUPPORTED;
    return CUDA_SUCCESS;
}

/* charge `bytes` on the current context's device and register the handle as a region of that context */
static CUresult array_register(void *handle, uint64_t bytes) {
    struct CUctx_st *c = current_ctx();
    if (!c) return CUDA_ERROR_INVALID_CONTEXT;
    CUresult rc = device_gate(c->phys);
    if (rc) return rc;
    uint64_t accounted = granule(bytes);
    if (accounted > usable_bytes(c->phys)) return CUDA_ERROR_OUT_OF_MEMORY;
    rc = account(c->phys, accounted);
    if (rc) return rc;
    struct region *r = calloc(1, sizeof(*r));
    if (!r || !live_add(handle)) {
        free(r);
        unaccount(c->phys, accounted);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    r->base = (uintptr_t)handle;
    r->size = 1;
    r->accounted = accounted;
    r->phys = c->phys;
    r->kind = KIND_ARRAY;
    r->ctx = c;
    ((struct CUarray_st *)handle)->r = r;
    pthread_mutex_lock(&g_lock);
    r->next = g_regions;
    g_regions = r;
    pthread_mutex_unlock(&g_lock);
    return CUDA_SUCCESS;
}

static CUresult array_create(void **out, unsigned magic, uint64_t bytes, const CUDA_ARRAY3D_DESCRIPTOR *desc,
                             int is3d) {
    struct CUarray_st *a = calloc(1, sizeof(*a));
    if (!a) return CUDA_ERROR_OUT_OF_MEMORY;
    a->magic = magic;
    a->desc = *desc;
    a->is3d = is3d;
    CUresult rc = array_register(a, bytes);
    if (rc) {
        free(a);
        return rc;
    }
    *out = a;
    return CUDA_SUCCESS;
}

static CUresult array_destroy(void *h, unsigned magic) {
    REQUIRE_INIT();
    pthread_mutex_lock(&g_lock);
    if (!live_has(h) || *(unsigned *)h != magic) {
        pthread_mutex_unlock(&g_lock);
        return CUDA_ERROR_INVALID_HANDLE;
    }
    struct region **pp = &g_regions;
    while (*pp && !((*pp)->kind == KIND_ARRAY && (*pp)->base == (uintptr_t)h)) pp = &(*pp)->next;
    if (*pp) {
        struct region *r = *pp;
        *pp = r->next;
        free_region_locked(r);
    }
    pthread_mutex_unlock(&g_lock);
    return CUDA_SUCCESS;
}

API CUresult cuArrayCreate_v2(CUarray *pHandle, const CUDA_ARRAY_DESCRIPTOR *pAllocateArray) {
    REQUIRE_INIT();
    if (!pHandle || !pAllocateArray || !pAllocateArray->Width) return CUDA_ERROR_INVALID_VALUE;
    const CUDA_ARRAY_DESCRIPTOR *d = pAllocateArray;
    if (!format_bytes(d->Format)) return CUDA_ERROR_NOT_SUPPORTED;
    uint64_t bytes = array_level_bytes(d->Width, d->Height, 0, d->Format, d->NumChannels);
    if (!bytes) return CUDA_ERROR_INVALID_VALUE;
    CUDA_ARRAY3D_DESCRIPTOR d3 = {d->Width, d->Height, 0, d->Format, d->NumChannels, 0};
    return array_create((void **)pHandle, MAGIC_ARRAY, bytes, &d3, 0);
}

API CUresult cuArray3DCreate_v2(CUarray *pHandle, const CUDA_ARRAY3D_DESCRIPTOR *pAllocateArray) {
    REQUIRE_INIT();
    if (!pHandle) return CUDA_ERROR_INVALID_VALUE;
    CUresult rc = check_array3d(pAllocateArray);
    if (rc) return rc;
    const CUDA_ARRAY3D_DESCRIPTOR *d = pAllocateArray;
    uint64_t bytes = array_level_bytes(d->Width, d->Height, d->Depth, d->Format, d->NumChannels);
    if (!bytes) return CUDA_ERROR_INVALID_VALUE;
    return array_create((void **)pHandle, MAGIC_ARRAY, bytes, d, 1);
}

API CUresult cuArrayDestroy(CUarray hArray) { return array_destroy(hArray, MAGIC_ARRAY); }

API CUresult cuMipmappedArrayCreate(CUmipmappedArray *pHandle, const CUDA_ARRAY3D_DESCRIPTOR *pMipmappedArrayDesc,
                                    unsigned int numMipmapLevels) {
    REQUIRE_INIT();
    if (!pHandle || !numMipmapLevels) return CUDA_ERROR_INVALID_VALUE;
    CUresult rc = check_array3d(pMipmappedArrayDesc);
    if (rc) return rc;
    const CUDA_ARRAY3D_DESCRIPTOR *d = pMipmappedArrayDesc;
    /* every level halves each spatial dimension (layers and cube faces keep their count) down to 1 */
    int layered = (d->Flags & (CUDA_ARRAY3D_LAYERED | CUDA_ARRAY3D_CUBEMAP)) != 0;
    size_t w = d->Width, h = d->Height, dep = d->Depth, biggest = w;
    if (h > biggest) biggest = h;
    if (!layered && dep > biggest) biggest = dep;
    unsigned max_levels = 1;
    while (biggest >> max_levels) max_levels++;
    if (numMipmapLevels > max_levels) return CUDA_ERROR_INVALID_VALUE;
    uint64_t total = 0;
    for (unsigned l = 0; l < numMipmapLevels; l++) {
        uint64_t b = array_level_bytes(w, h, dep, d->Format, d->NumChannels);
        if (!b || total + b < total) return CUDA_ERROR_INVALID_VALUE;
        total += b;
        w = w > 1 ? w / 2 : 1;
        if (h) h = h > 1 ? h / 2 : 1;
        if (dep && !layered) dep = dep > 1 ? dep / 2 : 1;
    }
    return array_create((void **)pHandle, MAGIC_MIPMAP, total, d, 1);
}

API CUresult cuMipmappedArrayDestroy(CUmipmappedArray hMipmappedArray) {
    return array_destroy(hMipmappedArray, MAGIC_MIPMAP);
}

/* ---- stream-ordered memory pools ----
 * A pool holds device memory (reserved) of which allocations use a part (used). Freed memory stays
 * reserved up to the release threshold, the rest goes back to the card at once (a real driver gives
 * it back at the next synchronisation; the emulation has no asynchronous frees). Reserved memory is
 * what the card shows as used. */

#define MAGIC_POOL 0x504f4f4cu

struct CUmemPoolHandle_st {
    unsigned magic;
    int ordinal;
    int phys;
    int is_default;
    int destroyed; /* destroy requested while allocations were outstanding */
    int reuse[3];  /* the three REUSE_* attributes */
    uint64_t threshold, reserved, reserved_high, used, used_high, max_size;
};

static struct CUmemPoolHandle_st g_default_pool[HAMI_EMU_MAX_GPUS];
static struct CUmemPoolHandle_st *g_current_pool[HAMI_EMU_MAX_GPUS];

static struct CUmemPoolHandle_st *default_pool_locked(int ordinal) {
    struct CUmemPoolHandle_st *p = &g_default_pool[ordinal];
    if (p->magic != MAGIC_POOL) {
        memset(p, 0, sizeof(*p));
        p->magic = MAGIC_POOL;
        p->ordinal = ordinal;
        p->phys = g_node.visible[ordinal];
        p->is_default = 1;
        p->reuse[0] = p->reuse[1] = p->reuse[2] = 1;
    }
    return p;
}

static struct CUmemPoolHandle_st *current_pool(int ordinal) {
    pthread_mutex_lock(&g_lock);
    struct CUmemPoolHandle_st *p = g_current_pool[ordinal] ? g_current_pool[ordinal] : default_pool_locked(ordinal);
    pthread_mutex_unlock(&g_lock);
    return p;
}

static int valid_pool(struct CUmemPoolHandle_st *p) {
    int builtin = p >= g_default_pool && p < g_default_pool + HAMI_EMU_MAX_GPUS;
    return p && (builtin || live_has(p)) && p->magic == MAGIC_POOL && !p->destroyed;
}

/* shrink the pool's reserve to max(used, keep), giving the difference back to the card */
static void pool_shrink_locked(struct CUmemPoolHandle_st *p, uint64_t keep) {
    uint64_t target = keep > p->used ? keep : p->used;
    if (p->reserved > target) {
        unaccount(p->phys, p->reserved - target);
        p->reserved = target;
    }
}

static void pool_return_locked(struct CUmemPoolHandle_st *p, uint64_t bytes) {
    p->used = p->used >= bytes ? p->used - bytes : 0;
    if (p->destroyed && p->used == 0) {
        pool_shrink_locked(p, 0);
        live_del(p);
        p->magic = 0;
        free(p);
        return;
    }
    pool_shrink_locked(p, p->threshold);
}

static CUresult pool_alloc(CUdeviceptr *dptr, size_t bytesize, struct CUmemPoolHandle_st *pool, struct CUctx_st *c) {
    if (!dptr || !bytesize) return CUDA_ERROR_INVALID_VALUE;
    if (!c) return CUDA_ERROR_INVALID_CONTEXT;
    CUresult rc = device_gate(pool->phys);
    if (rc) return rc;
    uint64_t need = granule(bytesize);
    if (need > usable_bytes(pool->phys)) return CUDA_ERROR_OUT_OF_MEMORY;
    struct region *r = calloc(1, sizeof(*r));
    if (!r) return CUDA_ERROR_OUT_OF_MEMORY;
    pthread_mutex_lock(&g_lock);
    if (!valid_pool(pool)) {
        rc = CUDA_ERROR_INVALID_VALUE;
        goto fail;
    }
    if (pool->max_size && pool->used + need > pool->max_size) {
        rc = CUDA_ERROR_OUT_OF_MEMORY;
        goto fail;
    }
    uint64_t idle = pool->reserved - pool->used, grow = need > idle ? need - idle : 0;
    if (grow && (rc = account(pool->phys, grow))) goto fail;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t map_size = (bytesize + page - 1) / page * page;
    void *p = map_range(map_size, 1, &r->backed);
    if (!p) {
        if (grow) unaccount(pool->phys, grow);
        rc = CUDA_ERROR_OUT_OF_MEMORY;
        goto fail;
    }
    pool->reserved += grow;
    pool->used += need;
    if (pool->reserved > pool->reserved_high) pool->reserved_high = pool->reserved;
    if (pool->used > pool->used_high) pool->used_high = pool->used;
    r->base = (uintptr_t)p;
    r->size = bytesize;
    r->map_size = map_size;
    r->accounted = need; /* charged to the pool, not directly to the card */
    r->phys = pool->phys;
    r->kind = KIND_ALLOC;
    r->ctx = c;
    r->pool = pool;
    r->next = g_regions;
    g_regions = r;
    pthread_mutex_unlock(&g_lock);
    *dptr = (CUdeviceptr)r->base;
    return CUDA_SUCCESS;
fail:
    pthread_mutex_unlock(&g_lock);
    free(r);
    return rc;
}

API CUresult cuDeviceGetDefaultMemPool(CUmemoryPool *pool_out, CUdevice dev) {
    REQUIRE_INIT();
    if (!pool_out) return CUDA_ERROR_INVALID_VALUE;
    if (!valid_ordinal(dev)) return CUDA_ERROR_INVALID_DEVICE;
    pthread_mutex_lock(&g_lock);
    *pool_out = default_pool_locked(dev);
    pthread_mutex_unlock(&g_lock);
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGetMemPool(CUmemoryPool *pool, CUdevice dev) {
    REQUIRE_INIT();
    if (!pool) return CUDA_ERROR_INVALID_VALUE;
    if (!valid_ordinal(dev)) return CUDA_ERROR_INVALID_DEVICE;
    *pool = current_pool(dev);
    return CUDA_SUCCESS;
}

API CUresult cuDeviceSetMemPool(CUdevice dev, CUmemoryPool pool) {
    REQUIRE_INIT();
    if (!valid_ordinal(dev)) return CUDA_ERROR_INVALID_DEVICE;
    pthread_mutex_lock(&g_lock);
    CUresult rc = CUDA_ERROR_INVALID_VALUE;
    if (valid_pool(pool) && pool->ordinal == dev) {
        g_current_pool[dev] = pool;
        rc = CUDA_SUCCESS;
    }
    pthread_mutex_unlock(&g_lock);
    return rc;
}

API CUresult cuMemPoolCreate(CUmemoryPool *pool, const CUmemPoolProps *poolProps) {
    REQUIRE_INIT();
    if (!pool || !poolProps || poolProps->allocType != CU_MEM_ALLOCATION_TYPE_PINNED) return CUDA_ERROR_INVALID_VALUE;
    if (poolProps->location.type != CU_MEM_LOCATION_TYPE_DEVICE) return CUDA_ERROR_NOT_SUPPORTED; /* host pools */
    if (!valid_ordinal(poolProps->location.id)) return CUDA_ERROR_INVALID_DEVICE;
    if (poolProps->handleTypes & ~(unsigned)CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) return CUDA_ERROR_NOT_SUPPORTED;
    struct CUmemPoolHandle_st *p = calloc(1, sizeof(*p));
    if (!p) return CUDA_ERROR_OUT_OF_MEMORY;
    p->magic = MAGIC_POOL;
    p->ordinal = poolProps->location.id;
    p->phys = g_node.visible[p->ordinal];
    p->reuse[0] = p->reuse[1] = p->reuse[2] = 1;
    p->max_size = poolProps->maxSize;
    if (!live_add(p)) {
        free(p);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    *pool = p;
    return CUDA_SUCCESS;
}

API CUresult cuMemPoolDestroy(CUmemoryPool pool) {
    REQUIRE_INIT();
    pthread_mutex_lock(&g_lock);
    if (!valid_pool(pool) || pool->is_default) { /* a device's default pool cannot be destroyed */
        pthread_mutex_unlock(&g_lock);
        return CUDA_ERROR_INVALID_VALUE;
    }
    for (int i = 0; i < HAMI_EMU_MAX_GPUS; i++)
        if (g_current_pool[i] == pool) g_current_pool[i] = NULL; /* the device falls back to its default pool */
    pool->destroyed = 1;
    if (pool->used == 0) {
        pool_shrink_locked(pool, 0);
        live_del(pool);
        pool->magic = 0;
        free(pool);
    } /* else: released when its last allocation is freed, as the driver does */
    pthread_mutex_unlock(&g_lock);
    return CUDA_SUCCESS;
}

API CUresult cuMemPoolGetAttribute(CUmemoryPool pool, CUmemPool_attribute attr, void *value) {
    REQUIRE_INIT();
    if (!value) return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&g_lock);
    CUresult rc = CUDA_SUCCESS;
    if (!valid_pool(pool)) {
        rc = CUDA_ERROR_INVALID_VALUE;
    } else if (attr >= CU_MEMPOOL_ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES &&
               attr <= CU_MEMPOOL_ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES) {
        *(int *)value = pool->reuse[attr - 1];
    } else {
        cuuint64_t v;
        switch ((int)attr) {
        case CU_MEMPOOL_ATTR_RELEASE_THRESHOLD: v = pool->threshold; break;
        case CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT: v = pool->reserved; break;
        case CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH: v = pool->reserved_high; break;
        case CU_MEMPOOL_ATTR_USED_MEM_CURRENT: v = pool->used; break;
        case CU_MEMPOOL_ATTR_USED_MEM_HIGH: v = pool->used_high; break;
        default: rc = CUDA_ERROR_INVALID_VALUE; v = 0;
        }
        if (!rc) *(cuuint64_t *)value = v;
    }
    pthread_mutex_unlock(&g_lock);
    return rc;
}

API CUresult cuMemPoolSetAttribute(CUmemoryPool pool, CUmemPool_attribute attr, void *value) {
    REQUIRE_INIT();
    if (!value) return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&g_lock);
    CUresult rc = CUDA_SUCCESS;
    if (!valid_pool(pool)) {
        rc = CUDA_ERROR_INVALID_VALUE;
    } else if (attr >= CU_MEMPOOL_ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES &&
               attr <= CU_MEMPOOL_ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES) {
        pool->reuse[attr - 1] = *(const int *)value != 0;
    } else if (attr == CU_MEMPOOL_ATTR_RELEASE_THRESHOLD) {
        pool->threshold = *(const cuuint64_t *)value;
        pool_shrink_locked(pool, pool->threshold);
    } else if (attr == CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH || attr == CU_MEMPOOL_ATTR_USED_MEM_HIGH) {
        /* the high watermarks may only be reset, by writing 0 */
        if (*(const cuuint64_t *)value != 0) rc = CUDA_ERROR_INVALID_VALUE;
        else if (attr == CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH) pool->reserved_high = pool->reserved;
        else pool->used_high = pool->used;
    } else {
        rc = CUDA_ERROR_INVALID_VALUE; /* the current counters are read-only */
    }
    pthread_mutex_unlock(&g_lock);
    return rc;
}

API CUresult cuMemPoolTrimTo(CUmemoryPool pool, size_t minBytesToKeep) {
    REQUIRE_INIT();
    pthread_mutex_lock(&g_lock);
    CUresult rc = CUDA_ERROR_INVALID_VALUE;
    if (valid_pool(pool)) {
        pool_shrink_locked(pool, minBytesToKeep);
        rc = CUDA_SUCCESS;
    }
    pthread_mutex_unlock(&g_lock);
    return rc;
}

API CUresult cuMemAllocFromPoolAsync(CUdeviceptr *dptr, size_t bytesize, CUmemoryPool pool, CUstream hStream) {
    REQUIRE_INIT();
    if (!valid_stream(hStream)) return CUDA_ERROR_INVALID_HANDLE;
    pthread_mutex_lock(&g_lock);
    int ok = valid_pool(pool);
    pthread_mutex_unlock(&g_lock);
    if (!ok) return CUDA_ERROR_INVALID_VALUE;
    struct CUctx_st *c = (uintptr_t)hStream > 2 ? hStream->ctx : current_ctx();
    return pool_alloc(dptr, bytesize, pool, c);
}

/* ---- page-locked host memory: real host memory, never charged to a device ---- */

static CUresult host_add(void *p, size_t size, size_t map_size, unsigned flags, struct CUctx_st *c) {
    struct region *r = calloc(1, sizeof(*r));
    if (!r) return CUDA_ERROR_OUT_OF_MEMORY;
    r->base = (uintptr_t)p;
    r->size = size;
    r->map_size = map_size;
    r->phys = -1;
    r->kind = KIND_HOST;
    r->backed = 1;
    r->host_flags = flags;
    r->ctx = c;
    r->next = g_regions;
    g_regions = r;
    return CUDA_SUCCESS;
}

static CUresult host_alloc(void **pp, size_t bytesize, unsigned flags) {
    if (!pp || !bytesize) return CUDA_ERROR_INVALID_VALUE;
    if (flags & ~(unsigned)(CU_MEMHOSTALLOC_PORTABLE | CU_MEMHOSTALLOC_DEVICEMAP | CU_MEMHOSTALLOC_WRITECOMBINED))
        return CUDA_ERROR_INVALID_VALUE;
    struct CUctx_st *c = current_ctx();
    if (!c) return CUDA_ERROR_INVALID_CONTEXT;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    if (bytesize > SIZE_MAX - page) return CUDA_ERROR_OUT_OF_MEMORY;
    size_t map_size = (bytesize + page - 1) / page * page;
    void *p = mmap(NULL, map_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return CUDA_ERROR_OUT_OF_MEMORY;
    pthread_mutex_lock(&g_lock);
    /* with unified addressing every pinned allocation is mapped into the device's address space */
    CUresult rc = host_add(p, bytesize, map_size, flags | CU_MEMHOSTALLOC_DEVICEMAP, c);
    pthread_mutex_unlock(&g_lock);
    if (rc) {
        munmap(p, map_size);
        return rc;
    }
    *pp = p;
    return CUDA_SUCCESS;
}

API CUresult cuMemAllocHost_v2(void **pp, size_t bytesize) {
    REQUIRE_INIT();
    return host_alloc(pp, bytesize, 0);
}

API CUresult cuMemHostAlloc(void **pp, size_t bytesize, unsigned int Flags) {
    REQUIRE_INIT();
    return host_alloc(pp, bytesize, Flags);
}

/* unlink the host region starting at p: allocated (want_alloc) or registered */
static CUresult host_remove(void *p, int want_alloc) {
    pthread_mutex_lock(&g_lock);
    struct region **pp = &g_regions;
    while (*pp && !((*pp)->kind == KIND_HOST && (*pp)->base == (uintptr_t)p)) pp = &(*pp)->next;
    struct region *r = *pp;
    CUresult rc = CUDA_SUCCESS;
    if (!r || (r->map_size != 0) != want_alloc) {
        rc = want_alloc ? CUDA_ERROR_INVALID_VALUE : CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED;
    } else {
        *pp = r->next;
        free_region_locked(r);
    }
    pthread_mutex_unlock(&g_lock);
    return rc;
}

API CUresult cuMemFreeHost(void *p) {
    REQUIRE_INIT();
    if (!p) return CUDA_ERROR_INVALID_VALUE;
    return host_remove(p, 1);
}

API CUresult cuMemHostRegister_v2(void *p, size_t bytesize, unsigned int Flags) {
    REQUIRE_INIT();
    if (!p || !bytesize || bytesize > UINTPTR_MAX - (uintptr_t)p) return CUDA_ERROR_INVALID_VALUE;
    if (Flags & ~(unsigned)(CU_MEMHOSTREGISTER_PORTABLE | CU_MEMHOSTREGISTER_DEVICEMAP | CU_MEMHOSTREGISTER_IOMEMORY |
                            CU_MEMHOSTREGISTER_READ_ONLY))
        return CUDA_ERROR_INVALID_VALUE;
    if (Flags & CU_MEMHOSTREGISTER_IOMEMORY) return CUDA_ERROR_NOT_SUPPORTED; /* no I/O memory to map */
    if (!current_ctx()) return CUDA_ERROR_INVALID_CONTEXT;
    uintptr_t b = (uintptr_t)p, e = b + bytesize;
    pthread_mutex_lock(&g_lock);
    CUresult rc = CUDA_SUCCESS;
    for (struct region *r = g_regions; r && !rc; r = r->next)
        if (r->kind == KIND_HOST && b < r->base + r->size && r->base < e) rc = CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED;
    if (!rc) rc = host_add(p, bytesize, 0, Flags | CU_MEMHOSTREGISTER_DEVICEMAP, NULL);
    pthread_mutex_unlock(&g_lock);
    return rc;
}

API CUresult cuMemHostUnregister(void *p) {
    REQUIRE_INIT();
    if (!p) return CUDA_ERROR_INVALID_VALUE;
    return host_remove(p, 0);
}

API CUresult cuMemHostGetDevicePointer_v2(CUdeviceptr *pdptr, void *p, unsigned int Flags) {
    REQUIRE_INIT();
    if (!pdptr || !p || Flags) return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&g_lock);
    struct region *r = find_region_locked((uintptr_t)p, KIND_HOST);
    pthread_mutex_unlock(&g_lock);
    if (!r) return CUDA_ERROR_INVALID_VALUE;
    *pdptr = (CUdeviceptr)(uintptr_t)p; /* unified addressing: the device sees the host address */
    return CUDA_SUCCESS;
}

API CUresult cuMemHostGetFlags(unsigned int *pFlags, void *p) {
    REQUIRE_INIT();
    if (!pFlags || !p) return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&g_lock);
    struct region *r = find_region_locked((uintptr_t)p, KIND_HOST);
    CUresult rc = CUDA_ERROR_INVALID_VALUE;
    if (r && r->map_size) { /* only allocations made by the driver have allocation flags */
        *pFlags = r->host_flags;
        rc = CUDA_SUCCESS;
    }
    pthread_mutex_unlock(&g_lock);
    return rc;
}

/* ---- streams and events ---- */

API CUresult cuStreamCreate(CUstream *phStream, unsigned int Flags) {
    REQUIRE_INIT();
    if (!phStream || Flags > CU_STREAM_NON_BLOCKING) return CUDA_ERROR_INVALID_VALUE;
    struct CUctx_st *c = current_ctx();
    if (!c) return CUDA_ERROR_INVALID_CONTEXT;
    struct CUstream_st *s = calloc(1, sizeof(*s));
    if (!s) return CUDA_ERROR_OUT_OF_MEMORY;
    s->magic = MAGIC_STREAM;
    s->ctx = c;
    s->flags = Flags;
    s->id = __atomic_fetch_add(&g_next_stream_id, 1, __ATOMIC_RELAXED);
    if (!live_add(s)) {
        free(s);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    *phStream = s;
    return CUDA_SUCCESS;
}

API CUresult cuStreamDestroy_v2(CUstream hStream) {
    REQUIRE_INIT();
    if ((uintptr_t)hStream <= 2 || !valid_stream(hStream)) return CUDA_ERROR_INVALID_HANDLE;
    live_del(hStream);
    hStream->magic = 0;
    free(hStream); /* queued emulated work needs no cleanup: its interval is already recorded */
    return CUDA_SUCCESS;
}
API CUresult cuStreamDestroy(CUstream hStream) { return cuStreamDestroy_v2(hStream); }

/* the context a stream belongs to (the current one for the NULL, legacy and per-thread handles) */
API CUresult cuStreamGetCtx(CUstream hStream, CUcontext *pctx) {
    REQUIRE_INIT();
    if (!pctx) return CUDA_ERROR_INVALID_VALUE;
    if (!valid_stream(hStream)) return CUDA_ERROR_INVALID_HANDLE;
    struct CUctx_st *c = (uintptr_t)hStream > 2 ? hStream->ctx : current_ctx();
    if (!c) return CUDA_ERROR_INVALID_CONTEXT;
    *pctx = c;
    return CUDA_SUCCESS;
}

static CUresult stream_of(CUstream h, struct CUstream_st **out) {
    if (!valid_stream(h)) return CUDA_ERROR_INVALID_HANDLE;
    struct CUctx_st *c = current_ctx();
    if ((uintptr_t)h <= 2 && !c) return CUDA_ERROR_INVALID_CONTEXT;
    *out = resolve_stream(h, c);
    return CUDA_SUCCESS;
}

API CUresult cuStreamSynchronize(CUstream hStream) {
    REQUIRE_INIT();
    struct CUstream_st *s;
    CUresult rc = stream_of(hStream, &s);
    if (rc) return rc;
    sleep_until(s->tail_ns);
    return CUDA_SUCCESS;
}

API CUresult cuStreamQuery(CUstream hStream) {
    REQUIRE_INIT();
    struct CUstream_st *s;
    CUresult rc = stream_of(hStream, &s);
    if (rc) return rc;
    return hami_emu_now_ns() >= s->tail_ns ? CUDA_SUCCESS : CUDA_ERROR_NOT_READY;
}

API CUresult cuEventCreate(CUevent *phEvent, unsigned int Flags) {
    REQUIRE_INIT();
    if (!phEvent || Flags > 0xf) return CUDA_ERROR_INVALID_VALUE;
    if (!current_ctx()) return CUDA_ERROR_INVALID_CONTEXT;
    struct CUevent_st *e = calloc(1, sizeof(*e));
    if (!e) return CUDA_ERROR_OUT_OF_MEMORY;
    e->magic = MAGIC_EVENT;
    e->flags = Flags;
    if (!live_add(e)) {
        free(e);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    *phEvent = e;
    return CUDA_SUCCESS;
}

static int valid_event(CUevent e) { return live_has(e) && e->magic == MAGIC_EVENT; }

API CUresult cuEventRecord(CUevent hEvent, CUstream hStream) {
    REQUIRE_INIT();
    if (!valid_event(hEvent)) return CUDA_ERROR_INVALID_HANDLE;
    struct CUstream_st *s;
    CUresult rc = stream_of(hStream, &s);
    if (rc) return rc;
    hEvent->time_ns = max64(hami_emu_now_ns(), s->tail_ns);
    hEvent->recorded = 1;
    return CUDA_SUCCESS;
}

API CUresult cuEventQuery(CUevent hEvent) {
    REQUIRE_INIT();
    if (!valid_event(hEvent)) return CUDA_ERROR_INVALID_HANDLE;
    return !hEvent->recorded || hami_emu_now_ns() >= hEvent->time_ns ? CUDA_SUCCESS : CUDA_ERROR_NOT_READY;
}

API CUresult cuEventSynchronize(CUevent hEvent) {
    REQUIRE_INIT();
    if (!valid_event(hEvent)) return CUDA_ERROR_INVALID_HANDLE;
    if (hEvent->recorded) sleep_until(hEvent->time_ns);
    return CUDA_SUCCESS;
}

API CUresult cuEventElapsedTime_v2(float *pMilliseconds, CUevent hStart, CUevent hEnd) {
    REQUIRE_INIT();
    if (!pMilliseconds) return CUDA_ERROR_INVALID_VALUE;
    if (!valid_event(hStart) || !valid_event(hEnd)) return CUDA_ERROR_INVALID_HANDLE;
    if (!hStart->recorded || !hEnd->recorded || ((hStart->flags | hEnd->flags) & CU_EVENT_DISABLE_TIMING))
        return CUDA_ERROR_INVALID_HANDLE;
    int64_t now = hami_emu_now_ns();
    if (now < hStart->time_ns || now < hEnd->time_ns) return CUDA_ERROR_NOT_READY;
    *pMilliseconds = (float)((double)(hEnd->time_ns - hStart->time_ns) / 1e6);
    return CUDA_SUCCESS;
}
API CUresult cuEventElapsedTime(float *pMilliseconds, CUevent hStart, CUevent hEnd) {
    return cuEventElapsedTime_v2(pMilliseconds, hStart, hEnd);
}

API CUresult cuEventDestroy_v2(CUevent hEvent) {
    REQUIRE_INIT();
    if (!valid_event(hEvent)) return CUDA_ERROR_INVALID_HANDLE;
    live_del(hEvent);
    hEvent->magic = 0;
    free(hEvent);
    return CUDA_SUCCESS;
}
API CUresult cuEventDestroy(CUevent hEvent) { return cuEventDestroy_v2(hEvent); }

/* ---- modules and kernels ---- */

static int parse_kernel_line(const char *line, size_t len, struct CUfunc_st *f) {
    char buf[512];
    if (len >= sizeof(buf)) return -1;
    memcpy(buf, line, len);
    buf[len] = '\0';
    memset(f, 0, sizeof(*f));
    f->magic = MAGIC_FUNC;
    f->duration_param = -1;
    f->param_unit_ns = 1000;
    f->carveout = -1;
    char *save = NULL;
    for (char *tok = strtok_r(buf, " \t\r", &save); tok; tok = strtok_r(NULL, " \t\r", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq) continue;
        *eq = '\0';
        const char *k = tok, *v = eq + 1;
        char *end;
        if (!strcmp(k, "name")) {
            if (!*v || strlen(v) >= sizeof(f->name)) return -1;
            strcpy(f->name, v);
        } else if (!strcmp(k, "op")) {
            if (!strcmp(v, "busy")) f->op = OP_BUSY;
            else if (!strcmp(v, "fill")) f->op = OP_FILL;
            else return -1;
        } else if (!strcmp(k, "duration_us") || !strcmp(k, "duration_ms")) {
            long long d = strtoll(v, &end, 10);
            if (*end || d < 0) return -1;
            f->duration_ns = d * (k[9] == 'u' ? 1000LL : 1000000LL);
        } else if (!strcmp(k, "duration_param")) {
            long i = strtol(v, &end, 10);
            if (*end || i < 0 || i > 31) return -1;
            f->duration_param = (int)i;
        } else if (!strcmp(k, "unit")) {
            if (!strcmp(v, "ns")) f->param_unit_ns = 1;
            else if (!strcmp(v, "us")) f->param_unit_ns = 1000;
            else if (!strcmp(v, "ms")) f->param_unit_ns = 1000000;
            else return -1;
        }
    }
    return f->name[0] ? 0 : -1;
}

API CUresult cuModuleLoadData(CUmodule *module, const void *image) {
    REQUIRE_INIT();
    if (!module || !image) return CUDA_ERROR_INVALID_VALUE;
    if (!current_ctx()) return CUDA_ERROR_INVALID_CONTEXT;
    const char *text = image;
    size_t n = strnlen(text, 1 << 20);
    struct CUmod_st *m = calloc(1, sizeof(*m));
    if (!m) return CUDA_ERROR_OUT_OF_MEMORY;
    static const char marker[] = "HAMIEMU-KERNEL";
    const char *p = text, *end = text + n;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        const char *hit = memmem(p, (size_t)(le - p), marker, sizeof(marker) - 1);
        if (hit) {
            const char *args = hit + sizeof(marker) - 1;
            if (m->count >= MAX_KERNELS || parse_kernel_line(args, (size_t)(le - args), &m->funcs[m->count])) {
                free(m);
                return CUDA_ERROR_INVALID_IMAGE;
            }
            m->funcs[m->count].mod = m;
            m->count++;
        }
        p = le + 1;
    }
    if (!m->count) {
        free(m);
        return CUDA_ERROR_INVALID_IMAGE;
    }
    m->magic = MAGIC_MODULE;
    if (!live_add(m)) {
        free(m);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    for (int i = 0; i < m->count && live_add(&m->funcs[i]); i++) {
    }
    *module = m;
    return CUDA_SUCCESS;
}

API CUresult cuModuleUnload(CUmodule hmod) {
    REQUIRE_INIT();
    if (!live_has(hmod) || hmod->magic != MAGIC_MODULE) return CUDA_ERROR_INVALID_HANDLE;
    live_del(hmod);
    hmod->magic = 0;
    for (int i = 0; i < hmod->count; i++) {
        live_del(&hmod->funcs[i]);
        hmod->funcs[i].magic = 0;
    }
    free(hmod);
    return CUDA_SUCCESS;
}

API CUresult cuModuleGetFunction(CUfunction *hfunc, CUmodule hmod, const char *name) {
    REQUIRE_INIT();
    if (!hfunc || !name) return CUDA_ERROR_INVALID_VALUE;
    if (!live_has(hmod) || hmod->magic != MAGIC_MODULE) return CUDA_ERROR_INVALID_HANDLE;
    for (int i = 0; i < hmod->count; i++) {
        if (!strcmp(hmod->funcs[i].name, name)) {
            *hfunc = &hmod->funcs[i];
            return CUDA_SUCCESS;
        }
    }
    return CUDA_ERROR_NOT_FOUND;
}

API CUresult cuLaunchKernel(CUfunction f, unsigned int gridDimX, unsigned int gridDimY, unsigned int gridDimZ,
                            unsigned int blockDimX, unsigned int blockDimY, unsigned int blockDimZ,
                            unsigned int sharedMemBytes, CUstream hStream, void **kernelParams, void **extra) {
    REQUIRE_INIT();
    if (!live_has(f) || f->magic != MAGIC_FUNC) return CUDA_ERROR_INVALID_HANDLE;
    if (!gridDimX || !gridDimY || !gridDimZ || !blockDimX || !blockDimY || !blockDimZ) return CUDA_ERROR_INVALID_VALUE;
    if (gridDimY > 65535 || gridDimZ > 65535 || blockDimZ > 64) return CUDA_ERROR_INVALID_VALUE;
    if ((unsigned long long)blockDimX * blockDimY * blockDimZ > 1024) return CUDA_ERROR_INVALID_VALUE;
    if (sharedMemBytes > 49152) return CUDA_ERROR_INVALID_VALUE;
    if (extra) return CUDA_ERROR_NOT_SUPPORTED; /* only kernelParams-style arguments are emulated */
    struct CUstream_st *s;
    CUresult rc = stream_of(hStream, &s);
    if (rc) return rc;
    struct CUctx_st *c = s->ctx;
    rc = device_gate(c->phys);
    if (rc) return rc;
    int64_t dur = f->duration_ns;
    if (f->duration_param >= 0) {
        if (!kernelParams || !kernelParams[f->duration_param]) return CUDA_ERROR_INVALID_VALUE;
        unsigned long long v = *(const unsigned long long *)kernelParams[f->duration_param];
        if (v > (unsigned long long)INT64_MAX / (unsigned long long)f->param_unit_ns / 2) return CUDA_ERROR_INVALID_VALUE;
        dur = (int64_t)v * f->param_unit_ns;
    }
    if (f->op == OP_FILL) {
        if (!kernelParams || !kernelParams[0] || !kernelParams[1] || !kernelParams[2]) return CUDA_ERROR_INVALID_VALUE;
        CUdeviceptr dst = *(const CUdeviceptr *)kernelParams[0];
        size_t n = *(const size_t *)kernelParams[1];
        unsigned char byte = (unsigned char)*(const unsigned int *)kernelParams[2];
        int backed, phys;
        /* a real kernel writing out of bounds faults the context; report it at launch */
        if (n && device_range((uintptr_t)dst, n, &backed, &phys)) return CUDA_ERROR_ILLEGAL_ADDRESS;
        if (n && backed) memset((void *)(uintptr_t)dst, byte, n);
    }
    int64_t start = max64(hami_emu_now_ns(), s->tail_ns);
    int64_t end = start + dur;
    s->tail_ns = end;
    c->tail_ns = max64(c->tail_ns, end);
    hami_emu_lock(g_node.shm);
    hami_emu_add_interval(sgpu(c->phys), start, end, g_pid);
    hami_emu_unlock(g_node.shm);
    return CUDA_SUCCESS;
}

/* ---- more of the public surface ---- */

API CUresult cuCtxGetApiVersion(CUcontext ctx, unsigned int *version) {
    REQUIRE_INIT();
    if (!version) return CUDA_ERROR_INVALID_VALUE;
    struct CUctx_st *c = ctx ? ctx : current_ctx();
    if (!c || !valid_ctx(c)) return CUDA_ERROR_INVALID_CONTEXT;
    *version = 3020; /* every context made through the v2+ entry points reports the 3.2 context API */
    return CUDA_SUCCESS;
}

API CUresult cuCtxGetFlags(unsigned int *flags) {
    REQUIRE_INIT();
    if (!flags) return CUDA_ERROR_INVALID_VALUE;
    struct CUctx_st *c = current_ctx();
    if (!c) return CUDA_ERROR_INVALID_CONTEXT;
    *flags = c->flags;
    return CUDA_SUCCESS;
}

static const size_t g_limit_default[] = {1024, 1 << 20, 8 << 20, 2, 2048, 64, 0};

API CUresult cuCtxGetLimit(size_t *pvalue, CUlimit limit) {
    REQUIRE_INIT();
    if (!pvalue || (unsigned)limit > CU_LIMIT_PERSISTING_L2_CACHE_SIZE) return CUDA_ERROR_INVALID_VALUE;
    struct CUctx_st *c = current_ctx();
    if (!c) return CUDA_ERROR_INVALID_CONTEXT;
    *pvalue = c->limit_set[limit] ? c->limits[limit] : g_limit_default[limit];
    return CUDA_SUCCESS;
}

API CUresult cuCtxSetLimit(CUlimit limit, size_t value) {
    REQUIRE_INIT();
    if ((unsigned)limit > CU_LIMIT_PERSISTING_L2_CACHE_SIZE) return CUDA_ERROR_INVALID_VALUE;
    struct CUctx_st *c = current_ctx();
    if (!c) return CUDA_ERROR_INVALID_CONTEXT;
    if (limit == CU_LIMIT_PERSISTING_L2_CACHE_SIZE && value > ginfo(c->phys)->l2_cache_bytes)
        return CUDA_ERROR_INVALID_VALUE;
    c->limits[limit] = value;
    c->limit_set[limit] = 1;
    return CUDA_SUCCESS;
}

API CUresult cuCtxGetCacheConfig(CUfunc_cache *pconfig) {
    REQUIRE_INIT();
    if (!pconfig) return CUDA_ERROR_INVALID_VALUE;
    struct CUctx_st *c = current_ctx();
    if (!c) return CUDA_ERROR_INVALID_CONTEXT;
    *pconfig = (CUfunc_cache)c->cache_config;
    return CUDA_SUCCESS;
}

API CUresult cuCtxSetCacheConfig(CUfunc_cache config) {
    REQUIRE_INIT();
    if ((unsigned)config > CU_FUNC_CACHE_PREFER_EQUAL) return CUDA_ERROR_INVALID_VALUE;
    struct CUctx_st *c = current_ctx();
    if (!c) return CUDA_ERROR_INVALID_CONTEXT;
    c->cache_config = (int)config;
    return CUDA_SUCCESS;
}

API CUresult cuCtxGetStreamPriorityRange(int *leastPriority, int *greatestPriority) {
    REQUIRE_INIT();
    if (leastPriority) *leastPriority = 0; /* the range data-centre GPUs report */
    if (greatestPriority) *greatestPriority = -5;
    return CUDA_SUCCESS;
}

API CUresult cuDeviceCanAccessPeer(int *canAccessPeer, CUdevice dev, CUdevice peerDev) {
    REQUIRE_INIT();
    if (!canAccessPeer) return CUDA_ERROR_INVALID_VALUE;
    if (!valid_ordinal(dev) || !valid_ordinal(peerDev)) return CUDA_ERROR_INVALID_DEVICE;
    *canAccessPeer = dev != peerDev; /* every emulated node is one PCIe/NVLink domain */
    return CUDA_SUCCESS;
}

API CUresult cuCtxEnablePeerAccess(CUcontext peerContext, unsigned int Flags) {
    REQUIRE_INIT();
    if (Flags) return CUDA_ERROR_INVALID_VALUE;
    struct CUctx_st *c = current_ctx();
    if (!c) return CUDA_ERROR_INVALID_CONTEXT;
    if (!valid_ctx(peerContext)) return CUDA_ERROR_INVALID_HANDLE;
    if (peerContext->phys == c->phys) return CUDA_ERROR_INVALID_DEVICE; /* peer access to oneself */
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGetByPCIBusId(CUdevice *dev, const char *pciBusId) {
    REQUIRE_INIT();
    if (!dev || !pciBusId) return CUDA_ERROR_INVALID_VALUE;
    unsigned d = 0, b = 0, s = 0, f = 0;
    /* accepted forms: [domain]:[bus]:[device].[function] and [bus]:[device].[function], hex */
    if (sscanf(pciBusId, "%x:%x:%x.%x", &d, &b, &s, &f) != 4) {
        d = 0;
        if (sscanf(pciBusId, "%x:%x.%x", &b, &s, &f) != 3) return CUDA_ERROR_INVALID_VALUE;
    }
    for (int i = 0; i < g_node.visible_count; i++) {
        const hami_emu_gpu_info_t *g = ginfo(g_node.visible[i]);
        if (g->domain == d && g->bus == b && g->device == s && g->function == f) {
            *dev = i;
            return CUDA_SUCCESS;
        }
    }
    return CUDA_ERROR_INVALID_DEVICE;
}

API CUresult cuDevicePrimaryCtxGetState(CUdevice dev, unsigned int *flags, int *active) {
    REQUIRE_INIT();
    if (!flags || !active) return CUDA_ERROR_INVALID_VALUE;
    if (!valid_ordinal(dev)) return CUDA_ERROR_INVALID_DEVICE;
    pthread_mutex_lock(&g_lock);
    *flags = g_primary[dev].flags;
    *active = g_primary[dev].refcount > 0;
    pthread_mutex_unlock(&g_lock);
    return CUDA_SUCCESS;
}

API CUresult cuDevicePrimaryCtxSetFlags_v2(CUdevice dev, unsigned int flags) {
    REQUIRE_INIT();
    if (!valid_ordinal(dev)) return CUDA_ERROR_INVALID_DEVICE;
    if (flags > 0x1f) return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&g_lock);
    g_primary[dev].flags = flags;
    pthread_mutex_unlock(&g_lock);
    return CUDA_SUCCESS;
}

/* copies with unified addressing: either side may be device, mapping or pinned host memory */
API CUresult cuMemcpy(CUdeviceptr dst, CUdeviceptr src, size_t ByteCount) { return cuMemcpyDtoD_v2(dst, src, ByteCount); }

/* the async variants check the stream, then run at once: emulated copies take no device time */
#define STREAM_CHECK(h)                                   \
    do {                                                  \
        struct CUstream_st *s_;                           \
        CUresult rc_ = stream_of((h), &s_);               \
        if (rc_) return rc_;                              \
    } while (0)

static CUresult stream_of(CUstream h, struct CUstream_st **out);

API CUresult cuMemcpyAsync(CUdeviceptr dst, CUdeviceptr src, size_t ByteCount, CUstream hStream) {
    REQUIRE_INIT();
    STREAM_CHECK(hStream);
    return cuMemcpyDtoD_v2(dst, src, ByteCount);
}

API CUresult cuMemcpyPeer(CUdeviceptr dstDevice, CUcontext dstContext, CUdeviceptr srcDevice, CUcontext srcContext,
                          size_t ByteCount) {
    REQUIRE_INIT();
    if (!valid_ctx(dstContext) || !valid_ctx(srcContext)) return CUDA_ERROR_INVALID_CONTEXT;
    return cuMemcpyDtoD_v2(dstDevice, srcDevice, ByteCount);
}

API CUresult cuMemcpyPeerAsync(CUdeviceptr dstDevice, CUcontext dstContext, CUdeviceptr srcDevice,
                               CUcontext srcContext, size_t ByteCount, CUstream hStream) {
    REQUIRE_INIT();
    STREAM_CHECK(hStream);
    return cuMemcpyPeer(dstDevice, dstContext, srcDevice, srcContext, ByteCount);
}

API CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dstDevice, const void *srcHost, size_t ByteCount, CUstream hStream) {
    REQUIRE_INIT();
    STREAM_CHECK(hStream);
    return cuMemcpyHtoD_v2(dstDevice, srcHost, ByteCount);
}

API CUresult cuMemcpyDtoHAsync_v2(void *dstHost, CUdeviceptr srcDevice, size_t ByteCount, CUstream hStream) {
    REQUIRE_INIT();
    STREAM_CHECK(hStream);
    return cuMemcpyDtoH_v2(dstHost, srcDevice, ByteCount);
}

API CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dstDevice, CUdeviceptr srcDevice, size_t ByteCount, CUstream hStream) {
    REQUIRE_INIT();
    STREAM_CHECK(hStream);
    return cuMemcpyDtoD_v2(dstDevice, srcDevice, ByteCount);
}

API CUresult cuMemsetD16_v2(CUdeviceptr dstDevice, unsigned short us, size_t N) {
    REQUIRE_INIT();
    if (!N) return CUDA_SUCCESS;
    if (dstDevice % 2 || N > SIZE_MAX / 2) return CUDA_ERROR_INVALID_VALUE;
    int backed, phys;
    CUresult rc = device_range((uintptr_t)dstDevice, N * 2, &backed, &phys);
    if (rc) return rc;
    if (backed) {
        unsigned short *p = (unsigned short *)(uintptr_t)dstDevice;
        for (size_t i = 0; i < N; i++) p[i] = us;
    }
    return CUDA_SUCCESS;
}

API CUresult cuMemsetD8Async(CUdeviceptr dstDevice, unsigned char uc, size_t N, CUstream hStream) {
    REQUIRE_INIT();
    STREAM_CHECK(hStream);
    return cuMemsetD8_v2(dstDevice, uc, N);
}

API CUresult cuMemsetD16Async(CUdeviceptr dstDevice, unsigned short us, size_t N, CUstream hStream) {
    REQUIRE_INIT();
    STREAM_CHECK(hStream);
    return cuMemsetD16_v2(dstDevice, us, N);
}

API CUresult cuMemsetD32Async(CUdeviceptr dstDevice, unsigned int ui, size_t N, CUstream hStream) {
    REQUIRE_INIT();
    STREAM_CHECK(hStream);
    return cuMemsetD32_v2(dstDevice, ui, N);
}

/* the allocation, mapping or pinned range holding p, or NULL */
static struct region *region_at_locked(uintptr_t p) {
    struct region *r = find_region_locked(p, KIND_ALLOC);
    if (!r) r = find_region_locked(p, KIND_MAPPING);
    if (!r) r = find_region_locked(p, KIND_HOST);
    return r;
}

API CUresult cuMemGetAddressRange_v2(CUdeviceptr *pbase, size_t *psize, CUdeviceptr dptr) {
    REQUIRE_INIT();
    pthread_mutex_lock(&g_lock);
    struct region *r = find_region_locked((uintptr_t)dptr, KIND_ALLOC);
    if (!r) r = find_region_locked((uintptr_t)dptr, KIND_MAPPING);
    if (r) {
        if (pbase) *pbase = (CUdeviceptr)r->base;
        if (psize) *psize = r->size;
    }
    pthread_mutex_unlock(&g_lock);
    return r ? CUDA_SUCCESS : CUDA_ERROR_NOT_FOUND;
}

API CUresult cuPointerGetAttribute(void *data, CUpointer_attribute attribute, CUdeviceptr ptr) {
    REQUIRE_INIT();
    if (!data) return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&g_lock);
    struct region *r = region_at_locked((uintptr_t)ptr);
    struct region copy;
    if (r) copy = *r;
    pthread_mutex_unlock(&g_lock);
    if (!r) return CUDA_ERROR_INVALID_VALUE; /* not memory this driver knows */
    int host = copy.kind == KIND_HOST;
    int ordinal = 0;
    for (int i = 0; i < g_node.visible_count; i++)
        if (g_node.visible[i] == copy.phys) ordinal = i;
    switch ((int)attribute) {
    case CU_POINTER_ATTRIBUTE_CONTEXT:
        if (!copy.ctx) return CUDA_ERROR_INVALID_VALUE;
        *(CUcontext *)data = copy.ctx;
        break;
    case CU_POINTER_ATTRIBUTE_MEMORY_TYPE: *(unsigned *)data = host ? CU_MEMORYTYPE_HOST : CU_MEMORYTYPE_DEVICE; break;
    case CU_POINTER_ATTRIBUTE_DEVICE_POINTER: *(CUdeviceptr *)data = ptr; break;
    case CU_POINTER_ATTRIBUTE_HOST_POINTER:
        if (!host) return CUDA_ERROR_INVALID_VALUE;
        *(void **)data = (void *)(uintptr_t)ptr;
        break;
    case CU_POINTER_ATTRIBUTE_IS_MANAGED: *(int *)data = copy.managed; break;
    case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL: *(int *)data = host && copy.ctx ? copy.ctx->ordinal : ordinal; break;
    case CU_POINTER_ATTRIBUTE_RANGE_START_ADDR: *(CUdeviceptr *)data = (CUdeviceptr)copy.base; break;
    case CU_POINTER_ATTRIBUTE_RANGE_SIZE: *(size_t *)data = copy.size; break;
    case CU_POINTER_ATTRIBUTE_MAPPED: *(int *)data = 1; break;
    default: return CUDA_ERROR_NOT_SUPPORTED;
    }
    return CUDA_SUCCESS;
}

static int valid_func(CUfunction f) { return live_has(f) && f->magic == MAGIC_FUNC; }

API CUresult cuFuncGetAttribute(int *pi, CUfunction_attribute attrib, CUfunction hfunc) {
    REQUIRE_INIT();
    if (!pi) return CUDA_ERROR_INVALID_VALUE;
    if (!valid_func(hfunc)) return CUDA_ERROR_INVALID_HANDLE;
    const hami_emu_gpu_info_t *g = ginfo(current_ctx() ? current_ctx()->phys : g_node.visible[0]);
    switch ((int)attrib) {
    case CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *pi = 1024; break;
    case CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES:
    case CU_FUNC_ATTRIBUTE_CONST_SIZE_BYTES:
    case CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES:
    case CU_FUNC_ATTRIBUTE_CACHE_MODE_CA: *pi = 0; break;
    case CU_FUNC_ATTRIBUTE_NUM_REGS: *pi = 32; break;
    case CU_FUNC_ATTRIBUTE_PTX_VERSION:
    case CU_FUNC_ATTRIBUTE_BINARY_VERSION: *pi = g->cc_major * 10 + g->cc_minor; break;
    case CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES: *pi = hfunc->max_dynamic_shared; break;
    case CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT: *pi = hfunc->carveout; break;
    default: return CUDA_ERROR_INVALID_VALUE;
    }
    return CUDA_SUCCESS;
}

API CUresult cuFuncSetAttribute(CUfunction hfunc, CUfunction_attribute attrib, int value) {
    REQUIRE_INIT();
    if (!valid_func(hfunc)) return CUDA_ERROR_INVALID_HANDLE;
    if (attrib == CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES) {
        if (value < 0 || value > 49152) return CUDA_ERROR_INVALID_VALUE;
        hfunc->max_dynamic_shared = value;
    } else if (attrib == CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT) {
        if (value < -1 || value > 100) return CUDA_ERROR_INVALID_VALUE;
        hfunc->carveout = value;
    } else {
        return CUDA_ERROR_INVALID_VALUE; /* the others are read-only */
    }
    return CUDA_SUCCESS;
}

API CUresult cuFuncSetCacheConfig(CUfunction hfunc, CUfunc_cache config) {
    REQUIRE_INIT();
    if (!valid_func(hfunc)) return CUDA_ERROR_INVALID_HANDLE;
    if ((unsigned)config > CU_FUNC_CACHE_PREFER_EQUAL) return CUDA_ERROR_INVALID_VALUE;
    return CUDA_SUCCESS;
}

API CUresult cuModuleLoadDataEx(CUmodule *module, const void *image, unsigned int numOptions, CUjit_option *options,
                                void **optionValues) {
    if (numOptions && (!options || !optionValues)) return CUDA_ERROR_INVALID_VALUE;
    return cuModuleLoadData(module, image); /* JIT options have nothing to tune in the emulated image format */
}

API CUresult cuModuleLoadFatBinary(CUmodule *module, const void *fatCubin) { return cuModuleLoadData(module, fatCubin); }

API CUresult cuModuleLoad(CUmodule *module, const char *fname) {
    REQUIRE_INIT();
    if (!module || !fname) return CUDA_ERROR_INVALID_VALUE;
    FILE *f = fopen(fname, "rb");
    if (!f) return CUDA_ERROR_FILE_NOT_FOUND;
    char *buf = calloc(1, (1 << 20) + 1);
    size_t n = buf ? fread(buf, 1, 1 << 20, f) : 0;
    fclose(f);
    if (!buf) return CUDA_ERROR_OUT_OF_MEMORY;
    buf[n] = '\0';
    CUresult rc = cuModuleLoadData(module, buf);
    free(buf);
    return rc;
}

API CUresult cuLaunchCooperativeKernel(CUfunction f, unsigned int gridDimX, unsigned int gridDimY,
                                       unsigned int gridDimZ, unsigned int blockDimX, unsigned int blockDimY,
                                       unsigned int blockDimZ, unsigned int sharedMemBytes, CUstream hStream,
                                       void **kernelParams) {
    return cuLaunchKernel(f, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes, hStream,
                          kernelParams, NULL);
}

/* ---- streams, events, occupancy and queries the CUDA runtime asks for ---- */

API CUresult cuStreamCreateWithPriority(CUstream *phStream, unsigned int flags, int priority) {
    CUresult rc = cuStreamCreate(phStream, flags);
    if (rc) return rc;
    /* out-of-range priorities are clamped to [greatest, least] = [-5, 0], as the driver does */
    (*phStream)->priority = priority < -5 ? -5 : priority > 0 ? 0 : priority;
    return CUDA_SUCCESS;
}

API CUresult cuStreamGetPriority(CUstream hStream, int *priority) {
    REQUIRE_INIT();
    if (!priority) return CUDA_ERROR_INVALID_VALUE;
    struct CUstream_st *s;
    CUresult rc = stream_of(hStream, &s);
    if (rc) return rc;
    *priority = s->priority;
    return CUDA_SUCCESS;
}

API CUresult cuStreamGetFlags(CUstream hStream, unsigned int *flags) {
    REQUIRE_INIT();
    if (!flags) return CUDA_ERROR_INVALID_VALUE;
    struct CUstream_st *s;
    CUresult rc = stream_of(hStream, &s);
    if (rc) return rc;
    *flags = s->flags;
    return CUDA_SUCCESS;
}

API CUresult cuStreamGetDevice(CUstream hStream, CUdevice *device) {
    REQUIRE_INIT();
    if (!device) return CUDA_ERROR_INVALID_VALUE;
    struct CUstream_st *s;
    CUresult rc = stream_of(hStream, &s);
    if (rc) return rc;
    *device = s->ctx->ordinal;
    return CUDA_SUCCESS;
}

API CUresult cuStreamGetId(CUstream hStream, unsigned long long *streamId) {
    REQUIRE_INIT();
    if (!streamId) return CUDA_ERROR_INVALID_VALUE;
    struct CUstream_st *s;
    CUresult rc = stream_of(hStream, &s);
    if (rc) return rc;
    *streamId = (uintptr_t)hStream <= 2 ? (unsigned long long)(uintptr_t)hStream : s->id;
    return CUDA_SUCCESS;
}

API CUresult cuStreamWaitEvent(CUstream hStream, CUevent hEvent, unsigned int Flags) {
    REQUIRE_INIT();
    if (Flags > 1) return CUDA_ERROR_INVALID_VALUE;
    if (!valid_event(hEvent)) return CUDA_ERROR_INVALID_HANDLE;
    struct CUstream_st *s;
    CUresult rc = stream_of(hStream, &s);
    if (rc) return rc;
    /* later work on the stream starts no earlier than the event's completion */
    if (hEvent->recorded) s->tail_ns = max64(s->tail_ns, hEvent->time_ns);
    return CUDA_SUCCESS;
}

API CUresult cuLaunchHostFunc(CUstream hStream, CUhostFn fn, void *userData) {
    REQUIRE_INIT();
    if (!fn) return CUDA_ERROR_INVALID_VALUE;
    struct CUstream_st *s;
    CUresult rc = stream_of(hStream, &s);
    if (rc) return rc;
    /* runs in stream order: after the queued kernels, on the calling thread (the stream blocks meanwhile) */
    sleep_until(s->tail_ns);
    fn(userData);
    return CUDA_SUCCESS;
}

API CUresult cuStreamAddCallback(CUstream hStream, CUstreamCallback callback, void *userData, unsigned int flags) {
    REQUIRE_INIT();
    if (!callback || flags) return CUDA_ERROR_INVALID_VALUE;
    struct CUstream_st *s;
    CUresult rc = stream_of(hStream, &s);
    if (rc) return rc;
    sleep_until(s->tail_ns);
    callback(hStream, CUDA_SUCCESS, userData);
    return CUDA_SUCCESS;
}

API CUresult cuEventRecordWithFlags(CUevent hEvent, CUstream hStream, unsigned int flags) {
    if (flags > 1) return CUDA_ERROR_INVALID_VALUE; /* CU_EVENT_RECORD_EXTERNAL only matters in stream capture */
    return cuEventRecord(hEvent, hStream);
}

API CUresult cuCtxDisablePeerAccess(CUcontext peerContext) {
    REQUIRE_INIT();
    if (!current_ctx()) return CUDA_ERROR_INVALID_CONTEXT;
    return valid_ctx(peerContext) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

/* no profiler is ever attached: starting and stopping collection is a successful no-op */
API CUresult cuProfilerStart(void) { return CUDA_SUCCESS; }
API CUresult cuProfilerStop(void) { return CUDA_SUCCESS; }

static struct CUarray_st *as_array(CUarray h) {
    return live_has(h) && h->magic == MAGIC_ARRAY ? h : NULL;
}

API CUresult cuArrayGetDescriptor_v2(CUDA_ARRAY_DESCRIPTOR *pArrayDescriptor, CUarray hArray) {
    REQUIRE_INIT();
    if (!pArrayDescriptor) return CUDA_ERROR_INVALID_VALUE;
    struct CUarray_st *a = as_array(hArray);
    if (!a) return CUDA_ERROR_INVALID_HANDLE;
    pArrayDescriptor->Width = a->desc.Width;
    pArrayDescriptor->Height = a->desc.Height;
    pArrayDescriptor->Format = a->desc.Format;
    pArrayDescriptor->NumChannels = a->desc.NumChannels;
    return CUDA_SUCCESS;
}

API CUresult cuArray3DGetDescriptor_v2(CUDA_ARRAY3D_DESCRIPTOR *pArrayDescriptor, CUarray hArray) {
    REQUIRE_INIT();
    if (!pArrayDescriptor) return CUDA_ERROR_INVALID_VALUE;
    struct CUarray_st *a = as_array(hArray);
    if (!a) return CUDA_ERROR_INVALID_HANDLE;
    *pArrayDescriptor = a->desc;
    return CUDA_SUCCESS;
}

API CUresult cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(int *numBlocks, CUfunction func, int blockSize,
                                                                  size_t dynamicSMemSize, unsigned int flags) {
    REQUIRE_INIT();
    if (!numBlocks || blockSize <= 0 || blockSize > 1024 || flags > 1) return CUDA_ERROR_INVALID_VALUE;
    if (!valid_func(func)) return CUDA_ERROR_INVALID_HANDLE;
    struct CUctx_st *c = current_ctx();
    if (!c) return CUDA_ERROR_INVALID_CONTEXT;
    /* limited by resident threads (whole warps), 32 blocks per SM, and 48 KiB of shared memory per block
     * out of the SM's 164 KiB (A100-class) */
    int warps = (blockSize + 31) / 32;
    int by_threads = (int)ginfo(c->phys)->max_threads_per_sm / (warps * 32);
    int blocks = by_threads < 32 ? by_threads : 32;
    if (dynamicSMemSize > 49152) return CUDA_ERROR_INVALID_VALUE;
    if (dynamicSMemSize) {
        int by_smem = (int)((164u * 1024u) / dynamicSMemSize);
        if (by_smem < blocks) blocks = by_smem;
    }
    *numBlocks = blocks;
    return CUDA_SUCCESS;
}

API CUresult cuOccupancyMaxActiveBlocksPerMultiprocessor(int *numBlocks, CUfunction func, int blockSize,
                                                         size_t dynamicSMemSize) {
    return cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(numBlocks, func, blockSize, dynamicSMemSize, 0);
}

API CUresult cuFuncGetName(const char **name, CUfunction hfunc) {
    REQUIRE_INIT();
    if (!name) return CUDA_ERROR_INVALID_VALUE;
    if (!valid_func(hfunc)) return CUDA_ERROR_INVALID_HANDLE;
    *name = hfunc->name;
    return CUDA_SUCCESS;
}

API CUresult cuModuleGetLoadingMode(CUmoduleLoadingMode *mode) {
    if (!mode) return CUDA_ERROR_INVALID_VALUE;
    *mode = CU_MODULE_LAZY_LOADING; /* the default since CUDA 12.2 */
    return CUDA_SUCCESS;
}

/* ---- 2D memsets, pointer and peer queries, managed-memory hints ---- */

static CUresult memset2d(CUdeviceptr dst, size_t pitch, unsigned value, unsigned elem, size_t width, size_t height) {
    if (!width || !height) return CUDA_SUCCESS;
    if (dst % elem || pitch % elem) return CUDA_ERROR_INVALID_VALUE;
    if (width > pitch / elem && height > 1) return CUDA_ERROR_INVALID_VALUE; /* rows would overlap */
    if (height > 1 && (height - 1) > (SIZE_MAX - width * elem) / pitch) return CUDA_ERROR_INVALID_VALUE;
    size_t span = (height - 1) * pitch + width * elem;
    int backed, phys;
    CUresult rc = device_range((uintptr_t)dst, span, &backed, &phys);
    if (rc || !backed) return rc;
    for (size_t row = 0; row < height; row++) {
        unsigned char *p = (unsigned char *)(uintptr_t)(dst + row * pitch);
        for (size_t i = 0; i < width; i++) {
            if (elem == 1) p[i] = (unsigned char)value;
            else if (elem == 2) ((unsigned short *)p)[i] = (unsigned short)value;
            else ((unsigned int *)p)[i] = value;
        }
    }
    return CUDA_SUCCESS;
}

API CUresult cuMemsetD2D8_v2(CUdeviceptr dstDevice, size_t dstPitch, unsigned char uc, size_t Width, size_t Height) {
    REQUIRE_INIT();
    return memset2d(dstDevice, dstPitch, uc, 1, Width, Height);
}

API CUresult cuMemsetD2D16_v2(CUdeviceptr dstDevice, size_t dstPitch, unsigned short us, size_t Width,
                              size_t Height) {
    REQUIRE_INIT();
    return memset2d(dstDevice, dstPitch, us, 2, Width, Height);
}

API CUresult cuMemsetD2D32_v2(CUdeviceptr dstDevice, size_t dstPitch, unsigned int ui, size_t Width, size_t Height) {
    REQUIRE_INIT();
    return memset2d(dstDevice, dstPitch, ui, 4, Width, Height);
}

API CUresult cuMemsetD2D8Async(CUdeviceptr dstDevice, size_t dstPitch, unsigned char uc, size_t Width, size_t Height,
                               CUstream hStream) {
    REQUIRE_INIT();
    STREAM_CHECK(hStream);
    return memset2d(dstDevice, dstPitch, uc, 1, Width, Height);
}

API CUresult cuMemsetD2D16Async(CUdeviceptr dstDevice, size_t dstPitch, unsigned short us, size_t Width,
                                size_t Height, CUstream hStream) {
    REQUIRE_INIT();
    STREAM_CHECK(hStream);
    return memset2d(dstDevice, dstPitch, us, 2, Width, Height);
}

API CUresult cuMemsetD2D32Async(CUdeviceptr dstDevice, size_t dstPitch, unsigned int ui, size_t Width, size_t Height,
                                CUstream hStream) {
    REQUIRE_INIT();
    STREAM_CHECK(hStream);
    return memset2d(dstDevice, dstPitch, ui, 4, Width, Height);
}

API CUresult cuPointerGetAttributes(unsigned int numAttributes, CUpointer_attribute *attributes, void **data,
                                    CUdeviceptr ptr) {
    REQUIRE_INIT();
    if (!numAttributes || !attributes || !data) return CUDA_ERROR_INVALID_VALUE;
    for (unsigned i = 0; i < numAttributes; i++) {
        if (!data[i]) continue;
        CUresult rc = cuPointerGetAttribute(data[i], attributes[i], ptr);
        /* unlike the single query, an unknown pointer is not an error here: its attributes read as
         * unset (memory type 0, context NULL), which is how callers probe plain host pointers */
        if (rc == CUDA_ERROR_INVALID_VALUE) {
            size_t width = attributes[i] == CU_POINTER_ATTRIBUTE_CONTEXT || attributes[i] == CU_POINTER_ATTRIBUTE_DEVICE_POINTER ||
                                   attributes[i] == CU_POINTER_ATTRIBUTE_HOST_POINTER ||
                                   attributes[i] == CU_POINTER_ATTRIBUTE_RANGE_START_ADDR ||
                                   attributes[i] == CU_POINTER_ATTRIBUTE_RANGE_SIZE
                               ? sizeof(void *)
                               : sizeof(int);
            memset(data[i], 0, width);
            if (attributes[i] == CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL) *(int *)data[i] = -2;
        } else if (rc) {
            return rc;
        }
    }
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGetP2PAttribute(int *value, CUdevice_P2PAttribute attrib, CUdevice srcDevice,
                                     CUdevice dstDevice) {
    REQUIRE_INIT();
    if (!value) return CUDA_ERROR_INVALID_VALUE;
    if (!valid_ordinal(srcDevice) || !valid_ordinal(dstDevice)) return CUDA_ERROR_INVALID_DEVICE;
    if (srcDevice == dstDevice) return CUDA_ERROR_INVALID_DEVICE;
    switch ((int)attrib) {
    case CU_DEVICE_P2P_ATTRIBUTE_PERFORMANCE_RANK: *value = 0; break;
    case CU_DEVICE_P2P_ATTRIBUTE_ACCESS_SUPPORTED:
    case CU_DEVICE_P2P_ATTRIBUTE_CUDA_ARRAY_ACCESS_SUPPORTED: *value = 1; break;
    case CU_DEVICE_P2P_ATTRIBUTE_NATIVE_ATOMIC_SUPPORTED:
        /* native atomics need NVLink between the two cards */
        *value = ginfo(g_node.visible[srcDevice])->nvlink_count && ginfo(g_node.visible[dstDevice])->nvlink_count;
        break;
    default: return CUDA_ERROR_INVALID_VALUE;
    }
    return CUDA_SUCCESS;
}

API CUresult cuCtxGetSharedMemConfig(CUsharedconfig *pConfig) {
    REQUIRE_INIT();
    if (!pConfig) return CUDA_ERROR_INVALID_VALUE;
    if (!current_ctx()) return CUDA_ERROR_INVALID_CONTEXT;
    *pConfig = CU_SHARED_MEM_CONFIG_FOUR_BYTE_BANK_SIZE; /* fixed 4-byte banks since Maxwell */
    return CUDA_SUCCESS;
}

API CUresult cuCtxSetSharedMemConfig(CUsharedconfig config) {
    REQUIRE_INIT();
    if ((unsigned)config > CU_SHARED_MEM_CONFIG_EIGHT_BYTE_BANK_SIZE) return CUDA_ERROR_INVALID_VALUE;
    return current_ctx() ? CUDA_SUCCESS : CUDA_ERROR_INVALID_CONTEXT; /* accepted and ignored, as on the hardware */
}

API CUresult cuFuncSetSharedMemConfig(CUfunction hfunc, CUsharedconfig config) {
    REQUIRE_INIT();
    if (!valid_func(hfunc)) return CUDA_ERROR_INVALID_HANDLE;
    return (unsigned)config > CU_SHARED_MEM_CONFIG_EIGHT_BYTE_BANK_SIZE ? CUDA_ERROR_INVALID_VALUE : CUDA_SUCCESS;
}

API CUresult cuModuleGetGlobal_v2(CUdeviceptr *dptr, size_t *bytes, CUmodule hmod, const char *name) {
    REQUIRE_INIT();
    if (!name) return CUDA_ERROR_INVALID_VALUE;
    if (!live_has(hmod) || hmod->magic != MAGIC_MODULE) return CUDA_ERROR_INVALID_HANDLE;
    (void)dptr;
    (void)bytes;
    return CUDA_ERROR_NOT_FOUND; /* emulated images declare kernels only, never device globals */
}

/* the managed allocation holding [p, p+count), for the unified-memory hints */
static CUresult managed_range(CUdeviceptr p, size_t count) {
    if (!count) return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&g_lock);
    struct region *r = find_region_locked((uintptr_t)p, KIND_ALLOC);
    int ok = r && r->managed && count <= r->base + r->size - (uintptr_t)p;
    pthread_mutex_unlock(&g_lock);
    return ok ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

static CUresult check_location(CUmemLocation loc) {
    if (loc.type == CU_MEM_LOCATION_TYPE_DEVICE) return valid_ordinal(loc.id) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_DEVICE;
    return loc.type >= CU_MEM_LOCATION_TYPE_HOST && loc.type <= CU_MEM_LOCATION_TYPE_HOST_NUMA_CURRENT
               ? CUDA_SUCCESS
               : CUDA_ERROR_INVALID_VALUE;
}

/* Hints and prefetches change where pages live, which the emulation does not model: they are checked
 * and accepted. */
API CUresult cuMemAdvise_v2(CUdeviceptr devPtr, size_t count, CUmem_advise advice, CUmemLocation location) {
    REQUIRE_INIT();
    if (advice < CU_MEM_ADVISE_SET_READ_MOSTLY || advice > CU_MEM_ADVISE_UNSET_ACCESSED_BY) return CUDA_ERROR_INVALID_VALUE;
    CUresult rc = managed_range(devPtr, count);
    if (!rc && advice != CU_MEM_ADVISE_SET_READ_MOSTLY && advice != CU_MEM_ADVISE_UNSET_READ_MOSTLY)
        rc = check_location(location);
    return rc;
}

API CUresult cuMemAdvise(CUdeviceptr devPtr, size_t count, CUmem_advise advice, CUdevice device) {
    CUmemLocation loc = {device == -1 ? CU_MEM_LOCATION_TYPE_HOST : CU_MEM_LOCATION_TYPE_DEVICE, device};
    return cuMemAdvise_v2(devPtr, count, advice, loc);
}

API CUresult cuMemPrefetchAsync_v2(CUdeviceptr devPtr, size_t count, CUmemLocation location, unsigned int flags,
                                   CUstream hStream) {
    REQUIRE_INIT();
    if (flags) return CUDA_ERROR_INVALID_VALUE;
    STREAM_CHECK(hStream);
    CUresult rc = managed_range(devPtr, count);
    return rc ? rc : check_location(location);
}

API CUresult cuMemPrefetchAsync(CUdeviceptr devPtr, size_t count, CUdevice dstDevice, CUstream hStream) {
    CUmemLocation loc = {dstDevice == -1 ? CU_MEM_LOCATION_TYPE_HOST : CU_MEM_LOCATION_TYPE_DEVICE, dstDevice};
    return cuMemPrefetchAsync_v2(devPtr, count, loc, 0, hStream);
}

/* ---- entry points by name and version ---- */

typedef struct {
    const char *name;
    int since; /* CUDA version that introduced this variant */
    void *fn;
} proc_entry_t;

#define E(n, v, f) {n, v, (void *)(f)}
static const proc_entry_t g_procs[] = {
    E("cuInit", 2000, cuInit),
    E("cuDriverGetVersion", 2020, cuDriverGetVersion),
    E("cuGetErrorName", 6000, cuGetErrorName),
    E("cuGetErrorString", 6000, cuGetErrorString),
    E("cuGetProcAddress", 12000, cuGetProcAddress_v2),
    E("cuGetProcAddress", 11030, cuGetProcAddress),
    E("cuDeviceGetCount", 2000, cuDeviceGetCount),
    E("cuDeviceGet", 2000, cuDeviceGet),
    E("cuDeviceGetName", 2000, cuDeviceGetName),
    E("cuDeviceGetUuid", 11040, cuDeviceGetUuid_v2),
    E("cuDeviceGetUuid", 9020, cuDeviceGetUuid),
    E("cuDeviceTotalMem", 3020, cuDeviceTotalMem_v2),
    E("cuDeviceGetAttribute", 2000, cuDeviceGetAttribute),
    E("cuDeviceGetPCIBusId", 4010, cuDeviceGetPCIBusId),
    E("cuDevicePrimaryCtxRetain", 7000, cuDevicePrimaryCtxRetain),
    E("cuDevicePrimaryCtxRelease", 11000, cuDevicePrimaryCtxRelease_v2),
    E("cuDevicePrimaryCtxRelease", 7000, cuDevicePrimaryCtxRelease),
    E("cuDevicePrimaryCtxReset", 11000, cuDevicePrimaryCtxReset_v2),
    E("cuCtxCreate", 12050, cuCtxCreate_v4),
    E("cuCtxCreate", 3020, cuCtxCreate_v2),
    E("cuCtxDestroy", 4000, cuCtxDestroy_v2),
    E("cuCtxPushCurrent", 4000, cuCtxPushCurrent_v2),
    E("cuCtxPopCurrent", 4000, cuCtxPopCurrent_v2),
    E("cuCtxSetCurrent", 4000, cuCtxSetCurrent),
    E("cuCtxGetCurrent", 4000, cuCtxGetCurrent),
    E("cuCtxGetDevice", 2000, cuCtxGetDevice),
    E("cuCtxSynchronize", 2000, cuCtxSynchronize),
    E("cuMemGetInfo", 3020, cuMemGetInfo_v2),
    E("cuMemAlloc", 3020, cuMemAlloc_v2),
    E("cuMemAllocPitch", 3020, cuMemAllocPitch_v2),
    E("cuMemAllocManaged", 6000, cuMemAllocManaged),
    E("cuMemFree", 3020, cuMemFree_v2),
    E("cuMemAllocAsync", 11020, cuMemAllocAsync),
    E("cuMemFreeAsync", 11020, cuMemFreeAsync),
    E("cuMemcpyHtoD", 3020, cuMemcpyHtoD_v2),
    E("cuMemcpyDtoH", 3020, cuMemcpyDtoH_v2),
    E("cuMemcpyDtoD", 3020, cuMemcpyDtoD_v2),
    E("cuMemsetD8", 3020, cuMemsetD8_v2),
    E("cuMemsetD32", 3020, cuMemsetD32_v2),
    E("cuMemGetAllocationGranularity", 10020, cuMemGetAllocationGranularity),
    E("cuMemCreate", 10020, cuMemCreate),
    E("cuMemRelease", 10020, cuMemRelease),
    E("cuMemAddressReserve", 10020, cuMemAddressReserve),
    E("cuMemAddressFree", 10020, cuMemAddressFree),
    E("cuMemMap", 10020, cuMemMap),
    E("cuMemUnmap", 10020, cuMemUnmap),
    E("cuMemSetAccess", 10020, cuMemSetAccess),
    E("cuArrayCreate", 3020, cuArrayCreate_v2),
    E("cuArray3DCreate", 3020, cuArray3DCreate_v2),
    E("cuArrayDestroy", 2000, cuArrayDestroy),
    E("cuMipmappedArrayCreate", 5000, cuMipmappedArrayCreate),
    E("cuMipmappedArrayDestroy", 5000, cuMipmappedArrayDestroy),
    E("cuDeviceGetDefaultMemPool", 11020, cuDeviceGetDefaultMemPool),
    E("cuDeviceGetMemPool", 11020, cuDeviceGetMemPool),
    E("cuDeviceSetMemPool", 11020, cuDeviceSetMemPool),
    E("cuMemPoolCreate", 11020, cuMemPoolCreate),
    E("cuMemPoolDestroy", 11020, cuMemPoolDestroy),
    E("cuMemPoolGetAttribute", 11020, cuMemPoolGetAttribute),
    E("cuMemPoolSetAttribute", 11020, cuMemPoolSetAttribute),
    E("cuMemPoolTrimTo", 11020, cuMemPoolTrimTo),
    E("cuMemAllocFromPoolAsync", 11020, cuMemAllocFromPoolAsync),
    E("cuMemAllocHost", 3020, cuMemAllocHost_v2),
    E("cuMemHostAlloc", 2020, cuMemHostAlloc),
    E("cuMemFreeHost", 2000, cuMemFreeHost),
    E("cuMemHostRegister", 6050, cuMemHostRegister_v2),
    E("cuMemHostUnregister", 4000, cuMemHostUnregister),
    E("cuMemHostGetDevicePointer", 3020, cuMemHostGetDevicePointer_v2),
    E("cuMemHostGetFlags", 2030, cuMemHostGetFlags),
    E("cuStreamCreate", 2000, cuStreamCreate),
    E("cuStreamDestroy", 4000, cuStreamDestroy_v2),
    E("cuStreamGetCtx", 9020, cuStreamGetCtx),
    E("cuStreamSynchronize", 2000, cuStreamSynchronize),
    E("cuStreamQuery", 2000, cuStreamQuery),
    E("cuEventCreate", 2000, cuEventCreate),
    E("cuEventRecord", 2000, cuEventRecord),
    E("cuEventQuery", 2000, cuEventQuery),
    E("cuEventSynchronize", 2000, cuEventSynchronize),
    E("cuEventElapsedTime", 12080, cuEventElapsedTime_v2),
    E("cuEventElapsedTime", 2000, cuEventElapsedTime),
    E("cuEventDestroy", 4000, cuEventDestroy_v2),
    E("cuModuleLoadData", 2000, cuModuleLoadData),
    E("cuModuleUnload", 2000, cuModuleUnload),
    E("cuModuleGetFunction", 2000, cuModuleGetFunction),
    E("cuLaunchKernel", 4000, cuLaunchKernel),
    E("cuCtxGetApiVersion", 3020, cuCtxGetApiVersion),
    E("cuCtxGetFlags", 7000, cuCtxGetFlags),
    E("cuCtxGetLimit", 3010, cuCtxGetLimit),
    E("cuCtxSetLimit", 3010, cuCtxSetLimit),
    E("cuCtxGetCacheConfig", 3020, cuCtxGetCacheConfig),
    E("cuCtxSetCacheConfig", 3020, cuCtxSetCacheConfig),
    E("cuCtxGetStreamPriorityRange", 5050, cuCtxGetStreamPriorityRange),
    E("cuCtxEnablePeerAccess", 4000, cuCtxEnablePeerAccess),
    E("cuDeviceCanAccessPeer", 4000, cuDeviceCanAccessPeer),
    E("cuDeviceGetByPCIBusId", 4010, cuDeviceGetByPCIBusId),
    E("cuDevicePrimaryCtxGetState", 7000, cuDevicePrimaryCtxGetState),
    E("cuDevicePrimaryCtxSetFlags", 11000, cuDevicePrimaryCtxSetFlags_v2),
    E("cuMemcpy", 4000, cuMemcpy),
    E("cuMemcpyAsync", 4000, cuMemcpyAsync),
    E("cuMemcpyPeer", 4000, cuMemcpyPeer),
    E("cuMemcpyPeerAsync", 4000, cuMemcpyPeerAsync),
    E("cuMemcpyHtoDAsync", 3020, cuMemcpyHtoDAsync_v2),
    E("cuMemcpyDtoHAsync", 3020, cuMemcpyDtoHAsync_v2),
    E("cuMemcpyDtoDAsync", 3020, cuMemcpyDtoDAsync_v2),
    E("cuMemsetD16", 3020, cuMemsetD16_v2),
    E("cuMemsetD8Async", 3020, cuMemsetD8Async),
    E("cuMemsetD16Async", 3020, cuMemsetD16Async),
    E("cuMemsetD32Async", 3020, cuMemsetD32Async),
    E("cuMemGetAddressRange", 3020, cuMemGetAddressRange_v2),
    E("cuPointerGetAttribute", 4000, cuPointerGetAttribute),
    E("cuFuncGetAttribute", 2020, cuFuncGetAttribute),
    E("cuFuncSetAttribute", 9000, cuFuncSetAttribute),
    E("cuFuncSetCacheConfig", 3000, cuFuncSetCacheConfig),
    E("cuModuleLoad", 2000, cuModuleLoad),
    E("cuModuleLoadDataEx", 2010, cuModuleLoadDataEx),
    E("cuModuleLoadFatBinary", 2000, cuModuleLoadFatBinary),
    E("cuLaunchCooperativeKernel", 9000, cuLaunchCooperativeKernel),
    E("cuGetExportTable", 3000, cuGetExportTable),
    E("cuDevicePrimaryCtxReset", 7000, cuDevicePrimaryCtxReset),
    E("cuStreamCreateWithPriority", 5050, cuStreamCreateWithPriority),
    E("cuStreamGetPriority", 5050, cuStreamGetPriority),
    E("cuStreamGetFlags", 5050, cuStreamGetFlags),
    E("cuStreamGetDevice", 12080, cuStreamGetDevice),
    E("cuStreamGetId", 12000, cuStreamGetId),
    E("cuStreamWaitEvent", 3020, cuStreamWaitEvent),
    E("cuStreamAddCallback", 5000, cuStreamAddCallback),
    E("cuLaunchHostFunc", 10000, cuLaunchHostFunc),
    E("cuEventRecordWithFlags", 11010, cuEventRecordWithFlags),
    E("cuCtxDisablePeerAccess", 4000, cuCtxDisablePeerAccess),
    E("cuProfilerStart", 4000, cuProfilerStart),
    E("cuProfilerStop", 4000, cuProfilerStop),
    E("cuArrayGetDescriptor", 3020, cuArrayGetDescriptor_v2),
    E("cuArray3DGetDescriptor", 3020, cuArray3DGetDescriptor_v2),
    E("cuOccupancyMaxActiveBlocksPerMultiprocessor", 6050, cuOccupancyMaxActiveBlocksPerMultiprocessor),
    E("cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags", 7000, cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags),
    E("cuFuncGetName", 12030, cuFuncGetName),
    E("cuModuleGetLoadingMode", 11070, cuModuleGetLoadingMode),
    E("cuMemsetD2D8", 3020, cuMemsetD2D8_v2),
    E("cuMemsetD2D16", 3020, cuMemsetD2D16_v2),
    E("cuMemsetD2D32", 3020, cuMemsetD2D32_v2),
    E("cuMemsetD2D8Async", 3020, cuMemsetD2D8Async),
    E("cuMemsetD2D16Async", 3020, cuMemsetD2D16Async),
    E("cuMemsetD2D32Async", 3020, cuMemsetD2D32Async),
    E("cuPointerGetAttributes", 7000, cuPointerGetAttributes),
    E("cuDeviceGetP2PAttribute", 8000, cuDeviceGetP2PAttribute),
    E("cuCtxGetSharedMemConfig", 4020, cuCtxGetSharedMemConfig),
    E("cuCtxSetSharedMemConfig", 4020, cuCtxSetSharedMemConfig),
    E("cuFuncSetSharedMemConfig", 4020, cuFuncSetSharedMemConfig),
    E("cuModuleGetGlobal", 3020, cuModuleGetGlobal_v2),
    E("cuMemAdvise", 12020, cuMemAdvise_v2),
    E("cuMemAdvise", 8000, cuMemAdvise),
    E("cuMemPrefetchAsync", 12020, cuMemPrefetchAsync_v2),
    E("cuMemPrefetchAsync", 8000, cuMemPrefetchAsync),
};
#undef E

/* HAMI_EMU_CUDA_TRACE=<file>: append one line per cuGetProcAddress query and per export-table request,
 * so that what a client (libcudart) wants from a driver can be read afterwards */
static FILE *trace_file(void) {
    static FILE *f;
    static int opened;
    static pthread_mutex_t lk = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&lk);
    if (!opened) {
        opened = 1;
        const char *path = getenv("HAMI_EMU_CUDA_TRACE");
        if (path && *path) f = fopen(path, "a");
        if (f) setvbuf(f, NULL, _IOLBF, 0);
    }
    pthread_mutex_unlock(&lk);
    return f;
}

/* The export tables are private interfaces between NVIDIA's runtime and driver, identified only by
 * UUIDs; no public document says what they contain, so the emulation records the request and refuses. */
API CUresult cuGetExportTable(const void **ppExportTable, const CUuuid *pExportTableId) {
    if (!ppExportTable || !pExportTableId) return CUDA_ERROR_INVALID_VALUE;
    FILE *f = trace_file();
    if (f) {
        fprintf(f, "export-table ");
        for (int i = 0; i < 16; i++) fprintf(f, "%02x", (unsigned char)pExportTableId->bytes[i]);
        fprintf(f, " -> %d\n", CUDA_ERROR_NOT_SUPPORTED);
    }
    *ppExportTable = NULL;
    return CUDA_ERROR_NOT_SUPPORTED;
}

API CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags,
                                 CUdriverProcAddressQueryResult *symbolStatus) {
    if (!symbol || !pfn || flags > (CU_GET_PROC_ADDRESS_LEGACY_STREAM | CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM))
        return CUDA_ERROR_INVALID_VALUE;
    /* per-thread default stream variants behave like the legacy ones here: streams are emulated */
    const proc_entry_t *best = NULL;
    int known = 0;
    for (size_t i = 0; i < sizeof(g_procs) / sizeof(g_procs[0]); i++) {
        if (strcmp(g_procs[i].name, symbol)) continue;
        known = 1;
        if (g_procs[i].since <= cudaVersion && (!best || g_procs[i].since > best->since)) best = &g_procs[i];
    }
    void *stub = NULL;
    if (!best) stub = hami_emu_cuda_unsupported(symbol); /* known to the driver API, not to the emulated model */
    *pfn = best ? best->fn : stub;
    FILE *tf = trace_file();
    if (tf) fprintf(tf, "proc %s %d %llu -> %s\n", symbol, cudaVersion, (unsigned long long)flags,
                    best ? "found" : stub ? "unsupported-stub" : "missing");
    if (stub) {
        if (symbolStatus) *symbolStatus = CU_GET_PROC_ADDRESS_SUCCESS;
        return CUDA_SUCCESS;
    }
    if (symbolStatus)
        *symbolStatus = best ? CU_GET_PROC_ADDRESS_SUCCESS
                             : (known ? CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT : CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND);
    return best ? CUDA_SUCCESS : CUDA_ERROR_NOT_FOUND;
}

API CUresult cuGetProcAddress(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags) {
    return cuGetProcAddress_v2(symbol, pfn, cudaVersion, flags, NULL);
}

/* Give this process' memory back to the card at exit; killed processes are swept by pid instead. */
__attribute__((destructor)) static void hami_emu_cuda_fini(void) {
    if (g_init_result != CUDA_SUCCESS || !g_node.shm) return;
    hami_emu_lock(g_node.shm);
    for (int i = 0; i < g_node.gpu_count; i++) {
        hami_emu_gpu_t *gpu = sgpu(i);
        for (int j = 0; j < HAMI_EMU_MAX_PROCS; j++) {
            if (gpu->procs[j].pid != g_pid) continue;
            gpu->used_bytes = gpu->used_bytes >= gpu->procs[j].used_bytes ? gpu->used_bytes - gpu->procs[j].used_bytes : 0;
            memset(&gpu->procs[j], 0, sizeof(gpu->procs[j]));
        }
    }
    hami_emu_unlock(g_node.shm);
}
