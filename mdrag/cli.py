"""Command line: python -m mdrag {prepare, index, domains, ask, retrieval-eval, train-retriever, variants, distill,
train, evaluate, judge, probe, canaries, serve, report, attention-summary, merge-store}."""

from __future__ import annotations

import argparse
import contextlib
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
    from mdrag.data.domains import DOMAIN_ERRORS, DOMAINS

    failed = dict(DOMAIN_ERRORS)
    for spec in DOMAINS.values():
        try:
            d = load_domain(spec.name)
        except MdragError as err:  # one bad domain never hides the others
            failed[spec.name] = str(err)
            continue
        print(f"{spec.name:10s} {spec.cluster:11s} {len(d.passages):6d} passages {len(d.queries):5d} queries  "
              f"{spec.description} [{spec.licence}]")
    for name, err in failed.items():
        print(f"{name:10s} ERROR: {err}")
    return 2 if failed else 0


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
        shown = {k: v for k, v in ans.metrics.items() if v is not None}
        if shown:
            print("    vs gold: " + ", ".join(f"{k} {v:.2f}" for k, v in shown.items()))
    print("\nTimings: " + ", ".join(f"{k} {v:.2f} s" for k, v in trace.timings.items()))


def _cmd_ask(args) -> int:
    pipe = args.engine.pipeline(args.domain, retriever=args.retriever, reranker=args.reranker)
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

    rows = []
    for name in _domains(args.domains):
        pipe = args.engine.pipeline(name, retriever=args.retriever, reranker=args.reranker)
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


def _cmd_train_retriever(args) -> int:
    from mdrag.training.retriever import RetrieverSettings, adapted_dir, train_retriever

    domains = _domains(args.domain)
    settings = RetrieverSettings(epochs=args.epochs, batch_size=args.batch_size, hard_negatives=args.hard_negatives,
                                 instruction=not args.no_instruction, max_steps=args.max_steps, limit=args.limit,
                                 lora_rank=args.lora_rank, learning_rate=args.learning_rate)
    card = train_retriever(domains, settings)
    source = "+".join(domains)
    print(f"adapted encoder: {adapted_dir(source)} ({card['steps']} steps, loss {card['first_loss']:.3f} -> "
          f"{card['final_loss']:.3f})")
    return _compare_adapted(source, args)


def _cmd_retriever_compare(args) -> int:
    return _compare_adapted(args.encoder.removeprefix("dense-ft:"), args)


def _compare_adapted(source: str, args) -> int:
    """Packaged vs adapted encoder on the trained domains and (unless --no-forgetting) every other domain;
    the table goes into the adapted encoder's card, and with --ship the encoder into assets/retrievers."""
    import pandas as pd

    from mdrag.evaluation.retrieval_metrics import compare_retrievers
    from mdrag.retrieval.retrievers import ADAPTED_PREFIX
    from mdrag.training.retriever import find_adapted, load_card, record_comparison, ship_retriever

    trained = load_card(find_adapted(source))["domains"]
    others = [] if args.no_forgetting else [d for d in _domains("all") if d not in trained]
    rows = compare_retrievers("dense", ADAPTED_PREFIX + source, trained + others, trained, args.split,
                              args.eval_limit, engine=args.engine)
    print(f"comparison stored in {record_comparison(source, rows, args.split, args.eval_limit)}")
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".3f"))
    if args.ship:
        print(f"shipped: {ship_retriever(source)}")
    return 0


def _comparison_arguments(s) -> None:
    s.add_argument("--split", default="test", help="split for the before/after comparison")
    s.add_argument("--eval-limit", type=int, help="at most this many questions per domain in the comparison")
    s.add_argument("--no-forgetting", action="store_true", help="compare on the training domains only")
    s.add_argument("--ship", action="store_true", help="copy the LoRA checkpoint into assets/retrievers (to commit)")


def _base_config(generator: str | None):
    from transformers import AutoConfig

    from mdrag.generation.model import resolve_generator_dir

    return AutoConfig.from_pretrained(resolve_generator_dir(generator))


