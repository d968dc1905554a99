"""Export: instructions compiled to tokens of E give PromptEmbedder's embeddings through sentence-transformers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from promptembedder.export.exporter import export, read_instructions, task_instructions
from promptembedder.models.prompt_embedder import PromptEmbedder

INSTRUCTIONS = {"sts": "Retrieve semantically similar text.", "topic": "Identify the topic of the news article."}
TEXTS = ["A man is eating food.", "A monkey is playing drums.", "The girl is carrying a baby.",
         "It was raining heavily when we arrived at the station."]


def _saved(tmp_path, tiny_model_dir, e_model: str, **kwargs):
    torch.manual_seed(0)
    model = PromptEmbedder(prompting_model=str(tiny_model_dir("llama")), embedding_model=e_model,
                           num_soft_tokens=3, device="cpu", **kwargs)
    with torch.no_grad():  # a trained-looking W: a random one, so the test does not pass on an lstsq coincidence
        model.alignment.linear.weight.normal_(0, 0.05)
    model.save_pretrained(tmp_path / "saved")
    return PromptEmbedder.from_pretrained(tmp_path / "saved", device="cpu")


def _cosines(model, out, trust_remote_code=False):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(out), device="cpu", trust_remote_code=trust_remote_code, local_files_only=True)
    result = {}
    for name, instruction in INSTRUCTIONS.items():
        ours = model.encode(TEXTS, instruction=instruction)
        theirs = st.encode(TEXTS, prompt_name=name, batch_size=3)  # batches of unequal lengths: padding matters
        result[name] = np.sum(ours * theirs, axis=1)
    return result, st


@pytest.fixture(scope="module")
def gemma_export(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("export_gemma")
    # export compiles prefix prompts; "auto" would put a last-token decoder's prompt after the text
    model = _saved(tmp, tiny_model_dir, str(tiny_model_dir("gemma3")), prompt_position="prefix")
    return model, export(tmp / "saved", tmp / "out", INSTRUCTIONS, verify=False), tmp


def test_scaled_decoder_export_matches_encode(gemma_export):
    model, out, _ = gemma_export
    assert model.backbone.model.get_input_embeddings().embed_scale > 1  # Gemma scales: rows are prompt / scale
    cosines, st = _cosines(model, out)
    for name, values in cosines.items():
        assert values.min() >= 0.9999, (name, values)
    config = json.loads((out / "config_sentence_transformers.json").read_text())
    assert config["prompts"]["sts"] == "".join(f"<pe:sts:{i}>" for i in range(3))
    assert not (out / "prompt_pooling.py").exists()  # last-token pooling: plain sentence-transformers modules


def test_decoder_generation_unchanged(gemma_export, tiny_model_dir):
    _, out, _ = gemma_export
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir("gemma3"), dtype=torch.float32).eval()
    exported = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert exported.lm_head.weight.data_ptr() != exported.get_input_embeddings().weight.data_ptr()
    ids = torch.tensor([[1, 10, 20, 30]])
    with torch.no_grad():
        old, new = original(ids).logits, exported(ids).logits
    assert torch.allclose(old, new[..., : old.shape[-1]], atol=1e-5)
    generated = exported.generate(ids, max_new_tokens=8, do_sample=False)
    assert torch.equal(generated, original.generate(ids, max_new_tokens=8, do_sample=False))
    assert set(exported.generation_config.suppress_tokens) == set(range(old.shape[-1], new.shape[-1]))


def test_model_card_and_overwrite(gemma_export):
    model, out, tmp = gemma_export
    card = (out / "README.md").read_text()
    assert "<pe:topic:0><pe:topic:1><pe:topic:2>" in card and 'prompt_name="sts"' in card
    assert repr(model.decode_prompt(INSTRUCTIONS["sts"])).replace("|", "\\|") in card
    assert 'SentenceTransformer("out")' in card  # last-token pooling: no trust_remote_code needed
    assert "library_name: promptembedder" in (tmp / "saved" / "README.md").read_text()  # save_pretrained's card
    with pytest.raises(FileExistsError, match="--overwrite"):
        export(tmp / "saved", out, INSTRUCTIONS)
    with pytest.raises(ValueError, match="instruction name"):
        export(tmp / "saved", tmp / "other", {"bad name": "x"})


def test_mean_pooled_encoder_export(tmp_path, tiny_model_dir):
    """[CLS] is averaged, the prompt after it is not: a shipped Pooling subclass (trust_remote_code). With
    prompt_on='both' (the default) sentence-transformers' encode_document prompts documents as ours does."""
    model = _saved(tmp_path, tiny_model_dir, str(tiny_model_dir("bert")))
    out = export(model, tmp_path / "out", INSTRUCTIONS, verify=False)
    assert (out / "prompt_pooling.py").exists()
    cosines, st = _cosines(model, out, trust_remote_code=True)
    for name, values in cosines.items():
        assert values.min() >= 0.9999, (name, values)
    for ours, theirs in ((model.encode_query, st.encode_query), (model.encode_document, st.encode_document)):
        assert np.sum(ours(TEXTS) * theirs(TEXTS), axis=1).min() >= 0.9999
    no_prompt = st.encode(TEXTS)  # no prompt_name: the plain backbone, as PromptEmbedder without a prompt
    bare = PromptEmbedder(embedding_model=str(tiny_model_dir("bert")), num_soft_tokens=0, device="cpu")
    assert np.sum(no_prompt * bare.encode(TEXTS), axis=1).min() >= 0.9999


