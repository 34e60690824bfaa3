"""docs/openapi.yaml describes the routes `smscool web` serves, no more and no fewer, and
the fields an automation takes as the API checks them."""

from pathlib import Path

import yaml

from smscool.web import AutomationsApi
from streams.automations import Catalog
from streams.settings import Settings
from streams.validation import EDITABLE

SPEC = yaml.safe_load((Path(__file__).resolve().parents[2] / "docs/openapi.yaml").read_text())


def test_the_openapi_file_lists_every_route_served():
    app = AutomationsApi(Settings(), Catalog(), None, print, print).app()
    served = {(route.method.lower(), route.resource.canonical)
              for route in app.router.routes() if route.method != "HEAD"}
    described = {(method, path) for path, item in SPEC["paths"].items()
                 for method in item if method != "parameters"}
    assert served == described


def test_the_openapi_file_names_the_fields_the_api_takes():
    fields = SPEC["components"]["schemas"]["AutomationFields"]["properties"]
    assert set(fields) == set(EDITABLE)
