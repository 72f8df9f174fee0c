/* Hole 6: destroying a context (cuCtxDestroy, a primary context reset or released to zero) gives back
 * the charges of the allocations the driver frees with it. Limit: 16 MiB. */
#include "hole_common.h"

int main(void) {
    CUcontext prim = setup(0);
    CUdeviceptr p = 0;
    for (int round = 0; round < 4; round++) {
        CUcontext c = NULL;
        CUarray a = NULL;
        ArrayDesc d = {1024, 1024, 0x01, 1}; /* 1 MiB of uint8 */
        EXPECT_RC(cuCtxCreate(&c, 0, 0), OK);
        EXPECT_RC(cuMemAlloc(&p, 12 * MIB), OK);
        EXPECT_RC(cuArrayCreate(&a, &d), OK);
        EXPECT_RC(cuCtxDestroy(c), OK);
        EXPECT_RC(cuCtxSetCurrent(prim), OK);
        CHECK(used_now() == 0, "round %d: %zu still charged after cuCtxDestroy", round, used_now());
    }
    for (int round = 0; round < 4; round++) {
        CUcontext c = NULL;
        EXPECT_RC(cuDevicePrimaryCtxRetain(&c, 0), OK);
        EXPECT_RC(cuCtxSetCurrent(c), OK);
        EXPECT_RC(cuMemAlloc(&p, 12 * MIB), OK);
        EXPECT_RC(cuDevicePrimaryCtxReset(0), OK);
        EXPECT_RC(cuDevicePrimaryCtxRetain(&c, 0), OK);
        EXPECT_RC(cuCtxSetCurrent(c), OK);
        CHECK(used_now() == 0, "round %d: %zu still charged after a primary context reset", round, used_now());
        EXPECT_RC(cuDevicePrimaryCtxRelease(0), OK);
    }
    /* two references: the first release keeps the context (and its memory), the second destroys it */
    CUcontext c = NULL;
    EXPECT_RC(cuDevicePrimaryCtxRetain(&c, 0), OK);
    EXPECT_RC(cuDevicePrimaryCtxRetain(&c, 0), OK);
    EXPECT_RC(cuCtxSetCurrent(c), OK);
    EXPECT_RC(cuMemAlloc(&p, 12 * MIB), OK);
    EXPECT_RC(cuDevicePrimaryCtxRelease(0), OK);
    EXPECT_RC(cuMemAlloc(&p, 12 * MIB), OOM); /* still alive, still holding 12 MiB */
    EXPECT_RC(cuDevicePrimaryCtxRelease(0), OK);
    EXPECT_RC(cuDevicePrimaryCtxRetain(&c, 0), OK);
    EXPECT_RC(cuCtxSetCurrent(c), OK);
    CHECK(used_now() == 0, "%zu still charged after the primary context was released to zero", used_now());
    EXPECT_RC(cuMemAlloc(&p, 16 * MIB), OK);
    return finish("ctx_teardown");
}
