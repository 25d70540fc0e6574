"""The `nexp` console script: the model library's CLI (model.cli) plus `nexp keys`.

model/ imports nothing from the service, so the service's commands join it here.
"""

from __future__ import annotations

from model.cli import app
from service.keys_cli import app as keys_app

app.add_typer(keys_app, name="keys", help="The service's API keys.")

if __name__ == "__main__":
    app()
