"""Shared fixtures: a tiny random Llama generator with a real byte-level BPE tokenizer and ChatML
template, and a tiny corpus registered as a JSONL domain. Everything is built in tmp dirs."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

import pytest

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

TINY_PASSAGES = [
    {"id": "p0", "title": "Nobel Prize in Physics", "text": "The first Nobel Prize in Physics was awarded in 1901 to "
     "Wilhelm Conrad Röntgen for the discovery of X-rays."},
    {"id": "p1", "title": "Nobel Prize in Chemistry", "text": "The first Nobel Prize in Chemistry went to Jacobus van "
     "'t Hoff in 1901 for chemical dynamics."},
    {"id": "p2", "title": "Eiffel Tower", "text": "The Eiffel Tower is a wrought-iron lattice tower in Paris, built "
     "for the 1889 World's Fair."},
    {"id": "p3", "title": "<img src=x onerror=alert(1)>", "text": "A passage with markup <script>alert('x')</script> "
     "that must be shown as text, never run."},
    {"id": "p4", "title": "Python", "text": "Python is a programming language created by Guido van Rossum."},
    {"id": "p5", "title": "Röntgen", "text": "Wilhelm Röntgen was a German physicist who discovered X-rays in 1895."},
    {"id": "p6", "title": "Paris", "text": "Paris is the capital and most populous city of France."},
]
TINY_QUERIES = [
    {"id": "q0", "text": "who got the first nobel prize in physics", "answers": ["Wilhelm Conrad Röntgen"],
     "gold_ids": ["p0"], "answer_type": "short", "split": "test"},
    {"id": "q1", "text": "where is the eiffel tower", "answers": ["Paris"], "gold_ids": ["p2", "p6"],
     "answer_type": "short", "split": "dev"},
    {"id": "q2", "text": "who created python", "answers": ["Guido van Rossum"], "gold_ids": ["p4"],
     "answer_type": "short", "split": "train"},
]


def build_tiny_tokenizer(folder: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [p["title"] + ": " + p["text"] for p in TINY_PASSAGES] + [q["text"] for q in TINY_QUERIES] + [
        "You are a helpful assistant. Your task is to extract relevant information from provided documents "
        "and to answer to questions as briefly as possible. Background: Document Question:",
        "Yes No yes no Yes, No. Answer with one of Yes, No.",
    ]
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus * 3, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    fast.chat_template = CHATML
    fast.save_pretrained(folder)
    return fast


@pytest.fixture(scope="session")
def tiny_generator_dir(tmp_path_factory) -> Path:
    """A 2-layer random Llama (hidden 64, 4 query / 2 kv heads) with the tiny tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    tok = build_tiny_tokenizer(folder)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@contextmanager
def registered_domain(folder: Path, name: str, queries: list[dict], passages: list[dict], cluster: str):
    """A JSONL domain written to `folder` and registered for the duration of the block."""
    from mdrag.data.benchmark import load_domain
    from mdrag.data.domains import DOMAINS, register_jsonl_domain

    spec = register_jsonl_domain(name, write_jsonl(folder / "q.jsonl", queries),
                                 write_jsonl(folder / "p.jsonl", passages), cluster=cluster)
    try:
        yield load_domain(name)
    finally:
        DOMAINS.pop(spec.name, None)


@pytest.fixture
def tiny_domain(tmp_path):
    """The tiny corpus registered as domain 'tiny' (unregistered again afterwards)."""
    with registered_domain(tmp_path, "tiny", TINY_QUERIES, TINY_PASSAGES, "test") as domain:
        yield domain


@pytest.fixture(scope="session")
def packaged_judge_dir() -> Path:
    """The packaged 1.5B judge joined and converted into this run's cache before a test needs it (about two
    minutes once per cache), so no test's own time limit pays for the conversion."""
    from mdrag.generation.split_gguf import QWEN_JUDGE

    return QWEN_JUDGE.converted_dir()