def test_instruction_sources(tmp_path):
    path = tmp_path / "i.json"
    path.write_text('{"sts": 3}')
    with pytest.raises(ValueError, match="must be a string"):
        read_instructions(path)
    path.write_text("{bad")
    with pytest.raises(ValueError, match="line 1"):
        read_instructions(path)
    assert task_instructions(["STS-B"])["sts-b"]
    with pytest.raises(ValueError, match="known tasks"):
        task_instructions(["nope"])


@pytest.mark.slow
def test_real_minilm_export(tmp_path, tiny_model_dir):
    """The real all-MiniLM-L6-v2 as E (tiny random P): export verifies cosine >= 0.9999 itself, and so do we."""
    model = _saved(tmp_path, tiny_model_dir, "minilm-l6")
    out = export(tmp_path / "saved", tmp_path / "out", INSTRUCTIONS)
    cosines, _ = _cosines(model, out, trust_remote_code=True)
    for name, values in cosines.items():
        assert values.min() >= 0.9999, (name, values)


@pytest.mark.slow
def test_real_decoder_suffix_export(tmp_path, tiny_model_dir):
    """SmolLM2-135M-Instruct as E (a tiny random P), prompt after the text (`auto`): export verifies itself through
    sentence-transformers and plain transformers, and its chat template stays the tokenizer's own."""
    from transformers import AutoTokenizer

    model = _saved(tmp_path, tiny_model_dir, "smollm2-135m")
    assert model.backbone.prompt_position == "suffix"
    out = export(tmp_path / "saved", tmp_path / "out", INSTRUCTIONS)
    cosines, _ = _cosines(model, out)
    for name, values in cosines.items():
        assert values.min() >= 0.9999, (name, values)
    assert "<|im_start|>" in AutoTokenizer.from_pretrained(out).chat_template


def test_exported_folder_served(gemma_export):
    """`serve` on an exported folder: tasks are its compiled prompts; free-text instructions are refused."""
    pytest.importorskip("fastapi")
    from serving_utils import ThreadServer, request

    from promptembedder.serving import ServerSettings, create_app, load_backend

    model, out, _ = gemma_export
    with ThreadServer(create_app(load_backend(out), ServerSettings("exported"))) as server:
        status, body = request(server.port, "POST", "/v1/embeddings", {"input": TEXTS, "task": "topic"})
        assert status == 200
        got = np.array([item["embedding"] for item in body["data"]])
        assert np.sum(got * model.encode(TEXTS, instruction=INSTRUCTIONS["topic"]), axis=1).min() >= 0.9999
        status, body = request(server.port, "POST", "/v1/embeddings", {"input": "x", "instruction": "free text"})
        assert status == 400 and body["error"]["param"] == "instruction"


@pytest.fixture(scope="module")
def suffix_export(tmp_path_factory, tiny_model_dir):
    """The default for a last-token decoder: `auto` puts the prompt after the text (max length 24: truncation)."""
    tmp = tmp_path_factory.mktemp("export_suffix")
    model = _saved(tmp, tiny_model_dir, str(tiny_model_dir("gemma3")), prompt_position="auto", max_length=24,
                   prompt_on="query")
    assert model.backbone.prompt_position == "suffix" and model.backbone.pooling == "last"
    return model, export(tmp / "saved", tmp / "out", INSTRUCTIONS, verify=False)


