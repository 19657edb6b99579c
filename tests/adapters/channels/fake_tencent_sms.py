"""Tencent Cloud SMS (API 2021-01-11) faked on loopback, checking every request's signature
itself; shared by the channel's tests and the feedback pull's.

The fake's check is written from Tencent Cloud's description of signature v3
(TC3-HMAC-SHA256, "签名方法 v3"), not from the SDK's code: the canonical request is the method,
the URI `/`, the query string (empty for a POST), the signed headers (at least `content-type` and
`host`; key and value lower-case and trimmed, sorted, `key:value`), their keys joined by `;`,
and the SHA-256 of the body; the string to sign is the algorithm, the request's timestamp, the
credential scope `<UTC date>/sms/tc3_request` and the SHA-256 of the canonical request; the
signing key is HMAC-SHA256 chained from `"TC3" + SecretKey` over the date, the service and
`tc3_request`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import itertools
import json
import re

from tests.adapters.channels.conftest import LoopbackAPI, Seen

SECRET_ID = "AKIDfakeSecretId0123456789"
SECRET_KEY = "FaKeSeCrEtKeY-0123456789abcd"
APP_ID = "1400006666"
SIGN_NAME = "回访测试"
TEMPLATE = "1234567"
UTC = dt.UTC


# --- the fake API -------------------------------------------------------------------------------


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def signature_problem(seen: Seen, secrets: dict[str, str]) -> tuple[str, str] | None:
    """(code, message) when the request is not signed as TC3-HMAC-SHA256 says, else None."""
    match = re.fullmatch(
        r"TC3-HMAC-SHA256 Credential=([^/]+)/(\d{4}-\d{2}-\d{2})/([a-z]+)/tc3_request, "
        r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})",
        seen.headers.get("authorization", ""),
    )
    if match is None:
        return "AuthFailure.SignatureFailure", "The provided credentials could not be validated."
    secret_id, date, service, signed, signature = match.groups()
    if secret_id not in secrets:
        return "AuthFailure.SecretIdNotFound", f"The SecretId {secret_id} is not found."
    timestamp = int(seen.headers.get("x-tc-timestamp", "0"))
    if abs(dt.datetime.now(UTC).timestamp() - timestamp) > 300:
        return "AuthFailure.SignatureExpire", "Signature expired."
    names = signed.split(";")
    if names != sorted(names) or not {"content-type", "host"} <= set(names):
        return "AuthFailure.SignatureFailure", "content-type and host must be signed"
    if date != dt.datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d") or service != "sms":
        return "AuthFailure.SignatureFailure", "the credential scope is not the request's"
    canonical = "\n".join(
        [
            seen.method,
            "/",
            seen.path.partition("?")[2] if seen.method == "GET" else "",
            "".join(f"{n}:{seen.headers.get(n, '').strip().lower()}\n" for n in names),
            signed,
            hashlib.sha256(seen.body).hexdigest(),
        ]
    )
    scope = f"{date}/{service}/tc3_request"
    to_sign = "\n".join(
        ["TC3-HMAC-SHA256", str(timestamp), scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = _hmac(_hmac(_hmac(("TC3" + secrets[secret_id]).encode(), date), service), "tc3_request")
    if not hmac.compare_digest(
        hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest(), signature
    ):
        return "AuthFailure.SignatureFailure", "The provided credentials could not be validated."
    return None


class FakeSmsApi:
    """The SMS API on loopback: SendSms answers per number (`answers`: a number's code and
    message, default Ok) or for the whole request (`refuse`: a code); PullSmsSendStatus and
    PullSmsReplyStatus hand out `reports` and `replies`, each once, `Limit` at a time."""

    def __init__(self, echo: bool = False) -> None:
        self.secrets = {SECRET_ID: SECRET_KEY}
        self.echo = echo  # an error message that repeats the credentials
        self.answers: dict[str, tuple[str, str]] = {}
        self.refuse: str | None = None
        self.status: int | None = None  # answer every request with this HTTP status instead
        self.reports: list[dict] = []
        self.replies: list[dict] = []
        self.sent: list[dict] = []  # the SendSms bodies that passed the check
        self.answered: list[str] = []
        self.serials = itertools.count(1)
        self.api = LoopbackAPI(self.handle)

    def handle(self, seen: Seen) -> tuple[int, dict[str, str], bytes]:
        if self.status is not None:
            return self.status, {"Content-Type": "text/html"}, b"<html>bad gateway</html>"
        problem = signature_problem(seen, self.secrets)
        if problem is not None:
            return self._error(*problem)
        body = json.loads(seen.body)
        action = seen.headers.get("x-tc-action")
        if action == "SendSms":
            if body.get("SmsSdkAppId") != APP_ID:
                return self._error("UnauthorizedOperation.SmsSdkAppIdVerifyFail", "wrong app")
            self.sent.append(body)
            if self.refuse:
                return self._error(self.refuse, "refused for the whole request")
            statuses = []
            for number in body["PhoneNumberSet"]:
                code, text = self.answers.get(number, ("Ok", "send success"))
                if self.echo:
                    text += f" {SECRET_ID} {SECRET_KEY}"
                statuses.append(
                    {
                        "SerialNo": f"2028:{next(self.serials):06d}" if code == "Ok" else "",
                        "PhoneNumber": number,
                        "Fee": 1 if code == "Ok" else 0,
                        "SessionContext": body.get("SessionContext", ""),
                        "Code": code,
                        "Message": text,
                        "IsoCode": "CN",
                    }
                )
            return self._ok({"SendStatusSet": statuses})
        if action in ("PullSmsSendStatus", "PullSmsReplyStatus"):
            queue = self.reports if action == "PullSmsSendStatus" else self.replies
            items = queue[: body["Limit"]]
            del queue[: body["Limit"]]
            return self._ok({f"{action}Set": items})
        return self._error("InvalidAction", str(action))

    def _ok(self, response: dict) -> tuple[int, dict[str, str], bytes]:
        return self._json({"Response": {**response, "RequestId": "req-1"}})

    def _error(self, code: str, text: str) -> tuple[int, dict[str, str], bytes]:
        if self.echo:
            text += f" (SecretId {SECRET_ID}, SecretKey {SECRET_KEY})"
        return self._json(
            {"Response": {"Error": {"Code": code, "Message": text}, "RequestId": "r"}}
        )

    def _json(self, body: dict) -> tuple[int, dict[str, str], bytes]:
        self.answered.append(json.dumps(body, ensure_ascii=False))
        return 200, {"Content-Type": "application/json"}, self.answered[-1].encode()
