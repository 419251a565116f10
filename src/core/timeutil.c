#include "core/timeutil.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/banned.h"

int64_t dk_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t dk_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

double dk_mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void dk_cond_init_monotonic(pthread_cond_t *c)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(c, &ca);
    pthread_condattr_destroy(&ca);
}

struct timespec dk_mono_deadline(int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (ms < 0)
        ms = 0;
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

void dk_time_format(int64_t ms, char out[DK_RFC3339_LEN])
{
    time_t secs = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
    int frac = (int)(ms - (int64_t)secs * 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    /* the year is clamped to four digits: RFC 3339 has no other */
    int year = tm.tm_year + 1900;
    year = year < 0 ? 0 : year > 9999 ? 9999 : year;
    unsigned mon = (unsigned)(tm.tm_mon + 1) % 13, day = (unsigned)tm.tm_mday % 32;
    unsigned hour = (unsigned)tm.tm_hour % 24, min = (unsigned)tm.tm_min % 60;
    unsigned sec = (unsigned)tm.tm_sec % 61, milli = (unsigned)frac % 1000;
    /* YYYY-MM-DDTHH:MM:SS.mmmZ written digit by digit (three of these per task in a list) */
    const unsigned fields[] = {(unsigned)year, mon, day, hour, min, sec, milli};
    static const int widths[] = {4, 2, 2, 2, 2, 2, 3};
    static const char after[] = "--T::.Z";
    int o = 0;
    for (int f = 0; f < 7; f++) {
        unsigned v = fields[f];
        for (int d = widths[f] - 1; d >= 0; d--) {
            out[o + d] = (char)('0' + v % 10);
            v /= 10;
        }
        o += widths[f];
        out[o++] = after[f];
    }
    out[o] = '\0';
}

static bool dk_digits(const char *s, int n, int *ret)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *ret = v;
    return true;
}

static int dk_days_in_month(int y, int m)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return 29;
    return days[m - 1];
}

bool dk_time_parse(const char *s, int64_t *ret_ms)
{
    if (!s)
        return false;
    size_t n = strlen(s);
    if (n < 20)
        return false;
    int y, mo, d, h, mi, se;
    if (!dk_digits(s, 4, &y) || s[4] != '-' || !dk_digits(s + 5, 2, &mo) || s[7] != '-' ||
        !dk_digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't') || !dk_digits(s + 11, 2, &h) ||
        s[13] != ':' || !dk_digits(s + 14, 2, &mi) || s[16] != ':' || !dk_digits(s + 17, 2, &se))
        return false;
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > dk_days_in_month(y, mo) || h > 23 || mi > 59 ||
        se > 60)
        return false;
    const char *p = s + 19;
    int64_t frac_ms = 0;
    if (*p == '.') {
        p++;
        int digits = 0;
        int64_t scale = 100;
        while (*p >= '0' && *p <= '9') {
            if (digits < 3) {
                frac_ms += (*p - '0') * scale;
                scale /= 10;
            }
            digits++;
            p++;
        }
        if (digits == 0 || digits > 9)
            return false;
    }
    int offset_min = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        if (!dk_digits(p + 1, 2, &oh) || p[3] != ':' || !dk_digits(p + 4, 2, &om) || oh > 23 ||
            om > 59)
            return false;
        offset_min = (oh * 60 + om) * (*p == '-' ? -1 : 1);
        p += 6;
    } else {
        return false;
    }
    if (*p)
        return false;
    if (se == 60)
        se = 59; /* leap second: clamp */
    /* days from civil (Howard Hinnant's algorithm) */
    int yy = mo <= 2 ? y - 1 : y;
    int era = (yy >= 0 ? yy : yy - 399) / 400;
    unsigned yoe = (unsigned)(yy - era * 400);
    unsigned doy = (unsigned)((153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1);
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    int64_t days = (int64_t)era * 146097 + (int64_t)doe - 719468;
    int64_t secs = days * 86400 + h * 3600 + mi * 60 + se - (int64_t)offset_min * 60;
    *ret_ms = secs * 1000 + frac_ms;
    return true;
}
