/* adapters/mailer.h — the mailer adapters: SMTP (mailer_smtp.c) and one .eml file per message in a directory (mailer_file.c).
 * The port (the interface) is ports/mailer.h; only the composition root (main.c) and the
 * adapters' own tests name these instances. */
#ifndef DK_ADAPTERS_MAILER_H
#define DK_ADAPTERS_MAILER_H

#include "ports/mailer.h"

extern const struct dk_mailer_ops dk_mailer_smtp_ops;
extern const struct dk_mailer_ops dk_mailer_file_ops;

#endif
