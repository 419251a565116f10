#include "core/sql.h"

#include "core/arena.h"
#include "core/log.h"
#include "core/str.h"
#include "core/banned.h"

dk_status dk_sql(const dk_database *db, dk_arena *a, const char *sql, int nparams,
                 const char *const *params, dk_db_rows **ret_rows)
{
    dk_db_conn *conn = NULL;
    dk_status st = db->ops->acquire(db->db, &conn);
    if (st != DK_OK)
        return st;
    st = db->ops->query(conn, a, sql, nparams, params, ret_rows);
    if (st != DK_OK && st != DK_E_CONFLICT)
        dk_log_error("sql failed (%s): %s", dk_status_title(st), db->ops->last_error(conn));
    db->ops->release(db->db, conn);
    return st;
}

const char *dk_sql_int(dk_arena *a, int64_t v)
{
    return dk_arena_printf(a, "%lld", (long long)v);
}

const char *dk_sql_pg_array(dk_arena *a, const char *const *v, int n)
{
    dk_sb b = {0};
    dk_sb_put(&b, "{", 1);
    for (int i = 0; i < n; i++) {
        if (i)
            dk_sb_put(&b, ",", 1);
        if (!v[i]) {
            dk_sb_put(&b, "NULL", 4);
            continue;
        }
        dk_sb_put(&b, "\"", 1);
        for (const char *c = v[i]; *c; c++) {
            if (*c == '"' || *c == '\\')
                dk_sb_put(&b, "\\", 1);
            dk_sb_put(&b, c, 1);
        }
        dk_sb_put(&b, "\"", 1);
    }
    dk_sb_put(&b, "}", 1);
    return dk_sb_take(&b, a);
}

int64_t dk_sql_get_int(const dk_db_rows *r, int row, int col)
{
    const char *v = dk_db_value(r, row, col);
    int64_t out = 0;
    if (!v || !dk_parse_i64(v, INT64_MIN, INT64_MAX, &out))
        return 0;
    return out;
}

dk_status dk_tx_begin(const dk_database *db, dk_tx *tx)
{
    tx->db = db;
    tx->conn = NULL;
    dk_status st = db->ops->acquire(db->db, &tx->conn);
    if (st != DK_OK)
        return st;
    st = db->ops->begin(tx->conn);
    if (st != DK_OK) {
        dk_log_error("begin failed (%s): %s", dk_status_title(st), db->ops->last_error(tx->conn));
        db->ops->release(db->db, tx->conn);
        tx->conn = NULL;
    }
    return st;
}

dk_status dk_tx_query(dk_tx *tx, dk_arena *a, const char *sql, int nparams,
                      const char *const *params, dk_db_rows **ret_rows)
{
    dk_status st = tx->db->ops->query(tx->conn, a, sql, nparams, params, ret_rows);
    if (st != DK_OK && st != DK_E_CONFLICT)
        dk_log_error("sql failed (%s): %s", dk_status_title(st), tx->db->ops->last_error(tx->conn));
    return st;
}

dk_status dk_tx_query_commit(dk_tx *tx, dk_arena *a, const char *sql, int nparams,
                             const char *const *params, dk_db_rows **ret_rows)
{
    const struct dk_db_ops *ops = tx->db->ops;
    dk_status st;
    if (ops->query_commit) {
        st = ops->query_commit(tx->conn, a, sql, nparams, params, ret_rows);
        if (st != DK_OK && st != DK_E_CONFLICT)
            dk_log_error("sql failed (%s): %s", dk_status_title(st), ops->last_error(tx->conn));
    } else {
        st = dk_tx_query(tx, a, sql, nparams, params, ret_rows);
        if (st == DK_OK) {
            st = ops->commit(tx->conn);
            if (st != DK_OK)
                dk_log_error("commit failed (%s): %s", dk_status_title(st),
                             ops->last_error(tx->conn));
        }
    }
    if (st == DK_OK) { /* committed: the transaction is over */
        ops->release(tx->db->db, tx->conn);
        tx->conn = NULL;
    }
    return st;
}

dk_status dk_tx_end(dk_tx *tx, dk_status st)
{
    if (!tx->conn)
        return st;
    if (st == DK_OK) {
        st = tx->db->ops->commit(tx->conn);
        if (st != DK_OK)
            dk_log_error("commit failed (%s): %s", dk_status_title(st),
                         tx->db->ops->last_error(tx->conn));
    } else {
        (void)tx->db->ops->rollback(tx->conn);
    }
    tx->db->ops->release(tx->db->db, tx->conn);
    tx->conn = NULL;
    return st;
}

void dk_tx_abort(dk_tx *tx)
{
    if (!tx->conn)
        return;
    (void)tx->db->ops->rollback(tx->conn);
    tx->db->ops->release(tx->db->db, tx->conn);
    tx->conn = NULL;
}
