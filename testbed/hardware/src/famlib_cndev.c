/*
 * Emulated CNDev (libcndev.so) over the node's Cambricon devices (family_common: <dir>/cambricon/
 * devices.conf, filtered by CAMBRICON_SPLIT_VISIBLE_DEVICES as Cambricon's runtime mounts the device
 * nodes). Every query re-reads the file, so a health flip shows at the next call.
 *
 * Emulation choices (see testbed/hardware/README.md):
 * - a handle is the device's position among the visible ones (real handles are opaque ints too);
 * - the UUID is reported without the "MLU-" that the plugin itself prefixes to it;
 * - the core count is the emulated model's compute units (HAMi's 100 vcores per card), not the
 *   silicon's IPU cores, so the plugin's view equals the testbed's devices.json;
 * - the card SN is derived from the UUID (the testbed has no serial numbers).
 */
#include "famlib_cndev.h"

#include <stdio.h>
#include <string.h>

#include "family_common.h"

#define VENDOR "cambricon"
#define VISIBLE_ENV "CAMBRICON_SPLIT_VISIBLE_DEVICES"

static int g_initialised;

static cndevRet_t from_fam(int rc) {
    return rc == FAM_ERR_NO_DRIVER ? CNDEV_ERROR_NO_DRIVER : CNDEV_ERROR_UNKNOWN;
}

static int version_ok(int32_t version) {
    return version >= CNDEV_VERSION_1 && version <= CNDEV_VERSION_6;
}

/* the device behind a handle, freshly read */
static cndevRet_t lookup(cndevDevice_t handle, fam_device_t *out) {
    if (!g_initialised)
        return CNDEV_ERROR_UNINITIALIZED;
    fam_device_t all[FAM_MAX_DEVICES];
    int n = fam_load(VENDOR, VISIBLE_ENV, all, FAM_MAX_DEVICES);
    if (n < 0)
        return from_fam(n);
    if (handle < 0 || handle >= n)
        return CNDEV_ERROR_INVALID_DEVICE_ID;
    *out = all[handle];
    return CNDEV_SUCCESS;
}

cndevRet_t cndevInit(int32_t reserved) {
    (void)reserved;
    fam_device_t all[FAM_MAX_DEVICES];
    int n = fam_load(VENDOR, VISIBLE_ENV, all, FAM_MAX_DEVICES);
    if (n < 0)
        return from_fam(n);
    if (n == 0)
        return CNDEV_ERROR_NO_DEVICES;
    g_initialised = 1;
    return CNDEV_SUCCESS;
}

cndevRet_t cndevRelease(void) {
    g_initialised = 0;
    return CNDEV_SUCCESS;
}

const char *cndevGetErrorString(cndevRet_t errorId) {
    switch (errorId) {
    case CNDEV_SUCCESS: return "Success";
    case CNDEV_ERROR_NO_DRIVER: return "No driver";
    case CNDEV_ERROR_LOW_DRIVER_VERSION: return "Driver version too low";
    case CNDEV_ERROR_UNSUPPORTED_API_VERSION: return "Unsupported API version";
    case CNDEV_ERROR_UNINITIALIZED: return "Not initialized";
    case CNDEV_ERROR_INVALID_ARGUMENT: return "Invalid argument";
    case CNDEV_ERROR_INVALID_DEVICE_ID: return "Invalid device id";
    case CNDEV_ERROR_INSUFFICIENT_SPACE: return "Insufficient space";
    case CNDEV_ERROR_NOT_SUPPORTED: return "Not supported";
    case CNDEV_ERROR_NO_DEVICES: return "No devices";
    case CNDEV_ERROR_NOT_FOUND: return "Not found";
    default: return "Unknown error";
    }
}

cndevRet_t cndevGetDeviceCount(cndevCardInfo_t *cardNum) {
    if (!g_initialised)
        return CNDEV_ERROR_UNINITIALIZED;
    if (!cardNum)
        return CNDEV_ERROR_INVALID_ARGUMENT;
    if (!version_ok(cardNum->version))
        return CNDEV_ERROR_UNSUPPORTED_API_VERSION;
    fam_device_t all[FAM_MAX_DEVICES];
    int n = fam_load(VENDOR, VISIBLE_ENV, all, FAM_MAX_DEVICES);
    if (n < 0)
        return from_fam(n);
    cardNum->number = (uint32_t)n;
    return CNDEV_SUCCESS;
}

