/*
 * Shared by the emulated vendor management libraries of the device families (famlib_*.c): the node's
 * devices of one vendor as the emulated hardware writes them (<dir>/<vendor>/devices.conf, rendered by
 * testbed/hardware/families.py next to devices.json; dir = $HAMI_FAMILY_HARDWARE_DIR), filtered by the
 * vendor's visibility variable as that vendor's container runtime would mount the device nodes.
 *
 * The file is re-read on every fam_load call, so a health flip (families.set_health) reaches the next
 * query of every process, as a driver's live state does.
 */
#ifndef HAMI_FAMILY_COMMON_H
#define HAMI_FAMILY_COMMON_H

#define FAM_STATE_ENV "HAMI_FAMILY_HARDWARE_DIR"
#define FAM_CONF_FILE "devices.conf"
#define FAM_CONF_MAGIC "hami-family-devices 1"
#define FAM_MAX_DEVICES 16
#define FAM_MAX_PROFILES 8

#define FAM_ERR_NO_DRIVER (-1) /* no state dir or no devices file: the driver is not loaded */
#define FAM_ERR_CORRUPT (-2)   /* the devices file is malformed */

typedef struct {
    char name[32]; /* DRS profile name, e.g. "3g.20gb" */
    char id[16];
} fam_profile_t;

typedef struct {
    int index; /* physical index on the node */
    char uuid[96];
    char model[64];
    unsigned long long memory_mib;
    unsigned compute_units;
    char bus_id[32]; /* PCI bus id, "0000:1a:00.0" */
    int numa;
    int healthy;
    unsigned drs_capacity; /* Enflame DRS slices (0: not a DRS card) */
    int profile_count;
    fam_profile_t profiles[FAM_MAX_PROFILES];
} fam_device_t;

/* The devices this process sees: all of the node's when visible_env is unset, empty or "all", else those
 * whose uuid or index it lists (comma separated) in the listed order. Returns the count (<= max) or a
 * FAM_ERR_* code. */
int fam_load(const char *vendor, const char *visible_env, fam_device_t *out, int max);

/* The node-wide device with this physical index (ignoring visibility); 0 or a FAM_ERR_* / -3 (none). */
int fam_load_physical(const char *vendor, int index, fam_device_t *out);

/* snprintf into a fixed buffer, reporting truncation as -1 (the caller maps it to its vendor's code). */
int fam_copy(char *dst, unsigned long size, const char *src);

#endif
