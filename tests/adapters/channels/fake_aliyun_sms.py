"""Alibaba Cloud SMS (Dysmsapi 2017-05-25) faked on loopback, checking every request's signature
itself; shared by the channel's tests and the feedback pull's.

The fake's check is written from Alibaba Cloud's description of signature V3
(ACS3-HMAC-SHA256, "V3版本请求体&签名机制"), not from the SDK's code: the canonical request is
the method, the URI, the query parameters sorted by name and percent-encoded by RFC 3986, the
signed headers (`host`, `content-type` and every `x-acs-*`, lower-case, sorted, `name:value`),
their names joined by `;`, and the SHA-256 of the body; the string to sign is the algorithm
and the SHA-256 of that; the signature the HMAC-SHA256 of it under the access key secret.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import itertools
import json
import re
from urllib.parse import parse_qsl, quote, urlsplit
from zoneinfo import ZoneInfo

from tests.adapters.channels.conftest import LoopbackAPI, Seen

KEY_ID = "LTAI5tFakeKeyId0001"
KEY_SECRET = "fAkE-SeCrEt-0123456789abcdefXYZ"
SIGN_NAME = "回访测试"
TEMPLATE = "SMS_123456789"
BEIJING = ZoneInfo("Asia/Shanghai")


# --- the fake API -------------------------------------------------------------------------------


def _encode(text: str) -> str:
    return quote(text, safe="-_.~")  # RFC 3986: unreserved characters stay, the rest %XX


def signature_problem(seen: Seen, secrets: dict[str, str]) -> tuple[str, str] | None:
    """(code, message) when the request is not signed as ACS3-HMAC-SHA256 says, else None."""
    auth = seen.headers.get("authorization", "")
    match = re.fullmatch(
        r"ACS3-HMAC-SHA256 Credential=([^,]+),SignedHeaders=([^,]+),Signature=([0-9a-f]{64})",
        auth,
    )
    if match is None:
        return "IncompleteSignature", "The request signature does not conform to standards."
    key_id, signed, signature = match.groups()
    if key_id not in secrets:
        return "InvalidAccessKeyId.NotFound", f"Specified access key is not found: {key_id}"
    names = signed.split(";")
    must = {"host"} | {h for h in seen.headers if h.startswith("x-acs-") or h == "content-type"}
    if names != sorted(names) or not must <= set(names):
        return "IncompleteSignature", f"these headers must be signed: {sorted(must - set(names))}"
    payload = hashlib.sha256(seen.body).hexdigest()
    if seen.headers.get("x-acs-content-sha256") != payload:
        return "InvalidParameter", "x-acs-content-sha256 is not the body's hash"
    url = urlsplit(seen.path)
    query = sorted((_encode(k), _encode(v)) for k, v in parse_qsl(url.query, True))
    canonical = "\n".join(
        [
            seen.method,
            _encode(url.path or "/").replace("%2F", "/"),
            "&".join(f"{k}={v}" for k, v in query),
            "".join(f"{n}:{seen.headers.get(n, '').strip()}\n" for n in names),
            signed,
            payload,
        ]
    )
    to_sign = "ACS3-HMAC-SHA256\n" + hashlib.sha256(canonical.encode()).hexdigest()
    expected = hmac.new(secrets[key_id].encode(), to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        return "SignatureDoesNotMatch", "Specified signature is not matched with our calculation."
    sent_at = dt.datetime.strptime(seen.headers.get("x-acs-date", ""), "%Y-%m-%dT%H:%M:%SZ")
    if abs(dt.datetime.now(dt.UTC).replace(tzinfo=None) - sent_at) > dt.timedelta(minutes=15):
        return "SignatureExpired", "x-acs-date is more than 15 minutes off"
    return None


class FakeDysmsapi:
    """Dysmsapi 2017-05-25 on loopback: SendSms answers per number (`answers`: a number's code
    and message; default OK), QuerySendDetails reads `details` ((number, yyyymmdd) -> DTOs)."""

    def __init__(self, secrets: dict[str, str] | None = None, echo: bool = False) -> None:
        self.secrets = {KEY_ID: KEY_SECRET} if secrets is None else secrets
        self.echo = echo  # an error message that repeats the credentials, as a careless API might
        self.answers: dict[str, tuple[str, str]] = {}
        self.status: int | None = None  # answer every request with this HTTP status instead
        self.details: dict[tuple[str, str], list[dict]] = {}
        self.sent: list[dict[str, str]] = []  # the SendSms requests that passed the check
        self.answered: list[str] = []  # every answer's body
        self.biz_ids = itertools.count(1)
        self.api = LoopbackAPI(self.handle)

    def handle(self, seen: Seen) -> tuple[int, dict[str, str], bytes]:
        if self.status is not None:
            return self._json(self.status, {"Code": "ServiceUnavailable", "Message": "busy"})
        problem = signature_problem(seen, self.secrets)
        if problem is not None:
            code, text = problem
            if self.echo:
                text += f" (AccessKeyId {KEY_ID}, secret {KEY_SECRET}, wanted {KEY_SECRET!r})"
            status = 404 if code.startswith("InvalidAccessKeyId") else 400
            return self._json(status, {"Code": code, "Message": text, "RequestId": "R-1"})
        params = dict(parse_qsl(urlsplit(seen.path).query, True))
        action = seen.headers.get("x-acs-action")
        if action == "SendSms":
            self.sent.append(params)
            code, text = self.answers.get(params["PhoneNumbers"], ("OK", "OK"))
            if self.echo:
                text += f" {KEY_ID} {KEY_SECRET}"
            body = {"Code": code, "Message": text, "RequestId": "R-2"}
            if code == "OK":
                body["BizId"] = f"90{next(self.biz_ids):04d}^0"
            return self._json(200, body)
        if action == "QuerySendDetails":
            found = self.details.get((params["PhoneNumber"], params["SendDate"]), [])
            size, page = int(params["PageSize"]), int(params["CurrentPage"])
            body = {
                "Code": "OK",
                "Message": "OK",
                "TotalCount": len(found),
                "SmsSendDetailDTOs": {"SmsSendDetailDTO": found[(page - 1) * size : page * size]},
            }
            return self._json(200, body)
        return self._json(400, {"Code": "InvalidAction.NotFound", "Message": str(action)})

    def _json(self, status: int, body: dict) -> tuple[int, dict[str, str], bytes]:
        self.answered.append(json.dumps(body, ensure_ascii=False))
        headers = {"Content-Type": "application/json;charset=utf-8"}
        return status, headers, self.answered[-1].encode()
