"""The plan of a graph (pure): stages of nodes that may run at the same time.

Gates come first: each gate is scheduled with only its own ancestors, so that when its answer
settles the task nothing else has run. Then the rest, in topological levels: every node of a
stage reads only nodes of earlier stages, so a stage's nodes are independent branches.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.graphs.spec import INPUT, Graph, ancestors


@dataclass(frozen=True, slots=True)
class Stage:
    nodes: tuple[str, ...]
    # Gates whose answer is checked once this stage has run (and its routed nodes decided).
    exits: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Plan:
    stages: tuple[Stage, ...]

    @property
    def parallel_stages(self) -> tuple[Stage, ...]:
        return tuple(s for s in self.stages if len(s.nodes) > 1)


def plan(graph: Graph) -> Plan:
    order = list(graph.nodes)
    scheduled: set[str] = set()
    stages: list[Stage] = []

    def schedule(targets: set[str], exits: tuple[str, ...] = ()) -> None:
        needed = set(targets)
        for target in targets:
            needed |= ancestors(graph.nodes, target)
        needed -= scheduled
        while needed:
            level = tuple(
                n
                for n in order
                if n in needed and all(d == INPUT or d in scheduled for d in graph.nodes[n].inputs)
            )
            scheduled.update(level)
            needed -= set(level)
            stages.append(Stage(level))
        if exits and stages:
            stages[-1] = Stage(stages[-1].nodes, stages[-1].exits + exits)

    for gate in graph.gates:
        if gate in scheduled:  # an ancestor of an earlier gate: checked where it ran
            i = next(i for i, s in enumerate(stages) if gate in s.nodes)
            stages[i] = Stage(stages[i].nodes, (*stages[i].exits, gate))
        else:
            schedule({gate}, (gate,))
    schedule({graph.output})
    return Plan(tuple(stages))
