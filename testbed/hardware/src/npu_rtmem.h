/*
 * Device memory the emulated Ascend runtime (libruntime.so) hands out, shared with the emulated DCMI
 * (libdcmi.so) so that both show the same usage.
 *
 * One file per process and NPU: <state dir>/rtmem/<phy>.<token>, holding that process's bytes in use as
 * a fixed-width decimal. The owner keeps a shared flock on it for its lifetime; a reader that can take
 * an exclusive lock has found the file of a process that is gone (the kernel dropped its lock), and
 * removes it: the memory of a dead process returns to the card, as the real driver frees it. Files and
 * locks work across the pid namespaces of the testbed's containers, where pids would not.
 */
#ifndef HAMI_NPU_RTMEM_H
#define HAMI_NPU_RTMEM_H

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define RTMEM_DIGITS 20

static inline void rtmem_dir(char *out, size_t len, const char *state_dir) {
    snprintf(out, len, "%s/rtmem", state_dir);
}

/* bytes in use on physical NPU phy by the live processes of the node */
static inline unsigned long long rtmem_sum(const char *state_dir, int phy) {
    char dir[4200], path[4600], prefix[32];
    rtmem_dir(dir, sizeof dir, state_dir);
    snprintf(prefix, sizeof prefix, "%d.", phy);
    DIR *d = opendir(dir);
    if (!d) return 0;
    unsigned long long sum = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, prefix, strlen(prefix)) != 0) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        if (flock(fd, LOCK_EX | LOCK_NB) == 0) { /* nobody holds it: its process has exited */
            unlink(path);
            close(fd);
            continue;
        }
        char buf[RTMEM_DIGITS + 2] = {0};
        ssize_t n = pread(fd, buf, RTMEM_DIGITS + 1, 0);
        close(fd);
        if (n > 0) sum += strtoull(buf, NULL, 10);
    }
    closedir(d);
    return sum;
}

#endif
