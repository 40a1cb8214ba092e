"""LoRA variants on a tiny random Llama: budgets, training, resume, many adapters on one base, bad adapters."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import make_random_adapter
from safetensors.torch import load_file

from mdrag.errors import MissingModelError, UnknownNameError
from mdrag.generation.adapters import AdapterError, attach_adapter, check_adapter, update_norms
from mdrag.generation.generator import Generator
from mdrag.generation.model import load_generator
from mdrag.generation.variants import ALL_LINEAR, SCALINGS, VARIANTS, get_variant, lora_parameters, matched_rank
from mdrag.hashing import folder_fingerprint
from mdrag.training.lora import budget_table, lora_config, variant_rank
from mdrag.training.trainer import TrainSettings, train_variant

TRAINED = [v for v in VARIANTS.values() if not v.is_base]


def smollm_like():
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                       num_key_value_heads=3, vocab_size=49152)


def llama_1b_like():
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=128256)


def tiny_config(tiny_generator_dir):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(tiny_generator_dir)


@pytest.mark.parametrize("make_config", [smollm_like, llama_1b_like, "tiny"])
@pytest.mark.parametrize("spec", TRAINED, ids=lambda s: s.name)
def test_budgets_match_full_lora_within_2_percent(make_config, spec, tiny_generator_dir):
    config = tiny_config(tiny_generator_dir) if make_config == "tiny" else make_config()
    full = lora_parameters(config, ALL_LINEAR, 16)
    n = lora_parameters(config, spec.target_modules, variant_rank(spec, config))
    assert abs(n / full - 1) <= 0.02


def test_smollm_ranks_are_the_measured_ones():
    assert matched_rank(smollm_like(), ("q_proj", "k_proj")) == 85  # 4.90M vs Full's 4.88M (VERIFIED.md)
    rows = {r["variant"]: r for r in budget_table(smollm_like())}
    assert rows["full"]["trainable"] == 4_884_480 and rows["qk_att"]["rank"] == 85


@pytest.mark.parametrize("spec", TRAINED, ids=lambda s: s.name)
def test_peft_trains_exactly_the_registry_count(spec, tiny_generator_dir):
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_generator_dir)
    cfg = lora_config(spec.name, model.config)
    peft_model = get_peft_model(model, cfg)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert trainable == lora_parameters(model.config, spec.target_modules, cfg.r)
    assert cfg.lora_alpha == SCALINGS[spec.scaling].alpha(cfg.r) and cfg.lora_dropout == 0.1
    assert cfg.use_rslora == (spec.scaling == "rslora")


def test_unknown_variant_lists_known_ones():
    with pytest.raises(UnknownNameError, match="vanilla, full, qk_att, att, mlp, full_skd"):
        get_variant("dora")


def _examples(n=6):
    from conftest import TINY_PASSAGES

    passages = [p["title"] + ": " + p["text"] for p in TINY_PASSAGES[:3]]
    return [{"query_id": f"q{i}", "question": f"question number {i} about python", "passages": passages,
             "passage_ids": [], "gold": "Guido van Rossum" if i % 2 else "Paris"} for i in range(n)]


@pytest.mark.parametrize("variant", ["full", "qk_att", "att", "mlp"])
def test_a_training_step_changes_only_the_intended_modules(variant, tiny_generator_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MDRAG_CACHE", str(tmp_path / "cache"))
    card = train_variant(variant, generator_path=str(tiny_generator_dir), examples=_examples(2),
                         settings=TrainSettings(max_steps=2), out_dir=tmp_path / "out")
    weights = load_file(tmp_path / "out" / "adapter_model.safetensors")
    targets = set(get_variant(variant).target_modules)
    touched = {k.split(".lora_")[0].rsplit(".", 1)[-1] for k in weights}
    assert touched == targets
    # LoRA B starts at zero: every targeted B moved, so every intended module changed
    assert all(w.abs().sum() > 0 for k, w in weights.items() if ".lora_B." in k)
    assert card["steps"] == 2 and card["base_fingerprint"] == folder_fingerprint(tiny_generator_dir)
    cfg = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert str(tmp_path) not in cfg["base_model_name_or_path"]  # no machine paths in shipped files


def test_resume_from_checkpoint_equals_an_uninterrupted_run(tiny_generator_dir, tmp_path, monkeypatch):
    from transformers import TrainerCallback

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3:
                raise KeyboardInterrupt("killed")

    examples, settings = _examples(6), TrainSettings(save_steps=2)
    monkeypatch.setenv("MDRAG_CACHE", str(tmp_path / "a"))
    straight = train_variant("full", generator_path=str(tiny_generator_dir), examples=examples, settings=settings,
                             out_dir=tmp_path / "straight")
    monkeypatch.setenv("MDRAG_CACHE", str(tmp_path / "b"))
    with pytest.raises(KeyboardInterrupt):
        train_variant("full", generator_path=str(tiny_generator_dir), examples=examples, settings=settings,
                      out_dir=tmp_path / "resumed", callbacks=[Kill()])
    card = train_variant("full", generator_path=str(tiny_generator_dir), examples=examples, settings=settings,
                         out_dir=tmp_path / "resumed")
    assert card["resumed_from"] == "checkpoint-2" and card["steps"] == 6
    # the card's mean loss covers all six steps, the two before the kill included
    assert card["mean_loss"] == pytest.approx(straight["mean_loss"], rel=1e-3)
    a = load_file(tmp_path / "straight" / "adapter_model.safetensors")
    b = load_file(tmp_path / "resumed" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-3)  # fp16 storage
    assert any(a[k].abs().sum() > 0 for k in a if "lora_B" in k)


def test_training_autocasts_to_bf16_only_where_it_is_native_and_resumes_only_its_own_precision(
        tiny_generator_dir, tmp_path, monkeypatch):
    """TRL's default (bf16 autocast) is emulated ~10x slower on an AVX2-only CPU: the default precision follows the
    hardware, reaches the Trainer, is written on the card, and a run never resumes another precision's checkpoint."""
    from transformers import TrainerCallback

    import mdrag.config
    from mdrag.training.trainer import resolve_precision

    native_here = mdrag.config.native_bf16()
    if not torch.cuda.is_available():
        assert resolve_precision() == ("bf16" if native_here else "fp32")
        for native, want in ((True, "bf16"), (False, "fp32")):
            monkeypatch.setattr(mdrag.config, "native_bf16", lambda native=native: native)
            assert resolve_precision() == want
    assert resolve_precision("bf16") == "bf16"
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("fp8")

    seen = []

    class Watch(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            seen.append((args.bf16, args.gradient_checkpointing))
            if state.global_step == 2 and args.bf16 is False:
                raise KeyboardInterrupt("killed")

    monkeypatch.setenv("MDRAG_CACHE", str(tmp_path / "cache"))
    run = dict(generator_path=str(tiny_generator_dir), examples=_examples(4), out_dir=tmp_path / "out",
               callbacks=[Watch()])
    with pytest.raises(KeyboardInterrupt):  # an fp32 run killed after its checkpoint-2
        train_variant("full", settings=TrainSettings(save_steps=2, precision="fp32"), **run)
    assert set(seen) == {(False, False)}
    seen.clear()
    card = train_variant("full", settings=TrainSettings(save_steps=2, precision="bf16"), **run)
    assert set(seen) == {(True, False)} and card["precision"] == "bf16" and card["resumed_from"] is None
    assert card["cpu"]["native_bf16"] == native_here
    card = train_variant("full", settings=TrainSettings(save_steps=2, precision="fp32"), **{**run, "callbacks": []})
    assert card["precision"] == "fp32" and card["resumed_from"] == "checkpoint-2" and card["steps"] == 4


@pytest.fixture(scope="module")
def adapters_root(tiny_adapters_root):
    return tiny_adapters_root


def test_batched_variants_equal_each_variant_alone(tiny_generator_dir, adapters_root, monkeypatch):
    monkeypatch.setenv("MDRAG_ADAPTERS", str(adapters_root))
    loaded = load_generator(str(tiny_generator_dir))
    gen = Generator(loaded, max_new_tokens=24)
    prompt = loaded.tokenizer("Background: Document 1: Python is a language. Question: who created python")["input_ids"]
    variants = ["vanilla", "full", "qk_att", "mlp"]
    batched = {g.variant: g.token_ids for g in gen.generate(prompt, variants)}
    alone = {v: gen.generate(prompt, [v])[0].token_ids for v in variants}
    assert batched == alone
    assert len({tuple(t) for t in batched.values()}) >= 3  # the adapters really change the answers
    assert set(loaded.model.peft_config) >= {"full", "qk_att", "mlp"}  # all on one base, loaded once


def test_update_norms_match_peft_delta_weights(tiny_generator_dir, adapters_root):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    rows = update_norms(adapters_root / "qk_att")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_generator_dir),
                                      str(adapters_root / "qk_att"), adapter_name="qk_att")
    layer = model.base_model.model.model.layers[1].self_attn.k_proj
    want = layer.get_delta_weight("qk_att").norm().item()
    got = next(r["norm"] for r in rows if r["layer"] == 1 and r["module"] == "k_proj")
    assert got == pytest.approx(want, rel=1e-4)
    assert {r["module"] for r in rows} == {"q_proj", "k_proj"} and len(rows) == 2 * 2


