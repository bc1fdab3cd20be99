/* events: the event-kind table expanded (see events.h). */
#include "common/events.h"

#include <string.h>

#include "common/log.h"

#define EVENT_INFO(id, nm, sc, act, norms, level, config) [EV_##id] = {nm, sc, act, norms, level},
const EventKindInfo event_kinds[EV_COUNT] = {EVENT_KINDS(EVENT_INFO)};
#undef EVENT_INFO

static const char *const check_names[CHK_COUNT] = {
    NULL, "nonfinite", "uniform", "initial", "recent", "clip_limit", "window", "epoch",
    "checksum", "rise",
};

const char *event_kind_name(int kind)
{
    return (kind >= 0 && kind < EV_COUNT) ? event_kinds[kind].name : NULL;
}

int event_kind_from_name(const char *name)
{
    if (!name) return -1;
    for (int k = 0; k < EV_COUNT; k++)
        if (strcmp(name, event_kinds[k].name) == 0) return k;
    return -1;
}

const char *event_check_name(int check)
{
    return (check > CHK_NONE && check < CHK_COUNT) ? check_names[check] : NULL;
}

unsigned event_mask(int scope)
{
    unsigned m = 0;
    for (int k = 0; k < EV_COUNT; k++)
        if (event_kinds[k].scope == scope) m |= 1u << k;
    return m;
}
