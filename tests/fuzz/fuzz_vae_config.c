/* Fuzzes the VAE config.json parser (models/wan/vae.h: pd_wan_vae_config_load): any input either
 * parses into a config within the documented bounds or fails with a message; never crashes. */
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "models/wan/vae.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int fd = -1;
    if (fd < 0) fd = memfd_create("vae_config", MFD_CLOEXEC);
    PD_ASSERT(fd >= 0);
    PD_ASSERT(ftruncate(fd, 0) == 0);
    PD_ASSERT(pwrite(fd, data, size, 0) == (ssize_t)size);
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    pd_wan_vae_config c;
    pd_status st = pd_wan_vae_config_load(path, &c);
    if (st == PD_OK) {
        PD_ASSERT(c.z_dim == 16 && c.base_dim >= 1 && c.base_dim <= PD_WAN_VAE_MAX_BASE_DIM);
        PD_ASSERT(c.num_res_blocks >= 1 && c.num_res_blocks <= PD_WAN_VAE_MAX_RES_BLOCKS);
        for (int i = 0; i < 4; i++) PD_ASSERT(c.dim_mult[i] >= 1 && c.dim_mult[i] <= PD_WAN_VAE_MAX_MULT);
        for (int i = 0; i < 16; i++) PD_ASSERT(c.latents_std[i] > 0.0f);
    } else {
        PD_ASSERT(pd_error_msg()[0]);
    }
    return 0;
}
