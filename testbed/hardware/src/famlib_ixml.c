/*
 * Emulated Iluvatar CoreX IXML (libixml.so) over the node's devices.conf (family_common.h), seen through
 * ILUVATAR_VISIBLE_DEVICES as Iluvatar's runtime mounts devices: indexes are re-numbered from 0 in the
 * listed order, minor numbers stay physical. The file is re-read on every query, so a health flip shows
 * at once. Internal helpers are static: IXML's entry points carry NVML's names, and a call between two
 * exported functions could otherwise bind to another NVML-named library loaded in the same process.
 */
#define _GNU_SOURCE
#include "famlib_ixml.h"

#include <stdio.h>
#include <string.h>

#include "family_common.h"

#define API __attribute__((visibility("default")))
#define VENDOR "iluvatar"
#define VISIBLE_ENV "ILUVATAR_VISIBLE_DEVICES"

/* what an IX driver 4.2 node reports (the CUDA-compatible version is 10.2, as CoreX SDK 4.x offers) */
#define DRIVER_VERSION "4.2.0"
#define IXML_VERSION "4.2.0"
#define CUDA_VERSION 10020
#define PCI_DEVICE_ID 0x00011e3eu /* device 0x0001, vendor 0x1e3e (Iluvatar CoreX) */

struct ixml_device_st {
    unsigned slot; /* position among the visible devices */
};

static struct ixml_device_st handles[FAM_MAX_DEVICES];
static int init_count;

static nvmlReturn_t from_fam(int rc) {
    return rc == FAM_ERR_NO_DRIVER ? NVML_ERROR_DRIVER_NOT_LOADED : NVML_ERROR_UNKNOWN;
}

static nvmlReturn_t load(fam_device_t *out, int *count) {
    int n = fam_load(VENDOR, VISIBLE_ENV, out, FAM_MAX_DEVICES);
    if (n < 0)
        return from_fam(n);
    *count = n;
    return NVML_SUCCESS;
}

/* the live state of the device behind a handle */
static nvmlReturn_t lookup(nvmlDevice_t device, fam_device_t *out) {
    if (init_count <= 0)
        return NVML_ERROR_UNINITIALIZED;
    if (!device || device < handles || device >= handles + FAM_MAX_DEVICES)
        return NVML_ERROR_INVALID_ARGUMENT;
    fam_device_t all[FAM_MAX_DEVICES];
    int n = 0;
    nvmlReturn_t rc = load(all, &n);
    if (rc != NVML_SUCCESS)
        return rc;
    if (device->slot >= (unsigned)n)
        return NVML_ERROR_GPU_IS_LOST; /* the device went away since the handle was taken */
    *out = all[device->slot];
    return NVML_SUCCESS;
}

static nvmlReturn_t copy_out(char *dst, unsigned int length, const char *src) {
    if (!dst)
        return NVML_ERROR_INVALID_ARGUMENT;
    return fam_copy(dst, length, src) ? NVML_ERROR_INSUFFICIENT_SIZE : NVML_SUCCESS;
}

API nvmlReturn_t nvmlInit_v2(void) {
    fam_device_t all[FAM_MAX_DEVICES];
    int n = 0;
    nvmlReturn_t rc = load(all, &n);
    if (rc != NVML_SUCCESS)
        return rc;
    for (unsigned i = 0; i < FAM_MAX_DEVICES; i++)
        handles[i].slot = i;
    init_count++;
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlShutdown(void) {
    if (init_count <= 0)
        return NVML_ERROR_UNINITIALIZED;
    init_count--;
    return NVML_SUCCESS;
}

API const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    default: return "Unknown Error";
    }
}

API nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    if (init_count <= 0)
        return NVML_ERROR_UNINITIALIZED;
    return copy_out(version, length, DRIVER_VERSION);
}

API nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length) {
    if (init_count <= 0)
        return NVML_ERROR_UNINITIALIZED;
    return copy_out(version, length, IXML_VERSION);
}

API nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *cudaDriverVersion) {
    if (!cudaDriverVersion)
        return NVML_ERROR_INVALID_ARGUMENT;
    *cudaDriverVersion = CUDA_VERSION;
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *deviceCount) {
    if (init_count <= 0)
        return NVML_ERROR_UNINITIALIZED;
    if (!deviceCount)
        return NVML_ERROR_INVALID_ARGUMENT;
    fam_device_t all[FAM_MAX_DEVICES];
    int n = 0;
    nvmlReturn_t rc = load(all, &n);
    if (rc == NVML_SUCCESS)
        *deviceCount = (unsigned)n;
    return rc;
}

API nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    if (init_count <= 0)
        return NVML_ERROR_UNINITIALIZED;
    if (!device)
        return NVML_ERROR_INVALID_ARGUMENT;
    fam_device_t all[FAM_MAX_DEVICES];
    int n = 0;
    nvmlReturn_t rc = load(all, &n);
    if (rc != NVML_SUCCESS)
        return rc;
    if (index >= (unsigned)n)
        return NVML_ERROR_INVALID_ARGUMENT;
    *device = &handles[index];
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device) {
    if (init_count <= 0)
        return NVML_ERROR_UNINITIALIZED;
    if (!uuid || !device)
        return NVML_ERROR_INVALID_ARGUMENT;
    fam_device_t all[FAM_MAX_DEVICES];
    int n = 0;
    nvmlReturn_t rc = load(all, &n);
    if (rc != NVML_SUCCESS)
        return rc;
    for (int i = 0; i < n; i++)
        if (strcmp(all[i].uuid, uuid) == 0) {
            *device = &handles[i];
            return NVML_SUCCESS;
        }
    return NVML_ERROR_NOT_FOUND;
}

API nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index) {
    fam_device_t d;
    nvmlReturn_t rc = lookup(device, &d);
    if (rc != NVML_SUCCESS)
        return rc;
    if (!index)
        return NVML_ERROR_INVALID_ARGUMENT;
    *index = device->slot;
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t device, unsigned int *minorNumber) {
    fam_device_t d;
    nvmlReturn_t rc = lookup(device, &d);
    if (rc != NVML_SUCCESS)
        return rc;
    if (!minorNumber)
        return NVML_ERROR_INVALID_ARGUMENT;
    *minorNumber = (unsigned)d.index; /* /dev/iluvatar<minor>: the physical index */
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
    fam_device_t d;
    nvmlReturn_t rc = lookup(device, &d);
    return rc != NVML_SUCCESS ? rc : copy_out(uuid, length, d.uuid);
}

API nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    fam_device_t d;
    nvmlReturn_t rc = lookup(device, &d);
    return rc != NVML_SUCCESS ? rc : copy_out(name, length, d.model);
}

API nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory) {
    fam_device_t d;
    nvmlReturn_t rc = lookup(device, &d);
    if (rc != NVML_SUCCESS)
        return rc;
    if (!memory)
        return NVML_ERROR_INVALID_ARGUMENT;
    memory->total = d.memory_mib << 20;
    memory->used = 0; /* the emulated cards run nothing of their own */
    memory->free = memory->total;
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci) {
    fam_device_t d;
    nvmlReturn_t rc = lookup(device, &d);
    if (rc != NVML_SUCCESS)
        return rc;
    if (!pci)
        return NVML_ERROR_INVALID_ARGUMENT;
    memset(pci, 0, sizeof *pci);
    unsigned domain, bus, dev, fn;
    if (sscanf(d.bus_id, "%x:%x:%x.%x", &domain, &bus, &dev, &fn) != 4)
        return NVML_SUCCESS; /* no PCI address on record: empty ids, as a device without one */
    pci->domain = domain;
    pci->bus = bus;
    pci->device = dev;
    pci->pciDeviceId = PCI_DEVICE_ID;
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%04X:%02X:%02X.%X", domain & 0xffff, bus & 0xff,
             dev & 0x1f, fn & 0x7);
    snprintf(pci->busId, sizeof pci->busId, "%08X:%02X:%02X.%X", domain, bus & 0xff, dev & 0x1f, fn & 0x7);
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetNumaNodeId(nvmlDevice_t device, unsigned int *node) {
    fam_device_t d;
    nvmlReturn_t rc = lookup(device, &d);
    if (rc != NVML_SUCCESS)
        return rc;
    if (!node)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (d.numa < 0)
        return NVML_ERROR_NOT_SUPPORTED; /* sysfs numa_node -1: no affinity */
    *node = (unsigned)d.numa;
    return NVML_SUCCESS;
}

API nvmlReturn_t ixmlDeviceGetHealth(nvmlDevice_t device, unsigned long long *health) {
    fam_device_t d;
    nvmlReturn_t rc = lookup(device, &d);
    if (rc != NVML_SUCCESS)
        return rc;
    if (!health)
        return NVML_ERROR_INVALID_ARGUMENT;
    /* a faulted card reports a memory-controller error, one of the bits the plugin turns unhealthy on */
    *health = d.healthy ? IXML_HEALTH_OK : IXML_HEALTH_MC_ERROR;
    return NVML_SUCCESS;
}
