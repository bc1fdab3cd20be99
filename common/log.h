/* log: one logging macro with levels for human-readable progress on stderr.
 * The level is checked before the arguments are evaluated; every line is
 * prefixed with UTC time, role and rank. Machine-readable output is JSON
 * lines written elsewhere (daemon/runlog). */
#ifndef CLIPD_LOG_H
#define CLIPD_LOG_H

enum { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

extern int log_level;

#include <stddef.h>

void log_set_role(const char *role, int rank);
/* Monotonic clock in milliseconds, for step timings and stall detection. */
double log_clock_ms(void);
void log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Fill a caller-owned message buffer (STYLE 9) and return -1: the one
 * helper for recoverable errors. */
int log_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define LOG(level, ...) \
    do { if ((level) <= log_level) log_write((level), __VA_ARGS__); } while (0)

#endif
