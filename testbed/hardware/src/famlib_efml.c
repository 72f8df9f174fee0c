/* Emulated libefml.so: see famlib_efml.h. Every query re-reads the devices file, so a health flip
 * (families.set_health) shows in the next EfmlGetDevHealth as a driver's live state would. */
#include "famlib_efml.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "family_common.h"

#define VENDOR "enflame"
#define VISIBLE_ENV "ENFLAME_VISIBLE_DEVICES"
#define DRIVER_VERSION "1.2.3.14" /* what the emulated driver reports */
#define ENFLAME_PCI_VENDOR 0x1e36u
#define UUID_PREFIX "GCU-" /* the plugin adds it to EfmlGetDevUuid's answer */

static int initialized;

static efmlReturn_t load(fam_device_t *devs, int *n) {
    if (!initialized)
        return EFML_ERROR_UNINITIALIZED;
    *n = fam_load(VENDOR, VISIBLE_ENV, devs, FAM_MAX_DEVICES);
    if (*n == FAM_ERR_NO_DRIVER)
        return EFML_ERROR_DRIVER_NOT_LOADED;
    return *n < 0 ? EFML_ERROR_FAIL : EFML_SUCCESS;
}

static efmlReturn_t device_at(uint32_t dev_idx, fam_device_t *out) {
    fam_device_t devs[FAM_MAX_DEVICES];
    int n;
    efmlReturn_t rc = load(devs, &n);
    if (rc != EFML_SUCCESS)
        return rc;
    if (dev_idx >= (uint32_t)n)
        return EFML_ERROR_INVALID_ARGUMENT;
    *out = devs[dev_idx];
    return EFML_SUCCESS;
}

/* a string answer into the caller's MAX_CHAR_BUFF_LEN buffer */
static efmlReturn_t put(char *dst, const char *src) {
    if (!dst)
        return EFML_ERROR_INVALID_INPUT;
    return fam_copy(dst, MAX_CHAR_BUFF_LEN, src) ? EFML_ERROR_FAIL : EFML_SUCCESS;
}

efmlReturn_t EfmlInit(bool no_driver) {
    if (!no_driver) {
        fam_device_t devs[FAM_MAX_DEVICES];
        int n = fam_load(VENDOR, VISIBLE_ENV, devs, FAM_MAX_DEVICES);
        if (n == FAM_ERR_NO_DRIVER)
            return EFML_ERROR_DRIVER_NOT_LOADED;
        if (n < 0)
            return EFML_ERROR_FAIL;
    }
    initialized = 1;
    return EFML_SUCCESS;
}

void EfmlShutdown(void) { initialized = 0; }

efmlReturn_t EfmlErrorString(efmlReturn_t result, char *p_error_str) {
    const char *s;
    switch (result) {
    case EFML_SUCCESS: s = "Success"; break;
    case EFML_ERROR_UNINITIALIZED: s = "Error, device un-initialized"; break;
    case EFML_ERROR_INVALID_ARGUMENT: s = "Error, invalid argument"; break;
    case EFML_ERROR_NOT_SUPPORTED: s = "Error, not supported operation"; break;
    case EFML_ERROR_DRIVER_NOT_LOADED: s = "Error, driver not loaded"; break;
    case EFML_ERROR_INVALID_INPUT: s = "Error, invalid input"; break;
    case EFML_ERROR_NO_DEVICE: s = "Error, no supported device"; break;
    case EFML_ERROR_FAIL: s = "Error, operate fail"; break;
    default: return EFML_ERROR_INVALID_ERROR_CODE;
    }
    return put(p_error_str, s);
}

efmlReturn_t EfmlGetDriverVer(char *p_driver_ver) {
    fam_device_t devs[FAM_MAX_DEVICES];
    int n;
    efmlReturn_t rc = load(devs, &n);
    return rc != EFML_SUCCESS ? rc : put(p_driver_ver, DRIVER_VERSION);
}

efmlReturn_t EfmlGetDevCount(uint32_t *dev_count) {
    fam_device_t devs[FAM_MAX_DEVICES];
    int n;
    efmlReturn_t rc = load(devs, &n);
    if (rc != EFML_SUCCESS)
        return rc;
    if (!dev_count)
        return EFML_ERROR_INVALID_INPUT;
    *dev_count = (uint32_t)n;
    return EFML_SUCCESS;
}

efmlReturn_t EfmlGetDevName(uint32_t dev_idx, char *p_name) {
    fam_device_t d;
    efmlReturn_t rc = device_at(dev_idx, &d);
    return rc != EFML_SUCCESS ? rc : put(p_name, d.model);
}

efmlReturn_t EfmlGetDevSKU(uint32_t dev_idx, char *p_info) {
    fam_device_t d;
    efmlReturn_t rc = device_at(dev_idx, &d);
    return rc != EFML_SUCCESS ? rc : put(p_info, d.model);
}

efmlReturn_t EfmlGetDevUuid(uint32_t dev_idx, char *p_info) {
    fam_device_t d;
    efmlReturn_t rc = device_at(dev_idx, &d);
    if (rc != EFML_SUCCESS)
        return rc;
    const char *u = d.uuid;
    if (strncmp(u, UUID_PREFIX, strlen(UUID_PREFIX)) == 0)
        u += strlen(UUID_PREFIX);
    return put(p_info, u);
}

