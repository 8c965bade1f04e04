"""Graph specs: every kind of bad spec is refused with its own stable code; a good spec is
planned with its gate first and its independent branches in one stage."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from graph_bundle import graph_bundle
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.graphs import GraphErrorCode, GraphSpecError, load_graph, parse_spec, plan, validate
from edge_agent.graphs.spec import ancestors
from escalade_protocol.artifacts import load_manifest, sha256_file

CLASSES = 10
HEADER = 'name = "g"\noutput = "{output}"\n'
GROUPS = """
[models.groups]
path = "groups.onnx"
sha256 = "{z}"
gives = "groups"
groups = [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]

[models.low]
path = "low.onnx"
sha256 = "{z}"
gives = "probabilities"
classes = [0, 1, 2, 3, 4]

[models.high]
path = "high.onnx"
sha256 = "{z}"
gives = "probabilities"
classes = [5, 6, 7, 8, 9]
""".replace("{z}", "0" * 64)


def node(node_id: str, body: str) -> str:
    return f'\n[[nodes]]\nid = "{node_id}"\n{body}\n'


EMBED = node("embed", 'model = "encoder"\ninputs = ["input"]')
GATE = node("gate", 'model = "head"\ninputs = ["embed"]\nexit_threshold = 0.9')
BRANCHES = (
    node("groups", 'model = "groups"\ninputs = ["embed"]')
    + node("low", 'model = "low"\ninputs = ["embed"]')
    + node("high", 'model = "high"\ninputs = ["embed"]')
)
MIX = node("mix", 'gate = "groups"\nexperts = ["low", "high"]\nroute = "auto"')
GOOD = HEADER.format(output="mix") + GROUPS + EMBED + GATE + BRANCHES + MIX


def code_of(text: str) -> GraphErrorCode:
    with pytest.raises(GraphSpecError) as caught:
        validate(parse_spec(text), num_classes=CLASSES)
    return caught.value.code


def test_a_good_spec_plans_its_gate_before_the_branches() -> None:
    """The gate's stage holds only the gate; the three branches share one stage after it."""
    graph = validate(parse_spec(GOOD), num_classes=CLASSES)
    stages = plan(graph).stages
    assert [s.nodes for s in stages] == [
        ("embed",),
        ("gate",),
        ("groups", "low", "high"),
        ("mix",),
    ]
    assert [s.exits for s in stages] == [(), ("gate",), (), ()]
    assert graph.nodes["mix"].embedding_from == "embed"


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("name = ", GraphErrorCode.INVALID_SPEC),
        (HEADER.format(output="x") + "surprise = 1\n" + EMBED, GraphErrorCode.INVALID_SPEC),
        (HEADER.format(output="gate") + EMBED + GATE + GATE, GraphErrorCode.DUPLICATE_NODE),
        (
            HEADER.format(output="gate") + EMBED + node("gate", 'model = "head"\ninputs = ["e"]'),
            GraphErrorCode.UNKNOWN_NODE,
        ),
        (HEADER.format(output="nowhere") + EMBED + GATE, GraphErrorCode.UNKNOWN_NODE),
        (
            HEADER.format(output="gate")
            + EMBED
            + node("gate", 'model = "giant"\ninputs = ["embed"]'),
            GraphErrorCode.UNKNOWN_MODEL,
        ),
        (
            HEADER.format(output="b")
            + node("a", 'model = "head"\ninputs = ["b"]')
            + node("b", 'model = "head"\ninputs = ["a"]'),
            GraphErrorCode.CYCLE,
        ),
        (
            # The head takes an embedding; the input is raw features.
            HEADER.format(output="gate") + node("gate", 'model = "head"\ninputs = ["input"]'),
            GraphErrorCode.TYPE_MISMATCH,
        ),
        (
            # A mixture whose experts do not cover the gate's groups.
            HEADER.format(output="mix")
            + GROUPS
            + EMBED
            + BRANCHES
            + node("mix", 'gate = "groups"\nexperts = ["high", "low"]'),
            GraphErrorCode.TYPE_MISMATCH,
        ),
        (
            # The output gives groups, not classes.
            HEADER.format(output="groups")
            + GROUPS
            + EMBED
            + BRANCHES.split("[[nodes]]")[0]
            + node("groups", 'model = "groups"\ninputs = ["embed"]'),
            GraphErrorCode.TYPE_MISMATCH,
        ),
        (
            HEADER.format(output="gate")
            + node("embed", 'model = "encoder"\ninputs = ["input"]\nexit_threshold = 0.5')
            + GATE,
            GraphErrorCode.BAD_GATE,
        ),
        (
            # The hub answers every class: a specialist over five cannot be routed to it.
            HEADER.format(output="mix")
            + GROUPS
            + EMBED
            + node("groups", 'model = "groups"\ninputs = ["embed"]')
            + node("low", 'model = "low"\ninputs = ["embed"]\nroute = "auto"')
            + node("high", 'model = "high"\ninputs = ["embed"]')
            + node("mix", 'gate = "groups"\nexperts = ["low", "high"]'),
            GraphErrorCode.BAD_ROUTE,
        ),
        (
            HEADER.format(output="gate")
            + EMBED
            + GATE
            + BRANCHES.split("\n[[nodes]]")[0]
            + node("orphan", 'model = "head"\ninputs = ["embed"]'),
            GraphErrorCode.UNUSED_NODE,
        ),
    ],
    ids=[
        "not-toml",
        "unknown-field",
        "duplicate",
        "unknown-edge",
        "unknown-output",
        "unknown-model",
        "cycle",
        "input-to-head",
        "mixture-experts",
        "output-groups",
        "gate-on-embedding",
        "route-specialist",
        "unused",
    ],
)
def test_bad_specs_are_refused_with_their_code(text: str, code: GraphErrorCode) -> None:
    """Each bad spec names the problem's code (and nothing runs)."""
    assert code_of(text) is code


