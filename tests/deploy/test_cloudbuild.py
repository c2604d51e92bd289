"""cloudbuild.yaml: parsed strictly (no duplicate keys, no unknown fields, right types) into the
`Build` message of google-cloud-build, then checked for the cross-field rules Cloud Build enforces
only when a build is submitted and no schema expresses: substitutions, waitFor ids, secrets. Each rule
is also shown to catch a planted mistake.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

cloudbuild_types = pytest.importorskip(
    "google.cloud.devtools.cloudbuild_v1.types", reason="google-cloud-build is not installed (dev extra)"
)
json_format = pytest.importorskip("google.protobuf.json_format")

REPO_ROOT = Path(__file__).resolve().parents[2]
CLOUDBUILD_FILE = REPO_ROOT / "cloudbuild.yaml"
TERRAFORM_VARIABLES_FILE = REPO_ROOT / "terraform" / "variables.tf"

# Substitutions Cloud Build provides itself (builds, triggers, GitHub pull requests).
BUILT_IN_SUBSTITUTIONS = frozenset(
    {
        "PROJECT_ID",
        "PROJECT_NUMBER",
        "BUILD_ID",
        "LOCATION",
        "TRIGGER_NAME",
        "TRIGGER_BUILD_CONFIG_PATH",
        "COMMIT_SHA",
        "SHORT_SHA",
        "REVISION_ID",
        "REPO_NAME",
        "REPO_FULL_NAME",
        "BRANCH_NAME",
        "TAG_NAME",
        "REF_NAME",
        "SERVICE_ACCOUNT_EMAIL",
        "SERVICE_ACCOUNT",
        "_HEAD_BRANCH",
        "_BASE_BRANCH",
        "_HEAD_REPO_URL",
        "_PR_NUMBER",
    }
)
USER_SUBSTITUTION_NAME = re.compile(r"^_[A-Z0-9_]+$")
# `$$` is a literal dollar sign (shell variables); `${NAME...}` and `$NAME` are substitutions.
SUBSTITUTION_REFERENCE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)[^}]*\}|\$([A-Za-z_][A-Za-z0-9_]*)")
SECRET_LIKE_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|API_KEY|CREDENTIAL|PRIVATE_KEY")
# Fields of Build and BuildStep that Cloud Build fills in; a config must not set them.
OUTPUT_ONLY_BUILD_FIELDS = frozenset(
    {"id", "projectId", "status", "statusDetail", "results", "createTime", "startTime", "finishTime"}
    | {"logUrl", "buildTriggerId", "sourceProvenance", "timing", "approval", "warnings", "failureInfo"}
)
OUTPUT_ONLY_STEP_FIELDS = frozenset({"timing", "pullTiming", "status", "exitCode"})


class DuplicateKeyError(yaml.YAMLError):
    """The same key twice in one mapping: YAML allows it silently, we do not."""


class StrictLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = [self.construct_object(key_node, deep=deep) for key_node, _ in node.value]
        duplicates = sorted({str(key) for key in keys if keys.count(key) > 1})
        if duplicates:
            raise DuplicateKeyError(f"duplicate keys {duplicates} {node.start_mark}")
        return super().construct_mapping(node, deep=deep)


def load_config(text: str) -> dict[str, Any]:
    config = yaml.load(text, Loader=StrictLoader)  # StrictLoader is a SafeLoader: no arbitrary objects
    assert isinstance(config, dict), "cloudbuild.yaml must be a mapping"
    return config


def parse_build(config: dict[str, Any]) -> Any:
    """The config as a google.devtools.cloudbuild.v1.Build; raises ParseError on unknown fields or types."""
    return json_format.ParseDict(config, cloudbuild_types.Build.pb()(), ignore_unknown_fields=False)


def strings_in(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


def referenced_substitutions(value: Any) -> set[str]:
    names: set[str] = set()
    for text in strings_in(value):
        for match in SUBSTITUTION_REFERENCE.finditer(text):
            name = match.group(1) or match.group(2)
            if name:
                names.add(name)
    return names


def cloudbuild_problems(config: dict[str, Any]) -> list[str]:
    """Cross-field mistakes Cloud Build would reject (or that leak secrets); empty when none."""
    problems: list[str] = []
    steps: list[dict[str, Any]] = config.get("steps") or []
    substitutions: dict[str, Any] = config.get("substitutions") or {}
    loose = (config.get("options") or {}).get("substitutionOption") == "ALLOW_LOOSE"

    if not steps:
        problems.append("no steps")
    problems += [
        f"Build field {name!r} is output only" for name in sorted(OUTPUT_ONLY_BUILD_FIELDS & set(config))
    ]

    # Substitutions: well-formed names, every reference defined, every definition used.
    for name in substitutions:
        if not USER_SUBSTITUTION_NAME.match(name):
            problems.append(f"substitution {name!r} must match _[A-Z0-9_]+")
        if SECRET_LIKE_NAME.search(name):
            problems.append(f"substitution {name!r} looks like a secret: use availableSecrets")
    references = referenced_substitutions(
        {key: value for key, value in config.items() if key != "substitutions"}
    )
    references |= referenced_substitutions(list(substitutions.values()))
    for name in sorted(references - BUILT_IN_SUBSTITUTIONS - set(substitutions)):
        problems.append(f"${name} is neither a built-in nor a defined substitution")
    if not loose:
        for name in sorted(set(substitutions) - references):
            problems.append(f"substitution {name} is defined but never used")

    # Steps: unique ids, waitFor only on earlier steps, no plain secrets in env.
    seen_ids: set[str] = set()
    for index, step in enumerate(steps):
        label = f"step {index} ({step.get('id', step.get('name'))})"
        if not step.get("name"):
            problems.append(f"{label} has no name (builder image)")
        problems += [
            f"{label}: field {name!r} is output only" for name in sorted(OUTPUT_ONLY_STEP_FIELDS & set(step))
        ]
        for wanted in step.get("waitFor") or []:
            if wanted != "-" and wanted not in seen_ids:
                problems.append(f"{label} waits for {wanted!r}, which is not the id of an earlier step")
        for entry in step.get("env") or []:
            name = str(entry).split("=", 1)[0]
            if SECRET_LIKE_NAME.search(name):
                problems.append(f"{label} sets {name} in plain env: use secretEnv and availableSecrets")
        step_id = step.get("id")
        if step_id is not None:
            if step_id in seen_ids:
                problems.append(f"{label}: duplicate step id {step_id!r}")
            seen_ids.add(step_id)

    # Secrets: every secretEnv declared, every declaration used.
    declared = {
        secret["env"]
        for secret in (config.get("availableSecrets") or {}).get("secretManager") or []
        if "env" in secret
    }
    declared |= {name for secret in config.get("secrets") or [] for name in (secret.get("secretEnv") or {})}
    used = {name for step in steps for name in step.get("secretEnv") or []}
    used |= set((config.get("options") or {}).get("secretEnv") or [])
    problems += [f"secretEnv {name} is not declared in availableSecrets" for name in sorted(used - declared)]
    problems += [f"secret {name} is declared but no step uses it" for name in sorted(declared - used)]
    return problems


@pytest.fixture(scope="module")
def cloudbuild_text() -> str:
    return CLOUDBUILD_FILE.read_text()


@pytest.fixture
def cloudbuild_config(cloudbuild_text: str) -> dict[str, Any]:
    return load_config(cloudbuild_text)


def step_by_id(config: dict[str, Any], step_id: str) -> dict[str, Any]:
    matches = [step for step in config["steps"] if step.get("id") == step_id]
    assert len(matches) == 1, f"expected one step {step_id!r}"
    return matches[0]


# --- the real file ---------------------------------------------------------------------------------


def test_cloudbuild_file_parses_into_build_message(cloudbuild_config: dict[str, Any]) -> None:
    build = parse_build(cloudbuild_config)

    assert len(build.steps) == len(cloudbuild_config["steps"])
    assert build.timeout.seconds > 0


def test_cloudbuild_file_has_no_cross_field_problems(cloudbuild_config: dict[str, Any]) -> None:
    assert cloudbuild_problems(cloudbuild_config) == []


def test_cloudbuild_file_tests_builds_deploys_and_smoke_tests_in_order(
    cloudbuild_config: dict[str, Any],
) -> None:
    order = [step["id"] for step in cloudbuild_config["steps"]]
    expected = ["lint", "unit-tests", "emulator-tests", "build", "push", "deploy-collector", "deploy-ingress"]

    assert order[: len(expected)] == expected
    assert order[-1] == "smoke-test"
    assert set(step_by_id(cloudbuild_config, "build")["waitFor"]) == {"unit-tests", "emulator-tests"}
    assert step_by_id(cloudbuild_config, "push")["waitFor"] == ["build"]


def test_cloudbuild_file_deploys_the_image_it_built(cloudbuild_config: dict[str, Any]) -> None:
    image = "${_IMAGE}"
    build_args = step_by_id(cloudbuild_config, "build")["args"]
    deploy_args = {
        service: step_by_id(cloudbuild_config, step_id)["args"]
        for service, step_id in (
            ("_COLLECTOR_SERVICE", "deploy-collector"),
            ("_INGRESS_SERVICE", "deploy-ingress"),
        )
    }

    assert f"--tag={image}" in build_args
    assert step_by_id(cloudbuild_config, "push")["args"] == ["push", image]
    for service, args in deploy_args.items():
        assert f"${{{service}}}" in args
        assert f"--image={image}" in args
    assert cloudbuild_config["images"] == [image]
    assert (
        "${_REGION}-docker.pkg.dev/${PROJECT_ID}/${_REPOSITORY}/"
        in cloudbuild_config["substitutions"]["_IMAGE"]
    )


def test_cloudbuild_file_smoke_test_checks_ingress_health(cloudbuild_config: dict[str, Any]) -> None:
    script = " ".join(step_by_id(cloudbuild_config, "smoke-test")["args"])

    assert "${_INGRESS_SERVICE}" in script
    assert "/healthz" in script
    assert "--fail" in script


def terraform_default(variable: str) -> str:
    block = re.search(
        rf'variable "{variable}" \{{.*?\n  default\s*=\s*"([^"]*)"',
        TERRAFORM_VARIABLES_FILE.read_text(),
        re.DOTALL,
    )
    assert block is not None, f"terraform/variables.tf has no string default for {variable}"
    return block.group(1)


def test_cloudbuild_defaults_match_terraform_defaults(cloudbuild_config: dict[str, Any]) -> None:
    substitutions = cloudbuild_config["substitutions"]
    name_prefix = terraform_default("name_prefix")

    assert substitutions["_REPOSITORY"] == terraform_default("artifact_repository_id")
    assert substitutions["_INGRESS_SERVICE"] == f"{name_prefix}-ingress"
    assert substitutions["_COLLECTOR_SERVICE"] == f"{name_prefix}-collector"


# --- planted mistakes --------------------------------------------------------------------------------


def test_cloudbuild_parse_duplicate_key_is_reported(cloudbuild_text: str) -> None:
    planted = cloudbuild_text.replace("timeout: 3600s\n", "timeout: 3600s\ntimeout: 600s\n", 1)
    assert planted != cloudbuild_text

    with pytest.raises(DuplicateKeyError, match="timeout"):
        load_config(planted)


def misspell_wait_for(config: dict[str, Any]) -> None:
    step = step_by_id(config, "unit-tests")
    step["waitfor"] = step.pop("waitFor")


def set_timeout_as_number(config: dict[str, Any]) -> None:
    config["timeout"] = 3600


def set_output_only_field(config: dict[str, Any]) -> None:
    step_by_id(config, "lint")["status"] = "SUCCESS"


@pytest.mark.parametrize(
    ("mistake", "expected"),
    [
        pytest.param(misspell_wait_for, 'no field named "waitfor"', id="unknown-field"),
        pytest.param(set_timeout_as_number, "timeout", id="wrong-type"),
    ],
)
def test_cloudbuild_parse_planted_mistake_is_reported(
    cloudbuild_config: dict[str, Any], mistake: Callable[[dict[str, Any]], None], expected: str
) -> None:
    mistake(cloudbuild_config)

    with pytest.raises(json_format.ParseError, match=re.escape(expected)):
        parse_build(cloudbuild_config)


def use_undefined_substitution(config: dict[str, Any]) -> None:
    step_by_id(config, "deploy-ingress")["args"].append("--region=${_UNDEFINED_REGION}")


def use_unknown_builtin(config: dict[str, Any]) -> None:
    step_by_id(config, "build")["args"].append("--label=project=$PROJECT")


def define_unused_substitution(config: dict[str, Any]) -> None:
    config["substitutions"]["_UNUSED_SETTING"] = "value"


def wait_for_unknown_step(config: dict[str, Any]) -> None:
    step_by_id(config, "push")["waitFor"] = ["bulid"]


def wait_for_later_step(config: dict[str, Any]) -> None:
    step_by_id(config, "build")["waitFor"] = ["push"]


def duplicate_step_id(config: dict[str, Any]) -> None:
    step_by_id(config, "unit-tests")["id"] = "lint"


def use_undeclared_secret(config: dict[str, Any]) -> None:
    step_by_id(config, "smoke-test")["secretEnv"] = ["MINEOS_API_KEY"]


def declare_unused_secret(config: dict[str, Any]) -> None:
    config["availableSecrets"] = {
        "secretManager": [
            {"versionName": "projects/$PROJECT_ID/secrets/mineos-api-key/versions/latest", "env": "KEY"}
        ]
    }


def put_secret_in_plain_env(config: dict[str, Any]) -> None:
    step_by_id(config, "smoke-test")["env"] = ["MINEOS_API_KEY=mk_live_123"]


def mark_build_output_only_field(config: dict[str, Any]) -> None:
    config["status"] = "SUCCESS"


@pytest.mark.parametrize(
    ("mistake", "expected"),
    [
        pytest.param(
            use_undefined_substitution, "$_UNDEFINED_REGION is neither", id="undefined-substitution"
        ),
        pytest.param(use_unknown_builtin, "$PROJECT is neither", id="unknown-builtin"),
        pytest.param(
            define_unused_substitution, "_UNUSED_SETTING is defined but never used", id="unused-substitution"
        ),
        pytest.param(wait_for_unknown_step, "waits for 'bulid'", id="unknown-waitfor-id"),
        pytest.param(wait_for_later_step, "waits for 'push'", id="waitfor-later-step"),
        pytest.param(duplicate_step_id, "duplicate step id 'lint'", id="duplicate-step-id"),
        pytest.param(
            use_undeclared_secret, "secretEnv MINEOS_API_KEY is not declared", id="undeclared-secret-env"
        ),
        pytest.param(declare_unused_secret, "secret KEY is declared but no step uses it", id="unused-secret"),
        pytest.param(put_secret_in_plain_env, "sets MINEOS_API_KEY in plain env", id="secret-in-plain-env"),
        pytest.param(set_output_only_field, "field 'status' is output only", id="output-only-step-field"),
        pytest.param(
            mark_build_output_only_field, "Build field 'status' is output only", id="output-only-build-field"
        ),
    ],
)
def test_cloudbuild_checks_planted_mistake_is_reported(
    cloudbuild_config: dict[str, Any], mistake: Callable[[dict[str, Any]], None], expected: str
) -> None:
    planted = copy.deepcopy(cloudbuild_config)
    mistake(planted)

    problems = cloudbuild_problems(planted)

    assert any(expected in problem for problem in problems), problems


# --- the image the build makes -----------------------------------------------------------------------

DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"


def test_dockerfile_runs_the_function_target_as_non_root() -> None:
    instructions = [
        line.strip()
        for line in DOCKERFILE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    command = [line for line in instructions if line.startswith("CMD ")]

    assert instructions[0].startswith("FROM python:3.11-slim")
    assert users, "the image must not run as root"
    assert users[-1] not in {"root", "0"}
    assert len(command) == 1
    assert "--target=${FUNCTION_TARGET}" in command[0]
    assert "--port=${PORT:-8080}" in command[0]
    assert command[0].startswith("CMD exec ")


def test_dockerignore_admits_only_the_package_sources() -> None:
    rules = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    assert rules[0] == "*"
    assert {rule for rule in rules if rule.startswith("!")} == {"!pyproject.toml", "!README.md", "!services/"}
