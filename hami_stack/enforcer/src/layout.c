/* Prints the shared region layout (sizeof/offsetof) as JSON so a test can compare the ctypes mirror. */
#include <stddef.h>
#include <stdio.h>

#include "vgpu_region.h"

#define F(t, f) printf("%s\"%s.%s\": [%zu, %zu]", first ? "" : ", ", #t, #f, offsetof(t, f), sizeof(((t *)0)->f)), first = 0

int main(void) {
    int first = 1;
    printf("{\"vgpu_region_t\": %zu, \"vgpu_slot_t\": %zu, \"magic\": %llu, \"major\": %u, \"fields\": {",
           sizeof(vgpu_region_t), sizeof(vgpu_slot_t), (unsigned long long)VGPU_REGION_MAGIC, VGPU_REGION_MAJOR);
    F(vgpu_slot_t, pid); F(vgpu_slot_t, hostpid); F(vgpu_slot_t, start_time); F(vgpu_slot_t, status);
    F(vgpu_slot_t, priority); F(vgpu_slot_t, last_kernel_unix_s); F(vgpu_slot_t, used); F(vgpu_slot_t, sm_util);
    F(vgpu_slot_t, launches);
    F(vgpu_region_t, magic); F(vgpu_region_t, major); F(vgpu_region_t, minor); F(vgpu_region_t, header_size);
    F(vgpu_region_t, slot_size); F(vgpu_region_t, max_devices); F(vgpu_region_t, max_slots); F(vgpu_region_t, lock);
    F(vgpu_region_t, generation); F(vgpu_region_t, priority); F(vgpu_region_t, policy);
    F(vgpu_region_t, utilization_switch); F(vgpu_region_t, device_count); F(vgpu_region_t, limit);
    F(vgpu_region_t, sm_limit); F(vgpu_region_t, used); F(vgpu_region_t, uuid); F(vgpu_region_t, physical);
    F(vgpu_region_t, slots);
    printf("}}\n");
    return 0;
}
