/* The event-stream hub: see notifications_hub.h.
 *
 * Ownership: a stream's nt_sub is created by the HTTP thread that opens it and queued on
 * `pending`; from then on only the hub thread touches it, except nt_hub_on_drained (a connection
 * thread: the client left, or a drain after the high-water mark), which queues it on `gone`
 * under the lock. The hub releases the stream before it frees a sub (after dk_stream_release
 * no callback runs), and takes it off `gone` then.
 *
 * Which notifications a stream gets: those with seq > floor, where floor is the client's
 * starting point raised by every database read (replay, catch-up), plus every pushed one with a
 * higher seq that it has not written yet (a small ring of the last seqs written catches the
 * duplicates of a retried publish and a push that overlaps a replay). A notification written
 * by a slower transaction with a lower seq than one already read from the database is missed
 * by the stream (as with any seq-ordered poll) and stays in the list. */
#include "services/notifications/notifications_hub.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/arena.h"
#include "core/crypto.h"
#include "core/ids.h"
#include "core/json.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/session_guard.h"
#include "core/str.h"
#include "core/timeutil.h"
#include "core/banned.h"

#define NT_BUCKETS      16384 /* a power of two */
#define NT_RECENT       16
#define NT_REPLAY_BATCH 100
#define NT_INBOX_MAX    65536 /* queued messages; beyond, the hub catches up from the database */
#define NT_TICK_MS      1000
#define NT_SID_MAX      64
#define NT_ORIGIN_LEN   16

typedef struct nt_sub {
    char user_id[DK_UUID_LEN];
    char session_id[NT_SID_MAX];
    int64_t expires_mono; /* the token's expiry on the monotonic clock */
    int64_t last_write;   /* monotonic */
    int64_t due;          /* the timer: the next heartbeat or the expiry, whichever first */
    int64_t floor;        /* seqs up to here were written or seen by the client */
    int64_t last_seq;     /* the highest seq written */
    int64_t recent[NT_RECENT];
    unsigned recent_pos;
    uint64_t opened; /* opening order (the per-user cap closes the oldest) */
    size_t hidx;     /* index in the heap */
    dk_stream *stream;
    nt_hub *hub;
    struct nt_sub *unext, *snext; /* hash chains by user and by session */
    struct nt_sub *next;          /* pending */
    struct nt_sub *gone_next;     /* gone, under the lock */
    bool gone_queued;             /* under the lock */
    bool registered;
} nt_sub;

enum { NT_MSG_PUSH, NT_MSG_REVOKE, NT_MSG_FORGET };

typedef struct nt_msg {
    struct nt_msg *next;
    int kind;
    int64_t seq;
    char user_id[DK_UUID_LEN];
    size_t len;
    char text[]; /* the frame (push), the session id (revoke) */
} nt_msg;

struct nt_hub {
    nt_hub_options o;
    char origin[NT_ORIGIN_LEN + 1]; /* this hub's broadcasts, recognised when they come back */

    pthread_t thread;
    bool running;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    /* under the lock */
    bool stop, kicked, resync_push, resync_rev;
    nt_sub *pending, *gone;
    nt_msg *in_head, *in_tail;
    int in_n;

    dk_kv_sub *sub_ntf, *sub_rev;

    /* the hub thread's */
    nt_sub **heap;
    size_t nheap, capheap;
    nt_sub **by_user, **by_sid;
    uint64_t opened;
    int64_t last_tick, tick_ms;

    atomic_llong n_streams, n_pushed, n_replayed, n_revoked, n_capped;
};

static unsigned nt_hash(const char *s)
{
    unsigned h = 2166136261u;
    for (const char *p = s; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return h & (NT_BUCKETS - 1);
}

/* ---------- the timer heap (min on due) ---------- */

static void nt_heap_set(nt_hub *h, size_t i, nt_sub *s)
{
    h->heap[i] = s;
    s->hidx = i;
}

static void nt_heap_up(nt_hub *h, size_t i)
{
    nt_sub *s = h->heap[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h->heap[p]->due <= s->due)
            break;
        nt_heap_set(h, i, h->heap[p]);
        i = p;
    }
    nt_heap_set(h, i, s);
}

