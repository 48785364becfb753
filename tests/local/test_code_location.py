"""GetFunction's ``Code.Location``: a presigned URL that downloads the deployment package
(https://docs.aws.amazon.com/lambda/latest/api/API_FunctionCodeLocation.html), fetched with a
plain ``urllib.request.urlopen`` as one fetches AWS's; forged, tampered, expired and
other-function URLs are refused and serve nothing."""

from __future__ import annotations

import base64
import hashlib
import io
import urllib.error
import urllib.request
import zipfile
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit, urlencode

import pytest

from lambdarun.local.code_location import CodeLocations
from lambdarun.local.model import Function, Registry
from lambdarun.local.testing import make_zip

pytestmark = pytest.mark.timeout(60)

SECRET_SOURCE = 'SECRET = "only-in-this-zip"\ndef handler(event, context):\n    return SECRET\n'


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 - a loopback test URL
        assert r.headers["Content-Type"] == "application/zip"
        return r.read()


def _refused(url: str, method: str = "GET") -> tuple[int, bytes]:
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10)  # noqa: S310
    return err.value.code, err.value.read()


def _with(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


def test_location_downloads_the_uploaded_zip(lam: Any, make_function: Any) -> None:
    name = make_function(SECRET_SOURCE)
    got = lam.get_function(FunctionName=name)
    url = got["Code"]["Location"]
    assert url.startswith("http://127.0.0.1:") and got["Code"]["RepositoryType"] == "S3"
    data = _get(url)
    # the package as uploaded: its SHA-256 is the function's CodeSha256
    assert base64.b64encode(hashlib.sha256(data).digest()).decode() == got["Configuration"]["CodeSha256"]
    assert zipfile.ZipFile(io.BytesIO(data)).read("app.py").decode() == SECRET_SOURCE


def test_a_version_location_keeps_that_versions_code(lam: Any, make_function: Any) -> None:
    name = make_function(SECRET_SOURCE)
    lam.publish_version(FunctionName=name)
    lam.update_function_code(FunctionName=name, ZipFile=make_zip({"app.py": "def handler(e, c):\n    return 2\n"}))
    v1 = _get(lam.get_function(FunctionName=name, Qualifier="1")["Code"]["Location"])
    assert zipfile.ZipFile(io.BytesIO(v1)).read("app.py").decode() == SECRET_SOURCE
    latest = _get(lam.get_function(FunctionName=name)["Code"]["Location"])
    assert b"return 2" in zipfile.ZipFile(io.BytesIO(latest)).read("app.py")


def test_forged_and_tampered_urls_are_refused(lam: Any, make_function: Any) -> None:
    secret = make_function(SECRET_SOURCE)
    other = make_function("def handler(e, c):\n    return 0\n")
    url = lam.get_function(FunctionName=secret)["Code"]["Location"]
    mine = lam.get_function(FunctionName=other)["Code"]["Location"]
    sig = parse_qs(urlsplit(url).query)["signature"][0]
    attacks = [
        _with(url, signature="0" * 64),                                   # forged signature
        _with(url, signature=sig[:-1] + ("0" if sig[-1] != "0" else "1")),  # one digit changed
        _with(url, expires=str(int(parse_qs(urlsplit(url).query)["expires"][0]) + 3600)),  # extended
        mine.replace(f"/{other}/", f"/{secret}/"),                        # another function's token
        url.split("?")[0],                                                # no token at all
        url.replace("/%24LATEST?", "/1?"),                                 # another version
        url.replace(f"/{secret}/", "/../"),                               # path games
    ]
    for attack in attacks:
        status, body = _refused(attack)
        assert status in (403, 404), (attack, status)
        assert b"only-in-this-zip" not in body
    status, _ = _refused(url, method="PUT")
    assert status == 405
    # a web page must not fetch it either (browser markers are refused before the token)
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(urllib.request.Request(url, headers={"Origin": "https://evil.example"}), timeout=10)  # noqa: S310
    assert err.value.code == 403 and b"only-in-this-zip" not in err.value.read()
    assert b"only-in-this-zip" in zipfile.ZipFile(io.BytesIO(_get(url))).read("app.py")  # the real one works


def test_replaced_code_invalidates_old_urls(lam: Any, make_function: Any) -> None:
    name = make_function(SECRET_SOURCE)
    old = lam.get_function(FunctionName=name)["Code"]["Location"]
    lam.update_function_code(FunctionName=name, ZipFile=make_zip({"app.py": "def handler(e, c):\n    return 3\n"}))
    assert _refused(old)[0] == 403


def test_expired_urls_are_refused(tmp_path: Any) -> None:
    """Expiry, at the signer: a URL signed with a past expiry is refused even though its
    signature is genuine (the HTTP tests above show a tampered expiry is refused)."""
    from lambdarun.local.code_location import PREFIX, Refusal

    registry = Registry("us-east-1")
    code = tmp_path / "code-x"
    code.mkdir()
    (tmp_path / "code-x.zip").write_bytes(b"PK-zip")
    fn = Function(name="f", handler="app.handler", runtime="python3.11", role="", timeout=3,
                  memory_size=128, environment={}, description="", code_dir=code, local_code=False,
                  code_sha256="sha", code_size=6, region="us-east-1")
    registry.functions["f"] = fn
    signer = CodeLocations(registry)
    good = urlsplit(signer.url(fn))
    assert signer.download(good.path, good.query) == b"PK-zip"
    expired = urlsplit(signer.url(fn, ttl=-1))
    with pytest.raises(Refusal) as err:
        signer.download(expired.path, expired.query)
    assert (err.value.status, err.value.message) == (403, "Request has expired")
    assert good.path.startswith(PREFIX)
    # another service's key (a restart) does not accept this one's URLs
    with pytest.raises(Refusal):
        CodeLocations(registry).download(good.path, good.query)
