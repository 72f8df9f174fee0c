/* Prints sizeof/offsetof of the shared layout as JSON so Python can check its ctypes mirror. */
#include <stddef.h>
#include <stdio.h>

#include "emu_state.h"

#define FIELD(t, f) printf("%s\"%s\": [%zu, %zu]", first ? "" : ", ", #f, offsetof(t, f), sizeof(((t *)0)->f)), first = 0

int main(void) {
    int first;
    printf("{\"constants\": {\"magic\": %llu, \"layout_version\": %u, \"max_gpus\": %d, \"max_procs\": %d, "
           "\"max_xids\": %d, \"max_intervals\": %d},\n",
           (unsigned long long)HAMI_EMU_MAGIC, HAMI_EMU_LAYOUT_VERSION, HAMI_EMU_MAX_GPUS, HAMI_EMU_MAX_PROCS,
           HAMI_EMU_MAX_XIDS, HAMI_EMU_MAX_INTERVALS);
    printf("\"hami_emu_proc_t\": {\"size\": %zu, \"fields\": {", sizeof(hami_emu_proc_t));
    first = 1;
    FIELD(hami_emu_proc_t, pid);
    FIELD(hami_emu_proc_t, contexts);
    FIELD(hami_emu_proc_t, used_bytes);
    printf("}},\n\"hami_emu_xid_t\": {\"size\": %zu, \"fields\": {", sizeof(hami_emu_xid_t));
    first = 1;
    FIELD(hami_emu_xid_t, seq);
    FIELD(hami_emu_xid_t, xid);
    FIELD(hami_emu_xid_t, time_ns);
    printf("}},\n\"hami_emu_interval_t\": {\"size\": %zu, \"fields\": {", sizeof(hami_emu_interval_t));
    first = 1;
    FIELD(hami_emu_interval_t, start_ns);
    FIELD(hami_emu_interval_t, end_ns);
    FIELD(hami_emu_interval_t, pid);
    FIELD(hami_emu_interval_t, reserved);
    printf("}},\n\"hami_emu_gpu_t\": {\"size\": %zu, \"fields\": {", sizeof(hami_emu_gpu_t));
    first = 1;
    FIELD(hami_emu_gpu_t, used_bytes);
    FIELD(hami_emu_gpu_t, health);
    FIELD(hami_emu_gpu_t, mem_query_unsupported);
    FIELD(hami_emu_gpu_t, nvml_fail_count);
    FIELD(hami_emu_gpu_t, nvml_fail_code);
    FIELD(hami_emu_gpu_t, cuda_fail_count);
    FIELD(hami_emu_gpu_t, cuda_fail_code);
    FIELD(hami_emu_gpu_t, xid_seq);
    FIELD(hami_emu_gpu_t, kernel_launches);
    FIELD(hami_emu_gpu_t, interval_next);
    FIELD(hami_emu_gpu_t, reserved0);
    FIELD(hami_emu_gpu_t, xids);
    FIELD(hami_emu_gpu_t, busy);
    FIELD(hami_emu_gpu_t, procs);
    printf("}},\n\"hami_emu_shared_t\": {\"size\": %zu, \"fields\": {", sizeof(hami_emu_shared_t));
    first = 1;
    FIELD(hami_emu_shared_t, magic);
    FIELD(hami_emu_shared_t, layout_version);
    FIELD(hami_emu_shared_t, gpu_count);
    FIELD(hami_emu_shared_t, header_size);
    FIELD(hami_emu_shared_t, gpu_struct_size);
    FIELD(hami_emu_shared_t, generation);
    FIELD(hami_emu_shared_t, lock);
    FIELD(hami_emu_shared_t, gpus);
    printf("}}}\n");
    return 0;
}
