/*
 * Emulated MTML (libmtml.so) over the node's Moore Threads devices (family_common: <dir>/mthreads/
 * devices.conf, filtered by MTHREADS_VISIBLE_DEVICES as Moore Threads' runtime mounts the device
 * nodes). Every query re-reads the file, so a health flip shows at the next call.
 *
 * MTML keeps no global state: a caller holds a library object (mtmlLibraryInit) and device objects
 * made from it. Emulation choices (see testbed/hardware/README.md, "unconfirmed" there):
 * - "not initialised" is a NULL or shut-down library object: MTML_ERROR_INVALID_ARGUMENT (MTML has no
 *   uninitialised code); no driver (no devices file) is MTML_ERROR_DRIVER_NOT_LOADED from
 *   mtmlLibraryInit;
 * - MTML 2.2 has no health query; an unhealthy device fails its driver access when the caller opens
 *   its GPU (mtmlDeviceInitGpu -> MTML_ERROR_DRIVER_FAILURE), which is how the binding reads health;
 * - the core count is the emulated model's compute units (HAMi's 16 sGPU cores per card), so the
 *   plugin's view equals the testbed's devices.json;
 * - the NUMA node is the single bit of mtmlDeviceGetMemoryAffinityWithinNode.
 */
#include "famlib_mtml.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "family_common.h"

#define VENDOR "mthreads"
#define VISIBLE_ENV "MTHREADS_VISIBLE_DEVICES"
#define LIB_MAGIC 0x4d544d4cu /* "MTML" */
#define DEV_MAGIC 0x4d544456u
#define GPU_MAGIC 0x4d544750u
#define MEM_MAGIC 0x4d544d45u

struct MtmlLibrary {
    unsigned magic;
};

struct MtmlDevice {
    unsigned magic;
    char uuid[96]; /* the device's identity across re-reads */
};

struct MtmlGpu {
    unsigned magic;
};

struct MtmlMemory {
    unsigned magic;
    unsigned long long total_bytes;
};

static MtmlReturn from_fam(int rc) {
    return rc == FAM_ERR_NO_DRIVER ? MTML_ERROR_DRIVER_NOT_LOADED : MTML_ERROR_DRIVER_FAILURE;
}

static int lib_ok(const MtmlLibrary *lib) {
    return lib && lib->magic == LIB_MAGIC;
}

/* the device object's device, freshly read; its position among the visible ones in *pos */
static MtmlReturn lookup(const MtmlDevice *dev, fam_device_t *out, unsigned *pos) {
    if (!dev || dev->magic != DEV_MAGIC)
        return MTML_ERROR_INVALID_ARGUMENT;
    fam_device_t all[FAM_MAX_DEVICES];
    int n = fam_load(VENDOR, VISIBLE_ENV, all, FAM_MAX_DEVICES);
    if (n < 0)
        return from_fam(n);
    for (int i = 0; i < n; i++)
        if (strcmp(all[i].uuid, dev->uuid) == 0) {
            *out = all[i];
            if (pos)
                *pos = (unsigned)i;
            return MTML_SUCCESS;
        }
    return MTML_ERROR_NOT_FOUND; /* gone since the object was made */
}

static MtmlReturn copy_out(char *dst, unsigned length, const char *src) {
    if (strlen(src) + 1 > length)
        return MTML_ERROR_INSUFFICIENT_SIZE;
    memcpy(dst, src, strlen(src) + 1);
    return MTML_SUCCESS;
}

MtmlReturn mtmlLibraryInit(MtmlLibrary **lib) {
    if (!lib)
        return MTML_ERROR_INVALID_ARGUMENT;
    fam_device_t all[FAM_MAX_DEVICES];
    int n = fam_load(VENDOR, VISIBLE_ENV, all, FAM_MAX_DEVICES);
    if (n < 0)
        return from_fam(n);
    MtmlLibrary *l = malloc(sizeof *l);
    if (!l)
        return MTML_ERROR_INSUFFICIENT_MEMORY;
    l->magic = LIB_MAGIC;
    *lib = l;
    return MTML_SUCCESS;
}

MtmlReturn mtmlLibraryShutDown(MtmlLibrary *lib) {
    if (!lib_ok(lib))
        return MTML_ERROR_INVALID_ARGUMENT;
    lib->magic = 0;
    free(lib);
    return MTML_SUCCESS;
}

