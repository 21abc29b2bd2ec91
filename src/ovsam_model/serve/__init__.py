"""An OV-SAM server for many annotators: ``python -m ovsam_model.serve`` (see ``serve.cli``), its HTTP API
(``serve.app``), the model thread that batches their prompts (``serve.engine``) and the wire format
(``serve.wire``). The client is ``ovsam_model.remote.RemotePredictor``. Needs the ``serve`` extra
(``pip install napari-ovsam[serve]``: FastAPI, uvicorn, httpx)."""