/* the emulated serial number is the card's UUID */
efmlReturn_t EfmlGetDevSn(uint32_t dev_idx, char *p_sn) {
    fam_device_t d;
    efmlReturn_t rc = device_at(dev_idx, &d);
    return rc != EFML_SUCCESS ? rc : put(p_sn, d.uuid);
}

efmlReturn_t EfmlGetDevInfo(uint32_t dev_idx, efmlDeviceInfo_t *p_info) {
    fam_device_t d;
    efmlReturn_t rc = device_at(dev_idx, &d);
    if (rc != EFML_SUCCESS)
        return rc;
    if (!p_info)
        return EFML_ERROR_INVALID_INPUT;
    memset(p_info, 0, sizeof *p_info);
    if (fam_copy(p_info->name, sizeof p_info->name, d.model))
        return EFML_ERROR_FAIL;
    p_info->vendor_id = ENFLAME_PCI_VENDOR;
    p_info->logic_id = (uint32_t)d.index;
    unsigned dom = 0, bus = 0, dev = 0, fn = 0;
    if (strcmp(d.bus_id, "-") != 0 && sscanf(d.bus_id, "%x:%x:%x.%x", &dom, &bus, &dev, &fn) != 4)
        return EFML_ERROR_FAIL;
    p_info->domain_id = dom;
    p_info->bus_id = bus;
    p_info->dev_id = dev;
    p_info->func_id = fn;
    return EFML_SUCCESS;
}

efmlReturn_t EfmlGetDevMem(uint32_t dev_idx, efmlDevMemInfo_t *p_mem) {
    fam_device_t d;
    efmlReturn_t rc = device_at(dev_idx, &d);
    if (rc != EFML_SUCCESS)
        return rc;
    if (!p_mem)
        return EFML_ERROR_INVALID_INPUT;
    p_mem->mem_total_size = (uint64_t)d.memory_mib << 20;
    p_mem->mem_used = 0;
    return EFML_SUCCESS;
}

/* unconfirmed: the emulated card's compute units, reported as its cluster count */
efmlReturn_t EfmlGetClusterCount(uint32_t dev_idx, uint32_t *cluster_count) {
    fam_device_t d;
    efmlReturn_t rc = device_at(dev_idx, &d);
    if (rc != EFML_SUCCESS)
        return rc;
    if (!cluster_count)
        return EFML_ERROR_INVALID_INPUT;
    *cluster_count = d.compute_units;
    return EFML_SUCCESS;
}

efmlReturn_t EfmlGetNumaNode(uint32_t dev_idx, int *numa_node) {
    fam_device_t d;
    efmlReturn_t rc = device_at(dev_idx, &d);
    if (rc != EFML_SUCCESS)
        return rc;
    if (!numa_node)
        return EFML_ERROR_INVALID_INPUT;
    *numa_node = d.numa;
    return EFML_SUCCESS;
}

efmlReturn_t EfmlGetDevHealth(uint32_t dev_idx, bool *health) {
    fam_device_t d;
    efmlReturn_t rc = device_at(dev_idx, &d);
    if (rc != EFML_SUCCESS)
        return rc;
    if (!health)
        return EFML_ERROR_INVALID_INPUT;
    *health = d.healthy != 0;
    return EFML_SUCCESS;
}

efmlReturn_t EfmlGetDevIsHealth(uint32_t dev_idx, bool *is_health) { return EfmlGetDevHealth(dev_idx, is_health); }

/* a DRS card's slices; 0 for a card used whole */
efmlReturn_t EfmlGetMaxVdevCount(uint32_t dev_idx, uint32_t *vdev_count) {
    fam_device_t d;
    efmlReturn_t rc = device_at(dev_idx, &d);
    if (rc != EFML_SUCCESS)
        return rc;
    if (!vdev_count)
        return EFML_ERROR_INVALID_INPUT;
    *vdev_count = d.drs_capacity;
    return EFML_SUCCESS;
}

efmlReturn_t EfmlGetDrsProfileCount(uint32_t dev_idx, uint32_t *profile_count) {
    fam_device_t d;
    efmlReturn_t rc = device_at(dev_idx, &d);
    if (rc != EFML_SUCCESS)
        return rc;
    if (!profile_count)
        return EFML_ERROR_INVALID_INPUT;
    *profile_count = (uint32_t)d.profile_count;
    return EFML_SUCCESS;
}

efmlReturn_t EfmlGetDrsProfileInfo(uint32_t dev_idx, uint32_t profile_idx, efmlDrsProfileInfo_t *p_info) {
    fam_device_t d;
    efmlReturn_t rc = device_at(dev_idx, &d);
    if (rc != EFML_SUCCESS)
        return rc;
    if (!d.drs_capacity)
        return EFML_ERROR_NOT_SUPPORTED; /* a card used whole has no DRS profiles */
    if (profile_idx >= (uint32_t)d.profile_count)
        return EFML_ERROR_INVALID_ARGUMENT;
    if (!p_info)
        return EFML_ERROR_INVALID_INPUT;
    const fam_profile_t *p = &d.profiles[profile_idx];
    char *end;
    unsigned long id = strtoul(p->id, &end, 10);
    if (*end || end == p->id)
        return EFML_ERROR_FAIL;
    memset(p_info, 0, sizeof *p_info);
    p_info->id = (uint32_t)id;
    return fam_copy(p_info->name, sizeof p_info->name, p->name) ? EFML_ERROR_FAIL : EFML_SUCCESS;
}
