/* Holes 2/8 (pools): a memory pool is charged the device memory it holds in reserve, not only what
 * its live allocations use: memory freed back into a pool (release threshold) stays on the card.
 * Limit: 16 MiB. */
#include "hole_common.h"

enum { RELEASE_THRESHOLD = 4 };

int main(void) {
    setup(0);
    CUmemoryPool pool = NULL, mine = NULL;
    CUdeviceptr p = 0, q = 0;
    unsigned long long keep_all = ~0ULL, none = 0;
    EXPECT_RC(cuDeviceGetMemPool(&pool, 0), OK);
    EXPECT_RC(cuMemPoolSetAttribute(pool, RELEASE_THRESHOLD, &keep_all), OK);
    EXPECT_RC(cuMemAllocAsync(&p, 12 * MIB, NULL), OK);
    EXPECT_RC(cuMemFreeAsync(p, NULL), OK); /* back into the pool, still reserved on the card */
    CHECK(used_now() == 12 * MIB, "used %zu with 12 MiB idle in the pool's reserve", used_now());
    EXPECT_RC(cuMemAlloc(&q, 8 * MIB), OOM);
    EXPECT_RC(cuMemAllocAsync(&p, 12 * MIB, NULL), OK); /* reuses the reserve: no growth */
    CHECK(used_now() == 12 * MIB, "used %zu after reusing the reserve", used_now());
    EXPECT_RC(cuMemFreeAsync(p, NULL), OK);
    EXPECT_RC(cuMemPoolTrimTo(pool, 0), OK);
    CHECK(used_now() == 0, "used %zu after trimming the pool", used_now());
    EXPECT_RC(cuMemAlloc(&q, 16 * MIB), OK);
    EXPECT_RC(cuMemFree(q), OK);
    EXPECT_RC(cuMemPoolSetAttribute(pool, RELEASE_THRESHOLD, &none), OK);

    /* a pool of one's own: its reserve counts, and destroying it gives the reserve back */
    PoolProps props;
    memset(&props, 0, sizeof(props));
    props.allocType = 1;
    props.location.type = 1;
    props.location.id = 0;
    EXPECT_RC(cuMemPoolCreate(&mine, &props), OK);
    EXPECT_RC(cuMemPoolSetAttribute(mine, RELEASE_THRESHOLD, &keep_all), OK);
    EXPECT_RC(cuMemAllocFromPoolAsync(&p, 10 * MIB, mine, NULL), OK);
    EXPECT_RC(cuMemFreeAsync(p, NULL), OK);
    EXPECT_RC(cuMemAlloc(&q, 8 * MIB), OOM);
    EXPECT_RC(cuMemPoolDestroy(mine), OK);
    CHECK(used_now() == 0, "used %zu after destroying the pool", used_now());
    EXPECT_RC(cuMemAlloc(&q, 16 * MIB), OK);
    return finish("pool_reserve");
}