cndevRet_t cndevGetDeviceHandleByIndex(int32_t index, cndevDevice_t *handle) {
    if (!g_initialised)
        return CNDEV_ERROR_UNINITIALIZED;
    if (!handle)
        return CNDEV_ERROR_INVALID_ARGUMENT;
    fam_device_t all[FAM_MAX_DEVICES];
    int n = fam_load(VENDOR, VISIBLE_ENV, all, FAM_MAX_DEVICES);
    if (n < 0)
        return from_fam(n);
    if (index < 0 || index >= n)
        return CNDEV_ERROR_INVALID_ARGUMENT;
    *handle = index;
    return CNDEV_SUCCESS;
}

cndevRet_t cndevGetUUID(cndevUUID_t *uuidInfo, cndevDevice_t device) {
    fam_device_t d;
    cndevRet_t rc = lookup(device, &d);
    if (rc != CNDEV_SUCCESS)
        return rc;
    if (!uuidInfo)
        return CNDEV_ERROR_INVALID_ARGUMENT;
    if (!version_ok(uuidInfo->version))
        return CNDEV_ERROR_UNSUPPORTED_API_VERSION;
    const char *uuid = strncmp(d.uuid, "MLU-", 4) == 0 ? d.uuid + 4 : d.uuid;
    char buf[CNDEV_UUID_SIZE];
    if (fam_copy(buf, sizeof buf, uuid))
        return CNDEV_ERROR_INSUFFICIENT_SPACE; /* the fixed 37-byte field cannot hold it */
    memcpy(uuidInfo->uuid, buf, sizeof buf);
    uuidInfo->ncsUUID64 = 0;
    return CNDEV_SUCCESS;
}

