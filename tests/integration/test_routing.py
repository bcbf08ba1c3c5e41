"""Routing end to end: identifiers, dtab semantics through real namers, per-request dtabs,
clearContext, rewriting namers, transformers, the io.l5d.fs interpreter, and the explanations
meshd gives when a name does not route (l5d-err, /delegator.json, `meshd delegate`)."""
import json
import os
import subprocess
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from meshd_harness import FS_ROUTER_HEAD, MESHD_BIN, wait_until
from upstreams import Upstream


def config(dtab, extra_router="", identifier="", extra_server="", label=""):
    return FS_ROUTER_HEAD + f"""{label}
  dtab: |
{chr(10).join('    ' + line for line in dtab.strip().splitlines())}
{identifier}
{extra_router}
  servers:
  - ip: 127.0.0.1
    port: 0
{extra_server}
"""


@pytest.fixture
def upstreams():
    started = []

    def make(name=""):
        upstream = Upstream()
        upstream.name = name
        started.append(upstream)
        return upstream

    yield make
    for upstream in started:
        upstream.close()


def get(meshd, path="/", host="web", headers=None, label="http"):
    all_headers = {"host": host}
    all_headers.update(headers or {})
    return httpx.get(meshd.url(label, path), headers=all_headers, timeout=10)


# Identifiers


def test_method_and_host_identifier(start_meshd, upstreams):
    web = upstreams()
    meshd = start_meshd(config("/svc/1.1/GET => /#/io.l5d.fs", identifier="  identifier:\n    kind: io.l5d.methodAndHost"),
                        disco={"web": web.disco_line})
    assert get(meshd, host="WEB").status_code == 200  # host is lower-cased
    response = httpx.post(meshd.url(path="/"), headers={"host": "web"}, content=b"x", timeout=10)
    assert response.status_code == 503
    assert "/svc/1.1/POST/web" in response.headers["l5d-err"]


def test_path_identifier_consumes_segments(start_meshd, upstreams):
    web = upstreams()
    meshd = start_meshd(config("/svc => /#/io.l5d.fs", identifier="  identifier:\n    kind: io.l5d.path\n    segments: 1\n    consume: true"),
                        disco={"web": web.disco_line})
    response = get(meshd, "/web/users/7?q=1", host="anything")
    assert response.status_code == 200
    assert response.json()["path"] == "/users/7?q=1"
    assert get(meshd, "/", host="anything").status_code == 400


def test_identifier_list_falls_back_in_order(start_meshd, upstreams):
    web = upstreams()
    identifier = "  identifier:\n  - kind: io.l5d.header\n  - kind: io.l5d.static\n    path: /web"
    meshd = start_meshd(config("/svc => /#/io.l5d.fs", identifier=identifier), disco={"web": web.disco_line, "api": web.disco_line})
    assert get(meshd, host="ignored", headers={"l5d-name": "/api"}).json()["headers"]
    assert [h for h in web.requests[-1]["headers"] if h[0].lower() == "l5d-dst-service"][0][1] == "/svc/api"
    get(meshd, host="ignored")
    assert [h for h in web.requests[-1]["headers"] if h[0].lower() == "l5d-dst-service"][0][1] == "/svc/web"


def test_unidentifiable_request_gets_400(start_meshd, upstreams):
    meshd = start_meshd(config("/svc => /#/io.l5d.fs", identifier="  identifier:\n    kind: io.l5d.header\n    header: x-route"), disco={})
    response = get(meshd, host="web")
    assert response.status_code == 400
    assert "no x-route header" in response.headers["l5d-err"]


# Dtab semantics through real namers


def test_later_dentries_win_and_fall_back_when_negative(start_meshd, upstreams):
    old, new = upstreams(), upstreams()
    meshd = start_meshd(config("/svc => /#/io.l5d.fs/old;\n/svc => /#/io.l5d.fs/new;"), disco={"old": old.disco_line})
    assert get(meshd).status_code == 200
    assert old.count() == 1, "new does not exist, so the earlier dentry serves"
    (meshd.config_path.parent / "disco" / "new").write_text(new.disco_line)
    assert wait_until(lambda: get(meshd).status_code == 200 and new.count() > 0)


