"""The HTTP API and web page of ``blindinpaint serve`` (FastAPI).

Endpoints (all answers JSON; images travel as base64-encoded PNG strings, no ``data:`` prefix):

* ``POST /api/detect``  multipart ``image`` [, ``threshold``, ``dilate``] ->
  ``mask`` (8-bit grey PNG, 255 = corrupted) and ``confidence`` (8-bit grey PNG,
  ``round(255 * P(corrupted))``);
* ``POST /api/restore`` multipart ``image`` [, ``mask`` (white = corrupted), ``threshold``,
  ``dilate``] -> ``restored`` (RGB / RGBA PNG, bit-identical to the input outside the mask),
  ``mask`` (the pixels that were restored) and ``confidence``;
* ``POST /api/inpaint`` multipart ``image`` + ``mask`` -> ``restored`` + ``mask`` from the GDN
  inpainting model (503 when none is loaded);
* ``POST /api/inspect`` multipart ``image`` -> ``heatmap``: the GDN dense detector's
  per-pixel artifact probability V (seed paper 003, Sec. 3.3.2) as an 8-bit grey PNG;
* ``GET /api/models``, ``GET /healthz``; ``GET /`` the web page, ``GET /docs`` the API reference
  rendered locally from ``GET /openapi.json``.

Safety: the request body is capped at ``max_upload_mb`` (413, checked before the endpoint
runs), images are identified from their bytes only (the file name and content type are never
looked at) and limited to a few raster formats, the pixel count is checked from the header
before decoding (413), every upload is decoded from memory (no client-supplied name or path
ever reaches the file system; the page's own files are read once at start-up), and decoding +
inference run under one lock so concurrent requests queue instead of exhausting memory.
"""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, Field

from .. import __version__, hub
from ..api import Restorer
from ..errors import UserError
from ..io import LoadedImage, read_image, read_mask, to_tensor
from ..padding import run_tiled

log = logging.getLogger(__name__)

#: Largest accepted request body (image + mask + form fields), in megabytes.
DEFAULT_MAX_UPLOAD_MB = 25.0
#: Largest accepted image, in pixels (16 Mpx, e.g. 4900 x 3265).
DEFAULT_MAX_PIXELS = 16_000_000
#: Seconds a request waits for the inference lock before a 503 "busy" answer.
DEFAULT_BUSY_TIMEOUT = 120.0
#: Raster formats accepted, identified from the bytes (never PostScript, PDF or other formats
#: whose Pillow plugins call external programs).
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")
#: Tile side of the dense detector on large images (bounds its activation memory).
INSPECT_TILE = 1024
STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_FILES = {"index.html": "text/html; charset=utf-8", "docs.html": "text/html; charset=utf-8",
                "app.js": "text/javascript; charset=utf-8", "docs.js": "text/javascript; charset=utf-8",
                "style.css": "text/css; charset=utf-8"}
# Everything the page needs is served from here; images are shown from data: / blob: URLs.
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
                           "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
                           "frame-ancestors 'none'")


# ----------------------------------------------------------------------------- errors
class ApiError(Exception):
    """An answer other than 200: HTTP ``status`` with a one-line ``message`` (JSON ``detail``)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)


def _validation_message(exc: RequestValidationError) -> str:
    """FastAPI's list of validation errors -> one line naming the form fields."""
    parts = []
    for err in exc.errors():
        loc = [str(x) for x in err.get("loc", ()) if x not in ("body", "query")]
        field = loc[-1] if loc else "request"
        if err.get("type") == "missing":
            parts.append(f"missing form field '{field}' (send a multipart/form-data upload)")
        else:
            parts.append(f"form field '{field}': {err.get('msg', 'invalid value')}")
    return "; ".join(parts) or "invalid request"


