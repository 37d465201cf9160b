"""Publishing to the Hugging Face Hub: the dataset, every experiment's adapter, cards, and the Space.

The local Hub stand-in and the demo live in `offline/`.
"""
