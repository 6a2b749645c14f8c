"""Training: presets, config errors, the three methods on the micro model, the QLoRA CPU trap,
kill -9 and resume, and the run folder's contents."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medchat.config import load_config
from medchat.errors import MedchatError
from medchat.fileio import read_jsonl
from medchat.models import modeling
from medchat.train import train as train_mod
from tests.conftest import MICRO, REPO_ROOT, requires, train_micro

PRESETS = sorted((REPO_ROOT / "configs").glob("*.yaml"))


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_every_preset_loads(preset: Path) -> None:
    cfg = load_config(preset)
    assert cfg.train.method in preset.stem  # tiny-lora.yaml is a lora preset, etc.


def test_presets_cover_every_method_and_family() -> None:
    names = {p.stem for p in PRESETS}
    for family in ("tiny", "flan-t5-base", "seed-parity"):
        for method in ("full", "lora", "qlora"):
            assert f"{family}-{method}" in names


def test_seed_parity_presets_hold_the_original_hyperparameters() -> None:
    cfg = load_config(REPO_ROOT / "configs" / "seed-parity-lora.yaml")
    assert (cfg.train.learning_rate, cfg.train.batch_size, cfg.train.num_epochs) == (2e-4, 8, 10)
    assert cfg.train.weight_decay == 0.1
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout) == (8, 32, 0.1)
    assert cfg.lora.target_modules == ["q", "v"]


def test_config_reports_every_problem_at_once() -> None:
    with pytest.raises(MedchatError) as e:
        load_config(
            None,
            ["train.method=sft", "train.precision=fp16", "lora.dropout=1.5", "train.batch_size=0"],
        )
    msg = str(e.value)
    for fragment in ("train.method", "fp16 is refused", "lora.dropout", "train.batch_size"):
        assert fragment in msg


def test_config_unknown_key_and_type_errors_name_the_field() -> None:
    with pytest.raises(MedchatError) as e:
        load_config(None, ["train.learnig_rate=1e-4", "lora.r=big"])
    assert "train.learnig_rate: unknown key" in str(e.value)
    assert "lora.r: 'big' is not of type int" in str(e.value)


def test_overrides_parse_numbers_and_words() -> None:
    cfg = load_config(
        None, ["train.learning_rate=1e-4", "train.eval_strategy=no", "lora.target_modules=[q, v]"]
    )
    assert cfg.train.learning_rate == pytest.approx(1e-4)
    assert cfg.train.eval_strategy == "no"
    assert cfg.lora.target_modules == ["q", "v"]


# ----------------------------------------------------------------------------- modeling


def test_tiny_model_matches_flan_t5_head_layout() -> None:
    model = modeling.build_model_from_config(
        modeling.t5_config(100, d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=1), seed=0
    )
    # One shared input embedding, a separate output head, no decoder-output rescaling: flan-t5.
    assert model.encoder.embed_tokens.weight is model.shared.weight
    assert model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr()
    assert model.config.scale_decoder_outputs is False
    # Head initialised at d_model**-0.5, not transformers' 1.0 (which starts near loss 60).
    assert model.lm_head.weight.std().item() == pytest.approx(32**-0.5, rel=0.15)


def test_untied_head_survives_save_and_load(tmp_path: Path) -> None:
    from transformers import T5ForConditionalGeneration

    model = modeling.build_model_from_config(
        modeling.t5_config(100, d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=1), seed=0
    )
    model.save_pretrained(tmp_path)
    again = T5ForConditionalGeneration.from_pretrained(tmp_path)
    assert torch.equal(again.lm_head.weight, model.lm_head.weight)
    assert again.lm_head.weight.data_ptr() != again.shared.weight.data_ptr()
    assert modeling.count_parameters(again) == modeling.count_parameters(model)


def test_flan_t5_base_shape_and_lora_share_are_counted_right() -> None:
    # flan-t5-base has 247,577,856 parameters; LoRA r=8 on q,v adds 884,736 = 0.356% of the
    # total (the original reported 0.53%).
    with torch.device("meta"):
        model = modeling.build_model_from_config(modeling.flan_t5_base_shaped_config(), seed=0)
    assert modeling.count_parameters(model) == (247_577_856, 247_577_856)
    from medchat.config import LoraSettings

    lora = modeling.attach_lora(
        model, LoraSettings(r=8, alpha=32, dropout=0.1, target_modules=["q", "v"]), quantized=False
    )
    trainable, total = modeling.count_parameters(lora)
    assert trainable == 884_736
    assert round(100 * trainable / total, 3) == 0.356


# ----------------------------------------------------------------------------- training


def _spy_on_model(monkeypatch) -> dict:
    """Capture the model train() builds, with a copy of its initial parameters."""
    seen: dict = {}
    original = train_mod._load_trainable

    def spy(*args, **kwargs):
        model = original(*args, **kwargs)
        seen["model"] = model
        seen["init"] = {n: p.detach().clone() for n, p in model.named_parameters()}
        return model

    monkeypatch.setattr(train_mod, "_load_trainable", spy)
    return seen


def _changed(seen: dict) -> tuple[set[str], set[str], set[str]]:
    """(trainable names, trainable that changed, frozen that changed)."""
    trainable, moved, frozen_moved = set(), set(), set()
    for name, p in seen["model"].named_parameters():
        same = torch.equal(p.detach(), seen["init"][name])
        if p.requires_grad:
            trainable.add(name)
            if not same:
                moved.add(name)
        elif not same:
            frozen_moved.add(name)
    return trainable, moved, frozen_moved


METHODS = ["full", "lora", pytest.param("qlora", marks=requires("bitsandbytes"))]


@pytest.mark.parametrize("method", METHODS)
def test_method_trains_every_trainable_parameter_and_no_frozen_one(
    method, medquad_prepared, tmp_path, monkeypatch
) -> None:
    seen = _spy_on_model(monkeypatch)
    run = train_micro(medquad_prepared, tmp_path / method, method)
    trainable, moved, frozen_moved = _changed(seen)
    assert trainable, "nothing was trainable"
    assert moved == trainable, f"unchanged trainable parameters: {sorted(trainable - moved)[:5]}"
    assert not frozen_moved, f"frozen parameters changed: {sorted(frozen_moved)[:5]}"
    if method != "full":
        assert all("lora_" in n for n in trainable)
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["final_loss"] < summary["first_loss"]
    assert summary["eval_losses"][-1] < summary["eval_losses"][0]
    assert summary["trainable_params"] == sum(
        p.numel() for p in seen["model"].parameters() if p.requires_grad
    )


def test_run_dir_explains_itself(tiny_runs) -> None:
    for method, run in tiny_runs.items():
        names = {p.name for p in run.iterdir()}
        expected = {"MODEL_CARD.md", "config.yaml", "prompt.txt", "data_manifest.json", "run_info.json", "metrics.jsonl",
                    "train_summary.json", "trainer_state.json", "tensorboard", "checkpoints", "base_model"}  # fmt: skip
        assert expected <= names, expected - names
        assert ("model" if method == "full" else "adapter") in names
        info = json.loads((run / "run_info.json").read_text())
        assert info["method"] == method and info["seed"] == 42
        assert {"torch", "transformers"} <= set(info["versions"])
        assert info["base_model"] == "base_model"
        lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        assert any("eval_loss" in x for x in lines) and any("loss" in x for x in lines)
        assert "{question}" in (run / "prompt.txt").read_text()
        card = (run / "MODEL_CARD.md").read_text()
        assert (
            f"{method} fine-tuning" in card
            and "CC BY 4.0" in card
            and "Not a medical device" in card
        )
        assert load_config(run / "config.yaml").train.method == method
        summary = json.loads((run / "train_summary.json").read_text())
        for key in (
            "wall_time_s",
            "examples_per_s",
            "target_tokens_per_s",
            "peak_memory_bytes",
            "trainable_params",
            "total_params",
        ):
            assert summary[key] > 0, key
        # The best checkpoint is the one with the lowest eval loss.
        state = json.loads((run / "trainer_state.json").read_text())
        evals = [(h["eval_loss"], h["step"]) for h in state["log_history"] if "eval_loss" in h]
        assert summary["best_checkpoint"] == f"checkpoint-{min(evals)[1]}"


# ----------------------------------------------------------------------------- generation metrics


GEN_KEYS = ("eval_rougeL", "eval_semantic", "eval_answer_words", "eval_distinct2")


@requires("rouge_score", "sentence_transformers", "tensorboard")
def test_generation_metrics_join_every_evaluation(medquad_prepared, tmp_path) -> None:
    """Each eval row carries ROUGE-L, similarity, length and distinct-2 of answers to a fixed
    validation subset, and three samples; TensorBoard has the curves and the samples."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from medchat.data import load_split
    from medchat.eval.metrics import rouge_scores

    run = train_micro(
        medquad_prepared, tmp_path / "run", "full", "train.generation_eval_examples=3"
    )
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval_loss" in r]
    assert [r["step"] for r in evals] == [8, 16]
    val = {r["question"]: r["answer"] for r in load_split(medquad_prepared, "validation")}
    for r in evals:
        assert all(isinstance(r[k], float) for k in GEN_KEYS), r
        assert 0 <= r["eval_rougeL"] <= 100 and 0 <= r["eval_distinct2"] <= 1
        # Three samples = the whole subset here, so the logged ROUGE-L is theirs, recomputed.
        samples = r["samples"]
        assert len(samples) == 3 and all(val[x["question"]] == x["reference"] for x in samples)
        answers, refs = [x["answer"] for x in samples], [x["reference"] for x in samples]
        assert r["eval_rougeL"] == pytest.approx(sum(rouge_scores(answers, refs)["rougeL"]) / 3)
        words = sum(len(a.split()) for a in answers) / 3
        assert r["eval_answer_words"] == pytest.approx(words)
    # The same questions at every evaluation (a fixed, seeded subset).
    assert [x["question"] for x in evals[0]["samples"]] == [
        x["question"] for x in evals[1]["samples"]
    ]
    assert all("samples" not in r for r in rows if "eval_loss" not in r)

    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("eval/rougeL")] == [8, 16]
    assert [e.step for e in acc.Scalars("eval/semantic")] == [8, 16]
    text = acc.Tensors("eval/samples/text_summary")
    assert [e.step for e in text] == [8, 16]
    assert evals[1]["samples"][0]["question"] in text[1].tensor_proto.string_val[0].decode()

    probe = json.loads((run / "train_summary.json").read_text())["generation_eval"]
    assert probe["examples"] == 3 and probe["evaluations"] == 2
    assert probe["settings"]["max_new_tokens"] <= 48  # capped at data.max_target_length
    assert probe["settings"]["num_beams"] == 1 and not probe["settings"]["do_sample"]
    assert 0 < probe["share_of_wall_time"] < 1


