/*
 * fhirdate.c — FHIR date, dateTime and instant values as inclusive ranges of
 * seconds since the Unix epoch, UTC (see fhirdate.h).
 *
 * Accepted forms (the FHIR R4 date/dateTime/instant grammar, plus the minute
 * precision FHIR search values allow):
 *
 *   YYYY | YYYY-MM | YYYY-MM-DD
 *   YYYY-MM-DDThh:mm[:ss[.f+]][Z | (+|-)hh:mm]
 *
 * Ranges: year 0001-9999 (0000 is not a FHIR year), month 01-12, day within
 * the month of that year (proleptic Gregorian leap years), hour 00-23 (24:00
 * is rejected), minute and second 00-59 (no leap seconds), zone offset
 * -14:00..+14:00 as FHIR's regex allows (hh 00-13 with any minutes, or 14:00).
 * A time without a zone is read as UTC, not rejected: FHIR dateTime requires
 * a zone when a time is given, but search values are often written without
 * one, and concord's convention for local times is UTC. The caller that
 * validates stored resources checks zone presence itself.
 *
 * The interval a value names: lo is its first second, hi its last second
 * (inclusive). "2024" -> [2024-01-01T00:00:00Z, 2024-12-31T23:59:59Z];
 * "...T10:15" -> 60 seconds; "...T10:15:30" and "...T10:15:30.123" -> that one
 * second (fractions are truncated: ranges have whole-second resolution).
 *
 * Calendar arithmetic is our own (days since 0001-01-01 by counting leap
 * days), so nothing depends on the process time zone or on timegm().
 */
#include "fhirdate.h"

#include <stdbool.h>
#include <string.h>
#include <time.h>

/* Days from 0001-01-01 to 1970-01-01 in the proleptic Gregorian calendar. */
#define DAYS_0001_TO_1970 719162

static const unsigned short days_before_month[13] = {0,   31,  59,  90,  120, 151, 181,
                                                     212, 243, 273, 304, 334, 365};

static bool is_leap(int y) {
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int y, int m) {
    int d = days_before_month[m] - days_before_month[m - 1];
    return (m == 2 && is_leap(y)) ? d + 1 : d;
}

/* Days since 1970-01-01 of y-m-d (y >= 1, 1 <= m <= 12, valid d). */
static int64_t days_from_civil(int y, int m, int d) {
    int64_t py = (int64_t)y - 1; /* whole years before y */
    int64_t days = py * 365 + py / 4 - py / 100 + py / 400;
    days += days_before_month[m - 1] + ((m > 2 && is_leap(y)) ? 1 : 0);
    days += d - 1;
    return days - DAYS_0001_TO_1970;
}

/* Inverse of days_from_civil for days >= -DAYS_0001_TO_1970. */
static void civil_from_days(int64_t days, int *y, int *m, int *d) {
    int64_t z = days + DAYS_0001_TO_1970; /* days since 0001-01-01 */
    int64_t n400 = z / 146097, r = z % 146097;
    int64_t n100 = r / 36524;
    if (n100 == 4) n100 = 3; /* last day of a 400-year cycle */
    r -= n100 * 36524;
    int64_t n4 = r / 1461;
    r %= 1461;
    int64_t n1 = r / 365;
    if (n1 == 4) n1 = 3; /* last day of a 4-year cycle */
    r -= n1 * 365;
    int year = (int)(400 * n400 + 100 * n100 + 4 * n4 + n1 + 1);
    int doy = (int)r; /* 0-based day of year */
    int mon = 1;
    while (mon < 12) {
        int next = days_before_month[mon] + ((mon >= 2 && is_leap(year)) ? 1 : 0);
        if (doy < next) break;
        mon++;
    }
    int start = days_before_month[mon - 1] + ((mon > 2 && is_leap(year)) ? 1 : 0);
    *y = year;
    *m = mon;
    *d = doy - start + 1;
}

/* Read exactly `k` decimal digits at s[*i]; false if any is not a digit. */
static bool digits(const char *s, size_t n, size_t *i, int k, int *out) {
    int v = 0;
    if (*i + (size_t)k > n) return false;
    for (int j = 0; j < k; j++) {
        char c = s[*i + (size_t)j];
        if (c < '0' || c > '9') return false;
        v = v * 10 + (c - '0');
    }
    *i += (size_t)k;
    *out = v;
    return true;
}

static bool expect(const char *s, size_t n, size_t *i, char c) {
    if (*i >= n || s[*i] != c) return false;
    (*i)++;
    return true;
}

