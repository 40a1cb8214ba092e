"""Command line: python -m mdrag {prepare, index, ask, retrieval-eval, domains}."""

from __future__ import annotations

import argparse
import json
import sys
import time

from mdrag.errors import MdragError


def _cmd_prepare(args) -> int:
    from pathlib import Path

    from mdrag.config import BENCHMARK_DIR, RAW_DATA_DIR
    from mdrag.data.benchmark import build_benchmark

    manifest = build_benchmark(Path(args.raw or RAW_DATA_DIR), Path(args.out or BENCHMARK_DIR), args.domains)
    for name, info in manifest["domains"].items():
        print(f"{name:10s} {info['cluster']:11s} passages={info['passages']:6d} queries={info['queries']}")
    return 0


def _domains(arg: str) -> list[str]:
    from mdrag.data.domains import DOMAINS, resolve_domain

    return list(DOMAINS) if arg == "all" else [resolve_domain(d).name for d in arg.split(",")]


def _cmd_index(args) -> int:
    from mdrag.config import ASSETS_DIR
    from mdrag.data.benchmark import load_domain
    from mdrag.retrieval.retrievers import DenseRetriever, SpladeRetriever

    cls = {"splade": SpladeRetriever, "dense": DenseRetriever}[args.retriever]
    for name in _domains(args.domains):
        t0 = time.perf_counter()
        cls(load_domain(name), out=(ASSETS_DIR / "indexes" / name) if args.ship else None)
        print(f"{name}: {args.retriever} index ready ({time.perf_counter() - t0:.1f} s)")
    return 0


def _cmd_domains(args) -> int:
    from mdrag.data.benchmark import load_domain
    from mdrag.data.domains import DOMAINS

    for spec in DOMAINS.values():
        d = load_domain(spec.name)
        print(f"{spec.name:10s} {spec.cluster:11s} {len(d.passages):6d} passages {len(d.queries):5d} queries  "
              f"{spec.description} [{spec.licence}]")
    return 0


def _print_trace(trace) -> None:
    print(f"Query: {trace.query}\nDomain: {trace.domain}   setting: {trace.setting}   "
          f"retriever: {trace.retriever}   reranker: {trace.reranker}")
    if trace.gold_answers:
        print(f"Gold answer(s): {' | '.join(trace.gold_answers)}")
    print("\nPassages given to the generator:")
    for p in trace.passages:
        fs = "-" if p.first_stage_score is None else f"{p.first_stage_score:7.3f}"
        rr = "-" if p.rerank_score is None else f"{p.rerank_score:6.3f}"
        mark = "GOLD" if p.is_gold else "    "
        print(f"  [{p.rank}] {mark} first-stage={fs} rerank={rr} (first-stage rank {p.first_stage_rank})  {p.id}")
        print(f"      {p.content[:200]}{'...' if len(p.content) > 200 else ''}")
    print("\nPrompt:\n" + "-" * 72 + f"\n{trace.prompt}\n" + "-" * 72)
    for name, ans in trace.answers.items():
        print(f"Answer [{name}] ({len(ans.token_ids)} tokens, {ans.seconds:.2f} s): {ans.text}")
    print("\nTimings: " + ", ".join(f"{k} {v:.2f} s" for k, v in trace.timings.items()))


def _cmd_ask(args) -> int:
    from mdrag.pipeline import RagPipeline

    pipe = RagPipeline.for_domain(args.domain, retriever=args.retriever, reranker=args.reranker,
                                  first_k=args.first_k, top_k=args.top_k, generator_path=args.generator)
    setting = "oracle" if args.oracle else "noisy" if args.noisy else "retrieved"
    trace = pipe.run(args.question or "", variants=args.variant.split(","), setting=setting,
                     query_id=args.query_id, seed=args.seed, n_distractors=args.distractors)
    if args.json:
        print(trace.to_json(indent=2))
    else:
        _print_trace(trace)
    return 0


def _cmd_retrieval_eval(args) -> int:
    from mdrag.evaluation.retrieval_metrics import evaluate_retrieval
    from mdrag.pipeline import RagPipeline

    rows = []
    for name in _domains(args.domains):
        pipe = RagPipeline.for_domain(name, retriever=args.retriever, reranker=args.reranker)
        res = evaluate_retrieval(pipe, args.split, args.limit)
        for stage in ("first_stage", "reranked"):
            rows.append({"domain": name, "stage": stage, "n": res["n"], **res[stage]})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    cols = ["nDCG@10", "MRR@10", "Recall@5", "Recall@50"]
    print(f"| domain | stage | n | {' | '.join(cols)} |\n|---|---|---|{'---|' * len(cols)}")
    for r in rows:
        print(f"| {r['domain']} | {r['stage']} | {r['n']} | " + " | ".join(f"{r[c]:.3f}" for c in cols) + " |")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from mdrag.config import LIMITS

    p = argparse.ArgumentParser(prog="mdrag", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("prepare", help="build the normalised benchmark from the raw sources")
    s.add_argument("--raw", help="raw data folder (default: ../shared/data/raw or MDRAG_RAW_DATA)")
    s.add_argument("--out", help="output folder (default: assets/benchmark)")
    s.add_argument("--domains", nargs="*", help="only these domains")
    s.set_defaults(func=_cmd_prepare)

    s = sub.add_parser("index", help="build first-stage indexes (into the cache, or assets with --ship)")
    s.add_argument("--domains", default="all")
    s.add_argument("--retriever", choices=["splade", "dense"], default="splade")
    s.add_argument("--ship", action="store_true", help="write into assets/indexes (to commit)")
    s.set_defaults(func=_cmd_index)

    s = sub.add_parser("domains", help="list registered domains")
    s.set_defaults(func=_cmd_domains)

    s = sub.add_parser("ask", help="run one question through retrieval, rerank and generation")
    s.add_argument("question", nargs="?", help="the question (or --query-id)")
    s.add_argument("--domain", default="general")
    s.add_argument("--query-id", help="a benchmark query id (uses its text and gold data)")
    s.add_argument("--variant", default="vanilla", help="comma-separated variant names")
    s.add_argument("--oracle", action="store_true", help="gold passage(s) instead of retrieved ones")
    s.add_argument("--noisy", action="store_true", help="gold passage(s) among retrieved distractors")
    s.add_argument("--distractors", type=int, default=4)
    s.add_argument("--retriever", default="splade")
    s.add_argument("--reranker", default="minilm", help="minilm, none, or a local cross-encoder directory")
    s.add_argument("--first-k", type=int, default=LIMITS.first_stage_k)
    s.add_argument("--top-k", type=int, default=LIMITS.rerank_k)
    s.add_argument("--generator", help="local HF causal-LM directory (default: packaged SmolLM2-135M)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--json", action="store_true", help="print the full RagTrace as JSON")
    s.set_defaults(func=_cmd_ask)

    s = sub.add_parser("retrieval-eval", help="nDCG@10, MRR@10, Recall@5/50 per domain, before/after rerank")
    s.add_argument("--domains", default="all")
    s.add_argument("--split", default="dev")
    s.add_argument("--limit", type=int)
    s.add_argument("--retriever", default="splade")
    s.add_argument("--reranker", default="minilm")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_cmd_retrieval_eval)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except MdragError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
