"""Account recovery, e-mail verification and the second factor (api.md, "Account recovery,
verification and second factor"): password reset by e-mail and each way it fails, address
verification on register and e-mail change, mail content and headers (the file mailer and the
SMTP sink), the one-mail-per-address rule and the per-IP limit, timing of known and unknown
addresses, TOTP against codes computed here from the returned secret (drift, replay, recovery
codes, the 5-failure lockout), and the sessions each step revokes.

Modes: sqlite reads the .eml files under <data_dir>/mail; pg sends to the SMTP sink; split
(every service its own process behind the gateway) reads the files the auth process writes in
./data/mail."""

import base64
import hashlib
import hmac
import sqlite3
import statistics
import struct
import time
import urllib.parse
import uuid

import pytest

from helpers import PASSWORD, assert_problem, assert_unauthorized, unique_email, wait_until
from mailbox import Mailbox, html_part, mail_token, text_part, verify_address
from smtp_sink import SmtpSink

AUTH = "/api/v1/auth"
FORGOT, RESET = f"{AUTH}/password/forgot", f"{AUTH}/password/reset"
VERIFY, RESEND = f"{AUTH}/email/verify", f"{AUTH}/email/resend"
SETUP, ENABLE, DISABLE = (f"{AUTH}/mfa/totp/setup", f"{AUTH}/mfa/totp/enable",
                          f"{AUTH}/mfa/totp/disable")
LOGIN, LOGIN_MFA = f"{AUTH}/login", f"{AUTH}/login/mfa"
ME = "/api/v1/users/me"
PUBLIC_URL = "https://docket.example.test"
NEW_PASSWORD = "a brand new passphrase"


# --------------------------------------------------------------------------- TOTP, here

def totp(secret_b32, step):
    """RFC 6238 (SHA-1, 6 digits) for a time step, computed independently of docket."""
    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    mac = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    off = mac[-1] & 0x0F
    return "%06d" % ((struct.unpack(">I", mac[off:off + 4])[0] & 0x7FFFFFFF) % 1000000)


def current_step():
    """The current 30 s step, waiting out the last 4 s of a step so that a code computed now is
    still in the same step when the server checks it."""
    if time.time() % 30 > 26:
        time.sleep(30 - time.time() % 30 + 0.05)
    return int(time.time()) // 30