int fhir_date_range(const char *s, size_t n, int64_t *lo, int64_t *hi) {
    size_t i = 0;
    int y, mo = 1, d = 1, hh = 0, mi = 0, ss = 0;
    int64_t span_secs; /* hi - lo */

    if (!s) return -1;
    if (!digits(s, n, &i, 4, &y) || y < 1) return -1;
    if (i == n) { /* YYYY */
        int64_t a = days_from_civil(y, 1, 1) * 86400;
        *lo = a;
        *hi = days_from_civil(y, 12, 31) * 86400 + 86399;
        return 0;
    }
    if (!expect(s, n, &i, '-') || !digits(s, n, &i, 2, &mo) || mo < 1 || mo > 12) return -1;
    if (i == n) { /* YYYY-MM */
        *lo = days_from_civil(y, mo, 1) * 86400;
        *hi = days_from_civil(y, mo, days_in_month(y, mo)) * 86400 + 86399;
        return 0;
    }
    if (!expect(s, n, &i, '-') || !digits(s, n, &i, 2, &d) || d < 1 || d > days_in_month(y, mo)) return -1;
    if (i == n) { /* YYYY-MM-DD */
        *lo = days_from_civil(y, mo, d) * 86400;
        *hi = *lo + 86399;
        return 0;
    }
    if (!expect(s, n, &i, 'T')) return -1;
    if (!digits(s, n, &i, 2, &hh) || hh > 23) return -1;
    if (!expect(s, n, &i, ':') || !digits(s, n, &i, 2, &mi) || mi > 59) return -1;
    span_secs = 59; /* minute precision */
    if (i < n && s[i] == ':') {
        i++;
        if (!digits(s, n, &i, 2, &ss) || ss > 59) return -1;
        span_secs = 0;
        if (i < n && s[i] == '.') {
            i++;
            size_t f0 = i;
            while (i < n && s[i] >= '0' && s[i] <= '9')
                i++;
            if (i == f0) return -1; /* "." needs at least one digit */
        }
    }
    int64_t offset = 0; /* seconds east of UTC */
    if (i < n) {
        if (s[i] == 'Z') {
            i++;
        } else if (s[i] == '+' || s[i] == '-') {
            int sign = s[i] == '-' ? -1 : 1, zh, zm;
            i++;
            if (!digits(s, n, &i, 2, &zh) || !expect(s, n, &i, ':') || !digits(s, n, &i, 2, &zm)) return -1;
            if (zm > 59 || zh > 14 || (zh == 14 && zm != 0)) return -1;
            offset = sign * (int64_t)(zh * 3600 + zm * 60);
        } else {
            return -1;
        }
    }
    if (i != n) return -1;
    *lo = days_from_civil(y, mo, d) * 86400 + hh * 3600 + mi * 60 + ss - offset;
    *hi = *lo + span_secs;
    return 0;
}

void fhir_instant_format(int64_t usec, char out[32]) {
    /* Clamp to the years FHIR can write: 0001-01-01 .. 9999-12-31T23:59:59.999999. */
    const int64_t min_s = FHIR_DATE_MIN, max_s = FHIR_DATE_MAX;
    int64_t secs = usec / 1000000, frac = usec % 1000000;
    if (frac < 0) { /* floor division for times before 1970 */
        frac += 1000000;
        secs -= 1;
    }
    if (secs < min_s) {
        secs = min_s;
        frac = 0;
    } else if (secs > max_s) {
        secs = max_s;
        frac = 999999;
    }
    int64_t days = secs / 86400, sod = secs % 86400;
    if (sod < 0) {
        sod += 86400;
        days -= 1;
    }
    int y, m, d;
    civil_from_days(days, &y, &m, &d);
    int hh = (int)(sod / 3600), mi = (int)(sod / 60 % 60), ss = (int)(sod % 60);
    /* Written by hand: every field is in range, so the length is exactly 27. */
    char *p = out;
    p[0] = (char)('0' + y / 1000);
    p[1] = (char)('0' + y / 100 % 10);
    p[2] = (char)('0' + y / 10 % 10);
    p[3] = (char)('0' + y % 10);
    p[4] = '-';
    p[5] = (char)('0' + m / 10);
    p[6] = (char)('0' + m % 10);
    p[7] = '-';
    p[8] = (char)('0' + d / 10);
    p[9] = (char)('0' + d % 10);
    p[10] = 'T';
    p[11] = (char)('0' + hh / 10);
    p[12] = (char)('0' + hh % 10);
    p[13] = ':';
    p[14] = (char)('0' + mi / 10);
    p[15] = (char)('0' + mi % 10);
    p[16] = ':';
    p[17] = (char)('0' + ss / 10);
    p[18] = (char)('0' + ss % 10);
    p[19] = '.';
    int64_t f = frac;
    for (int k = 25; k >= 20; k--) {
        p[k] = (char)('0' + f % 10);
        f /= 10;
    }
    p[26] = 'Z';
    p[27] = 0;
}

int64_t fhir_now_usec(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}