def _cmd_variants(args) -> int:
    from mdrag.training.lora import budget_table

    print("| variant | modules | rank | alpha | scaling | trainable | vs full | labels | passage order |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for r in budget_table(_base_config(args.engine.settings.generator)):
        print(f"| {r['variant']} | {r['modules']} | {r['rank']} | {r['alpha']:g} | {r['scaling']:.2f} | "
              f"{r['trainable']:,} | {r['vs_full']:.3f} | {r['labels']} | {r['order']} |")
    return 0


def _examples(args):
    from mdrag.generation.variants import get_variant
    from mdrag.training.examples import ExampleSpec, rag_examples

    # a two-phase variant's passages come from its adapted retriever; `distill` labels the plain examples
    retriever = get_variant(args.variant).retriever if getattr(args, "variant", None) else "splade"
    spec = ExampleSpec(n=args.examples, retriever=retriever)
    return spec, rag_examples(spec, args.engine)


def _cmd_distill(args) -> int:
    from mdrag.training.teacher import distill, get_teacher, label_report, labels_path, teacher_comparison

    spec, examples = _examples(args)
    teacher = get_teacher(args.teacher)
    path = labels_path(teacher, f"{spec.domain}-{spec.key()}")
    labels = distill(examples, teacher, path)
    print(f"teacher labels: {path}")
    print(json.dumps(label_report(examples, labels), indent=2))
    print(teacher_comparison(examples, path.parent, f"{spec.domain}-{spec.key()}").to_markdown(index=False,
                                                                                          floatfmt=".2f"))
    return 0


def _cmd_train(args) -> int:
    from mdrag.generation.variants import get_variant
    from mdrag.training.teacher import get_teacher, labels_path, read_labels
    from mdrag.training.trainer import TrainSettings, train_variant

    spec, examples = _examples(args)
    if args.examples_only:
        print(f"{len(examples)} training examples ready (cached); now train, e.g. under accelerate launch")
        return 0
    teacher_labels = None
    labels = args.labels or get_variant(args.variant).labels
    if labels == "teacher":
        teacher = get_teacher(args.teacher or get_variant(args.variant).teacher or "qwen2.5-coder-1.5b")
        path = labels_path(teacher, f"{spec.domain}-{spec.key()}")
        teacher_labels = read_labels(path)
        missing = [e["query_id"] for e in examples if e["query_id"] not in teacher_labels]
        if missing:
            raise MdragError(f"{len(missing)} examples have no teacher label in {path}: run python -m mdrag distill")
        teacher_labels["__teacher__"] = teacher.name
    card = train_variant(args.variant, labels, spec, TrainSettings(max_steps=args.max_steps, precision=args.precision),
                         generator_path=args.engine.settings.generator, teacher_labels=teacher_labels,
                         examples=examples)
    print(json.dumps({k: card[k] for k in ("variant", "labels", "rank", "trainable_parameters", "examples",
                                           "tokens", "steps", "final_loss", "precision", "wall_seconds_this_run")},
                     indent=2))
    return 0


def _cmd_evaluate(args) -> int:
    from pathlib import Path

    from mdrag.evaluation.judge import get_judge
    from mdrag.evaluation.runner import Grid, evaluate
    from mdrag.evaluation.store import ResultsStore

    grid = Grid(args.domains.split(","), args.variants.split(","), args.settings.split(","), split=args.split,
                limit=args.limit, retrievers=args.retrievers.split(","), reranker=args.reranker,
                sample=args.sample, seed=args.seed)
    judge = None if args.judge == "none" else get_judge(args.judge, args.engine.settings.dtype)
    store = ResultsStore(Path(args.store))
    counts = evaluate(grid, store, args.engine, judge, own_dtype=args.own_dtype)
    print(f"{args.store}: {counts}")
    return 0


def _cmd_judge(args) -> int:
    from pathlib import Path

    from mdrag.evaluation.judge import get_judge
    from mdrag.evaluation.store import ResultsStore
    from mdrag.evaluation.verdicts import judge_store, other_dtype_note
    from mdrag.generation.variants import get_variant
    from mdrag.pipeline import SETTINGS

    if not Path(args.store).is_file():
        raise MdragError(f"No results store at {args.store}: run python -m mdrag evaluate first")
    levels = tuple(int(x) for x in args.levels.split(","))
    if not set(levels) <= {2, 3}:
        raise MdragError(f"--levels takes 2, 3 or 2,3 (got {args.levels})")
    store = ResultsStore(Path(args.store))
    for note in store.upgrade_notes:
        print(f"{args.store}: {note}", file=sys.stderr)
    only = {name[:-1]: getattr(args, name).split(",") for name in ("domains", "variants", "settings")
            if getattr(args, name)}
    if "domain" in only:
        only["domain"] = _domains(args.domains)  # an unknown name below: a named error, not an empty selection
    for v in only.get("variant", []):
        get_variant(v)
    if set(only.get("setting", [])) - set(SETTINGS):
        raise MdragError(f"--settings takes {', '.join(SETTINGS)} (got {args.settings})")
    judge = get_judge(args.judge, args.engine.settings.dtype)
    if not set(levels) <= set(judge.levels):
        raise MdragError(f"Judge {judge.name} has no 3-level form (its tokenizer has no token that starts "
                         "'Partially'): use --levels 2")
    note = other_dtype_note(store, judge, levels[0])
    if note:
        print(note, file=sys.stderr)
    sources = ["results"]
    if args.probes:
        from mdrag.config import RAW_DATA_DIR
        from mdrag.evaluation.judge_validity import register_probes

        found = register_probes(store, args.sanity_per_domain, RAW_DATA_DIR / "judge_meta" / "human_labeled_data.json",
                                args.human_pairs)
        print(f"judge probes: {found['sanity']} sanity items, {found['human']} human-labelled answers", file=sys.stderr)
        sources = ["judge_items"] if args.probes == "only" else ["judge_items", "results"]
    for source in sources:
        counts = judge_store(store, judge, levels, limit=args.limit, batch_size=args.batch_size, source=source,
                             only=only if source == "results" else None)
        print(f"{args.store} ({'answers' if source == 'results' else 'judge probes'}): judge {judge.name}: "
              f"{counts['judged']} verdicts written, {counts['failed']} failed (retried next run), "
              f"{counts['low_mass']} with under half the first-token mass on the allowed words; "
              f"{counts['already']} already had one")
    return 0


def _cmd_probe(args) -> int:
    from pathlib import Path

    from analysis.probes import run_probe
    from mdrag.evaluation.probe_tables import curves, position_dependence
    from mdrag.evaluation.store import ResultsStore

    store = ResultsStore(Path(args.store))
    counts = run_probe(args.probe, _domains(args.domains), args.variants.split(","), store, args.engine,
                       args.limit, args.k, not args.no_attention, args.sample, args.seed, retriever=args.retriever,
                       reranker=args.reranker, own_dtype=args.own_dtype)
    print(f"{args.store}: {counts}")
    frame = store.probe_frame(args.probe)
    if not frame.empty and args.probe == "attack":
        from mdrag.evaluation.probe_tables import attack_table

        print("## Adversarial suite: rates per attack and variant (mean [95% CI])")
        print(attack_table(frame).to_markdown(index=False))
    elif not frame.empty:
        print(f"## Probe {args.probe}: Match per condition (mean [95% CI])")
        print(curves(frame).to_markdown(index=False, floatfmt=".3f"))
        dependence = position_dependence(frame) if args.probe == "position" else None
        if dependence is not None and not dependence.empty:
            print("\n## Position dependence: Match with the gold passage first minus at positions 2..k")
            print(dependence.to_markdown(index=False, floatfmt=".3f"))
    return 0


def _cmd_canaries(args) -> int:
    from pathlib import Path

    from mdrag.evaluation.canaries import ALERT_DROP, canary_table, prepare, run_canaries
    from mdrag.evaluation.store import ResultsStore

    if args.prepare:
        print(f"canary files: {prepare()}")
        return 0
    store = ResultsStore(Path(args.store))
    counts = run_canaries(args.engine, store, args.variants.split(","),
                          args.canaries.split(",") if args.canaries else None, args.limit)
    print(f"{args.store}: {counts}")
    table = canary_table(store.canary_frame())
    print(f"## Forgetting canaries: each variant vs vanilla on the same items (alert: worse by more than "
          f"{ALERT_DROP:.0%} relative)")
    print(table.to_markdown(index=False, floatfmt=".3f"))
    return 0


def _cmd_attribution(args) -> int:
    from pathlib import Path

    from tqdm import tqdm

    variants = args.variants.split(",")
    methods = args.methods.split(",") if args.methods else None
    params = {"context_cite": {"masks": args.masks, "keep": args.keep}}
    if args.weights:
        params["at2"] = {"folder": args.weights}
    if args.action == "fit-at2":
        from analysis.at2 import WEIGHTS_DIR, fit_variants

        cards = fit_variants(args.engine, variants, _domains(args.domains), args.per_domain, args.masks, args.keep,
                             folder=Path(args.weights) if args.weights else None,
                             progress=lambda prompts: tqdm(prompts, desc="AT2 fitting prompts", unit="prompt"),
                             retriever=args.retriever, reranker=args.reranker)
        for v, card in cards.items():
            lo, hi = card["held_out_lds_ci"]
            print(f"{v}: {card['n_prompts']} prompts, held-out LDS {card['held_out_lds']:.2f} [{lo:.2f}, {hi:.2f}] "
                  f"-> {Path(args.weights or WEIGHTS_DIR) / v}.safetensors")
        return 0
    if args.action == "score":
        from analysis.attribution_scores import score_store
        from mdrag.evaluation.attribution_table import summary, summary_markdown
        from mdrag.evaluation.store import ResultsStore

        if not Path(args.store).is_file():
            raise MdragError(f"No results store at {args.store}: run python -m mdrag evaluate first")
        store = ResultsStore(Path(args.store))
        made = score_store(store, args.engine, _domains(args.domains), variants, tuple(args.settings.split(",")),
                           methods, args.limit, args.eval_masks, params,
                           progress=lambda groups: tqdm(groups, desc="attribution scores", unit="prompt"))
        print(f"{args.store}: {len(made)} new rows")
        print(summary_markdown(summary(store.attribution_scores_frame())))
        return 0
    from analysis.source_views import explain_case

    if len(_domains(args.domains)) != 1 or not (args.question or args.query_id):
        raise MdragError("explain needs one domain (--domains) and --question or --query-id")
    text = explain_case(args.engine, _domains(args.domains)[0], variants, args.question, args.query_id,
                        methods or ["context_cite"], args.masks, Path(args.html) if args.html else None,
                        args.retriever, args.reranker, params)
    print(text)
    return 0


def _cmd_ground(args) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from mdrag.evaluation.groundedness import (
        CHECK_VERSION,
        DEV_SEED,
        HELD_OUT_SEED,
        ground_store,
        grounded_answers,
        grounding_table,
        stored_readings,
        validate_checker,
        validation_items,
        validation_table,
    )
    from mdrag.evaluation.judge import get_judge
    from mdrag.evaluation.store import ResultsStore

    if not Path(args.store).is_file():
        raise MdragError(f"No results store at {args.store}: run python -m mdrag evaluate first")
    store = ResultsStore(Path(args.store))
    checker = get_judge(args.checker, args.engine.settings.dtype)
    if args.validate:
        items = [*validation_items(args.validate, DEV_SEED, _domains(args.domains)),
                 *validation_items(args.validate, HELD_OUT_SEED, _domains(args.domains))]
        checks = store.grounding_checks_frame()
        done = {(r.item, r.kind) for r in checks.itertuples()  # resumable
                if r.checker == checker.fingerprint and r.version == CHECK_VERSION and r.p_yes == r.p_yes
                and r.p_yes is not None}
        todo = [it for it in items if (it["item"], it["kind"]) not in done]
        readings = stored_readings(checks, checker.fingerprint)  # an earlier version's readings of the same prompt
        for at in tqdm(range(0, len(todo), 32), desc="validate checker", unit="batch"):
            store.put_grounding_checks(validate_checker(checker, todo[at: at + 32], args.batch_size, readings))
        print(validation_table(store.grounding_checks_frame()).to_markdown(index=False, floatfmt=".2f"))
    if args.limit != 0:
        counts = ground_store(store, args.engine, checker, _domains(args.domains),
                              args.variants.split(",") if args.variants else None,
                              args.settings.split(",") if args.settings else None, args.limit, args.batch_size,
                              progress=lambda groups: tqdm(groups, desc="ground", unit="question"))
        print(f"{args.store}: checker {checker.name}: {counts['answers']} answers ({counts['claims']} claims, "
              f"{counts['questions']} questions) checked")
        answers = store.answers_frame()
        table = grounding_table(grounded_answers(answers, store.grounding_frame(), checker.fingerprint),
                                answers=answers)
        print(table.to_markdown(index=False, floatfmt=".2f") if not table.empty else "no grounded answers yet")
    if args.agreement:
        from analysis.citations import citation_rows
        from mdrag.evaluation.groundedness import citation_table, current_citations

        made = citation_rows(store, args.engine, checker.fingerprint, args.agreement,
                             progress=lambda groups: tqdm(groups, desc="ablation vs citations", unit="prompt"))
        print(f"{len(made)} answers: passage ablation beside the checker's citations")
        joined = grounded_answers(store.answers_frame(), store.grounding_frame(), checker.fingerprint)
        print(citation_table(current_citations(store.citations_frame(), joined)).to_markdown(index=False,
                                                                                             floatfmt=".2f"))
    return 0


def _cmd_attention_summary(args) -> int:
    from pathlib import Path

    from analysis.gold_attention import gold_attention_rows, summarize
    from mdrag.evaluation.store import ResultsStore

    if not Path(args.store).is_file():
        raise MdragError(f"No results store at {args.store}: run python -m mdrag evaluate first")
    df = ResultsStore(Path(args.store), read_only=True).frame()  # reads only: never writes a store it summarises
    domains = _domains(args.domains)
    frames = [gold_attention_rows(df, d, args.variants.split(","), args.settings.split(","), args.engine,
                                  args.limit) for d in domains]
    frames = [f for f in frames if not f.empty]
    if not frames:
        raise MdragError("No stored prompt with both gold and distractor passages for these domains/variants")
    import pandas as pd

    rows = pd.concat(frames, ignore_index=True)
    table = summarize(rows)
    print("## Attention on gold passages vs distractors (gold share of passage attention; mean [95% CI])")
    print(table.to_markdown(index=False, floatfmt=".3f"))
    if args.csv:
        rows.to_csv(args.csv, index=False)
        print(f"per-query rows: {args.csv}")
    if args.ablation:
        from analysis.gold_attention import ablation_rows, summarize_ablation

        abl = pd.concat([ablation_rows(df, d, args.variants.split(","), args.settings.split(","), args.engine,
                                       args.ablation) for d in domains], ignore_index=True)
        if not abl.empty:
            print("\n## Top passage by ablation: how often gold, how often the top reranked one")
            print(summarize_ablation(abl).to_markdown(index=False, floatfmt=".3f"))
    return 0


def _cmd_serve(args) -> int:
    from mdrag.openai_server import make_server

    server = make_server(args.engine, args.host, args.port)
    print(f"serving http://{args.host}:{server.server_port}/v1 (Ctrl-C to stop)")
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


def _cmd_report(args) -> int:
    from pathlib import Path

    from mdrag.evaluation.report import report
    from mdrag.evaluation.store import ResultsStore
    from mdrag.training.retriever import adaptation_table

    if args.store is None:  # ./results.sqlite when there is one, else the shipped store
        from mdrag.evaluation.dashboard import SHIPPED_STORE

        args.store = "results.sqlite" if Path("results.sqlite").is_file() else str(SHIPPED_STORE)
    if not Path(args.store).is_file():
        raise MdragError(f"No results store at {args.store}: run python -m mdrag evaluate first")
    store = ResultsStore(Path(args.store), read_only=True)
    df = store.frame(args.judge)
    if df.empty:
        raise MdragError(f"{args.store} holds no results yet: run python -m mdrag evaluate first")
    if args.judge and df["judge_score"].isna().all():
        known = ", ".join(sorted({j["name"] for j in store.judges()})) or "none"
        raise MdragError(f"{args.store} has no verdicts from judge '{args.judge}'. Judges present: {known}")
    if args.domains != "all":
        df = df[df["domain"].isin(_domains(args.domains))]
        if df.empty:
            raise MdragError(f"{args.store} holds no results for {args.domains}")
    print(report(df, Path(args.csv) if args.csv else None, adapted=adaptation_table(), store=store))
    return 0


def _cmd_merge_store(args) -> int:
    from pathlib import Path

    from mdrag.evaluation.store import ResultsStore

    if Path(args.source).resolve() == Path(args.into).resolve():
        raise MdragError("merge-store: source and target are the same file")
    counts = ResultsStore(Path(args.into)).merge_from(ResultsStore(Path(args.source), read_only=True))
    print(f"{args.into}: {counts['added']} rows added, {counts['kept']} already there; {counts['verdicts_added']} "
          f"verdicts added, {counts['replaced']} failed verdicts replaced; {counts['other_rows_added']} probe, "
          "canary, groundedness and attribution-score rows added")
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

    s = sub.add_parser("train-retriever", help="fine-tune the dense encoder on a domain (comma-separated: "
                       "multi-task), then compare it with the packaged one on every domain")
    s.add_argument("--domain", required=True, help="domain(s) to train on, e.g. tatqa or pubmedqa,covidqa")
    s.add_argument("--epochs", type=float, default=1.0)
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--hard-negatives", type=int, default=1, help="mined per pair (0: in-batch negatives only)")
    s.add_argument("--no-instruction", action="store_true", help="no instruction prefix on questions")
    s.add_argument("--max-steps", type=int, default=-1)
    s.add_argument("--limit", type=int, help="at most this many training questions per domain")
    _comparison_arguments(s)
    s.add_argument("--lora-rank", type=int, default=16, help="LoRA rank on the encoder (0: fine-tune all weights)")
    s.add_argument("--learning-rate", type=float, help="default 2e-4 with a LoRA, 2e-5 for all weights")
    s.set_defaults(func=_cmd_train_retriever)

    s = sub.add_parser("retriever-compare", help="compare an adapted encoder with the packaged one (its domains "
                       "and, for forgetting, every other domain) without training; stored in its card")
    s.add_argument("--encoder", required=True, help="the adapted encoder: its source, e.g. tatqa or dense-ft:tatqa")
    _comparison_arguments(s)
    s.set_defaults(func=_cmd_retriever_compare)

    s = sub.add_parser("variants", help="LoRA variants: modules, budget-matched rank, trainable parameters")
    s.add_argument("--generator", help="local HF causal-LM directory (default: packaged SmolLM2-135M)")
    s.set_defaults(func=_cmd_variants)

    judge_help = ("default (the packaged Qwen2.5-Coder-1.5B judge), smollm2-135m (weak stand-in), hf:<dir>, "
                  "openai:<model>@<base_url>")
    teacher_help = ("qwen2.5-coder-1.5b (default: the packaged 1.5B model, paper prompt, no gold), self-distill "
                    "(135M shown the gold; weak), hf:<local dir>, or openai:<model>@<base_url>")
    s = sub.add_parser("distill", help="teacher labels for the training examples (SKD)")
    s.add_argument("--teacher", default="qwen2.5-coder-1.5b", help=teacher_help)
    s.add_argument("--examples", type=int, default=128, help="number of general-domain training questions")
    s.set_defaults(func=_cmd_distill)

    s = sub.add_parser("train", help="train one LoRA variant (resumes a killed run)")
    s.add_argument("--variant", required=True)
    s.add_argument("--labels", choices=["gold", "teacher"], help="default: the variant's registry entry")
    s.add_argument("--teacher", help="default: the variant's registry teacher. " + teacher_help)
    s.add_argument("--examples", type=int, default=128)
    s.add_argument("--max-steps", type=int, default=-1, help="stop early (-1: one epoch)")
    s.add_argument("--examples-only", action="store_true", help="only retrieve and cache the training examples")
    s.add_argument("--generator", help="local HF causal-LM directory (default: packaged SmolLM2-135M)")
    s.add_argument("--precision", choices=["bf16", "fp32"],
                   help="bf16: matmuls autocast to bfloat16 (how the shipped adapters were trained); fp32: float32 "
                        "throughout. Default: bf16 where it is native (GPU, avx512_bf16/AMX CPU), else fp32 (an "
                        "AVX2-only CPU emulates bf16 ~10x slower)")
    s.set_defaults(func=_cmd_train)

    s = sub.add_parser("evaluate", help="run the (domain, variant, setting) grid into a SQLite store (resumable)")
    s.add_argument("--domains", default="all")
    s.add_argument("--variants", default="vanilla")
    s.add_argument("--settings", default="retrieved")
    s.add_argument("--split", default="test")
    s.add_argument("--limit", type=int, help="queries per domain")
    s.add_argument("--sample", default="stratified", choices=["stratified", "file"],
                   help="which questions --limit takes: a seeded order stratified by answer type and spread over "
                        "source documents (default; raising --limit keeps the earlier questions), or file order")
    s.add_argument("--seed", type=int, default=0, help="seed of the stratified order")
    s.add_argument("--retrievers", "--retriever", default="splade",
                   help="comma-separated first stages, a grid dimension (e.g. splade,dense-ft: each domain's "
                        "adapted encoder; dense-ft:nq_open: the one adapted on nq_open)")
    s.add_argument("--reranker", default="minilm")
    s.add_argument("--generator", help="local HF causal-LM directory (default: packaged SmolLM2-135M)")
    s.add_argument("--judge", default="default", help=judge_help + ", or none (judge later with mdrag judge)")
    s.add_argument("--endpoint", help="generate on an OpenAI-compatible server (e.g. vLLM multi-LoRA: see "
                                      "README), e.g. http://127.0.0.1:8000/v1; the judge stays as chosen")
    s.add_argument("--own-dtype", action="store_true",
                   help="answer every cell in this run's dtype, even one a run in another dtype already answered "
                        "(default: reuse that answer; the views count one answer per cell)")
    s.add_argument("--store", default="results.sqlite")
    s.set_defaults(func=_cmd_evaluate)

    s = sub.add_parser("judge", help="judge every stored answer that has no verdict from this judge (resumable, "
                       "kill-safe; never regenerates an answer)")
    s.add_argument("--store", default="results.sqlite")
    s.add_argument("--judge", default="default", help=judge_help)
    s.add_argument("--levels", default="2", help="2 (Yes/No, the paper's LLMEval), 3 (Yes/Partially/No) or 2,3")
    s.add_argument("--limit", type=int, help="judge at most this many answers per level (shortest first)")
    s.add_argument("--batch-size", type=int, default=8)
    for name in ("domains", "variants", "settings"):
        s.add_argument(f"--{name}", help=f"comma-separated: judge only the answers of these {name} first "
                       "(default: every answer in the store)")
    s.add_argument("--probes", nargs="?", const="also", choices=["also", "only"],
                   help="also (or only) judge the validity probes: the sanity set built from the benchmark and "
                        "RAGChecker's human-labelled pairs (needs ../shared/data/raw/judge_meta)")
    s.add_argument("--sanity-per-domain", type=int, default=20, help="sanity-set questions per domain")
    s.add_argument("--human-pairs", type=int, help="a seeded sample of the 280 human-labelled pairs (default: all)")
    s.set_defaults(func=_cmd_judge)

    s = sub.add_parser("probe", help="controlled prompt edits per question (position: the gold passage moved "
                                     "through positions 1..k; attack: the adversarial suite), every variant, into a "
                                     "results store (resumable)")
    s.add_argument("probe", help="which probe: position or attack (registry entries of analysis/probes.py)")
    s.add_argument("--domains", default="all")
    s.add_argument("--variants", default="vanilla,full,qk_att")
    s.add_argument("--limit", type=int, default=100, help="answerable test questions per domain")
    s.add_argument("--k", type=int, default=5, help="passages in each prompt (the gold one + k-1 distractors)")
    s.add_argument("--no-attention", action="store_true", help="skip the attention mass on the gold passage")
    s.add_argument("--retriever", default="splade", help="first stage that finds the distractors")
    s.add_argument("--reranker", default="minilm")
    s.add_argument("--sample", default="stratified", choices=["stratified", "file"])
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--generator", help="local HF causal-LM directory (default: packaged SmolLM2-135M)")
    s.add_argument("--own-dtype", action="store_true",
                   help="probe every cell in this run's dtype, even one a run in another dtype already probed "
                        "(default: reuse that row; the views count one row per cell)")
    s.add_argument("--store", default="results.sqlite")
    s.set_defaults(func=_cmd_probe)

    s = sub.add_parser("ground", help="groundedness: check each stored answer's claims against every passage of its "
                       "prompt with the packaged judge as entailment checker (resumable; never regenerates)")
    s.add_argument("--store", default="results.sqlite")
    s.add_argument("--checker", default="default", help=judge_help)
    s.add_argument("--domains", default="all")
    s.add_argument("--variants", help="comma-separated (default: all in the store)")
    s.add_argument("--settings", help="comma-separated (default: all in the store)")
    s.add_argument("--limit", type=int, help="questions per domain, in the seeded stratified order (0: none, "
                                             "e.g. with --validate alone)")
    s.add_argument("--validate", type=int, default=0, metavar="N",
                   help="first validate the checker on N questions per domain (claims with a known answer): a "
                        "development set (seed 0) and a held-out set of other questions (seed 1)")
    s.add_argument("--agreement", type=int, default=0, metavar="N",
                   help="then compare the checker's citations with passage ablation on N stored prompts (1 + k "
                        "generator forwards per answer)")
    s.add_argument("--batch-size", type=int, default=8)
    s.set_defaults(func=_cmd_ground)

    s = sub.add_parser("attribution", help="sentence-level context attribution: fit AT2 head weights per variant "
                       "(fit-at2), score every method on held-out ablations of stored answers (score), or explain one "
                       "answer (explain, --html for a self-contained page)")
    s.add_argument("action", choices=["fit-at2", "score", "explain"])
    s.add_argument("--variants", default="vanilla,full,qk_att")
    s.add_argument("--domains", default="all")
    s.add_argument("--methods", help="comma-separated registry names (default: every cheap one; "
                                     "'gradient' is integrated gradients, minutes per answer)")
    s.add_argument("--masks", type=int, default=32, help="random ablation masks per answer (ContextCite, AT2 fit)")
    s.add_argument("--keep", type=float, default=0.5, help="probability that a mask keeps a sentence")
    s.add_argument("--eval-masks", type=int, default=16, help="held-out masks per answer for the LDS (score)")
    s.add_argument("--per-domain", type=int, default=8, help="training prompts per domain (fit-at2)")
    s.add_argument("--max-new-tokens", type=int, help="answer budget when generating (fit-at2, explain)")
    s.add_argument("--limit", type=int, help="stored prompts per domain (score)")
    s.add_argument("--settings", default="retrieved", help="comma-separated (score)")
    s.add_argument("--store", default="results.sqlite")
    s.add_argument("--question", help="explain: a question (or --query-id)")
    s.add_argument("--query-id", help="explain: a benchmark question id of --domains")
    s.add_argument("--html", help="explain: write the case as one self-contained HTML file here")
    s.add_argument("--weights", help="folder of AT2 head weights (default: the shipped assets/attribution/at2)")
    s.add_argument("--retriever", default="splade", help="first stage (fit-at2, explain)")
    s.add_argument("--reranker", default="minilm")
    s.add_argument("--generator", help="local HF causal-LM directory (default: packaged SmolLM2-135M)")
    s.set_defaults(func=_cmd_attribution)

    s = sub.add_parser("canaries", help="forgetting canaries: every variant on MMLU, BIG-bench causal judgment, "
                       "TruthfulQA and held-out Wikipedia text by log-likelihood, vs vanilla (resumable, into a store)")
    s.add_argument("--variants", default="full,qk_att", help="variants to check (vanilla is always added)")
    s.add_argument("--canaries", help="comma-separated (default: all): mmlu, causal_judgment, truthfulqa, wiki_loss")
    s.add_argument("--limit", type=int, help="at most this many items per canary")
    s.add_argument("--store", default="results.sqlite")
    s.add_argument("--prepare", action="store_true", help="rebuild assets/canaries from ../shared/data/raw")
    s.set_defaults(func=_cmd_canaries)

    s = sub.add_parser("attention-summary", help="attention on gold vs distractor passages by layer band, "
                                                 "per variant and setting, from a results store")
    s.add_argument("--store", default="results.sqlite")
    s.add_argument("--domains", default="nq_open")
    s.add_argument("--variants", default="vanilla,full,qk_att")
    s.add_argument("--settings", default="noisy,retrieved")
    s.add_argument("--limit", type=int, default=20, help="queries per domain")
    s.add_argument("--csv", help="write the per-query rows here")
    s.add_argument("--ablation", type=int, default=0, metavar="N",
                   help="also run passage ablation on the first N queries per domain (1 + k forwards each)")
    s.set_defaults(func=_cmd_attention_summary)

    s = sub.add_parser("serve", help="OpenAI-compatible /v1/completions over the local many-adapter generator")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--generator", help="local HF causal-LM directory (default: packaged SmolLM2-135M)")
    s.set_defaults(func=_cmd_serve)

    s = sub.add_parser("report", help="paper-style tables from a results store (markdown; CSV with --csv)")
    s.add_argument("--store", help="default: ./results.sqlite if it exists, else the shipped store")
    s.add_argument("--csv", help="folder for CSV tables")
    s.add_argument("--domains", default="all", help="only these domains (comma-separated)")
    s.add_argument("--judge", help="whose verdicts the LLMEval figures show: a judge name or id (default: the best "
                                   "one present, by agreement with Match)")
    s.set_defaults(func=_cmd_report)

    s = sub.add_parser("merge-store", help="copy another results store's runs, answers and verdicts into a "
                       "store (idempotent; a failed verdict is replaced by a good one)")
    s.add_argument("source", help="the store to copy from (opened read-only)")
    s.add_argument("--into", required=True, help="the store to add to (created if missing)")
    s.set_defaults(func=_cmd_merge_store)
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, build the one engine (settings read here, once, from the flags and the environment),
    run the command."""
    from mdrag.engine import Engine, Settings

    args = build_parser().parse_args(argv)
    try:
        args.engine = Engine(Settings.from_env(**{k: getattr(args, k, None) for k in (
            "generator", "endpoint", "first_k", "top_k", "max_new_tokens")}))
        return args.func(args)
    except MdragError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