@pytest.fixture
def fresh_base(tiny_generator_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_generator_dir).eval()


def _logits(model):
    with torch.no_grad():
        return model(torch.tensor([[5, 6, 7, 8]])).logits


def _other_base(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    other = tmp_path / "other-base"
    LlamaForCausalLM(LlamaConfig(vocab_size=600, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=2, num_key_value_heads=1)).save_pretrained(other)
    from conftest import build_tiny_tokenizer

    build_tiny_tokenizer(other)
    return other


def _corrupt(kind, good, tmp_path, tiny_generator_dir):
    bad = tmp_path / kind
    if kind == "wrong-shape":
        other = _other_base(tmp_path)
        make_random_adapter(other, "full", bad)
        card = json.loads((bad / "card.json").read_text())
        (bad / "card.json").write_text(json.dumps({**card, "base_fingerprint": None}))  # only shapes can tell
        return bad, "does not fit the loaded base"
    shutil.copytree(good, bad)
    if kind == "truncated":
        data = (bad / "adapter_model.safetensors").read_bytes()
        (bad / "adapter_model.safetensors").write_bytes(data[: len(data) // 3])
        return bad, "truncated or not safetensors"
    if kind == "pickle":
        (bad / "adapter_model.safetensors").rename(bad / "adapter_model.bin")
        return bad, "Refusing pickle"
    if kind == "missing":
        (bad / "adapter_model.safetensors").unlink()
        return bad, "adapter_model.safetensors"
    if kind == "not-safetensors":
        (bad / "adapter_model.safetensors").write_bytes(b"\x80\x04\x95 this is a pickle")
        return bad, "truncated or not safetensors"
    if kind == "other-base-hash":
        card = json.loads((bad / "card.json").read_text())
        (bad / "card.json").write_text(json.dumps({**card, "base_fingerprint": "feedfacefeedface"}))
        return bad, "trained on base"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["truncated", "pickle", "missing", "not-safetensors", "other-base-hash",
                                  "wrong-shape"])
def test_bad_adapters_fail_cleanly_and_leave_the_base_untouched(kind, fresh_base, adapters_root, tmp_path,
                                                                tiny_generator_dir):
    bad, match = _corrupt(kind, adapters_root / "full", tmp_path, tiny_generator_dir)
    before = _logits(fresh_base)
    error = MissingModelError if kind == "missing" else AdapterError
    with pytest.raises(error, match=match):
        attach_adapter(fresh_base, "broken", bad, folder_fingerprint(tiny_generator_dir))
    assert not hasattr(fresh_base, "peft_config") or "broken" not in fresh_base.peft_config
    torch.testing.assert_close(_logits(fresh_base), before, rtol=0, atol=0)
    # and a good adapter still loads afterwards
    model = attach_adapter(fresh_base, "full", adapters_root / "full", folder_fingerprint(tiny_generator_dir))
    assert "full" in model.peft_config


def test_check_adapter_accepts_a_good_one(fresh_base, adapters_root, tiny_generator_dir):
    card = check_adapter(adapters_root / "mlp", fresh_base, folder_fingerprint(tiny_generator_dir))
    assert card["variant"] == "mlp"


def test_stacked_adapters_equal_peft_mixed_batch(tiny_generator_dir, adapters_root, monkeypatch):
    """The fast many-adapter path gives peft's logits row by row, and peft's greedy tokens."""
    from mdrag.generation.generator import BASE

    monkeypatch.setenv("MDRAG_ADAPTERS", str(adapters_root))
    loaded = load_generator(str(tiny_generator_dir))
    variants = ["vanilla", "full", "qk_att", "mlp", "full"]
    prompt = loaded.tokenizer("Background: Document 1: Python is a language. Question: who made it")["input_ids"]
    reference = Generator(loaded, max_new_tokens=24, fast=False)
    fast = Generator(loaded, max_new_tokens=24, fast=True, dtype="float32")
    assert [g.token_ids for g in fast.generate(prompt, variants)] == \
        [g.token_ids for g in reference.generate(prompt, variants)]

    names = [BASE if v == "vanilla" else v for v in variants]
    ids = torch.tensor([prompt] * len(names))
    stacked = fast.stacked  # the decoder's own stacked copy (float32), every adapter of the batch on it
    with torch.inference_mode():
        want = loaded.model(input_ids=ids, adapter_names=names).logits
        with stacked.rows(names):
            got = stacked.model(input_ids=ids).logits
        plain = stacked.model(input_ids=ids).logits  # outside rows(): the base model, no adapter
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(plain[1], want[0], rtol=1e-4, atol=1e-4)
    assert (got[1] - got[0]).abs().max() > 1e-2  # adapters really act
    # one token per row, as in a decode step: the few-rows base linears (W @ x^T), each row's block of the rank
    step = ids[:, -1:]  # (rows, 1)
    with torch.inference_mode():
        want = loaded.model(input_ids=step, adapter_names=names).logits
        with stacked.rows(names):
            got = stacked.model(input_ids=step).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_stacked_adapter_rows_are_thread_local(tiny_generator_dir, adapters_root, monkeypatch):
    """Two threads generating with different adapters at once each get their own answers."""
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setenv("MDRAG_ADAPTERS", str(adapters_root))
    loaded = load_generator(str(tiny_generator_dir))
    gen = Generator(loaded, max_new_tokens=16)
    prompt = loaded.tokenizer("Question: who created python")["input_ids"]
    alone = {v: gen.generate(prompt, [v])[0].token_ids for v in ("full", "mlp", "vanilla")}
    jobs = ["full", "mlp", "vanilla"] * 4
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda v: gen.generate(prompt, [v])[0].token_ids, jobs))
    assert got == [alone[v] for v in jobs]


