/* YAML: the configuration loader (a --config file with any content, and flags) and the
 * YAML-to-JSON conversion that serves /openapi.json. The first byte picks which. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"
#include "core/config.h"
#include "core/yaml_json.h"

static char path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    snprintf(path, sizeof path, "/tmp/docket-fuzz-yaml-%ld.yaml", (long)getpid());
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    char err[512];
    if (data[0] & 1) {
        json_t *v = dk_yaml_to_json((const char *)data + 1, size - 1, err, sizeof err);
        json_decref(v);
        return 0;
    }
    if (data[0] & 2) {
        /* the bytes as one flag: --key=value */
        char *flag = fuzz_cstr(data + 1, size - 1);
        char *argv[] = {flag, NULL};
        dk_config *c = NULL;
        if (dk_config_load_from(1, argv, NULL, &c, err, sizeof err) == DK_OK)
            dk_config_free(c);
        free(flag);
        return 0;
    }
    FILE *f = fopen(path, "wb");
    if (!f)
        abort();
    fwrite(data + 1, 1, size - 1, f);
    fclose(f);
    char *argv[] = {(char *)"--config", path, NULL};
    dk_config *c = NULL;
    if (dk_config_load_from(2, argv, NULL, &c, err, sizeof err) == DK_OK)
        dk_config_free(c);
    unlink(path);
    return 0;
}
