/*
 * Hole 3: every way a program can obtain a driver entry point yields the shim's wrapper. Linked
 * directly against libcuda.so.1 (so the direct-call path exists), then one table row per path:
 * direct reference, dlopen+dlsym, RTLD_DEFAULT, RTLD_NEXT, a RTLD_DEEPBIND handle, dlvsym on each of
 * those handles, and cuGetProcAddress / cuGetProcAddress_v2 (also obtained through itself) at every
 * version and flag. Each row's cuMemAlloc must refuse 8 MiB under the 4 MiB limit, grant and free
 * 1 MiB, and its cuMemGetInfo must report the 4 MiB total. Limit: 4 MiB.
 */
#include "hole_common.h"

typedef CUresult (*alloc_t)(CUdeviceptr *, size_t);
typedef CUresult (*free_t)(CUdeviceptr);
typedef CUresult (*info_t)(size_t *, size_t *);
typedef CUresult (*gpa1_t)(const char *, void **, int, unsigned long long);
typedef CUresult (*gpa2_t)(const char *, void **, int, unsigned long long, int *);

/* the linked references: resolved by the dynamic linker, the shim being preloaded */
extern CUresult cuMemAlloc_v2(CUdeviceptr *, size_t);
extern CUresult cuMemFree_v2(CUdeviceptr);
extern CUresult cuMemGetInfo_v2(size_t *, size_t *);
extern CUresult cuGetProcAddress(const char *, void **, int, unsigned long long);
extern CUresult cuGetProcAddress_v2(const char *, void **, int, unsigned long long, int *);

/* may_miss: the lookup itself may fail (dlvsym finds no version in an unversioned library) */
static void check_row_opt(const char *row, void *a, void *f, void *i, int may_miss) {
    if (may_miss && !a && !f && !i) {
        printf("row %s none\n", row);
        return;
    }
    if (!a || !f || !i) {
        CHECK(0, "%s: lookup failed (alloc %p free %p info %p)", row, a, f, i);
        return;
    }
    CUdeviceptr p = 0;
    int rc = ((alloc_t)a)(&p, 8 * MIB);
    CHECK(rc == OOM, "%s: 8 MiB under a 4 MiB limit returned %d (the unwrapped driver function?)", row, rc);
    if (rc == OK) ((free_t)f)(p);
    rc = ((alloc_t)a)(&p, MIB);
    CHECK(rc == OK, "%s: 1 MiB returned %d", row, rc);
    if (rc == OK) CHECK(((free_t)f)(p) == OK, "%s: free failed", row);
    size_t fr = 0, t = 0;
    rc = ((info_t)i)(&fr, &t);
    CHECK(rc == OK && t == 4 * MIB && fr == 4 * MIB, "%s: memory info rc=%d free=%zu total=%zu", row, rc, fr, t);
    printf("row %s ok\n", row);
}
static void check_row(const char *row, void *a, void *f, void *i) { check_row_opt(row, a, f, i, 0); }

int main(int argc, char **argv) {
    setup(0);
    int rows = 0;
    char name[128];
    check_row("direct", (void *)cuMemAlloc_v2, (void *)cuMemFree_v2, (void *)cuMemGetInfo_v2), rows++;

    void *deep = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    void *local = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    struct {
        const char *name;
        void *handle;
    } handles[] = {{"dlopen", cuda}, {"local", local}, {"deepbind", deep}, {"default", RTLD_DEFAULT},
                   {"next", RTLD_NEXT}};
    const char *versions[] = {"libcuda.so.1", "GLIBC_2.2.5", "CUDA_12"};
    for (size_t h = 0; h < sizeof(handles) / sizeof(handles[0]); h++) {
        snprintf(name, sizeof(name), "dlsym(%s)", handles[h].name);
        check_row(name, dlsym(handles[h].handle, "cuMemAlloc_v2"), dlsym(handles[h].handle, "cuMemFree_v2"),
                  dlsym(handles[h].handle, "cuMemGetInfo_v2"));
        rows++;
        for (size_t v = 0; v < sizeof(versions) / sizeof(versions[0]); v++) {
            snprintf(name, sizeof(name), "dlvsym(%s,%s)", handles[h].name, versions[v]);
            check_row_opt(name, dlvsym(handles[h].handle, "cuMemAlloc_v2", versions[v]),
                          dlvsym(handles[h].handle, "cuMemFree_v2", versions[v]),
                          dlvsym(handles[h].handle, "cuMemGetInfo_v2", versions[v]), 1);
            rows++;
        }
    }

    /* dlvsym that does find a versioned definition (argv[1]: a library exporting them as CUDA_TEST) */
    if (argc > 1) {
        void *v = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
        CHECK(v != NULL, "dlopen %s: %s", argv[1], dlerror());
        void *a = dlvsym(v, "cuMemAlloc_v2", "CUDA_TEST");
        void *f = dlvsym(v, "cuMemFree_v2", "CUDA_TEST");
        void *i = dlvsym(v, "cuMemGetInfo_v2", "CUDA_TEST");
        if (v) check_row("dlvsym(versioned,CUDA_TEST)", a, f, i), rows++;
        if (v) check_row("dlsym(versioned)", dlsym(v, "cuMemAlloc_v2"), dlsym(v, "cuMemFree_v2"),
                         dlsym(v, "cuMemGetInfo_v2")), rows++;
    }

    /* cuGetProcAddress: linked, through dlsym, and as handed out by itself */
    gpa1_t gpa1[3] = {cuGetProcAddress, (gpa1_t)dlsym(cuda, "cuGetProcAddress"), NULL};
    gpa2_t gpa2[3] = {cuGetProcAddress_v2, (gpa2_t)dlsym(cuda, "cuGetProcAddress_v2"), NULL};
    cuGetProcAddress_v2("cuGetProcAddress", (void **)&gpa2[2], 12000, 0, NULL);
    cuGetProcAddress_v2("cuGetProcAddress", (void **)&gpa1[2], 11030, 0, NULL);
    CHECK(gpa1[1] && gpa2[1] && gpa2[2] && gpa1[2], "cuGetProcAddress lookups failed");
    const int cuda_versions[] = {3020, 4000, 11030, 11080, 12000, 12080, 13000};
    const unsigned long long flags[] = {0, 1, 2};
    for (int g = 0; g < 3; g++)
        for (size_t v = 0; v < sizeof(cuda_versions) / sizeof(int); v++)
            for (size_t fl = 0; fl < 3; fl++) {
                void *a = NULL, *f = NULL, *i = NULL;
                int st = -1;
                if (gpa1[g]) {
                    gpa1[g]("cuMemAlloc", &a, cuda_versions[v], flags[fl]);
                    gpa1[g]("cuMemFree", &f, cuda_versions[v], flags[fl]);
                    gpa1[g]("cuMemGetInfo", &i, cuda_versions[v], flags[fl]);
                    snprintf(name, sizeof(name), "gpa%d(%d,%llu)", g, cuda_versions[v], flags[fl]);
                    check_row(name, a, f, i), rows++;
                }
                if (gpa2[g]) {
                    a = f = i = NULL;
                    gpa2[g]("cuMemAlloc", &a, cuda_versions[v], flags[fl], &st);
                    gpa2[g]("cuMemFree", &f, cuda_versions[v], flags[fl], &st);
                    gpa2[g]("cuMemGetInfo", &i, cuda_versions[v], flags[fl], &st);
                    snprintf(name, sizeof(name), "gpa_v2_%d(%d,%llu)", g, cuda_versions[v], flags[fl]);
                    check_row(name, a, f, i), rows++;
                }
            }
    printf("rows %d\n", rows);
    return finish("resolve");
}