def test_streaming_tokens_and_first_token_times(tiny_generator_dir, adapters_root, monkeypatch):
    """on_token sees each variant's text grow to its final answer; the first variant's first token comes
    from its own prefill, before the others'; a row stopping at its first token leaves the rest intact."""
    monkeypatch.setenv("MDRAG_ADAPTERS", str(adapters_root))
    loaded = load_generator(str(tiny_generator_dir))
    variants = ["qk_att", "vanilla", "full", "mlp"]
    prompt = loaded.tokenizer("Background: Document 1: Python is a language. Question: who made it")["input_ids"]
    gen = Generator(loaded, max_new_tokens=12, dtype="float32")
    seen: list[tuple[str, str]] = []
    results = gen.generate(prompt, variants, on_token=lambda v, text: seen.append((v, text)))
    for g in results:
        texts = [t for v, t in seen if v == g.variant]
        assert len(texts) == len(g.token_ids) and (not texts or texts[-1] == g.text)
        assert g.first_token_seconds is not None and 0 < g.first_token_seconds <= g.seconds
    assert seen[0][0] == "qk_att" and results[0].first_token_seconds < min(g.first_token_seconds
                                                                            for g in results[1:])

    # Make one row's first token a stop token (the lone first prefill, or one of the rest): that row ends
    # at prefill; the others must still equal peft's reference path under the same stop set.
    base_stops = set(gen.stop_ids())
    for row in (0, 2):
        stops = sorted(base_stops | {results[row].token_ids[0]})
        monkeypatch.setattr(Generator, "stop_ids", lambda self, stops=stops: stops)
        fast = gen.generate(prompt, variants)
        reference = Generator(loaded, max_new_tokens=12, fast=False).generate(prompt, variants)
        assert fast[row].token_ids == [] and [g.token_ids for g in fast] == [g.token_ids for g in reference]