def test_totp_helper_matches_rfc6238():
    secret = base64.b32encode(b"12345678901234567890").decode()
    assert totp(secret, 59 // 30) == "287082"
    assert totp(secret, 1111111109 // 30) == "081804"


# --------------------------------------------------------------------------- the docket

@pytest.fixture
def account_docket(mode, start_docket):
    """A docket of this mode with short mail intervals, and a mailbox to read what it sends."""
    env = {"DOCKET_SERVER_PUBLIC_URL": PUBLIC_URL, "DOCKET_AUTH_MAIL_INTERVAL": "1s",
           "MAIL_FROM": "Docket <docket@example.test>"}
    if mode.name == "postgres":
        with SmtpSink() as sink:
            env["SMTP_URL"] = sink.url
            d = start_docket(extra_env=env)
            yield d, Mailbox.smtp(sink)
            # stop docket while the sink still answers: a mail still on its way to a sink
            # that is gone would hold docket's mail thread for the SMTP timeout
            d.stop()
        return
    d = start_docket(extra_env=env)
    yield d, Mailbox.files(d)


def check_mail(msg, to, kind, subject, link_path):
    assert str(msg["To"]) == to, msg["To"]
    assert "docket@example.test" in str(msg["From"]), msg["From"]
    assert str(msg["Subject"]) == f"[Docket] {subject}", msg["Subject"]
    assert msg["X-Docket-Mail"] == kind
    assert msg["Message-ID"].endswith("@example.test>"), msg["Message-ID"]
    assert msg["Date"] and msg["MIME-Version"] == "1.0"
    assert msg.get_content_type() == "multipart/alternative"
    token = mail_token(msg)
    assert len(base64.urlsafe_b64decode(token + "=")) == 32      # 256 random bits
    link = f"{PUBLIC_URL}/#{link_path}?token={token}"
    assert link in text_part(msg) and "Docket" in text_part(msg)
    assert f'href="{link}"' in html_part(msg)
    return token


def test_reset_and_verification(account_docket, mode):
    d, box = account_docket
    acct = d.new_user(name="Ann Example")
    other = d.new_session(acct)

    # registering sent a verification mail; the address is unverified until it is used
    msg = box.wait_one(acct.email, "email-verification")
    vtoken = check_mail(msg, acct.email, "email-verification", "Confirm your e-mail address",
                        "/verify-email")
    assert "Ann Example" in text_part(msg)
    assert d.me(acct.access).json()["email_verified"] is False
    assert_problem(d.post(VERIFY, json={"token": "x" * 43}), 422, fields={"token"})
    assert_problem(d.post(VERIFY, json={}), 422, fields={"token"})
    assert d.post(VERIFY, json={"token": vtoken}).status_code == 204
    assert d.me(acct.access).json()["email_verified"] is True
    assert_problem(d.post(VERIFY, json={"token": vtoken}), 422, fields={"token"})   # single use
    assert d.post(RESEND, token=acct.access).status_code == 202     # verified: nothing sent
    assert_unauthorized(d.post(RESEND))

    # forgot: 202 for a known and an unknown address; only the known one gets a mail
    unknown = unique_email("nobody")
    assert d.post(FORGOT, json={"email": unknown}).status_code == 202
    assert d.post(FORGOT, json={"email": acct.email.upper()}).status_code == 202
    assert_problem(d.post(FORGOT, json={"email": "not an address"}), 422, fields={"email"})
    first = check_mail(box.wait_one(acct.email, "password-reset"), acct.email, "password-reset",
                       "Reset your password", "/reset-password")
    assert box.all(to=unknown) == []

    # a second forgot (after the 1 s interval) sends a new token; the first one is dead
    time.sleep(1.1)
    assert d.post(FORGOT, json={"email": acct.email}).status_code == 202
    second = mail_token(box.wait_one(acct.email, "password-reset", after=1))
    assert second != first
    assert_problem(d.post(RESET, json={"token": first, "new_password": NEW_PASSWORD}), 422,
                   fields={"token"})
    # unknown token, bad password, missing fields
    assert_problem(d.post(RESET, json={"token": "A" * 43, "new_password": NEW_PASSWORD}), 422,
                   fields={"token"})
    assert_problem(d.post(RESET, json={"token": second, "new_password": "short"}), 422,
                   fields={"new_password"})
    assert_problem(d.post(RESET, json={}), 422, fields={"token", "new_password"})

    # the happy path: new password, every session revoked
    assert d.post(RESET, json={"token": second, "new_password": NEW_PASSWORD}).status_code == 204
    for s in (acct.session, other):
        wait_until(lambda: d.me(s.access).status_code == 401, 5, what="sessions revoked")
        assert d.refresh(s.refresh).status_code == 401
    assert_unauthorized(d.login(acct.email, PASSWORD))
    assert d.login(acct.email, NEW_PASSWORD).status_code == 200
    # used: a second reset with the same token fails
    assert_problem(d.post(RESET, json={"token": second, "new_password": "yet another one"}),
                   422, fields={"token"})

    # changing the address: unverified again, and a verification mail goes to the new one
    acct.password = NEW_PASSWORD
    s = d.new_session(acct)
    new_email = unique_email("moved")
    r = d.patch(ME, token=s.access, json={"email": new_email})
    assert r.status_code == 200 and r.json()["email_verified"] is False, r.text
    ntoken = mail_token(box.wait_one(new_email, "email-verification"))
    assert d.post(VERIFY, json={"token": ntoken}).status_code == 204
    assert d.me(s.access).json()["email_verified"] is True
    # a reset token mailed to the old address stops working once the address changed
    time.sleep(1.1)
    assert d.post(FORGOT, json={"email": new_email}).status_code == 202
    moved = mail_token(box.wait_one(new_email, "password-reset"))
    r = d.patch(ME, token=s.access, json={"email": unique_email("again")})
    assert r.status_code == 200
    assert_problem(d.post(RESET, json={"token": moved, "new_password": "and another one"}), 422,
                   fields={"token"})

    # nothing in a log carries a token
    logs = d.log_text()
    for token in (vtoken, first, second, ntoken, moved):
        assert token not in logs


def test_reset_token_expires(mode, start_docket):
    if mode.name == "postgres":
        pytest.skip("expiry is the same SQL on both engines; sqlite and split cover it")
    d = start_docket(extra_env={"DOCKET_AUTH_RESET_TOKEN_TTL": "1s"})
    box = Mailbox.files(d)
    acct = d.new_user()
    assert d.post(FORGOT, json={"email": acct.email}).status_code == 202
    token = mail_token(box.wait_one(acct.email, "password-reset"))
    assert "within 1 minute" not in text_part(box.wait_one(acct.email, "password-reset"))
    time.sleep(1.2)
    assert_problem(d.post(RESET, json={"token": token, "new_password": NEW_PASSWORD}), 422,
                   fields={"token"})
    assert d.login(acct.email, PASSWORD).status_code == 200


def test_one_mail_per_minute_rate_limit_and_timing(docket_factory):
    d = docket_factory("sqlite", extra_env={"DOCKET_RATE_LIMITING_MAX_REQUESTS": "400"})
    box = Mailbox.files(d)
    acct = d.new_user()
    box.wait_one(acct.email, "email-verification")
    # resend within the minute: answered, nothing sent
    assert d.post(RESEND, token=acct.access).status_code == 202

    # timing: known and unknown addresses cost the same (the lookup is off the request path)
    def timed(address):
        t0 = time.perf_counter()
        r = d.post(FORGOT, json={"email": address})
        assert r.status_code == 202
        return time.perf_counter() - t0
    for _ in range(5):
        timed(acct.email), timed(unique_email("warm"))
    known, unknown = [], []
    for i in range(40):
        known.append(timed(acct.email))
        unknown.append(timed(f"nobody-{uuid.uuid4().hex[:8]}@example.com"))
    mk, mu = statistics.median(known), statistics.median(unknown)
    assert abs(mk - mu) < max(0.002, 0.5 * min(mk, mu)), (mk, mu)

    # 46 forgot requests for one address within a minute: one reset mail
    box.wait_one(acct.email, "password-reset")
    time.sleep(0.5)
    assert len(box.all(acct.email, "password-reset")) == 1
    assert len(box.all(acct.email, "email-verification")) == 1

    # the per-IP limit of the auth routes covers the new ones
    d2 = docket_factory("sqlite", extra_env={"DOCKET_RATE_LIMITING_MAX_REQUESTS": "3"})
    for _ in range(3):
        r = d2.post(FORGOT, json={"email": "x@example.com"})
        assert r.status_code == 202 and "RateLimit-Limit" in r.headers
    r = d2.post(RESET, json={"token": "t", "new_password": NEW_PASSWORD})
    assert_problem(r, 429)
    assert "Retry-After" in r.headers


def test_smtp_with_credentials_requires_tls(docket_factory):
    with SmtpSink() as sink:    # offers neither STARTTLS nor AUTH
        url = sink.url.replace("smtp://", "smtp://user:secret-password@")
        d = docket_factory("sqlite", extra_env={"SMTP_URL": url})
        d.new_user(login=False)
        wait_until(lambda: "verification e-mail not sent" in d.log_text(), 10,
                   what="the refused SMTP attempt logged")
        assert sink.received() == []
        assert not [c for c in sink.commands if c.upper().startswith(("AUTH", "MAIL"))]
        assert "secret-password" not in d.log_text()


# --------------------------------------------------------------------------- TOTP

def enable_totp(d, acct):
    r = d.post(SETUP, token=acct.access)
    assert r.status_code == 200, r.text
    body = r.json()
    secret = body["secret"]
    uri = urllib.parse.urlparse(body["otpauth_uri"])
    assert uri.scheme == "otpauth" and uri.netloc == "totp"
    q = urllib.parse.parse_qs(uri.query)
    assert q["secret"] == [secret] and q["issuer"] == ["Docket"] and q["digits"] == ["6"]
    assert q["period"] == ["30"] and q["algorithm"] == ["SHA1"]
    assert urllib.parse.unquote(uri.path) == f"/Docket:{acct.email}"
    return secret


def mfa_login(d, acct):
    r = d.login(acct.email, acct.password)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["mfa_required"] is True and body["expires_in"] == 300, body
    assert "access_token" not in body and "refresh_token" not in body
    return body["mfa_token"]


def test_totp_cycle(mode, start_docket):
    d = start_docket()
    acct = d.new_user()
    other = d.new_session(acct)

    assert_problem(d.post(ENABLE, token=acct.access, json={"code": "123456"}), 409)
    assert_problem(d.post(DISABLE, token=acct.access,
                          json={"password": PASSWORD, "code": "123456"}), 409)
    enable_totp(d, acct)
    secret = enable_totp(d, acct)                 # a second setup replaces the first
    assert d.me(acct.access).json()["mfa_enabled"] is False   # not active until enabled
    assert d.login(acct.email, PASSWORD).json().get("access_token")

    # enable: a wrong code is 422; a code one step behind (drift) is accepted
    step = current_step()
    wrong = "%06d" % ((int(totp(secret, step)) + 1) % 1000000)
    assert_problem(d.post(ENABLE, token=acct.access, json={"code": wrong}), 422, fields={"code"})
    assert_problem(d.post(ENABLE, token=acct.access, json={"code": totp(secret, step + 2)}), 422,
                   fields={"code"})
    r = d.post(ENABLE, token=acct.access, json={"code": totp(secret, step - 1)})
    assert r.status_code == 200, r.text
    codes = r.json()["recovery_codes"]
    assert len(codes) == 10 and len(set(codes)) == 10
    assert d.me(acct.access).json()["mfa_enabled"] is True
    if mode.name == "sqlite":     # stored encrypted (AES-256-GCM), never in clear
        with sqlite3.connect(d.data_dir + "/docket.db") as db:
            (stored,) = db.execute("SELECT secret FROM totp WHERE user_id = ?",
                                   (acct.id,)).fetchone()
        assert stored.startswith("v1.") and secret not in stored, stored
    # enabling revoked the other sessions, not this one
    wait_until(lambda: d.me(other.access).status_code == 401, 5, what="other session revoked")
    assert d.me(acct.access).status_code == 200
    assert_problem(d.post(SETUP, token=acct.access), 409)

    # two-step login; a code one step ahead (drift) works, then the same code is a replay
    mfa = mfa_login(d, acct)
    ahead = totp(secret, step + 1)
    assert_problem(d.post(LOGIN_MFA, json={"mfa_token": mfa}), 422, fields={"code"})
    r = d.post(LOGIN_MFA, json={"mfa_token": mfa, "code": ahead})
    assert r.status_code == 200, r.text
    assert r.json()["access_token"] and r.json()["user"]["mfa_enabled"] is True
    assert_unauthorized(d.post(LOGIN_MFA, json={"mfa_token": mfa, "code": ahead}))  # token used
    mfa = mfa_login(d, acct)
    assert_unauthorized(d.post(LOGIN_MFA, json={"mfa_token": mfa, "code": ahead}))  # replay
    assert_unauthorized(d.post(LOGIN_MFA, json={"mfa_token": mfa,
                                                "code": totp(secret, step)}))      # older step
    # recovery codes: each works once
    r = d.post(LOGIN_MFA, json={"mfa_token": mfa, "recovery_code": codes[0].upper()})
    assert r.status_code == 200, r.text
    mfa = mfa_login(d, acct)
    assert_unauthorized(d.post(LOGIN_MFA, json={"mfa_token": mfa, "recovery_code": codes[0]}))

    # lockout: 5 wrong codes end the mfa_token, even for the right code after them
    mfa = mfa_login(d, acct)
    for _ in range(4):
        assert_unauthorized(d.post(LOGIN_MFA, json={"mfa_token": mfa, "code": wrong}))
    assert_unauthorized(d.post(LOGIN_MFA, json={"mfa_token": mfa, "recovery_code": "aaaa"}))
    assert_unauthorized(d.post(LOGIN_MFA, json={"mfa_token": mfa, "recovery_code": codes[1]}))
    assert_unauthorized(d.post(LOGIN_MFA, json={"mfa_token": "nonsense", "code": "123456"}))
    r = d.post(LOGIN_MFA, json={"mfa_token": mfa_login(d, acct), "recovery_code": codes[1]})
    assert r.status_code == 200, r.text     # the code itself was never used up
    keep = r.json()["access_token"]

    # disable: password and a code (a recovery code does); the other sessions are revoked
    assert_unauthorized(d.post(DISABLE, token=keep,
                               json={"password": "wrong password", "code": codes[2]}))
    assert_problem(d.post(DISABLE, token=keep, json={"password": PASSWORD, "code": "000000"}),
                   422, fields={"code"})
    assert_problem(d.post(DISABLE, token=keep, json={"password": PASSWORD}), 422,
                   fields={"code"})
    assert d.post(DISABLE, token=keep,
                  json={"password": PASSWORD, "code": codes[2]}).status_code == 204
    wait_until(lambda: d.me(acct.access).status_code == 401, 5, what="other sessions revoked")
    assert d.me(keep).json()["mfa_enabled"] is False
    r = d.login(acct.email, PASSWORD)
    assert r.status_code == 200 and r.json()["access_token"], r.text
