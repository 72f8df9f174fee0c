/*
 * Emulated ROCm SMI (librocm_smi64.so), the subset Hygon's DCU device plugin reads its DCUs through:
 * HAMi's dcu-vgpu-device-plugin calls dcu-dcgm's DeviceInfos/ShowSerialNumber, which call rsmi_init,
 * rsmi_num_monitor_devices, rsmi_dev_pci_id_get, rsmi_dev_serial_number_get, rsmi_dev_id_get and
 * rsmi_dev_memory_total_get/usage_get. Our own declarations of the published API (names, argument order,
 * enum values as rocm_smi.h documents them).
 */
#ifndef HAMI_FAMLIB_ROCM_SMI64_H
#define HAMI_FAMLIB_ROCM_SMI64_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    RSMI_STATUS_SUCCESS = 0,
    RSMI_STATUS_INVALID_ARGS = 1,
    RSMI_STATUS_NOT_SUPPORTED = 2,
    RSMI_STATUS_FILE_ERROR = 3,
    RSMI_STATUS_PERMISSION = 4,
    RSMI_STATUS_OUT_OF_RESOURCES = 5,
    RSMI_STATUS_INTERNAL_EXCEPTION = 6,
    RSMI_STATUS_INPUT_OUT_OF_BOUNDS = 7,
    RSMI_STATUS_INIT_ERROR = 8,
    RSMI_STATUS_NOT_YET_IMPLEMENTED = 9,
    RSMI_STATUS_NOT_FOUND = 10,
    RSMI_STATUS_INSUFFICIENT_SIZE = 11,
    RSMI_STATUS_UNEXPECTED_DATA = 15,
    RSMI_STATUS_UNKNOWN_ERROR = (int)0xFFFFFFFF,
} rsmi_status_t;

typedef enum {
    RSMI_MEM_TYPE_VRAM = 0,
    RSMI_MEM_TYPE_VIS_VRAM = 1,
    RSMI_MEM_TYPE_GTT = 2,
} rsmi_memory_type_t;

/* a bit mask in the real API; UMC (the memory controller) is the block whose ECC state we report */
typedef enum {
    RSMI_GPU_BLOCK_UMC = 0x1,
} rsmi_gpu_block_t;

typedef enum {
    RSMI_RAS_ERR_STATE_NONE = 0,
    RSMI_RAS_ERR_STATE_DISABLED = 1,
    RSMI_RAS_ERR_STATE_PARITY = 2,
    RSMI_RAS_ERR_STATE_SING_C = 3,
    RSMI_RAS_ERR_STATE_MULT_UC = 4,
    RSMI_RAS_ERR_STATE_POISON = 5,
    RSMI_RAS_ERR_STATE_ENABLED = 6,
} rsmi_ras_err_state_t;

rsmi_status_t rsmi_init(uint64_t init_flags);
rsmi_status_t rsmi_shut_down(void);
rsmi_status_t rsmi_num_monitor_devices(uint32_t *num_devices);
rsmi_status_t rsmi_dev_id_get(uint32_t dv_ind, uint16_t *id);
rsmi_status_t rsmi_dev_name_get(uint32_t dv_ind, char *name, size_t len);
rsmi_status_t rsmi_dev_serial_number_get(uint32_t dv_ind, char *serial_num, uint32_t len);
rsmi_status_t rsmi_dev_pci_id_get(uint32_t dv_ind, uint64_t *bdfid);
rsmi_status_t rsmi_dev_memory_total_get(uint32_t dv_ind, rsmi_memory_type_t mem_type, uint64_t *total);
rsmi_status_t rsmi_dev_memory_usage_get(uint32_t dv_ind, rsmi_memory_type_t mem_type, uint64_t *used);
rsmi_status_t rsmi_topo_get_numa_node_number(uint32_t dv_ind, uint32_t *numa_node);
rsmi_status_t rsmi_dev_ecc_status_get(uint32_t dv_ind, rsmi_gpu_block_t block, rsmi_ras_err_state_t *state);

#endif
