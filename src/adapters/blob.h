/* adapters/blob.h — the blob-store adapters: a local directory (blob_fs.c) and S3 (blob_s3.c).
 * The port (the interface) is ports/blob.h; only the composition root (main.c) and the
 * adapters' own tests name these instances. */
#ifndef DK_ADAPTERS_BLOB_H
#define DK_ADAPTERS_BLOB_H

#include "ports/blob.h"

extern const struct dk_blob_ops dk_blob_fs_ops;
extern const struct dk_blob_ops dk_blob_s3_ops;

#endif
