/*
 * Our own declarations of the part of Kunlunxin's XPU management library (XPUML, libxpuml.so) that
 * Kunlunxin's device plugins (xpu-device-plugin / vxpu-device-plugin, through the go-xpuml bindings)
 * call. XPUML follows NVML's shape with its own prefix: xpumlInit, xpumlDeviceGetCount,
 * xpumlDeviceGetHandleByIndex, per-device queries taking an xpumlDevice_t, NVML's return codes. Facts
 * from Kunlunxin's published xpuml.h / go-xpuml; the declarations are ours.
 *
 * unconfirmed: xpumlDeviceGetNumaNodeId. No published XPUML has a NUMA query; we export one in
 * NVML's shape (nvmlDeviceGetNumaNodeId) so the binding learns the node the emulated hardware assigned.
 * unconfirmed: P800 (Kunlun P-series, arch KL3) model id: the published model enum stops at the
 * generic XPUML_DEVICE_MODEL_KL3 (300), which we report; the card's name comes from xpumlDeviceGetName.
 * The device UUID is the board serial (xpumlDeviceGetSerial): XPUML exports no UUID query.
 */
#ifndef HAMI_FAMLIB_XPUML_H
#define HAMI_FAMLIB_XPUML_H

typedef enum {
    XPUML_SUCCESS = 0,
    XPUML_ERROR_UNINITIALIZED = 1,
    XPUML_ERROR_INVALID_ARGUMENT = 2,
    XPUML_ERROR_NOT_SUPPORTED = 3,
    XPUML_ERROR_NOT_FOUND = 6,
    XPUML_ERROR_INSUFFICIENT_SIZE = 7,
    XPUML_ERROR_DRIVER_NOT_LOADED = 9,
    XPUML_ERROR_XPU_IS_LOST = 15,
    XPUML_ERROR_UNKNOWN = 999,
} xpumlReturn_t;

typedef struct xpuml_device_st *xpumlDevice_t;

#define XPUML_DEVICE_PCI_BUS_ID_BUFFER_SIZE 32
#define XPUML_DEVICE_NAME_BUFFER_SIZE 96
#define XPUML_DEVICE_SERIAL_BUFFER_SIZE (16 + 1)
#define XPUML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE 80
#define XPUML_SYSTEM_XPUML_VERSION_BUFFER_SIZE 80

typedef struct {
    unsigned int domain;
    unsigned int bus;
    unsigned int device;
    unsigned int function;
    unsigned int pciDeviceId;
    unsigned int pciSubSystemId;
    char busId[XPUML_DEVICE_PCI_BUS_ID_BUFFER_SIZE]; /* "%08X:%02X:%02X.%01X" */
    unsigned long long reserved[9];
} xpumlPciInfo_t;

typedef struct {
    unsigned long long pageSizeGlobalMemory;
    unsigned long long totalGlobalMemory; /* bytes */
    unsigned long long freeGlobalMemory;
    unsigned long long usedGlobalMemory;
    unsigned long long pageSizeL3Memory;
    unsigned long long totalL3Memory;
    unsigned long long freeL3Memory;
    unsigned long long usedL3Memory;
    unsigned long long reserved[8];
} xpumlMemory_t;

typedef struct {
    int archId;
    int boardId;
    int modelId;
    unsigned int clusterCount;
    unsigned int sdnnCount;
    unsigned int dmaEngineCount;
    unsigned int decoderCount;
    unsigned int encoderCount;
    unsigned int imgProcCount;
    unsigned int maxVFCount;
    unsigned long long globalMemorySizeMB;
    unsigned long long l3MemorySizeMB;
    unsigned long long sn[2];
    unsigned long long reserved[7];
} xpumlDeviceAttributes_t;

#define XPUML_DEVICE_ARCH_KL3 3
#define XPUML_DEVICE_BOARD_UNKNOWN 0
#define XPUML_DEVICE_MODEL_KL3 300

typedef enum {
    XPUML_DEVICE_STATE_UNUSED = 0,
    XPUML_DEVICE_STATE_RUNNING = 201,
    XPUML_DEVICE_STATE_IN_RESET = 205,
    XPUML_DEVICE_STATE_ERROR = 207,
    XPUML_DEVICE_STATE_IN_EXCEPTION = 208,
} xpumlDeviceState_t;

typedef enum {
    XPUML_HOST_VXPU_MODE_NON_SRIOV = 0,
    XPUML_HOST_VXPU_MODE_SRIOV_OFF = 1,
    XPUML_HOST_VXPU_MODE_SRIOV_ON = 2,
} xpumlHostVxpuMode_t;

xpumlReturn_t xpumlInit(void);
xpumlReturn_t xpumlShutdown(void);
const char *xpumlErrorString(xpumlReturn_t result);
xpumlReturn_t xpumlSystemGetDriverVersion(char *version, unsigned int length);
xpumlReturn_t xpumlSystemGetXPUMLVersion(char *version, unsigned int length);
xpumlReturn_t xpumlDeviceGetCount(unsigned int *deviceCount);
xpumlReturn_t xpumlDeviceGetHandleByIndex(unsigned int index, xpumlDevice_t *device);
xpumlReturn_t xpumlDeviceGetAttributes(xpumlDevice_t device, xpumlDeviceAttributes_t *attributes);
xpumlReturn_t xpumlDeviceGetName(xpumlDevice_t device, char *name, unsigned int length);
xpumlReturn_t xpumlDeviceGetSerial(xpumlDevice_t device, char *serial, unsigned int length);
xpumlReturn_t xpumlDeviceGetMinorNumber(xpumlDevice_t device, unsigned int *minorNumber);
xpumlReturn_t xpumlDeviceGetPciInfo(xpumlDevice_t device, xpumlPciInfo_t *pci);
xpumlReturn_t xpumlDeviceGetMemoryInfo(xpumlDevice_t device, xpumlMemory_t *memory);
xpumlReturn_t xpumlDeviceGetState(xpumlDevice_t device, xpumlDeviceState_t *state);
xpumlReturn_t xpumlDeviceGetHostVxpuMode(xpumlDevice_t device, xpumlHostVxpuMode_t *mode);
xpumlReturn_t xpumlDeviceGetNumaNodeId(xpumlDevice_t device, unsigned int *node); /* unconfirmed */

#endif
