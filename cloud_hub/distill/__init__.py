"""The closed loop: hub answers to escalated inputs become the next edge head. Pure core.

    DistillSet      what devices in good standing escalated and the hub answered (embeddings
                    and the hub's labels only: inputs never leave a device), each device's
                    share capped at the fleet's median count (cloud_hub/poisoning/robust.py)
    train_head      (escalade.modelbuild.distill) a new edge head and router threshold on it
    stage_bundle    (escalade.modelbuild.distill) the head written as a new signed bundle,
                    which the rollouts deliver like any other

Collecting from the live record stream is not wired: the hub records labels, not embeddings
(docs/models.md says what is missing); the benchmark feeds the set from its simulated fleet.
"""

from cloud_hub.distill.dataset import DistillSample, DistillSet

__all__ = ["DistillSample", "DistillSet"]
