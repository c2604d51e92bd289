"""The Terraform configuration: formatted, valid against the google provider's schema, its own
`terraform test` suite green, no checkov findings, no basic roles. Each check is also run on a copy
with a planted mistake and must report it, so none of them can pass by checking nothing.

The google provider is whatever the terraform CLI config provides (a real provider online, after
`terraform init`); without one, the schema-only stand-in from ../shared/tools/terraform-offline/.
Tools that are missing make the tests skip with the command that installs them
(`bash infra/deploy_tools.sh`). Every copy lives in tmp_path; nothing is written into terraform/.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TERRAFORM_DIR = REPO_ROOT / "terraform"
OFFLINE_PROVIDER_SETUP = REPO_ROOT.parent / "shared" / "tools" / "terraform-offline" / "setup"
CHECKOV = REPO_ROOT / ".local" / "checkov" / "bin" / "checkov"
INSTALL_HINT = "run `bash infra/deploy_tools.sh`"
# MINEOS_TERRAFORM_PROVIDER=registry: use the real provider from the registry (terraform init) even
# when the offline stand-in is available.
PROVIDER_CHOICE_ENV = "MINEOS_TERRAFORM_PROVIDER"

# How `terraform init` reports a registry (or mirror) it cannot reach, as opposed to a configuration error.
REGISTRY_UNREACHABLE = re.compile(
    r"could not connect|dial tcp|no such host|i/o timeout|connection refused|TLS handshake timeout|"
    r"Client\.Timeout|network is unreachable"
)
TERRAFORM_TIMEOUT_SECONDS = 300
CHECKOV_TIMEOUT_SECONDS = 300
# The terraform test file with the properties that matter most; each planted mistake must fail it.
GUARANTEES_TEST_FILE = "guarantees.tftest.hcl"
# A developer's terraform.tfvars must not change what the tests see.
COPY_IGNORE = shutil.ignore_patterns(
    ".terraform", ".terraform.lock.hcl", "*.tfstate", "*.tfstate.*", "*.tfplan", "*.tfvars", "*.tfvars.json"
)


@dataclass(frozen=True)
class Terraform:
    """The terraform CLI with the environment that gives it a google provider."""

    executable: str
    env: dict[str, str]
    needs_init: bool
    provider_source: str

    def run(self, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [self.executable, *args],
                cwd=cwd,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=TERRAFORM_TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"terraform {' '.join(args)} took longer than {TERRAFORM_TIMEOUT_SECONDS}s in {cwd}")

    def prepare(self, config_dir: Path) -> None:
        """Install the local modules (and, with a real provider, the provider) into a copy."""
        args = (
            ("init", "-backend=false", "-input=false", "-no-color")
            if self.needs_init
            else ("get", "-no-color")
        )
        result = self.run(*args, cwd=config_dir)
        if result.returncode == 0:
            return
        if self.needs_init and REGISTRY_UNREACHABLE.search(result.stdout + result.stderr):
            pytest.skip(
                f"the google provider cannot be installed from {self.provider_source}: it is unreachable"
            )
        pytest.fail(f"terraform {args[0]} failed ({self.provider_source}):\n{output_of(result)}")


def output_of(result: subprocess.CompletedProcess[str], lines: int = 60) -> str:
    text = (result.stdout + "\n" + result.stderr).strip().splitlines()
    return "\n".join(text[-lines:])


def base_terraform_env() -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("TF_CLI_ARGS")}
    for name in ("TF_DATA_DIR", "TF_WORKSPACE"):
        env.pop(name, None)
    env.update(CHECKPOINT_DISABLE="1", TF_IN_AUTOMATION="1", TF_INPUT="0")
    return env


def cli_config_with_google(env: dict[str, str]) -> Path | None:
    """The terraform CLI config in effect, when it provides hashicorp/google (dev override or mirror)."""
    config = Path(env.get("TF_CLI_CONFIG_FILE") or Path.home() / ".terraformrc")
    if config.is_file() and "hashicorp/google" in config.read_text(errors="replace"):
        return config
    return None


def offline_provider_config() -> Path:
    """Run the offline stand-in's setup (milliseconds when its cache is warm) and return its CLI config."""
    try:
        result = subprocess.run(
            [str(OFFLINE_PROVIDER_SETUP)], capture_output=True, text=True, timeout=300, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"{OFFLINE_PROVIDER_SETUP} took longer than 300s; {INSTALL_HINT}")
    if result.returncode != 0:
        pytest.skip(f"{OFFLINE_PROVIDER_SETUP} failed ({INSTALL_HINT}):\n{output_of(result, 15)}")
    for line in result.stdout.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and words[1].startswith("TF_CLI_CONFIG_FILE="):
            return Path(words[1].split("=", 1)[1])
    pytest.fail(f"{OFFLINE_PROVIDER_SETUP} printed no TF_CLI_CONFIG_FILE export:\n{result.stdout}")


