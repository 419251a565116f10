/* kv_contract.h — what every kv adapter must do, checked the same way for each: run by
 * test_kv_memory and test_kv_redis against their own adapter (cmocka asserts: a failure fails
 * the calling test). */
#ifndef DK_TEST_KV_CONTRACT_H
#define DK_TEST_KV_CONTRACT_H

#include <stdbool.h>
#include <stdint.h>

#include "ports/kv.h"

typedef struct dk_arena dk_arena;

/* Whether key exists (the call itself must succeed). */
bool kv_contract_key_exists(const struct dk_kv_ops *ops, dk_kv *kv, const char *key);
/* Polls until key is gone; returns the ms it took, or -1 after deadline_ms. */
int64_t kv_contract_wait_gone(const struct dk_kv_ops *ops, dk_kv *kv, const char *key,
                              int64_t deadline_ms);
/* SET NX, expiry changes and RENAME: what the session records are built on. */
void kv_contract_set_nx_expire_rename(const struct dk_kv_ops *ops, dk_kv *kv, dk_arena *a);

#endif
