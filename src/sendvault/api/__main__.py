"""`python -m sendvault.api` prints the OpenAPI document (docs/openapi.json is made with it)."""

import json
import sys

from .schemas import openapi_document

sys.stdout.write(json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n")
