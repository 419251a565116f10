/* The event-stream hub: see notifications_hub.h.
 *
 * Ownership: a stream's hub_sub is created by the HTTP thread that opens it and queued on
 * `pending`; from then on only the hub thread touches it, except hub_on_drained (a connection
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
#include "core/timer_wheel.h"
#include "core/banned.h"

#define NT_BUCKETS      16384 /* a power of two */
#define NT_RECENT       16
#define NT_REPLAY_BATCH 100
#define NT_INBOX_MAX    65536 /* queued messages; beyond, the hub catches up from the database */
#define NT_TICK_MS      1000
#define NT_SID_MAX      64
#define NT_ORIGIN_LEN   16

typedef struct hub_sub {
    /* first, in one cache line: what a heartbeat reads and writes */
    dk_wheel_timer timer; /* the next heartbeat or the expiry, whichever first */
    int64_t expires_mono; /* the token's expiry on the monotonic clock */
    int64_t last_write;   /* monotonic */
    dk_stream *stream;
    notifications_hub *hub;
    char user_id[DK_UUID_LEN];
    char session_id[NT_SID_MAX];
    int64_t floor;    /* seqs up to here were written or seen by the client */
    int64_t last_seq; /* the highest seq written */
    int64_t recent[NT_RECENT];
    unsigned recent_pos;
    uint64_t opened;               /* opening order (the per-user cap closes the oldest) */
    struct hub_sub *unext, *snext; /* hash chains by user and by session */
    struct hub_sub *next;          /* pending */
    struct hub_sub *gone_next;     /* gone, under the lock */
    bool gone_queued;              /* under the lock */
    bool registered;
} hub_sub;

enum { NT_MSG_PUSH, NT_MSG_REVOKE, NT_MSG_FORGET };

typedef struct hub_msg {
    struct hub_msg *next;
    int kind;
    int64_t seq;
    char user_id[DK_UUID_LEN];
    size_t len;
    char text[]; /* the frame (push), the session id (revoke) */
} hub_msg;

struct notifications_hub {
    notifications_hub_options o;
    char origin[NT_ORIGIN_LEN + 1]; /* this hub's broadcasts, recognised when they come back */

    pthread_t thread;
    bool running;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    /* under the lock */
    bool stop, kicked, resync_push, resync_rev;
    hub_sub *pending, *gone;
    hub_msg *in_head, *in_tail;
    int in_n;

    dk_kv_sub *sub_ntf, *sub_rev;

    /* the hub thread's */
    dk_wheel wheel; /* every registered sub's timer */
    hub_sub **by_user, **by_sid;
    uint64_t opened;
    int64_t last_tick, tick_ms;

    atomic_llong n_streams, n_pushed, n_replayed, n_revoked, n_capped;
};

