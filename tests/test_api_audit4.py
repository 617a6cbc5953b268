"""REST API as an integrator's client sends it (fourth pass): long file names and header limits, and
malformed bodies that must not write bare parser warnings to the server's log."""

from __future__ import annotations

import base64
import binascii
import logging
import urllib.parse
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fracsight.api import ApiSettings, create_app
from test_api import png_bytes

BOUNDARY = "fracsight-audit4-boundary"


@pytest.fixture(scope="module")
def client(tiny_bundle: Path) -> Iterator[TestClient]:
    with TestClient(create_app(ApiSettings(model=str(tiny_bundle)))) as c:
        yield c


def _post_part(client: TestClient, disposition: str, data: bytes) -> dict:
    body = (
        f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\nContent-Type: image/png\r\n\r\n".encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    r = client.post("/v1/predict", content=body, headers=headers)
    return {"status": r.status_code, **r.json()}


def test_a_long_file_name_is_predicted_and_shortened(client: TestClient) -> None:
    """A client that sends its full path (or a long generated name) as the file name: python-multipart
    refused any header line over 4 KiB with a bare 400 'Maximum header size exceeded'."""
    path = "D:\\\\PACS\\\\export\\\\" + "x" * 5000 + "_wrist.png"
    answer = _post_part(client, f'form-data; name="files"; filename="{path}"', png_bytes())
    assert answer["status"] == 200, answer
    source = answer["images"][0]["source"]
    assert len(source) == 200 and set(source) == {"x"}  # the folder part gone, cut to 200 characters


def test_a_long_non_ascii_name_as_dotnet_sends_it_is_read(client: TestClient) -> None:
    """.NET's HttpClient sends a non-ASCII name twice, as a MIME encoded word and as `filename*`
    (percent encoded): 400 CJK characters make a header line of about 5 KB."""
    name = "骨" * 400 + ".png"
    utf8 = name.encode("utf-8")
    word = "=?utf-8?B?" + base64.b64encode(utf8).decode("ascii") + "?="
    disposition = f"form-data; name=files; filename=\"{word}\"; filename*=utf-8''{urllib.parse.quote(utf8)}"
    assert 4 * 1024 < len(disposition) < 16 * 1024
    answer = _post_part(client, disposition, png_bytes())
    assert answer["status"] == 200, answer
    assert answer["images"][0]["source"] == name[:200]


@pytest.mark.parametrize("size", [17_000, 200_000])
def test_a_part_header_over_16_kib_is_refused_with_a_clear_message(client: TestClient, size: int) -> None:
    answer = _post_part(client, f'form-data; name="files"; filename="{"y" * size}.png"', png_bytes())
    assert answer["status"] == 400
    assert answer["error"]["code"] == "malformed_multipart"
    assert "a multipart part header is longer than 16,384 bytes" in answer["error"]["message"]


def test_a_body_without_its_boundary_is_told_so(client: TestClient) -> None:
    headers = {"Content-Type": "multipart/form-data; boundary=zzz"}
    r = client.post("/v1/predict", content=b"--abc\r\n\r\nnot the boundary\r\n", headers=headers)
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]  # was "... Expected boundary character 122, got 97 at index 2"
    assert message.startswith("the multipart body cannot be parsed: ")
    assert message.endswith("the body does not begin with the boundary its Content-Type names")


def test_a_folded_part_header_is_told_so(client: TestClient) -> None:
    """An obsolete folded header line: python-multipart's "Found invalid character 32 in header at 57"."""
    answer = _post_part(client, 'form-data; name="files";\r\n filename="a.png"', png_bytes())
    assert answer["status"] == 400 and answer["error"]["code"] == "malformed_multipart"
    assert "give each header on one line" in answer["error"]["message"], answer


def test_a_bare_cr_in_a_part_header_is_told_so(client: TestClient) -> None:
    """A file name holding CR: python-multipart's "Did not find LF character at end of header (found 98)"."""
    answer = _post_part(client, 'form-data; name="files"; filename="a\rb.png"', png_bytes())
    assert answer["status"] == 400 and answer["error"]["code"] == "malformed_multipart"
    assert "holds a bare CR" in answer["error"]["message"] and "found 98" not in answer["error"]["message"]


@pytest.mark.parametrize("chunk", [1, 7, 100_000])
def test_a_preamble_before_the_first_boundary_is_ignored(client: TestClient, chunk: int) -> None:
    """RFC 2046 lets a multipart body begin with a preamble, which a reader ignores (a few mail-library
    based clients write one); it was refused: "the body does not begin with the boundary ..."."""
    image = png_bytes()
    part = (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    body = b"This is a multi-part message in MIME format.\r\n" + part
    pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)]  # the boundary cut anywhere
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    with_preamble = client.post("/v1/predict", content=iter(pieces), headers=headers)
    plain = client.post("/v1/predict", content=part, headers=headers)
    assert with_preamble.status_code == plain.status_code == 200, with_preamble.text
    assert with_preamble.json()["images"] == plain.json()["images"]


