"""`python -m sendvault.scan` prints docs/rules.md."""

import sys

from .findings import rules_reference

sys.stdout.write(rules_reference())
