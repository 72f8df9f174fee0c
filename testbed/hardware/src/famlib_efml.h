/*
 * Emulated Enflame Management Library (libefml.so): our own declarations of the subset of EFML's legacy
 * C API (the Efml* calls Enflame's Go binding go-efml wraps and its GCU device plugin reads devices
 * through): init/shutdown, device count, name, SKU, UUID (the plugin prefixes "GCU-"), PCI info, memory
 * (total in bytes, used in MB), cluster count, NUMA node and health. Names, argument order, struct
 * field order and return codes follow the published efml.h; string outputs are caller buffers of
 * MAX_CHAR_BUFF_LEN bytes, as there (the legacy calls take no buffer size).
 *
 * DRS (Dynamic Resource Slicing) cards: EfmlGetMaxVdevCount gives the slices a card is cut into
 * (unconfirmed: the published header documents it as the maximum virtual devices of a physical device;
 * how Enflame's DRS plugin learns slices is not published). No published EFML call lists DRS profiles:
 * EfmlGetDrsProfileCount / EfmlGetDrsProfileInfo are ours (unconfirmed), shaped as the other per-index
 * legacy calls.
 */
#ifndef HAMI_FAMLIB_EFML_H
#define HAMI_FAMLIB_EFML_H

#include <stdbool.h>
#include <stdint.h>

#define EFML_EXPORT __attribute__((visibility("default")))

typedef enum {
    EFML_SUCCESS = 0,
    EFML_ERROR_UNINITIALIZED = 1,
    EFML_ERROR_INVALID_ARGUMENT = 2,
    EFML_ERROR_NOT_SUPPORTED = 3,
    EFML_ERROR_LIBRARY_NOT_FOUND = 4,
    EFML_ERROR_INVALID_ERROR_CODE = 5,
    EFML_ERROR_DRIVER_NOT_LOADED = 6,
    EFML_ERROR_GCU_LARE_PORT_NUMBER_ERR = 7,
    EFML_ERROR_INVALID_INPUT = 8,
    EFML_ERROR_FUNCTION_NOT_FOUND = 9,
    EFML_ERROR_OPEN_DRIVER_VERSION = 10,
    EFML_ERROR_DRIVER_NOT_COMPATIBLE = 11,
    EFML_ERROR_NO_DEVICE = 12,
    EFML_ERROR_DEPRECATION = 13,
    EFML_ERROR_TIMEOUT = 253,
    EFML_ERROR_FAIL = 254,
    EFML_ERROR_MAX = 255,
} efmlReturn_t;

#define MAX_CHAR_BUFF_LEN (128)

typedef struct {
    char name[MAX_CHAR_BUFF_LEN];
    uint32_t vendor_id;
    uint32_t device_id;
    uint32_t domain_id;
    uint32_t bus_id;
    uint32_t dev_id;
    uint32_t func_id;
    uint32_t logic_id; /* the card's physical index on the node */
} efmlDeviceInfo_t;

typedef struct {
    uint64_t mem_total_size; /* bytes */
    uint32_t mem_used;       /* MB */
} efmlDevMemInfo_t;

/* ours (unconfirmed): one DRS profile the driver offers for a card, e.g. "3g.20gb" -> 1 */
typedef struct {
    char name[MAX_CHAR_BUFF_LEN];
    uint32_t id;
} efmlDrsProfileInfo_t;

EFML_EXPORT efmlReturn_t EfmlInit(bool no_driver);
EFML_EXPORT void EfmlShutdown(void);
EFML_EXPORT efmlReturn_t EfmlErrorString(efmlReturn_t result, char *p_error_str);
EFML_EXPORT efmlReturn_t EfmlGetDriverVer(char *p_driver_ver);
EFML_EXPORT efmlReturn_t EfmlGetDevCount(uint32_t *dev_count);
EFML_EXPORT efmlReturn_t EfmlGetDevName(uint32_t dev_idx, char *p_name);
EFML_EXPORT efmlReturn_t EfmlGetDevSKU(uint32_t dev_idx, char *p_info);
EFML_EXPORT efmlReturn_t EfmlGetDevUuid(uint32_t dev_idx, char *p_info);
EFML_EXPORT efmlReturn_t EfmlGetDevSn(uint32_t dev_idx, char *p_sn);
EFML_EXPORT efmlReturn_t EfmlGetDevInfo(uint32_t dev_idx, efmlDeviceInfo_t *p_info);
EFML_EXPORT efmlReturn_t EfmlGetDevMem(uint32_t dev_idx, efmlDevMemInfo_t *p_mem);
EFML_EXPORT efmlReturn_t EfmlGetClusterCount(uint32_t dev_idx, uint32_t *cluster_count);
EFML_EXPORT efmlReturn_t EfmlGetNumaNode(uint32_t dev_idx, int *numa_node);
EFML_EXPORT efmlReturn_t EfmlGetDevHealth(uint32_t dev_idx, bool *health);
EFML_EXPORT efmlReturn_t EfmlGetDevIsHealth(uint32_t dev_idx, bool *is_health);
EFML_EXPORT efmlReturn_t EfmlGetMaxVdevCount(uint32_t dev_idx, uint32_t *vdev_count);
EFML_EXPORT efmlReturn_t EfmlGetDrsProfileCount(uint32_t dev_idx, uint32_t *profile_count);
EFML_EXPORT efmlReturn_t EfmlGetDrsProfileInfo(uint32_t dev_idx, uint32_t profile_idx, efmlDrsProfileInfo_t *p_info);

#endif
