"""``blindinpaint serve``: the HTTP API through FastAPI's TestClient.

The models are randomly initialised micro HCL / GDN networks written in hub's export format
(as in test_api.py), so no trained weights are needed; the assertions compare every answer with
a direct :class:`~blindinpaint.api.Restorer` call on the same pixels.
"""

from __future__ import annotations

import base64
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx (test extra)")
from fastapi.testclient import TestClient  # noqa: E402

from blindinpaint import hub  # noqa: E402
from blindinpaint.api import Restorer  # noqa: E402
from blindinpaint.cli import build_parser, main  # noqa: E402
from blindinpaint.models.gdn import GDN, GDNConfig  # noqa: E402
from blindinpaint.models.hcl import HCLNet  # noqa: E402
from blindinpaint.serve.app import create_app  # noqa: E402

from helpers import micro_hcl_config, write_export  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # fixture in conftest.py


# ----------------------------------------------------------------------------- helpers
def make_exports(root: Path) -> dict[str, Path]:
    """A micro HCL (blind; tau = 0.01 spreads its P(hole) over [0, 1]) and a micro GDN."""
    torch.manual_seed(0)
    hcl_cfg = micro_hcl_config()
    gdn_cfg = GDNConfig(base_channels=4, res_blocks=1, detector_channels=4)
    return {"hcl": write_export(HCLNet(hcl_cfg), "hcl", hcl_cfg, root / "hcl"),
            "gdn": write_export(GDN(gdn_cfg), "gdn", gdn_cfg, root / "gdn")}


