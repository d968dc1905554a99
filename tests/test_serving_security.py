"""What the server trusts: no code from a model folder unless asked, and an API key as the openai client sends it."""

from __future__ import annotations

import contextlib
import json
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")

from serving_utils import HOST, SleepyBackend, ThreadServer, request  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from promptembedder.cli import app as cli  # noqa: E402
from promptembedder.export.exporter import export  # noqa: E402
from promptembedder.export.prompt_pooling import PromptPooling  # noqa: E402
from promptembedder.models.prompt_embedder import PromptEmbedder  # noqa: E402
from promptembedder.serving import ServerSettings, create_app, load_backend, serve  # noqa: E402

TEXTS = ["A man is eating food.", "A monkey is playing drums."]
INSTRUCTIONS = {"sts": "Retrieve semantically similar text."}
KEY = "s3cret-key"


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_model_dir):
    """A mean-pooled export (it ships prompt_pooling.py) and the model it came from."""
    tmp = tmp_path_factory.mktemp("export_bert")
    torch.manual_seed(0)
    model = PromptEmbedder(prompting_model=str(tiny_model_dir("llama")), embedding_model=str(tiny_model_dir("bert")),
                           num_soft_tokens=3, device="cpu")
    model.save_pretrained(tmp / "saved")
    out = export(tmp / "saved", tmp / "out", INSTRUCTIONS, verify=False)
    assert (out / "prompt_pooling.py").exists()
    return PromptEmbedder.from_pretrained(tmp / "saved", device="cpu"), out


def _copy(out, tmp_path):
    import shutil

    return shutil.copytree(out, tmp_path / "copy")


def _code_that_leaves(marker) -> str:
    return f"\nopen({str(marker)!r}, 'w').write('ran')\n"


def test_own_pooling_module_loads_from_the_package(exported):
    model, out = exported
    backend = load_backend(out)
    assert type(backend.model[1]) is PromptPooling  # the installed class, not the folder's copy
    got = backend.encode(TEXTS, "sts")
    assert np.sum(got * model.encode(TEXTS, instruction=INSTRUCTIONS["sts"]), axis=1).min() >= 0.9999


def test_edited_pooling_module_is_refused_unless_trusted(exported, tmp_path):
    folder, marker = _copy(exported[1], tmp_path), tmp_path / "ran"
    with open(folder / "prompt_pooling.py", "a") as handle:
        handle.write(_code_that_leaves(marker))
    with pytest.raises(ValueError, match="--trust-remote-code"):
        load_backend(folder)
    assert not marker.exists()
    load_backend(folder, trust_remote_code=True)  # the user's explicit choice
    assert marker.exists()


def test_auto_map_in_config_runs_no_code(exported, tmp_path):
    folder, marker = _copy(exported[1], tmp_path), tmp_path / "ran"
    (folder / "evil_model.py").write_text(_code_that_leaves(marker) + "from transformers import BertModel as Evil\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "evil_model.Evil", "AutoConfig": "evil_model.Evil"}
    (folder / "config.json").write_text(json.dumps(config))
    with contextlib.suppress(ValueError):  # refusing is fine too; running the file is not
        load_backend(folder)
    assert not marker.exists()


def test_api_key_as_openai_clients_send_it():
    settings = ServerSettings("m", api_key=KEY)
    with ThreadServer(create_app(SleepyBackend(0), settings)) as server:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
            for path, method in (("/v1/embeddings", "POST"), ("/v1/models", "GET"), ("/docs", "GET"),
                                 ("/openapi.json", "GET"), ("/nowhere", "GET")):
                status, body = request(server.port, method, path, {"input": "x"}, headers=headers)
                assert status == 401 and body["error"]["code"] == "invalid_api_key", (path, headers)
        assert request(server.port, "GET", "/health")[0] == 200  # probes need no key
        assert request(server.port, "GET", "/openapi.json", headers={"Authorization": f"Bearer {KEY}"})[0] == 200
        assert request(server.port, "GET", "/v1/models", headers={"Authorization": f"bearer {KEY}"})[0] == 200
        api = openai.OpenAI(base_url=f"http://{HOST}:{server.port}/v1", api_key=KEY, max_retries=0, timeout=30)
        assert len(api.embeddings.create(model="m", input=TEXTS).data) == 2
        wrong = openai.OpenAI(base_url=f"http://{HOST}:{server.port}/v1", api_key="wrong", max_retries=0, timeout=30)
        with pytest.raises(openai.AuthenticationError, match="invalid API key"):
            wrong.embeddings.create(model="m", input=TEXTS)


def test_api_key_from_the_environment(monkeypatch, tmp_path):
    """`serve` reads PROMPTEMBEDDER_API_KEY (the model load and the server itself are stubbed here)."""
    import promptembedder.serving as serving

    seen = {}
    monkeypatch.setattr(serving, "load_backend", lambda *args, **kwargs: SleepyBackend(0))
    monkeypatch.setattr(serving, "serve", lambda backend, settings, **kwargs: seen.update(settings=settings))
    monkeypatch.setenv("PROMPTEMBEDDER_API_KEY", KEY)
    result = CliRunner().invoke(cli, ["serve", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert seen["settings"].api_key == KEY and KEY not in repr(seen["settings"])


@pytest.mark.parametrize(("host", "key", "warned"), [("0.0.0.0", None, True), ("::", None, True),
                                                     ("0.0.0.0", KEY, False), ("127.0.0.1", None, False),
                                                     ("localhost", None, False)])
def test_warning_when_reachable_without_a_key(monkeypatch, host, key, warned):
    import uvicorn

    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: None)  # nothing is bound
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        serve(SleepyBackend(0), ServerSettings("m", api_key=key), host=host, port=8000)
    assert any("without an API key" in str(w.message) for w in caught) == warned
