/* stderr logger; see log.h. A line is written with one fprintf under
 * stderr's lock so lines from association threads never interleave. */
#include "server/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int vg__log_level = VG_LOG_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};
/* sd-daemon priority prefixes, understood by journald. */
static const char *const level_prio[] = {"<3>", "<4>", "<6>", "<7>"};

void vg__log(int level, const char *file, int line, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    if (level < 0 || level > VG_LOG_DEBUG)
        level = VG_LOG_ERROR;
    if (level == VG_LOG_DEBUG)
        fprintf(stderr, "%s%s.%03ldZ %s %s:%d: %s\n", level_prio[level], when,
                ts.tv_nsec / 1000000, level_names[level], file, line, msg);
    else
        fprintf(stderr, "%s%s.%03ldZ %s %s\n", level_prio[level], when,
                ts.tv_nsec / 1000000, level_names[level], msg);
}

int vg_log_level_parse(const char *s)
{
    for (int i = 0; i <= VG_LOG_DEBUG; i++)
        if (strcmp(s, level_names[i]) == 0)
            return i;
    return -1;
}

void vg_log_set_level(int level)
{
    vg__log_level = level;
}

void vg__assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "<2>assertion failed: %s at %s:%d\n", expr, file, line);
    abort();
}