static void nt_heap_down(nt_hub *h, size_t i)
{
    nt_sub *s = h->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->nheap)
            break;
        if (c + 1 < h->nheap && h->heap[c + 1]->due < h->heap[c]->due)
            c++;
        if (h->heap[c]->due >= s->due)
            break;
        nt_heap_set(h, i, h->heap[c]);
        i = c;
    }
    nt_heap_set(h, i, s);
}

static void nt_heap_push(nt_hub *h, nt_sub *s)
{
    if (h->nheap == h->capheap) {
        h->capheap = h->capheap ? h->capheap * 2 : 1024;
        h->heap = dk_realloc(h->heap, h->capheap * sizeof *h->heap);
    }
    nt_heap_set(h, h->nheap++, s);
    nt_heap_up(h, s->hidx);
}

static void nt_heap_remove(nt_hub *h, nt_sub *s)
{
    size_t i = s->hidx;
    nt_sub *last = h->heap[--h->nheap];
    if (i == h->nheap)
        return;
    nt_heap_set(h, i, last);
    nt_heap_up(h, i);
    nt_heap_down(h, last->hidx);
}

static void nt_heap_fix(nt_hub *h, nt_sub *s)
{
    nt_heap_up(h, s->hidx);
    nt_heap_down(h, s->hidx);
}

/* ---------- streams ---------- */

static int64_t nt_sub_due(const nt_hub *h, const nt_sub *s)
{
    int64_t beat = s->last_write + h->o.heartbeat_ms;
    return beat < s->expires_mono ? beat : s->expires_mono;
}

static bool nt_write(nt_sub *s, const char *text, size_t len)
{
    s->last_write = dk_mono_ms();
    return dk_stream_write(s->stream, text, len);
}

static void nt_remember(nt_sub *s, int64_t seq)
{
    s->recent[s->recent_pos++ % NT_RECENT] = seq;
    if (seq > s->last_seq)
        s->last_seq = seq;
}

static bool nt_seen(const nt_sub *s, int64_t seq)
{
    if (seq <= s->floor)
        return true;
    for (int i = 0; i < NT_RECENT; i++)
        if (s->recent[i] == seq)
            return true;
    return false;
}

static void nt_unlink(nt_sub **head, nt_sub *s, bool by_user)
{
    for (nt_sub **pp = head; *pp; pp = by_user ? &(*pp)->unext : &(*pp)->snext) {
        if (*pp == s) {
            *pp = by_user ? s->unext : s->snext;
            return;
        }
    }
}

/* Ends the stream and frees the sub (registered or not). */
static void nt_drop(nt_hub *h, nt_sub *s)
{
    if (s->registered) {
        nt_heap_remove(h, s);
        nt_unlink(&h->by_user[nt_hash(s->user_id)], s, true);
        if (s->session_id[0])
            nt_unlink(&h->by_sid[nt_hash(s->session_id)], s, false);
        atomic_fetch_sub(&h->n_streams, 1);
    }
    dk_stream_release(s->stream); /* no on_drained after this */
    pthread_mutex_lock(&h->lock);
    if (s->gone_queued)
        for (nt_sub **pp = &h->gone; *pp; pp = &(*pp)->gone_next)
            if (*pp == s) {
                *pp = s->gone_next;
                break;
            }
    pthread_mutex_unlock(&h->lock);
    dk_free(s);
}

/* Writes what the database holds for the stream after what it has; false when the stream
 * must end (gone, or the database is away: the client reconnects and replays). */
static bool nt_catch_up(nt_hub *h, nt_sub *s)
{
    dk_arena *a = dk_arena_new();
    bool alive = true;
    for (;;) {
        nt_item *items = NULL;
        int n = 0;
        if (nt_repo_after(h->o.repo, a, s->user_id, s->last_seq, NT_REPLAY_BATCH, &items, &n) !=
            DK_OK) {
            alive = false;
            break;
        }
        for (int i = 0; i < n && alive; i++) {
            json_t *j = nt_item_json(&items[i]);
            const char *data = dk_json_render(a, j, NULL);
            json_decref(j);
            const char *frame =
                dk_arena_printf(a, "id: %s\nevent: notification\ndata: %s\n\n", items[i].id, data);
            alive = nt_write(s, frame, strlen(frame));
            nt_remember(s, items[i].seq);
            atomic_fetch_add(&h->n_replayed, 1);
        }
        if (!alive || n < NT_REPLAY_BATCH)
            break;
        dk_arena_reset(a);
    }
    if (s->last_seq > s->floor)
        s->floor = s->last_seq;
    dk_arena_free(a);
    return alive;
}

