"""The JSON bodies the server takes (pydantic models: FastAPI checks them and documents them in the OpenAPI
schema). Arrays inside JSON are base64 of zlib-compressed ``.npy`` bytes (``serve.wire.array_to_text``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class VocabularyRequest(BaseModel):
    classes: list[str] = Field(description='Class entries, name first: ["nucleus", "cell, blob"].')
    seen: list[bool] | None = Field(None, description="Per class, whether the model was trained on it.")


class ExamplesRequest(BaseModel):
    features: str = Field(description="float32 (N, F) features: base64 of zlib-compressed np.save bytes.")
    class_names: list[str]
    model: str = Field(description="The fingerprint of the model the features belong to (GET /v1/models).")
    layout: str


class OnImage(BaseModel):
    """What every request on an image may carry besides the ids: the vocabulary and examples themselves, which
    a client sends again after a 404 for their id (a restarted server, or another replica behind a load
    balancer), so that any server can answer."""

    vocabulary_classes: VocabularyRequest | None = None
    examples_set: ExamplesRequest | None = None


class PredictRequest(OnImage):
    vocabulary: str = Field(description="A vocabulary id from POST /v1/vocabularies.")
    points: list | None = Field(None, description="(P, 2) or (N, P, 2) (x, y) pixels of the image.")
    point_labels: list | None = Field(None, description="(P,) or (N, P): 1 positive, 0 negative, -1 padding.")
    boxes: list | None = Field(None, description="(4,) or (N, 4) XYXY pixels of the image.")
    multimask_output: bool = False
    top_k: int = 5
    examples: str | None = Field(None, description="An examples id from POST /v1/examples (learnt classes).")


class AnnotateRequest(OnImage):
    vocabulary: str
    examples: str | None = Field(None, description="An examples id from POST /v1/examples.")
    classes: list[str] | None = Field(None, description='Keep only these classes ("find all nucleus").')
    options: dict[str, Any] = Field(default_factory=dict, description="AutomaticAnnotator keyword arguments.")


class NameLabelsRequest(OnImage):
    vocabulary: str
    examples: str | None = None
    labels: str = Field(description="The (H, W) label image: base64 of zlib-compressed np.save bytes.")
    refine: bool = False
    top_k: int = 3


class ExampleFeaturesRequest(BaseModel):
    masks: list[dict[str, Any]] = Field(
        description="Masks as in predict answers: offset, shape (1, h, w), runs."
    )
