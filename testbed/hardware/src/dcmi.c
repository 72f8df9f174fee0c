/*
 * Emulated Huawei DCMI (libdcmi.so) over a per-node NPU state directory ($HAMI_EMU_NPU_STATE_DIR).
 *
 * npus.conf (written by testbed/hardware/ascend.py): global keys (chip_type, chip_name, chip_ver,
 * driver_version, dcmi_version, npu_count), one [template.<name>] section per vNPU template of the chip
 * (memory_mib, aicore, aicpu) and one [npu.N] section per NPU (phy_id, card_id, device_id, die_id as
 * five comma-separated numbers, memory_mib, aicore, aicpu).
 *
 * Live state, one small file per NPU next to it (so a fault is a file write, and every process sees
 * it at its next call): health.<phy> (the health code, absent = 0 = healthy), lost.<phy> (present =
 * the chip fell off the bus: calls on it answer DEVICE_NOT_EXIST and it leaves the card list),
 * errcode.<phy> (error codes, space separated), used_mib.<phy> (memory in use, MB), vdev.<phy> (vNPUs
 * created by dcmi_create_vdevice: "<vdev id> <template>" lines, guarded by flock on the file), and
 * rtmem/ (device memory processes hold through the emulated runtime, npu_rtmem.h: counted as used).
 *
 * Visibility, as the Ascend container runtime gives it: ASCEND_VISIBLE_DEVICES lists physical IDs;
 * unset means no device unless HAMI_EMU_NPU_ALL=1 (host processes such as the device plugin). Logic
 * IDs are renumbered from 0 in visible order; physical, card and device IDs stay the node's. With
 * ASCEND_VNPU_SPECS=<template> and one visible NPU the process sees the vNPU the runtime created from
 * that template: the template's memory and AI cores (an unknown template hides the device).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "dcmi_emu.h"
#include "npu_rtmem.h"

#define EXPORT __attribute__((visibility("default")))
#define MAX_NPUS 64
#define MAX_TEMPLATES 16
#define MAX_VDEVS 32

typedef struct {
    char name[32];
    unsigned memory_mib, aicore, aicpu;
} tmpl_t;

typedef struct {
    int phy_id, card_id, device_id;
    unsigned die[DIE_ID_COUNT];
    unsigned memory_mib, aicore, aicpu;
} npu_t;

static struct {
    int loaded;
    char dir[4096];
    char chip_type[MAX_CHIP_NAME_LEN], chip_name[MAX_CHIP_NAME_LEN], chip_ver[MAX_CHIP_NAME_LEN];
    char driver_version[64], dcmi_version[64];
    int npu_count;
    npu_t npus[MAX_NPUS];
    int template_count;
    tmpl_t templates[MAX_TEMPLATES];
    int visible_count;
    int visible[MAX_NPUS]; /* indexes into npus, logic id = position */
    const tmpl_t *vnpu;    /* ASCEND_VNPU_SPECS view, or NULL */
} g;

static void copy(char *dst, size_t len, const char *src) {
    snprintf(dst, len, "%s", src);
}

