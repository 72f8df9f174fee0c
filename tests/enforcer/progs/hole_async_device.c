/* Hole 2: stream-ordered allocations are charged to the device of the stream's context (and of the
 * pool), not to the current device. Limits: device 0 64 MiB, device 1 8 MiB; device 0 is current. */
#include "hole_common.h"

int main(void) {
    CUcontext c0 = setup(0), c1 = NULL;
    CUstream s1 = NULL, s0 = NULL;
    EXPECT_RC(cuDevicePrimaryCtxRetain(&c1, 1), OK);
    EXPECT_RC(cuCtxSetCurrent(c1), OK);
    EXPECT_RC(cuStreamCreate(&s1, 0), OK);
    EXPECT_RC(cuCtxSetCurrent(c0), OK);
    EXPECT_RC(cuStreamCreate(&s0, 0), OK);

    CUdeviceptr p = 0, q = 0;
    /* 16 MiB on device 1's stream: over device 1's 8 MiB although device 0 (current) has room */
    EXPECT_RC(cuMemAllocAsync(&p, 16 * MIB, s1), OOM);
    EXPECT_RC(cuMemAllocAsync(&p, 6 * MIB, s1), OK);
    CHECK(used_now() == 0, "device 0 shows %zu used after an allocation on device 1's stream", used_now());
    EXPECT_RC(cuMemAllocAsync(&q, 4 * MIB, s1), OOM); /* 6 + 4 > 8 on device 1 */
    EXPECT_RC(cuMemAllocAsync(&q, 32 * MIB, s0), OK); /* device 0's own stream still has its 64 MiB */
    EXPECT_RC(cuMemFreeAsync(q, s0), OK);
    EXPECT_RC(cuCtxSetCurrent(c1), OK);
    CHECK(used_now() == 6 * MIB, "device 1 shows %zu used, expected 6 MiB", used_now());
    EXPECT_RC(cuCtxSetCurrent(c0), OK);
    EXPECT_RC(cuMemFreeAsync(p, s1), OK);

    /* a pool on device 1 used from device 0's stream: charged to device 1 */
    PoolProps props;
    memset(&props, 0, sizeof(props));
    props.allocType = 1;
    props.location.type = 1;
    props.location.id = 1;
    CUmemoryPool pool1 = NULL, def1 = NULL;
    EXPECT_RC(cuMemPoolCreate(&pool1, &props), OK);
    EXPECT_RC(cuMemAllocFromPoolAsync(&p, 16 * MIB, pool1, s0), OOM);
    EXPECT_RC(cuMemAllocFromPoolAsync(&p, 8 * MIB, pool1, s0), OK);
    EXPECT_RC(cuMemAllocFromPoolAsync(&q, 1 * MIB, pool1, NULL), OOM);
    EXPECT_RC(cuMemFreeAsync(p, s0), OK);
    EXPECT_RC(cuDeviceGetMemPool(&def1, 1), OK);
    EXPECT_RC(cuMemAllocFromPoolAsync(&p, 16 * MIB, def1, NULL), OOM);
    EXPECT_RC(cuMemAllocFromPoolAsync(&p, 4 * MIB, def1, NULL), OK);
    CHECK(used_now() == 0, "device 0 shows %zu used after pool allocations on device 1", used_now());
    return finish("async_device");
}
