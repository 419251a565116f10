"""Reading the mail docket sends, whichever way it goes: the .eml files the file mailer writes
under <data_dir>/mail/ (no SMTP_URL), or the SMTP sink (smtp_sink.py). Messages are parsed with
email.policy.default; account mails carry X-Docket-Mail (password-reset, email-verification).

    box = Mailbox.files(d)            # or Mailbox.smtp(sink)
    msg = box.wait_one(to=email, kind="password-reset")
    token = mail_token(msg)
"""

import email
import email.policy
import glob
import os
import re

from helpers import wait_until

WAIT = 15
TOKEN_RE = re.compile(r"token=([A-Za-z0-9_-]{43,})")


class Mailbox:
    def __init__(self, read):
        self._read = read

    @classmethod
    def files(cls, d):
        """The file mailer of a docket: <data_dir>/mail, or ./data/mail in its cwd."""
        directory = os.path.join(d.data_dir or os.path.join(d.cwd, "data"), "mail")

        def read():
            out = []
            for path in sorted(glob.glob(os.path.join(directory, "*.eml"))):
                with open(path, "rb") as f:
                    raw = f.read()
                out.append((raw, email.message_from_bytes(raw, policy=email.policy.default)))
            return out
        box = cls(read)
        box.directory = directory
        return box

    @classmethod
    def smtp(cls, sink):
        return cls(lambda: [(m.data, m.message) for m in sink.received()])

    def all(self, to=None, kind=None):
        """(raw bytes, message) of every mail so far, optionally only to `to` / of `kind`."""
        out = []
        for raw, msg in self._read():
            if to is not None and str(msg["To"]).lower() != to.lower():
                continue
            if kind is not None and msg["X-Docket-Mail"] != kind:
                continue
            out.append((raw, msg))
        return out

    def wait(self, n, to=None, kind=None, timeout=WAIT):
        found = []

        def enough():
            found[:] = self.all(to, kind)
            return len(found) >= n
        wait_until(enough, timeout, what=f"{n} mail(s) {kind or ''} to {to or 'anyone'}")
        return [m for _, m in found]

    def wait_one(self, to, kind, after=0, timeout=WAIT):
        """The (after+1)-th mail of kind to `to`."""
        return self.wait(after + 1, to, kind, timeout)[after]


def text_part(msg):
    return msg.get_body(preferencelist=("plain",)).get_content()


def html_part(msg):
    return msg.get_body(preferencelist=("html",)).get_content()


def mail_token(msg):
    found = TOKEN_RE.search(text_part(msg))
    assert found, text_part(msg)
    return found.group(1)


def verify_address(d, box, account, after=0):
    """Follows the verification mail of an account (the (after+1)-th one)."""
    msg = box.wait_one(account.email, "email-verification", after=after)
    resp = d.post("/api/v1/auth/email/verify", json={"token": mail_token(msg)})
    assert resp.status_code == 204, resp.text