cndevRet_t cndevGetCardSN(cndevCardSN_t *cardSN, cndevDevice_t device) {
    fam_device_t d;
    cndevRet_t rc = lookup(device, &d);
    if (rc != CNDEV_SUCCESS)
        return rc;
    if (!cardSN)
        return CNDEV_ERROR_INVALID_ARGUMENT;
    if (!version_ok(cardSN->version))
        return CNDEV_ERROR_UNSUPPORTED_API_VERSION;
    uint64_t h = 1469598103934665603ULL; /* FNV-1a of the UUID: stable per device */
    for (const char *p = d.uuid; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    cardSN->sn = h & 0xffffffffffffULL;
    cardSN->motherBoardSn = (h >> 16) & 0xffffffffffffULL;
    return CNDEV_SUCCESS;
}

static int name_id(const char *model) {
    static const struct {
        const char *prefix;
        cndevNameEnum_t id;
    } names[] = {
        {"MLU370", CNDEV_DEVICE_TYPE_MLU370}, {"MLU365", CNDEV_DEVICE_TYPE_MLU365},
        {"MLU590", CNDEV_DEVICE_TYPE_MLU590}, {"MLU580", CNDEV_DEVICE_TYPE_MLU580},
        {"MLU290", CNDEV_DEVICE_TYPE_MLU290}, {"MLU270", CNDEV_DEVICE_TYPE_MLU270},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strncmp(model, names[i].prefix, strlen(names[i].prefix)) == 0)
            return (int)names[i].id;
    return -1;
}

cndevRet_t cndevGetCardName(cndevCardName_t *cardName, cndevDevice_t device) {
    fam_device_t d;
    cndevRet_t rc = lookup(device, &d);
    if (rc != CNDEV_SUCCESS)
        return rc;
    if (!cardName)
        return CNDEV_ERROR_INVALID_ARGUMENT;
    if (!version_ok(cardName->version))
        return CNDEV_ERROR_UNSUPPORTED_API_VERSION;
    int id = name_id(d.model);
    if (id < 0)
        return CNDEV_ERROR_NOT_SUPPORTED;
    cardName->id = (cndevNameEnum_t)id;
    return CNDEV_SUCCESS;
}

const char *cndevGetCardNameStringByDevId(cndevDevice_t device) {
    /* the string outlives the call, as the real library's static names do; one per handle */
    static __thread char names[FAM_MAX_DEVICES][64];
    fam_device_t d;
    if (lookup(device, &d) != CNDEV_SUCCESS)
        return "Unknown";
    fam_copy(names[device], sizeof names[device], d.model);
    return names[device];
}

cndevRet_t cndevGetMemoryUsageV2(cndevMemoryInfoV2_t *memInfo, cndevDevice_t device) {
    fam_device_t d;
    cndevRet_t rc = lookup(device, &d);
    if (rc != CNDEV_SUCCESS)
        return rc;
    if (!memInfo)
        return CNDEV_ERROR_INVALID_ARGUMENT;
    memset(memInfo, 0, sizeof *memInfo);
    memInfo->physicalMemoryTotal = (int64_t)d.memory_mib;
    memInfo->virtualMemoryTotal = (int64_t)d.memory_mib;
    return CNDEV_SUCCESS;
}

cndevRet_t cndevGetCoreCount(cndevCardCoreCount_t *cardCoreCount, cndevDevice_t device) {
    fam_device_t d;
    cndevRet_t rc = lookup(device, &d);
    if (rc != CNDEV_SUCCESS)
        return rc;
    if (!cardCoreCount)
        return CNDEV_ERROR_INVALID_ARGUMENT;
    if (!version_ok(cardCoreCount->version))
        return CNDEV_ERROR_UNSUPPORTED_API_VERSION;
    cardCoreCount->count = (int32_t)d.compute_units;
    return CNDEV_SUCCESS;
}

cndevRet_t cndevGetPCIeInfoV2(cndevPCIeInfoV2_t *deviceInfo, cndevDevice_t device) {
    fam_device_t d;
    cndevRet_t rc = lookup(device, &d);
    if (rc != CNDEV_SUCCESS)
        return rc;
    if (!deviceInfo)
        return CNDEV_ERROR_INVALID_ARGUMENT;
    unsigned dom = 0, bus = 0, dev = 0, fn = 0;
    if (sscanf(d.bus_id, "%x:%x:%x.%x", &dom, &bus, &dev, &fn) != 4)
        return CNDEV_ERROR_NOT_SUPPORTED; /* a device without a PCI address ("-") */
    memset(deviceInfo, 0, sizeof *deviceInfo);
    deviceInfo->vendor = 0xcabc; /* Cambricon's PCI vendor id */
    deviceInfo->subsystemVendor = 0xcabc;
    deviceInfo->domain = dom;
    deviceInfo->bus = bus;
    deviceInfo->device = dev;
    deviceInfo->function = fn;
    deviceInfo->slotId = 0xffff; /* no DMI slot */
    return CNDEV_SUCCESS;
}

cndevRet_t cndevGetNUMANodeIdByDevId(cndevNUMANodeId_t *numaNodeId, cndevDevice_t device) {
    fam_device_t d;
    cndevRet_t rc = lookup(device, &d);
    if (rc != CNDEV_SUCCESS)
        return rc;
    if (!numaNodeId)
        return CNDEV_ERROR_INVALID_ARGUMENT;
    if (!version_ok(numaNodeId->version))
        return CNDEV_ERROR_UNSUPPORTED_API_VERSION;
    numaNodeId->nodeId = d.numa;
    return CNDEV_SUCCESS;
}

cndevRet_t cndevGetCardHealthState(cndevCardHealthState_t *cardHealthState, cndevDevice_t device) {
    fam_device_t d;
    cndevRet_t rc = lookup(device, &d);
    if (rc != CNDEV_SUCCESS)
        return rc;
    if (!cardHealthState)
        return CNDEV_ERROR_INVALID_ARGUMENT;
    if (!version_ok(cardHealthState->version))
        return CNDEV_ERROR_UNSUPPORTED_API_VERSION;
    cardHealthState->health = d.healthy ? 1 : 0;
    cardHealthState->deviceState =
        d.healthy ? CNDEV_HEALTH_STATE_DEVICE_GOOD : CNDEV_HEALTH_STATE_DEVICE_IN_PROBLEM;
    cardHealthState->driverState = CNDEV_HEALTH_STATE_DRIVER_RUNNING;
    return CNDEV_SUCCESS;
}