static char *trim(char *s) {
    while (*s == ' ' || *s == '\t') s++;
    char *e = s + strlen(s);
    while (e > s && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t')) *--e = 0;
    return s;
}

static int parse_conf(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return DCMI_ERR_CODE_NOT_REDAY;
    char line[512];
    npu_t *npu = NULL;
    tmpl_t *tp = NULL;
    while (fgets(line, sizeof line, f)) {
        char *s = trim(line);
        if (!*s || *s == '#') continue;
        if (*s == '[') {
            npu = NULL;
            tp = NULL;
            if (!strncmp(s, "[npu.", 5) && g.npu_count < MAX_NPUS) {
                npu = &g.npus[g.npu_count++];
                memset(npu, 0, sizeof *npu);
                npu->phy_id = atoi(s + 5);
            } else if (!strncmp(s, "[template.", 10) && g.template_count < MAX_TEMPLATES) {
                tp = &g.templates[g.template_count++];
                memset(tp, 0, sizeof *tp);
                char *end = strchr(s, ']');
                if (end) *end = 0;
                copy(tp->name, sizeof tp->name, s + 10);
            }
            continue;
        }
        char *eq = strchr(s, '=');
        if (!eq) continue;
        *eq = 0;
        char *k = trim(s), *v = trim(eq + 1);
        if (npu) {
            if (!strcmp(k, "phy_id")) npu->phy_id = atoi(v);
            else if (!strcmp(k, "card_id")) npu->card_id = atoi(v);
            else if (!strcmp(k, "device_id")) npu->device_id = atoi(v);
            else if (!strcmp(k, "memory_mib")) npu->memory_mib = (unsigned)strtoul(v, NULL, 10);
            else if (!strcmp(k, "aicore")) npu->aicore = (unsigned)strtoul(v, NULL, 10);
            else if (!strcmp(k, "aicpu")) npu->aicpu = (unsigned)strtoul(v, NULL, 10);
            else if (!strcmp(k, "die_id")) {
                char *p = v;
                for (int i = 0; i < DIE_ID_COUNT && p; i++) {
                    npu->die[i] = (unsigned)strtoul(p, &p, 0);
                    p = (*p == ',') ? p + 1 : NULL;
                }
            }
        } else if (tp) {
            if (!strcmp(k, "memory_mib")) tp->memory_mib = (unsigned)strtoul(v, NULL, 10);
            else if (!strcmp(k, "aicore")) tp->aicore = (unsigned)strtoul(v, NULL, 10);
            else if (!strcmp(k, "aicpu")) tp->aicpu = (unsigned)strtoul(v, NULL, 10);
        } else if (!strcmp(k, "chip_type")) copy(g.chip_type, sizeof g.chip_type, v);
        else if (!strcmp(k, "chip_name")) copy(g.chip_name, sizeof g.chip_name, v);
        else if (!strcmp(k, "chip_ver")) copy(g.chip_ver, sizeof g.chip_ver, v);
        else if (!strcmp(k, "driver_version")) copy(g.driver_version, sizeof g.driver_version, v);
        else if (!strcmp(k, "dcmi_version")) copy(g.dcmi_version, sizeof g.dcmi_version, v);
    }
    fclose(f);
    return g.chip_name[0] ? DCMI_OK : DCMI_ERR_CODE_INNER_ERR;
}

static const tmpl_t *find_template(const char *name) {
    for (int i = 0; i < g.template_count; i++)
        if (!strcmp(g.templates[i].name, name)) return &g.templates[i];
    return NULL;
}

static int npu_by_phy(int phy) {
    for (int i = 0; i < g.npu_count; i++)
        if (g.npus[i].phy_id == phy) return i;
    return -1;
}

static void state_path(char *out, size_t len, const char *what, int phy) {
    snprintf(out, len, "%s/%s.%d", g.dir, what, phy);
}

static long read_long(const char *what, int phy, long dflt) {
    char p[4200];
    state_path(p, sizeof p, what, phy);
    FILE *f = fopen(p, "r");
    if (!f) return dflt;
    long v = dflt;
    if (fscanf(f, "%ld", &v) != 1) v = dflt;
    fclose(f);
    return v;
}

static int is_lost(int phy) {
    char p[4200];
    state_path(p, sizeof p, "lost", phy);
    return access(p, F_OK) == 0;
}

EXPORT int dcmi_init(void) {
    if (g.loaded) return DCMI_OK;
    const char *dir = getenv("HAMI_EMU_NPU_STATE_DIR");
    if (!dir || !*dir) return DCMI_ERR_CODE_NOT_REDAY; /* no driver on this node */
    memset(&g, 0, sizeof g);
    copy(g.dir, sizeof g.dir, dir);
    char conf[4200];
    snprintf(conf, sizeof conf, "%s/npus.conf", g.dir);
    int rc = parse_conf(conf);
    if (rc != DCMI_OK) return rc;
    const char *vis = getenv("ASCEND_VISIBLE_DEVICES");
    const char *all = getenv("HAMI_EMU_NPU_ALL");
    if (vis && *vis) {
        char buf[1024];
        copy(buf, sizeof buf, vis);
        for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            char *end;
            long phy = strtol(trim(t), &end, 10);
            int idx = (*end == 0) ? npu_by_phy((int)phy) : -1;
            if (idx >= 0 && g.visible_count < MAX_NPUS) g.visible[g.visible_count++] = idx;
        }
    } else if (all && !strcmp(all, "1")) {
        for (int i = 0; i < g.npu_count; i++) g.visible[g.visible_count++] = i;
    }
    const char *spec = getenv("ASCEND_VNPU_SPECS");
    if (spec && *spec) {
        g.vnpu = find_template(spec);
        if (!g.vnpu || g.visible_count != 1) g.visible_count = 0; /* the runtime would refuse it */
    }
    g.loaded = 1;
    return DCMI_OK;
}

