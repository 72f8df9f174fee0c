/* Hole 8: CUDA arrays and mipmapped arrays are device memory counted against the limit. Limit: 16 MiB. */
#include "hole_common.h"

int main(void) {
    setup(0);
    CUarray a = NULL, b = NULL, m = NULL;
    ArrayDesc d2 = {2048, 2048, 0x01, 1};         /* 4 MiB of uint8 */
    Array3DDesc d3 = {256, 256, 64, 0x20, 1, 0}; /* 16 MiB of float */
    Array3DDesc big = {256, 256, 48, 0x20, 1, 0}; /* 12 MiB */
    EXPECT_RC(cuArrayCreate(&a, &d2), OK);
    CHECK(used_now() == 4 * MIB, "used %zu after a 4 MiB array", used_now());
    EXPECT_RC(cuArray3DCreate(&b, &d3), OOM);
    EXPECT_RC(cuArray3DCreate(&b, &big), OK);
    CHECK(used_now() == 16 * MIB, "used %zu after 4 + 12 MiB of arrays", used_now());
    CUdeviceptr p = 0;
    EXPECT_RC(cuMemAlloc(&p, 1), OOM);
    EXPECT_RC(cuArrayDestroy(b), OK);
    CHECK(used_now() == 4 * MIB, "used %zu after destroying the 3D array", used_now());
    /* 2048x2048 float mip chain: 16 MiB + 4 + 1 + ... > 12 MiB free */
    Array3DDesc mip = {2048, 2048, 0, 0x20, 1, 0};
    EXPECT_RC(cuMipmappedArrayCreate(&m, &mip, 4), OOM);
    Array3DDesc small = {1024, 1024, 0, 0x20, 1, 0}; /* 4 + 1 + 0.25 MiB */
    EXPECT_RC(cuMipmappedArrayCreate(&m, &small, 3), OK);
    CHECK(used_now() == 4 * MIB + 5 * MIB + MIB / 4, "used %zu after the mipmapped array", used_now());
    EXPECT_RC(cuMipmappedArrayDestroy(m), OK);
    EXPECT_RC(cuArrayDestroy(a), OK);
    CHECK(used_now() == 0, "used %zu after destroying every array", used_now());
    return finish("arrays");
}
