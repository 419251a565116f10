/* banned.h — turns unsafe libc calls into compile errors.
 * Included last by every project .c file (through core/common.h). Use snprintf, the checked
 * parsers in core/str.h, and gmtime_r/localtime_r instead. */
#ifndef DK_BANNED_H
#define DK_BANNED_H

#define DK_BANNED(func) sorry_##func##_is_banned_in_docket

#undef strcpy
#define strcpy(x, y) DK_BANNED(strcpy)
#undef strcat
#define strcat(x, y) DK_BANNED(strcat)
#undef strncpy
#define strncpy(x, y, n) DK_BANNED(strncpy)
#undef sprintf
#define sprintf(...) DK_BANNED(sprintf)
#undef vsprintf
#define vsprintf(...) DK_BANNED(vsprintf)
#undef strtok
#define strtok(x, y) DK_BANNED(strtok)
#undef atoi
#define atoi(x) DK_BANNED(atoi)
#undef gmtime
#define gmtime(x) DK_BANNED(gmtime)
#undef localtime
#define localtime(x) DK_BANNED(localtime)

#endif
