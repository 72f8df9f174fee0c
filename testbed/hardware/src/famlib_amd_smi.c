/*
 * Emulated AMD SMI for AMD Instinct GPUs (libamd_smi.so), answered from the emulated hardware's
 * devices.conf, the GPUs ROCR_VISIBLE_DEVICES leaves visible (all of them for the plugin).
 *
 * One socket per GPU, one processor per socket (a whole, unpartitioned card). Handles are opaque
 * pointers into this library; a handle it did not hand out -> AMDSMI_STATUS_INVAL. A call before
 * amdsmi_init -> AMDSMI_STATUS_NOT_INIT; amdsmi_init with no driver state (no devices.conf) ->
 * AMDSMI_STATUS_DRIVER_NOT_LOADED; a uuid_length below AMDSMI_GPU_UUID_SIZE or a handle array shorter
 * than the count -> AMDSMI_STATUS_INSUFFICIENT_SIZE (unconfirmed: amdsmi.h only says the length must be at
 * least AMDSMI_GPU_UUID_SIZE, and that a short handle array gets what fits with the count of all); a BDF no
 * GPU has -> AMDSMI_STATUS_NOT_FOUND (unconfirmed).
 *
 * market_name is the model as the testbed names it ("MI300X"; a real card says "AMD Instinct MI300X").
 * A GPU whose health the testbed flipped off reports uncorrectable memory errors
 * (amdsmi_get_gpu_ecc_status on the UMC block): unconfirmed as the plugin's health source (HAMi's AMD
 * plugin asks the metrics exporter), the nearest per-GPU health fact AMD SMI has.
 */
#include "famlib_amd_smi.h"

#include <stdio.h>
#include <string.h>

#include "family_common.h"

#define EXPORT __attribute__((visibility("default")))
#define VENDOR "amd"
#define VISIBLE_ENV "ROCR_VISIBLE_DEVICES"
#define AMD_VENDOR_ID 0x1002u
#define MI300X_DEVICE_ID 0x74a1u

static int g_refs; /* amdsmi_init / amdsmi_shut_down are reference counted */
static char g_sockets[FAM_MAX_DEVICES];    /* socket handle i = &g_sockets[i] */
static char g_processors[FAM_MAX_DEVICES]; /* processor handle i = &g_processors[i] */

/* the visible GPUs now; a FAM_ERR_* code or the count */
static int load(fam_device_t *devs) {
    return fam_load(VENDOR, VISIBLE_ENV, devs, FAM_MAX_DEVICES);
}

static amdsmi_status_t load_status(int n) {
    return n == FAM_ERR_NO_DRIVER ? AMDSMI_STATUS_DRIVER_NOT_LOADED : AMDSMI_STATUS_UNEXPECTED_DATA;
}

/* the GPU behind a processor handle, re-read so health flips show */
static amdsmi_status_t processor(amdsmi_processor_handle h, fam_device_t *out) {
    if (g_refs <= 0)
        return AMDSMI_STATUS_NOT_INIT;
    char *p = h;
    if (!p || p < g_processors || p >= g_processors + FAM_MAX_DEVICES)
        return AMDSMI_STATUS_INVAL;
    fam_device_t devs[FAM_MAX_DEVICES];
    int n = load(devs);
    if (n < 0)
        return load_status(n);
    int i = (int)(p - g_processors);
    if (i >= n)
        return AMDSMI_STATUS_INVAL; /* a GPU that went away since the handle was taken */
    *out = devs[i];
    return AMDSMI_STATUS_SUCCESS;
}

static int parse_bdf(const char *text, amdsmi_bdf_t *bdf) {
    unsigned long long domain;
    unsigned bus, dev, fn;
    char extra;
    if (sscanf(text, "%llx:%x:%x.%x%c", &domain, &bus, &dev, &fn, &extra) != 4 || bus > 0xff || dev > 0x1f ||
        fn > 7)
        return -1;
    bdf->as_uint = 0;
    bdf->domain_number = domain;
    bdf->bus_number = bus;
    bdf->device_number = dev;
    bdf->function_number = fn;
    return 0;
}

