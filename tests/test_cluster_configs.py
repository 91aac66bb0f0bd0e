"""The cluster/ configs: Ray's own validation, the KubeRay job, and a README whose commands exist."""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path

import click
import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.scripts.scripts import cli as ray_cli

from sweeps import expand, load_spec

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
LAUNCHER_CONFIGS = ["aws.yaml", "gcp.yaml"]
RAY_SCHEMA = Path(ray.autoscaler.__file__).parent / "ray-schema.json"

# The CLI contract in DESIGN.md section 3: subcommand -> options it takes.
WARMUP_SWEEP_CLI = {
    "run": {"--results", "--address", "--shared-results", "--dry-run"},
    "status": set(),
    "analyze": {"--out"},
    "probe": {"--json"},
    "specs": set(),
}
IMAGE_VERSION = re.compile(r"^rayproject/ray:(\d+\.\d+\.\d+)-")


def load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def gpu_worker_types(config: dict) -> dict:
    return {
        name: node
        for name, node in config["available_node_types"].items()
        if name != config["head_node_type"] and node["resources"].get("GPU", 0) >= 1
    }


def check_warmup_sweep_command(tokens: list[str]) -> None:
    """Fail unless `tokens` is a `warmup-sweep` command the DESIGN.md CLI accepts."""
    assert tokens[0] == "warmup-sweep", tokens
    assert tokens[1] in WARMUP_SWEEP_CLI, f"unknown subcommand in {tokens}"
    options = {t.split("=")[0] for t in tokens[2:] if t.startswith("--")}
    assert options <= WARMUP_SWEEP_CLI[tokens[1]], f"unknown options in {tokens}"


# ---------------------------------------------------------------------------
# Ray cluster launcher configs
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_config_passes_rays_own_validation(name):
    # What `ray up` does before touching the cloud: merge the provider defaults, then validate.
    validate_config(prepare_config(copy.deepcopy(load(name))))


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_config_as_written_matches_rays_schema(name):
    # Unmerged, so a misspelt key cannot hide behind a default that fills it in.
    schema = json.loads(RAY_SCHEMA.read_text())
    jsonschema.validate(load(name), schema)


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_validation_would_catch_a_misspelt_node_type_field(name):
    config = load(name)
    head = config["head_node_type"]
    config["available_node_types"][head]["min_worker"] = 0  # missing the "s"
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(config))


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_config_has_a_cpu_head_and_autoscaled_gpu_workers(name):
    config = load(name)
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    workers = gpu_worker_types(config)
    assert workers, "no GPU worker type"
    for node in workers.values():
        assert node.get("min_workers", 0) == 0 and node["max_workers"] >= 1
        node_config = node["node_config"]
        if name == "aws.yaml":
            assert node_config["InstanceType"].split(".")[0] in {"g4dn", "g5", "g6", "p3", "p4d"}
        else:
            assert node_config["guestAccelerators"][0]["acceleratorCount"] >= 1
            # GCE refuses to start GPU VMs that would live-migrate.
            assert {"onHostMaintenance": "TERMINATE"} in node_config["scheduling"]


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_config_mounts_the_repo_and_specs_that_exist(name):
    mounts = load(name)["file_mounts"]
    assert mounts["~/warmup-sweeps"] == "."
    assert "~/specs" in mounts
    for local in mounts.values():
        assert (REPO / local).is_dir(), f"{name}: file_mounts source {local} does not exist"
    assert list((REPO / mounts["~/specs"]).glob("*.yaml")), "no example spec to mount"


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_every_node_type_installs_torch_then_the_mounted_package(name):
    config = load(name)
    prepared = prepare_config(copy.deepcopy(config))  # merges setup_commands in
    command_lists = {"head": prepared["head_setup_commands"]}
    for node_name, node in config["available_node_types"].items():
        if node_name != config["head_node_type"]:
            # A node type's own worker_setup_commands replace the global ones.
            command_lists[node_name] = node.get(
                "worker_setup_commands", prepared["worker_setup_commands"]
            )
    for node_name, commands in command_lists.items():
        torch_at = [i for i, c in enumerate(commands) if re.search(r"pip install.* torch\b", c)]
        package_at = [i for i, c in enumerate(commands) if "pip install -q -e ~/warmup-sweeps" in c]
        assert torch_at and package_at, f"{name}:{node_name} does not install torch and the package"
        assert torch_at[0] < package_at[0], f"{name}:{node_name} installs torch after the package"


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_config_starts_ray_head_and_joins_workers(name):
    config = load(name)
    assert any("ray start --head" in c for c in config["head_start_ray_commands"])
    assert any("--address=$RAY_HEAD_IP:6379" in c for c in config["worker_start_ray_commands"])


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_images_run_the_ray_version_installed_here(name):
    # `ray up` refuses (or misbehaves) when the cluster's Ray differs from the launcher's.
    config = load(name)
    images = [config["docker"]["image"], config["docker"]["head_image"]]
    images += [
        node["docker"]["worker_image"]
        for node in config["available_node_types"].values()
        if "docker" in node
    ]
    for image in images:
        match = IMAGE_VERSION.match(image)
        assert match and match.group(1) == ray.__version__, f"{image} is not Ray {ray.__version__}"