#define NEED_INIT() \
    do { \
        if (!g.loaded) return DCMI_ERR_CODE_NOT_REDAY; \
    } while (0)

/* the visible NPU with this card/device pair (index into npus), or a DCMI error code (< 0) */
static int lookup(int card_id, int device_id) {
    if (!g.loaded) return DCMI_ERR_CODE_NOT_REDAY;
    for (int i = 0; i < g.visible_count; i++) {
        const npu_t *n = &g.npus[g.visible[i]];
        if (n->card_id == card_id && n->device_id == device_id)
            return is_lost(n->phy_id) ? DCMI_ERR_CODE_DEVICE_NOT_EXIST : g.visible[i];
    }
    return DCMI_ERR_CODE_INVALID_DEVICE_ID;
}

EXPORT int dcmi_get_dcmi_version(char *dcmi_ver, int buf_size) {
    NEED_INIT();
    if (!dcmi_ver || buf_size <= 0) return DCMI_ERR_CODE_INVALID_PARAMETER;
    snprintf(dcmi_ver, (size_t)buf_size, "%s", g.dcmi_version[0] ? g.dcmi_version : "24.1.rc3");
    return DCMI_OK;
}

EXPORT int dcmi_get_driver_version(char *driver_ver, int buf_size) {
    NEED_INIT();
    if (!driver_ver || buf_size <= 0) return DCMI_ERR_CODE_INVALID_PARAMETER;
    snprintf(driver_ver, (size_t)buf_size, "%s", g.driver_version[0] ? g.driver_version : "24.1.rc3");
    return DCMI_OK;
}

EXPORT int dcmi_get_card_list(int *card_num, int *card_list, int list_len) {
    NEED_INIT();
    if (!card_num || !card_list || list_len <= 0) return DCMI_ERR_CODE_INVALID_PARAMETER;
    int n = 0;
    for (int i = 0; i < g.visible_count; i++) {
        const npu_t *d = &g.npus[g.visible[i]];
        if (is_lost(d->phy_id)) continue;
        int seen = 0;
        for (int j = 0; j < n; j++) seen |= card_list[j] == d->card_id;
        if (seen) continue;
        if (n >= list_len) return DCMI_ERR_CODE_INVALID_PARAMETER;
        card_list[n++] = d->card_id;
    }
    *card_num = n;
    return DCMI_OK;
}

EXPORT int dcmi_get_card_num_list(int *card_num, int *card_list, int list_len) {
    return dcmi_get_card_list(card_num, card_list, list_len);
}

EXPORT int dcmi_get_device_num_in_card(int card_id, int *device_num) {
    NEED_INIT();
    if (!device_num) return DCMI_ERR_CODE_INVALID_PARAMETER;
    int n = 0;
    for (int i = 0; i < g.visible_count; i++) {
        const npu_t *d = &g.npus[g.visible[i]];
        n += d->card_id == card_id && !is_lost(d->phy_id);
    }
    if (!n) return DCMI_ERR_CODE_INVALID_DEVICE_ID;
    *device_num = n;
    return DCMI_OK;
}

