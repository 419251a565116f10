#include "core/status.h"

static const struct {
    int http;
    const char *title;
} dk_status_rows[] = {
#define DK_STATUS_ROW(name, http, title) {http, title},
    DK_STATUS_MAP(DK_STATUS_ROW)
#undef DK_STATUS_ROW
};

int dk_status_http(dk_status st)
{
    if ((unsigned)st >= DK_STATUS__COUNT)
        return 500;
    return dk_status_rows[st].http;
}

const char *dk_status_title(dk_status st)
{
    if ((unsigned)st >= DK_STATUS__COUNT)
        return "Internal Server Error";
    return dk_status_rows[st].title;
}

dk_status dk_status_from_http(int http)
{
    for (unsigned i = 0; i < DK_STATUS__COUNT; i++)
        if (dk_status_rows[i].http == http)
            return (dk_status)i;
    return DK_E_INTERNAL;
}
