/* validate.h — field rules shared by services (e-mail, names, passwords), so register and
 * PATCH /users/me apply the same rules. Pure functions, thread-safe. Each returns NULL when the
 * value is acceptable, else a message for the 422 `errors` list. */
#ifndef DK_VALIDATE_H
#define DK_VALIDATE_H

const char *dk_validate_email(const char *email);
const char *dk_validate_name(const char *name);
const char *dk_validate_password(const char *password);

#endif
