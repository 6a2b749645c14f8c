"""Inference backends on the micro model: ct2 tokens and scores vs torch, int8, streaming."""

from __future__ import annotations

import json

import pytest
import torch

from medchat.errors import MedchatError
from medchat.infer.backends import load_backend, resolve_backend
from medchat.infer.generate import GenerationSettings
from medchat.prompts import format_prompt
from tests.conftest import requires

SETTINGS = GenerationSettings(max_new_tokens=24)


@pytest.fixture(scope="module")
def reference(tiny_runs):
    return load_backend(str(tiny_runs["full"]), "torch")


@pytest.fixture(scope="module")
def prompts(medquad_prepared, reference):
    from medchat.data import load_split

    rows = load_split(medquad_prepared, "test")[:12]
    return [format_prompt(r["question"], reference.prompt_template) for r in rows]


@pytest.fixture(scope="module")
def ct2_dirs(tiny_runs, tmp_path_factory):
    pytest.importorskip("ctranslate2")
    from medchat.infer.export import export_ct2

    root = tmp_path_factory.mktemp("ct2")
    return {q: export_ct2(str(tiny_runs["full"]), root / q, q) for q in ("float32", "int8")}


def mean_abs(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b)
    return sum(abs(x - y) for x, y in zip(a, b, strict=True)) / len(a)


# ----------------------------------------------------------------------------- ct2


@requires("ctranslate2")
def test_ct2_greedy_answers_equal_torch(reference, ct2_dirs, prompts):
    ct2 = load_backend(str(ct2_dirs["float32"]), "ct2", compute_type="float32")
    want = reference.generate(prompts, SETTINGS)
    got = ct2.generate(prompts, SETTINGS)
    assert [g.text for g in got] == [w.text for w in want]
    assert [g.tokens for g in got] == [w.tokens for w in want]
    assert [g.prompt_tokens for g in got] == [w.prompt_tokens for w in want]
    assert ct2.prompt_template == reference.prompt_template


@requires("ctranslate2")
@pytest.mark.parametrize(("quantization", "tolerance"), [("float32", 1e-4), ("int8", 0.3)])
def test_ct2_scores_agree_with_torch_log_probs(
    reference, ct2_dirs, prompts, quantization, tolerance
):
    import ctranslate2

    from medchat.infer.export import ct2_outputs, torch_reference

    refs = torch_reference(reference.lm.model, reference.tokenizer, prompts, 16)
    translator = ctranslate2.Translator(str(ct2_dirs[quantization]), compute_type=quantization)
    greedy, scores = ct2_outputs(translator, reference.tokenizer, prompts, refs, 16)
    diffs = [mean_abs(r["log_probs"], s) for r, s in zip(refs, scores, strict=True)]
    assert sum(diffs) / len(diffs) < tolerance
    if quantization == "float32":
        assert max(diffs) < tolerance
        assert greedy == [r["ids"] for r in refs]
    # The export checked itself the same way and recorded it.
    manifest = json.loads((ct2_dirs[quantization] / "export_manifest.json").read_text())
    assert manifest["verification"]["ok"] and manifest["quantization"] == quantization


@requires("ctranslate2")
def test_a_plain_conversion_scales_the_logits_and_the_check_catches_it(
    tiny_runs, reference, prompts, tmp_path
):
    """transformers 5 says tie_word_embeddings=True for every T5; ct2 then scales the outputs."""
    from ctranslate2.converters import TransformersConverter

    from medchat.infer.export import verify_ct2

    TransformersConverter(str(tiny_runs["full"] / "model")).convert(
        str(tmp_path / "plain"), quantization="float32"
    )
    report = verify_ct2(
        tmp_path / "plain", reference.lm.model, reference.tokenizer, "float32", prompts
    )
    assert report["greedy_tokens_equal"] == len(prompts)  # tokens alone would not show it
    assert report["mean_abs_logprob_diff"] > 0.5 and not report["ok"]


# ----------------------------------------------------------------------------- torch int8