EXPORT int dcmi_get_device_id_in_card(int card_id, int *device_id_max, int *mcu_id, int *cpu_id) {
    int n = 0;
    int rc = dcmi_get_device_num_in_card(card_id, &n);
    if (rc != DCMI_OK) return rc;
    if (device_id_max) *device_id_max = n;
    if (mcu_id) *mcu_id = -1;
    if (cpu_id) *cpu_id = -1;
    return DCMI_OK;
}

EXPORT int dcmi_get_device_logic_id(int *device_logic_id, int card_id, int device_id) {
    if (!device_logic_id) return DCMI_ERR_CODE_INVALID_PARAMETER;
    int idx = lookup(card_id, device_id);
    if (idx < 0) return idx;
    for (int i = 0; i < g.visible_count; i++)
        if (g.visible[i] == idx) *device_logic_id = i;
    return DCMI_OK;
}

EXPORT int dcmi_get_device_phyid_from_logicid(unsigned int logicid, unsigned int *phyid) {
    NEED_INIT();
    if (!phyid) return DCMI_ERR_CODE_INVALID_PARAMETER;
    if (logicid >= (unsigned)g.visible_count) return DCMI_ERR_CODE_INVALID_DEVICE_ID;
    *phyid = (unsigned)g.npus[g.visible[logicid]].phy_id;
    return DCMI_OK;
}

EXPORT int dcmi_get_device_logicid_from_phyid(unsigned int phyid, unsigned int *logicid) {
    NEED_INIT();
    if (!logicid) return DCMI_ERR_CODE_INVALID_PARAMETER;
    for (int i = 0; i < g.visible_count; i++)
        if ((unsigned)g.npus[g.visible[i]].phy_id == phyid) {
            *logicid = (unsigned)i;
            return DCMI_OK;
        }
    return DCMI_ERR_CODE_INVALID_DEVICE_ID;
}

EXPORT int dcmi_get_card_id_device_id_from_logicid(int *card_id, int *device_id, unsigned int device_logic_id) {
    NEED_INIT();
    if (!card_id || !device_id) return DCMI_ERR_CODE_INVALID_PARAMETER;
    if (device_logic_id >= (unsigned)g.visible_count) return DCMI_ERR_CODE_INVALID_DEVICE_ID;
    const npu_t *d = &g.npus[g.visible[device_logic_id]];
    *card_id = d->card_id;
    *device_id = d->device_id;
    return DCMI_OK;
}

EXPORT int dcmi_get_device_chip_info(int card_id, int device_id, struct dcmi_chip_info *chip_info) {
    if (!chip_info) return DCMI_ERR_CODE_INVALID_PARAMETER;
    int idx = lookup(card_id, device_id);
    if (idx < 0) return idx;
    memset(chip_info, 0, sizeof *chip_info);
    copy((char *)chip_info->chip_type, MAX_CHIP_NAME_LEN, g.chip_type);
    copy((char *)chip_info->chip_name, MAX_CHIP_NAME_LEN, g.chip_name);
    copy((char *)chip_info->chip_ver, MAX_CHIP_NAME_LEN, g.chip_ver);
    chip_info->aicore_cnt = g.vnpu ? g.vnpu->aicore : g.npus[idx].aicore;
    return DCMI_OK;
}

EXPORT int dcmi_get_device_health(int card_id, int device_id, unsigned int *health) {
    if (!health) return DCMI_ERR_CODE_INVALID_PARAMETER;
    int idx = lookup(card_id, device_id);
    if (idx < 0) return idx;
    *health = (unsigned)read_long("health", g.npus[idx].phy_id, 0);
    return DCMI_OK;
}

