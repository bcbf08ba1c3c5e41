import httpx
from upstreams import Upstream
def test_smoke(start_meshd, upstream):
    meshd = start_meshd(disco={"web": upstream.disco_line})
    r = httpx.get(meshd.url(path="/hi"), headers={"host": "web"})
    assert r.status_code == 200
    assert r.json()["path"] == "/hi"