def test_torch_int8_quantises_every_linear_and_keeps_log_probs_close(tiny_runs, reference, prompts):
    from torch.ao.nn.quantized.dynamic import Linear as QLinear

    from medchat.infer.export import torch_reference

    int8 = load_backend(str(tiny_runs["full"]), "torch-int8")
    model = int8.lm.model
    assert isinstance(model.lm_head, QLinear)
    assert not [n for n, m in model.named_modules() if type(m) is torch.nn.Linear]
    refs = torch_reference(reference.lm.model, reference.tokenizer, prompts, 16)
    got = torch_reference(model, int8.tokenizer, prompts, 16)
    # Teacher-forced on the fp32 tokens: the int8 model's log-probs of the same tokens.
    diffs = []
    with torch.inference_mode():
        for p, r in zip(prompts, refs, strict=True):
            enc = int8.tokenizer([p], return_tensors="pt")
            labels = torch.tensor([[*r["ids"], int8.tokenizer.eos_token_id]])
            logp = torch.log_softmax(model(**enc, labels=labels).logits, -1)[0]
            diffs.append(
                mean_abs(r["log_probs"], logp.gather(1, labels[0][:, None])[:, 0].tolist())
            )
    assert sum(diffs) / len(diffs) < 0.3
    assert [g["ids"][:1] for g in got] == [r["ids"][:1] for r in refs]  # first tokens agree


@requires("peft")
def test_torch_int8_merges_a_lora_adapter_first(tiny_runs, prompts):
    from torch.ao.nn.quantized.dynamic import Linear as QLinear

    adapter = load_backend(str(tiny_runs["lora"]), "torch")
    int8 = load_backend(str(tiny_runs["lora"]), "torch-int8")
    assert not hasattr(int8.lm.model, "peft_config")
    assert isinstance(int8.lm.model.encoder.block[0].layer[0].SelfAttention.q, QLinear)
    # The adapter is in the weights: first answer tokens follow the adapter run's.
    one = GenerationSettings(max_new_tokens=1)
    assert [g.text for g in int8.generate(prompts, one)] == [
        g.text for g in adapter.generate(prompts, one)
    ]


# ----------------------------------------------------------------------------- streaming


def stream_backends(reference, ct2_dirs):
    return [reference, load_backend(str(ct2_dirs["float32"]), "ct2", compute_type="float32")]


@requires("ctranslate2")
def test_streamed_pieces_join_to_the_batch_answer(reference, ct2_dirs, prompts):
    # no repeats: the micro model's favourite token is a comma, and a run of commas (no space)
    # would arrive as one piece
    settings = GenerationSettings(max_new_tokens=24, no_repeat_ngram_size=1)
    for backend in stream_backends(reference, ct2_dirs):
        for prompt in prompts[:3]:
            pieces: list[str] = []
            gen = backend.stream(prompt, settings, pieces.append)
            assert len(pieces) > 1, backend.kind
            assert "".join(pieces).strip() == gen.text
            assert gen.text == backend.generate([prompt], settings)[0].text


@requires("ctranslate2")
def test_stream_stops_when_asked(reference, ct2_dirs, prompts):
    long = GenerationSettings(max_new_tokens=40, no_repeat_ngram_size=3)
    for backend in stream_backends(reference, ct2_dirs):
        pieces: list[str] = []
        gen = backend.stream(prompts[0], long, pieces.append, lambda p=pieces: len(p) >= 3)
        assert gen.tokens < 20, backend.kind


# ----------------------------------------------------------------------------- choosing


@requires("ctranslate2")
def test_backend_choice_and_clear_errors(tiny_runs, ct2_dirs):
    run, ct2_dir = str(tiny_runs["full"]), str(ct2_dirs["int8"])
    assert resolve_backend(ct2_dir) == "ct2"
    if not torch.cuda.is_available():
        assert resolve_backend(run) == "torch-int8"
    assert resolve_backend(run, "torch") == "torch"
    with pytest.raises(MedchatError, match="CTranslate2 export folder"):
        load_backend(run, "ct2")
    with pytest.raises(MedchatError, match="--backend ct2"):
        load_backend(ct2_dir, "torch")
    with pytest.raises(MedchatError, match="unknown backend"):
        load_backend(run, "onnx")


@requires("bitsandbytes")
def test_qlora_runs_are_not_requantised(tiny_runs):
    if "qlora" not in tiny_runs:
        pytest.skip("no QLoRA micro run here")
    if not torch.cuda.is_available():
        assert resolve_backend(str(tiny_runs["qlora"])) == "torch"
    with pytest.raises(MedchatError, match="4-bit"):
        load_backend(str(tiny_runs["qlora"]), "torch-int8")


