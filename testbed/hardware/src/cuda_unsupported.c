/*
 * Exports every name in cuda_unsupported_list.h as a function that ignores its arguments and returns
 * CUDA_ERROR_NOT_SUPPORTED. The stubs take no declared parameters: on the x86-64 and aarch64 calling
 * conventions a callee that reads no argument is safe whatever the caller passes, and none of them
 * writes through a pointer. They are deliberately not declared in cuda_emu.h (their real prototypes
 * need types the emulation does not model); cuGetProcAddress hands them out too.
 */
#include <string.h>

#include "cuda_emu.h"
#include "emu_common.h"

#define X(name)                                                                  \
    HAMI_EMU_EXPORT CUresult name(void);                                          \
    HAMI_EMU_EXPORT CUresult name(void) { return CUDA_ERROR_NOT_SUPPORTED; }
#include "cuda_unsupported_list.h"
#undef X

static const struct {
    const char *name;
    void *fn;
} g_unsupported[] = {
#define X(name) {#name, (void *)name},
#include "cuda_unsupported_list.h"
#undef X
};

/* the stub for `name`, also when asked by its base name (cuGetProcAddress strips the _vN suffix) */
HAMI_EMU_HIDDEN void *hami_emu_cuda_unsupported(const char *name) {
    size_t n = strlen(name);
    for (size_t i = 0; i < sizeof(g_unsupported) / sizeof(g_unsupported[0]); i++) {
        const char *s = g_unsupported[i].name;
        if (!strcmp(s, name)) return g_unsupported[i].fn;
        if (!strncmp(s, name, n) && s[n] == '_' && s[n + 1] == 'v' && s[n + 2] >= '0' && s[n + 2] <= '9' && !s[n + 3])
            return g_unsupported[i].fn;
    }
    return NULL;
}