@pytest.mark.parametrize("path", sorted((CLUSTER / "specs").glob("*.yaml")), ids=lambda p: p.name)
def test_example_specs_are_valid_sweep_specs(path):
    spec, _ = load_spec(path)  # raises SpecError naming the field on any mistake
    assert expand(spec, str(path))


# ---------------------------------------------------------------------------
# KubeRay RayJob
# ---------------------------------------------------------------------------


def test_kuberay_manifest_is_a_rayjob_that_runs_a_sweep_on_its_own_cluster():
    job = load("kuberay-job.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    entrypoint = shlex.split(job["spec"]["entrypoint"])
    assert entrypoint[:2] == ["warmup-sweep", "run"]
    check_warmup_sweep_command(entrypoint)
    assert entrypoint[entrypoint.index("--address") + 1] == "auto"
    assert entrypoint[entrypoint.index("--results") + 1].startswith(("s3://", "gs://"))
    runtime_env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    assert any(p.startswith("warmup-sweeps") for p in runtime_env["pip"])


def test_kuberay_manifest_has_head_and_gpu_worker_groups_on_one_ray_version():
    cluster = load("kuberay-job.yaml")["spec"]["rayClusterSpec"]
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head["resources"]["limits"]
    groups = cluster["workerGroupSpecs"]
    assert groups
    gpu_groups = [
        g
        for g in groups
        if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]
    ]
    assert gpu_groups
    for group in groups:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    containers = [head] + [g["template"]["spec"]["containers"][0] for g in groups]
    for container in containers:
        match = IMAGE_VERSION.match(container["image"])
        assert match and match.group(1) == cluster["rayVersion"] == ray.__version__


# ---------------------------------------------------------------------------
# README
# ---------------------------------------------------------------------------


def readme_commands() -> list[list[str]]:
    """Every shell command in the README's bash blocks, as tokens."""
    text = (CLUSTER / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            if tokens:
                commands.append(tokens)
    return commands


def test_readme_mentions_every_config_file():
    text = (CLUSTER / "README.md").read_text()
    for name in [*LAUNCHER_CONFIGS, "kuberay-job.yaml", "specs/"]:
        assert f"`{name}`" in text, f"README does not describe {name}"
    for name in [*LAUNCHER_CONFIGS, "kuberay-job.yaml"]:
        if "EDIT-ME" in (CLUSTER / name).read_text():
            assert re.search(rf"`{re.escape(name)}`: .*", text), (
                f"README does not say what to edit in {name}"
            )


def test_readme_ray_commands_parse_with_the_installed_ray_cli():
    ray_commands = [c for c in readme_commands() if c[0] == "ray"]
    assert {" ".join(c[:2]) for c in ray_commands} >= {
        "ray up",
        "ray exec",
        "ray dashboard",
        "ray job",
        "ray down",
    }
    for tokens in ray_commands:
        command: click.Command = ray_cli
        rest = tokens[1:]
        while isinstance(command, click.Group):
            assert rest[0] in command.commands, f"no such ray command: {' '.join(tokens)}"
            command, rest = command.commands[rest[0]], rest[1:]
        # Click's own parser: unknown options or missing arguments raise UsageError.
        context = command.make_context(tokens[1], list(rest))
        for value in context.params.values():
            if isinstance(value, str) and value.startswith("cluster/"):
                assert (REPO / value).exists(), f"{' '.join(tokens)}: {value} does not exist"


def test_readme_sweep_commands_use_the_documented_cli():
    found = 0
    for tokens in readme_commands():
        # Direct, inside `ray exec "..."`, or after `--` in `ray job submit`.
        candidates = [tokens] if tokens[0] == "warmup-sweep" else []
        candidates += [shlex.split(t) for t in tokens if t.startswith("warmup-sweep ")]
        if "--" in tokens and tokens[tokens.index("--") + 1] == "warmup-sweep":
            candidates.append(tokens[tokens.index("--") + 1 :])
        for candidate in candidates:
            check_warmup_sweep_command(candidate)
            found += 1
    assert found >= 4


def test_readme_kubectl_commands_name_existing_files():
    kubectl = [c for c in readme_commands() if c[0] == "kubectl"]
    assert kubectl
    for tokens in kubectl:
        assert tokens[1] in {"apply", "get", "logs", "delete", "create", "describe"}
        if "-f" in tokens and tokens[1] in {"apply", "delete"}:
            assert (REPO / tokens[tokens.index("-f") + 1]).is_file()
