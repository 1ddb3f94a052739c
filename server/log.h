/* Logging to stderr, one line per event, journald-friendly (no colours,
 * a priority prefix). The level is checked before the arguments are
 * evaluated. No patient name or ID is logged above debug level. */
#ifndef VG_LOG_H
#define VG_LOG_H

enum { VG_LOG_ERROR = 0, VG_LOG_WARN = 1, VG_LOG_INFO = 2, VG_LOG_DEBUG = 3 };

extern int vg__log_level;

void vg__log(int level, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define vg_log(level, ...)                                               \
    do {                                                                 \
        if ((level) <= vg__log_level)                                    \
            vg__log((level), __FILE__, __LINE__, __VA_ARGS__);           \
    } while (0)

/* Parses "error", "warn", "info", "debug"; returns -1 if unknown. */
int vg_log_level_parse(const char *s);
void vg_log_set_level(int level);

/* Invariant check: logs file:line and aborts. Never for input checks. */
#define vg_assert(cond)                                                  \
    do {                                                                 \
        if (!(cond))                                                     \
            vg__assert_fail(#cond, __FILE__, __LINE__);                  \
    } while (0)
void vg__assert_fail(const char *expr, const char *file, int line)
    __attribute__((noreturn));

#endif