static void nt_register(nt_hub *h, nt_sub *s)
{
    if (dk_stream_closed(s->stream) ||
        (s->session_id[0] && dk_session_check(h->o.store, s->session_id) == DK_E_UNAUTHORIZED)) {
        nt_drop(h, s); /* revoked between the request's check and now */
        return;
    }
    /* the per-user cap: the oldest go */
    unsigned ub = nt_hash(s->user_id);
    for (;;) {
        int n = 0;
        nt_sub *oldest = NULL;
        for (nt_sub *o = h->by_user[ub]; o; o = o->unext)
            if (strcmp(o->user_id, s->user_id) == 0) {
                n++;
                if (!oldest || o->opened < oldest->opened)
                    oldest = o;
            }
        if (n < h->o.max_per_user || !oldest)
            break;
        atomic_fetch_add(&h->n_capped, 1);
        nt_drop(h, oldest);
    }
    s->registered = true;
    s->opened = ++h->opened;
    /* the first heartbeat comes after 1/2 to 1 interval: streams opened together (a restart,
     * a reconnect storm) do not all beat in the same instant ever after */
    uint32_t r = 0;
    dk_random_bytes(&r, sizeof r);
    s->last_write -= (int64_t)(r % (uint32_t)(h->o.heartbeat_ms / 2 + 1));
    s->unext = h->by_user[ub];
    h->by_user[ub] = s;
    if (s->session_id[0]) {
        unsigned sb = nt_hash(s->session_id);
        s->snext = h->by_sid[sb];
        h->by_sid[sb] = s;
    }
    s->due = nt_sub_due(h, s);
    nt_heap_push(h, s);
    atomic_fetch_add(&h->n_streams, 1);
    if (!nt_catch_up(h, s))
        nt_drop(h, s);
    else if (s->due != nt_sub_due(h, s)) {
        s->due = nt_sub_due(h, s);
        nt_heap_fix(h, s);
    }
}

static void nt_on_push(nt_hub *h, const nt_msg *m)
{
    nt_sub *s = h->by_user[nt_hash(m->user_id)];
    while (s) {
        nt_sub *next = s->unext;
        if (strcmp(s->user_id, m->user_id) == 0 && !nt_seen(s, m->seq)) {
            nt_remember(s, m->seq);
            atomic_fetch_add(&h->n_pushed, 1);
            if (!nt_write(s, m->text, m->len))
                nt_drop(h, s);
        }
        s = next;
    }
}

static void nt_on_revoke(nt_hub *h, const char *sid)
{
    nt_sub *s = h->by_sid[nt_hash(sid)];
    while (s) {
        nt_sub *next = s->snext;
        if (strcmp(s->session_id, sid) == 0) {
            atomic_fetch_add(&h->n_revoked, 1);
            nt_drop(h, s);
        }
        s = next;
    }
}

static void nt_on_forget(nt_hub *h, const char *user)
{
    nt_sub *s = h->by_user[nt_hash(user)];
    while (s) {
        nt_sub *next = s->unext;
        if (strcmp(s->user_id, user) == 0)
            nt_drop(h, s);
        s = next;
    }
}

/* Every registered sub, copied (the walk may drop some). */
static nt_sub **nt_all(nt_hub *h, size_t *ret_n)
{
    size_t n = h->nheap;
    nt_sub **all = dk_malloc((n ? n : 1) * sizeof *all);
    if (n)
        memcpy(all, h->heap, n * sizeof *all);
    *ret_n = n;
    return all;
}

/* The push channel was down: what arrived meanwhile comes from the database, once. */
static void nt_resync_push(nt_hub *h)
{
    size_t n = 0;
    nt_sub **all = nt_all(h, &n);
    for (size_t i = 0; i < n; i++)
        if (!nt_catch_up(h, all[i]))
            nt_drop(h, all[i]);
    dk_free(all);
}