EXPORT amdsmi_status_t amdsmi_init(uint64_t init_flags) {
    if (!(init_flags & AMDSMI_INIT_AMD_GPUS))
        return AMDSMI_STATUS_NOT_SUPPORTED; /* only GPUs are emulated */
    fam_device_t devs[FAM_MAX_DEVICES];
    int n = load(devs);
    if (n < 0)
        return load_status(n);
    g_refs++;
    return AMDSMI_STATUS_SUCCESS;
}

EXPORT amdsmi_status_t amdsmi_shut_down(void) {
    if (g_refs <= 0)
        return AMDSMI_STATUS_NOT_INIT;
    g_refs--;
    return AMDSMI_STATUS_SUCCESS;
}

/* the documented count protocol of both handle lists: NULL array -> the count; else write what fits */
static amdsmi_status_t handles(char *base, int n, uint32_t *count, void **out) {
    if (!count)
        return AMDSMI_STATUS_INVAL;
    if (!out) {
        *count = (uint32_t)n;
        return AMDSMI_STATUS_SUCCESS;
    }
    uint32_t room = *count;
    for (uint32_t i = 0; i < room && i < (uint32_t)n; i++)
        out[i] = base + i;
    *count = (uint32_t)n;
    return room < (uint32_t)n ? AMDSMI_STATUS_INSUFFICIENT_SIZE : AMDSMI_STATUS_SUCCESS;
}

EXPORT amdsmi_status_t amdsmi_get_socket_handles(uint32_t *socket_count, amdsmi_socket_handle *socket_handles) {
    if (g_refs <= 0)
        return AMDSMI_STATUS_NOT_INIT;
    fam_device_t devs[FAM_MAX_DEVICES];
    int n = load(devs);
    if (n < 0)
        return load_status(n);
    return handles(g_sockets, n, socket_count, socket_handles);
}

EXPORT amdsmi_status_t amdsmi_get_processor_handles(amdsmi_socket_handle socket_handle, uint32_t *processor_count,
                                                    amdsmi_processor_handle *processor_handles) {
    if (g_refs <= 0)
        return AMDSMI_STATUS_NOT_INIT;
    char *s = socket_handle;
    if (!s || s < g_sockets || s >= g_sockets + FAM_MAX_DEVICES)
        return AMDSMI_STATUS_INVAL;
    fam_device_t devs[FAM_MAX_DEVICES];
    int n = load(devs);
    if (n < 0)
        return load_status(n);
    int i = (int)(s - g_sockets);
    if (i >= n)
        return AMDSMI_STATUS_INVAL;
    return handles(g_processors + i, 1, processor_count, processor_handles);
}

EXPORT amdsmi_status_t amdsmi_get_processor_handle_from_bdf(amdsmi_bdf_t bdf,
                                                           amdsmi_processor_handle *processor_handle) {
    if (g_refs <= 0)
        return AMDSMI_STATUS_NOT_INIT;
    if (!processor_handle)
        return AMDSMI_STATUS_INVAL;
    fam_device_t devs[FAM_MAX_DEVICES];
    int n = load(devs);
    if (n < 0)
        return load_status(n);
    for (int i = 0; i < n; i++) {
        amdsmi_bdf_t b;
        if (parse_bdf(devs[i].bus_id, &b) == 0 && b.as_uint == bdf.as_uint) {
            *processor_handle = g_processors + i;
            return AMDSMI_STATUS_SUCCESS;
        }
    }
    return AMDSMI_STATUS_NOT_FOUND;
}

EXPORT amdsmi_status_t amdsmi_get_gpu_device_bdf(amdsmi_processor_handle processor_handle, amdsmi_bdf_t *bdf) {
    fam_device_t d;
    if (!bdf)
        return AMDSMI_STATUS_INVAL;
    amdsmi_status_t rc = processor(processor_handle, &d);
    if (rc != AMDSMI_STATUS_SUCCESS)
        return rc;
    return parse_bdf(d.bus_id, bdf) ? AMDSMI_STATUS_NOT_SUPPORTED : AMDSMI_STATUS_SUCCESS;
}

