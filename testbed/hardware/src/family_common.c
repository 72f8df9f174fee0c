/* See family_common.h. Hidden: each vendor library links its own copy. */
#define _GNU_SOURCE
#include "family_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int parse_profiles(char *field, fam_device_t *d) {
    d->profile_count = 0;
    if (strcmp(field, "-") == 0)
        return 0;
    char *save = NULL;
    for (char *tok = strtok_r(field, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq || d->profile_count >= FAM_MAX_PROFILES)
            return -1;
        *eq = '\0';
        fam_profile_t *p = &d->profiles[d->profile_count++];
        if (fam_copy(p->name, sizeof p->name, tok) || fam_copy(p->id, sizeof p->id, eq + 1))
            return -1;
    }
    return 0;
}

/* one line: index uuid model memory_mib compute_units bus_id numa healthy drs_capacity profiles */
static int parse_line(char *line, fam_device_t *d) {
    char *f[10];
    int n = 0;
    char *save = NULL;
    for (char *tok = strtok_r(line, "\t\n", &save); tok && n < 10; tok = strtok_r(NULL, "\t\n", &save))
        f[n++] = tok;
    if (n != 10)
        return -1;
    char *end;
    memset(d, 0, sizeof *d);
    d->index = (int)strtol(f[0], &end, 10);
    if (*end || d->index < 0)
        return -1;
    if (fam_copy(d->uuid, sizeof d->uuid, f[1]) || fam_copy(d->model, sizeof d->model, f[2]))
        return -1;
    d->memory_mib = strtoull(f[3], &end, 10);
    if (*end)
        return -1;
    d->compute_units = (unsigned)strtoul(f[4], &end, 10);
    if (*end)
        return -1;
    if (fam_copy(d->bus_id, sizeof d->bus_id, f[5]))
        return -1;
    d->numa = (int)strtol(f[6], &end, 10);
    if (*end)
        return -1;
    d->healthy = strcmp(f[7], "1") == 0;
    d->drs_capacity = (unsigned)strtoul(f[8], &end, 10);
    if (*end)
        return -1;
    return parse_profiles(f[9], d);
}

static int load_all(const char *vendor, fam_device_t *all, int max) {
    const char *dir = getenv(FAM_STATE_ENV);
    if (!dir || !*dir)
        return FAM_ERR_NO_DRIVER;
    char path[4096];
    if (snprintf(path, sizeof path, "%s/%s/%s", dir, vendor, FAM_CONF_FILE) >= (int)sizeof path)
        return FAM_ERR_NO_DRIVER;
    FILE *fp = fopen(path, "re");
    if (!fp)
        return FAM_ERR_NO_DRIVER;
    char line[1024];
    int n = 0, rc = 0;
    if (!fgets(line, sizeof line, fp) || strncmp(line, FAM_CONF_MAGIC, strlen(FAM_CONF_MAGIC)) != 0)
        rc = FAM_ERR_CORRUPT;
    while (rc == 0 && fgets(line, sizeof line, fp)) {
        if (line[0] == '\n' || line[0] == '#')
            continue;
        if (n >= max || parse_line(line, &all[n]) != 0)
            rc = FAM_ERR_CORRUPT;
        else
            n++;
    }
    fclose(fp);
    return rc ? rc : n;
}

int fam_load(const char *vendor, const char *visible_env, fam_device_t *out, int max) {
    fam_device_t all[FAM_MAX_DEVICES];
    int n = load_all(vendor, all, FAM_MAX_DEVICES);
    if (n < 0)
        return n;
    const char *vis = visible_env ? getenv(visible_env) : NULL;
    if (!vis || !*vis || strcmp(vis, "all") == 0) {
        int count = n < max ? n : max;
        memcpy(out, all, sizeof *out * (size_t)count);
        return count;
    }
    char buf[1024];
    if (fam_copy(buf, sizeof buf, vis))
        return 0;
    int count = 0, taken[FAM_MAX_DEVICES] = {0};
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok && count < max; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        for (int i = 0; i < n; i++) {
            char idx[16];
            snprintf(idx, sizeof idx, "%d", all[i].index);
            if (!taken[i] && (strcmp(tok, all[i].uuid) == 0 || strcmp(tok, idx) == 0)) {
                taken[i] = 1;
                out[count++] = all[i];
                break;
            }
        }
    }
    return count;
}

int fam_load_physical(const char *vendor, int index, fam_device_t *out) {
    fam_device_t all[FAM_MAX_DEVICES];
    int n = load_all(vendor, all, FAM_MAX_DEVICES);
    if (n < 0)
        return n;
    for (int i = 0; i < n; i++)
        if (all[i].index == index) {
            *out = all[i];
            return 0;
        }
    return -3;
}

int fam_copy(char *dst, unsigned long size, const char *src) {
    int w = snprintf(dst, size, "%s", src);
    return (w < 0 || (unsigned long)w >= size) ? -1 : 0;
}