def test_a_malformed_body_leaves_no_parser_warning_in_the_log(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The client gets the 400; the server's stderr got a bare 'warning: Expected boundary character
    122, got 99 at index 4' per such body as well, without saying which request."""
    caplog.set_level(logging.DEBUG)  # the root logger's level; python-multipart's own stays at ERROR
    headers = {"Content-Type": "multipart/form-data; boundary=zzz"}
    r = client.post("/v1/predict", content=b"--abc\r\n\r\nnot the boundary\r\n", headers=headers)
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_multipart"
    assert [rec.getMessage() for rec in caplog.records if rec.name.startswith("python_multipart")] == []


def test_lf_only_line_ends_are_told_to_be_crlf(client: TestClient) -> None:
    """A body written by hand (a shell here-document) has LF line ends: the 400 said only 'Did not
    find CR at end of boundary (27)'."""
    body = f"--{BOUNDARY}\nContent-Disposition: form-data; name=files; filename=a.png\n\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    r = client.post(
        "/v1/predict", content=body + png_bytes() + f"\n--{BOUNDARY}--\n".encode(), headers=headers
    )
    assert r.status_code == 400, r.text
    assert "end in CRLF (\\r\\n), not LF alone" in r.json()["error"]["message"]


# ---- Content-Transfer-Encoding: a part sent base64 was refused as "a text file" ---------------------------
@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("base64", base64.encodebytes),
        ("BASE64", base64.b64encode),
        ("quoted-printable", partial(binascii.b2a_qp, istext=False)),
    ],
)
def test_a_transfer_encoded_part_is_decoded_and_predicted(
    client: TestClient, encoding: str, encode: Callable[[bytes], bytes]
) -> None:
    image = png_bytes()
    plain = _post_part(client, 'form-data; name="files"; filename="a.png"', image)
    disposition = f'form-data; name="files"; filename="a.png"\r\nContent-Transfer-Encoding: {encoding}'
    answer = _post_part(client, disposition, encode(image))
    assert answer["status"] == 200, answer  # was 415 unsupported_format: "looks like a text file"
    assert answer["images"] == plain["images"]


@pytest.mark.parametrize(
    ("encoding", "data", "said"),
    [
        ("x-uuencode", b"begin 644 a.png", "Content-Transfer-Encoding 'x-uuencode' is not supported"),
        ("base64", b"iVBORw0KGgo", "a.png: its base64 content cannot be decoded"),
        # characters outside the alphabet were dropped: `!!!!` was "the file is empty (0 bytes)",
        # and a PNG sent raw under a base64 label was read as whatever its letters decoded to
        ("base64", b"!!!!", "a.png: its base64 content cannot be decoded"),
        ("base64", png_bytes(), "a.png: its base64 content cannot be decoded"),
    ],
)
def test_a_transfer_encoding_that_cannot_be_decoded_is_a_400(
    client: TestClient, encoding: str, data: bytes, said: str
) -> None:
    disposition = f'form-data; name="files"; filename="a.png"\r\nContent-Transfer-Encoding: {encoding}'
    answer = _post_part(client, disposition, data)
    assert answer["status"] == 400, answer
    assert answer["error"]["code"] == "malformed_multipart"
    assert said in answer["error"]["message"]


def test_the_401_and_its_www_authenticate_header_are_in_the_schema(tiny_bundle: Path) -> None:
    """A client generated from the schema learns of the header a 401 carries (RFC 6750)."""
    token = "tok-" + "f00dfeed" * 4
    with TestClient(create_app(ApiSettings(model=str(tiny_bundle), api_tokens=token))) as c:
        refused = c.get("/v1/model")
        schema = c.get("/openapi.json", headers={"Authorization": f"Bearer {token}"}).json()
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
    for path in ("/v1/predict", "/v1/model", "/metrics"):
        for operation in schema["paths"][path].values():
            assert "WWW-Authenticate" in operation["responses"]["401"]["headers"], path


@pytest.mark.parametrize(
    ("raw", "source"),
    [
        ("Röntgen.png".encode(), "Röntgen.png"),  # UTF-8, as browsers, curl and httpx send it
        ("Röntgen.png".encode("cp1252"), "Röntgen.png"),  # the platform's bytes of an older client
        ("Pré‑op €.png".encode("cp1252", "replace"), "Pré?op €.png"),
    ],
)
def test_a_file_name_in_utf8_or_windows_1252_is_echoed_as_sent(
    client: TestClient, raw: bytes, source: str
) -> None:
    body = (
        f"--{BOUNDARY}\r\n".encode()
        + b'Content-Disposition: form-data; name="files"; filename="'
        + raw
        + b'"\r\n\r\n'
        + png_bytes()
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    r = client.post("/v1/predict", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["images"][0]["source"] == source  # was "R\ufffdntgen.png" for the Windows-1252 one
