"""The exchange package's names, imported on first use."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import sendvault.exchange as exchange


@pytest.mark.parametrize("name", exchange.__all__)
def test_each_public_name_is_its_modules_own(name: str) -> None:
    value = getattr(exchange, name)
    module = importlib.import_module(exchange._HOME[name], "sendvault.exchange")
    assert value is getattr(module, name)


def test_the_public_names_are_the_lazy_ones() -> None:
    assert sorted(exchange.__all__) == sorted(exchange._HOME)
    assert set(exchange.__all__) <= set(dir(exchange))
    assert not {"Any", "TYPE_CHECKING", "importlib", "_HOME"} & set(dir(exchange))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = exchange.nothing


def test_csv_conversion_and_its_workers_do_not_import_the_sftp_client() -> None:
    # A bulk worker process imports _workers; `csv tokenize` imports the conversion code.
    code = (
        "import sys\n"
        "from sendvault.exchange import CsvInput, RejectsFile, detokenize_file, tokenize_file\n"
        "from sendvault.exchange import _workers\n"
        "print('asyncssh' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
