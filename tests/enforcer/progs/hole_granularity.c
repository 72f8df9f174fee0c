/* Hole 4: allocations are charged in the driver's allocation granules, so 60,000 one-byte allocations
 * under a 16 MiB limit stop when 16 MiB of the device is really in use (32768 granules of 512 bytes). */
#include "hole_common.h"

static CUdeviceptr ptrs[60000];

int main(void) {
    setup(0);
    int n = 0, rc = OK;
    while (n < 60000 && (rc = cuMemAlloc(&ptrs[n], 1)) == OK) n++;
    printf("allocated %d\n", n);
    CHECK(rc == OOM, "the allocation loop ended with %d, expected out of memory", rc);
    CHECK((unsigned long long)n * 512 <= 16 * MIB, "%d allocations of 512-byte granules exceed 16 MiB", n);
    CHECK(n == (int)(16 * MIB / 512), "%d allocations, expected exactly %llu", n, 16 * MIB / 512);
    size_t f = 1, t = 0;
    cuMemGetInfo(&f, &t);
    CHECK(f == 0 && t == 16 * MIB, "free %zu total %zu at the limit", f, t);
    for (int i = 0; i < n; i++) cuMemFree(ptrs[i]);
    CHECK(used_now() == 0, "used %zu after freeing everything", used_now());
    /* a pitched allocation is charged at pitch x height, rounded to the granule */
    return finish("granularity");
}
