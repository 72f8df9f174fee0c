/*
 * Emulated Kunlunxin XPUML (libxpuml.so) over the node's devices.conf (family_common.h), seen through
 * XPU_VISIBLE_DEVICES as Kunlunxin's runtime mounts devices: indexes are re-numbered from 0 in the
 * listed order, minor numbers (/dev/xpu<minor>) stay physical. The file is re-read on every query, so a
 * health flip shows at once (a faulted card reports XPUML_DEVICE_STATE_ERROR, what the plugin's health
 * loop checks).
 */
#define _GNU_SOURCE
#include "famlib_xpuml.h"

#include <stdio.h>
#include <string.h>

#include "family_common.h"

#define API __attribute__((visibility("default")))
#define VENDOR "kunlunxin"
#define VISIBLE_ENV "XPU_VISIBLE_DEVICES"

#define DRIVER_VERSION "5.0.21"
#define XPUML_VERSION "5.0.21"
#define PCI_VENDOR_ID 0x1d22u /* Baidu / Kunlunxin; the P800's device id is not published: 0 */
#define PAGE_SIZE_BYTES 4096ull

struct xpuml_device_st {
    unsigned slot; /* position among the visible devices */
};

static struct xpuml_device_st handles[FAM_MAX_DEVICES];
static int init_count;

static xpumlReturn_t load(fam_device_t *out, int *count) {
    int n = fam_load(VENDOR, VISIBLE_ENV, out, FAM_MAX_DEVICES);
    if (n < 0)
        return n == FAM_ERR_NO_DRIVER ? XPUML_ERROR_DRIVER_NOT_LOADED : XPUML_ERROR_UNKNOWN;
    *count = n;
    return XPUML_SUCCESS;
}

static xpumlReturn_t lookup(xpumlDevice_t device, fam_device_t *out) {
    if (init_count <= 0)
        return XPUML_ERROR_UNINITIALIZED;
    if (!device || device < handles || device >= handles + FAM_MAX_DEVICES)
        return XPUML_ERROR_INVALID_ARGUMENT;
    fam_device_t all[FAM_MAX_DEVICES];
    int n = 0;
    xpumlReturn_t rc = load(all, &n);
    if (rc != XPUML_SUCCESS)
        return rc;
    if (device->slot >= (unsigned)n)
        return XPUML_ERROR_XPU_IS_LOST;
    *out = all[device->slot];
    return XPUML_SUCCESS;
}

static xpumlReturn_t copy_out(char *dst, unsigned int length, const char *src) {
    if (!dst)
        return XPUML_ERROR_INVALID_ARGUMENT;
    return fam_copy(dst, length, src) ? XPUML_ERROR_INSUFFICIENT_SIZE : XPUML_SUCCESS;
}

API xpumlReturn_t xpumlInit(void) {
    fam_device_t all[FAM_MAX_DEVICES];
    int n = 0;
    xpumlReturn_t rc = load(all, &n);
    if (rc != XPUML_SUCCESS)
        return rc;
    for (unsigned i = 0; i < FAM_MAX_DEVICES; i++)
        handles[i].slot = i;
    init_count++;
    return XPUML_SUCCESS;
}

API xpumlReturn_t xpumlShutdown(void) {
    if (init_count <= 0)
        return XPUML_ERROR_UNINITIALIZED;
    init_count--;
    return XPUML_SUCCESS;
}

API const char *xpumlErrorString(xpumlReturn_t result) {
    switch (result) {
    case XPUML_SUCCESS: return "Success";
    case XPUML_ERROR_UNINITIALIZED: return "Uninitialized";
    case XPUML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case XPUML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case XPUML_ERROR_NOT_FOUND: return "Not Found";
    case XPUML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case XPUML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case XPUML_ERROR_XPU_IS_LOST: return "XPU is lost";
    default: return "Unknown Error";
    }
}

API xpumlReturn_t xpumlSystemGetDriverVersion(char *version, unsigned int length) {
    if (init_count <= 0)
        return XPUML_ERROR_UNINITIALIZED;
    return copy_out(version, length, DRIVER_VERSION);
}

API xpumlReturn_t xpumlSystemGetXPUMLVersion(char *version, unsigned int length) {
    if (init_count <= 0)
        return XPUML_ERROR_UNINITIALIZED;
    return copy_out(version, length, XPUML_VERSION);
}

API xpumlReturn_t xpumlDeviceGetCount(unsigned int *deviceCount) {
    if (init_count <= 0)
        return XPUML_ERROR_UNINITIALIZED;
    if (!deviceCount)
        return XPUML_ERROR_INVALID_ARGUMENT;
    fam_device_t all[FAM_MAX_DEVICES];
    int n = 0;
    xpumlReturn_t rc = load(all, &n);
    if (rc == XPUML_SUCCESS)
        *deviceCount = (unsigned)n;
    return rc;
}

API xpumlReturn_t xpumlDeviceGetHandleByIndex(unsigned int index, xpumlDevice_t *device) {
    if (init_count <= 0)
        return XPUML_ERROR_UNINITIALIZED;
    if (!device)
        return XPUML_ERROR_INVALID_ARGUMENT;
    fam_device_t all[FAM_MAX_DEVICES];
    int n = 0;
    xpumlReturn_t rc = load(all, &n);
    if (rc != XPUML_SUCCESS)
        return rc;
    if (index >= (unsigned)n)
        return XPUML_ERROR_INVALID_ARGUMENT;
    *device = &handles[index];
    return XPUML_SUCCESS;
}

