"""Serving other encoders' model versions through adapters (v2 embeddings -> v1's space).

`ModelRoutes` picks, by an envelope's (model_id, model_version), the route its embedding takes:
the hub's own model (identity), or an adapter listed in the bundle's ``manifest.adapters``.
Each route carries the shape the embedding must have on the wire and the poisoning checker for
what comes out of it (an adapter has its own reference statistics). See docs/models.md.
"""

from cloud_hub.adapters.routes import ModelRoute, ModelRoutes

__all__ = ["ModelRoute", "ModelRoutes"]
