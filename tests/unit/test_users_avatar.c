/* test_users_avatar.c — avatar rules: the media types accepted, magic numbers (PNG, JPEG, WebP
 * and near misses), content-addressed keys, the ETag, the versioned URL and If-None-Match. */
#include "testutil.h"

#include <stdio.h>
#include <string.h>

#include "core/arena.h"
#include "services/users/users_avatar.h"
#include "core/banned.h"

#define UID "01a250fa-0d55-7194-a4eb-42848de711dd"

static void test_media_types(void **state)
{
    (void)state;
    assert_int_equal(dk_avatar_type_from_media("image/png"), DK_AVATAR_PNG);
    assert_int_equal(dk_avatar_type_from_media("IMAGE/PNG"), DK_AVATAR_PNG);
    assert_int_equal(dk_avatar_type_from_media(" image/jpeg; q=1"), DK_AVATAR_JPEG);
    assert_int_equal(dk_avatar_type_from_media("image/webp"), DK_AVATAR_WEBP);
    const char *bad[] = {NULL,           "",           "image/gif",
                         "image/jpg",    "image/pngx", "image/png2",
                         "text/plain",   "image/",     "application/octet-stream",
                         "image/svg+xml"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(dk_avatar_type_from_media(bad[i]), DK_AVATAR_NONE);
    assert_string_equal(dk_avatar_media(DK_AVATAR_JPEG), "image/jpeg");
    assert_string_equal(dk_avatar_ext(DK_AVATAR_WEBP), "webp");
    assert_null(dk_avatar_ext(DK_AVATAR_NONE));
}

static void test_magic_numbers(void **state)
{
    (void)state;
    static const unsigned char png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0};
    static const unsigned char jpeg[] = {0xff, 0xd8, 0xff, 0xe0, 0, 0x10, 'J', 'F', 'I', 'F'};
    static const unsigned char webp[] = "RIFF\x24\0\0\0WEBPVP8 \x18\0\0\0";
    static const unsigned char webpl[] = "RIFF\x24\0\0\0WEBPVP8L\x18\0\0\0";
    static const unsigned char webpx[] = "RIFF\x24\0\0\0WEBPVP8X\x18\0\0\0";
    assert_int_equal(dk_avatar_sniff(png, sizeof png), DK_AVATAR_PNG);
    assert_int_equal(dk_avatar_sniff(png, 8), DK_AVATAR_PNG);
    assert_int_equal(dk_avatar_sniff(jpeg, sizeof jpeg), DK_AVATAR_JPEG);
    assert_int_equal(dk_avatar_sniff(jpeg, 3), DK_AVATAR_JPEG);
    assert_int_equal(dk_avatar_sniff(webp, sizeof webp - 1), DK_AVATAR_WEBP);
    assert_int_equal(dk_avatar_sniff(webpl, sizeof webpl - 1), DK_AVATAR_WEBP);
    assert_int_equal(dk_avatar_sniff(webpx, sizeof webpx - 1), DK_AVATAR_WEBP);

    /* truncated, altered by one byte, other formats */
    assert_int_equal(dk_avatar_sniff(png, 7), DK_AVATAR_NONE);
    assert_int_equal(dk_avatar_sniff(jpeg, 2), DK_AVATAR_NONE);
    assert_int_equal(dk_avatar_sniff(webp, 15), DK_AVATAR_NONE);
    assert_int_equal(dk_avatar_sniff("", 0), DK_AVATAR_NONE);
    unsigned char bad[sizeof png];
    for (size_t i = 0; i < 8; i++) {
        memcpy(bad, png, sizeof png);
        bad[i] ^= 0x01;
        assert_int_equal(dk_avatar_sniff(bad, sizeof bad), DK_AVATAR_NONE);
    }
    static const unsigned char wave[] = "RIFF\x24\0\0\0WAVEfmt \x10\0\0\0";
    static const unsigned char webp_other[] = "RIFF\x24\0\0\0WEBPVP9 \x18\0\0\0";
    assert_int_equal(dk_avatar_sniff(wave, sizeof wave - 1), DK_AVATAR_NONE);
    assert_int_equal(dk_avatar_sniff(webp_other, sizeof webp_other - 1), DK_AVATAR_NONE);
    assert_int_equal(dk_avatar_sniff("GIF89a\0\0", 8), DK_AVATAR_NONE);
    assert_int_equal(dk_avatar_sniff("<svg xmlns", 10), DK_AVATAR_NONE);
    assert_int_equal(dk_avatar_sniff("\xff\xd8\x00", 3), DK_AVATAR_NONE);
}

