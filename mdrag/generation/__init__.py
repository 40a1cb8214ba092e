"""Generation: the base model (+ LoRA adapters), the paper's prompt with its span map, decoding."""