static unsigned hub_hash(const char *s)
{
    unsigned h = 2166136261u;
    for (const char *p = s; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return h & (NT_BUCKETS - 1);
}

/* The sub whose timer t is. */
static hub_sub *hub_sub_of(dk_wheel_timer *t)
{
    return (hub_sub *)(void *)((char *)t - offsetof(hub_sub, timer));
}

/* ---------- streams ---------- */

static int64_t hub_sub_due(const notifications_hub *h, const hub_sub *s)
{
    int64_t beat = s->last_write + h->o.heartbeat_ms;
    return beat < s->expires_mono ? beat : s->expires_mono;
}

static bool hub_write(hub_sub *s, const char *text, size_t len)
{
    s->last_write = dk_mono_ms();
    return dk_stream_write(s->stream, text, len);
}

static void hub_remember(hub_sub *s, int64_t seq)
{
    s->recent[s->recent_pos++ % NT_RECENT] = seq;
    if (seq > s->last_seq)
        s->last_seq = seq;
}

static bool hub_seen(const hub_sub *s, int64_t seq)
{
    if (seq <= s->floor)
        return true;
    for (int i = 0; i < NT_RECENT; i++)
        if (s->recent[i] == seq)
            return true;
    return false;
}

static void hub_unlink(hub_sub **head, hub_sub *s, bool by_user)
{
    for (hub_sub **pp = head; *pp; pp = by_user ? &(*pp)->unext : &(*pp)->snext) {
        if (*pp == s) {
            *pp = by_user ? s->unext : s->snext;
            return;
        }
    }
}

/* Ends the stream and frees the sub (registered or not). */
static void hub_drop(notifications_hub *h, hub_sub *s)
{
    if (s->registered) {
        dk_wheel_cancel(&h->wheel, &s->timer);
        hub_unlink(&h->by_user[hub_hash(s->user_id)], s, true);
        if (s->session_id[0])
            hub_unlink(&h->by_sid[hub_hash(s->session_id)], s, false);
        atomic_fetch_sub(&h->n_streams, 1);
    }
    dk_stream_release(s->stream); /* no on_drained after this */
    pthread_mutex_lock(&h->lock);
    if (s->gone_queued)
        for (hub_sub **pp = &h->gone; *pp; pp = &(*pp)->gone_next)
            if (*pp == s) {
                *pp = s->gone_next;
                break;
            }
    pthread_mutex_unlock(&h->lock);
    dk_free(s);
}

/* Writes what the database holds for the stream after what it has; false when the stream
 * must end (gone, or the database is away: the client reconnects and replays). */
static bool hub_catch_up(notifications_hub *h, hub_sub *s)
{
    dk_arena *a = dk_arena_new();
    bool alive = true;
    for (;;) {
        notifications_item *items = NULL;
        int n = 0;
        if (notifications_repo_after(h->o.repo, a, s->user_id, s->last_seq, NT_REPLAY_BATCH, &items,
                                     &n) != DK_OK) {
            alive = false;
            break;
        }
        for (int i = 0; i < n && alive; i++) {
            json_t *j = notifications_item_json(&items[i]);
            const char *data = dk_json_render(a, j, NULL);
            json_decref(j);
            const char *frame =
                dk_arena_printf(a, "id: %s\nevent: notification\ndata: %s\n\n", items[i].id, data);
            alive = hub_write(s, frame, strlen(frame));
            hub_remember(s, items[i].seq);
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

static void hub_register(notifications_hub *h, hub_sub *s)
{
    if (dk_stream_closed(s->stream) ||
        (s->session_id[0] && dk_session_check(h->o.store, s->session_id) == DK_E_UNAUTHORIZED)) {
        hub_drop(h, s); /* revoked between the request's check and now */
        return;
    }
    /* the per-user cap: the oldest go */
    unsigned ub = hub_hash(s->user_id);
    for (;;) {
        int n = 0;
        hub_sub *oldest = NULL;
        for (hub_sub *o = h->by_user[ub]; o; o = o->unext)
            if (strcmp(o->user_id, s->user_id) == 0) {
                n++;
                if (!oldest || o->opened < oldest->opened)
                    oldest = o;
            }
        if (n < h->o.max_per_user || !oldest)
            break;
        atomic_fetch_add(&h->n_capped, 1);
        hub_drop(h, oldest);
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
        unsigned sb = hub_hash(s->session_id);
        s->snext = h->by_sid[sb];
        h->by_sid[sb] = s;
    }
    dk_wheel_set(&h->wheel, &s->timer, hub_sub_due(h, s));
    atomic_fetch_add(&h->n_streams, 1);
    if (!hub_catch_up(h, s))
        hub_drop(h, s);
    else if (s->timer.due != hub_sub_due(h, s))
        dk_wheel_set(&h->wheel, &s->timer, hub_sub_due(h, s));
}

static void hub_on_push(notifications_hub *h, const hub_msg *m)
{
    hub_sub *s = h->by_user[hub_hash(m->user_id)];
    while (s) {
        hub_sub *next = s->unext;
        if (strcmp(s->user_id, m->user_id) == 0 && !hub_seen(s, m->seq)) {
            hub_remember(s, m->seq);
            atomic_fetch_add(&h->n_pushed, 1);
            if (!hub_write(s, m->text, m->len))
                hub_drop(h, s);
        }
        s = next;
    }
}

static void hub_on_revoke(notifications_hub *h, const char *sid)
{
    hub_sub *s = h->by_sid[hub_hash(sid)];
    while (s) {
        hub_sub *next = s->snext;
        if (strcmp(s->session_id, sid) == 0) {
            atomic_fetch_add(&h->n_revoked, 1);
            hub_drop(h, s);
        }
        s = next;
    }
}

static void hub_on_forget(notifications_hub *h, const char *user)
{
    hub_sub *s = h->by_user[hub_hash(user)];
    while (s) {
        hub_sub *next = s->unext;
        if (strcmp(s->user_id, user) == 0)
            hub_drop(h, s);
        s = next;
    }
}

/* Every registered sub, copied (the walk may drop some). Rare: a resync, the stop. */
static hub_sub **hub_all(notifications_hub *h, size_t *ret_n)
{
    size_t cap = dk_wheel_count(&h->wheel), n = 0;
    hub_sub **all = dk_malloc((cap ? cap : 1) * sizeof *all);
    for (size_t b = 0; b < NT_BUCKETS; b++)
        for (hub_sub *s = h->by_user[b]; s && n < cap; s = s->unext)
            all[n++] = s;
    *ret_n = n;
    return all;
}

/* The push channel was down: what arrived meanwhile comes from the database, once. */
static void hub_resync_push(notifications_hub *h)
{
    size_t n = 0;
    hub_sub **all = hub_all(h, &n);
    for (size_t i = 0; i < n; i++)
        if (!hub_catch_up(h, all[i]))
            hub_drop(h, all[i]);
    dk_free(all);
}

/* The revocation channel was down: every stream's session is checked once. */
static void hub_resync_rev(notifications_hub *h)
{
    size_t n = 0;
    hub_sub **all = hub_all(h, &n);
    for (size_t i = 0; i < n; i++)
        if (all[i]->session_id[0] &&
            dk_session_check(h->o.store, all[i]->session_id) == DK_E_UNAUTHORIZED) {
            atomic_fetch_add(&h->n_revoked, 1);
            hub_drop(h, all[i]);
        }
    dk_free(all);
}

/* The streams whose timer is due: a heartbeat, or the end at the token's expiry. Each costs
 * O(1) on the timing wheel and touches no other stream's memory (a binary heap's reschedule
 * touched log2(n) other streams, each a cache and TLB miss: the largest share of an idle
 * process's CPU at 10,000 streams, docs/design/measurements.md). */
static void hub_timers(notifications_hub *h, int64_t now)
{
    dk_wheel_timer *t;
    while ((t = dk_wheel_expire(&h->wheel, now)) != NULL) {
        hub_sub *s = hub_sub_of(t);
        if (now >= s->expires_mono || dk_stream_closed(s->stream)) {
            hub_drop(h, s); /* the token expired: the client reconnects with a fresh one */
            continue;
        }
        if (now - s->last_write >= h->o.heartbeat_ms &&
            !hub_write(s, ": heartbeat\n\n", sizeof ": heartbeat\n\n" - 1)) {
            hub_drop(h, s);
            continue;
        }
        int64_t due = hub_sub_due(h, s);
        dk_wheel_set(&h->wheel, &s->timer, due > now ? due : now + 1);
    }
}

static void *hub_main(void *arg)
{
    notifications_hub *h = arg;
    /* ticks at multiples of tick_ms, the wheel's: a timer is handed out at the first tick at or
     * after its due time (never early, less than a tick late) */
    h->last_tick = dk_mono_ms() / h->tick_ms * h->tick_ms;
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
        hub_sub *pending = h->pending;
        h->pending = NULL;
        hub_msg *msgs = h->in_head;
        h->in_head = h->in_tail = NULL;
        h->in_n = 0;
        bool rp = h->resync_push, rr = h->resync_rev;
        h->resync_push = h->resync_rev = false;
        pthread_mutex_unlock(&h->lock);

        hub_sub *fifo = NULL; /* pending is newest first */
        while (pending) {
            hub_sub *s = pending;
            pending = s->next;
            s->next = fifo;
            fifo = s;
        }
        while (fifo) {
            hub_sub *s = fifo;
            fifo = s->next;
            hub_register(h, s);
        }
        while (msgs) {
            hub_msg *m = msgs;
            msgs = m->next;
            if (m->kind == NT_MSG_PUSH)
                hub_on_push(h, m);
            else if (m->kind == NT_MSG_REVOKE)
                hub_on_revoke(h, m->text);
            else
                hub_on_forget(h, m->user_id);
            dk_free(m);
        }
        for (;;) {
            pthread_mutex_lock(&h->lock);
            hub_sub *s = h->gone;
            if (s) {
                h->gone = s->gone_next;
                s->gone_queued = false;
            }
            pthread_mutex_unlock(&h->lock);
            if (!s)
                break;
            if (s->registered && dk_stream_closed(s->stream))
                hub_drop(h, s);
        }
        if (rr)
            hub_resync_rev(h);
        if (rp)
            hub_resync_push(h);
        /* timers on ticks only: the heartbeats due within a tick go out together, and the hub
         * thread wakes a few times a second, not once per stream. A heartbeat is written
         * straight to its idle stream's socket (core/http/stream.c); one that has to resume
         * its connection wakes an HTTP thread, which walks all its suspended connections, so
         * those come in batches too (streams beating one by one cost a real share of a core
         * with many open: docs/design/measurements.md) */
        int64_t now = dk_mono_ms();
        if (now - h->last_tick >= h->tick_ms) {
            h->last_tick = now / h->tick_ms * h->tick_ms;
            hub_timers(h, now);
            if (h->o.tick)
                h->o.tick(h->o.tick_ctx);
        }
        pthread_mutex_lock(&h->lock);
    }
    pthread_mutex_unlock(&h->lock);
    return NULL;
}

/* ---------- queueing work (any thread) ---------- */

static void hub_kick_locked(notifications_hub *h)
{
    h->kicked = true;
    pthread_cond_signal(&h->cond);
}

static void hub_queue(notifications_hub *h, hub_msg *m)
{
    pthread_mutex_lock(&h->lock);
    if (h->in_n >= NT_INBOX_MAX) { /* the hub is far behind: read the database instead */
        if (m->kind == NT_MSG_PUSH)
            h->resync_push = true;
        else if (m->kind == NT_MSG_REVOKE)
            h->resync_rev = true;
        hub_kick_locked(h);
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
    hub_kick_locked(h);
    pthread_mutex_unlock(&h->lock);
}

static hub_msg *hub_msg_new(int kind, const char *user, int64_t seq, const char *text, size_t len)
{
    hub_msg *m = dk_calloc(1, sizeof *m + len + 1);
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
static void hub_on_ntf_message(void *ctx, const char *msg, size_t len)
{
    notifications_hub *h = ctx;
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
    hub_queue(h, hub_msg_new(NT_MSG_PUSH, user, seq, frame, len - hl - 1));
}

static void hub_on_ntf_state(void *ctx, bool live)
{
    notifications_hub *h = ctx;
    if (!live)
        return;
    pthread_mutex_lock(&h->lock);
    h->resync_push = true; /* what came while the channel was down (nothing at the start) */
    hub_kick_locked(h);
    pthread_mutex_unlock(&h->lock);
}

static void hub_on_rev_message(void *ctx, const char *msg, size_t len)
{
    notifications_hub *h = ctx;
    if (len == 0 || len >= NT_SID_MAX || len != strlen(msg))
        return;
    hub_queue(h, hub_msg_new(NT_MSG_REVOKE, NULL, 0, msg, len));
}

static void hub_on_rev_state(void *ctx, bool live)
{
    notifications_hub *h = ctx;
    if (!live)
        return;
    pthread_mutex_lock(&h->lock);
    h->resync_rev = true;
    hub_kick_locked(h);
    pthread_mutex_unlock(&h->lock);
}

/* A connection thread: the client left (or the buffer drained after the high-water mark). */
static void hub_on_drained(void *ctx)
{
    hub_sub *s = ctx;
    notifications_hub *h = s->hub;
    pthread_mutex_lock(&h->lock);
    if (!s->gone_queued) {
        s->gone_queued = true;
        s->gone_next = h->gone;
        h->gone = s;
    }
    hub_kick_locked(h);
    pthread_mutex_unlock(&h->lock);
}

/* ---------- the API ---------- */

notifications_hub *notifications_hub_new(const notifications_hub_options *o)
{
    notifications_hub *h = DK_NEW(notifications_hub);
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
    /* a tick a slot; the ring spans a heartbeat interval, so a stream's timer (never further
     * than its next heartbeat) is looked at only when it is due */
    dk_wheel_init(&h->wheel, h->tick_ms, h->o.heartbeat_ms + h->tick_ms, dk_mono_ms());
    h->by_user = dk_calloc(NT_BUCKETS, sizeof *h->by_user);
    h->by_sid = dk_calloc(NT_BUCKETS, sizeof *h->by_sid);
    return h;
}

static void hub_collect(void *ctx, dk_metrics_out *out)
{
    notifications_hub *h = ctx;
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

dk_status notifications_hub_start(notifications_hub *h)
{
    dk_metrics_add_collector(hub_collect, h);
    const dk_store *st = h->o.store;
    if (st->ops->subscribe(st->kv, DK_NT_HUB_CHANNEL, hub_on_ntf_message, hub_on_ntf_state, h,
                           &h->sub_ntf) != DK_OK)
        h->sub_ntf = NULL;
    if (st->ops->subscribe(st->kv, DK_SESSION_GUARD_CHANNEL, hub_on_rev_message, hub_on_rev_state,
                           h, &h->sub_rev) != DK_OK)
        h->sub_rev = NULL;
    if (pthread_create(&h->thread, NULL, hub_main, h) == 0)
        h->running = true;
    return h->sub_ntf && h->sub_rev && h->running ? DK_OK : DK_E_INTERNAL;
}

static void hub_free_msgs(hub_msg *m)
{
    while (m) {
        hub_msg *next = m->next;
        dk_free(m);
        m = next;
    }
}

void notifications_hub_stop(notifications_hub *h)
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
    size_t n = 0;
    hub_sub **all = hub_all(h, &n);
    for (size_t i = 0; i < n; i++)
        hub_drop(h, all[i]);
    dk_free(all);
    pthread_mutex_lock(&h->lock);
    hub_sub *pending = h->pending;
    h->pending = NULL;
    hub_msg *msgs = h->in_head;
    h->in_head = h->in_tail = NULL;
    h->in_n = 0;
    pthread_mutex_unlock(&h->lock);
    while (pending) {
        hub_sub *s = pending;
        pending = s->next;
        hub_drop(h, s);
    }
    hub_free_msgs(msgs);
}

void notifications_hub_free(notifications_hub *h)
{
    if (!h)
        return;
    notifications_hub_stop(h);
    dk_wheel_release(&h->wheel);
    dk_free(h->by_user);
    dk_free(h->by_sid);
    pthread_cond_destroy(&h->cond);
    pthread_mutex_destroy(&h->lock);
    dk_free(h);
}

void notifications_hub_open(notifications_hub *h, dk_res *res, const char *user_id,
                            const char *session_id, int64_t expires_ms, int64_t after)
{
    hub_sub *s = DK_NEW(hub_sub);
    s->hub = h;
    dk_strlcpy(s->user_id, user_id, sizeof s->user_id);
    if (session_id && strlen(session_id) < sizeof s->session_id)
        dk_strlcpy(s->session_id, session_id, sizeof s->session_id);
    int64_t now = dk_mono_ms();
    s->expires_mono = now + (expires_ms - dk_now_ms());
    s->floor = s->last_seq = after;
    dk_res_header(res, "Cache-Control", "no-cache");
    dk_res_header(res, "X-Accel-Buffering", "no");
    s->stream = dk_res_stream(res, 200, "text/event-stream", hub_on_drained, s);
    static const char hello[] = "retry: 3000\n: connected\n\n";
    (void)hub_write(s, hello, sizeof hello - 1);
    pthread_mutex_lock(&h->lock);
    s->next = h->pending;
    h->pending = s;
    hub_kick_locked(h);
    pthread_mutex_unlock(&h->lock);
}

void notifications_hub_publish(notifications_hub *h, const notifications_item *item)
{
    dk_arena *a = dk_arena_new();
    json_t *j = notifications_item_json(item);
    const char *data = dk_json_render(a, j, NULL);
    json_decref(j);
    const char *frame =
        dk_arena_printf(a, "id: %s\nevent: notification\ndata: %s\n\n", item->id, data);
    size_t flen = strlen(frame);
    hub_queue(h, hub_msg_new(NT_MSG_PUSH, item->user_id, item->seq, frame, flen));
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

void notifications_hub_forget_user(notifications_hub *h, const char *user_id)
{
    hub_queue(h, hub_msg_new(NT_MSG_FORGET, user_id, 0, "", 0));
}

void notifications_hub_stats_get(notifications_hub *h, notifications_hub_stats *ret)
{
    *ret = (notifications_hub_stats){
        .streams = atomic_load(&h->n_streams),
        .pushed = atomic_load(&h->n_pushed),
        .replayed = atomic_load(&h->n_replayed),
        .revoked = atomic_load(&h->n_revoked),
        .capped = atomic_load(&h->n_capped),
    };
}
