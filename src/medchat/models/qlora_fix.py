"""Keep a 4-bit (bitsandbytes) model trainable on CPUs with AVX512-BF16.

bitsandbytes 0.50 repacks a Linear4bit's weight into an inference-only layout the first time it
runs a no-grad forward in eval mode on such a CPU (an evaluation pass, or `generate()`). That
layout has no backward: later training steps silently pass no gradient to the LoRA weights
("gemv_4bit: an autograd kernel was not registered"). For a model we train, we switch the repack
off and undo any repack that already happened.
"""

from __future__ import annotations

import torch


def keep_4bit_trainable(model: torch.nn.Module) -> int:
    """Disable bitsandbytes' CPU inference repack on every 4-bit layer; returns layers touched."""
    try:
        import bitsandbytes as bnb
        from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse
    except ImportError:
        return 0
    touched = 0
    for module in model.modules():
        if not isinstance(module, bnb.nn.Linear4bit):
            continue
        module.support_avx512bf16_for_cpu = False
        state = getattr(module.weight, "quant_state", None)
        if state is not None and getattr(state, "packing_format_for_cpu", False):
            module.weight.data, module.weight.quant_state = _convert_weight_packed_for_cpu_inverse(
                module.weight.data, state
            )
        touched += 1
    return touched


def repacked_layers(model: torch.nn.Module) -> int:
    """How many 4-bit layers are in the inference-only CPU layout (0 for a trainable model)."""
    return sum(
        1
        for m in model.modules()
        if getattr(
            getattr(getattr(m, "weight", None), "quant_state", None),
            "packing_format_for_cpu",
            False,
        )
    )
