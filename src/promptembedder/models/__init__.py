"""The models: P (generator), W (alignment), frozen E (backbone, pooling, deep prompt, KV cache), PromptEmbedder,
the baselines, and the training interface every trained model implements."""
