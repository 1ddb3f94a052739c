/* The process-wide counters; see metrics.h. */
#include "server/metrics.h"

vg_metrics_t vg_metrics;

static const char *const reject_labels[] = {
#define VG__REJ_LABEL(name, label) label,
    VG_REJECT_MAP(VG__REJ_LABEL)
#undef VG__REJ_LABEL
};

static const char *const storefail_labels[] = {
#define VG__SF_LABEL(name, label) label,
    VG_STOREFAIL_MAP(VG__SF_LABEL)
#undef VG__SF_LABEL
};

const char *vg_reject_label(vg_reject_t r)
{
    return r < VG_REJECT_COUNT ? reject_labels[r] : "unknown";
}

const char *vg_storefail_label(vg_storefail_t f)
{
    return f < VG_STOREFAIL_COUNT ? storefail_labels[f] : "unknown";
}
