"""``blindinpaint serve``: the web page and HTTP API (FastAPI + uvicorn, the ``serve`` extra).

    from blindinpaint.serve import create_app
    app = create_app(model="runs/hcl_tiny", inpaint_model=None)   # any ASGI server can run it

See ``docs/serve.md`` for the endpoints and limits.  FastAPI is imported only when the app is
built, so ``import blindinpaint.serve`` works without the extra installed.
"""

from __future__ import annotations

import argparse
import logging

from ..api import DEFAULT_GDN_MODEL
from ..errors import UserError

log = logging.getLogger(__name__)
_MISSING_EXTRA = ("blindinpaint serve needs the 'serve' extra (FastAPI, uvicorn, python-multipart): "
                  "pip install 'blindinpaint[serve]'")


def create_app(*args, **kwargs):
    """Build the FastAPI app; see :func:`blindinpaint.serve.app.create_app` for the arguments."""
    try:
        from .app import create_app as build
    except ImportError as exc:
        raise UserError(f"{_MISSING_EXTRA} ({exc})") from None
    return build(*args, **kwargs)


def serve_main(args: argparse.Namespace) -> int:
    """Runner of ``blindinpaint serve [--host H] [--port P] [--model M] [--inpaint-model G] ...``.

    An explicitly named model that cannot be loaded is an error (exit 2).  The ``default`` model
    missing is an error too unless an inpainting model was loaded: then the server starts and
    its blind endpoints answer 503 with the reason.  The bundled ``gdn`` (the default inpainting
    model) missing only turns ``/api/inpaint`` and ``/api/inspect`` into 503 answers.
    """
    try:
        import uvicorn
    except ImportError as exc:
        raise UserError(f"{_MISSING_EXTRA} ({exc})") from None
    app = create_app(model=args.model, inpaint_model=args.inpaint_model, max_upload_mb=args.max_upload_mb,
                     max_pixels=args.max_pixels, device=args.device)
    server = app.state.server
    if server.inpaint.error and args.inpaint_model != DEFAULT_GDN_MODEL:
        raise UserError(f"--inpaint-model {args.inpaint_model}: {server.inpaint.error}")
    if server.inpaint.error:
        log.warning("no inpainting model: /api/inpaint and /api/inspect answer 503 (%s)", server.inpaint.error)
    if server.restore.error and (args.model != "default" or server.inpaint.restorer is None):
        raise UserError(server.restore.error)
    if server.restore.error:
        log.warning("no restoration model: /api/detect and /api/restore answer 503 (%s)", server.restore.error)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: the server has no authentication; anyone who can reach this address "
                    "can use it", args.host)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"blindinpaint serve: http://{shown}:{args.port}/  (API reference: /docs; stop with Ctrl+C)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info" if args.verbose else "warning")
    return 0


__all__ = ["create_app", "serve_main"]
