"""All Qt code of the plugin (as napari keeps ``napari/_qt``): the dock widget and its panels, the thread-worker
job runner and the objects table. Nothing outside this package imports Qt.

The dock widget (:class:`~napari_ovsam._qt.widget.OVSAMWidget`) assembles one panel per concern, each given
the session, the job runner and what else it declares in its constructor:

- ``model_panel``: choose and load a model (in a worker).
- ``image_panel``: the image layer to annotate, the slice in view, its contrast.
- ``vocabulary_panel``: the classes objects are named from, and the ``unknown`` threshold.
- ``annotate_panel``: prompts, live preview, commit and undo.
- ``stack_panel``: embedding cache, precompute and segment-through-stack jobs.
- ``status``: progress, cancel, timings and the status line.

Helpers shared by panels: ``embeddings`` (the slice in view's embedding job and what waits for it),
``labels_view`` (each image's labels layer, its names overlay and the objects table), ``jobs``, ``controls``.
"""