def test_the_best_checkpoint_can_be_chosen_by_a_generation_metric(
    medquad_prepared, tmp_path, monkeypatch
) -> None:
    """metric_for_best=rougeL keeps and restores the checkpoint with the highest eval ROUGE-L,
    not the lowest eval loss."""
    from medchat.train.probe import GenerationProbe

    scripted = iter([1.0, 9.0, 2.0])  # evaluations at steps 8, 16, 24: the best is step 16

    def measure(self, model, tokenizer):
        self.evaluations += 1
        return {"rougeL": next(scripted), "answer_words": 1.0, "distinct2": 0.5}

    monkeypatch.setattr(GenerationProbe, "measure", measure)
    run = train_micro(
        medquad_prepared, tmp_path / "run", "full",
        "train.max_steps=24", "train.metric_for_best=rougeL", "train.generation_eval_examples=4",
    )  # fmt: skip
    summary = json.loads((run / "train_summary.json").read_text())
    losses = [r for r in read_jsonl(run / "metrics.jsonl") if "eval_loss" in r]
    assert [r["eval_rougeL"] for r in losses] == [1.0, 9.0, 2.0]
    assert min(losses, key=lambda r: r["eval_loss"])["step"] != 16  # loss alone would pick another
    assert summary["best_checkpoint"] == "checkpoint-16"
    assert summary["metric_for_best"] == "rougeL" and summary["best_metric"] == 9.0
    # The final model is the step-16 checkpoint, restored.
    from safetensors.torch import load_file

    final = load_file(run / "model" / "model.safetensors")
    best = load_file(run / "checkpoints" / "checkpoint-16" / "model.safetensors")
    assert final.keys() == best.keys() and all(torch.equal(final[k], best[k]) for k in final)


