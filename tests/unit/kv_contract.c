/* kv_contract.c — checks every kv adapter passes (see kv_contract.h). */
#include "testutil.h"

#include "kv_contract.h"

#include <string.h>

#include "core/arena.h"
#include "core/timeutil.h"
#include "core/banned.h"

bool kv_contract_key_exists(const struct dk_kv_ops *ops, dk_kv *kv, const char *key)
{
    bool e = false;
    assert_int_equal(ops->exists(kv, key, &e), DK_OK);
    return e;
}

int64_t kv_contract_wait_gone(const struct dk_kv_ops *ops, dk_kv *kv, const char *key,
                              int64_t deadline_ms)
{
    int64_t start = dk_mono_ms();
    while (dk_mono_ms() - start < deadline_ms) {
        if (!kv_contract_key_exists(ops, kv, key))
            return dk_mono_ms() - start;
        dk_test_sleep_ms(5);
    }
    return -1;
}

/* SET NX, expiry changes and RENAME: what the session records are built on. */
void kv_contract_set_nx_expire_rename(const struct dk_kv_ops *ops, dk_kv *kv, dk_arena *a)
{
    char *val = NULL;
    size_t len = 0;
    bool set = false, found = true;
    assert_int_equal(ops->del(kv, "nx"), DK_OK);
    assert_int_equal(ops->del(kv, "nx2"), DK_OK);
    assert_int_equal(ops->set_nx(kv, "nx", "one", 3, 0, &set), DK_OK);
    assert_true(set);
    assert_int_equal(ops->set_nx(kv, "nx", "two", 3, 0, &set), DK_OK);
    assert_false(set); /* there already: unchanged */
    assert_int_equal(ops->get(kv, a, "nx", &val, &len), DK_OK);
    assert_string_equal(val, "one");

    /* expire: absent keys are reported and stay absent */
    assert_int_equal(ops->expire(kv, "no-such-key", 1000, &found), DK_OK);
    assert_false(found);
    assert_int_equal(ops->expire(kv, "no-such-key", 0, &found), DK_OK);
    assert_false(found);
    assert_false(kv_contract_key_exists(ops, kv, "no-such-key"));
    /* a short life, then none: the key stays */
    assert_int_equal(ops->expire(kv, "nx", 80, &found), DK_OK);
    assert_true(found);
    assert_int_equal(ops->expire(kv, "nx", 0, &found), DK_OK);
    assert_true(found);
    dk_test_sleep_ms(150);
    assert_true(kv_contract_key_exists(ops, kv, "nx"));
    /* a short life: gone, and SET NX works again */
    assert_int_equal(ops->expire(kv, "nx", 50, &found), DK_OK);
    dk_test_sleep_ms(120);
    assert_false(kv_contract_key_exists(ops, kv, "nx"));
    assert_int_equal(ops->set_nx(kv, "nx", "three", 5, 60000, &set), DK_OK);
    assert_true(set);

    /* rename moves value (replacing the target), and fails on a missing source */
    assert_int_equal(ops->set(kv, "nx2", "old", 3, 0), DK_OK);
    assert_int_equal(ops->rename(kv, "nx", "nx2"), DK_OK);
    assert_false(kv_contract_key_exists(ops, kv, "nx"));
    assert_int_equal(ops->get(kv, a, "nx2", &val, &len), DK_OK);
    assert_string_equal(val, "three");
    assert_int_equal(ops->rename(kv, "nx", "nx2"), DK_E_NOT_FOUND);
    assert_true(kv_contract_key_exists(ops, kv, "nx2"));
    /* the expiry moves with the value */
    assert_int_equal(ops->set(kv, "nx", "brief", 5, 80), DK_OK);
    assert_int_equal(ops->rename(kv, "nx", "nx2"), DK_OK);
    dk_test_sleep_ms(150);
    assert_false(kv_contract_key_exists(ops, kv, "nx2"));
}
