"""Export to a plain Hugging Face / sentence-transformers folder."""