def test_metric_for_best_is_checked_with_the_rest_of_the_config() -> None:
    with pytest.raises(MedchatError) as err:
        load_config(
            None, [*MICRO, "train.metric_for_best=bleu", "train.generation_eval_examples=-1"]
        )
    assert "metric_for_best: 'bleu' is not one of eval_loss, rougeL, semantic" in str(err.value)
    assert "generation_eval_examples: must be >= 0" in str(err.value)
    with pytest.raises(MedchatError, match="semantic needs generation metrics"):
        load_config(
            None, [*MICRO, "train.metric_for_best=semantic", "train.generation_eval_examples=0"]
        )


def test_labels_pad_with_minus_100_and_truncate_to_eos(medquad_prepared) -> None:
    from transformers import DataCollatorForSeq2Seq

    from medchat.data import load_split

    cfg = load_config(None, [*MICRO, "data.max_target_length=16"])
    rows = load_split(medquad_prepared, "train")[:40]
    tokenizer = modeling.train_tiny_tokenizer((r["answer"] for r in rows), 300)
    ds = train_mod.TokenizedPairs(rows, tokenizer, cfg)
    assert ds.truncated > 0
    assert all(
        len(x["labels"]) <= 16 and x["labels"][-1] == tokenizer.eos_token_id for x in ds.items
    )
    batch = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100)([ds[i] for i in range(8)])
    lengths = [len(ds[i]["labels"]) for i in range(8)]
    # Dynamic padding: the batch is as long as its longest answer, and padding is -100.
    assert batch["labels"].shape[1] == max(lengths)
    for row, n in zip(batch["labels"], lengths, strict=True):
        assert (row[n:] == -100).all() and (row[:n] != -100).all()


