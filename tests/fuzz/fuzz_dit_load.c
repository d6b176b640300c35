/* Fuzzes the DiT loader (models/wan/dit.h): an input starting with '{' is a transformer/config.json
 * for pd_wan_dit_config_load; anything else is a checkpoint for pd_wan_dit_load (layout detection,
 * config inference from shapes, per-tensor shape checks). Either succeeds with a config inside the
 * documented bounds whose every tensor was checked, or fails with a message; never crashes. */
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "models/wan/dit.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int fd = -1;
    static pd_backend *be;
    if (fd < 0) {
        fd = memfd_create("dit_input", MFD_CLOEXEC);
        pd_log_set_level(PD_LOG_ERROR);
        PD_ASSERT(pd_backend_cpu_create(1, &be) == PD_OK);
    }
    PD_ASSERT(fd >= 0);
    PD_ASSERT(ftruncate(fd, 0) == 0);
    PD_ASSERT(pwrite(fd, data, size, 0) == (ssize_t)size);
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    pd_wan_dit_config c;
    if (size && data[0] == '{') {
        pd_status st = pd_wan_dit_config_load(path, &c);
        PD_ASSERT(st == PD_OK ? pd_wan_dit_config_check(&c, "fuzz") == PD_OK : pd_error_msg()[0] != 0);
        return 0;
    }
    pd_wan_dit *m = NULL;
    pd_status st = pd_wan_dit_load(path, be, &m);
    if (st != PD_OK) {
        PD_ASSERT(m == NULL && pd_error_msg()[0]);
        return 0;
    }
    c = *pd_wan_dit_get_config(m);
    PD_ASSERT(pd_wan_dit_config_check(&c, "fuzz") == PD_OK);
    pd_wan_dit_grid g;
    PD_ASSERT(pd_wan_dit_grid_of(&c, c.patch[0], c.patch[1], c.patch[2], &g) == PD_OK && g.tokens == 1);
    pd_wan_dit_free(m);
    return 0;
}
