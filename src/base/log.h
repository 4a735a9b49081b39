/*
 * log.h — leveled logging to stderr. Each line: ISO time, level, request id
 * (when the thread is serving a request), message. Thread-safe: one write(2)
 * per line.
 */
#ifndef CONCORD_LOG_H
#define CONCORD_LOG_H

typedef enum { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR } log_level;

void log_set_level(log_level l);
/* Parse "debug|info|warn|error"; returns -1 if unknown. */
int log_level_parse(const char *s);
/* Set the request id shown on this thread's log lines (NULL to clear). */
void log_set_request_id(const char *rid);
const char *log_request_id(void);
void log_msg(log_level l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int log_enabled(log_level l);

#define log_debug(...) (log_enabled(LOG_DEBUG) ? log_msg(LOG_DEBUG, __VA_ARGS__) : (void)0)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