/* The revocation channel was down: every stream's session is checked once. */
static void nt_resync_rev(nt_hub *h)
{
    size_t n = 0;
    nt_sub **all = nt_all(h, &n);
    for (size_t i = 0; i < n; i++)
        if (all[i]->session_id[0] &&
            dk_session_check(h->o.store, all[i]->session_id) == DK_E_UNAUTHORIZED) {
            atomic_fetch_add(&h->n_revoked, 1);
            nt_drop(h, all[i]);
        }
    dk_free(all);
}

static void nt_timers(nt_hub *h, int64_t now)
{
    while (h->nheap > 0 && h->heap[0]->due <= now) {
        nt_sub *s = h->heap[0];
        if (now >= s->expires_mono || dk_stream_closed(s->stream)) {
            nt_drop(h, s); /* the token expired: the client reconnects with a fresh one */
            continue;
        }
        if (now - s->last_write >= h->o.heartbeat_ms &&
            !nt_write(s, ": heartbeat\n\n", sizeof ": heartbeat\n\n" - 1)) {
            nt_drop(h, s);
            continue;
        }
        s->due = nt_sub_due(h, s);
        if (s->due <= now)
            s->due = now + 1;
        nt_heap_fix(h, s);
    }
}

static void *nt_hub_main(void *arg)
{
    nt_hub *h = arg;
    h->last_tick = dk_mono_ms();
    pthread_mutex_lock(&h->lock);
    while (!h->stop) {
        if (!h->kicked) {
            int64_t now = dk_mono_ms();
            int64_t wait = h->last_tick + h->tick_ms - now;
            if (wait > 0) {
                struct timespec ts = dk_mono_deadline(wait);
                (void)pthread_cond_timedwait(&h->cond, &h->lock, &ts);
            }
        }
        if (h->stop)
            break;
        h->kicked = false;
        nt_sub *pending = h->pending;
        h->pending = NULL;
        nt_msg *msgs = h->in_head;
        h->in_head = h->in_tail = NULL;
        h->in_n = 0;
        bool rp = h->resync_push, rr = h->resync_rev;
        h->resync_push = h->resync_rev = false;
        pthread_mutex_unlock(&h->lock);

        nt_sub *fifo = NULL; /* pending is newest first */
        while (pending) {
            nt_sub *s = pending;
            pending = s->next;
            s->next = fifo;
            fifo = s;
        }
        while (fifo) {
            nt_sub *s = fifo;
            fifo = s->next;
            nt_register(h, s);
        }
        while (msgs) {
            nt_msg *m = msgs;
            msgs = m->next;
            if (m->kind == NT_MSG_PUSH)
                nt_on_push(h, m);
            else if (m->kind == NT_MSG_REVOKE)
                nt_on_revoke(h, m->text);
            else
                nt_on_forget(h, m->user_id);
            dk_free(m);
        }
        for (;;) {
            pthread_mutex_lock(&h->lock);
            nt_sub *s = h->gone;
            if (s) {
                h->gone = s->gone_next;
                s->gone_queued = false;
            }
            pthread_mutex_unlock(&h->lock);
            if (!s)
                break;
            if (s->registered && dk_stream_closed(s->stream))
                nt_drop(h, s);
        }
        if (rr)
            nt_resync_rev(h);
        if (rp)
            nt_resync_push(h);
        /* timers on ticks only: the heartbeats due within a tick go out together, and the hub
         * thread wakes a few times a second, not once per stream. A heartbeat is written
         * straight to its idle stream's socket (core/http/stream.c); one that has to resume
         * its connection wakes an HTTP thread, which walks all its suspended connections, so
         * those come in batches too (10,000 streams beating one by one cost ~15 % of a core) */
        int64_t now = dk_mono_ms();
        if (now - h->last_tick >= h->tick_ms) {
            h->last_tick = now;
            nt_timers(h, now);
            if (h->o.tick)
                h->o.tick(h->o.tick_ctx);
        }
        pthread_mutex_lock(&h->lock);
    }
    pthread_mutex_unlock(&h->lock);
    return NULL;
}

