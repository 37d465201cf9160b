"""Fine-tune TinyLlama-1.1B-Chat with LoRA on medical flashcards: prepare, train, evaluate."""
