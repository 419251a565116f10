#include "core/log.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/str.h"
#include "core/timeutil.h"
#include "core/trace.h"
#include "core/banned.h"

static char dk_log_service[32] = "docket";
static dk_log_level dk_log_min = DK_LOG_INFO;
static _Thread_local const char *dk_log_tl_request_id;
static _Thread_local const char *dk_log_tl_trace_id;

void dk_log_init(const char *service, dk_log_level level)
{
    dk_strlcpy(dk_log_service, service, sizeof dk_log_service);
    dk_log_min = level;
}

bool dk_log_level_parse(const char *s, dk_log_level *ret)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++) {
        if (s && strcmp(s, names[i]) == 0) {
            *ret = (dk_log_level)i;
            return true;
        }
    }
    return false;
}

bool dk_log_enabled(dk_log_level level)
{
    return level >= dk_log_min;
}

void dk_log_set_context(const char *request_id, const char *trace_id)
{
    dk_log_tl_request_id = request_id;
    dk_log_tl_trace_id = trace_id;
    if (!request_id && !trace_id)
        dk_trace_leave();
}

const char *dk_log_request_id(void)
{
    return dk_log_tl_request_id;
}

size_t dk_json_escape(char *out, size_t cap, const char *s)
{
    size_t o = 0;
    if (cap == 0)
        return 0;
    for (const unsigned char *p = (const unsigned char *)s; p && *p; p++) {
        char esc[8];
        size_t n;
        switch (*p) {
        case '"':
            n = 2, esc[0] = '\\', esc[1] = '"';
            break;
        case '\\':
            n = 2, esc[0] = '\\', esc[1] = '\\';
            break;
        case '\n':
            n = 2, esc[0] = '\\', esc[1] = 'n';
            break;
        case '\r':
            n = 2, esc[0] = '\\', esc[1] = 'r';
            break;
        case '\t':
            n = 2, esc[0] = '\\', esc[1] = 't';
            break;
        default:
            if (*p < 0x20) {
                n = (size_t)snprintf(esc, sizeof esc, "\\u%04x", *p);
            } else {
                n = 1, esc[0] = (char)*p;
            }
        }
        if (o + n >= cap)
            break;
        memcpy(out + o, esc, n);
        o += n;
    }
    out[o] = '\0';
    return o;
}

static void dk_log_v(dk_log_level level, const char *extra, const char *fmt, va_list ap)
    DK_PRINTF(3, 0);
static void dk_log_v(dk_log_level level, const char *extra, const char *fmt, va_list ap)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    char msg[2048];
    vsnprintf(msg, sizeof msg, fmt, ap);
    char emsg[4096];
    dk_json_escape(emsg, sizeof emsg, msg);
    char ts[DK_RFC3339_LEN];
    dk_time_format(dk_now_ms(), ts);
    char line[8192];
    int n = snprintf(line, sizeof line, "{\"ts\":\"%s\",\"level\":\"%s\",\"service\":\"%s\"", ts,
                     names[level], dk_log_service);
    if (dk_log_tl_request_id && n > 0 && (size_t)n < sizeof line)
        n += snprintf(line + n, sizeof line - (size_t)n, ",\"request_id\":\"%s\"",
                      dk_log_tl_request_id);
    /* the trace context of the thread (a request's span, or an event's) wins: its span id
     * goes with it */
    const char *tid = dk_trace_current_trace_id();
    const char *sid = tid ? dk_trace_current_span_id() : NULL;
    if (!tid)
        tid = dk_log_tl_trace_id;
    if (tid && n > 0 && (size_t)n < sizeof line)
        n += snprintf(line + n, sizeof line - (size_t)n, ",\"trace_id\":\"%s\"", tid);
    if (sid && n > 0 && (size_t)n < sizeof line)
        n += snprintf(line + n, sizeof line - (size_t)n, ",\"span_id\":\"%s\"", sid);
    if (n > 0 && (size_t)n < sizeof line)
        n += snprintf(line + n, sizeof line - (size_t)n, ",\"msg\":\"%s\"%s}\n", emsg,
                      extra ? extra : "");
    if (n <= 0)
        return;
    if ((size_t)n >= sizeof line) {
        n = (int)sizeof line - 1;
        line[n - 1] = '\n';
    }
    ssize_t w = write(STDOUT_FILENO, line, (size_t)n);
    (void)w;
}

void dk_log(dk_log_level level, const char *fmt, ...)
{
    if (level < dk_log_min)
        return;
    va_list ap;
    va_start(ap, fmt);
    dk_log_v(level, NULL, fmt, ap);
    va_end(ap);
}

void dk_log_with(dk_log_level level, const char *extra, const char *fmt, ...)
{
    if (level < dk_log_min)
        return;
    va_list ap;
    va_start(ap, fmt);
    dk_log_v(level, extra, fmt, ap);
    va_end(ap);
}
