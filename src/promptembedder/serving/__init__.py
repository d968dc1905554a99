"""An OpenAI-compatible embeddings server for saved PromptEmbedders, baselines, backbones and exported folders.

Needs the `serve` extra: `pip install 'promptembedder[serve]'`.
"""

from .app import ServerSettings, create_app, serve
from .backend import EmbedderBackend, SentenceTransformerBackend, load_backend
from .batcher import DynamicBatcher, Overloaded

__all__ = ["DynamicBatcher", "EmbedderBackend", "Overloaded", "SentenceTransformerBackend", "ServerSettings",
           "create_app", "load_backend", "serve"]