@pytest.fixture(scope="session")
def terraform_executable() -> str:
    executable = shutil.which("terraform")
    if executable is None:
        pytest.skip(
            "terraform is not on PATH (>= 1.9 is needed; it cannot be installed from the registries here)"
        )
    return executable


@pytest.fixture(scope="session")
def terraform(terraform_executable: str, tmp_path_factory: pytest.TempPathFactory) -> Terraform:
    """terraform with a google provider: the CLI config's, the registry's on request, else the stand-in."""
    env = base_terraform_env()
    configured = cli_config_with_google(env)
    if configured is not None:
        dev_overrides = "dev_overrides" in configured.read_text(errors="replace")
        return Terraform(terraform_executable, env, not dev_overrides, f"CLI config {configured}")
    if env.get(PROVIDER_CHOICE_ENV) == "registry" or not OFFLINE_PROVIDER_SETUP.exists():
        # The real provider, downloaded once per session into a shared plugin cache.
        env.pop("TF_CLI_CONFIG_FILE", None)
        env["TF_PLUGIN_CACHE_DIR"] = str(tmp_path_factory.mktemp("terraform-plugin-cache"))
        return Terraform(terraform_executable, env, True, "the Terraform registry")
    env["TF_CLI_CONFIG_FILE"] = str(offline_provider_config())
    return Terraform(
        terraform_executable, env, False, f"schema-only stand-in ({OFFLINE_PROVIDER_SETUP.parent})"
    )


def copy_configuration(destination: Path) -> Path:
    """A copy of terraform/ without local state, lock file or .terraform/ (never written into the repo)."""
    copy = destination / "terraform"
    shutil.copytree(TERRAFORM_DIR, copy, ignore=COPY_IGNORE)
    return copy


def plant(path: Path, original: str, replacement: str) -> None:
    """Replace one exact snippet; fail loudly if it is gone, so a mistake is never silently not planted."""
    text = path.read_text()
    assert text.count(original) == 1, (
        f"{path.name} no longer contains exactly one {original!r}: update the test"
    )
    path.write_text(text.replace(original, replacement))


@pytest.fixture(scope="module")
def prepared_configuration(terraform: Terraform, tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = copy_configuration(tmp_path_factory.mktemp("terraform-good"))
    terraform.prepare(copy)
    return copy


@pytest.fixture
def configuration_copy(tmp_path: Path) -> Path:
    return copy_configuration(tmp_path)


# --- terraform fmt -------------------------------------------------------------------------------


def terraform_fmt_check(terraform_executable: str, config_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [terraform_executable, "fmt", "-check", "-recursive", "-diff", "-no-color", str(config_dir)],
        env=base_terraform_env(),
        capture_output=True,
        text=True,
        timeout=TERRAFORM_TIMEOUT_SECONDS,
        check=False,
    )


def test_terraform_fmt_configuration_is_formatted(terraform_executable: str) -> None:
    result = terraform_fmt_check(terraform_executable, TERRAFORM_DIR)

    assert result.returncode == 0, f"run `terraform fmt -recursive terraform`:\n{output_of(result)}"


def test_terraform_fmt_unformatted_file_is_reported(
    terraform_executable: str, configuration_copy: Path
) -> None:
    plant(
        configuration_copy / "pubsub.tf",
        "  enable_message_ordering = false\n\n  push_config",
        "  enable_message_ordering=false\n\n  push_config",
    )
    plant(
        configuration_copy / "tests" / GUARANTEES_TEST_FILE,
        'mock_provider "google" {\n  source = "./tests/mocks"\n}',
        'mock_provider "google" {\nsource = "./tests/mocks"\n}',
    )

    result = terraform_fmt_check(terraform_executable, configuration_copy)

    assert result.returncode != 0
    assert "pubsub.tf" in result.stdout
    assert GUARANTEES_TEST_FILE in result.stdout


# --- terraform validate ------------------------------------------------------------------------------


def validate(terraform: Terraform, config_dir: Path) -> dict[str, Any]:
    result = terraform.run("validate", "-json", "-no-color", cwd=config_dir)
    try:
        report: dict[str, Any] = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"terraform validate -json printed no JSON:\n{output_of(result)}")
    return report


