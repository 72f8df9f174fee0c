/*
 * Our own declarations of the part of Cambricon's CNDev API (libcndev.so) that Cambricon's
 * cambricon-k8s-device-plugin calls (pkg/cndev/bindings.go): init/release, the device count, handles by
 * index, UUID, card SN, card name (enum and string), memory (V2), core count, PCIe (V2), NUMA node and
 * health state. Names, argument order, struct field order and return-code values follow the published
 * cndev.h (CNDEV_VERSION_6 era); the types are written with <stdint.h> widths of the same size on
 * LP64 Linux (the header's __int64_t is `long`, 8 bytes).
 */
#ifndef HAMI_FAMLIB_CNDEV_H
#define HAMI_FAMLIB_CNDEV_H

#include <stdint.h>

#define CNDEV_EXPORT __attribute__((visibility("default")))

#define CNDEV_VERSION_1 1
#define CNDEV_VERSION_6 6 /* the version the plugin fills in */
#define CNDEV_UUID_SIZE 37

typedef enum {
    CNDEV_SUCCESS = 0,
    CNDEV_ERROR_NO_DRIVER = 1,
    CNDEV_ERROR_LOW_DRIVER_VERSION = 2,
    CNDEV_ERROR_UNSUPPORTED_API_VERSION = 3,
    CNDEV_ERROR_UNINITIALIZED = 4,
    CNDEV_ERROR_INVALID_ARGUMENT = 5,
    CNDEV_ERROR_INVALID_DEVICE_ID = 6,
    CNDEV_ERROR_UNKNOWN = 7,
    CNDEV_ERROR_MALLOC = 8,
    CNDEV_ERROR_INSUFFICIENT_SPACE = 9,
    CNDEV_ERROR_NOT_SUPPORTED = 10,
    CNDEV_ERROR_INVALID_LINK = 11,
    CNDEV_ERROR_NO_DEVICES = 12,
    CNDEV_ERROR_NO_PERMISSION = 13,
    CNDEV_ERROR_NOT_FOUND = 14,
    CNDEV_ERROR_IN_USE = 15,
    CNDEV_ERROR_DUPLICATE = 16,
    CNDEV_ERROR_TIMEOUT = 17,
    CNDEV_ERROR_IN_PROBLEM = 18,
} cndevRet_t;

/* the card-name ids of the models the testbed emulates (and their neighbours) */
typedef enum {
    CNDEV_DEVICE_TYPE_MLU100 = 0,
    CNDEV_DEVICE_TYPE_MLU270 = 1,
    CNDEV_DEVICE_TYPE_MLU290 = 20,
    CNDEV_DEVICE_TYPE_MLU370 = 23,
    CNDEV_DEVICE_TYPE_MLU365 = 24,
    CNDEV_DEVICE_TYPE_MLU590 = 26,
    CNDEV_DEVICE_TYPE_MLU580 = 30,
} cndevNameEnum_t;

typedef enum {
    CNDEV_HEALTH_STATE_DEVICE_IN_PROBLEM = 0,
    CNDEV_HEALTH_STATE_DEVICE_GOOD = 1,
} cndevHealthStateEnum_t;

typedef enum {
    CNDEV_HEALTH_STATE_DRIVER_RUNNING = 4,
} cndevDriverHealthStateEnum_t;

typedef int32_t cndevDevice_t; /* a device handle (from cndevGetDeviceHandleByIndex) */

typedef struct {
    int32_t version; /* in */
    uint32_t number; /* out: devices */
} cndevCardInfo_t;

typedef struct {
    int32_t version;
    uint8_t uuid[CNDEV_UUID_SIZE]; /* NUL-terminated; the plugin prefixes "MLU-" */
    uint64_t ncsUUID64;
} cndevUUID_t;

typedef struct {
    int32_t version;
    uint64_t sn;
    uint64_t motherBoardSn;
} cndevCardSN_t;

typedef struct {
    int32_t version;
    cndevNameEnum_t id;
} cndevCardName_t;

typedef struct { /* no version field in V2; sizes in MB */
    int64_t physicalMemoryTotal;
    int64_t physicalMemoryUsed;
    int64_t reservedMemory;
    int64_t virtualMemoryTotal;
    int64_t virtualMemoryUsed;
    uint64_t globalMemory;
    uint64_t reserved[16];
} cndevMemoryInfoV2_t;

typedef struct {
    int32_t version;
    int32_t count;
} cndevCardCoreCount_t;

typedef struct { /* no version field in V2 */
    uint32_t subsystemId;
    uint32_t deviceId;
    uint16_t vendor;
    uint16_t subsystemVendor;
    uint32_t domain;
    uint32_t bus;
    uint32_t device;
    uint32_t function;
    uint16_t moduleId;
    uint16_t slotId;
    uint32_t reserved[8];
} cndevPCIeInfoV2_t;

typedef struct {
    int32_t version;
    int32_t nodeId;
} cndevNUMANodeId_t;

typedef struct {
    int32_t version;
    int32_t health; /* 1 healthy, 0 sick */
    cndevHealthStateEnum_t deviceState;
    cndevDriverHealthStateEnum_t driverState;
} cndevCardHealthState_t;

CNDEV_EXPORT cndevRet_t cndevInit(int32_t reserved);
CNDEV_EXPORT cndevRet_t cndevRelease(void);
CNDEV_EXPORT const char *cndevGetErrorString(cndevRet_t errorId);
CNDEV_EXPORT cndevRet_t cndevGetDeviceCount(cndevCardInfo_t *cardNum);
CNDEV_EXPORT cndevRet_t cndevGetDeviceHandleByIndex(int32_t index, cndevDevice_t *handle);
CNDEV_EXPORT cndevRet_t cndevGetUUID(cndevUUID_t *uuidInfo, cndevDevice_t device);
CNDEV_EXPORT cndevRet_t cndevGetCardSN(cndevCardSN_t *cardSN, cndevDevice_t device);
CNDEV_EXPORT cndevRet_t cndevGetCardName(cndevCardName_t *cardName, cndevDevice_t device);
CNDEV_EXPORT const char *cndevGetCardNameStringByDevId(cndevDevice_t device);
CNDEV_EXPORT cndevRet_t cndevGetMemoryUsageV2(cndevMemoryInfoV2_t *memInfo, cndevDevice_t device);
CNDEV_EXPORT cndevRet_t cndevGetCoreCount(cndevCardCoreCount_t *cardCoreCount, cndevDevice_t device);
CNDEV_EXPORT cndevRet_t cndevGetPCIeInfoV2(cndevPCIeInfoV2_t *deviceInfo, cndevDevice_t device);
CNDEV_EXPORT cndevRet_t cndevGetNUMANodeIdByDevId(cndevNUMANodeId_t *numaNodeId, cndevDevice_t device);
CNDEV_EXPORT cndevRet_t cndevGetCardHealthState(cndevCardHealthState_t *cardHealthState, cndevDevice_t device);

#endif
