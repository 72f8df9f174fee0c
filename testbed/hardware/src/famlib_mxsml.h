/*
 * Emulated MetaX System Management Library (mx-smi's libmxsml.so): our own declarations of the subset of
 * its C API MetaX's device plugins read devices through (MetaX's Go binding go-mxsml wraps the same
 * calls): init, device count, per-device info (UUID, PCI BDF, name), memory (KB), NUMA affinity, state,
 * board serial and error strings. Names, argument order, struct field order and return codes follow
 * the published MxSml.h (MXSML 2.x); the values come from <dir>/metax/devices.conf (family_common.h).
 */
#ifndef HAMI_FAMLIB_MXSML_H
#define HAMI_FAMLIB_MXSML_H

#define MXSML_API __attribute__((visibility("default")))

typedef enum {
    MXSML_Success = 0,
    MXSML_Failure = 1,
    MXSML_NoDevice = 2,
    MXSML_OperationNotSupport = 3,
    MXSML_SysfsError = 4,
    MXSML_SysfsWriteError = 5,
    MXSML_InvalidDeviceId = 6,
    MXSML_InvalidDieId = 7,
    MXSML_PermissionDenied = 8,
    MXSML_InvalidInput = 9,
    MXSML_InsufficientSize = 10,
} mxSmlReturn_t;

typedef enum { MXSML_Brand_Unknown = 0, MXSML_Brand_N, MXSML_Brand_C, MXSML_Brand_G } mxSmlDeviceBrand_t;
typedef enum {
    MXSML_Virtualization_Mode_None = 0,
    MXSML_Virtualization_Mode_Pf,
    MXSML_Virtualization_Mode_Vf
} mxSmlDeviceVirtualizationMode_t;

#define DEVICE_BDF_ID_SIZE 32
#define DEVICE_UUID_SIZE 96
#define DEVICE_NAME_SIZE 32

typedef struct {
    unsigned int deviceId; /* the index in this process's view */
    unsigned int type;     /* deprecated, always 0 */
    char bdfId[DEVICE_BDF_ID_SIZE];
    unsigned int gpuId;  /* the GPU's sequence label: its physical index on the node */
    unsigned int nodeId; /* unconfirmed: the driver's node number, the physical index here */
    char uuid[DEVICE_UUID_SIZE];
    mxSmlDeviceBrand_t brand;
    mxSmlDeviceVirtualizationMode_t mode;
    char deviceName[DEVICE_NAME_SIZE];
} mxSmlDeviceInfo_t;

/* device memory per domain, unit: KB */
typedef struct {
    long visVramTotal;
    long visVramUse;
    long vramTotal;
    long vramUse;
    long xttTotal;
    long xttUse;
} mxSmlMemoryInfo_t;

MXSML_API mxSmlReturn_t mxSmlInit(void);
MXSML_API mxSmlReturn_t mxSmlInitWithFlags(unsigned int flags);
MXSML_API unsigned int mxSmlGetDeviceCount(void);
MXSML_API unsigned int mxSmlGetPfDeviceCount(void);
MXSML_API mxSmlReturn_t mxSmlGetDeviceInfo(unsigned int deviceId, mxSmlDeviceInfo_t *info);
MXSML_API mxSmlReturn_t mxSmlGetMemoryInfo(unsigned int deviceId, mxSmlMemoryInfo_t *info);
MXSML_API mxSmlReturn_t mxSmlGetNodeAffinity(unsigned int deviceId, unsigned int nodeSetSize, unsigned int *nodeSet);
MXSML_API mxSmlReturn_t mxSmlGetDeviceState(unsigned int deviceId, int *deviceState);
MXSML_API mxSmlReturn_t mxSmlGetBoardSerial(unsigned int deviceId, char *serial, unsigned int *size);
MXSML_API mxSmlReturn_t mxSmlGetMacaVersion(char *version, unsigned int *size);
MXSML_API const char *mxSmlGetErrorString(mxSmlReturn_t result);

#endif