def test_suffix_export_matches_encode_in_sentence_transformers_and_transformers(suffix_export):
    """prompt_name puts the tokens after the text, a too-long text keeps them (as our truncation does), no
    prompt_name is the bare document side, and plain transformers on text + tokens gives the same vectors."""
    from promptembedder.export.exporter import plain_embeddings

    model, out = suffix_export
    texts = [*TEXTS, "word " * 40]  # over 24 tokens: truncated before the prompt, as PromptEmbedder truncates
    cosines, st = _cosines(model, out)
    for name, instruction in INSTRUCTIONS.items():
        ours = model.encode(texts, instruction=instruction)
        assert np.sum(ours * st.encode(texts, prompt_name=name, batch_size=3), axis=1).min() >= 0.9999, name
        tokens = "".join(f"<pe:{name}:{i}>" for i in range(3))
        plain = plain_embeddings(out, [text + tokens for text in TEXTS], "last")
        assert np.sum(ours[: len(TEXTS)] * plain, axis=1).min() >= 0.9999, name
        assert np.sum(ours * model.encode(texts, prompt_type="document"), axis=1).max() < 0.9999  # prompt matters
    bare = model.encode(TEXTS, prompt_type="document", instruction=INSTRUCTIONS["sts"])  # prompt_on="query"
    assert np.sum(bare * st.encode(TEXTS), axis=1).min() >= 0.9999
    assert np.sum(model.encode_document(TEXTS) * st.encode_document(TEXTS), axis=1).min() >= 0.9999
    assert np.sum(model.encode_query(TEXTS) * st.encode_query(TEXTS), axis=1).min() >= 0.9999  # default instruction
    assert np.sum(model.encode_query(TEXTS) * bare, axis=1).max() < 0.9999
    assert not (out / "prompt_pooling.py").exists()  # built-in modules: no trust_remote_code
    config = json.loads((out / "config_sentence_transformers.json").read_text())
    assert config["prompts"]["topic"] == "<pe:topic:0><pe:topic:1><pe:topic:2>"
    assert json.loads((out / "promptembedder_export.json").read_text())["prompt_position"] == "suffix"
    card = (out / "README.md").read_text()
    assert "Append a task's tokens" in card and 'text + "<pe:sts:0><pe:sts:1><pe:sts:2>"' in card


def test_suffix_export_verifies_itself(suffix_export):
    from promptembedder.export.exporter import verify_export

    model, out = suffix_export
    assert min(verify_export(out, model, list(INSTRUCTIONS)).values()) >= 0.9999
    with torch.no_grad():  # a model that is not the exported one: the check must fail
        model.alignment.linear.weight.add_(0.5)
    model.train().eval()  # P's prompt cache holds the old prompt until training mode empties it
    try:
        with pytest.raises(RuntimeError, match="cosine"):
            verify_export(out, model, ["sts"])
    finally:
        with torch.no_grad():
            model.alignment.linear.weight.sub_(0.5)
        model.train().eval()


def test_suffix_export_served_through_the_openai_client(suffix_export):
    """`serve` on a suffix export, asked by the openai client: the task's tokens go after each text."""
    pytest.importorskip("fastapi")
    openai = pytest.importorskip("openai")
    from serving_utils import ThreadServer

    from promptembedder.serving import ServerSettings, create_app, load_backend

    model, out = suffix_export
    with ThreadServer(create_app(load_backend(out), ServerSettings("exported"))) as server:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="unused")
        response = client.embeddings.create(model="exported", input=TEXTS, extra_body={"task": "sts"})
    got = np.array([item.embedding for item in response.data])
    assert np.sum(got * model.encode(TEXTS, instruction=INSTRUCTIONS["sts"]), axis=1).min() >= 0.9999


def test_mean_pooled_suffix_prompt_is_refused_with_advice(tmp_path, tiny_model_dir):
    """A prompt after the text left out of a mean is what sentence-transformers cannot express: refused before
    anything is written."""
    _saved(tmp_path, tiny_model_dir, str(tiny_model_dir("bert")), prompt_position="suffix")
    with pytest.raises(ValueError, match="promptembedder serve"):
        export(tmp_path / "saved", tmp_path / "out", INSTRUCTIONS, verify=False)
    assert not (tmp_path / "out").exists()


def test_model_card_names_the_dev_metric_and_reads_older_summaries() -> None:
    """The card says what the dev score is (selection may be on SciFact's nDCG@10); summaries written before
    `dev_metric` existed were STS-B Spearman under `*_dev_spearman`."""
    from promptembedder.hub.model_card import _model_lines
    from promptembedder.models.config import PromptEmbedderConfig

    config = PromptEmbedderConfig(embedding_model="tiny")
    new = _model_lines(config, {"summary": {"best_dev_score": 61.234, "dev_metric": "scifact ndcg_at_10"}})
    assert "| Dev scifact ndcg_at_10 (best) | 61.23 |" in new
    old = _model_lines(config, {"summary": {"best_dev_spearman": 80.0, "final_dev_spearman": 79.5}})
    assert {"| Dev sts-b spearman (best) | 80.00 |", "| Dev sts-b spearman (final) | 79.50 |"} <= set(old)
