/* log.h — JSON lines on stdout: {"ts","level","service","request_id","trace_id","msg",...}.
 * The HTTP core sets the per-thread request context, so every line a handler logs carries its
 * request and trace ids. The level is tested before formatting. Thread-safe (one write(2) per
 * line). Never pass secrets: log what happened, not the values. */
#ifndef DK_LOG_H
#define DK_LOG_H

#include <stdbool.h>
#include <stddef.h>

#include "core/status.h"

typedef enum { DK_LOG_DEBUG, DK_LOG_INFO, DK_LOG_WARN, DK_LOG_ERROR } dk_log_level;

void dk_log_init(const char *service, dk_log_level level);
/* "debug"|"info"|"warn"|"error"; false when unknown. */
bool dk_log_level_parse(const char *s, dk_log_level *ret);
bool dk_log_enabled(dk_log_level level);
/* Context of the current thread's request; NULL clears. The strings must outlive the request. */
void dk_log_set_context(const char *request_id, const char *trace_id);
/* The current thread's request id (NULL outside a request), e.g. to pass on to an upstream. */
const char *dk_log_request_id(void);

void dk_log(dk_log_level level, const char *fmt, ...) DK_PRINTF(2, 3);
/* A line with extra JSON members: `extra` is a pre-rendered ",\"k\":v,..." fragment or NULL. */
void dk_log_with(dk_log_level level, const char *extra, const char *fmt, ...) DK_PRINTF(3, 4);

#define dk_log_debug(...) dk_log(DK_LOG_DEBUG, __VA_ARGS__)
#define dk_log_info(...)  dk_log(DK_LOG_INFO, __VA_ARGS__)
#define dk_log_warn(...)  dk_log(DK_LOG_WARN, __VA_ARGS__)
#define dk_log_error(...) dk_log(DK_LOG_ERROR, __VA_ARGS__)

/* Appends s to out as the body of a JSON string (no quotes), escaping as needed; returns the
 * bytes written, truncating at cap-1. */
size_t dk_json_escape(char *out, size_t cap, const char *s);

#endif