def test_no_stop_ids_decode_the_full_budget_on_both_paths(tiny_generator_dir, adapters_root, monkeypatch):
    """The benchmark turns stop tokens off (stop_ids() -> []): both paths then decode exactly max_new_tokens
    and agree; the reference path must not fall back to the model's own end-of-sequence token."""
    monkeypatch.setenv("MDRAG_ADAPTERS", str(adapters_root))
    loaded = load_generator(str(tiny_generator_dir))
    prompt = loaded.tokenizer("Background: Document 1: Python is a language. Question: who made it")["input_ids"]
    variants = ["qk_att", "vanilla"]
    gens = {fast: Generator(loaded, max_new_tokens=9, fast=fast, dtype="float32") for fast in (True, False)}
    for gen in gens.values():
        gen.stop_ids = lambda: []
    fast = [g.token_ids for g in gens[True].generate(prompt, variants)]
    assert all(len(ids) == 9 for ids in fast)
    # Make the model's own default end-of-sequence a token these answers contain: generate() would stop there
    # if an empty stop list fell back to the model's generation config.
    base = loaded.model.get_base_model() if hasattr(loaded.model, "get_base_model") else loaded.model
    monkeypatch.setattr(base.generation_config, "eos_token_id", fast[0][0])
    assert [g.token_ids for g in gens[False].generate(prompt, variants)] == fast