def errors_of(report: dict[str, Any]) -> list[str]:
    return [
        f"{diagnostic.get('summary')}: {diagnostic.get('detail', '')}".strip()
        for diagnostic in report.get("diagnostics", [])
        if diagnostic.get("severity") == "error"
    ]


def test_terraform_validate_configuration_is_valid(
    terraform: Terraform, prepared_configuration: Path
) -> None:
    report = validate(terraform, prepared_configuration)

    assert report.get("valid") is True, "\n".join(errors_of(report))
    assert report.get("error_count") == 0


def test_terraform_validate_unknown_attribute_is_reported(
    terraform: Terraform, configuration_copy: Path
) -> None:
    plant(
        configuration_copy / "pubsub.tf",
        "  enable_message_ordering = false\n\n  push_config",
        "  enable_message_ordering = false\n  enable_message_ordring  = false\n\n  push_config",
    )
    terraform.prepare(configuration_copy)

    report = validate(terraform, configuration_copy)

    assert report.get("valid") is False
    assert any(
        error.startswith("Unsupported argument") and '"enable_message_ordring"' in error
        for error in errors_of(report)
    ), "\n".join(errors_of(report))


# --- terraform test ------------------------------------------------------------------------------------


RUN_BLOCK = re.compile(r'^run "[^"]+" \{', re.MULTILINE)


@dataclass(frozen=True)
class TerraformTestSummary:
    passed: int
    failed: int
    output: str


def terraform_test(terraform: Terraform, config_dir: Path, *test_files: str) -> TerraformTestSummary:
    filters = [f"-filter=tests/{name}" for name in test_files]
    result = terraform.run("test", "-no-color", *filters, cwd=config_dir)
    output = result.stdout + "\n" + result.stderr
    match = re.search(r"(?:Success|Failure)! (\d+) passed, (\d+) failed", output)
    if match is None:
        pytest.fail(f"terraform test printed no summary (exit {result.returncode}):\n{output_of(result)}")
    passed, failed = int(match.group(1)), int(match.group(2))
    assert (result.returncode == 0) == (failed == 0), output_of(result)
    return TerraformTestSummary(passed, failed, output)


def test_terraform_test_suite_passes(terraform: Terraform, prepared_configuration: Path) -> None:
    test_files = sorted(path.name for path in (prepared_configuration / "tests").glob("*.tftest.hcl"))

    run_count = sum(
        len(RUN_BLOCK.findall(path.read_text()))
        for path in (prepared_configuration / "tests").glob("*.tftest.hcl")
    )

    summary = terraform_test(terraform, prepared_configuration)

    assert test_files, "terraform/tests has no .tftest.hcl files"
    assert summary.failed == 0, summary.output[-6000:]
    assert summary.passed == run_count, (
        f"{summary.passed} of {run_count} runs passed:\n{summary.output[-6000:]}"
    )
    for name in test_files:
        assert f"tests/{name}... pass" in summary.output, f"{name} did not pass:\n{summary.output[-6000:]}"


@dataclass(frozen=True)
class PlantedMistake:
    file: str
    original: str
    replacement: str
    expected_errors: tuple[str, ...]


PLANTED_TERRAFORM_TEST_MISTAKES = {
    "public-collector": PlantedMistake(
        "run.tf",
        '  ingress               = "INGRESS_TRAFFIC_INTERNAL_ONLY"\n  allow_unauthenticated = false',
        '  ingress               = "INGRESS_TRAFFIC_ALL"\n  allow_unauthenticated = true',
        (
            "The collector must not be reachable from the internet",
            "The collector must require an authorised identity",
        ),
    ),
    "basic-role": PlantedMistake(
        "iam.tf",
        "  project_grants = {\n",
        "  project_grants = {\n"
        '    collector_editor = { role = "roles/editor", member = google_service_account.collector.member }'
        "\n",
        ("A basic role (roles/owner, roles/editor, roles/viewer) is granted",),
    ),
    "secret-in-plain-env": PlantedMistake(
        "main.tf",
        '    FUNCTION_TARGET        = "collector"\n',
        '    FUNCTION_TARGET        = "collector"\n    MINE_SIGNING_SECRETS   = "copied-by-mistake"\n',
        ("A secret is set as a plain environment variable",),
    ),
    "dead-letter-attempts-out-of-range": PlantedMistake(
        "pubsub.tf",
        "    max_delivery_attempts = var.max_delivery_attempts\n",
        "    max_delivery_attempts = 200\n",
        ("max_delivery_attempts must be within Pub/Sub's 5-100",),
    ),
    "public-bucket": PlantedMistake(
        "storage.tf",
        '  public_access_prevention    = "enforced"\n',
        '  public_access_prevention    = "inherited"\n',
        ("The exports bucket must enforce public access prevention",),
    ),
    "no-ttl-policy": PlantedMistake(
        "firestore.tf",
        "  ttl_config {}\n",
        "",
        ("The ledger collection's expires_at field must have a TTL policy",),
    ),
}


