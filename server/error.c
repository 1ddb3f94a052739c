/* Text for error codes; see error.h. */
#include "server/error.h"

#include <string.h>

const char *vg_strerror(int err)
{
    switch (err) {
#define VG__ERR_TEXT(name, code, text) case (code): return (text);
        VG_ERRNO_MAP(VG__ERR_TEXT)
#undef VG__ERR_TEXT
    default:
        break;
    }
    if (err < 0 && err > -1000)
        return strerror(-err);
    return "unknown error";
}

const char *vg_err_name(int err)
{
    switch (err) {
#define VG__ERR_NAME(name, code, text) case (code): return "VG_" #name;
        VG_ERRNO_MAP(VG__ERR_NAME)
#undef VG__ERR_NAME
    default:
        break;
    }
    if (err < 0 && err > -1000) {
        const char *n = strerrorname_np(-err);
        return n ? n : "errno";
    }
    return "unknown";
}