/* ---------- queueing work (any thread) ---------- */

static void nt_kick_locked(nt_hub *h)
{
    h->kicked = true;
    pthread_cond_signal(&h->cond);
}

static void nt_queue(nt_hub *h, nt_msg *m)
{
    pthread_mutex_lock(&h->lock);
    if (h->in_n >= NT_INBOX_MAX) { /* the hub is far behind: read the database instead */
        if (m->kind == NT_MSG_PUSH)
            h->resync_push = true;
        else if (m->kind == NT_MSG_REVOKE)
            h->resync_rev = true;
        nt_kick_locked(h);
        pthread_mutex_unlock(&h->lock);
        dk_free(m);
        return;
    }
    m->next = NULL;
    if (h->in_tail)
        h->in_tail->next = m;
    else
        h->in_head = m;
    h->in_tail = m;
    h->in_n++;
    nt_kick_locked(h);
    pthread_mutex_unlock(&h->lock);
}

static nt_msg *nt_msg_new(int kind, const char *user, int64_t seq, const char *text, size_t len)
{
    nt_msg *m = dk_calloc(1, sizeof *m + len + 1);
    m->kind = kind;
    m->seq = seq;
    if (user)
        dk_strlcpy(m->user_id, user, sizeof m->user_id);
    memcpy(m->text, text, len);
    m->text[len] = '\0';
    m->len = len;
    return m;
}

/* The broadcast: "1 <origin> <user_id> <seq>\n<frame>". */
static void nt_on_ntf_message(void *ctx, const char *msg, size_t len)
{
    nt_hub *h = ctx;
    const char *nl = memchr(msg, '\n', len);
    if (!nl || len < 2 || msg[0] != '1' || msg[1] != ' ')
        return;
    char head[160];
    size_t hl = (size_t)(nl - msg);
    if (hl >= sizeof head)
        return;
    memcpy(head, msg, hl);
    head[hl] = '\0';
    char origin[NT_ORIGIN_LEN + 1], user[DK_UUID_LEN + 8], seqs[24];
    if (sscanf(head, "1 %16s %44s %20s", origin, user, seqs) != 3)
        return;
    int64_t seq = 0;
    if (strcmp(origin, h->origin) == 0 || !dk_uuid_valid(user) ||
        !dk_parse_i64(seqs, 1, INT64_MAX, &seq))
        return; /* our own (delivered locally already), or not ours to read */
    const char *frame = nl + 1;
    nt_queue(h, nt_msg_new(NT_MSG_PUSH, user, seq, frame, len - hl - 1));
}

static void nt_on_ntf_state(void *ctx, bool live)
{
    nt_hub *h = ctx;
    if (!live)
        return;
    pthread_mutex_lock(&h->lock);
    h->resync_push = true; /* what came while the channel was down (nothing at the start) */
    nt_kick_locked(h);
    pthread_mutex_unlock(&h->lock);
}

static void nt_on_rev_message(void *ctx, const char *msg, size_t len)
{
    nt_hub *h = ctx;
    if (len == 0 || len >= NT_SID_MAX || len != strlen(msg))
        return;
    nt_queue(h, nt_msg_new(NT_MSG_REVOKE, NULL, 0, msg, len));
}

static void nt_on_rev_state(void *ctx, bool live)
{
    nt_hub *h = ctx;
    if (!live)
        return;
    pthread_mutex_lock(&h->lock);
    h->resync_rev = true;
    nt_kick_locked(h);
    pthread_mutex_unlock(&h->lock);
}

/* A connection thread: the client left (or the buffer drained after the high-water mark). */
static void nt_on_drained(void *ctx)
{
    nt_sub *s = ctx;
    nt_hub *h = s->hub;
    pthread_mutex_lock(&h->lock);
    if (!s->gone_queued) {
        s->gone_queued = true;
        s->gone_next = h->gone;
        h->gone = s;
    }
    nt_kick_locked(h);
    pthread_mutex_unlock(&h->lock);
}

/* ---------- the API ---------- */