# ----------------------------------------------------------------------------- upload limit
class BodyLimit:
    """ASGI middleware: refuse POST bodies over ``max_bytes`` with 413 before the endpoint runs.

    A declared ``Content-Length`` over the limit is refused without reading the body; otherwise
    the body is read (at most ``max_bytes`` + one chunk) and replayed to the application, so a
    chunked upload without a length cannot grow past the limit either.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = int(max_bytes)

    def _too_large(self, size: Optional[int]) -> JSONResponse:
        mb = self.max_bytes / 1e6
        got = f"{size / 1e6:.1f} MB, " if size is not None else ""
        return _error(413, f"upload too large: {got}more than the limit of {mb:g} MB "
                           f"(start the server with --max-upload-mb N to raise it)")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(int(declared))(scope, receive, send)
            return
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                await self._too_large(None)(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


# ----------------------------------------------------------------------------- models
@dataclass
class ModelSlot:
    """One model the server was asked for: the loaded :class:`Restorer` or why it is missing."""

    role: str                          # "restore" (--model) or "inpaint" (--inpaint-model)
    name: str = ""                     # what the operator asked for (name or path on the server)
    restorer: Optional[Restorer] = None
    error: Optional[str] = None

    def require(self, what: str) -> Restorer:
        if self.restorer is None:
            flag = "--model" if self.role == "restore" else "--inpaint-model"
            reason = self.error or f"no {self.role} model was given (start the server with {flag} NAME_OR_PATH)"
            raise ApiError(503, f"{what} is not available: {reason}")
        return self.restorer

    def describe(self) -> dict:
        r = self.restorer
        return {"name": self.name or None, "loaded": r is not None, "task": r.task if r else None,
                "blind": bool(r.blind) if r else False, "error": self.error}


def load_slot(role: str, spec: Union[None, str, Path, Restorer], device: str, need_task: Optional[str] = None
              ) -> ModelSlot:
    """Load ``spec`` (a name / path, or an already built :class:`Restorer`) for ``role``.

    A model that cannot be loaded leaves the slot empty with the one-line reason, which the
    endpoints needing it answer with 503.
    """
    if spec is None:
        return ModelSlot(role)
    if isinstance(spec, Restorer):
        restorer, name = spec, spec.source or spec.task
    else:
        name = str(spec)
        try:
            restorer = Restorer.from_pretrained(spec, device=device)
        except UserError as exc:
            log.error("cannot load the %s model '%s': %s", role, name, exc)
            return ModelSlot(role, name, error=str(exc))
    if need_task is not None and restorer.task != need_task:
        message = (f"'{name}' is a '{restorer.task}' model; the {role} model must be a '{need_task}' model "
                   f"(GDN, mask-given inpainting with a dense artifact detector)")
        log.error(message)
        return ModelSlot(role, name, error=message)
    return ModelSlot(role, name, restorer=restorer)


# ----------------------------------------------------------------------------- images in / out
def decode_upload(data: bytes, field: str, max_pixels: int, as_mask_of: Optional[tuple[int, int]] = None):
    """The bytes of an upload -> :class:`LoadedImage` (or, with ``as_mask_of=(width, height)``,
    an ``H x W`` bool hole mask, True = corrupted = white).

    The format is identified from the bytes alone (:data:`ALLOWED_FORMATS`) and the pixel count
    read from the header before anything is decoded.

    Raises:
        ApiError: 422 empty / truncated / corrupt data or a mask of the wrong size, 415 not an
            image of an accepted format, 413 more than ``max_pixels`` pixels.
    """
    if not data:
        raise ApiError(422, f"{field}: the uploaded file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit is checked below
            with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as probe:
                width, height = probe.size
    except Image.DecompressionBombError:
        raise ApiError(413, f"{field}: image has more than {max_pixels:,} pixels (the server's limit; "
                            f"start it with --max-pixels N to raise it)") from None
    except UnidentifiedImageError:
        raise ApiError(415, f"{field}: not an image, or not one of the accepted formats "
                            f"({', '.join(ALLOWED_FORMATS)})") from None
    except Exception as exc:  # noqa: BLE001 - a header Pillow cannot parse is the file's fault
        raise ApiError(422, f"{field}: corrupt image header ({' '.join(str(exc).split()) or type(exc).__name__})"
                       ) from None
    if width * height > max_pixels:
        raise ApiError(413, f"{field}: image is {width}x{height} = {width * height:,} pixels, more than the "
                            f"server's limit of {max_pixels:,} (start it with --max-pixels N to raise it)")
    source = io.BytesIO(data)
    source.name = field  # read_image names the source in its messages
    try:
        if as_mask_of is not None:
            return read_mask(source, size=as_mask_of, max_pixels=max_pixels)
        return read_image(source, max_pixels=max_pixels)
    except UserError as exc:
        raise ApiError(422, str(exc)) from None


def png_base64(pixels: np.ndarray) -> str:
    """``H x W`` (bool / uint8) or ``H x W x 3|4`` uint8 -> base64 text of a PNG."""
    if pixels.dtype == np.bool_:
        pixels = pixels.astype(np.uint8) * 255
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG", compress_level=3)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def probability_png(prob: np.ndarray) -> str:
    """``H x W`` float in [0, 1] -> base64 8-bit grey PNG, ``round(255 * p)``."""
    return png_base64(np.rint(np.clip(prob, 0.0, 1.0) * 255.0).astype(np.uint8))


# ----------------------------------------------------------------------------- answers
class DetectAnswer(BaseModel):
    width: int
    height: int
    mask: str = Field(description="base64 PNG, 8-bit grey: 255 = corrupted, 0 = valid")
    confidence: str = Field(description="base64 PNG, 8-bit grey: round(255 * P(corrupted))")
    threshold: float = Field(description="mask = confidence > threshold")
    clean: bool = Field(description="the model judged the whole image clean (empty mask)")
    corrupted_fraction: float


class RestoreAnswer(BaseModel):
    width: int
    height: int
    restored: str = Field(description="base64 PNG (RGB, or RGBA when the input had alpha); equal to the "
                                      "input outside the mask, bit for bit")
    mask: str = Field(description="base64 PNG, 8-bit grey: 255 = restored (corrupted), 0 = kept")
    confidence: Optional[str] = Field(None, description="base64 PNG, 8-bit grey: round(255 * P(corrupted)); "
                                                        "with a given mask 0 / 255")
    clean: bool = False
    corrupted_fraction: float


class InspectAnswer(BaseModel):
    width: int
    height: int
    heatmap: str = Field(description="base64 PNG, 8-bit grey: round(255 * V), V = the GDN detector's "
                                     "per-pixel artifact probability")
    mean: float = Field(description="mean of V over the image")
    max: float


# ----------------------------------------------------------------------------- app
class Server:
    """The state behind the endpoints: model slots, limits and the inference lock."""

    def __init__(self, restore: ModelSlot, inpaint: ModelSlot, max_upload_mb: float, max_pixels: int,
                 busy_timeout: float):
        self.restore, self.inpaint = restore, inpaint
        self.max_upload_mb, self.max_pixels, self.busy_timeout = max_upload_mb, max_pixels, busy_timeout
        self.lock = threading.Lock()
        self.static = {name: (STATIC_DIR / name).read_bytes() for name in STATIC_FILES}

    @contextlib.contextmanager
    def locked(self):
        """Hold the inference lock (one decode + inference at a time); 503 after ``busy_timeout`` s."""
        if not self.lock.acquire(timeout=self.busy_timeout):
            raise ApiError(503, f"the server is busy (waited {self.busy_timeout:g} s for earlier requests); "
                                f"try again")
        try:
            yield
        finally:
            self.lock.release()

    def image(self, upload: UploadFile, field: str) -> LoadedImage:
        return decode_upload(upload.file.read(), field, self.max_pixels)

    def mask(self, upload: UploadFile, size: tuple[int, int]) -> np.ndarray:
        return decode_upload(upload.file.read(), "mask", self.max_pixels, as_mask_of=size)

    def restore_answer(self, result, loaded: LoadedImage) -> RestoreAnswer:
        width, height = loaded.size
        return RestoreAnswer(width=width, height=height, restored=png_base64(result.image),
                             mask=png_base64(result.mask), confidence=probability_png(result.confidence),
                             clean=bool(result.clean), corrupted_fraction=float(result.mask.mean()))


def create_app(model: Union[None, str, Path, Restorer] = "default",
               inpaint_model: Union[None, str, Path, Restorer] = None,
               max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, max_pixels: int = DEFAULT_MAX_PIXELS,
               device: str = "auto", busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> FastAPI:
    """The FastAPI application.

    model: the blind restoration model (HCL) for ``/api/detect`` and ``/api/restore``: a bundled
        / user model name, export folder, run directory or a built :class:`Restorer`.  A GDN
        model here serves ``/api/restore`` with a mask only, and also ``/api/inpaint``.
    inpaint_model: a GDN model for ``/api/inpaint`` and ``/api/inspect``.
    A model that cannot be loaded does not stop the app: its endpoints answer 503 with the reason.
    max_upload_mb: largest request body (413 above); max_pixels: largest image (413 above).
    busy_timeout: seconds a request waits for the inference lock before a 503.
    """
    if max_upload_mb <= 0 or max_pixels <= 0:
        raise UserError("the upload and pixel limits must be positive")
    restore = load_slot("restore", model, device)
    inpaint = load_slot("inpaint", inpaint_model, device, need_task="gdn")
    if inpaint_model is None and restore.restorer is not None and restore.restorer.task == "gdn":
        inpaint = ModelSlot("inpaint", restore.name, restorer=restore.restorer)
    server = Server(restore, inpaint, max_upload_mb, max_pixels, busy_timeout)

    app = FastAPI(title="blindinpaint", version=__version__, docs_url=None, redoc_url=None,
                  description="Blind image restoration (HCL) and mask-given inpainting (GDN). Images are sent "
                              "as multipart/form-data uploads and come back as base64-encoded PNG strings; "
                              "masks: white / 255 = corrupted (to restore), black / 0 = valid.")
    app.state.server = server
    app.add_middleware(BodyLimit, max_bytes=int(max_upload_mb * 1e6))

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return _error(exc.status, exc.message)

    @app.exception_handler(UserError)
    async def _user_error(request: Request, exc: UserError):
        return _error(422, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        return _error(422, _validation_message(exc))

    # ------------------------------------------------------------------ page
    def static(name: str) -> Response:
        headers = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff",
                   "Cache-Control": "no-cache"}
        return Response(server.static[name], media_type=STATIC_FILES[name], headers=headers)

    @app.get("/", include_in_schema=False)
    def page():
        return static("index.html")

    @app.get("/docs", include_in_schema=False)
    def docs_page():
        return static("docs.html")

    @app.get("/static/{name}", include_in_schema=False)
    def static_file(name: str):
        if name not in server.static:  # a fixed set read at start-up: no client path reaches the disk
            raise ApiError(404, f"no static file '{name}'")
        return static(name)

    # ------------------------------------------------------------------ status
    @app.get("/healthz", summary="Liveness and which models are loaded")
    def healthz():
        return {"status": "ok", "version": __version__, "restore_model": server.restore.restorer is not None,
                "inpaint_model": server.inpaint.restorer is not None}

    @app.get("/api/models", summary="Loaded models, installed models and the server's limits")
    def models():
        installed = [{k: m[k] for k in ("name", "source", "task", "model", "mb")} for m in hub.list_models()]
        return {"restore": server.restore.describe(), "inpaint": server.inpaint.describe(), "installed": installed,
                "limits": {"max_upload_mb": max_upload_mb, "max_pixels": max_pixels}}

    # ------------------------------------------------------------------ inference
    @app.post("/api/detect", response_model=DetectAnswer, summary="Find the corrupted pixels (blind, HCL)")
    def detect(image: UploadFile = File(..., description="the image (PNG, JPEG, WebP, BMP, GIF, TIFF)"),
               threshold: Optional[float] = Form(None, description="mask = confidence > threshold (default 0.5)"),
               dilate: int = Form(0, description="grow the mask by this many pixels")):
        restorer = server.restore.require("detection")
        if not restorer.blind:
            raise ApiError(503, f"detection is not available: the loaded model '{server.restore.name}' is a "
                                f"mask-given inpainting model ({restorer.task}); start the server with an HCL "
                                f"model (--model)")
        with server.locked():
            loaded = server.image(image, "image")
            result = restorer.detect(loaded, threshold=threshold, dilate=dilate)
            width, height = loaded.size
            return DetectAnswer(width=width, height=height, mask=png_base64(result.mask),
                                confidence=probability_png(result.confidence),
                                threshold=restorer.threshold if threshold is None else float(threshold),
                                clean=bool(result.clean),
                                corrupted_fraction=float(result.mask.mean()))

    @app.post("/api/restore", response_model=RestoreAnswer,
              summary="Blind restoration, or restoration of the given mask")
    def restore_endpoint(image: UploadFile = File(..., description="the image to restore"),
                         mask: Optional[UploadFile] = File(None, description="optional mask image of the same "
                                                           "size, white = restore; skips detection"),
                         threshold: Optional[float] = Form(None, description="detection threshold (default 0.5)"),
                         dilate: int = Form(0, description="grow the mask by this many pixels")):
        restorer = server.restore.require("restoration")
        with server.locked():
            loaded = server.image(image, "image")
            hole = server.mask(mask, loaded.size) if mask is not None else None
            if hole is None and not restorer.blind:
                raise ApiError(422, f"the loaded model '{server.restore.name}' is a mask-given inpainting model "
                                    f"({restorer.task}): send a 'mask' field (white = restore)")
            result = restorer.restore(loaded, mask=hole, threshold=threshold, dilate=dilate)
            return server.restore_answer(result, loaded)

    @app.post("/api/inpaint", response_model=RestoreAnswer, summary="Fill the given mask (GDN)")
    def inpaint_endpoint(image: UploadFile = File(..., description="the image"),
                         mask: UploadFile = File(..., description="mask image of the same size, white = fill"),
                         dilate: int = Form(0, description="grow the mask by this many pixels")):
        restorer = server.inpaint.require("inpainting")
        with server.locked():
            loaded = server.image(image, "image")
            hole = server.mask(mask, loaded.size)
            return server.restore_answer(restorer.inpaint(loaded, hole, dilate=dilate), loaded)

    @app.post("/api/inspect", response_model=InspectAnswer,
              summary="Artifact heat map of the GDN dense detector (Sec. 3.3.2 of the GDN paper)")
    def inspect(image: UploadFile = File(..., description="the image to inspect, e.g. an inpainted result")):
        restorer = server.inpaint.require("inspection")
        with server.locked():
            loaded = server.image(image, "image")
            x = to_tensor(loaded.rgb if loaded.rgb.flags.writeable else loaded.rgb.copy()).to(restorer.device)
            with torch.inference_mode():
                prob = run_tiled(x, restorer.net.detector.artifact_prob, tile=INSPECT_TILE, overlap=64)
            heat = prob[0, 0].float().clamp(0, 1).cpu().numpy()
            width, height = loaded.size
            return InspectAnswer(width=width, height=height, heatmap=probability_png(heat),
                                 mean=float(heat.mean()), max=float(heat.max()))

    return app


__all__ = ["create_app", "decode_upload", "png_base64", "BodyLimit", "ApiError", "DEFAULT_MAX_UPLOAD_MB",
           "DEFAULT_MAX_PIXELS", "ALLOWED_FORMATS"]
