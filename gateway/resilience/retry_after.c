/*
 * Retry-After parsing (see retry_after.h). Only the IMF-fixdate form of
 * HTTP-date is read ("Sun, 06 Nov 1994 08:49:37 GMT"): the obsolete forms are
 * what recipients "should" accept, and an upstream that sends them loses only
 * the hint. No libc time parsing: strptime is locale-bound and not C11.
 */
#include "resilience/retry_after.h"

#include <string.h>

static bool digits(const char *p, size_t n, int64_t *out)
{
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return true;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's). */
static int64_t days_from_civil(int64_t y, int64_t m, int64_t d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static bool imf_fixdate(const char *s, size_t n, int64_t *out)
{
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    /* "Sun, 06 Nov 1994 08:49:37 GMT": 29 bytes */
    if (n != 29 || s[3] != ',' || s[4] != ' ' || s[7] != ' ' || s[11] != ' ' || s[16] != ' ' ||
        s[19] != ':' || s[22] != ':' || memcmp(s + 25, " GMT", 4) != 0)
        return false;
    int64_t day, year, h, mi, sec, mon = -1;
    for (int k = 0; k < 12; k++)
        if (memcmp(s + 8, months + 3 * k, 3) == 0)
            mon = k + 1;
    if (mon < 0 || !digits(s + 5, 2, &day) || !digits(s + 12, 4, &year) || !digits(s + 17, 2, &h) ||
        !digits(s + 20, 2, &mi) || !digits(s + 23, 2, &sec) || day < 1 || day > 31 || h > 23 ||
        mi > 59 || sec > 60)
        return false;
    *out = days_from_civil(year, mon, day) * 86400 + h * 3600 + mi * 60 + sec;
    return true;
}

bool mg_retry_after_parse(struct mg_slice v, int64_t now_s, uint64_t *ms)
{
    while (v.len && (v.p[0] == ' ' || v.p[0] == '\t'))
        v.p++, v.len--;
    while (v.len && (v.p[v.len - 1] == ' ' || v.p[v.len - 1] == '\t'))
        v.len--;
    int64_t secs;
    if (v.len > 0 && v.len <= 9 && digits(v.p, v.len, &secs)) {
        *ms = (uint64_t)secs * 1000;
        return true;
    }
    int64_t at;
    if (!imf_fixdate(v.p, v.len, &at))
        return false;
    *ms = at > now_s ? (uint64_t)(at - now_s) * 1000 : 0;
    return true;
}
