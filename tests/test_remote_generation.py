"""The evaluation grid's bulk path: generation on an OpenAI-compatible server (here `mdrag serve`'s server,
started by the test on a free port, with the same adapters) gives the answers the local path gives."""

from __future__ import annotations

import json
import threading
import urllib.request

import pytest
from test_evaluation_runner import register

from mdrag.data.domains import DOMAINS
from mdrag.engine import Engine
from mdrag.errors import MdragError
from mdrag.evaluation.runner import Grid, evaluate
from mdrag.evaluation.store import ResultsStore
from mdrag.openai_server import make_server

VARIANTS = ["vanilla", "full", "qk_att", "mlp"]


@pytest.fixture
def server(tiny_engine):
    """The server on an engine of its own (the tiny generator and adapters, float32), as `mdrag serve` runs."""
    httpd = make_server(Engine(tiny_engine.settings), "127.0.0.1", 0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}/v1"
    httpd.shutdown()


@pytest.fixture
def grid_args(tmp_path):
    register(tmp_path)
    yield dict(domains=["evaltiny"], variants=VARIANTS, settings=["retrieved", "oracle"], retrievers=["bm25"],
               reranker="none", n_distractors=2)
    DOMAINS.pop("evaltiny", None)


def test_endpoint_answers_equal_local_answers(server, grid_args, tmp_path, tiny_engine):
    local = ResultsStore(tmp_path / "local.sqlite")
    remote = ResultsStore(tmp_path / "remote.sqlite")
    client = Engine(tiny_engine.settings.but(endpoint=server))  # generates on the server
    evaluate(Grid(**grid_args), local, tiny_engine, show_progress=False)
    counts = evaluate(Grid(**grid_args), remote, client, show_progress=False)
    assert counts["generated"] == len(local.frame())
    cols = ["query_id", "variant", "setting"]
    a = local.frame().set_index(cols)["answer"].sort_index()
    b = remote.frame().set_index(cols)["answer"].sort_index()
    assert a.to_dict() == b.to_dict()
    assert a.groupby(level="variant").apply(tuple).nunique() >= 3  # the adapters were really served
    assert set(local.frame()["key"]).isdisjoint(remote.frame()["key"])  # never mistaken for local rows
    again = evaluate(Grid(**grid_args), remote, client, show_progress=False)
    assert again["generated"] == 0


def test_server_rejects_bad_requests_clearly(server):
    def post(body: bytes):
        req = urllib.request.Request(server + "/completions", body, {"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(req)
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())["error"]["message"]
        return 200, ""

    assert post(b"not json")[0] == 400
    code, msg = post(json.dumps({"model": "nonsense", "prompt": "hi"}).encode())
    assert code == 400 and "nonsense" in msg
    code, msg = post(json.dumps({"model": "vanilla", "prompt": []}).encode())
    assert code == 400 and "prompt" in msg
    for bad in (-5, 0, 10_000, "12", 1.5, True):
        code, msg = post(json.dumps({"model": "vanilla", "prompt": "hi", "max_tokens": bad}).encode())
        assert code == 400 and "max_tokens" in msg
    for ids in ([1, 2, 10**9], [-1], [1, True]):
        code, msg = post(json.dumps({"model": "vanilla", "prompt": ids}).encode())
        assert code == 400 and ("token ids" in msg or "prompt" in msg)
    code, _ = post(json.dumps({"model": "vanilla", "prompt": [1, 2], "max_tokens": 2}).encode())
    assert code == 200  # the server still answers after the bad requests


def test_endpoint_down_is_a_clear_error(grid_args, tmp_path, tiny_engine):
    store = ResultsStore(tmp_path / "r.sqlite")
    with pytest.raises(MdragError, match=r"endpoint .* failed"):
        evaluate(Grid(**grid_args), store, Engine(tiny_engine.settings.but(endpoint="http://127.0.0.1:9/v1")),
                 show_progress=False)
    assert store.frame().empty