def test_weighted_union_splits_ten_thousand_requests_by_weight(start_meshd, upstreams):
    a, b = upstreams(), upstreams()
    meshd = start_meshd(config(f"/svc/web => 0.7 * /$/inet/127.0.0.1/{a.port} & 0.3 * /$/inet/127.0.0.1/{b.port};"), disco={})
    total = 10_000
    url = meshd.url(path="/")

    def worker(count):
        with httpx.Client(timeout=10) as client:
            for _ in range(count):
                assert client.get(url, headers={"host": "web"}).status_code == 200

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(worker, [total // 8] * 8))
    share = a.count() / total
    assert a.count() + b.count() == total
    assert 0.67 <= share <= 0.73, share


def test_alternation_and_residual(start_meshd, upstreams):
    web = upstreams()
    meshd = start_meshd(config("/svc => /#/io.l5d.fs/missing | /#/io.l5d.fs;"), disco={"web": web.disco_line})
    response = get(meshd)
    assert response.status_code == 200
    headers = dict((k.lower(), v) for k, v in response.json()["headers"])
    assert headers["l5d-dst-client"] == "/#/io.l5d.fs/web"
    meshd2 = start_meshd(config("/svc/web => /#/io.l5d.fs/web/extra/part;"), disco={"web": web.disco_line})
    headers = dict((k.lower(), v) for k, v in get(meshd2).json()["headers"])
    assert headers["l5d-dst-residual"] == "/extra/part"


def test_dtab_loop_is_explained(start_meshd):
    meshd = start_meshd(config("/svc => /a;\n/a => /b;\n/b => /a;"), disco={})
    response = get(meshd)
    assert response.status_code == 503
    assert "exceeded 100 rewrites" in response.headers["l5d-err"]


# Per-request dtabs and clearContext


def test_l5d_dtab_header_overrides_for_one_request(start_meshd, upstreams):
    v1, v2 = upstreams(), upstreams()
    meshd = start_meshd(config("/svc => /#/io.l5d.fs;"), disco={"web": v1.disco_line, "web-v2": v2.disco_line})
    assert get(meshd).status_code == 200 and v1.count() == 1
    response = get(meshd, headers={"l5d-dtab": "/svc/web => /#/io.l5d.fs/web-v2"})
    assert response.status_code == 200 and v2.count() == 1
    forwarded = dict((k.lower(), v) for k, v in v2.requests[-1]["headers"])
    assert forwarded["l5d-ctx-dtab"] == "/svc/web=>/#/io.l5d.fs/web-v2"
    assert "l5d-dtab" not in forwarded
    # The override lasts one request only.
    assert get(meshd).status_code == 200 and v1.count() == 2


def test_context_dtab_is_read_and_user_dtab_wins(start_meshd, upstreams):
    v1, v2, v3 = upstreams(), upstreams(), upstreams()
    meshd = start_meshd(config("/svc => /#/io.l5d.fs;"), disco={"web": v1.disco_line, "v2": v2.disco_line, "v3": v3.disco_line})
    get(meshd, headers={"l5d-ctx-dtab": "/svc/web => /#/io.l5d.fs/v2"})
    assert v2.count() == 1
    get(meshd, headers={"l5d-ctx-dtab": "/svc/web => /#/io.l5d.fs/v2", "l5d-dtab": "/svc/web => /#/io.l5d.fs/v3"})
    assert v3.count() == 1
    forwarded = dict((k.lower(), v) for k, v in v3.requests[-1]["headers"])
    assert forwarded["l5d-ctx-dtab"] == "/svc/web=>/#/io.l5d.fs/v2;/svc/web=>/#/io.l5d.fs/v3"


def test_invalid_l5d_dtab_is_a_400(start_meshd, upstreams):
    web = upstreams()
    meshd = start_meshd(config("/svc => /#/io.l5d.fs;"), disco={"web": web.disco_line})
    response = get(meshd, headers={"l5d-dtab": "/svc/web => &"})
    assert response.status_code == 400
    assert "invalid l5d-dtab header" in response.headers["l5d-err"]
    assert web.count() == 0


def test_clear_context_ignores_dtab_overrides(start_meshd, upstreams):
    v1, v2 = upstreams(), upstreams()
    meshd = start_meshd(config("/svc => /#/io.l5d.fs;", extra_server="    clearContext: true"),
                        disco={"web": v1.disco_line, "web-v2": v2.disco_line})
    response = get(meshd, headers={"l5d-dtab": "/svc/web => /#/io.l5d.fs/web-v2", "l5d-ctx-dtab": "/svc/web => /#/io.l5d.fs/web-v2",
                                   "l5d-ctx-deadline": "1 2", "l5d-sample": "1"})
    assert response.status_code == 200
    assert v1.count() == 1 and v2.count() == 0
    forwarded = {k.lower() for k, _ in v1.requests[-1]["headers"]}
    assert not {"l5d-dtab", "l5d-ctx-dtab", "l5d-ctx-deadline", "l5d-sample"} & forwarded


def test_clear_context_strips_l5d_response_headers(start_meshd, upstreams):
    web = upstreams()
    web.on("/", lambda handler, record: handler.reply(200, b"ok", {"l5d-success-class": "1.0", "x-kept": "1"}))
    meshd = start_meshd(config("/svc => /#/io.l5d.fs;", extra_server="    clearContext: true"), disco={"web": web.disco_line})
    response = get(meshd)
    assert "l5d-success-class" not in response.headers and response.headers["x-kept"] == "1"


# System namers and transformers


def test_hostport_rewriting_namer(start_meshd, upstreams):
    web = upstreams()
    meshd = start_meshd(config("/inet => /$/inet;\n/svc => /$/io.buoyant.hostportPfx/inet;"), disco={})
    assert get(meshd, host=f"127.0.0.1:{web.port}").status_code == 200
    response = get(meshd, host="no-port-here")
    assert response.status_code == 503


def test_rinet_namer(start_meshd, upstreams):
    web = upstreams()
    meshd = start_meshd(config(f"/svc/web => /$/io.buoyant.rinet/{web.port}/127.0.0.1;"), disco={})
    response = get(meshd)
    assert response.status_code == 200
    headers = dict((k.lower(), v) for k, v in response.json()["headers"])
    assert headers["l5d-dst-client"] == f"/$/io.buoyant.rinet/{web.port}/127.0.0.1"


def transformer_config(transformers):
    return config("/svc => /#/io.l5d.fs;", extra_router="  interpreter:\n    kind: default\n    transformers:\n" + transformers)


def test_port_transformer(start_meshd, upstreams):
    web = upstreams()
    meshd = start_meshd(transformer_config(f"    - kind: io.l5d.port\n      port: {web.port}\n"), disco={"web": "127.0.0.1 1\n"})
    response = get(meshd)
    assert response.status_code == 200
    headers = dict((k.lower(), v) for k, v in response.json()["headers"])
    assert headers["l5d-dst-client"] == f"/%/io.l5d.port/{web.port}/#/io.l5d.fs/web"


def test_localhost_and_specific_host_transformers_filter(start_meshd, upstreams):
    web = upstreams()
    disco = {"web": web.disco_line + "192.0.2.1 80\n"}
    meshd = start_meshd(transformer_config("    - kind: io.l5d.localhost\n"), disco=disco)
    for _ in range(20):
        assert get(meshd).status_code == 200, "192.0.2.1 is not local and must never be picked"
    meshd2 = start_meshd(transformer_config("    - kind: io.l5d.specificHost\n      host: 192.0.2.7\n"), disco=disco)
    response = get(meshd2)
    assert response.status_code == 503
    assert "empty endpoint set" in response.headers["l5d-err"]


def test_replace_and_const_transformers(start_meshd, upstreams):
    web, other = upstreams(), upstreams()
    replace = transformer_config(f"    - kind: io.l5d.replace\n      path: /$/inet/127.0.0.1/{other.port}\n")
    meshd = start_meshd(replace, disco={"web": web.disco_line})
    assert get(meshd).status_code == 200 and other.count() == 1 and web.count() == 0
    assert get(meshd, host="missing").status_code == 503, "replace keeps names that did not bind unbound"
    const = transformer_config(f"    - kind: io.l5d.const\n      path: /$/inet/127.0.0.1/{other.port}\n")
    meshd2 = start_meshd(const, disco={})
    assert get(meshd2, host="missing").status_code == 200, "const routes everything"


def test_fs_interpreter_reads_the_dtab_file_live(start_meshd, upstreams, tmp_path):
    a, b = upstreams(), upstreams()
    dtab_file = tmp_path / "dtab"
    dtab_file.write_text("/svc/web => /#/io.l5d.fs/a;\n")
    text = config("/svc => /#/io.l5d.fs;", extra_router=f"  interpreter:\n    kind: io.l5d.fs\n    dtabFile: {dtab_file}\n")
    meshd = start_meshd(text, disco={"a": a.disco_line, "b": b.disco_line, "web": "127.0.0.1 1\n"})
    # The file's dentries come before the router's dtab, so the router's own entry wins.
    assert get(meshd, host="a").status_code == 200 and a.count() == 1
    text2 = config("/svc/other => /#/io.l5d.fs/b;", extra_router=f"  interpreter:\n    kind: io.l5d.fs\n    dtabFile: {dtab_file}\n")
    meshd2 = start_meshd(text2, disco={"a": a.disco_line, "b": b.disco_line})
    assert get(meshd2).status_code == 200 and a.count() == 2
    dtab_file.write_text("/svc/web => /#/io.l5d.fs/b;\n")
    assert wait_until(lambda: get(meshd2).status_code == 200 and b.count() > 0)
    # A broken file keeps the last good dtab.
    before = b.count()
    dtab_file.write_text("/svc/web => \n")
    assert wait_until(lambda: any("cannot use the dtab file" in line for line in meshd2.log_lines))
    assert get(meshd2).status_code == 200 and b.count() == before + 1


# Explanations


def test_l5d_err_names_the_name_and_the_dentry(start_meshd, upstreams):
    meshd = start_meshd(config("/svc => /#/io.l5d.fs;"), disco={"empty": "# nothing\n"})
    missing = get(meshd, host="nosuch")
    assert missing.status_code == 503
    assert "/svc/nosuch" in missing.headers["l5d-err"]
    assert "/#/io.l5d.fs/nosuch" in missing.headers["l5d-err"]
    assert "dentry /svc=>/#/io.l5d.fs" in missing.headers["l5d-err"]
    empty = get(meshd, host="empty")
    assert empty.status_code == 503
    assert "/#/io.l5d.fs/empty" in empty.headers["l5d-err"] and "empty endpoint set" in empty.headers["l5d-err"]
    assert "dentry /svc=>/#/io.l5d.fs" in empty.headers["l5d-err"]
    failing = start_meshd(config("/svc => !;"), disco={})
    assert "fails (!)" in get(failing).headers["l5d-err"]


def test_delegator_json_has_linkerds_shape(start_meshd, upstreams):
    web = upstreams()
    dtab = "/bah/humbug => /$/inet/127.1/8080 ;\n/foo => /bah | /$/fail ;\n/foo => /bar ;\n/boo => /foo ;\n/svc => /#/io.l5d.fs;"
    meshd = start_meshd(config(dtab), disco={"web": web.disco_line})
    tree = json.loads(meshd.admin_get("/delegator.json?path=/boo/humbug&namespace=http"))
    assert tree["type"] == "delegate" and tree["path"] == "/boo/humbug" and "dentry" not in tree
    alt = tree["delegate"]
    assert alt["type"] == "alt" and alt["path"] == "/foo/humbug"
    assert alt["dentry"] == {"prefix": "/boo", "dst": "/foo"}
    assert [branch["type"] for branch in alt["alt"]] == ["neg", "delegate", "fail"]
    leaf = alt["alt"][1]["delegate"]
    assert leaf["type"] == "leaf" and leaf["bound"]["id"] == "/$/inet/127.1/8080"
    assert leaf["bound"]["addr"] == {"type": "bound", "addrs": [{"ip": "127.0.0.1", "port": 8080, "meta": {}}], "meta": {}}
    web_tree = json.loads(meshd.admin_get("/delegator.json?path=/svc/web"))
    assert web_tree["delegate"]["bound"]["addr"]["addrs"][0]["port"] == web.port
    override = json.loads(meshd.admin_get("/delegator.json?path=/svc/web&dtab=%2Fsvc%2Fweb%20%3D%3E%20~"))
    assert "neg" in json.dumps(override)
    assert meshd.admin_status("/delegator.json?path=bad") == 400
    assert meshd.admin_status("/delegator.json?path=/svc/web&namespace=nope") == 404
    page = meshd.admin_get("/delegator")
    assert "<title>meshd delegator</title>" in page


def test_bound_names_and_client_cache(start_meshd, upstreams):
    web = upstreams()
    meshd = start_meshd(config("/svc => /#/io.l5d.fs;", extra_router="  bindingCache:\n    clients: 1"),
                        disco={"web": web.disco_line, "api": web.disco_line})
    assert sorted(json.loads(meshd.admin_get("/bound-names.json"))) == ["/#/io.l5d.fs/api", "/#/io.l5d.fs/web"]
    for host in ["web", "api", "web", "api"]:
        assert get(meshd, host=host).status_code == 200
    state = json.loads(meshd.admin_get("/client_state.json"))
    assert len(state["http"]) == 1, "bindingCache.clients: 1 keeps one client"


def test_meshd_delegate_prints_the_tree(tmp_path, upstreams):
    web = upstreams()
    (tmp_path / "disco").mkdir()
    (tmp_path / "disco" / "web").write_text(web.disco_line)
    (tmp_path / "meshd.yaml").write_text(config("/svc => /#/io.l5d.fs/missing | /#/io.l5d.fs;"))
    result = subprocess.run([MESHD_BIN, "delegate", "--config", "meshd.yaml", "/svc/web"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "/svc/web" in result.stdout
    assert "/#/io.l5d.fs/missing" in result.stdout and "nothing binds this" in result.stdout
    assert f"127.0.0.1:{web.port}" in result.stdout
    unroutable = subprocess.run([MESHD_BIN, "delegate", "--config", "meshd.yaml", "/svc/nowhere"], cwd=tmp_path,
                                capture_output=True, text=True, timeout=30)
    assert unroutable.returncode == 2, (unroutable.stdout, unroutable.stderr)
    assert "/svc/nowhere" in unroutable.stdout and "nothing binds this" in unroutable.stdout
    assert "no route for /svc/nowhere" in unroutable.stderr
    as_json = subprocess.run([MESHD_BIN, "delegate", "--config", "meshd.yaml", "--json", "--dtab", "/svc/web => !", "/svc/web"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=30)
    tree = json.loads(as_json.stdout)
    # `!` stops the alternation: a request would fail, and the status says so.
    assert as_json.returncode == 2 and "/svc/web" in as_json.stderr
    # Both dentries match /svc/web: the override (tried first) fails, so the tree is an alternation.
    assert tree["type"] == "alt" and tree["alt"][0]["type"] == "fail"
    assert tree["alt"][0]["dentry"] == {"prefix": "/svc/web", "dst": "!"}