EXPORT int dcmi_get_device_errorcode_v2(int card_id, int device_id, int *error_count, unsigned int *error_code_list,
                                        unsigned int list_len) {
    if (!error_count || !error_code_list) return DCMI_ERR_CODE_INVALID_PARAMETER;
    int idx = lookup(card_id, device_id);
    if (idx < 0) return idx;
    char p[4200];
    state_path(p, sizeof p, "errcode", g.npus[idx].phy_id);
    *error_count = 0;
    FILE *f = fopen(p, "r");
    if (!f) return DCMI_OK;
    unsigned long code;
    while ((unsigned)*error_count < list_len && fscanf(f, "%li", (long *)&code) == 1)
        error_code_list[(*error_count)++] = (unsigned)code;
    fclose(f);
    return DCMI_OK;
}

EXPORT int dcmi_get_device_die_v2(int card_id, int device_id, enum dcmi_die_type input_type, struct dcmi_die_id *die_id) {
    if (!die_id || (input_type != NDIE && input_type != VDIE)) return DCMI_ERR_CODE_INVALID_PARAMETER;
    int idx = lookup(card_id, device_id);
    if (idx < 0) return idx;
    for (int i = 0; i < DIE_ID_COUNT; i++)
        die_id->soc_die[i] = input_type == VDIE ? g.npus[idx].die[i] : g.npus[idx].die[i] ^ 0x5a5a5a5au;
    return DCMI_OK;
}

static void memory_view(int idx, unsigned long long *total, unsigned long long *used) {
    const npu_t *d = &g.npus[idx];
    *total = g.vnpu ? g.vnpu->memory_mib : d->memory_mib;
    long u = read_long("used_mib", d->phy_id, 0);
    /* plus what processes hold through the emulated runtime (libruntime.so), rounded up to MB */
    unsigned long long rt = rtmem_sum(g.dir, d->phy_id);
    *used = (u < 0 ? 0 : (unsigned long long)u) + (rt + (1ULL << 20) - 1) / (1ULL << 20);
    if (*used > *total) *used = *total;
}

EXPORT int dcmi_get_device_hbm_info(int card_id, int device_id, struct dcmi_hbm_info *hbm_info) {
    if (!hbm_info) return DCMI_ERR_CODE_INVALID_PARAMETER;
    int idx = lookup(card_id, device_id);
    if (idx < 0) return idx;
    if (!strncmp(g.chip_name, "310", 3)) return DCMI_ERR_CODE_NOT_SUPPORT; /* 310P has DDR, no HBM */
    memset(hbm_info, 0, sizeof *hbm_info);
    memory_view(idx, &hbm_info->memory_size, &hbm_info->memory_usage);
    hbm_info->freq = 1600;
    hbm_info->temp = 40;
    return DCMI_OK;
}

EXPORT int dcmi_get_device_memory_info_v3(int card_id, int device_id, struct dcmi_get_memory_info_stru *memory_info) {
    if (!memory_info) return DCMI_ERR_CODE_INVALID_PARAMETER;
    int idx = lookup(card_id, device_id);
    if (idx < 0) return idx;
    memset(memory_info, 0, sizeof *memory_info);
    unsigned long long total, used;
    memory_view(idx, &total, &used);
    memory_info->memory_size = total;
    memory_info->memory_available = total - used;
    memory_info->freq = 1600;
    memory_info->utiliza = total ? (unsigned)(used * 100 / total) : 0;
    return DCMI_OK;
}

EXPORT int dcmi_get_device_utilization_rate(int card_id, int device_id, int input_type, unsigned int *utilization_rate) {
    if (!utilization_rate) return DCMI_ERR_CODE_INVALID_PARAMETER;
    int idx = lookup(card_id, device_id);
    if (idx < 0) return idx;
    if (input_type == 1 || input_type == 6) { /* memory / HBM: the share in use */
        unsigned long long total, used;
        memory_view(idx, &total, &used);
        *utilization_rate = total ? (unsigned)(used * 100 / total) : 0;
    } else {
        *utilization_rate = 0; /* no workload runs on an emulated AI core */
    }
    return DCMI_OK;
}

/* --- vNPUs (hard split by template) ---------------------------------------------------------- */

typedef struct {
    unsigned id;
    char name[32];
} vdev_t;