# ----------------------------------------------------------------------------- QLoRA CPU trap


@requires("bitsandbytes")
def test_qlora_repack_trap_is_real_and_fixed(tiny_runs, monkeypatch) -> None:
    """A no-grad eval forward repacks 4-bit weights on AVX512-BF16 CPUs; gradients then go wrong.

    We force bitsandbytes' AVX512-BF16 branch on (this CPU may lack the instructions) and check
    that, without our fix, gradients after an eval pass differ from the true ones, and with it
    they are the same.
    """
    import bitsandbytes.nn.modules as bnb_modules

    from medchat.config import LoraSettings, QuantSettings
    from medchat.models.qlora_fix import keep_4bit_trainable, repacked_layers

    monkeypatch.setattr(bnb_modules, "has_avx512bf16", lambda: True)
    base = str(tiny_runs["lora"] / "base_model")
    x = torch.randint(3, 900, (4, 12))
    y = torch.randint(3, 900, (4, 10))

    def lora_model(fix: bool):
        torch.manual_seed(0)
        model = modeling.attach_lora(
            modeling.load_pretrained(base, quant=QuantSettings()),
            LoraSettings(dropout=0.0),
            quantized=True,
        )
        with torch.no_grad():  # non-zero B so every LoRA weight gets a gradient
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.05)
        if fix:
            keep_4bit_trainable(model)
        return model

    def grads(model) -> dict[str, torch.Tensor]:
        model.train()
        model.zero_grad()
        model(input_ids=x, labels=y).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    def eval_pass(model) -> None:
        model.eval()
        with torch.no_grad():
            model(input_ids=x, labels=y)

    reference = grads(lora_model(fix=True))

    broken = lora_model(fix=False)
    eval_pass(broken)
    assert repacked_layers(broken) > 0
    wrong = grads(broken)
    assert any(not torch.allclose(wrong[n], reference[n], atol=1e-5) for n in reference)

    fixed = lora_model(fix=True)
    eval_pass(fixed)
    assert repacked_layers(fixed) == 0
    right = grads(fixed)
    assert all(torch.allclose(right[n], reference[n], atol=1e-5) for n in reference)


