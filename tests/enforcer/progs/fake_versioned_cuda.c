/* A library that exports cuMemAlloc_v2 & co under a symbol version (CUDA_TEST) and grants anything:
 * hole_resolve.c looks them up with dlvsym, which must still hand out the shim's wrappers. */
typedef unsigned long long CUdeviceptr;
int cuMemAlloc_v2(CUdeviceptr *p, unsigned long n) {
    (void)n;
    *p = 0x1000;
    return 0;
}
int cuMemFree_v2(CUdeviceptr p) {
    (void)p;
    return 0;
}
int cuMemGetInfo_v2(unsigned long *f, unsigned long *t) {
    *f = *t = 80ULL << 30;
    return 0;
}
