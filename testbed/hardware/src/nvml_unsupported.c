/*
 * Exports every name in nvml_unsupported_list.h as a function that ignores its arguments and returns
 * NVML_ERROR_NOT_SUPPORTED (what the real library answers for a feature a GPU lacks). No declared
 * parameters: a callee that reads no argument is safe whatever the caller passes on x86-64 and aarch64;
 * not declared in nvml_emu.h, whose prototypes are checked against the real nvml.h.
 */
#include "emu_common.h"
#include "nvml_emu.h"

#define X(name)                                                                  \
    HAMI_EMU_EXPORT nvmlReturn_t name(void);                                      \
    HAMI_EMU_EXPORT nvmlReturn_t name(void) { return NVML_ERROR_NOT_SUPPORTED; }
#include "nvml_unsupported_list.h"
#include "nvml_gonvml_unsupported_list.h" /* what go-nvml binds besides (upstream HAMi's plugin) */
#undef X
