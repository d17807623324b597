"""What each tab draws, computed from the model, the tokenizer or the data loader (no Gradio)."""
