"""LoRA training of the generator variants on RAG examples (TRL SFTTrainer + peft)."""
