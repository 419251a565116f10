/* test_mail.c — composing messages (core/mail.c) and the file mailer (adapters/mailer_file.c):
 * headers, multipart/alternative, 8bit versus base64 bodies, header sanitising, unusable
 * recipients; .eml files written whole, mode 0600, no temporary file left. */
#include "testutil.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/arena.h"
#include "core/mail.h"
#include "ports/mailer.h"
#include "adapters/mailer.h"
#include "core/banned.h"

static void test_sender(void **state)
{
    (void)state;
    dk_arena *a = dk_arena_new();
    dk_mail_sender s;
    assert_int_equal(dk_mail_sender_parse(a, "Docket <no-reply@mail.example.com>", &s), DK_OK);
    assert_string_equal(s.envelope, "no-reply@mail.example.com");
    assert_string_equal(s.msgid_domain, "mail.example.com");
    assert_int_equal(dk_mail_sender_parse(a, "x@y.z\r\nBcc: a@b.c", &s), DK_E_VALIDATION);
    assert_int_equal(dk_mail_sender_parse(a, "nobody", &s), DK_E_VALIDATION);
    assert_int_equal(dk_mail_sender_parse(a, "", &s), DK_E_VALIDATION);
    dk_arena_free(a);
}

static void test_compose(void **state)
{
    (void)state;
    dk_arena *a = dk_arena_new();
    dk_mail_sender s;
    assert_int_equal(dk_mail_sender_parse(a, "Docket <d@example.com>", &s), DK_OK);
    static const char *const hdrs[] = {"X-Docket-Mail: test\r\nBcc: evil@example.com", NULL};
    dk_mail m = {.to = "ann@example.com",
                 .subject = "Hello\r\nBcc: x@example.com",
                 .text = "line one\nhttps://x.example/#/a?token=abc\n",
                 .html = "<p>hi</p>\n",
                 .headers = hdrs};
    size_t len = 0;
    char *msg = dk_mail_compose(a, &s, &m, &len);
    assert_non_null(msg);
    assert_int_equal(len, strlen(msg));
    char *body = strstr(msg, "\r\n\r\n");
    assert_non_null(body);
    *body = '\0'; /* the header block */
    assert_non_null(strstr(msg, "From: Docket <d@example.com>\r\n"));
    assert_non_null(strstr(msg, "To: ann@example.com\r\n"));
    assert_non_null(strstr(msg, "Subject: [Docket] Hello  Bcc: x@example.com\r\n"));
    assert_non_null(strstr(msg, "@example.com>\r\n"));
    assert_non_null(strstr(msg, "Content-Type: multipart/alternative; boundary="));
    /* no header line starts with Bcc: the injected CR LF became spaces */
    assert_null(strstr(msg, "\r\nBcc:"));
    *body = '\r';
    assert_non_null(strstr(body, "Content-Transfer-Encoding: 8bit\r\n\r\nline one\r\n"
                                 "https://x.example/#/a?token=abc\r\n"));
    assert_non_null(strstr(body, "Content-Type: text/html; charset=utf-8"));
    /* bare LF never appears: every line ends CRLF */
    for (const char *p = msg; *p; p++)
        if (*p == '\n')
            assert_true(p > msg && p[-1] == '\r');

    /* a line too long for 8bit goes base64 */
    char *longline = dk_arena_alloc(a, 2001);
    memset(longline, 'x', 2000);
    dk_mail big = {.to = "ann@example.com", .subject = "s", .text = longline};
    msg = dk_mail_compose(a, &s, &big, &len);
    assert_non_null(strstr(msg, "Content-Type: text/plain; charset=utf-8\r\n"
                                "Content-Transfer-Encoding: base64\r\n"));
    for (const char *p = strstr(msg, "\r\n\r\n") + 4; *p; p = strstr(p, "\r\n") + 2)
        assert_true(strstr(p, "\r\n") - p <= 76);

    dk_mail bad = {.to = "not an address", .subject = "s", .text = "t"};
    assert_null(dk_mail_compose(a, &s, &bad, &len));
    assert_string_equal(dk_mail_html_escape(a, "<a href=\"x\">&'"),
                        "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    dk_arena_free(a);
}

static void test_file_mailer(void **state)
{
    (void)state;
    char *root = dk_test_tmpdir("mail");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/deep/mail", root);
    void *h = NULL;
    assert_int_equal(dk_mailer_file_new(dir, &h), DK_OK);
    const char *msg = "Subject: x\r\n\r\nbody\r\n";
    char why[128] = "";
    for (int i = 0; i < 3; i++)
        assert_int_equal(dk_mailer_file_ops.send(h, "d@example.com", "ann@example.com", msg,
                                                 strlen(msg), NULL, why, sizeof why),
                         DK_OK);
    assert_int_equal(dk_mailer_file_ops.send(h, "d@example.com", "a\r\nb@example.com", msg,
                                             strlen(msg), NULL, why, sizeof why),
                     DK_E_VALIDATION);
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') {
            assert_true(strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0);
            continue;
        }
        n++;
        assert_non_null(strstr(e->d_name, ".eml"));
        char path[8192];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);
        FILE *f = fopen(path, "rb");
        char buf[512] = {0};
        size_t k = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        assert_true(k > 0);
        assert_string_equal(buf, "X-Envelope-From: <d@example.com>\r\nX-Envelope-To: "
                                 "<ann@example.com>\r\nSubject: x\r\n\r\nbody\r\n");
    }
    closedir(d);
    assert_int_equal(n, 3);
    dk_mailer_file_ops.free(h);
    dk_mailer_file_ops.free(NULL);
    free(root);
}

static void test_smtp_mailer_new(void **state)
{
    (void)state;
    void *h = NULL;
    assert_int_equal(dk_mailer_smtp_new("http://x", 1000, &h), DK_E_VALIDATION);
    assert_int_equal(dk_mailer_smtp_new("smtp://x", 0, &h), DK_E_VALIDATION);
    assert_int_equal(dk_mailer_smtp_new("smtps://u:p@x:465", 1000, &h), DK_OK);
    dk_mailer_smtp_ops.free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sender),
        cmocka_unit_test(test_compose),
        cmocka_unit_test(test_file_mailer),
        cmocka_unit_test(test_smtp_mailer_new),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