static int read_vdevs(FILE *f, vdev_t *out) {
    int n = 0;
    rewind(f);
    while (n < MAX_VDEVS && fscanf(f, "%u %31s", &out[n].id, out[n].name) == 2) n++;
    return n;
}

static int write_vdevs(FILE *f, const vdev_t *v, int n) {
    if (ftruncate(fileno(f), 0) != 0) return -1;
    rewind(f);
    for (int i = 0; i < n; i++) fprintf(f, "%u %s\n", v[i].id, v[i].name);
    return fflush(f);
}

static FILE *open_vdevs(int phy) {
    char p[4200];
    state_path(p, sizeof p, "vdev", phy);
    FILE *f = fopen(p, "a+");
    if (f && flock(fileno(f), LOCK_EX) != 0) {
        fclose(f);
        return NULL;
    }
    return f;
}

EXPORT int dcmi_create_vdevice(int card_id, int device_id, struct dcmi_create_vdev_res_stru *vdev,
                               struct dcmi_create_vdev_out *out) {
    if (!vdev || !out) return DCMI_ERR_CODE_INVALID_PARAMETER;
    int idx = lookup(card_id, device_id);
    if (idx < 0) return idx;
    if (g.vnpu) return DCMI_ERR_CODE_OPER_NOT_PERMITTED; /* inside a vNPU */
    char name[33];
    memcpy(name, vdev->template_name, 32);
    name[32] = 0;
    const tmpl_t *t = find_template(name);
    if (!t) return DCMI_ERR_CODE_INVALID_PARAMETER;
    const npu_t *d = &g.npus[idx];
    if (read_long("health", d->phy_id, 0) != 0) return DCMI_ERR_CODE_NOT_REDAY;
    FILE *f = open_vdevs(d->phy_id);
    if (!f) return DCMI_ERR_CODE_INNER_ERR;
    vdev_t v[MAX_VDEVS];
    int n = read_vdevs(f, v);
    unsigned cores = t->aicore, mem = t->memory_mib, next = 100u + (unsigned)d->phy_id * 16u;
    for (int i = 0; i < n; i++) {
        const tmpl_t *o = find_template(v[i].name);
        if (o) {
            cores += o->aicore;
            mem += o->memory_mib;
        }
        if (v[i].id >= next) next = v[i].id + 1;
        if (vdev->vdev_id && v[i].id == vdev->vdev_id) {
            fclose(f);
            return DCMI_ERR_CODE_RESOURCE_OCCUPIED;
        }
    }
    if (cores > d->aicore || mem > d->memory_mib || n >= MAX_VDEVS) {
        fclose(f);
        return DCMI_ERR_CODE_RESOURCE_OCCUPIED;
    }
    v[n].id = vdev->vdev_id ? vdev->vdev_id : next;
    copy(v[n].name, sizeof v[n].name, t->name);
    int rc = write_vdevs(f, v, n + 1);
    fclose(f);
    if (rc != 0) return DCMI_ERR_CODE_INNER_ERR;
    memset(out, 0, sizeof *out);
    out->vdev_id = v[n].id;
    out->vfg_id = vdev->vfg_id;
    return DCMI_OK;
}

EXPORT int dcmi_set_destroy_vdevice(int card_id, int device_id, unsigned int vdevid) {
    int idx = lookup(card_id, device_id);
    if (idx < 0) return idx;
    FILE *f = open_vdevs(g.npus[idx].phy_id);
    if (!f) return DCMI_ERR_CODE_INNER_ERR;
    vdev_t v[MAX_VDEVS];
    int n = read_vdevs(f, v), kept = 0, found = 0;
    for (int i = 0; i < n; i++) {
        if (v[i].id == vdevid) found = 1;
        else v[kept++] = v[i];
    }
    int rc = found ? write_vdevs(f, v, kept) : 0;
    fclose(f);
    if (!found) return DCMI_ERR_CODE_INVALID_PARAMETER;
    return rc == 0 ? DCMI_OK : DCMI_ERR_CODE_INNER_ERR;
}
