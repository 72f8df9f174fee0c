/*
 * Our own declarations of the part of Iluvatar CoreX's management library (IXML, libixml.so) that
 * Iluvatar's device plugin (ix-device-plugin, through the go-ixml bindings) calls. IXML keeps NVML's
 * shape: its entry points carry NVML's names (nvmlInit_v2, nvmlDeviceGetCount_v2, ...), NVML's return
 * codes and structs, plus a few ixml* extensions (ixmlDeviceGetHealth). Facts from go-ixml's published
 * API (IX driver 4.2.0); the declarations are ours.
 *
 * unconfirmed: nvmlDeviceGetNumaNodeId. IXML 4.2.0 has no NUMA query (the plugin reads
 * /sys/bus/pci/devices/<busIdLegacy>/numa_node); we export NVML's own NUMA call in its NVML shape so the
 * binding learns the node the emulated hardware assigned.
 */
#ifndef HAMI_FAMLIB_IXML_H
#define HAMI_FAMLIB_IXML_H

typedef enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_DRIVER_NOT_LOADED = 9,
    NVML_ERROR_GPU_IS_LOST = 15,
    NVML_ERROR_UNKNOWN = 999,
} nvmlReturn_t;

typedef struct ixml_device_st *nvmlDevice_t;

#define NVML_DEVICE_UUID_BUFFER_SIZE 80
#define NVML_DEVICE_NAME_BUFFER_SIZE 64
#define NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE 80
#define NVML_SYSTEM_NVML_VERSION_BUFFER_SIZE 80
#define NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE 32
#define NVML_DEVICE_PCI_BUS_ID_BUFFER_V2_SIZE 16

typedef struct {
    unsigned long long total; /* bytes */
    unsigned long long free;
    unsigned long long used;
} nvmlMemory_t;

typedef struct {
    char busIdLegacy[NVML_DEVICE_PCI_BUS_ID_BUFFER_V2_SIZE]; /* "0000:1A:00.0" */
    unsigned int domain;
    unsigned int bus;
    unsigned int device;
    unsigned int pciDeviceId;
    unsigned int pciSubSystemId;
    char busId[NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE]; /* "00000000:1A:00.0" */
} nvmlPciInfo_t;

/* ixmlDeviceGetHealth bits (0: healthy) */
#define IXML_HEALTH_OK 0x0ULL
#define IXML_HEALTH_SYSHUB_ERROR 0x1ULL
#define IXML_HEALTH_MC_ERROR 0x2ULL
#define IXML_HEALTH_OVER_TEMP_ERROR 0x4ULL
#define IXML_HEALTH_OVER_VOLTAGE_ERROR 0x8ULL
#define IXML_HEALTH_ECC_ERROR 0x10ULL
#define IXML_HEALTH_MEMORY_ERROR 0x20ULL
#define IXML_HEALTH_PCIE_ERROR 0x40ULL

nvmlReturn_t nvmlInit_v2(void);
nvmlReturn_t nvmlShutdown(void);
const char *nvmlErrorString(nvmlReturn_t result);
nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length);
nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length);
nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *cudaDriverVersion);
nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *deviceCount);
nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device);
nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device);
nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index);
nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t device, unsigned int *minorNumber);
nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length);
nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length);
nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory);
nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci);
nvmlReturn_t nvmlDeviceGetNumaNodeId(nvmlDevice_t device, unsigned int *node); /* unconfirmed, see above */
nvmlReturn_t ixmlDeviceGetHealth(nvmlDevice_t device, unsigned long long *health);

#endif
