"""Teachers for sequence-level knowledge distillation (SKD) and the `distill` step.

Paper: the student trains on a teacher's answers generated from the same 5 passages instead of short
gold labels; this keeps long-form answers (recall .32 vs .05 with short labels on the 1B model).
Teachers here:
  - qwen2.5-coder-1.5b (default): the packaged 1.5B judge model (Qwen2.5-Coder-1.5B-Instruct) answering from
    the retrieved passages with the paper's inference prompt, never shown the gold answer, as the paper's
    teacher (Mistral-7B) does. Eleven times the student's size; still far smaller than the paper's teacher.
  - self-distill: the base 135M model, shown the gold answer and asked to answer from the passages in its
    own words. A weak stand-in kept for comparison (variant full_skd_self), labelled so everywhere.
  - hf:<dir>: any local HF causal LM, with the paper's inference prompt (no gold shown).
  - openai:<model>@<base_url>: an OpenAI-compatible chat endpoint (e.g. a vLLM server), greedy.
Labels are appended to a JSONL file one row at a time, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import Protocol

from tqdm import tqdm

from mdrag.config import ASSETS_DIR, LIMITS, generation_dtype
from mdrag.errors import MdragError, UnknownNameError
from mdrag.openai_compat import ChatEndpoint, EndpointError
from mdrag.training.examples import messages

SELF_DISTILL_INSTRUCTION = (
    "\n\nThe correct answer is: {gold}\nUsing the documents, answer the question in your own words in one or two "
    "complete sentences that contain the correct answer."
)


class Teacher(Protocol):
    name: str

    def label(self, question: str, passages: list[str], gold: str) -> str: ...


class _LocalTeacher:
    """Loads its model on the first label, so naming a teacher (to find its labels file) costs nothing."""

    def __init__(self, generator_path: str | None, show_gold: bool):
        from mdrag.generation.model import resolve_generator_dir

        self.folder = resolve_generator_dir(generator_path)
        self.show_gold = show_gold
        self._generator = None

    def label(self, question: str, passages: list[str], gold: str) -> str:
        from mdrag.generation.generator import Generator
        from mdrag.generation.model import load_generator

        if self._generator is None:
            # the CPU's generation dtype, as the labels shipped in assets/teacher_labels were made
            self._generator = Generator(load_generator(str(self.folder)), LIMITS.max_new_tokens,
                                        dtype=generation_dtype())
        msgs = messages(question, passages)
        if self.show_gold:
            msgs[-1]["content"] += SELF_DISTILL_INSTRUCTION.format(gold=gold)
        ids = self._generator.tokenizer.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True,
                                                           return_dict=True)["input_ids"]
        (gen,) = self._generator.generate(list(ids), ["vanilla"])
        return gen.text


class SelfDistillTeacher(_LocalTeacher):
    def __init__(self, generator_path: str | None = None):
        super().__init__(generator_path, show_gold=True)
        self.name = f"self-distill:{self.folder.name} (base model shown the gold answer; weak stand-in)"


class HFTeacher(_LocalTeacher):
    def __init__(self, path: str):
        super().__init__(path, show_gold=False)
        self.name = f"hf:{Path(path).name}"


class PackagedTeacher(HFTeacher):
    """The packaged 1.5B model (joined and converted once, like the judge) with the paper's prompt."""

    def __init__(self):
        from mdrag.generation.split_gguf import QWEN_JUDGE

        super().__init__(str(QWEN_JUDGE.converted_dir()))
        self.name = "qwen2.5-coder-1.5b (packaged 1.5B; paper prompt, retrieved passages, no gold)"


class OpenAITeacher(ChatEndpoint):
    """Chat completions at `base_url` (e.g. http://127.0.0.1:8000/v1), greedy, 128 tokens."""

    def label(self, question: str, passages: list[str], gold: str) -> str:
        try:
            choice = self.complete(messages(question, passages), max_tokens=LIMITS.max_new_tokens)
            return choice["message"]["content"].strip()
        except (EndpointError, KeyError, TypeError, AttributeError) as err:
            raise MdragError(f"Teacher {err}") from err


DEFAULT_TEACHER = "qwen2.5-coder-1.5b"


