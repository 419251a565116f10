/* outbox.h — the transactional outbox: a service records the events a change causes in the
 * same transaction as the change (dk_outbox_add), and a relay thread publishes the recorded
 * events to the bus in order, deleting each once the bus has taken it. A crash between commit
 * and publish loses nothing (the row is published on a later pass) and a failed publish is
 * retried every interval, so delivery is at least once; consumers de-duplicate by the event's
 * "id". Each service has its own table (`<service>_outbox`, created by dk_outbox_migration_sql).
 * Every event payload is a JSON object carrying "id" (uuid7) and "occurred_at" (ms) besides
 * the service's fields. Thread-safe: kick from any thread. */
#ifndef DK_OUTBOX_H
#define DK_OUTBOX_H

#include <jansson.h>
#include <stdint.h>

#include "core/sql.h"
#include "ports/events.h"

typedef struct dk_arena dk_arena;
typedef struct dk_outbox dk_outbox;

/* DDL of the outbox table for a service, for its migrations ("tasks" → tasks_outbox). */
#define DK_OUTBOX_SQLITE_DDL(svc)                                                                  \
    "CREATE TABLE " svc "_outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, "       \
    "type TEXT NOT NULL, payload TEXT NOT NULL, created_at BIGINT NOT NULL);"
#define DK_OUTBOX_POSTGRES_DDL(svc)                                                                \
    "CREATE TABLE " svc "_outbox (seq BIGSERIAL PRIMARY KEY, id TEXT NOT NULL, "                   \
    "type TEXT NOT NULL, payload TEXT NOT NULL, created_at BIGINT NOT NULL);"

/* A second migration every outbox table needs: the trace context (W3C traceparent) of the
 * request that recorded the event, handed on to the bus by the relay. Same text on both
 * engines (the table is found through the search path on PostgreSQL). */
#define DK_OUTBOX_TRACE_DDL(svc) "ALTER TABLE " svc "_outbox ADD COLUMN traceparent TEXT;"

/* The parameters of an event's row, for a statement that records it together with the change
 * (an INSERT into the outbox table inside a larger statement): id, type, payload, created_at,
 * traceparent, in that order, the strings in a. Sets "id" and "occurred_at" on payload
 * (borrowed, modified), as dk_outbox_add does. */
#define DK_OUTBOX_NPARAMS 5
void dk_outbox_event(dk_arena *a, const char *type, json_t *payload,
                     const char *ret_params[DK_OUTBOX_NPARAMS]);

/* Records an event inside tx: sets "id" and "occurred_at" on payload (borrowed, modified) and
 * inserts it into table (e.g. "tasks_outbox"; a constant, never user input). */
dk_status dk_outbox_add(dk_tx *tx, dk_arena *a, const char *table, const char *type,
                        json_t *payload) DK_MUSTCHECK;

/* Starts the relay for table: it publishes at once when kicked, and every interval_ms. NULL
 * when its thread cannot start (logged). It reports docket_queue_lag_seconds{service,
 * queue="outbox"} (the age of the oldest event it could not publish yet; service must be a
 * long-lived string). */
dk_outbox *dk_outbox_start(const dk_database *db, const dk_bus *bus, const char *service,
                           const char *table, int64_t interval_ms);
/* New rows were committed: publish now (cheap; call after each commit that added events). */
void dk_outbox_kick(dk_outbox *o);
/* Publishes what is left once more, stops the relay and frees it; accepts NULL. */
void dk_outbox_stop(dk_outbox *o);

#endif