static void test_keys_etags_and_urls(void **state)
{
    (void)state;
    dk_arena *a = dk_arena_new();
    /* sha256("abc") */
    const char *sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    char *key = dk_avatar_key(a, UID, DK_AVATAR_PNG, "abc", 3);
    char want[256];
    snprintf(want, sizeof want, "avatars/%s/%s.png", UID, sha);
    assert_string_equal(key, want);
    /* the same bytes, the same key; other bytes, another */
    assert_string_equal(dk_avatar_key(a, UID, DK_AVATAR_PNG, "abc", 3), key);
    assert_string_not_equal(dk_avatar_key(a, UID, DK_AVATAR_PNG, "abd", 3), key);
    /* never from something that is not a user id */
    assert_null(dk_avatar_key(a, "../../etc", DK_AVATAR_PNG, "abc", 3));
    assert_null(dk_avatar_key(a, "", DK_AVATAR_PNG, "abc", 3));
    assert_null(dk_avatar_key(a, UID, DK_AVATAR_NONE, "abc", 3));

    dk_avatar_type t = DK_AVATAR_NONE;
    char hex[65];
    assert_true(dk_avatar_key_parse(key, &t, hex));
    assert_int_equal(t, DK_AVATAR_PNG);
    assert_string_equal(hex, sha);
    const char *bad_keys[] = {"avatars/x/abc.png", "other/" UID "/x.png", "avatars/" UID "/",
                              "avatars/" UID "/ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb4"
                              "10ff61f20015ad.gif"};
    for (size_t i = 0; i < sizeof bad_keys / sizeof bad_keys[0]; i++)
        assert_false(dk_avatar_key_parse(bad_keys[i], NULL, NULL));

    snprintf(want, sizeof want, "\"%s\"", sha);
    assert_string_equal(dk_avatar_etag(a, key), want);
    assert_null(dk_avatar_etag(a, "nonsense"));
    snprintf(want, sizeof want, "/api/v1/users/%s/avatar?v=%.16s", UID, sha);
    assert_string_equal(dk_avatar_url(a, UID, key), want);
    assert_null(dk_avatar_url(a, UID, NULL));
    dk_arena_free(a);
}

static void test_if_none_match(void **state)
{
    (void)state;
    const char *etag = "\"abc\"";
    assert_true(dk_avatar_etag_matches("\"abc\"", etag));
    assert_true(dk_avatar_etag_matches("W/\"abc\"", etag));
    assert_true(dk_avatar_etag_matches("\"x\", \"abc\"", etag));
    assert_true(dk_avatar_etag_matches("\"x\",W/\"abc\"", etag));
    assert_true(dk_avatar_etag_matches("*", etag));
    assert_false(dk_avatar_etag_matches(NULL, etag));
    assert_false(dk_avatar_etag_matches("", etag));
    assert_false(dk_avatar_etag_matches("\"ab\"", etag));
    assert_false(dk_avatar_etag_matches("\"abcd\"", etag));
    assert_false(dk_avatar_etag_matches("abc", etag));
    assert_false(dk_avatar_etag_matches("\"abc", etag));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_media_types),
        cmocka_unit_test(test_magic_numbers),
        cmocka_unit_test(test_keys_etags_and_urls),
        cmocka_unit_test(test_if_none_match),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
