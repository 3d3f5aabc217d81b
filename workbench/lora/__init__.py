"""LoRA adapters: inspect GGUF adapters (gguf_lora), import PEFT adapters (peft_import).

Core package: no Qt, and no torch (only training needs it, through the `train` extra).
"""
