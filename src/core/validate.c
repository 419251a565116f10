#include "core/validate.h"

#include <string.h>

#include "core/str.h"
#include "core/banned.h"

const char *dk_validate_email(const char *email)
{
    size_t n = strlen(email);
    if (n == 0)
        return "is required";
    if (n > 254)
        return "must be at most 254 characters";
    const char *at = strchr(email, '@');
    if (!at || strchr(at + 1, '@'))
        return "must be a valid e-mail address";
    size_t local = (size_t)(at - email);
    const char *domain = at + 1;
    if (local == 0 || local > 64 || !*domain)
        return "must be a valid e-mail address";
    for (const char *p = email; p < at; p++) {
        unsigned char c = (unsigned char)*p;
        if (c <= ' ' || c == 0x7f || c == '(' || c == ')' || c == ',' || c == ':' || c == ';' ||
            c == '<' || c == '>' || c == '[' || c == ']' || c == '\\' || c == '"')
            return "must be a valid e-mail address";
    }
    if (email[0] == '.' || at[-1] == '.' || strstr(email, ".."))
        return "must be a valid e-mail address";
    /* domain: dot-separated labels of letters, digits and hyphens, at least two labels */
    int labels = 0;
    const char *p = domain;
    while (*p) {
        const char *e = strchr(p, '.');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == 0 || len > 63 || p[0] == '-' || p[len - 1] == '-')
            return "must be a valid e-mail address";
        for (size_t i = 0; i < len; i++) {
            char c = p[i];
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-'))
                return "must be a valid e-mail address";
        }
        labels++;
        if (!e)
            break;
        p = e + 1;
        if (!*p)
            return "must be a valid e-mail address";
    }
    if (labels < 2)
        return "must be a valid e-mail address";
    return NULL;
}

const char *dk_validate_name(const char *name)
{
    long n = dk_utf8_len(name, strlen(name));
    if (n < 0)
        return "must be valid UTF-8";
    if (n < 1)
        return "must not be empty";
    if (n > 100)
        return "must be at most 100 characters";
    for (const char *p = name; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return "must not contain control characters";
    bool blank = true;
    for (const char *p = name; *p; p++)
        if (*p != ' ')
            blank = false;
    if (blank)
        return "must not be blank";
    return NULL;
}

const char *dk_validate_password(const char *password)
{
    long n = dk_utf8_len(password, strlen(password));
    if (n < 0)
        return "must be valid UTF-8";
    if (n < 8)
        return "must be at least 8 characters";
    if (n > 256)
        return "must be at most 256 characters";
    return NULL;
}
