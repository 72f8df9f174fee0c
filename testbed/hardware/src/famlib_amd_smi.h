/*
 * Emulated AMD SMI (libamd_smi.so), the subset HAMi's AMD device plugin (Project-HAMi/amd-device-plugin)
 * reads its GPUs through: amdsmi_init(AMDSMI_INIT_AMD_GPUS), amdsmi_get_processor_handle_from_bdf,
 * amdsmi_get_gpu_device_uuid (the ID it registers), amdsmi_get_gpu_asic_info (market_name: the type it
 * registers), amdsmi_shut_down; plus the discovery and per-GPU facts AMD SMI offers for what that plugin
 * takes from sysfs/libdrm (socket/processor handles, BDF, VRAM total, compute units, NUMA node, ECC
 * state). Our own declarations of the published API (amdsmi.h of ROCm 7: names, argument order, struct
 * field order and status values).
 */
#ifndef HAMI_FAMLIB_AMD_SMI_H
#define HAMI_FAMLIB_AMD_SMI_H

#include <stdint.h>

#define AMDSMI_MAX_STRING_LENGTH 64
#define AMDSMI_NORMAL_STRING_LENGTH 32
#define AMDSMI_256_LENGTH 256
#define AMDSMI_GPU_UUID_SIZE 38

typedef enum {
    AMDSMI_STATUS_SUCCESS = 0,
    AMDSMI_STATUS_INVAL = 1,
    AMDSMI_STATUS_NOT_SUPPORTED = 2,
    AMDSMI_STATUS_UNEXPECTED_DATA = 43,
    AMDSMI_STATUS_NOT_FOUND = 31,
    AMDSMI_STATUS_NOT_INIT = 32,
    AMDSMI_STATUS_DRIVER_NOT_LOADED = 34,
    AMDSMI_STATUS_INSUFFICIENT_SIZE = 41,
} amdsmi_status_t;

typedef enum {
    AMDSMI_INIT_AMD_CPUS = (1 << 0),
    AMDSMI_INIT_AMD_GPUS = (1 << 1),
} amdsmi_init_flags_t;

typedef void *amdsmi_socket_handle;
typedef void *amdsmi_processor_handle;

typedef union {
    struct {
        uint64_t function_number : 3;
        uint64_t device_number : 5;
        uint64_t bus_number : 8;
        uint64_t domain_number : 48;
    };
    uint64_t as_uint;
} amdsmi_bdf_t;

typedef struct {
    char market_name[AMDSMI_256_LENGTH];
    uint32_t vendor_id;
    char vendor_name[AMDSMI_MAX_STRING_LENGTH];
    uint32_t subvendor_id;
    uint64_t device_id;
    uint32_t rev_id;
    char asic_serial[AMDSMI_NORMAL_STRING_LENGTH];
    uint32_t oam_id;                  /* 0xFFFF: not supported */
    uint32_t num_of_compute_units;    /* 0xFFFFFFFF: not supported */
    uint64_t target_graphics_version; /* all ones: not supported */
    uint32_t reserved[15];
} amdsmi_asic_info_t;

typedef enum {
    AMDSMI_MEM_TYPE_VRAM = 0,
    AMDSMI_MEM_TYPE_VIS_VRAM = 1,
    AMDSMI_MEM_TYPE_GTT = 2,
} amdsmi_memory_type_t;

typedef enum {
    AMDSMI_GPU_BLOCK_UMC = 0x1, /* a bit mask in the real API; UMC: the memory controller */
} amdsmi_gpu_block_t;

typedef enum {
    AMDSMI_RAS_ERR_STATE_NONE = 0,
    AMDSMI_RAS_ERR_STATE_DISABLED = 1,
    AMDSMI_RAS_ERR_STATE_PARITY = 2,
    AMDSMI_RAS_ERR_STATE_SING_C = 3,
    AMDSMI_RAS_ERR_STATE_MULT_UC = 4,
    AMDSMI_RAS_ERR_STATE_POISON = 5,
    AMDSMI_RAS_ERR_STATE_ENABLED = 6,
} amdsmi_ras_err_state_t;

amdsmi_status_t amdsmi_init(uint64_t init_flags);
amdsmi_status_t amdsmi_shut_down(void);
amdsmi_status_t amdsmi_get_socket_handles(uint32_t *socket_count, amdsmi_socket_handle *socket_handles);
amdsmi_status_t amdsmi_get_processor_handles(amdsmi_socket_handle socket_handle, uint32_t *processor_count,
                                             amdsmi_processor_handle *processor_handles);
amdsmi_status_t amdsmi_get_processor_handle_from_bdf(amdsmi_bdf_t bdf, amdsmi_processor_handle *processor_handle);
amdsmi_status_t amdsmi_get_gpu_device_bdf(amdsmi_processor_handle processor_handle, amdsmi_bdf_t *bdf);
amdsmi_status_t amdsmi_get_gpu_device_uuid(amdsmi_processor_handle processor_handle, unsigned int *uuid_length,
                                           char *uuid);
amdsmi_status_t amdsmi_get_gpu_asic_info(amdsmi_processor_handle processor_handle, amdsmi_asic_info_t *info);
amdsmi_status_t amdsmi_get_gpu_memory_total(amdsmi_processor_handle processor_handle, amdsmi_memory_type_t mem_type,
                                            uint64_t *total);
amdsmi_status_t amdsmi_topo_get_numa_node_number(amdsmi_processor_handle processor_handle, uint32_t *numa_node);
amdsmi_status_t amdsmi_get_gpu_ecc_status(amdsmi_processor_handle processor_handle, amdsmi_gpu_block_t block,
                                          amdsmi_ras_err_state_t *state);

#endif