@pytest.fixture(scope="module")
def built(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return graph_bundle(bundle_dir, tmp_path_factory.mktemp("graph-spec") / "bundle")


def test_the_demo_graph_loads_and_a_changed_onnx_file_is_refused(
    built: Path, tmp_path: Path
) -> None:
    """The built spec names each extra file's SHA-256; one flipped byte is digest_mismatch."""
    manifest = load_manifest(built)
    executor = load_graph(built / "graph" / "graph.toml", bundle_dir=built, manifest=manifest)
    assert set(executor.graph.models) == {"groups", "group0", "group1", "group2"}
    executor.close()
    copy = tmp_path / "bundle"
    shutil.copytree(built, copy)
    target = copy / "graph" / "group1.onnx"
    data = bytearray(target.read_bytes())
    data[-1] ^= 1
    target.write_bytes(bytes(data))
    with pytest.raises(GraphSpecError) as caught:
        load_graph(copy / "graph" / "graph.toml", bundle_dir=copy, manifest=manifest)
    assert caught.value.code is GraphErrorCode.DIGEST_MISMATCH


def test_an_onnx_file_that_disagrees_with_the_spec_is_bad_model(built: Path) -> None:
    """A 'specialist' over four classes that is really the 10-class head: bad_model."""
    manifest = load_manifest(built)
    text = (built / "graph" / "graph.toml").read_text()
    head = built / "graph" / "fake.onnx"
    shutil.copyfile(built / "head.onnx", head)
    old = next(line for line in text.splitlines() if line.startswith('path = "group0.onnx"'))
    start = text.index(old)
    end = text.index("\n", text.index("sha256", start))
    text = text[:start] + f'path = "fake.onnx"\nsha256 = "{sha256_file(head)}"' + text[end:]
    spec = built / "graph" / "fake.toml"
    spec.write_text(text)
    with pytest.raises(GraphSpecError) as caught:
        load_graph(spec, bundle_dir=built, manifest=manifest)
    assert caught.value.code is GraphErrorCode.BAD_MODEL


@st.composite
def random_graphs(draw: st.DrawFn) -> str:
    """An embed node, then up to six head nodes reading it, a random subset of them gates and
    one the output (nodes that are neither would be refused as unused)."""
    count = draw(st.integers(min_value=1, max_value=6))
    gates = draw(st.lists(st.booleans(), min_size=count, max_size=count))
    output = draw(st.integers(min_value=0, max_value=count - 1))
    text = HEADER.format(output=f"h{output}") + EMBED
    for i, gate in enumerate(gates):
        if gate or i == output:
            exit_line = "\nexit_threshold = 0.9" if gate else ""
            text += node(f"h{i}", f'model = "head"\ninputs = ["embed"]{exit_line}')
    return text


@settings(max_examples=60, deadline=None)
@given(random_graphs())
def test_every_plan_runs_each_node_once_after_its_inputs(text: str) -> None:
    """Property: each node in exactly one stage, after every node it reads; each gate's exit is
    checked in the stage that ran it; before that stage only the ancestors of this gate and of
    earlier gates ran (nothing is spent on work a gate might make unnecessary)."""
    graph = validate(parse_spec(text), num_classes=CLASSES)
    stages = plan(graph).stages
    where = {n: i for i, s in enumerate(stages) for n in s.nodes}
    assert sorted(where) == sorted(graph.nodes)
    assert sum(len(s.nodes) for s in stages) == len(graph.nodes)
    for node_id, graph_node in graph.nodes.items():
        assert all(where[d] < where[node_id] for d in graph_node.inputs if d != "input")
    allowed: set[str] = set()
    for i, stage in enumerate(stages):
        for gate in stage.exits:
            assert gate in stage.nodes
            allowed |= {gate, *ancestors(graph.nodes, gate)}
            assert {n for s in stages[:i] for n in s.nodes} <= allowed