def get_teacher(spec: str = DEFAULT_TEACHER) -> Teacher:
    if spec in ("qwen2.5-coder-1.5b", "default"):
        return PackagedTeacher()
    if spec in ("self-distill", "self"):
        return SelfDistillTeacher()
    if spec.startswith("hf:"):
        return HFTeacher(spec[3:])
    if spec.startswith("openai:") and "@" in spec:
        model, url = spec[len("openai:"):].split("@", 1)
        return OpenAITeacher(model, url)
    if spec.startswith("openai:"):
        raise UnknownNameError(f"Teacher '{spec}' needs its server: openai:<model>@<base_url>.")
    raise UnknownNameError(f"Unknown teacher '{spec}'. Use {DEFAULT_TEACHER}, self-distill, hf:<local dir> or "
                           "openai:<model>@<base_url>.")


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.split(" (")[0].lower()).strip("-")


def labels_path(teacher: Teacher, examples_key: str, root: Path | None = None) -> Path:
    return (root or ASSETS_DIR / "teacher_labels") / f"{examples_key}-{slug(teacher.name)}.jsonl"


def distill(examples: list[dict], teacher: Teacher, path: Path) -> dict[str, str]:
    """Teacher labels for every example, appended row by row (resumable: done ids are skipped)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _drop_torn_tail(path)
    done = read_labels(path)
    todo = [e for e in examples if e["query_id"] not in done]
    with path.open("a", encoding="utf-8") as f:
        for ex in tqdm(todo, desc=f"distill ({teacher.name.split(' (')[0]})", unit="example",
                       initial=len(examples) - len(todo), total=len(examples)):
            answer = teacher.label(ex["question"], ex["passages"], ex["gold"])
            row = {"query_id": ex["query_id"], "gold": ex["gold"], "teacher_answer": answer, "teacher": teacher.name}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            done[ex["query_id"]] = answer
    return {**done, "__teacher__": teacher.name}


def _drop_torn_tail(path: Path) -> None:
    """A run killed mid-write leaves a last line without its newline: cut it so appends start clean."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def read_labels(path: Path) -> dict[str, str]:
    """query_id -> teacher answer; a torn last line (killed mid-write) is ignored and redone."""
    out: dict[str, str] = {}
    if not path.exists():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        out[row["query_id"]] = row["teacher_answer"]
    return out


def label_report(examples: list[dict], labels: dict[str, str]) -> dict:
    """Teacher vs gold labels: length distribution (words) and how often the gold answer is contained."""
    gold = [e["gold"] for e in examples if e["query_id"] in labels]
    teach = [labels[e["query_id"]] for e in examples if e["query_id"] in labels]

    def lengths(texts: list[str]) -> dict:
        n = [len(t.split()) for t in texts] or [0]
        return {"mean": statistics.mean(n), "median": statistics.median(n), "min": min(n), "max": max(n)}

    contained = sum(g.lower() in t.lower() for g, t in zip(gold, teach, strict=True))
    return {"examples": len(teach), "gold_words": lengths(gold), "teacher_words": lengths(teach),
            "gold_contained_in_teacher": contained / len(teach) if teach else 0.0,
            "teacher": labels.get("__teacher__", "?")}


def teacher_comparison(examples: list[dict], folder: Path, examples_key: str):
    """One row per teacher whose labels for these examples are in `folder`: label length (words) and how often
    the gold answer is contained, beside the gold labels themselves (SKD wants longer labels that keep the
    answer)."""
    import pandas as pd

    rows = []
    for path in sorted(folder.glob(f"{examples_key}-*.jsonl")):
        labels = read_labels(path)
        teacher = next((json.loads(line).get("teacher") for line in path.read_text(encoding="utf-8").splitlines()[:1]),
                       path.stem)
        found = label_report(examples, {**labels, "__teacher__": teacher})
        rows.append({"teacher": teacher, "labelled": found["examples"],
                     "mean words": found["teacher_words"]["mean"], "median words": found["teacher_words"]["median"],
                     "max words": found["teacher_words"]["max"],
                     "gold contained": found["gold_contained_in_teacher"]})
    gold = label_report(examples, {e["query_id"]: e["gold"] for e in examples})
    rows.append({"teacher": "(gold labels)", "labelled": gold["examples"], "mean words": gold["gold_words"]["mean"],
                 "median words": gold["gold_words"]["median"], "max words": gold["gold_words"]["max"],
                 "gold contained": 1.0})
    return pd.DataFrame(rows)
