"""Box-prompt decoding replayed from captured CUDA graphs.

On a GPU one prompt is bound by launching a few hundred small kernels, not by the work they do. The decode-and-
name path of box prompts needs no host synchronisation, so it can be captured once as a CUDA graph per image,
vocabulary and prompt count and replayed on new boxes. ``OVSAMPredictor`` owns one ``DecodingGraphs``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

import torch

#: Prompt counts up to this many get a graph of their own (larger chunks decode eagerly).
CUDA_GRAPH_MAX_PROMPTS = 16

Outputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
DecodeBoxes = Callable[[torch.Tensor], Outputs]


class CapturedDecoding:
    """A function of a [n, 4] boxes tensor, captured once as a CUDA graph and replayed on new boxes."""

    def __init__(self, fn: DecodeBoxes, boxes: torch.Tensor) -> None:
        self.boxes = boxes.clone()
        side = torch.cuda.Stream(device=boxes.device)
        side.wait_stream(torch.cuda.current_stream(boxes.device))
        with torch.cuda.stream(side):  # warm-up outside the graph (kernel selection, workspaces)
            for _ in range(2):
                fn(self.boxes)
        torch.cuda.current_stream(boxes.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):  # other threads may use the GPU
            self.outputs = fn(self.boxes)

    def __call__(self, boxes: torch.Tensor) -> Outputs:
        self.boxes.copy_(boxes)
        self.graph.replay()
        low_res, iou, probs = self.outputs
        return low_res.clone(), iou.clone(), probs.clone()


class DecodingGraphs:
    """The graphs captured on one set of inputs (image features, text embeddings, seen flags), by key.

    A graph reads its inputs from the tensors it was captured on, so graphs are dropped together with the
    references to those tensors whenever the inputs change (``forget``), never kept for stale features.
    """

    def __init__(self) -> None:
        self._graphs: dict[Hashable, CapturedDecoding] = {}
        self._inputs: tuple[object, ...] = ()

    def forget(self) -> None:
        """Drop every graph and what it was captured on (a new image or vocabulary)."""
        self._graphs.clear()
        self._inputs = ()

    def __len__(self) -> int:
        return len(self._graphs)

    def replay(
        self, inputs: tuple[object, ...], key: Hashable, fn: DecodeBoxes, boxes: torch.Tensor
    ) -> Outputs:
        """``fn(boxes)`` through the graph for ``key``, capturing it first if needed.

        inputs: the objects ``fn`` reads besides ``boxes``, compared by identity: other inputs drop the graphs
        captured so far. Raises ``RuntimeError`` where an operation cannot be captured.
        """
        same = len(inputs) == len(self._inputs) and all(a is b for a, b in zip(inputs, self._inputs))
        if not same:
            self.forget()
            self._inputs = inputs
        graph = self._graphs.get(key)
        if graph is None:
            graph = CapturedDecoding(fn, boxes)
            self._graphs[key] = graph
        return graph(boxes)