@pytest.fixture
def float32_generation(monkeypatch):
    """Generation in float32 for every engine this test builds from the environment (the CLI's, the app's,
    `make_engine`'s), whatever the CPU's default (bfloat16 where it is native): a test that compares generated
    text across code paths must not depend on bf16 rounding, which changes with batch composition."""
    monkeypatch.setenv("MDRAG_DTYPE", "float32")


@pytest.fixture
def make_engine():
    """A fresh engine per call (settings from the environment, overridden by keywords): nothing is shared with
    any other test, so no cache needs clearing."""
    from mdrag.engine import Engine, Settings

    return lambda **flags: Engine(Settings.from_env(**flags))


@pytest.fixture(scope="session")
def real_engine():
    """One engine on the packaged models for the real-model tests of this session (settings from the
    environment, as `python app.py` builds its own)."""
    from mdrag.engine import Engine, Settings

    return Engine(Settings.from_env())


@pytest.fixture
def tiny_engine(tiny_generator_dir, tiny_adapters_root, monkeypatch):
    """A fresh engine on the tiny generator and its random adapters, in float32 (the same numbers on every CPU)."""
    from mdrag.engine import Engine, Settings

    monkeypatch.setenv("MDRAG_ADAPTERS", str(tiny_adapters_root))
    return Engine(Settings(dtype="float32", generator=str(tiny_generator_dir)))


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Derived files of the tests go to a tmp cache unless MDRAG_CACHE is set (CI reuses one)."""
    if "MDRAG_CACHE" not in os.environ:
        os.environ["MDRAG_CACHE"] = str(tmp_path_factory.mktemp("mdrag-cache"))
    yield


def make_random_adapter(base_dir: Path, variant: str, folder: Path, scale: float = 0.3, seed: int = 0) -> Path:
    """Random LoRA (A and B) scaled so outputs differ from the base without turning to garbage."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from mdrag.hashing import folder_fingerprint
    from mdrag.training.lora import lora_config
    from mdrag.training.trainer import save_adapter

    model = AutoModelForCausalLM.from_pretrained(base_dir)
    cfg = lora_config(variant, model.config)
    cfg.init_lora_weights = False
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, cfg)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.mul_(scale)
    save_adapter(peft_model, folder, {"variant": variant, "base_model": base_dir.name,
                                      "base_fingerprint": folder_fingerprint(base_dir)})
    return folder


@pytest.fixture(scope="session")
def tiny_adapters_root(tiny_generator_dir, tmp_path_factory) -> Path:
    """Random full, qk_att and mlp adapters for the tiny generator (point MDRAG_ADAPTERS here)."""
    root = tmp_path_factory.mktemp("adapters")
    for i, v in enumerate(["full", "qk_att", "mlp"]):
        make_random_adapter(tiny_generator_dir, v, root / v, scale=1.0, seed=i)
    return root


@pytest.fixture(scope="session")
def chromium():
    """Debian's chromium driven by Playwright (`make test` installs it with apt)."""
    import os

    from playwright.sync_api import sync_playwright

    path = os.environ.get("MDRAG_CHROMIUM", "/usr/bin/chromium")
    if not Path(path).exists():
        pytest.fail(f"Browser tests need chromium at {path}: apt-get install -y chromium (make test does it)")
    with sync_playwright() as p:
        # Sandboxed iframes run out of process; without this flag their requests are invisible to the test.
        browser = p.chromium.launch(executable_path=path, headless=True,
                                    args=["--disable-features=IsolateSandboxedIframes"])
        yield browser
        browser.close()


@pytest.fixture
def make_tiny_trace(tiny_domain, tiny_engine):
    """Build a trace of the tiny pipeline (on `tiny_engine`) for the given variants (tiny adapters), answers
    optionally cut short (the random model rambles; analysis tests want short forwards)."""

    def make(variants: list[str], top_k: int = 3, max_answer_tokens: int | None = None):
        pipe = tiny_engine.pipeline(tiny_domain, retriever="bm25", reranker="none", top_k=top_k)
        trace = pipe.run("who got the first nobel prize in physics", variants=variants)
        if max_answer_tokens is not None:
            for answer in trace.answers.values():
                answer.token_ids = answer.token_ids[:max_answer_tokens]
        return trace

    return make