def test_only_variants_with_an_adapter_are_offered(tiny_adapters_root, monkeypatch):
    from mdrag.generation.variants import available_variants

    monkeypatch.setenv("MDRAG_ADAPTERS", str(tiny_adapters_root))
    assert available_variants() == ["vanilla", "full", "qk_att", "mlp"]  # registry order; no two-phase adapters
    assert get_variant("qk_att_2p").target_modules == get_variant("qk_att").target_modules


@pytest.mark.parametrize("variant", ["qk_att", "mlp", "full"])
def test_one_adapter_alone_runs_only_its_own_modules_at_its_own_rank(variant, tiny_generator_dir, adapters_root,
                                                                    monkeypatch):
    """With every adapter stacked, a batch of one variant gathers only the modules that adapter targets, at its
    rank (not the stack's padded maximum), and still gives peft's logits."""
    from mdrag.generation import multi_lora

    monkeypatch.setenv("MDRAG_ADAPTERS", str(adapters_root))
    loaded = load_generator(str(tiny_generator_dir))
    prompt = loaded.tokenizer("Background: Document 1: Python is a language. Question: who made it")["input_ids"]
    gen = Generator(loaded, max_new_tokens=1, dtype="float32")
    gen.generate(prompt, ["full", "qk_att", "mlp"])  # stack all
    stacked = gen.stacked
    ids = torch.tensor([prompt])
    with torch.inference_mode():
        with stacked.rows([variant]):
            gathered = dict(multi_lora._LOCAL.gathered)
            got = stacked.model(input_ids=ids).logits
        want = loaded.model(input_ids=ids, adapter_names=[variant]).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    config = loaded.model.peft_config[variant]
    assert gathered and all(name.rsplit(".", 1)[-1] in config.target_modules for name in gathered)
    assert len(gathered) < len(stacked._modules) or variant == "full"
    assert {a.shape[1] for a, _, _ in gathered.values()} == {config.r}