nt_hub *nt_hub_new(const nt_hub_options *o)
{
    nt_hub *h = DK_NEW(nt_hub);
    h->o = *o;
    if (h->o.max_per_user < 1)
        h->o.max_per_user = 1;
    /* a quarter of the heartbeat interval (a heartbeat is at most that late), 50 ms to 1 s */
    h->tick_ms = h->o.heartbeat_ms / 4;
    h->tick_ms = h->tick_ms < 50 ? 50 : h->tick_ms > NT_TICK_MS ? NT_TICK_MS : h->tick_ms;
    unsigned char raw[NT_ORIGIN_LEN / 2];
    dk_random_bytes(raw, sizeof raw);
    dk_hex(raw, sizeof raw, h->origin);
    pthread_mutex_init(&h->lock, NULL);
    dk_cond_init_monotonic(&h->cond);
    h->by_user = dk_calloc(NT_BUCKETS, sizeof *h->by_user);
    h->by_sid = dk_calloc(NT_BUCKETS, sizeof *h->by_sid);
    return h;
}

static void nt_hub_collect(void *ctx, dk_metrics_out *out)
{
    nt_hub *h = ctx;
    dk_metrics_family(out, "docket_notification_streams", "gauge",
                      "Open notification event streams held by this process.");
    dk_metrics_sample(out, "docket_notification_streams", "", (double)atomic_load(&h->n_streams));
    dk_metrics_family(out, "docket_notification_stream_frames_total", "counter",
                      "Notifications written to event streams: push (as created, here or on "
                      "another replica) or replay (read from the database).");
    dk_metrics_sample(out, "docket_notification_stream_frames_total", "source=\"push\"",
                      (double)atomic_load(&h->n_pushed));
    dk_metrics_sample(out, "docket_notification_stream_frames_total", "source=\"replay\"",
                      (double)atomic_load(&h->n_replayed));
    dk_metrics_family(out, "docket_notification_streams_ended_total", "counter",
                      "Event streams ended by the server: its session was revoked, or the user "
                      "opened more than notification.sse_max_streams_per_user.");
    dk_metrics_sample(out, "docket_notification_streams_ended_total", "reason=\"revoked\"",
                      (double)atomic_load(&h->n_revoked));
    dk_metrics_sample(out, "docket_notification_streams_ended_total", "reason=\"capped\"",
                      (double)atomic_load(&h->n_capped));
    unsigned long long direct = 0, resumed = 0;
    dk_stream_write_counts(&direct, &resumed);
    dk_metrics_family(out, "docket_http_stream_wakeups_total", "counter",
                      "Writes (frames, heartbeats) to a response stream whose connection was "
                      "waiting: sent straight to the socket (direct) or by waking the connection "
                      "(resumed; costs a walk of the HTTP thread's waiting connections).");
    dk_metrics_sample(out, "docket_http_stream_wakeups_total", "path=\"direct\"", (double)direct);
    dk_metrics_sample(out, "docket_http_stream_wakeups_total", "path=\"resumed\"", (double)resumed);
}

dk_status nt_hub_start(nt_hub *h)
{
    dk_metrics_add_collector(nt_hub_collect, h);
    const dk_store *st = h->o.store;
    if (st->ops->subscribe(st->kv, DK_NT_HUB_CHANNEL, nt_on_ntf_message, nt_on_ntf_state, h,
                           &h->sub_ntf) != DK_OK)
        h->sub_ntf = NULL;
    if (st->ops->subscribe(st->kv, DK_SESSION_GUARD_CHANNEL, nt_on_rev_message, nt_on_rev_state, h,
                           &h->sub_rev) != DK_OK)
        h->sub_rev = NULL;
    if (pthread_create(&h->thread, NULL, nt_hub_main, h) == 0)
        h->running = true;
    return h->sub_ntf && h->sub_rev && h->running ? DK_OK : DK_E_INTERNAL;
}

static void nt_free_msgs(nt_msg *m)
{
    while (m) {
        nt_msg *next = m->next;
        dk_free(m);
        m = next;
    }
}