MtmlReturn mtmlLibraryCountDevice(const MtmlLibrary *lib, unsigned int *count) {
    if (!lib_ok(lib) || !count)
        return MTML_ERROR_INVALID_ARGUMENT;
    fam_device_t all[FAM_MAX_DEVICES];
    int n = fam_load(VENDOR, VISIBLE_ENV, all, FAM_MAX_DEVICES);
    if (n < 0)
        return from_fam(n);
    *count = (unsigned)n;
    return MTML_SUCCESS;
}

MtmlReturn mtmlLibraryInitDeviceByIndex(const MtmlLibrary *lib, unsigned int index, MtmlDevice **dev) {
    if (!lib_ok(lib) || !dev)
        return MTML_ERROR_INVALID_ARGUMENT;
    fam_device_t all[FAM_MAX_DEVICES];
    int n = fam_load(VENDOR, VISIBLE_ENV, all, FAM_MAX_DEVICES);
    if (n < 0)
        return from_fam(n);
    if (index >= (unsigned)n)
        return MTML_ERROR_INVALID_ARGUMENT;
    MtmlDevice *d = malloc(sizeof *d);
    if (!d)
        return MTML_ERROR_INSUFFICIENT_MEMORY;
    d->magic = DEV_MAGIC;
    memcpy(d->uuid, all[index].uuid, sizeof d->uuid);
    *dev = d;
    return MTML_SUCCESS;
}

MtmlReturn mtmlLibraryFreeDevice(MtmlDevice *dev) {
    if (!dev || dev->magic != DEV_MAGIC)
        return MTML_ERROR_INVALID_ARGUMENT;
    dev->magic = 0;
    free(dev);
    return MTML_SUCCESS;
}

MtmlReturn mtmlDeviceGetIndex(const MtmlDevice *dev, unsigned int *index) {
    fam_device_t d;
    unsigned pos = 0;
    if (!index)
        return MTML_ERROR_INVALID_ARGUMENT;
    MtmlReturn rc = lookup(dev, &d, &pos);
    if (rc == MTML_SUCCESS)
        *index = pos;
    return rc;
}

MtmlReturn mtmlDeviceGetUUID(const MtmlDevice *dev, char *uuid, unsigned int length) {
    fam_device_t d;
    if (!uuid)
        return MTML_ERROR_INVALID_ARGUMENT;
    MtmlReturn rc = lookup(dev, &d, NULL);
    return rc != MTML_SUCCESS ? rc : copy_out(uuid, length, d.uuid);
}

MtmlReturn mtmlDeviceGetName(const MtmlDevice *dev, char *name, unsigned int length) {
    fam_device_t d;
    if (!name)
        return MTML_ERROR_INVALID_ARGUMENT;
    MtmlReturn rc = lookup(dev, &d, NULL);
    return rc != MTML_SUCCESS ? rc : copy_out(name, length, d.model);
}

MtmlReturn mtmlDeviceGetSerialNumber(const MtmlDevice *device, unsigned int length, char *serialNumber) {
    fam_device_t d;
    if (!serialNumber)
        return MTML_ERROR_INVALID_ARGUMENT;
    MtmlReturn rc = lookup(device, &d, NULL);
    if (rc != MTML_SUCCESS)
        return rc;
    char sn[sizeof d.uuid + 4];
    snprintf(sn, sizeof sn, "SN-%s", d.uuid); /* the testbed has no serials: one per UUID */
    return copy_out(serialNumber, length, sn);
}

MtmlReturn mtmlDeviceGetPciInfo(const MtmlDevice *dev, MtmlPciInfo *pci) {
    fam_device_t d;
    if (!pci)
        return MTML_ERROR_INVALID_ARGUMENT;
    MtmlReturn rc = lookup(dev, &d, NULL);
    if (rc != MTML_SUCCESS)
        return rc;
    unsigned seg = 0, bus = 0, slot = 0, fn = 0;
    if (sscanf(d.bus_id, "%x:%x:%x.%x", &seg, &bus, &slot, &fn) != 4)
        return MTML_ERROR_NOT_SUPPORTED; /* a device without a PCI address ("-") */
    memset(pci, 0, sizeof *pci);
    if (fam_copy(pci->sbdf, sizeof pci->sbdf, d.bus_id))
        return MTML_ERROR_UNKNOWN;
    pci->segment = seg;
    pci->bus = bus;
    pci->device = slot;
    pci->pciDeviceId = 0x1ed5; /* Moore Threads' PCI vendor id in the low half; no device id */
    pci->pciMaxSpeed = pci->pciCurSpeed = 32.0f;
    pci->pciMaxWidth = pci->pciCurWidth = 16;
    pci->pciMaxGen = pci->pciCurGen = 5;
    return MTML_SUCCESS;
}

