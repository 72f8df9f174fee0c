/*
 * Emulated ROCm SMI for Hygon DCUs (librocm_smi64.so): what HAMi's dcu-vgpu-device-plugin learns about
 * the node's DCUs (through dcu-dcgm), answered from the emulated hardware's devices.conf.
 *
 * Codes as rocm_smi.h documents them: a call before rsmi_init -> RSMI_STATUS_INIT_ERROR; rsmi_init with
 * no driver state (no devices.conf) -> RSMI_STATUS_INIT_ERROR as well (unconfirmed: the real library's
 * answer without the amdgpu/hydcu driver differs between releases; it has no separate "driver not
 * loaded" code); a device index past the count -> RSMI_STATUS_INVALID_ARGS; a buffer too short for a
 * string -> RSMI_STATUS_INSUFFICIENT_SIZE.
 *
 * The DCU model is the PCI device id (rsmi_dev_id_get), which dcu-dcgm turns into a name with its own
 * table; the ids below are the ones that table gives the models we emulate. A DCU whose health the
 * testbed flipped off reports uncorrectable memory errors (rsmi_dev_ecc_status_get on the UMC block):
 * unconfirmed as the plugin's health source (HAMi's DCU plugin only checks /dev/kfd), the nearest
 * per-device health fact ROCm SMI has.
 */
#include "famlib_rocm_smi64.h"

#include <stdio.h>
#include <string.h>

#include "family_common.h"

#define EXPORT __attribute__((visibility("default")))
#define VENDOR "hygon"
#define VISIBLE_ENV "DCU_VISIBLE_DEVICES"
#define SERIAL_PREFIX "DCU-" /* the plugin registers "DCU-" + serial: the serial is the uuid without it */

static int g_refs; /* rsmi_init / rsmi_shut_down are reference counted */

static const struct {
    const char *model;
    uint16_t id;
} k_dev_ids[] = {
    {"Z100", 0x54b7},
    {"Z100L", 0x55b7},
    {"K100", 0x62b7},
};

/* the visible device dv_ind, re-read so health flips show; a status code on failure */
static rsmi_status_t device(uint32_t dv_ind, fam_device_t *out) {
    if (g_refs <= 0)
        return RSMI_STATUS_INIT_ERROR;
    fam_device_t devs[FAM_MAX_DEVICES];
    int n = fam_load(VENDOR, VISIBLE_ENV, devs, FAM_MAX_DEVICES);
    if (n == FAM_ERR_NO_DRIVER)
        return RSMI_STATUS_INIT_ERROR;
    if (n < 0)
        return RSMI_STATUS_UNEXPECTED_DATA;
    if (dv_ind >= (uint32_t)n)
        return RSMI_STATUS_INVALID_ARGS;
    *out = devs[dv_ind];
    return RSMI_STATUS_SUCCESS;
}

static rsmi_status_t copy_out(char *dst, size_t len, const char *src) {
    if (!dst || len == 0)
        return RSMI_STATUS_INVALID_ARGS;
    return fam_copy(dst, len, src) ? RSMI_STATUS_INSUFFICIENT_SIZE : RSMI_STATUS_SUCCESS;
}

EXPORT rsmi_status_t rsmi_init(uint64_t init_flags) {
    (void)init_flags;
    fam_device_t devs[FAM_MAX_DEVICES];
    int n = fam_load(VENDOR, VISIBLE_ENV, devs, FAM_MAX_DEVICES);
    if (n == FAM_ERR_NO_DRIVER)
        return RSMI_STATUS_INIT_ERROR;
    if (n < 0)
        return RSMI_STATUS_UNEXPECTED_DATA;
    g_refs++;
    return RSMI_STATUS_SUCCESS;
}

EXPORT rsmi_status_t rsmi_shut_down(void) {
    if (g_refs <= 0)
        return RSMI_STATUS_INIT_ERROR;
    g_refs--;
    return RSMI_STATUS_SUCCESS;
}

EXPORT rsmi_status_t rsmi_num_monitor_devices(uint32_t *num_devices) {
    if (!num_devices)
        return RSMI_STATUS_INVALID_ARGS;
    if (g_refs <= 0)
        return RSMI_STATUS_INIT_ERROR;
    fam_device_t devs[FAM_MAX_DEVICES];
    int n = fam_load(VENDOR, VISIBLE_ENV, devs, FAM_MAX_DEVICES);
    if (n == FAM_ERR_NO_DRIVER)
        return RSMI_STATUS_INIT_ERROR;
    if (n < 0)
        return RSMI_STATUS_UNEXPECTED_DATA;
    *num_devices = (uint32_t)n;
    return RSMI_STATUS_SUCCESS;
}