void nt_hub_stop(nt_hub *h)
{
    if (!h)
        return;
    const dk_store *st = h->o.store;
    st->ops->unsubscribe(st->kv, h->sub_ntf);
    st->ops->unsubscribe(st->kv, h->sub_rev);
    h->sub_ntf = h->sub_rev = NULL;
    if (h->running) {
        pthread_mutex_lock(&h->lock);
        h->stop = true;
        pthread_cond_signal(&h->cond);
        pthread_mutex_unlock(&h->lock);
        pthread_join(h->thread, NULL);
        h->running = false;
    }
    /* the thread is gone: every stream ends here */
    while (h->nheap > 0)
        nt_drop(h, h->heap[h->nheap - 1]);
    pthread_mutex_lock(&h->lock);
    nt_sub *pending = h->pending;
    h->pending = NULL;
    nt_msg *msgs = h->in_head;
    h->in_head = h->in_tail = NULL;
    h->in_n = 0;
    pthread_mutex_unlock(&h->lock);
    while (pending) {
        nt_sub *s = pending;
        pending = s->next;
        nt_drop(h, s);
    }
    nt_free_msgs(msgs);
}

void nt_hub_free(nt_hub *h)
{
    if (!h)
        return;
    nt_hub_stop(h);
    dk_free(h->heap);
    dk_free(h->by_user);
    dk_free(h->by_sid);
    pthread_cond_destroy(&h->cond);
    pthread_mutex_destroy(&h->lock);
    dk_free(h);
}

void nt_hub_open(nt_hub *h, dk_res *res, const char *user_id, const char *session_id,
                 int64_t expires_ms, int64_t after)
{
    nt_sub *s = DK_NEW(nt_sub);
    s->hub = h;
    dk_strlcpy(s->user_id, user_id, sizeof s->user_id);
    if (session_id && strlen(session_id) < sizeof s->session_id)
        dk_strlcpy(s->session_id, session_id, sizeof s->session_id);
    int64_t now = dk_mono_ms();
    s->expires_mono = now + (expires_ms - dk_now_ms());
    s->floor = s->last_seq = after;
    dk_res_header(res, "Cache-Control", "no-cache");
    dk_res_header(res, "X-Accel-Buffering", "no");
    s->stream = dk_res_stream(res, 200, "text/event-stream", nt_on_drained, s);
    static const char hello[] = "retry: 3000\n: connected\n\n";
    (void)nt_write(s, hello, sizeof hello - 1);
    pthread_mutex_lock(&h->lock);
    s->next = h->pending;
    h->pending = s;
    nt_kick_locked(h);
    pthread_mutex_unlock(&h->lock);
}

void nt_hub_publish(nt_hub *h, const nt_item *item)
{
    dk_arena *a = dk_arena_new();
    json_t *j = nt_item_json(item);
    const char *data = dk_json_render(a, j, NULL);
    json_decref(j);
    const char *frame =
        dk_arena_printf(a, "id: %s\nevent: notification\ndata: %s\n\n", item->id, data);
    size_t flen = strlen(frame);
    nt_queue(h, nt_msg_new(NT_MSG_PUSH, item->user_id, item->seq, frame, flen));
    const char *msg = dk_arena_printf(a, "1 %s %s %lld\n%s", h->origin, item->user_id,
                                      (long long)item->seq, frame);
    const dk_store *st = h->o.store;
    size_t mlen = strlen(msg);
    dk_status rc = st->ops->publish(st->kv, DK_NT_HUB_CHANNEL, msg, mlen);
    if (rc != DK_OK)
        rc = st->ops->publish(st->kv, DK_NT_HUB_CHANNEL, msg, mlen);
    if (rc != DK_OK)
        dk_log_warn("notifications: a notification could not be pushed to the other replicas "
                    "(%s); their streams get it when they reconnect",
                    dk_status_title(rc));
    dk_arena_free(a);
}

void nt_hub_forget_user(nt_hub *h, const char *user_id)
{
    nt_queue(h, nt_msg_new(NT_MSG_FORGET, user_id, 0, "", 0));
}

void nt_hub_stats_get(nt_hub *h, nt_hub_stats *ret)
{
    *ret = (nt_hub_stats){
        .streams = atomic_load(&h->n_streams),
        .pushed = atomic_load(&h->n_pushed),
        .replayed = atomic_load(&h->n_replayed),
        .revoked = atomic_load(&h->n_revoked),
        .capped = atomic_load(&h->n_capped),
    };
}