MtmlReturn mtmlDeviceCountGpuCores(const MtmlDevice *device, unsigned int *numCores) {
    fam_device_t d;
    if (!numCores)
        return MTML_ERROR_INVALID_ARGUMENT;
    MtmlReturn rc = lookup(device, &d, NULL);
    if (rc == MTML_SUCCESS)
        *numCores = d.compute_units;
    return rc;
}

MtmlReturn mtmlDeviceGetMemoryAffinityWithinNode(const MtmlDevice *device, unsigned int nodeSetSize,
                                                 unsigned long *nodeSet) {
    fam_device_t d;
    if (!nodeSet || nodeSetSize == 0)
        return MTML_ERROR_INVALID_ARGUMENT;
    MtmlReturn rc = lookup(device, &d, NULL);
    if (rc != MTML_SUCCESS)
        return rc;
    unsigned bits = 8 * sizeof(unsigned long);
    if (d.numa < 0 || (unsigned)d.numa >= nodeSetSize * bits)
        return MTML_ERROR_INSUFFICIENT_SIZE;
    memset(nodeSet, 0, nodeSetSize * sizeof *nodeSet);
    nodeSet[(unsigned)d.numa / bits] = 1UL << ((unsigned)d.numa % bits);
    return MTML_SUCCESS;
}

MtmlReturn mtmlDeviceInitGpu(const MtmlDevice *dev, MtmlGpu **gpu) {
    fam_device_t d;
    if (!gpu)
        return MTML_ERROR_INVALID_ARGUMENT;
    MtmlReturn rc = lookup(dev, &d, NULL);
    if (rc != MTML_SUCCESS)
        return rc;
    if (!d.healthy)
        return MTML_ERROR_DRIVER_FAILURE; /* the driver cannot reach a faulted GPU */
    MtmlGpu *g = malloc(sizeof *g);
    if (!g)
        return MTML_ERROR_INSUFFICIENT_MEMORY;
    g->magic = GPU_MAGIC;
    *gpu = g;
    return MTML_SUCCESS;
}

MtmlReturn mtmlDeviceFreeGpu(MtmlGpu *gpu) {
    if (!gpu || gpu->magic != GPU_MAGIC)
        return MTML_ERROR_INVALID_ARGUMENT;
    gpu->magic = 0;
    free(gpu);
    return MTML_SUCCESS;
}

MtmlReturn mtmlDeviceInitMemory(const MtmlDevice *dev, MtmlMemory **mem) {
    fam_device_t d;
    if (!mem)
        return MTML_ERROR_INVALID_ARGUMENT;
    MtmlReturn rc = lookup(dev, &d, NULL);
    if (rc != MTML_SUCCESS)
        return rc;
    MtmlMemory *m = malloc(sizeof *m);
    if (!m)
        return MTML_ERROR_INSUFFICIENT_MEMORY;
    m->magic = MEM_MAGIC;
    m->total_bytes = d.memory_mib * 1024ULL * 1024ULL;
    *mem = m;
    return MTML_SUCCESS;
}

MtmlReturn mtmlDeviceFreeMemory(MtmlMemory *mem) {
    if (!mem || mem->magic != MEM_MAGIC)
        return MTML_ERROR_INVALID_ARGUMENT;
    mem->magic = 0;
    free(mem);
    return MTML_SUCCESS;
}

MtmlReturn mtmlMemoryGetTotal(const MtmlMemory *mem, unsigned long long *total) {
    if (!mem || mem->magic != MEM_MAGIC || !total)
        return MTML_ERROR_INVALID_ARGUMENT;
    *total = mem->total_bytes; /* bytes */
    return MTML_SUCCESS;
}

const char *mtmlErrorString(MtmlReturn result) {
    switch (result) {
    case MTML_SUCCESS: return "Success";
    case MTML_ERROR_DRIVER_NOT_LOADED: return "Driver not loaded";
    case MTML_ERROR_DRIVER_FAILURE: return "Driver failure";
    case MTML_ERROR_INVALID_ARGUMENT: return "Invalid argument";
    case MTML_ERROR_NOT_SUPPORTED: return "Not supported";
    case MTML_ERROR_INSUFFICIENT_SIZE: return "Insufficient size";
    case MTML_ERROR_NOT_FOUND: return "Not found";
    case MTML_ERROR_INSUFFICIENT_MEMORY: return "Insufficient memory";
    default: return "Unknown error";
    }
}