@pytest.fixture(scope="module")
def guarantees_with_planted_mistakes(terraform: Terraform, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Output of the guarantees test file on one copy with every planted mistake at once.

    One terraform run instead of one per mistake (each costs seconds). Sound because every mistake is
    valid configuration that breaks one property, the run evaluates all its assertions, and each
    expected message belongs to the one assertion that watches that property; the unplanted
    configuration passes them all (test_terraform_test_suite_passes).
    """
    config_dir = copy_configuration(tmp_path_factory.mktemp("planted-mistakes"))
    for mistake in PLANTED_TERRAFORM_TEST_MISTAKES.values():
        plant(config_dir / mistake.file, mistake.original, mistake.replacement)
    terraform.prepare(config_dir)
    summary = terraform_test(terraform, config_dir, GUARANTEES_TEST_FILE)
    assert summary.failed >= 1, summary.output[-6000:]
    return summary.output


@pytest.mark.parametrize("mistake_name", sorted(PLANTED_TERRAFORM_TEST_MISTAKES))
def test_terraform_test_planted_mistake_is_reported(
    guarantees_with_planted_mistakes: str, mistake_name: str
) -> None:
    for expected in PLANTED_TERRAFORM_TEST_MISTAKES[mistake_name].expected_errors:
        assert expected in guarantees_with_planted_mistakes, (
            f"{expected!r} not reported:\n{guarantees_with_planted_mistakes[-6000:]}"
        )


# --- no basic roles, in any file -------------------------------------------------------------------------

BASIC_ROLE_PATTERN = re.compile(r"roles/(owner|editor|viewer)\b")


def basic_role_lines(config_dir: Path) -> list[str]:
    """Every line of a .tf file that names a basic role (the tests may name them, to forbid them)."""
    return [
        f"{path.relative_to(config_dir)}:{number}: {line.strip()}"
        for path in sorted(config_dir.rglob("*.tf"))
        if ".terraform" not in path.parts
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if BASIC_ROLE_PATTERN.search(line)
    ]


def test_terraform_files_grant_no_basic_roles() -> None:
    assert basic_role_lines(TERRAFORM_DIR) == []


def test_terraform_files_planted_basic_role_is_reported(configuration_copy: Path) -> None:
    (configuration_copy / "modules" / "cloud_run_service" / "extra.tf").write_text(
        'resource "google_project_iam_member" "oops" {\n'
        '  project = var.project_id\n  role    = "roles/owner"\n  member  = "user:someone@example.com"\n}\n'
    )

    assert basic_role_lines(configuration_copy) == [
        'modules/cloud_run_service/extra.tf:3: role    = "roles/owner"'
    ]


# --- checkov -----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def checkov() -> Path:
    if not CHECKOV.exists():
        pytest.skip(f"checkov is not installed in {CHECKOV.parent.parent}; {INSTALL_HINT}")
    return CHECKOV


def start_checkov(checkov: Path, config_dir: Path) -> subprocess.Popen[str]:
    command = [
        str(checkov),
        "--directory",
        str(config_dir),
        "--framework",
        "terraform",
        "--skip-download",  # offline: no policy metadata from the platform (so no severities either)
        "--output",
        "json",
        "--compact",
    ]
    # checkov reads LOG_LEVEL, which the application's settings use too.
    env = {name: value for name, value in os.environ.items() if name != "LOG_LEVEL"}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish_checkov(process: subprocess.Popen[str]) -> dict[str, Any]:
    try:
        stdout, stderr = process.communicate(timeout=CHECKOV_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail(f"checkov took longer than {CHECKOV_TIMEOUT_SECONDS}s")
    try:
        report = json.loads(stdout)
    except json.JSONDecodeError:
        pytest.fail(
            f"checkov printed no JSON (exit {process.returncode}):\n{stdout[-3000:]}\n{stderr[-3000:]}"
        )
    assert isinstance(report, dict), stdout[:2000]
    assert report.get("check_type") == "terraform", stdout[:2000]
    return report


@pytest.fixture(scope="module")
def checkov_reports(checkov: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """checkov on the configuration and on a copy with a public bucket, both at once (two cores)."""
    configuration = copy_configuration(tmp_path_factory.mktemp("checkov-configuration"))
    public_bucket = copy_configuration(tmp_path_factory.mktemp("checkov-public-bucket"))
    plant(
        public_bucket / "storage.tf",
        '  public_access_prevention    = "enforced"\n',
        '  public_access_prevention    = "inherited"\n',
    )
    processes = {
        "configuration": start_checkov(checkov, configuration),
        "public-bucket": start_checkov(checkov, public_bucket),
    }
    return {name: finish_checkov(process) for name, process in processes.items()}


def describe_checks(checks: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"{check['check_id']} ({check.get('severity') or 'no severity'}) {check['resource']} "
        f"{check['file_path']}:{check['file_line_range']}: {check['check_name']}"
        for check in checks
    )


def test_checkov_configuration_has_no_failed_checks(checkov_reports: dict[str, dict[str, Any]]) -> None:
    # Open-source checkov with --skip-download reports no severities, so every failed check counts,
    # not only HIGH/CRITICAL ones. Skips are inline `checkov:skip=ID:reason` comments in the .tf files.
    report = checkov_reports["configuration"]

    results = report["results"]
    assert results["failed_checks"] == [], describe_checks(results["failed_checks"])
    assert report["summary"]["passed"] >= 20, "checkov evaluated almost nothing: did it find the .tf files?"
    skipped = {check["check_id"] for check in results["skipped_checks"]}
    assert skipped == set(justified_checkov_skips(TERRAFORM_DIR))


def test_checkov_public_bucket_is_reported(checkov_reports: dict[str, dict[str, Any]]) -> None:
    report = checkov_reports["public-bucket"]

    failed = {(check["check_id"], check["resource"]) for check in report["results"]["failed_checks"]}
    assert ("CKV_GCP_114", "google_storage_bucket.exports") in failed, failed


# --- checkov skips are justified ------------------------------------------------------------------------

SKIP_COMMENT = re.compile(r"#\s*checkov:skip=(?P<check_id>[A-Z0-9_]+)(?::(?P<reason>.*))?")
MINIMUM_REASON_WORDS = 8


def justified_checkov_skips(config_dir: Path) -> dict[str, str]:
    """check id -> reason of every inline skip; fails on a skip without a real reason."""
    skips: dict[str, str] = {}
    for path in sorted(config_dir.rglob("*.tf")):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            match = SKIP_COMMENT.search(line)
            if match is None:
                continue
            reason = (match.group("reason") or "").strip()
            assert len(reason.split()) >= MINIMUM_REASON_WORDS, (
                f"{path.relative_to(config_dir)}:{number}: checkov skip {match.group('check_id')} needs a "
                f"justification (at least {MINIMUM_REASON_WORDS} words after the second colon)"
            )
            skips[match.group("check_id")] = reason
    return skips


def test_checkov_skips_are_justified() -> None:
    skips = justified_checkov_skips(TERRAFORM_DIR)

    assert set(skips) == {"CKV_GCP_62", "CKV_GCP_78", "CKV_GCP_83", "CKV_GCP_84"}, (
        "the list of checkov skips changed: justify the new one here and in the report to the lead"
    )


def test_checkov_skips_unjustified_skip_is_reported(configuration_copy: Path) -> None:
    plant(
        configuration_copy / "storage.tf",
        'resource "google_storage_bucket" "exports" {\n',
        'resource "google_storage_bucket" "exports" {\n  # checkov:skip=CKV_GCP_114\n',
    )

    with pytest.raises(AssertionError, match="checkov skip CKV_GCP_114 needs a justification"):
        justified_checkov_skips(configuration_copy)


# --- Terraform knows every setting of the application -----------------------------------------------

# Set by the platform or the image, not read by Settings: FUNCTION_TARGET picks the functions-framework
# target, PORT is Cloud Run's. ANONYMISATION_KEY comes, when a data map needs it, through the data-store
# secrets the company lists (docs/deploy.md).
NOT_SETTINGS = {"FUNCTION_TARGET", "PORT"}
PASSED_AS_DATA_STORE_SECRET = {"ANONYMISATION_KEY"}


def terraform_application_env_names() -> set[str]:
    block = re.search(
        r"application_env_names = \[(.*?)\]", (TERRAFORM_DIR / "main.tf").read_text(), re.DOTALL
    )
    assert block is not None, "terraform/main.tf has no local.application_env_names"
    return set(re.findall(r'"([A-Z0-9_]+)"', block.group(1)))


def test_terraform_application_env_names_match_settings() -> None:
    settings = pytest.importorskip("mineos_integration.settings")
    setting_names = {name.upper() for name in settings.Settings.model_fields}

    assert terraform_application_env_names() - NOT_SETTINGS == setting_names - PASSED_AS_DATA_STORE_SECRET