EXPORT amdsmi_status_t amdsmi_get_gpu_device_uuid(amdsmi_processor_handle processor_handle, unsigned int *uuid_length,
                                                  char *uuid) {
    fam_device_t d;
    if (!uuid_length || !uuid)
        return AMDSMI_STATUS_INVAL;
    amdsmi_status_t rc = processor(processor_handle, &d);
    if (rc != AMDSMI_STATUS_SUCCESS)
        return rc;
    if (*uuid_length < AMDSMI_GPU_UUID_SIZE || fam_copy(uuid, *uuid_length, d.uuid))
        return AMDSMI_STATUS_INSUFFICIENT_SIZE;
    *uuid_length = (unsigned int)strlen(uuid);
    return AMDSMI_STATUS_SUCCESS;
}

EXPORT amdsmi_status_t amdsmi_get_gpu_asic_info(amdsmi_processor_handle processor_handle, amdsmi_asic_info_t *info) {
    fam_device_t d;
    if (!info)
        return AMDSMI_STATUS_INVAL;
    amdsmi_status_t rc = processor(processor_handle, &d);
    if (rc != AMDSMI_STATUS_SUCCESS)
        return rc;
    memset(info, 0, sizeof *info);
    if (fam_copy(info->market_name, sizeof info->market_name, d.model))
        return AMDSMI_STATUS_UNEXPECTED_DATA;
    info->vendor_id = AMD_VENDOR_ID;
    fam_copy(info->vendor_name, sizeof info->vendor_name, "Advanced Micro Devices Inc. [AMD/ATI]");
    info->subvendor_id = AMD_VENDOR_ID;
    info->device_id = strcmp(d.model, "MI300X") == 0 ? MI300X_DEVICE_ID : 0;
    /* the serial: the uuid's characters after its last '-', as a card's ASIC serial is a hex string */
    const char *dash = strrchr(d.uuid, '-');
    fam_copy(info->asic_serial, sizeof info->asic_serial, dash ? dash + 1 : d.uuid);
    info->oam_id = 0xFFFFu;
    info->num_of_compute_units = d.compute_units;
    info->target_graphics_version = ~0ULL;
    return AMDSMI_STATUS_SUCCESS;
}

EXPORT amdsmi_status_t amdsmi_get_gpu_memory_total(amdsmi_processor_handle processor_handle,
                                                   amdsmi_memory_type_t mem_type, uint64_t *total) {
    fam_device_t d;
    if (!total)
        return AMDSMI_STATUS_INVAL;
    amdsmi_status_t rc = processor(processor_handle, &d);
    if (rc != AMDSMI_STATUS_SUCCESS)
        return rc;
    if (mem_type != AMDSMI_MEM_TYPE_VRAM && mem_type != AMDSMI_MEM_TYPE_VIS_VRAM)
        return AMDSMI_STATUS_NOT_SUPPORTED;
    *total = d.memory_mib * 1024ULL * 1024ULL;
    return AMDSMI_STATUS_SUCCESS;
}

EXPORT amdsmi_status_t amdsmi_topo_get_numa_node_number(amdsmi_processor_handle processor_handle,
                                                        uint32_t *numa_node) {
    fam_device_t d;
    if (!numa_node)
        return AMDSMI_STATUS_INVAL;
    amdsmi_status_t rc = processor(processor_handle, &d);
    if (rc != AMDSMI_STATUS_SUCCESS)
        return rc;
    *numa_node = (uint32_t)d.numa;
    return AMDSMI_STATUS_SUCCESS;
}

EXPORT amdsmi_status_t amdsmi_get_gpu_ecc_status(amdsmi_processor_handle processor_handle, amdsmi_gpu_block_t block,
                                                 amdsmi_ras_err_state_t *state) {
    fam_device_t d;
    if (!state)
        return AMDSMI_STATUS_INVAL;
    amdsmi_status_t rc = processor(processor_handle, &d);
    if (rc != AMDSMI_STATUS_SUCCESS)
        return rc;
    if (block != AMDSMI_GPU_BLOCK_UMC)
        return AMDSMI_STATUS_NOT_SUPPORTED;
    *state = d.healthy ? AMDSMI_RAS_ERR_STATE_ENABLED : AMDSMI_RAS_ERR_STATE_MULT_UC;
    return AMDSMI_STATUS_SUCCESS;
}
