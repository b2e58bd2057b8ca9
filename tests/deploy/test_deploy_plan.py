"""The nodes.yaml schema and the pure placement plan."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from llmops.deploy.errors import PlanError
from llmops.deploy.plan import INTERNAL_PORTS_PER_INSTANCE, Plan, plan_placement, state_key
from llmops.deploy.spec import DeploySpec, load_spec
from llmops.errors import ConfigError


def spec_from(tmp_path: Path, data: dict[str, Any]) -> DeploySpec:
    path = tmp_path / "nodes.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_spec(path).spec


def plan_of(
    tmp_path: Path, nodes: list[dict[str, Any]], models: list[dict[str, Any]], **top: Any
) -> Plan:
    spec = spec_from(tmp_path, {"deployment": "t", "nodes": nodes, "models": models, **top})
    return plan_placement(spec, top.pop("inventory", {}))


def test_every_problem_is_reported_with_its_yaml_path(tmp_path: Path) -> None:
    bad = {
        "deployment": "a b",
        "ssh": {"port": 0, "usr": "x"},
        "nodes": [{"host": "n1", "gpus": "some"}, {"host": "n1", "gpus": [0, 0]}],
        "models": [
            {"name": "m", "model": "/m", "engine": "tgi", "tp": 0, "replicas": "all"},
            {"name": "m", "model": "/m", "gpu_memory_utilization": 1.5, "nodes": ["n9"]},
            {"name": "s", "model": "/s", "engine": "sglang", "api_key": "k", "env": {"1X": "v"}},
        ],
    }
    path = tmp_path / "nodes.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError) as caught:
        load_spec(path)
    text = "\n".join(caught.value.problems)
    for expected in (
        "deployment: must be letters",
        "ssh.port: must be a port number",
        "ssh.usr: unknown key",
        "nodes[0].gpus: must be",
        "nodes[1].gpus: has a GPU index twice",
        "models[0].engine: must be one of vllm, sglang",
        "models[0].tp: must be > 0",
        "models[0].replicas",
        "models[1].gpu_memory_utilization: must be in (0, 1]",
    ):
        assert expected in text, expected
    # Cross-key problems are only checked once the schema holds; check them on a valid shape.
    bad["deployment"] = "ok"
    bad["ssh"] = {}
    bad["nodes"] = [{"host": "n1", "gpus": 2}, {"host": "n1", "gpus": [0, 1]}]
    bad["models"][0] = {"name": "m", "model": "/m"}
    del bad["models"][1]["gpu_memory_utilization"]
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError) as caught:
        load_spec(path)
    assert caught.value.problems == [
        "nodes[1].host: n1 is listed twice",
        "models[1].name: m is listed twice",
        "models[1].nodes: n9 is not in nodes",
        "models[2].api_key: only supported for vllm (sglang would show it in ps)",
        "models[2].env.1X: not a valid environment variable name",
    ]


def test_references_resolve_and_raw_api_key_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENGINE_KEY", "sk-secret")
    (tmp_path / "hf").write_text("/data/hf\n")
    path = tmp_path / "nodes.yaml"
    data = {
        "deployment": "d",
        "nodes": [{"host": "n1", "gpus": 1}],
        "models": [
            {
                "name": "m",
                "model": "/m",
                "api_key": "${env:ENGINE_KEY}",
                "env": {"HF_HOME": "${file:hf}"},
            }
        ],
    }
    path.write_text(yaml.safe_dump(data))
    loaded = load_spec(path)
    assert loaded.spec.models[0].api_key == "sk-secret"
    assert loaded.spec.models[0].env == {"HF_HOME": "/data/hf"}
    assert loaded.raw_api_keys == {"m": "${env:ENGINE_KEY}"}
    instance = plan_placement(loaded.spec, {}).instances[0]
    assert instance.env["VLLM_API_KEY"] == "sk-secret"
    assert "sk-secret" not in " ".join(instance.argv)  # the key is never on the command line


def test_ssh_options_merge_node_over_top_over_defaults(tmp_path: Path) -> None:
    spec = spec_from(
        tmp_path,
        {
            "deployment": "d",
            "ssh": {"user": "ubuntu", "key": "~/.ssh/k", "jump": "bastion:2200"},
            "nodes": [
                {"host": "a", "gpus": 1},
                {"host": "b", "gpus": 1, "ssh": {"port": 2222, "user": "root"}},
            ],
            "models": [],
        },
    )
    a, b = (spec.ssh_for(node) for node in spec.nodes)
    assert (a.user, a.port, a.key, a.jump, a.known_hosts) == (
        "ubuntu",
        22,
        "~/.ssh/k",
        "bastion:2200",
        "~/.ssh/known_hosts",
    )
    assert (b.user, b.port, b.key, b.jump) == ("root", 2222, "~/.ssh/k", "bastion:2200")
    assert a.max_channels == 8 and a.connect_timeout_s == 10.0


def test_vllm_argv_env_and_ports_exactly(tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path,
        [{"host": "10.0.0.1", "gpus": 4}],
        [
            {
                "name": "qwen",
                "model": "/models/Qwen",
                "tp": 2,
                "replicas": 2,
                "port": 8000,
                "gpu_memory_utilization": 0.9,
                "max_model_len": 32768,
                "max_num_seqs": 64,
                "env": {"HF_HOME": "/data/hf"},
                "extra_args": ["--enable-prefix-caching"],
            }
        ],
    )
    first, second = plan.instances
    assert first.name == "qwen-10.0.0.1-0" and second.name == "qwen-10.0.0.1-1"
    assert first.argv == (
        "vllm", "serve", "/models/Qwen", "--served-model-name", "qwen", "--host", "0.0.0.0",
        "--port", "8000", "--tensor-parallel-size", "2", "--gpu-memory-utilization", "0.9",
        "--max-model-len", "32768", "--max-num-seqs", "64", "--enable-prefix-caching",
    )  # fmt: skip
    assert second.argv[7:9] == ("--port", "8001")
    assert first.env == {"HF_HOME": "/data/hf", "CUDA_VISIBLE_DEVICES": "0,1", "VLLM_PORT": "29500"}
    assert second.env["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert second.env["VLLM_PORT"] == str(29500 + INTERNAL_PORTS_PER_INSTANCE)
    assert first.api_base == "http://10.0.0.1:8000/v1"
    assert first.backend_id == "qwen@10.0.0.1:8000"
    assert first.spec_hash != second.spec_hash and len(first.spec_hash) == 16


def test_sglang_argv_with_command_path_and_venv(tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path,
        [{"host": "n", "gpus": 2}],
        [
            {"name": "s", "model": "/m", "engine": "sglang", "port": 30000, "gpu_memory_utilization": 0.8,
             "max_model_len": 4096, "venv": "/opt/sgl", "replicas": 1},
            {"name": "v", "model": "/v", "command": "/opt/vllm/bin/vllm", "venv": "/ignored"},
        ],
    )  # fmt: skip
    s, v = plan.instances
    assert s.argv == (
        "/opt/sgl/bin/python", "-m", "sglang.launch_server", "--model-path", "/m",
        "--served-model-name", "s", "--host", "0.0.0.0", "--port", "30000", "--tp", "1",
        "--mem-fraction-static", "0.8", "--context-length", "4096", "--nccl-port", "29500",
        "--enable-metrics",
    )  # fmt: skip
    assert "VLLM_PORT" not in s.env
    assert v.argv[0] == "/opt/vllm/bin/vllm"  # a path is used as given
    assert v.env["VLLM_PORT"] == "29510" and v.port == 8000


def test_fill_uses_aligned_contiguous_blocks_without_overlap(tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path,
        [{"host": "a", "gpus": [0, 1, 3, 4, 5, 6]}, {"host": "b", "gpus": 3}],
        [{"name": "m", "model": "/m", "tp": 2, "replicas": "fill"}],
    )
    placed = [(i.node, i.gpus) for i in plan.instances]
    # On a: 0-1 and the aligned 4-5 (3 and 6 stay free); on b: 0-1 (2 left over).
    assert placed == [("a", (0, 1)), ("a", (4, 5)), ("b", (0, 1))]
    assert [i.name for i in plan.instances] == ["m-a-0", "m-a-1", "m-b-0"]


def test_unaligned_block_when_no_aligned_one_is_free(tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path, [{"host": "a", "gpus": [1, 2, 3]}], [{"name": "m", "model": "/m", "tp": 2}]
    )
    assert plan.instances[0].gpus == (2, 3)
    plan = plan_of(
        tmp_path, [{"host": "a", "gpus": [1, 2, 5]}], [{"name": "m", "model": "/m", "tp": 2}]
    )
    assert plan.instances[0].gpus == (1, 2)


def test_replicas_spread_to_the_node_with_most_free_gpus(tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path,
        [{"host": "a", "gpus": 2}, {"host": "b", "gpus": 4}],
        [
            {"name": "m", "model": "/m", "replicas": 3},
            {"name": "k", "model": "/k", "replicas": "fill"},
        ],
    )
    # Each replica goes to the node with the most free GPUs; a tie goes to the earlier node.
    assert [(i.name, i.gpus) for i in plan.instances] == [
        ("m-b-0", (0,)),
        ("m-b-1", (1,)),
        ("m-a-0", (0,)),
        ("k-a-0", (1,)),
        ("k-b-0", (2,)),
        ("k-b-1", (3,)),
    ]
    gpus_by_node: dict[str, list[int]] = {}
    for i in plan.instances:
        gpus_by_node.setdefault(i.node, []).extend(i.gpus)
    assert sorted(gpus_by_node["a"]) == [0, 1] and sorted(gpus_by_node["b"]) == [0, 1, 2, 3]
    # Ports on a node never collide, across models too; each instance has its own internal block.
    for node in ("a", "b"):
        mine = [i for i in plan.instances if i.node == node]
        assert len({i.port for i in mine}) == len(mine)
        blocks = {i.internal_port for i in mine}
        assert len(blocks) == len(mine)
        assert all(
            abs(x - y) >= INTERNAL_PORTS_PER_INSTANCE for x in blocks for y in blocks if x != y
        )


def test_model_limited_to_nodes_and_not_fitting_is_a_plan_error(tmp_path: Path) -> None:
    spec = spec_from(
        tmp_path,
        {
            "deployment": "d",
            "nodes": [
                {"host": "a", "gpus": 4},
                {"host": "b", "gpus": 4},
                {"host": "c", "gpus": "auto"},
            ],
            "models": [
                {"name": "big", "model": "/m", "tp": 4, "replicas": 2, "nodes": ["a"]},
                {"name": "huge", "model": "/m", "tp": 8, "replicas": "fill"},
            ],
        },
    )
    with pytest.raises(PlanError) as caught:
        plan_placement(spec, {})
    assert caught.value.problems == [
        "models[0] (big): 2 replicas of tp 4 asked, 1 fit on the free GPUs",
        "models[1] (huge): no free block of 8 GPUs",
    ]


def test_auto_nodes_use_the_inventory_and_unknown_ones_are_left_out(tmp_path: Path) -> None:
    spec = spec_from(
        tmp_path,
        {
            "deployment": "d",
            "nodes": [{"host": "a", "gpus": "auto"}, {"host": "b", "gpus": "auto"}],
            "models": [{"name": "m", "model": "/m", "replicas": "fill"}],
        },
    )
    plan = plan_placement(spec, {"a": [2, 0, 1]})
    assert [(i.node, i.gpus) for i in plan.instances] == [("a", (0,)), ("a", (1,)), ("a", (2,))]
    assert plan.unavailable_nodes == ("b",)


def test_ports_skip_those_taken_by_earlier_models(tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path,
        [{"host": "a", "gpus": 4}],
        [
            {"name": "x", "model": "/x", "replicas": 2, "port": 8000},
            {"name": "y", "model": "/y", "replicas": 2, "port": 8001},
        ],
        internal_port_base=8003,
    )
    assert [(i.name, i.port, i.internal_port) for i in plan.instances] == [
        ("x-a-0", 8000, 8003),
        ("x-a-1", 8001, 8013),
        ("y-a-0", 8002, 8023),
        ("y-a-1", 8033, 8043),  # 8003-8032 are internal blocks, so the next HTTP port is 8033
    ]


def test_spec_hash_changes_only_with_what_the_instance_runs(tmp_path: Path) -> None:
    nodes = [{"host": "a", "gpus": 2}]
    base = [{"name": "x", "model": "/x"}, {"name": "y", "model": "/y"}]
    before = {i.name: i.spec_hash for i in plan_of(tmp_path, nodes, base).instances}
    changed = [{"name": "x", "model": "/x", "extra_args": ["--foo"]}, {"name": "y", "model": "/y"}]
    after = {i.name: i.spec_hash for i in plan_of(tmp_path, nodes, changed).instances}
    assert before["x-a-0"] != after["x-a-0"]
    assert before["y-a-0"] == after["y-a-0"]
    again = {i.name: i.spec_hash for i in plan_of(tmp_path, nodes, base).instances}
    assert again == before


def test_select_and_state_keys(tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path, [{"host": "a", "gpus": 2}], [{"name": "x", "model": "/x", "replicas": 2}]
    )
    assert [i.name for i in plan.select(["x-a-1"])] == ["x-a-1"]
    assert plan.select([]) == plan.instances
    with pytest.raises(PlanError, match="no instance named 'nope'"):
        plan.select(["nope"])
    assert state_key("x-a-0") == "x-a-0"
    hostile = state_key("org/model $(rm -rf /);\n")
    assert "/" not in hostile and "$" not in hostile and "\n" not in hostile
    assert state_key("a/b") != state_key("a_b")
    assert len(state_key("m" * 300)) == 120 and state_key("m" * 300) != state_key("m" * 301)


def test_the_example_nodes_yaml_is_valid_and_plans(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGINE_KEY", "sk-example")
    loaded = load_spec(Path(__file__).parents[2] / "configs" / "nodes.example.yaml")
    plan = plan_placement(loaded.spec, {})  # explicit GPU counts: no node is asked
    assert [(i.name, i.gpus, i.port) for i in plan.instances] == [
        ("qwen3-30b-10.0.0.1-0", (0, 1), 8000),
        ("qwen3-30b-10.0.0.1-1", (2, 3), 8001),
        ("qwen3-30b-10.0.0.1-2", (4, 5), 8002),
        ("qwen3-30b-10.0.0.1-3", (6, 7), 8003),
        ("llama-8b-10.0.0.2-0", (0,), 30000),
        ("llama-8b-10.0.0.2-1", (1,), 30001),
    ]
    assert plan.instances[0].argv[0] == "/opt/vllm/bin/vllm"
    assert plan.instances[-1].api_base == "http://192.168.1.2:30001/v1"
    assert loaded.raw_api_keys == {"qwen3-30b": "${env:ENGINE_KEY}"}