def corrupted_image(width: int = 48, height: int = 40, seed: int = 0) -> np.ndarray:
    """A smooth colour ramp with a block of random noise: H x W x 3 uint8."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.0, 1.0, width)[None, :, None] * np.array([0.3, 0.6, 0.9])
    img = np.tile(ramp, (height, 1, 1))
    img[height // 5: height // 2, width // 4: 3 * width // 4] = rng.random((height // 2 - height // 5, width // 2, 3))
    return np.rint(img * 255).astype(np.uint8)


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def decode(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def upload(pixels_or_bytes, name: str = "image.png", content_type: str = "image/png"):
    data = pixels_or_bytes if isinstance(pixels_or_bytes, bytes) else png_bytes(pixels_or_bytes)
    return (name, data, content_type)


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    return make_exports(tmp_path_factory.mktemp("serve_exports"))


@pytest.fixture(scope="module")
def restorer(exports) -> Restorer:
    return Restorer.from_pretrained(exports["hcl"], device="cpu")


@pytest.fixture(scope="module")
def gdn(exports) -> Restorer:
    return Restorer.from_pretrained(exports["gdn"], device="cpu")


@pytest.fixture(scope="module")
def client(restorer, exports):
    app = create_app(model=restorer, inpaint_model=exports["gdn"], max_upload_mb=0.5, max_pixels=300 * 300,
                     device="cpu")
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def bare_client(tmp_path_factory):
    """A server whose --model does not exist and with no inpainting model."""
    missing = tmp_path_factory.mktemp("nothing") / "no_such_model"
    with TestClient(create_app(model=missing, inpaint_model=None, device="cpu")) as c:
        yield c


# ----------------------------------------------------------------------------- page, status
def test_page_static_files_and_api_reference(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/static/app.js" in page.text and "/static/style.css" in page.text
    assert "http://" not in page.text and "https://" not in page.text          # nothing from a CDN
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name in ("app.js", "style.css", "docs.js"):
        assert client.get(f"/static/{name}").status_code == 200
    # only the fixed set of page files: nothing a client names reaches the disk
    for bad in ("/static/..%2Fapp.py", "/static/app.py", "/static/%2e%2e/__init__.py", "/static/..%2F..%2Fapi.py"):
        answer = client.get(bad)
        assert answer.status_code == 404 and "import" not in answer.text
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/static/docs.js" in docs.text and "cdn" not in docs.text.lower()
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/detect", "/api/restore", "/api/inpaint", "/api/inspect", "/api/models", "/healthz"):
        assert path in paths


def test_healthz_and_models(client, bare_client):
    assert client.get("/healthz").json() == {"status": "ok", "version": client.get("/healthz").json()["version"],
                                             "restore_model": True, "inpaint_model": True}
    models = client.get("/api/models").json()
    assert models["restore"]["loaded"] and models["restore"]["task"] == "hcl" and models["restore"]["blind"]
    assert models["inpaint"]["loaded"] and models["inpaint"]["task"] == "gdn"
    assert models["limits"] == {"max_upload_mb": 0.5, "max_pixels": 90000}
    assert all("path" not in m for m in models["installed"])        # no server paths handed out
    bare = bare_client.get("/healthz").json()
    assert bare["status"] == "ok" and not bare["restore_model"] and not bare["inpaint_model"]
    assert "no_such_model" in bare_client.get("/api/models").json()["restore"]["error"]


# ----------------------------------------------------------------------------- endpoints
def test_detect_matches_the_python_api(client, restorer):
    rgb = corrupted_image()
    answer = client.post("/api/detect", files={"image": upload(rgb)})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    direct = restorer.detect(rgb)
    mask, confidence = decode(body["mask"]), decode(body["confidence"])
    assert (body["width"], body["height"]) == (48, 40) and mask.shape == (40, 48) and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 255}
    assert np.array_equal(mask == 255, direct.mask) and direct.mask.any() and not direct.mask.all()
    assert np.array_equal(confidence, np.rint(direct.confidence * 255).astype(np.uint8))
    assert body["threshold"] == 0.5 and body["corrupted_fraction"] == pytest.approx(direct.mask.mean())
    low = client.post("/api/detect", files={"image": upload(rgb)}, data={"threshold": "0.2", "dilate": "1"}).json()
    assert low["threshold"] == 0.2
    assert np.array_equal(decode(low["mask"]) == 255, restorer.detect(rgb, threshold=0.2, dilate=1).mask)
    bad = client.post("/api/detect", files={"image": upload(rgb)}, data={"threshold": "1.5"})
    assert bad.status_code == 422 and "threshold" in bad.json()["detail"]


def test_restore_blind_and_with_a_mask(client, restorer):
    rgb = corrupted_image(seed=1)
    body = client.post("/api/restore", files={"image": upload(rgb)}).json()
    assert {"restored", "mask"} <= set(body)                 # names scripts outside the project rely on
    restored, mask = decode(body["restored"]), decode(body["mask"]) == 255
    direct = restorer.restore(rgb)
    assert np.array_equal(restored, direct.image) and np.array_equal(mask, direct.mask)
    assert np.array_equal(restored[~mask], rgb[~mask]) and np.any(restored[mask] != rgb[mask])

    given = np.zeros((40, 48), np.uint8)
    given[5:15, 30:44] = 255                                  # white = restore
    body = client.post("/api/restore", files={"image": upload(rgb), "mask": upload(given, "m.png")}).json()
    restored = decode(body["restored"])
    changed = np.any(restored != rgb, axis=2)
    assert np.array_equal(decode(body["mask"]), given)
    assert not changed[given == 0].any() and changed[given == 255].mean() > 0.5
    assert np.array_equal(restored, restorer.restore(rgb, mask=given > 0).image)


def test_restore_keeps_the_alpha_of_rgba_uploads(client):
    rgb = corrupted_image(seed=2)
    alpha = np.full((40, 48), 255, np.uint8)
    alpha[:, :6] = 0
    body = client.post("/api/restore", files={"image": upload(np.dstack([rgb, alpha]))}).json()
    restored = decode(body["restored"])
    assert restored.shape == (40, 48, 4) and np.array_equal(restored[..., 3], alpha)


def test_inpaint_and_inspect_use_the_gdn_model(client, gdn):
    rgb = corrupted_image(seed=3)
    hole = np.zeros((40, 48), bool)
    hole[10:30, 4:20] = True
    body = client.post("/api/inpaint", files={"image": upload(rgb), "mask": upload(hole.astype(np.uint8) * 255)})
    assert body.status_code == 200, body.text
    restored = decode(body.json()["restored"])
    assert np.array_equal(restored, gdn.inpaint(rgb, hole).image)
    assert np.array_equal(restored[~hole], rgb[~hole]) and np.any(restored[hole] != rgb[hole])

    answer = client.post("/api/inspect", files={"image": upload(rgb)})
    assert answer.status_code == 200, answer.text
    heat = decode(answer.json()["heatmap"])
    with torch.no_grad():
        v = gdn.net.detector.artifact_prob(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0)[0, 0]
    assert heat.shape == (40, 48)
    assert np.abs(heat.astype(int) - np.rint(v.numpy() * 255).astype(int)).max() <= 1
    assert answer.json()["mean"] == pytest.approx(float(v.mean()), abs=1e-5)


def test_missing_models_answer_503_with_the_reason(client, bare_client):
    rgb = png_bytes(corrupted_image())
    for path in ("/api/detect", "/api/restore"):
        answer = bare_client.post(path, files={"image": upload(rgb)})
        assert answer.status_code == 503
        assert "not available" in answer.json()["detail"] and "no_such_model" in answer.json()["detail"]
    mask = png_bytes(np.zeros((40, 48), np.uint8))
    for path, files in (("/api/inpaint", {"image": upload(rgb), "mask": upload(mask)}),
                        ("/api/inspect", {"image": upload(rgb)})):
        answer = bare_client.post(path, files=files)
        assert answer.status_code == 503 and "--inpaint-model" in answer.json()["detail"]


def test_a_gdn_as_main_model_restores_given_masks_only(gdn):
    with TestClient(create_app(model=gdn, device="cpu")) as c:
        rgb = upload(corrupted_image())
        mask = upload(np.full((40, 48), 255, np.uint8))
        assert c.get("/api/models").json()["inpaint"]["loaded"]     # a GDN serves /api/inpaint too
        assert c.post("/api/restore", files={"image": rgb, "mask": mask}).status_code == 200
        assert c.post("/api/inpaint", files={"image": rgb, "mask": mask}).status_code == 200
        blind = c.post("/api/restore", files={"image": rgb})
        assert blind.status_code == 422 and "mask" in blind.json()["detail"]
        assert c.post("/api/detect", files={"image": rgb}).status_code == 503


# ----------------------------------------------------------------------------- bad uploads
def test_bad_uploads_get_4xx_with_a_message(client):
    rgb = corrupted_image()
    good = png_bytes(rgb)
    big = np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8)   # 160k px > 90k limit
    cases = [
        ({"image": upload(b"hello, I am not an image\n" * 4, "x.png")}, 415, "not an image"),
        ({"image": upload(b"%PDF-1.4\n1 0 obj << >> endobj\n", "x.png")}, 415, "accepted formats"),
        ({"image": upload(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "x.png")}, 415, "not an image"),
        ({"image": upload(good[: len(good) // 2])}, 422, "truncated"),
        ({"image": upload(b"")}, 422, "empty"),
        ({"image": upload(png_bytes(big))}, 413, "limit"),
        ({"image": upload(rgb), "mask": upload(np.zeros((10, 10), np.uint8))}, 422, "size"),
        ({"image": upload(rgb), "mask": upload(b"not a mask")}, 415, "mask"),
        ({"picture": upload(rgb)}, 422, "missing form field 'image'"),
        ({}, 422, "missing form field 'image'"),
    ]
    for files, status, needle in cases:
        answer = client.post("/api/restore", files=files)
        detail = answer.json()["detail"]
        assert answer.status_code == status, (files.keys(), answer.status_code, detail)
        assert isinstance(detail, str) and needle in detail and "\n" not in detail, detail
    missing_mask = client.post("/api/inpaint", files={"image": upload(rgb)})
    assert missing_mask.status_code == 422 and "missing form field 'mask'" in missing_mask.json()["detail"]
    no_form = client.post("/api/detect", content=b"{}", headers={"content-type": "application/json"})
    assert no_form.status_code == 422 and "image" in no_form.json()["detail"]


def test_upload_size_limit_is_checked_before_the_endpoint(client):
    noise = np.random.default_rng(1).integers(0, 256, (290, 290, 3), dtype=np.uint8)   # ~250 kB PNG
    blob = png_bytes(noise) * 3                                                         # > 0.5 MB body
    answer = client.post("/api/restore", files={"image": upload(blob)})
    assert answer.status_code == 413 and "0.5 MB" in answer.json()["detail"]
    # a chunked body without Content-Length is cut off at the limit as well
    chunks = iter([b"x" * 200_000] * 4)
    answer = client.post("/api/detect", content=chunks, headers={"content-type": "multipart/form-data; boundary=b"})
    assert answer.status_code == 413 and "more than the limit" in answer.json()["detail"]


def test_the_file_name_and_content_type_are_never_trusted(client, restorer):
    rgb = corrupted_image(seed=4)
    answer = client.post("/api/detect", files={"image": ("../../etc/passwd.txt", png_bytes(rgb), "text/plain")})
    assert answer.status_code == 200
    assert np.array_equal(decode(answer.json()["mask"]) == 255, restorer.detect(rgb).mask)
    jpeg = io.BytesIO()
    Image.fromarray(rgb).save(jpeg, format="JPEG", quality=95)
    answer = client.post("/api/detect", files={"image": ("photo.png", jpeg.getvalue(), "image/png")})
    assert answer.status_code == 200 and answer.json()["width"] == 48


# ----------------------------------------------------------------------------- concurrency
def test_eight_concurrent_requests_are_answered_correctly_one_at_a_time(client, restorer, monkeypatch):
    images = [corrupted_image(40 + 8 * (k % 3), 40, seed=10 + k) for k in range(8)]
    expected = [restorer.restore(img).image for img in images]
    active, peak, guard = [0], [0], threading.Lock()
    original = Restorer.restore

    def counting_restore(self, *args, **kwargs):
        with guard:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            time.sleep(0.02)  # widen the window in which an unserialised call would overlap
            return original(self, *args, **kwargs)
        finally:
            with guard:
                active[0] -= 1

    monkeypatch.setattr(Restorer, "restore", counting_restore)

    def call(k: int):
        return client.post("/api/restore", files={"image": upload(images[k], f"{k}.png")})

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(call, range(8)))
    for k, answer in enumerate(answers):
        assert answer.status_code == 200, answer.text
        assert np.array_equal(decode(answer.json()["restored"]), expected[k]), k
    assert peak[0] == 1, "inference must be serialised"


def test_busy_server_answers_503_after_the_timeout(restorer):
    app = create_app(model=restorer, device="cpu", busy_timeout=0.05)
    with TestClient(app) as c:
        app.state.server.lock.acquire()
        try:
            answer = c.post("/api/detect", files={"image": upload(corrupted_image())})
        finally:
            app.state.server.lock.release()
        assert answer.status_code == 503 and "busy" in answer.json()["detail"]
        assert c.post("/api/detect", files={"image": upload(corrupted_image())}).status_code == 200


# ----------------------------------------------------------------------------- command line
def test_cli_defaults_bind_to_localhost_and_missing_models_fail_clearly(tmp_path, monkeypatch, capsys):
    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.model, args.inpaint_model) == ("127.0.0.1", 7860, "default", "gdn")
    monkeypatch.setenv("BLINDINPAINT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(hub, "BUNDLED_DIR", tmp_path / "bundled")
    monkeypatch.chdir(tmp_path)
    assert main(["serve", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert "no bundled 'default' model" in err and "--model" in err
    assert main(["serve", "--model", str(tmp_path / "nope"), "--port", "1"]) == 2
    assert "no model" in capsys.readouterr().err


def test_missing_bundled_gdn_only_disables_the_inpainting_endpoints(tmp_path, monkeypatch, caplog):
    import uvicorn

    monkeypatch.setenv("BLINDINPAINT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(hub, "BUNDLED_DIR", tmp_path / "bundled")
    write_export(HCLNet(micro_hcl_config()), "hcl", micro_hcl_config(), tmp_path / "bundled" / "default")
    started = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.append(app))
    assert main(["serve", "--port", "1", "--device", "cpu"]) == 0     # starts without the bundled gdn
    server = started[0].state.server
    assert server.restore.restorer is not None and server.inpaint.restorer is None
    assert "/api/inpaint and /api/inspect answer 503" in caplog.text
    assert main(["serve", "--port", "1", "--inpaint-model", str(tmp_path / "nope")]) == 2  # named: an error