EXPORT rsmi_status_t rsmi_dev_id_get(uint32_t dv_ind, uint16_t *id) {
    fam_device_t d;
    if (!id)
        return RSMI_STATUS_INVALID_ARGS;
    rsmi_status_t rc = device(dv_ind, &d);
    if (rc != RSMI_STATUS_SUCCESS)
        return rc;
    for (size_t i = 0; i < sizeof k_dev_ids / sizeof k_dev_ids[0]; i++)
        if (strcmp(d.model, k_dev_ids[i].model) == 0) {
            *id = k_dev_ids[i].id;
            return RSMI_STATUS_SUCCESS;
        }
    return RSMI_STATUS_NOT_SUPPORTED; /* a model we have no PCI id for: rsmi_dev_name_get names it */
}

EXPORT rsmi_status_t rsmi_dev_name_get(uint32_t dv_ind, char *name, size_t len) {
    fam_device_t d;
    rsmi_status_t rc = device(dv_ind, &d);
    return rc != RSMI_STATUS_SUCCESS ? rc : copy_out(name, len, d.model);
}

EXPORT rsmi_status_t rsmi_dev_serial_number_get(uint32_t dv_ind, char *serial_num, uint32_t len) {
    fam_device_t d;
    rsmi_status_t rc = device(dv_ind, &d);
    if (rc != RSMI_STATUS_SUCCESS)
        return rc;
    const char *serial = d.uuid;
    if (strncmp(serial, SERIAL_PREFIX, strlen(SERIAL_PREFIX)) == 0)
        serial += strlen(SERIAL_PREFIX);
    return copy_out(serial_num, len, serial);
}

EXPORT rsmi_status_t rsmi_dev_pci_id_get(uint32_t dv_ind, uint64_t *bdfid) {
    fam_device_t d;
    if (!bdfid)
        return RSMI_STATUS_INVALID_ARGS;
    rsmi_status_t rc = device(dv_ind, &d);
    if (rc != RSMI_STATUS_SUCCESS)
        return rc;
    unsigned domain, bus, dev, fn;
    char extra;
    if (sscanf(d.bus_id, "%x:%x:%x.%x%c", &domain, &bus, &dev, &fn, &extra) != 4 || bus > 0xff || dev > 0x1f ||
        fn > 7)
        return RSMI_STATUS_NOT_SUPPORTED;
    /* the documented packing: domain in bits 63..32, bus 15..8, device 7..3, function 2..0 */
    *bdfid = ((uint64_t)domain << 32) | ((uint64_t)bus << 8) | ((uint64_t)dev << 3) | fn;
    return RSMI_STATUS_SUCCESS;
}

EXPORT rsmi_status_t rsmi_dev_memory_total_get(uint32_t dv_ind, rsmi_memory_type_t mem_type, uint64_t *total) {
    fam_device_t d;
    if (!total)
        return RSMI_STATUS_INVALID_ARGS;
    rsmi_status_t rc = device(dv_ind, &d);
    if (rc != RSMI_STATUS_SUCCESS)
        return rc;
    if (mem_type != RSMI_MEM_TYPE_VRAM && mem_type != RSMI_MEM_TYPE_VIS_VRAM)
        return RSMI_STATUS_NOT_SUPPORTED;
    *total = d.memory_mib * 1024ULL * 1024ULL;
    return RSMI_STATUS_SUCCESS;
}

EXPORT rsmi_status_t rsmi_dev_memory_usage_get(uint32_t dv_ind, rsmi_memory_type_t mem_type, uint64_t *used) {
    fam_device_t d;
    if (!used)
        return RSMI_STATUS_INVALID_ARGS;
    rsmi_status_t rc = device(dv_ind, &d);
    if (rc != RSMI_STATUS_SUCCESS)
        return rc;
    if (mem_type != RSMI_MEM_TYPE_VRAM && mem_type != RSMI_MEM_TYPE_VIS_VRAM)
        return RSMI_STATUS_NOT_SUPPORTED;
    *used = 0; /* the emulated driver tracks no allocations */
    return RSMI_STATUS_SUCCESS;
}

EXPORT rsmi_status_t rsmi_topo_get_numa_node_number(uint32_t dv_ind, uint32_t *numa_node) {
    fam_device_t d;
    if (!numa_node)
        return RSMI_STATUS_INVALID_ARGS;
    rsmi_status_t rc = device(dv_ind, &d);
    if (rc != RSMI_STATUS_SUCCESS)
        return rc;
    *numa_node = (uint32_t)d.numa;
    return RSMI_STATUS_SUCCESS;
}

EXPORT rsmi_status_t rsmi_dev_ecc_status_get(uint32_t dv_ind, rsmi_gpu_block_t block, rsmi_ras_err_state_t *state) {
    fam_device_t d;
    if (!state)
        return RSMI_STATUS_INVALID_ARGS;
    rsmi_status_t rc = device(dv_ind, &d);
    if (rc != RSMI_STATUS_SUCCESS)
        return rc;
    if (block != RSMI_GPU_BLOCK_UMC)
        return RSMI_STATUS_NOT_SUPPORTED;
    *state = d.healthy ? RSMI_RAS_ERR_STATE_ENABLED : RSMI_RAS_ERR_STATE_MULT_UC;
    return RSMI_STATUS_SUCCESS;
}
