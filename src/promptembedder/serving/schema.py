"""The request and response bodies of the OpenAI embeddings API, plus our `instruction`/`task` fields.

Requests are validated here, not by FastAPI's automatic body parsing, so every mistake comes back as a 400 in
OpenAI's error shape with the offending field in `param`, which the openai client turns into a BadRequestError.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, StrictInt, ValidationError


class APIError(Exception):
    """An error the API reports to its client: HTTP status plus OpenAI's `{"error": {...}}` body."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error", headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class EmbeddingRequest(BaseModel):
    """POST /v1/embeddings. `instruction` (free text) or `task` (a name the server knows) choose the prompt;
    `prompt_type` "document" encodes the document side (no prompt for models trained with prompt_on='query')."""

    model_config = ConfigDict(extra="forbid")

    input: str | list[Any]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: StrictInt | None = None  # OpenAI's is an integer: "3" or true would be coerced otherwise
    user: str | None = None
    instruction: str | None = None
    task: str | None = None
    prompt_type: Literal["query", "document"] = "query"


@dataclass
class Limits:
    """What one request may ask for; beyond them the server answers 400 or 413, never a slow failure."""

    max_items: int = 2048
    max_body_bytes: int = 8 * 1024 * 1024
    max_instruction_chars: int = 2000
    #: Checked before tokenising: tokenising costs ~2 us a character whatever E's max_length truncates to, so one
    #: huge text would hold the only encoding thread. 32768 is about 8k tokens (OpenAI's limit per input).
    max_text_chars: int = 32768
    #: Seconds a client has to send its whole body: a client that trickles it (or stops) would otherwise hold a
    #: connection and its buffer for as long as it likes; uvicorn bounds only the idle keep-alive.
    body_timeout: float = 30.0

    def __post_init__(self) -> None:
        check_positive(max_items=self.max_items, max_body_bytes=self.max_body_bytes,
                       max_instruction_chars=self.max_instruction_chars, max_text_chars=self.max_text_chars,
                       body_timeout=self.body_timeout)


def check_positive(**values: float) -> None:
    """Settings that must be >= 1 (NaN included in the refusal), named as the serve option that sets them."""
    for name, value in values.items():
        if isinstance(value, bool) or not value >= 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")


def parse_request(body: bytes, limits: Limits) -> tuple[EmbeddingRequest, list[str]]:
    """Validate a request body into the request and its list of texts (a single string becomes a list of one)."""
    try:
        request = EmbeddingRequest.model_validate_json(body)
    except ValidationError as err:
        first = err.errors()[0]
        param = str(first["loc"][0]) if first["loc"] else None  # the field, not pydantic's union branch (input.str)
        message = ("input must be a string or a list of strings" if param == "input"
                   else f"{param or 'body'}: {first['msg']}")
        raise APIError(400, f"invalid request: {message}", param=param) from None
    texts = [request.input] if isinstance(request.input, str) else request.input
    if not texts:
        raise APIError(400, "input is empty: give a string or a non-empty list of strings", param="input")
    if len(texts) > limits.max_items:
        raise APIError(400, f"input has {len(texts)} items; at most {limits.max_items} per request", param="input")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise APIError(400, f"input[{i}] is {type(text).__name__}, not a string (token arrays are not "
                           "supported)", param="input")
        if len(text) > limits.max_text_chars:
            raise APIError(400, f"input[{i}] is {len(text)} characters; at most {limits.max_text_chars} per text "
                           "(split it, or raise the server's --max-text-chars)", param="input",
                           code="text_too_long")
        if not text.strip():
            raise APIError(400, f"input[{i}] is empty: an empty text has no embedding", param="input")
    if request.instruction is not None and request.task is not None:
        raise APIError(400, "give either instruction or task, not both", param="instruction")
    if request.instruction is not None and len(request.instruction) > limits.max_instruction_chars:
        raise APIError(400, f"instruction is longer than {limits.max_instruction_chars} characters",
                       param="instruction")
    return request, texts


def check_dimensions(dimensions: int | None, full_dim: int) -> None:
    if dimensions is not None and not 1 <= dimensions <= full_dim:
        raise APIError(400, f"dimensions must be between 1 and {full_dim} (this model's size), got {dimensions}",
                       param="dimensions")


def shape_embeddings(vectors: np.ndarray, dimensions: int | None, full_dim: int) -> np.ndarray:
    """Keep the first `dimensions` coordinates and renormalise (OpenAI's `dimensions`); a clear 400 otherwise."""
    check_dimensions(dimensions, full_dim)
    if dimensions is None or dimensions == full_dim:
        return vectors
    cut = vectors[:, :dimensions]
    return cut / np.maximum(np.linalg.norm(cut, axis=1, keepdims=True), 1e-12)


def embedding_response(vectors: np.ndarray, model: str, encoding_format: str, tokens: int) -> dict[str, Any]:
    """OpenAI's list of embeddings; base64 is little-endian float32, as the openai client decodes it."""
    data = []
    for i, vector in enumerate(vectors.astype("<f4", copy=False)):
        value = base64.b64encode(vector.tobytes()).decode() if encoding_format == "base64" else vector.tolist()
        data.append({"object": "embedding", "index": i, "embedding": value})
    return {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
