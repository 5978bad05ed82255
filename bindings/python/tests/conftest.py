import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # tests/reference.py

import moas  # noqa: E402


def tiny(**changes):
    """A tiny, deterministic (dropout 0), single-threaded model config."""
    fields = dict(vocab_size=13, block_size=12, n_layer=2, n_head=4, n_embd=16, dropout=0.0, n_threads=1, seed=7)
    fields.update(changes)
    return moas.Config(**fields)


@pytest.fixture
def tiny_config():
    return tiny


def pytest_report_header(config):
    try:
        return f"libmoas {moas.library_version()} (ABI {moas.abi_version()}) from {moas.library_path()}"
    except Exception as e:  # the tests themselves report it properly
        return f"libmoas not loaded: {e}"
