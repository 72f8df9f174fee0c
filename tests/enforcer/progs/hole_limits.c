/* Holes 7 and 9: what a process sees and may allocate under a given environment (the limit grammar,
 * the shared-cache location). Prints one line; pytest compares it per environment. */
#include "hole_common.h"

typedef struct {
    unsigned long long total, free, used;
} NvmlMem;

int main(void) {
    setup(0);
    size_t f = 0, t = 0, tm = 0;
    int info_rc = cuMemGetInfo(&f, &t);
    int tm_rc = cuDeviceTotalMem(&tm, 0);
    CUdeviceptr p = 0;
    int alloc_rc = cuMemAlloc(&p, MIB);
    void *nv = dlopen("libnvidia-ml.so.1", RTLD_NOW);
    NvmlMem m = {0, 0, 0};
    int nv_rc = -1;
    if (nv) {
        int (*init)(void) = (int (*)(void))dlsym(nv, "nvmlInit_v2");
        int (*handle)(unsigned, void **) = (int (*)(unsigned, void **))dlsym(nv, "nvmlDeviceGetHandleByIndex_v2");
        int (*info)(void *, NvmlMem *) = (int (*)(void *, NvmlMem *))dlsym(nv, "nvmlDeviceGetMemoryInfo");
        void *h = NULL;
        if (init && handle && info && init() == 0 && handle(0, &h) == 0) nv_rc = info(h, &m);
    }
    printf("limits info_rc=%d total=%zu free=%zu totalmem=%zu alloc=%d nvml_rc=%d nvml_total=%llu nvml_free=%llu\n",
           info_rc, t, f, tm, alloc_rc, nv_rc, m.total, m.free);
    (void)tm_rc;
    return 0;
}
