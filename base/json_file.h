/* Reading small JSON files (model and daemon configs) with a size bound, so a hostile or mistaken
 * path (a multi-gigabyte file, a FIFO) cannot exhaust memory before parsing even starts. */
#ifndef PD_JSON_FILE_H
#define PD_JSON_FILE_H

#include <jansson.h>
#include <stddef.h>

#include "base/status.h"

/* Parses the JSON file at path into *out (the caller json_decref()s it). Duplicate object keys are
 * rejected. Errors: PD_ERR_IO (missing or unreadable, not a regular file), PD_ERR_FORMAT (larger
 * than max_bytes, or not JSON: the message gives the line and jansson's reason). */
pd_status pd_json_file_load(const char *path, size_t max_bytes, json_t **out);

#endif
