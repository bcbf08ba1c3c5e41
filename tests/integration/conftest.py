import pytest

from meshd_harness import Meshd, write_config, simple_config
from upstreams import Upstream


@pytest.fixture
def upstream():
    server = Upstream()
    yield server
    server.close()


@pytest.fixture
def start_meshd(tmp_path):
    """start_meshd(config_text, disco={name: text}) -> Meshd, stopped at the end of the test."""
    started = []

    def start(text=None, disco=None, args=()):
        path = write_config(tmp_path, text or simple_config(), disco=disco if disco is not None else {})
        meshd = Meshd(path, tmp_path, args=args)
        started.append(meshd)
        return meshd

    yield start
    for meshd in started:
        meshd.stop()