@requires("ctranslate2")
def test_auto_times_int8_against_ct2_once_and_remembers_per_machine(
    tiny_runs, tmp_path, monkeypatch
):
    """`--backend auto` on a CPU: the first load exports ct2 beside the run, times both backends
    and keeps the faster; the next load reuses the export and the remembered choice."""
    import shutil

    from medchat.infer import backends

    if torch.cuda.is_available():
        pytest.skip("auto measures only on a CPU")
    run = tmp_path / "run"
    shutil.copytree(tiny_runs["full"], run)
    choices = tmp_path / "choices.json"
    monkeypatch.setenv(backends.CHOICES_ENV, str(choices))
    monkeypatch.setattr(backends, "AUTO_SECONDS", 0.2)

    first = load_backend(str(run), "auto", threads=1)
    record = first.choice
    assert record["cached"] is False and set(record["batch1_seconds"]) == {"torch-int8", "ct2"}
    faster = min(record["batch1_seconds"], key=record["batch1_seconds"].get)
    assert first.kind == record["chosen"] == faster
    assert backends.is_ct2_dir(run / "ct2-int8")  # exported once, beside the run
    saved = json.loads(choices.read_text())
    assert list(saved) == [record["key"]] and saved[record["key"]]["chosen"] == faster

    # The next load measures nothing and serves what was chosen.
    def no_timing(*a, **k):
        raise AssertionError("timed again")

    monkeypatch.setattr(backends, "_median_latency", no_timing)
    for chosen in ("ct2", "torch-int8"):
        saved[record["key"]]["chosen"] = chosen
        choices.write_text(json.dumps(saved))
        again = load_backend(str(run), "auto", threads=1)
        assert again.kind == chosen and again.choice["cached"] is True
        prompt = format_prompt("What is glaucoma ?", again.prompt_template)
        assert again.generate([prompt], GenerationSettings(max_new_tokens=4))[0].tokens > 0
    # A named backend is never measured; measure=False keeps the old default.
    assert load_backend(str(run), "torch-int8").choice is None
    assert load_backend(str(run), "auto", measure=False).kind == "torch-int8"


def test_auto_without_ctranslate2_serves_int8_and_says_why(tiny_runs, tmp_path, monkeypatch):
    from medchat.infer import backends

    if torch.cuda.is_available():
        pytest.skip("auto measures only on a CPU")

    def missing():
        raise MedchatError("ctranslate2 is not installed (pip install 'medchat[ct2]')")

    monkeypatch.setenv(backends.CHOICES_ENV, str(tmp_path / "choices.json"))
    monkeypatch.setattr(backends, "require_ctranslate2", missing)
    b = load_backend(str(tiny_runs["full"]), "auto")
    assert b.kind == "torch-int8" and "not installed" in b.choice["reason"]
    assert not (tmp_path / "choices.json").exists()  # nothing measured, nothing remembered


class OverlapProbe:
    """A real tokenizer that notes when two threads are inside it at once (what makes a fast
    tokenizer fail with "Already borrowed"); each call lingers so an unserialised overlap shows."""

    def __init__(self, tokenizer) -> None:
        import threading

        self.tokenizer, self.inside, self.most = tokenizer, 0, 0
        self.guard = threading.Lock()

    def _enter(self, fn, *args, **kwargs):
        import time

        with self.guard:
            self.inside += 1
            self.most = max(self.most, self.inside)
        try:
            time.sleep(0.002)
            return fn(*args, **kwargs)
        finally:
            with self.guard:
                self.inside -= 1

    def __call__(self, *args, **kwargs):
        return self._enter(self.tokenizer, *args, **kwargs)

    def decode(self, *args, **kwargs):
        return self._enter(self.tokenizer.decode, *args, **kwargs)

    def batch_decode(self, *args, **kwargs):
        return self._enter(self.tokenizer.batch_decode, *args, **kwargs)

    def __len__(self) -> int:
        return len(self.tokenizer)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def test_threads_sharing_a_served_model_take_turns_in_its_tokenizer(
    tiny_runs, prompts, monkeypatch
):
    """The server's worker generates (and streams) while rag grounding measures prompts in other
    threads; the loaded model's tokenizer lets one of them in at a time."""
    import threading

    from medchat.models import modeling

    probes: list[OverlapProbe] = []
    real = modeling.load_tokenizer

    def probed(*args, **kwargs):
        probes.append(OverlapProbe(real(*args, **kwargs)))
        return probes[-1]

    monkeypatch.setattr(modeling, "load_tokenizer", probed)
    backend = load_backend(str(tiny_runs["full"]), "torch")
    few = GenerationSettings(max_new_tokens=6)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(3):
                if i % 3 == 0:
                    backend.generate(prompts[:4], few)
                elif i % 3 == 1:
                    backend.stream(prompts[i], few, lambda text: None)
                else:  # what rag grounding does to fit passages into 512 tokens
                    len(backend.lm.tokenizer(prompts[i])["input_ids"])
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert probes and all(p.most == 1 for p in probes), [p.most for p in probes]
