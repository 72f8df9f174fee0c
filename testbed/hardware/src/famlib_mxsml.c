/* Emulated libmxsml.so: see famlib_mxsml.h. Every query re-reads the devices file, so a health flip
 * (families.set_health) shows in the next mxSmlGetDeviceState as a driver's live state would. */
#include "famlib_mxsml.h"

#include <stdio.h>
#include <string.h>

#include "family_common.h"

#define VENDOR "metax"
#define VISIBLE_ENV "METAX_VISIBLE_DEVICES"
#define MACA_VERSION "2.32.0.6" /* what the emulated driver stack reports */

static int initialized;

/* The device this process sees at deviceId, or the code to return. MxSml.h has no "uninitialised"
 * code; unconfirmed: a call before mxSmlInit answers MXSML_Failure. */
static mxSmlReturn_t device_at(unsigned int deviceId, fam_device_t *out) {
    if (!initialized)
        return MXSML_Failure;
    fam_device_t devs[FAM_MAX_DEVICES];
    int n = fam_load(VENDOR, VISIBLE_ENV, devs, FAM_MAX_DEVICES);
    if (n == FAM_ERR_NO_DRIVER)
        return MXSML_NoDevice;
    if (n < 0)
        return MXSML_Failure;
    if (deviceId >= (unsigned int)n)
        return MXSML_InvalidDeviceId;
    *out = devs[deviceId];
    return MXSML_Success;
}

mxSmlReturn_t mxSmlInit(void) { return mxSmlInitWithFlags(0); }

mxSmlReturn_t mxSmlInitWithFlags(unsigned int flags) {
    (void)flags; /* REINIT re-reads the devices, which every call does anyway */
    fam_device_t devs[FAM_MAX_DEVICES];
    int n = fam_load(VENDOR, VISIBLE_ENV, devs, FAM_MAX_DEVICES);
    if (n == FAM_ERR_NO_DRIVER || n == 0)
        return MXSML_NoDevice; /* "no devices were discovered" */
    if (n < 0)
        return MXSML_Failure;
    initialized = 1;
    return MXSML_Success;
}

unsigned int mxSmlGetDeviceCount(void) {
    if (!initialized)
        return 0;
    fam_device_t devs[FAM_MAX_DEVICES];
    int n = fam_load(VENDOR, VISIBLE_ENV, devs, FAM_MAX_DEVICES);
    return n < 0 ? 0 : (unsigned int)n;
}

/* no SR-IOV on the emulated cards: every device is a physical function */
unsigned int mxSmlGetPfDeviceCount(void) { return mxSmlGetDeviceCount(); }

mxSmlReturn_t mxSmlGetDeviceInfo(unsigned int deviceId, mxSmlDeviceInfo_t *info) {
    fam_device_t d;
    mxSmlReturn_t rc = device_at(deviceId, &d);
    if (rc != MXSML_Success)
        return rc;
    if (!info)
        return MXSML_InvalidInput;
    memset(info, 0, sizeof *info);
    info->deviceId = deviceId;
    info->gpuId = (unsigned int)d.index;
    info->nodeId = (unsigned int)d.index;
    info->brand = MXSML_Brand_C; /* the C-series (C500) training cards */
    info->mode = MXSML_Virtualization_Mode_None;
    if (fam_copy(info->bdfId, sizeof info->bdfId, d.bus_id) || fam_copy(info->uuid, sizeof info->uuid, d.uuid) ||
        fam_copy(info->deviceName, sizeof info->deviceName, d.model))
        return MXSML_Failure;
    return MXSML_Success;
}

mxSmlReturn_t mxSmlGetMemoryInfo(unsigned int deviceId, mxSmlMemoryInfo_t *info) {
    fam_device_t d;
    mxSmlReturn_t rc = device_at(deviceId, &d);
    if (rc != MXSML_Success)
        return rc;
    if (!info)
        return MXSML_InvalidInput;
    memset(info, 0, sizeof *info);
    info->vramTotal = (long)(d.memory_mib * 1024ULL); /* KB */
    info->visVramTotal = info->vramTotal;
    return MXSML_Success;
}

/* nodeSet: a bitmask of the device's ideal NUMA nodes, 32 nodes per word (node 1 -> nodeSet[0] = 0x2) */
mxSmlReturn_t mxSmlGetNodeAffinity(unsigned int deviceId, unsigned int nodeSetSize, unsigned int *nodeSet) {
    fam_device_t d;
    mxSmlReturn_t rc = device_at(deviceId, &d);
    if (rc != MXSML_Success)
        return rc;
    if (!nodeSet || nodeSetSize == 0)
        return MXSML_InvalidInput;
    memset(nodeSet, 0, sizeof *nodeSet * nodeSetSize);
    if (d.numa >= 0 && (unsigned int)d.numa / 32 < nodeSetSize)
        nodeSet[d.numa / 32] = 1U << (d.numa % 32);
    return MXSML_Success;
}

/* deviceState: 1 available, 0 not available */
mxSmlReturn_t mxSmlGetDeviceState(unsigned int deviceId, int *deviceState) {
    fam_device_t d;
    mxSmlReturn_t rc = device_at(deviceId, &d);
    if (rc != MXSML_Success)
        return rc;
    if (!deviceState)
        return MXSML_InvalidInput;
    *deviceState = d.healthy ? 1 : 0;
    return MXSML_Success;
}

/* size in: the buffer's size; out: the bytes needed (with the terminator) when it is too small */
static mxSmlReturn_t copy_sized(char *dst, unsigned int *size, const char *src) {
    if (!dst || !size)
        return MXSML_InvalidInput;
    unsigned int need = (unsigned int)strlen(src) + 1;
    if (*size < need) {
        *size = need;
        return MXSML_InsufficientSize;
    }
    memcpy(dst, src, need);
    *size = need;
    return MXSML_Success;
}

/* the emulated board serial is the card's UUID */
mxSmlReturn_t mxSmlGetBoardSerial(unsigned int deviceId, char *serial, unsigned int *size) {
    fam_device_t d;
    mxSmlReturn_t rc = device_at(deviceId, &d);
    return rc != MXSML_Success ? rc : copy_sized(serial, size, d.uuid);
}

mxSmlReturn_t mxSmlGetMacaVersion(char *version, unsigned int *size) {
    if (!initialized)
        return MXSML_Failure;
    return copy_sized(version, size, MACA_VERSION);
}

const char *mxSmlGetErrorString(mxSmlReturn_t result) {
    switch (result) {
    case MXSML_Success: return "Success";
    case MXSML_Failure: return "Failure";
    case MXSML_NoDevice: return "No device";
    case MXSML_OperationNotSupport: return "Operation not supported";
    case MXSML_InvalidDeviceId: return "Invalid device id";
    case MXSML_InvalidInput: return "Invalid input";
    case MXSML_InsufficientSize: return "Insufficient size";
    default: return "Unknown error";
    }
}