@pytest.mark.parametrize("rows", [1, 2, 3, 8, 9])
@pytest.mark.parametrize("bias", [True, False])
def test_few_rows_linear_equals_torch_linear(rows, bias):
    """The decode-step linear (W @ x^T for a few rows, one row padded to two) computes F.linear's product."""
    from mdrag.generation.multi_lora import _few_rows_linear

    torch.manual_seed(rows)
    layer = torch.nn.Linear(48, 80, bias=bias)
    x = torch.randn(rows, 1, 48)  # (rows, tokens, in): a decode step
    got = _few_rows_linear(layer, x)
    assert got.shape == (rows, 1, 80) and got.is_contiguous()
    torch.testing.assert_close(got, torch.nn.functional.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype, patched", [("float32", True), ("bfloat16", False)])
def test_float32_stacked_model_routes_its_linears_through_the_few_rows_path(dtype, patched, tiny_generator_dir):
    from mdrag.generation.multi_lora import MultiLoraModel, _few_rows_linear

    model = MultiLoraModel.from_pretrained(tiny_generator_dir, getattr(torch, dtype)).model
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all((getattr(m.forward, "func", None) is _few_rows_linear) == patched for m in linears)


def test_choosing_rows_waits_for_an_adapter_being_added(tiny_generator_dir, adapters_root, monkeypatch):
    """A session that first uses an adapter with new target modules changes the stacked model's module table;
    another session choosing its rows meanwhile must see the table before or after, never half-changed."""
    import threading

    from mdrag.generation.multi_lora import MultiLoraModel

    monkeypatch.setenv("MDRAG_ADAPTERS", str(adapters_root))
    loaded = load_generator(str(tiny_generator_dir))
    names = Generator(loaded).ensure_adapters(["full", "mlp"])
    fast = MultiLoraModel.from_pretrained(tiny_generator_dir, torch.float32)
    fast.add_from_peft(loaded.model, "full")
    entered = threading.Event()

    def choose() -> None:
        with fast.rows(["full"]):
            entered.set()

    fast._lock.acquire()  # as add_from_peft holds it while it edits the table
    try:
        worker = threading.Thread(target=choose)
        worker.start()
        assert not entered.wait(0.3)  # waits for the edit to finish
    finally:
        fast._lock.release()
    worker.join(5)
    assert entered.is_set() and names == ["full", "mlp"]


def test_the_rerankers_corpus_table_is_replaced_never_edited_in_place(tiny_domain, monkeypatch):
    """score() of one session iterates the table of prepared corpora while another session prepares a new
    corpus: prepare must swap in a new table (an in-place insert breaks the iteration)."""
    from mdrag.retrieval import rerank

    class NoInPlace(dict):
        def __setitem__(self, key, value):
            raise AssertionError("the corpus table was edited in place")

    before = NoInPlace()
    rr = rerank.MiniLMRescorer()
    rr._known = before
    rr.prepare(tiny_domain)
    assert tiny_domain.fingerprint() in rr._known and rr._known is not before and not before
    assert len(rr.score("who created python", [p.content for p in tiny_domain.passages[:2]])) == 2
