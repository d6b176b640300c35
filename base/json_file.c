#include "base/json_file.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>

pd_status pd_json_file_load(const char *path, size_t max_bytes, json_t **out) {
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0) return pd_error_set(PD_ERR_IO, "%s: %s", path, strerror(errno));
    if (!S_ISREG(sb.st_mode)) return pd_error_set(PD_ERR_IO, "%s: not a regular file", path);
    if ((size_t)sb.st_size > max_bytes)
        return pd_error_set(PD_ERR_FORMAT, "%s: %lld bytes is larger than the %zu a config may have", path,
                            (long long)sb.st_size, max_bytes);
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) return pd_error_set(PD_ERR_FORMAT, "%s:%d: bad JSON: %s", path, jerr.line, jerr.text);
    *out = root;
    return PD_OK;
}