@requires("bitsandbytes")
def test_qlora_lora_weights_keep_changing_after_evaluation(
    medquad_prepared, tmp_path, monkeypatch
) -> None:
    import bitsandbytes.nn.modules as bnb_modules
    from transformers import TrainerCallback

    from medchat.models.qlora_fix import repacked_layers

    monkeypatch.setattr(bnb_modules, "has_avx512bf16", lambda: True)  # as on an AVX512-BF16 CPU
    seen = _spy_on_model(monkeypatch)
    snapshots: list[tuple[int, dict]] = []

    class Snapshot(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kw):
            snapshots.append(
                (
                    state.global_step,
                    {
                        n: p.detach().clone()
                        for n, p in seen["model"].named_parameters()
                        if p.requires_grad
                    },
                )
            )

    original = train_mod._callbacks
    monkeypatch.setattr(train_mod, "_callbacks", lambda *a: [*original(*a), Snapshot()])
    train_micro(
        medquad_prepared, tmp_path / "q", "qlora", "train.max_steps=12", "train.eval_steps=4"
    )
    by_step = dict(snapshots)
    for step in (5, 6, 9, 10):  # steps right after the evaluations at 4 and 8
        changed = [
            n for n in by_step[step] if not torch.equal(by_step[step][n], by_step[step - 1][n])
        ]
        assert len(changed) == len(by_step[step]), (
            f"step {step}: {len(by_step[step]) - len(changed)} LoRA weights stuck"
        )
    assert repacked_layers(seen["model"]) == 0