API xpumlReturn_t xpumlDeviceGetAttributes(xpumlDevice_t device, xpumlDeviceAttributes_t *attributes) {
    fam_device_t d;
    xpumlReturn_t rc = lookup(device, &d);
    if (rc != XPUML_SUCCESS)
        return rc;
    if (!attributes)
        return XPUML_ERROR_INVALID_ARGUMENT;
    memset(attributes, 0, sizeof *attributes);
    attributes->archId = XPUML_DEVICE_ARCH_KL3;
    attributes->boardId = XPUML_DEVICE_BOARD_UNKNOWN;
    attributes->modelId = XPUML_DEVICE_MODEL_KL3;
    attributes->clusterCount = d.compute_units; /* the model's compute units (families.MODELS) */
    attributes->globalMemorySizeMB = d.memory_mib;
    return XPUML_SUCCESS;
}

API xpumlReturn_t xpumlDeviceGetName(xpumlDevice_t device, char *name, unsigned int length) {
    fam_device_t d;
    xpumlReturn_t rc = lookup(device, &d);
    return rc != XPUML_SUCCESS ? rc : copy_out(name, length, d.model);
}

API xpumlReturn_t xpumlDeviceGetSerial(xpumlDevice_t device, char *serial, unsigned int length) {
    fam_device_t d;
    xpumlReturn_t rc = lookup(device, &d);
    return rc != XPUML_SUCCESS ? rc : copy_out(serial, length, d.uuid);
}

API xpumlReturn_t xpumlDeviceGetMinorNumber(xpumlDevice_t device, unsigned int *minorNumber) {
    fam_device_t d;
    xpumlReturn_t rc = lookup(device, &d);
    if (rc != XPUML_SUCCESS)
        return rc;
    if (!minorNumber)
        return XPUML_ERROR_INVALID_ARGUMENT;
    *minorNumber = (unsigned)d.index;
    return XPUML_SUCCESS;
}

API xpumlReturn_t xpumlDeviceGetPciInfo(xpumlDevice_t device, xpumlPciInfo_t *pci) {
    fam_device_t d;
    xpumlReturn_t rc = lookup(device, &d);
    if (rc != XPUML_SUCCESS)
        return rc;
    if (!pci)
        return XPUML_ERROR_INVALID_ARGUMENT;
    memset(pci, 0, sizeof *pci);
    unsigned domain, bus, dev, fn;
    if (sscanf(d.bus_id, "%x:%x:%x.%x", &domain, &bus, &dev, &fn) != 4)
        return XPUML_SUCCESS; /* no PCI address on record: empty id */
    pci->domain = domain;
    pci->bus = bus & 0xff;
    pci->device = dev & 0x1f;
    pci->function = fn & 0x7;
    pci->pciDeviceId = PCI_VENDOR_ID;
    snprintf(pci->busId, sizeof pci->busId, "%08X:%02X:%02X.%01X", pci->domain, pci->bus, pci->device,
             pci->function);
    return XPUML_SUCCESS;
}

API xpumlReturn_t xpumlDeviceGetMemoryInfo(xpumlDevice_t device, xpumlMemory_t *memory) {
    fam_device_t d;
    xpumlReturn_t rc = lookup(device, &d);
    if (rc != XPUML_SUCCESS)
        return rc;
    if (!memory)
        return XPUML_ERROR_INVALID_ARGUMENT;
    memset(memory, 0, sizeof *memory);
    memory->pageSizeGlobalMemory = PAGE_SIZE_BYTES;
    memory->totalGlobalMemory = d.memory_mib << 20;
    memory->freeGlobalMemory = memory->totalGlobalMemory; /* the emulated cards run nothing of their own */
    return XPUML_SUCCESS;
}

API xpumlReturn_t xpumlDeviceGetState(xpumlDevice_t device, xpumlDeviceState_t *state) {
    fam_device_t d;
    xpumlReturn_t rc = lookup(device, &d);
    if (rc != XPUML_SUCCESS)
        return rc;
    if (!state)
        return XPUML_ERROR_INVALID_ARGUMENT;
    *state = d.healthy ? XPUML_DEVICE_STATE_RUNNING : XPUML_DEVICE_STATE_ERROR;
    return XPUML_SUCCESS;
}

API xpumlReturn_t xpumlDeviceGetHostVxpuMode(xpumlDevice_t device, xpumlHostVxpuMode_t *mode) {
    fam_device_t d;
    xpumlReturn_t rc = lookup(device, &d);
    if (rc != XPUML_SUCCESS)
        return rc;
    if (!mode)
        return XPUML_ERROR_INVALID_ARGUMENT;
    *mode = XPUML_HOST_VXPU_MODE_NON_SRIOV; /* HAMi's vXPU splits cards in software, not by SR-IOV */
    return XPUML_SUCCESS;
}

API xpumlReturn_t xpumlDeviceGetNumaNodeId(xpumlDevice_t device, unsigned int *node) {
    fam_device_t d;
    xpumlReturn_t rc = lookup(device, &d);
    if (rc != XPUML_SUCCESS)
        return rc;
    if (!node)
        return XPUML_ERROR_INVALID_ARGUMENT;
    if (d.numa < 0)
        return XPUML_ERROR_NOT_SUPPORTED;
    *node = (unsigned)d.numa;
    return XPUML_SUCCESS;
}
