/* records: the record tables expanded into schemas, and the one writer and
 * the one reader they drive (see records.h). */
#include "daemon/records.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Each row's member must have its type's C type: size, and real, string or integer. */
#define REC_KIND(x) _Generic((x), double: 'd', const char *: 's', char *: 's', default: 'i')
#define REC_C_I32 'i', 4
#define REC_C_BOOL 'i', 4
#define REC_C_I64 'i', 8
#define REC_C_LONG 'i', sizeof(long)
#define REC_C_NUM 'd', 8
#define REC_C_MS 'd', 8
#define REC_C_STR 's', sizeof(char *)
#define REC_KIND_OF(k, size) (k)
#define REC_SIZE_OF(k, size) (size)
#define REC_APPLY(m, args) m args
#define REC_CHECK(T, key, m, type) \
    _Static_assert(REC_KIND(((T *)0)->m) == REC_APPLY(REC_KIND_OF, (REC_C_##type)) && \
                   sizeof(((T *)0)->m) == REC_APPLY(REC_SIZE_OF, (REC_C_##type)), \
                   #T "." #m " (" #key "): its C type is not " #type);

#define STEP_CHECK(key, m, type, flags, lo, hi) REC_CHECK(StepLine, key, m, type)
#define EPOCH_CHECK(key, m, type, flags, lo, hi) REC_CHECK(EpochLine, key, m, type)
#define EVENT_CHECK(key, m, type, flags, lo, hi) REC_CHECK(EventLine, key, m, type)
STEP_LINE(STEP_CHECK)
EPOCH_LINE(EPOCH_CHECK)
EVENT_LINE(EVENT_CHECK)
#define SESSION_CHECK(key, m, type, flags, lo, hi) REC_CHECK(SessionLine, key, m, type)
SESSION_LINE(SESSION_CHECK)
#define TENSOR_CHECK(key, m, type, flags, lo, hi) REC_CHECK(TensorLine, key, m, type)
TENSOR_LINE(TENSOR_CHECK)

#define STEP_ROW(key, m, type, flags, lo, hi) {#key, RF_##type, offsetof(StepLine, m), flags, lo, hi},
#define EPOCH_ROW(key, m, type, flags, lo, hi) {#key, RF_##type, offsetof(EpochLine, m), flags, lo, hi},
#define EVENT_ROW(key, m, type, flags, lo, hi) {#key, RF_##type, offsetof(EventLine, m), flags, lo, hi},
static const RecField step_fields[] = {STEP_LINE(STEP_ROW)};
static const RecField epoch_fields[] = {EPOCH_LINE(EPOCH_ROW)};
static const RecField event_fields[] = {EVENT_LINE(EVENT_ROW)};
#define SESSION_ROW(key, m, type, flags, lo, hi) {#key, RF_##type, offsetof(SessionLine, m), flags, lo, hi},
static const RecField session_fields[] = {SESSION_LINE(SESSION_ROW)};
#define TENSOR_ROW(key, m, type, flags, lo, hi) {#key, RF_##type, offsetof(TensorLine, m), flags, lo, hi},
static const RecField tensor_fields[] = {TENSOR_LINE(TENSOR_ROW)};

const RecSchema rec_step = {"steps.jsonl", step_fields, (int)(sizeof step_fields / sizeof *step_fields)};
const RecSchema rec_epoch = {"epochs.jsonl", epoch_fields, (int)(sizeof epoch_fields / sizeof *epoch_fields)};
const RecSchema rec_event = {"events.jsonl", event_fields, (int)(sizeof event_fields / sizeof *event_fields)};
const RecSchema rec_session = {"sessions.jsonl", session_fields,
                               (int)(sizeof session_fields / sizeof *session_fields)};
const RecSchema rec_tensor = {"tensors.jsonl", tensor_fields, (int)(sizeof tensor_fields / sizeof *tensor_fields)};

/* The integer member of f, widened. */
static int64_t get_i(const RecField *f, const char *p)
{
    int32_t i32;
    int64_t i64;
    long l;
    switch (f->type) {
    case RF_I32:
    case RF_BOOL: memcpy(&i32, p, sizeof i32); return i32;
    case RF_LONG: memcpy(&l, p, sizeof l); return l;
    default: memcpy(&i64, p, sizeof i64); return i64;
    }
}

static void set_i(const RecField *f, char *p, int64_t x)
{
    int32_t i32 = (int32_t)x;
    long l = (long)x;
    switch (f->type) {
    case RF_I32:
    case RF_BOOL: memcpy(p, &i32, sizeof i32); break;
    case RF_LONG: memcpy(p, &l, sizeof l); break;
    default: memcpy(p, &x, sizeof x); break;
    }
}

size_t rec_format(const RecSchema *s, const void *rec, char *buf, size_t len)
{
    size_t n = 0;
    for (int i = 0; i < s->n; i++) {
        const RecField *f = &s->f[i];
        const char *p = (const char *)rec + f->off, *str = NULL;
        double x;
        if (f->type == RF_STR) memcpy(&str, p, sizeof str);
        if ((f->flags & REC_IFSET) && (f->type == RF_STR ? !str : get_i(f, p) < 0)) continue;
        char *o = buf + (n < len ? n : len);
        size_t room = n < len ? len - n : 0;
        int w = snprintf(o, room, "%s\"%s\":", n ? "," : "{", f->key);
        n += w > 0 ? (size_t)w : 0;
        o = buf + (n < len ? n : len), room = n < len ? len - n : 0;
        switch (f->type) {
        case RF_NUM:
            memcpy(&x, p, sizeof x);
            w = isfinite(x) ? snprintf(o, room, "%.17g", x) : snprintf(o, room, "null");
            break;
        case RF_MS: memcpy(&x, p, sizeof x), w = snprintf(o, room, "%.3f", x); break;
        case RF_BOOL: w = snprintf(o, room, "%s", get_i(f, p) ? "true" : "false"); break;
        case RF_STR: w = snprintf(o, room, "\"%s\"", str); break;
        default: w = snprintf(o, room, "%lld", (long long)get_i(f, p)); break;
        }
        n += w > 0 ? (size_t)w : 0;
    }
    return n;
}

void rec_clear(const RecSchema *s, void *rec)
{
    for (int i = 0; i < s->n; i++) {
        const RecField *f = &s->f[i];
        char *p = (char *)rec + f->off;
        const double nan = NAN;
        const char *null = NULL;
        if (f->type == RF_NUM || f->type == RF_MS) memcpy(p, &nan, sizeof nan);
        else if (f->type == RF_STR) memcpy(p, &null, sizeof null);
        else set_i(f, p, 0);
    }
}

static int parse_one(const RecField *f, char *p, json_t *v, char *err, size_t errlen)
{
    switch (f->type) {
    case RF_NUM:
    case RF_MS: {
        if (!json_is_number(v) && !json_is_null(v))
            return snprintf(err, errlen, "%s: expected a number or null", f->key), -1;
        double x = json_is_null(v) ? NAN : json_number_value(v);
        memcpy(p, &x, sizeof x);
        return 0;
    }
    case RF_BOOL:
        if (!json_is_boolean(v)) return snprintf(err, errlen, "%s: expected true or false", f->key), -1;
        set_i(f, p, json_is_true(v));
        return 0;
    case RF_STR: {
        if (!json_is_string(v)) return snprintf(err, errlen, "%s: expected a string", f->key), -1;
        const char *str = json_string_value(v);
        memcpy(p, &str, sizeof str);
        return 0;
    }
    default: {
        if (!json_is_integer(v)) return snprintf(err, errlen, "%s: expected an integer", f->key), -1;
        json_int_t x = json_integer_value(v);
        if (x < f->lo || x > f->hi)
            return snprintf(err, errlen, "%s: %lld out of range [%lld, %lld]", f->key, (long long)x,
                            (long long)f->lo, (long long)f->hi), -1;
        set_i(f, p, (int64_t)x);
        return 0;
    }
    }
}

/* lenient: a field that does not read is left as it was, the others still read. */
static int parse_fields(const RecSchema *s, void *rec, json_t *o, int lenient, char *err, size_t errlen)
{
    if (!json_is_object(o)) return snprintf(err, errlen, "not a JSON object"), -1;
    for (int i = 0; i < s->n; i++) {
        const RecField *f = &s->f[i];
        json_t *v = json_object_get(o, f->key);
        if (!v) {
            if ((f->flags & REC_NEED) && !lenient) return snprintf(err, errlen, "%s: missing", f->key), -1;
            continue;
        }
        if (parse_one(f, (char *)rec + f->off, v, err, errlen) && !lenient) return -1;
    }
    return 0;
}

int rec_parse(const RecSchema *s, void *rec, json_t *o, char *err, size_t errlen)
{
    return parse_fields(s, rec, o, 0, err, errlen);
}

void rec_each_line(const char *path, const RecSchema *s, void *rec,
                   void (*fn)(const void *rec, json_t *o, void *ctx), void *ctx)
{
    char *line = NULL, err[256];
    size_t cap = 0;
    FILE *f = fopen(path, "r");
    while (f && getline(&line, &cap, f) > 0) {
        json_t *o = strchr(line, '\n') ? json_loads(line, 0, NULL) : NULL;
        rec_clear(s, rec);
        if (o && parse_fields(s, rec, o, 1, err, sizeof err) == 0) fn(rec, o, ctx);
        json_decref(o);
    }
    if (f) fclose(f);
    free(line);
}