# ----------------------------------------------------------------------------- resume


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "medchat.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def test_kill_9_then_resume_reaches_the_same_weights(medquad_prepared, tmp_path) -> None:
    from safetensors.torch import load_file

    overrides = [*MICRO, "train.method=full", "train.eval_steps=4"]
    straight = tmp_path / "straight"
    assert (
        _cli(
            "train", "--data", str(medquad_prepared), "--out", str(straight), *overrides
        ).returncode
        == 0
    )

    run = tmp_path / "killed"
    killed = _cli(
        "train",
        "--data",
        str(medquad_prepared),
        "--out",
        str(run),
        *overrides,
        env={train_mod.FAULT_ENV: "10"},
    )
    assert killed.returncode == -9  # SIGKILL: no clean-up ran
    assert not (run / "model").exists()
    # A half-written checkpoint (no COMPLETE marker) must never be resumed from.
    (run / "checkpoints" / "checkpoint-11").mkdir()
    assert train_mod.latest_complete_checkpoint(run).name == "checkpoint-8"
    # What else a kill can leave: a torn last log line, and a half-saved final model folder.
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 11, "lo')
    (run / ".model.tmp").mkdir()

    resumed = _cli("train", "--data", str(medquad_prepared), "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = load_file(straight / "model" / "model.safetensors")
    b = load_file(run / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # CPU, same seed: bit-identical
    assert not (run / ".model.tmp").exists()

    # The log reads strictly and holds each step once, as the uninterrupted run's does.
    def losses(r):
        return [
            (row["step"], row["loss"]) for row in read_jsonl(r / "metrics.jsonl") if "loss" in row
        ]

    assert losses(run) == losses(straight)
    assert "cut a torn last line" in resumed.stderr


# ----------------------------------------------------------------------------- bad input


def test_existing_run_dir_needs_overwrite_or_resume(medquad_prepared, tiny_runs) -> None:
    cfg = load_config(None, [*MICRO, "train.method=lora"])
    with pytest.raises(MedchatError, match=r"--overwrite.*--resume"):
        train_mod.train(cfg, medquad_prepared, tiny_runs["lora"])


def test_resume_without_checkpoint_is_a_clear_error(medquad_prepared, tmp_path) -> None:
    cfg = load_config(None, MICRO)
    (tmp_path / "run").mkdir()
    with pytest.raises(MedchatError, match="no complete checkpoint"):
        train_mod.train(cfg, medquad_prepared, tmp_path / "run", resume=True)


def test_data_folder_without_manifest_is_a_clear_error(tmp_path) -> None:
    (tmp_path / "train.jsonl").write_text('{"question": "q", "answer": "a"}\n')
    with pytest.raises(MedchatError, match="medchat data prepare"):
        train_mod.train(load_config(None, MICRO), tmp_path, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_qlora_without_bitsandbytes_is_a_clear_error(
    medquad_prepared, tmp_path, monkeypatch
) -> None:
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import fails as if not installed
    with pytest.raises(MedchatError, match="bitsandbytes"):
        train_mod.train(
            load_config(None, [*MICRO, "train.method=qlora"]), medquad_prepared, tmp_path / "run"
        )
    assert not (tmp_path / "run").exists()


def test_cli_train_errors_are_one_line_without_traceback(medquad_prepared, tmp_path) -> None:
    out = _cli(
        "train", "--data", str(medquad_prepared), "--out", str(tmp_path / "r"), "train.method=sft"
    )
    assert out.returncode == 2
    assert "train.method" in out.stderr and "Traceback" not in out.stderr


def test_merged_adapter_answers_like_the_adapter(tiny_runs) -> None:
    from medchat.infer.generate import GenerationSettings, generate_answers

    run = tiny_runs["lora"]
    merged = train_mod.merge_adapter(run, str(run / "base_model"))
    settings = GenerationSettings(max_new_tokens=8)
    q = ["What is (are) asthma ?", "How to prevent gout ?"]
    adapter_answers = generate_answers(
        modeling.load_model_spec(str(run)), q, settings, progress=False
    )
    merged_answers = generate_answers(
        modeling.load_model_spec(str(merged)), q, settings, progress=False
    )
    assert merged_answers == adapter_answers


def test_two_process_ddp_on_cpu_with_the_same_command(medquad_prepared, tmp_path) -> None:
    """`torchrun` runs the same `medchat train` command as DDP (gloo on CPU), no code change."""
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "medchat.cli", "train", "--data", str(medquad_prepared), "--out", str(run),
           *MICRO, "train.method=lora", "train.max_steps=8", "train.batch_size=8"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["examples_seen"] == 8 * 8 * 2  # steps x batch x ranks
    # Logged losses are per-token means, not multiplied by the world size.
    assert 5.0 < summary["first_loss"] < 8.0
    assert (run / "adapter" / "adapter_model.safetensors").is_file()


def test_distributed_launch_configs_parse() -> None:
    import yaml

    folder = REPO_ROOT / "configs" / "distributed"
    for path in folder.glob("*.yaml"):
        assert yaml.safe_load(path.read_text())["mixed_precision"] == "bf16"  # never fp16 for T5
    for path in folder.glob("*.json"):
        assert json.loads(path.read_text())["zero_optimization"]["stage"] in (2, 3)
