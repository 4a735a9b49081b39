/*
 * log.c — leveled stderr logging with per-thread request ids (see log.h).
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static log_level min_level = LOG_INFO;
static _Thread_local char request_id[40];

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_set_level(log_level l) { min_level = l; }

int log_level_parse(const char *s) {
    for (int i = 0; i < 4; i++)
        if (strcmp(s, level_names[i]) == 0) return i;
    return -1;
}

int log_enabled(log_level l) { return l >= min_level; }

void log_set_request_id(const char *rid) {
    snprintf(request_id, sizeof request_id, "%s", rid ? rid : "");
}

const char *log_request_id(void) { return request_id; }

void log_msg(log_level l, const char *fmt, ...) {
    if (l < min_level) return;
    char line[2048];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
                     level_names[l]);
    if (request_id[0] && n < (int)sizeof line) n += snprintf(line + n, sizeof line - (size_t)n, "[%s] ", request_id);
    va_list ap;
    va_start(ap, fmt);
    if (n < (int)sizeof line) n += vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    if (n >= (int)sizeof line - 1) n = (int)sizeof line - 2;
    line[n++] = '\n';
    ssize_t w = write(2, line, (size_t)n);
    (void)w;
}
