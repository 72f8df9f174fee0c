/*
 * Our own declarations of the part of Moore Threads' MTML API (libmtml.so, MTML 2.x) a device plugin
 * needs: library init/shutdown, device count and device objects by index, index, UUID, name, serial,
 * PCI info, GPU core count, memory total, memory (NUMA) affinity, and GPU/memory sub-objects.
 * Names, argument order (note mtmlDeviceGetSerialNumber's length-before-buffer), struct field order
 * and return-code values follow the published mtml.h (2.2.0).
 */
#ifndef HAMI_FAMLIB_MTML_H
#define HAMI_FAMLIB_MTML_H

#define MTML_API __attribute__((visibility("default")))

#define MTML_DEVICE_NAME_BUFFER_SIZE 32
#define MTML_DEVICE_UUID_BUFFER_SIZE 48
#define MTML_DEVICE_PCI_SBDF_BUFFER_SIZE 32
#define MTML_DEVICE_SERIAL_NUMBER_BUFFER_SIZE 64

typedef enum {
    MTML_SUCCESS = 0,
    MTML_ERROR_DRIVER_NOT_LOADED = 1,
    MTML_ERROR_DRIVER_FAILURE = 2,
    MTML_ERROR_INVALID_ARGUMENT = 3,
    MTML_ERROR_NOT_SUPPORTED = 4,
    MTML_ERROR_NO_PERMISSION = 5,
    MTML_ERROR_INSUFFICIENT_SIZE = 6,
    MTML_ERROR_NOT_FOUND = 7,
    MTML_ERROR_INSUFFICIENT_MEMORY = 8,
    MTML_ERROR_DRIVER_TOO_OLD = 9,
    MTML_ERROR_DRIVER_TOO_NEW = 10,
    MTML_ERROR_TIMEOUT = 11,
    MTML_ERROR_RESOURCE_IS_BUSY = 12,
    MTML_ERROR_UNKNOWN = 999,
} MtmlReturn;

typedef struct MtmlLibrary MtmlLibrary; /* opaque */
typedef struct MtmlDevice MtmlDevice;
typedef struct MtmlGpu MtmlGpu;
typedef struct MtmlMemory MtmlMemory;

typedef struct {
    char sbdf[MTML_DEVICE_PCI_SBDF_BUFFER_SIZE]; /* "segment:bus:device.function" */
    unsigned int segment;
    unsigned int bus;
    unsigned int device;
    unsigned int pciDeviceId; /* device id << 16 | vendor id */
    unsigned int pciSubsystemId;
    unsigned int busWidth;
    float pciMaxSpeed;
    float pciCurSpeed;
    unsigned int pciMaxWidth;
    unsigned int pciCurWidth;
    unsigned int pciMaxGen;
    unsigned int pciCurGen;
    int rsvd[6];
} MtmlPciInfo;

MTML_API MtmlReturn mtmlLibraryInit(MtmlLibrary **lib);
MTML_API MtmlReturn mtmlLibraryShutDown(MtmlLibrary *lib);
MTML_API MtmlReturn mtmlLibraryCountDevice(const MtmlLibrary *lib, unsigned int *count);
MTML_API MtmlReturn mtmlLibraryInitDeviceByIndex(const MtmlLibrary *lib, unsigned int index, MtmlDevice **dev);
MTML_API MtmlReturn mtmlLibraryFreeDevice(MtmlDevice *dev);
MTML_API MtmlReturn mtmlDeviceGetIndex(const MtmlDevice *dev, unsigned int *index);
MTML_API MtmlReturn mtmlDeviceGetUUID(const MtmlDevice *dev, char *uuid, unsigned int length);
MTML_API MtmlReturn mtmlDeviceGetName(const MtmlDevice *dev, char *name, unsigned int length);
MTML_API MtmlReturn mtmlDeviceGetSerialNumber(const MtmlDevice *device, unsigned int length, char *serialNumber);
MTML_API MtmlReturn mtmlDeviceGetPciInfo(const MtmlDevice *dev, MtmlPciInfo *pci);
MTML_API MtmlReturn mtmlDeviceCountGpuCores(const MtmlDevice *device, unsigned int *numCores);
MTML_API MtmlReturn mtmlDeviceGetMemoryAffinityWithinNode(const MtmlDevice *device, unsigned int nodeSetSize,
                                                          unsigned long *nodeSet);
MTML_API MtmlReturn mtmlDeviceInitGpu(const MtmlDevice *dev, MtmlGpu **gpu);
MTML_API MtmlReturn mtmlDeviceFreeGpu(MtmlGpu *gpu);
MTML_API MtmlReturn mtmlDeviceInitMemory(const MtmlDevice *dev, MtmlMemory **mem);
MTML_API MtmlReturn mtmlDeviceFreeMemory(MtmlMemory *mem);
MTML_API MtmlReturn mtmlMemoryGetTotal(const MtmlMemory *mem, unsigned long long *total);
MTML_API const char *mtmlErrorString(MtmlReturn result);

#endif
