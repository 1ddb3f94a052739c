/* Error codes shared by every module. Functions return 0 or a negative
 * VG_E* code; system errors are returned as -errno. The table below
 * generates the enum, vg_strerror() and vg_err_name(). */
#ifndef VG_ERROR_H
#define VG_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

#define VG_ERRNO_MAP(X)                                                  \
    X(EINVAL_CFG, -1001, "invalid configuration")                        \
    X(EUID, -1002, "invalid DICOM UID")                                  \
    X(EPARSE, -1003, "dataset cannot be parsed")                         \
    X(EMISSING, -1004, "required attribute missing")                     \
    X(EDISKLOW, -1005, "free disk space below the watermark")            \
    X(EDB, -1006, "database error")                                      \
    X(ENOTFOUND, -1007, "not found")                                     \
    X(EDUP, -1008, "duplicate instance kept")                            \
    X(ESCHEMA, -1009, "database schema is newer than this program")      \
    X(EDCM, -1010, "DICOM toolkit error")                                \
    X(EMODEL, -1011, "model error")                                      \
    X(EBUSY, -1012, "resource busy")                                     \
    X(ETOOBIG, -1013, "value too large")                                 \
    X(ENOTANALYSABLE, -1014, "series cannot be analysed")

typedef enum {
#define VG__ERR_ENUM(name, code, text) VG_##name = (code),
    VG_ERRNO_MAP(VG__ERR_ENUM)
#undef VG__ERR_ENUM
} vg_err_t;

/* Human text for a code (a VG_E* code or -errno). Never NULL. */
const char *vg_strerror(int err);
/* Symbolic name ("VG_EUID", "ENOENT"); never NULL. */
const char *vg_err_name(int err);

#ifdef __cplusplus
}
#endif

#endif
