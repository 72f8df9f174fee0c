/* Hole 1: a VMM handle's physical memory stays charged while it is mapped, even after cuMemRelease;
 * the charge goes with the last unmap (or the release of an unmapped handle). Limit: 64 MiB. */
#include "hole_common.h"

int main(void) {
    setup(0);
    MemProp prop = {1, 0, {1, 0}, NULL, {0}};
    CUmemGenericAllocationHandle h = 0, h2 = 0;
    CUdeviceptr va = 0;
    EXPECT_RC(cuMemCreate(&h, 48 * MIB, &prop, 0), OK);
    EXPECT_RC(cuMemAddressReserve(&va, 48 * MIB, 0, 0, 0), OK);
    EXPECT_RC(cuMemMap(va, 48 * MIB, 0, h, 0), OK);
    EXPECT_RC(cuMemRelease(h), OK); /* still mapped: the 48 MiB stay in use */
    CHECK(used_now() == 48 * MIB, "used %zu after release while mapped, expected 48 MiB", used_now());
    EXPECT_RC(cuMemCreate(&h2, 32 * MIB, &prop, 0), OOM);
    /* a second mapping of another handle, then the last unmap of the first gives its memory back */
    EXPECT_RC(cuMemUnmap(va, 48 * MIB), OK);
    CHECK(used_now() == 0, "used %zu after the last unmap, expected 0", used_now());
    EXPECT_RC(cuMemCreate(&h2, 32 * MIB, &prop, 0), OK);
    /* mapped twice: one unmap is not the last */
    CUdeviceptr va2 = 0;
    EXPECT_RC(cuMemAddressReserve(&va2, 64 * MIB, 0, 0, 0), OK);
    EXPECT_RC(cuMemMap(va2, 32 * MIB, 0, h2, 0), OK);
    EXPECT_RC(cuMemMap(va2 + 32 * MIB, 32 * MIB, 0, h2, 0), OK);
    EXPECT_RC(cuMemRelease(h2), OK);
    EXPECT_RC(cuMemUnmap(va2, 32 * MIB), OK);
    CHECK(used_now() == 32 * MIB, "used %zu with one mapping left, expected 32 MiB", used_now());
    CUmemGenericAllocationHandle h3 = 0;
    EXPECT_RC(cuMemCreate(&h3, 48 * MIB, &prop, 0), OOM);
    /* freeing the reservation drops what is still mapped in it */
    EXPECT_RC(cuMemAddressFree(va2, 64 * MIB), OK);
    CHECK(used_now() == 0, "used %zu after freeing the reservation, expected 0", used_now());
    /* released before any mapping: given back at once */
    EXPECT_RC(cuMemCreate(&h3, 64 * MIB, &prop, 0), OK);
    EXPECT_RC(cuMemRelease(h3), OK);
    CHECK(used_now() == 0, "used %zu after releasing an unmapped handle", used_now());
    /* 16 GiB mapped under the limit is impossible: every create past 64 MiB is refused */
    int made = 0;
    for (int i = 0; i < 512; i++) {
        CUmemGenericAllocationHandle x = 0;
        CUdeviceptr v = 0;
        if (cuMemCreate(&x, 32 * MIB, &prop, 0) != OK) break;
        made++;
        if (cuMemAddressReserve(&v, 32 * MIB, 0, 0, 0) != OK || cuMemMap(v, 32 * MIB, 0, x, 0) != OK) break;
        cuMemRelease(x);
    }
    CHECK(made == 2, "%d handles of 32 MiB created (mapped, released) under a 64 MiB limit, expected 2", made);
    return finish("vmm");
}
