"""A client's audit of the REST API (third round): query parameters sent as form fields, the study's
body region in JSON, CSV and the CLI, and DICOM studies that keep patient data out of every answer.

Uses the packaged default model (fracture and region heads) on the real app, FracAtlas radiographs
read from ../shared/data/fracatlas (never copied into the repository) and the real CLI.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from fracsight.api import ApiSettings, create_app
from fracsight.cli import app as cli_app
from fracsight.inference import list_bundles

pytestmark = [
    pytest.mark.fracatlas,
    pytest.mark.skipif(not list_bundles(), reason="the packaged default model is not installed yet"),
]

HAND = "IMG0000006.jpg"  # FracAtlas: hand, not fractured
HIP = "IMG0000041.jpg"  # FracAtlas: hip, not fractured


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(ApiSettings())) as c:
        yield c


@pytest.fixture(scope="module")
def views(fracatlas_dir: Path) -> dict[str, Path]:
    """A hand and a hip radiograph: views that read as different body regions."""
    folder = fracatlas_dir / "images" / "Non_fractured"
    return {"hand.jpg": folder / HAND, "hip.jpg": folder / HIP}


def _files(named: dict[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (name, data, "application/octet-stream")) for name, data in named.items()]


def _schema(client: TestClient, name: str) -> dict[str, Any]:
    return client.get("/openapi.json").json()["components"]["schemas"][name]


# ---- query parameters sent as form fields --------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "names"),
    [
        ({"study": "true"}, ["study"]),
        ({"operating_point": "triage"}, ["operating_point"]),
        ({"format": "csv", "Overlay": "true"}, ["format", "Overlay"]),
        ({"operating-point": "triage"}, ["operating-point"]),
    ],
)
def test_query_parameters_sent_as_form_fields_are_refused(
    client: TestClient, views: dict[str, Path], fields: dict[str, str], names: list[str]
) -> None:
    """``curl -F files=@a.jpg -F study=true`` (or a client's form data) put the parameter in the body,
    where nothing read it: before, 200 without a study (or at the default operating point, or JSON
    for a CSV asked for), an answer that looked like the one asked for."""
    sent = _files({"hand.jpg": views["hand.jpg"].read_bytes()})
    r = client.post("/v1/predict", files=sent, data=fields)
    assert r.status_code == 422, r.text[:300]
    error = r.json()["error"]
    assert error["code"] == "validation_error"
    assert [d["loc"] for d in error["details"]] == [["body", n] for n in names]
    assert "query parameter" in error["message"] and "/v1/predict?" in error["message"]
    # the same parameters in the URL are taken
    query = "&".join(
        f"{k.lower().replace('-', '_')}={v}" for k, v in fields.items() if k.lower() != "overlay"
    )
    assert client.post(f"/v1/predict?{query}", files=sent).status_code == 200


def test_other_form_fields_are_still_ignored(client: TestClient, views: dict[str, Path]) -> None:
    """Fields that are no parameter of /v1/predict (a client's own metadata) stay harmless."""
    sent = _files({"hand.jpg": views["hand.jpg"].read_bytes()})
    r = client.post("/v1/predict", files=sent, data={"note": "left wrist", "studyname": "x"})
    assert r.status_code == 200, r.text[:300]
    assert r.json()["studies"] == []


# ---- the study's body region: JSON, CSV and the CLI agree --------------------------------------------
def _cli(args: list[str]) -> str:
    result = CliRunner().invoke(cli_app, ["predict", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_study_region_is_the_same_in_json_csv_and_the_cli(
    client: TestClient, views: dict[str, Path], tmp_path: Path
) -> None:
    named = {name: path.read_bytes() for name, path in views.items()}
    r = client.post("/v1/predict?study=true", files=_files(named))
    assert r.status_code == 200, r.text[:300]
    body = r.json()
    (study,) = body["studies"]
    assert [i["region"] for i in body["images"]] == ["hand", "hip"]
    # the mean of the views' region probabilities, and its likeliest region
    for region, p in study["region_probabilities"].items():
        mean = sum(i["region_probabilities"][region] for i in body["images"]) / 2
        assert p == pytest.approx(mean, abs=2e-6)
    assert study["region"] == max(study["region_probabilities"], key=study["region_probabilities"].get)
    differ = [w for w in study["warnings"] if "different body regions" in w]
    assert differ == [
        "the views read as different body regions (hand: hand.jpg; hip: hip.jpg): are they one "
        f"examination? The study's region is the likeliest over all of them, {study['region']}"
    ]
    # every field of the study is one the schema declares, and the required ones are there
    schema = _schema(client, "StudyResult")
    assert set(study) <= set(schema["properties"]) and set(schema["required"]) <= set(study)

    # CSV: the study row has the study's region and its probability (docs/api.md said it was blank)
    r = client.post("/v1/predict?study=true&format=csv", files=_files(named))
    rows = list(csv.DictReader(io.StringIO(r.text)))
    (row,) = [row for row in rows if row["kind"] == "study"]
    assert row["region"] == study["region"]
    assert row["region_probability"] == f"{study['region_probabilities'][study['region']]:.4f}"
    assert differ[0] in row["warnings"]

    # the CLI, on the same files: the same values, field names and CSV columns
    for name, data in named.items():
        (tmp_path / name).write_bytes(data)
    paths = [str(tmp_path / name) for name in named]
    cli = json.loads(_cli(["--study", "--json", *paths]))
    (cli_study,) = cli["studies"]
    assert cli_study == study
    assert [{k: v for k, v in i.items()} for i in cli["images"]] == body["images"]
    cli_rows = list(csv.DictReader(io.StringIO(_cli(["--study", "--csv", "-", *paths]))))
    assert list(cli_rows[0]) == list(rows[0])
    assert [x for x in cli_rows if x["kind"] == "study"] == [row]


def test_one_region_study_has_no_region_warning(client: TestClient, views: dict[str, Path]) -> None:
    data = views["hand.jpg"].read_bytes()
    r = client.post("/v1/predict?study=true", files=_files({"a.jpg": data}))
    (study,) = r.json()["studies"]
    assert study["region"] == "hand" and study["warnings"] == [] and study["reliable"] is True


# ---- DICOM views of one study: the identifiers stay out of every answer ---------------------------------
def test_dicom_study_answers_carry_no_patient_identifiers(
    client: TestClient, views: dict[str, Path], tmp_path: Path
) -> None:
    pytest.importorskip("pydicom")
    from dicom_support import PATIENT, make_radiograph_dicom

    hand = make_radiograph_dicom(views["hand.jpg"], tmp_path / "hand.dcm", body_part="HIP")
    hip = make_radiograph_dicom(views["hip.jpg"], tmp_path / "hip.dcm", body_part="HIP", modality="DX")
    bad = tmp_path / "ct.dcm"
    from dicom_support import make_ct_dicom

    make_ct_dicom(bad)
    named = {p.name: p.read_bytes() for p in (hand, hip, bad)}
    for value in PATIENT.values():
        assert value.encode() in named["hand.dcm"]  # planted, so that the check below can fail
    answers = []
    for query in ("study=true", "study=true&format=csv", "study=true&overlay=true"):
        r = client.post(f"/v1/predict?{query}", files=_files(named))
        assert r.status_code == 200, r.text[:300]
        if "overlay" in query:  # the PNGs' base64 may hold any short string (FS1) by chance
            overlaid = r.json()
            assert all(i.pop("overlay_png_base64", "") for i in overlaid["images"][:2])
            answers.append(json.dumps(overlaid))
        else:
            answers.append(r.text)
    body = json.loads(answers[0])
    assert body["images"][2]["error"]["code"] == "unsupported_modality"
    (study,) = body["studies"]
    assert study["unread_images"] == ["ct.dcm"] and study["reliable"] is False
    assert any("different body regions" in w for w in study["warnings"])
    assert any("Body Part Examined HIP" in w for w in body["images"][0]["warnings"])
    for text in answers:
        for keyword, value in PATIENT.items():
            if len(value) > 2:  # PatientSex "O" is a letter of every answer
                assert value not in text, keyword
    # the refusal of a request of bad DICOMs alone says no more
    r = client.post("/v1/predict?study=true", files=_files({"ct.dcm": named["ct.dcm"]}))
    assert r.status_code == 422 and r.json()["error"]["code"] == "unsupported_modality"
    assert all(value not in r.text for value in PATIENT.values() if len(value) > 2)


def test_a_failed_file_has_the_same_code_and_message_in_the_cli_and_the_api(
    client: TestClient, views: dict[str, Path], tmp_path: Path
) -> None:
    """docs/api.md, "Compared with fracsight predict --json": the same code; the CLI's message names
    the path it was given, the API's the file name."""
    note = tmp_path / "notes.png"
    note.write_text("not an image\n")
    good = tmp_path / "hand.jpg"
    good.write_bytes(views["hand.jpg"].read_bytes())
    r = client.post(
        "/v1/predict", files=_files({"hand.jpg": good.read_bytes(), "notes.png": note.read_bytes()})
    )
    api_error = r.json()["images"][1]
    result = CliRunner().invoke(cli_app, ["predict", "--json", str(good), str(note)])
    assert result.exit_code == 1, result.output  # a file could not be read
    cli_error = json.loads(result.stdout)["images"][1]
    assert api_error["error"]["code"] == cli_error["error_code"] == "unsupported_format"
    assert api_error["error"]["message"] == cli_error["error"].replace(str(note), note.name)
    assert r.json()["model"] == {
        "name": json.loads(result.stdout)["model"].rsplit(" v", 1)[0],
        "version": json.loads(result.stdout)["model"].rsplit(" v", 1)[1],
    }
