"""The shipped adapters on the real SmolLM2-135M base. Marked slow."""

import json

import pytest
import torch

from mdrag.config import ASSETS_DIR
from mdrag.generation.adapters import attach_adapter, update_norms
from mdrag.generation.generator import Generator
from mdrag.generation.model import load_generator, resolve_generator_dir
from mdrag.generation.prompts import build_prompt
from mdrag.generation.variants import SCALINGS, get_variant
from mdrag.hashing import folder_fingerprint

pytestmark = pytest.mark.slow
SHIPPED = ["full", "qk_att", "att", "mlp", "full_skd", "full_skd_self", "qk_att_eq"]
CONTROLS = ["full_shuf", "qk_att_shuf", "qk_att_rs", "full_rs"]  # cards checked; batching is covered by SHIPPED
PASSAGES = ["List of Nobel laureates in Physics: The first Nobel Prize in Physics was awarded in 1901 to Wilhelm "
            "Conrad Röntgen, of Germany."]


@pytest.mark.parametrize("variant", SHIPPED + CONTROLS)
def test_shipped_adapter_has_a_card_for_this_base(variant):
    folder = ASSETS_DIR / "adapters" / variant
    card = json.loads((folder / "card.json").read_text())
    assert card["variant"] == variant and card["base_fingerprint"] == folder_fingerprint(resolve_generator_dir())
    for key in ("rank", "examples", "steps", "final_loss", "wall_seconds_this_run", "versions", "labels", "tokens"):
        assert card[key] is not None
    spec = get_variant(variant)
    assert card["labels"] == spec.labels
    assert card["lora_alpha"] == SCALINGS[spec.scaling].alpha(card["rank"])  # the registry's scaling convention
    assert card.get("use_rslora", False) == SCALINGS[spec.scaling].rslora
    config = json.loads((folder / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["use_rslora"]) == (card["rank"], card["lora_alpha"],
                                                                         SCALINGS[spec.scaling].rslora)
    assert card.get("passage_order", "rerank").startswith("shuffled" if spec.shuffle else "rerank")
    if spec.teacher:
        assert card["teacher"].startswith(spec.teacher)
    assert len(update_norms(folder)) > 0


@pytest.mark.parametrize("variant", ["full", "qk_att"])
def test_shipped_adapter_changes_logits_and_merged_equals_unmerged(variant):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base_dir = resolve_generator_dir()
    tok = load_generator().tokenizer
    ids = torch.tensor([build_prompt(tok, "who got the first nobel prize in physics", PASSAGES).input_ids])
    base = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    with torch.no_grad():
        vanilla = base(ids).logits[0, -1]
    model = attach_adapter(base, variant, ASSETS_DIR / "adapters" / variant, folder_fingerprint(base_dir))
    with torch.no_grad():
        adapted = model(ids).logits[0, -1]
        assert (adapted - vanilla).abs().max() > 1e-2  # the adapter changes the answer distribution
        merged = model.merge_and_unload()
        torch.testing.assert_close(merged(ids).logits[0, -1], adapted, rtol=1e-4, atol=1e-3)
    assert isinstance(model, PeftModel)


def test_all_shipped_adapters_answer_in_one_batch_like_alone(float32_generation):
    loaded = load_generator()
    gen = Generator(loaded, max_new_tokens=24)
    prompt = build_prompt(loaded.tokenizer, "who got the first nobel prize in physics", PASSAGES).input_ids
    variants = ["vanilla", *SHIPPED]
    batched = {g.variant: g.token_ids for g in gen.generate(prompt, variants)}
    for v in ["vanilla", "qk_att", "full_skd"]:
        assert gen.generate(prompt, [v])[0].token_ids == batched[v]
