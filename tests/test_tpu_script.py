"""rir_jax/tpu_vm.sh without a cloud: its argument checks, and the gcloud commands it runs.

The commands go to a fake gcloud that records them; where the real gcloud is installed,
each recorded command must also pass gcloud's own argument parser (in a sandbox with no
account and the TPU API pointed at a dead port, so nothing can reach Google Cloud).
"""
import json
import os
import re
import runpy
import shutil
import subprocess
import sys

import pytest

from launch_helpers import REPO
from rir_jax import checks

SCRIPT = REPO / "rir_jax" / "tpu_vm.sh"
SETTINGS = {"TPU_NAME": "rir", "ZONE": "us-central2-b", "BUCKET": "gs://my-bucket/exp",
            "ACCELERATOR": "v4-32"}
# Everything the script reads from the environment: the caller's values must not leak in.
READS = (*SETTINGS, "TPU_VERSION", "SPOT", "PROJECT", "DRY_RUN", "GCLOUD", "QUEUED",
         "PYTHON_VERSION", "MAX_ATTEMPTS", "POLL_SECONDS")


# The fake's answers: `describe` prints the slice's state (READY once created, none before:
# an error, as for a slice that does not exist), and each
# ssh that runs launch.py exits with the next code of the plan (0 when none is left); an
# exit 255, the ssh of a preempted worker, leaves the slice PREEMPTED.
FAKE_GCLOUD = """
import json, os, pathlib, sys
here = pathlib.Path(sys.argv[0]).parent
args = sys.argv[1:]
with open(here / "calls.jsonl", "a") as f:
  f.write(json.dumps(args) + "\\n")
state, plan = here / "state", here / "plan.json"
if "describe" in args:
  if not state.exists():
    sys.exit("ERROR: (gcloud) NOT_FOUND")
  print(state.read_text())
elif "create" in args:
  state.write_text("ACTIVE" if "queued-resources" in args else "READY")
elif "delete" in args:
  state.unlink(missing_ok=True)
elif "ssh" in args and any("launch.py" in arg for arg in args):
  codes = json.loads(plan.read_text()) if plan.exists() else []
  code = codes.pop(0) if codes else 0
  plan.write_text(json.dumps(codes))
  if code == 255:
    state.write_text("PREEMPTED")
  sys.exit(code)
"""


@pytest.fixture
def fake_gcloud(tmp_path):
  """A gcloud that appends its arguments, as one JSON list per line, to calls.jsonl."""
  fake = tmp_path / "gcloud"
  fake.write_text(f"#!{sys.executable}\n{FAKE_GCLOUD}")
  fake.chmod(0o755)
  return fake


def script(*args, tmp_path, **env):
  clean = {k: v for k, v in os.environ.items() if k not in READS}
  return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                        env={**clean, "TMPDIR": str(tmp_path), **env}, timeout=60)


def calls(tmp_path) -> list[list[str]]:
  path = tmp_path / "calls.jsonl"
  return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("args, env, phrase", [
    ([], SETTINGS, "no command"),
    (["launch"], SETTINGS, "unknown command 'launch'"),
    (["create"], {"ZONE": "us-central2-b"}, "TPU_NAME"),
    (["create"], {"TPU_NAME": "rir"}, "ZONE"),
    (["create", "extra"], SETTINGS, "create takes no arguments"),
    (["delete", "now"], SETTINGS, "delete takes no arguments"),
    (["prepare"], SETTINGS, "DATASET"),
    (["prepare", "mnist"], {**SETTINGS, "BUCKET": ""}, "BUCKET"),
    (["install"], {"TPU_NAME": "rir", "ZONE": "us-central2-b"}, "BUCKET"),
    (["prepare", "mnist"], {**SETTINGS, "BUCKET": "my-bucket"}, "gs://"),
    (["train"], SETTINGS, "RUN and CONFIG"),
    (["train", "rir1"], SETTINGS, "RUN and CONFIG"),
    (["train", "../up", "configs/rir_cifar.py"], SETTINGS, "RUN '../up'"),
    (["train", "rir1", "configs/nope.py"], SETTINGS, "configs/nope.py"),
    (["train", "rir1", "/etc/passwd"], SETTINGS, "/etc/passwd"),
    (["resume", "rir1"], SETTINGS, "RUN and CONFIG"),
    (["run", "rir1"], SETTINGS, "RUN and CONFIG"),
    (["run", "rir1", "configs/nope.py"], SETTINGS, "configs/nope.py"),
    (["create"], {**SETTINGS, "ACCELERATOR": "v9-8"}, "set TPU_VERSION"),
    (["install"], {**SETTINGS, "PYTHON_VERSION": "3.10"}, "3.11 or newer"),
])
def test_bad_arguments_exit_2_with_one_line(args, env, phrase, tmp_path, fake_gcloud):
  result = script(*args, tmp_path=tmp_path, GCLOUD=str(fake_gcloud), **env)
  assert result.returncode == 2, result
  assert len(result.stderr.splitlines()) == 1 and phrase in result.stderr, result.stderr
  assert not calls(tmp_path)  # nothing ran


def test_help_and_missing_gcloud(tmp_path):
  help_ = script("--help", tmp_path=tmp_path)
  assert help_.returncode == 0 and "resume RUN CONFIG" in help_.stdout
  missing = script("create", tmp_path=tmp_path, GCLOUD=str(tmp_path / "none"), **SETTINGS)
  assert missing.returncode == 2 and "not found" in missing.stderr and "--dry_run" in missing.stderr


def test_dry_run_prints_the_commands_and_runs_nothing(tmp_path, fake_gcloud):
  for dry in (["--dry_run"], []):
    env = {"DRY_RUN": "1"} if not dry else {}
    result = script(*dry, "train", "rir1", "configs/rir_cifar.py", "--config.seed=3",
                    tmp_path=tmp_path, GCLOUD=str(fake_gcloud), **SETTINGS, **env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{fake_gcloud} compute tpus tpu-vm ssh rir --worker=all")
    for part in ("launch.py --config=configs/rir_cifar.py", "--auto_distributed --config.seed=3",
                 "--workdir=gs://my-bucket/exp/runs/rir1",
                 "--config.data.data_dir=gs://my-bucket/exp/data",
                 "gs://my-bucket/exp/logs/rir1/$(hostname).log", "--zone=us-central2-b"):
      assert part in result.stdout
  assert not calls(tmp_path)


def test_commands_of_each_step(tmp_path, fake_gcloud):
  def run(*args, **env):
    result = script(*args, tmp_path=tmp_path, GCLOUD=str(fake_gcloud), **SETTINGS, **env)
    assert result.returncode == 0, result.stderr
    made = calls(tmp_path)
    (tmp_path / "calls.jsonl").unlink(missing_ok=True)
    return made

  tpu = ["compute", "tpus", "tpu-vm"]
  zone = "--zone=us-central2-b"
  assert run("create", SPOT="1", PROJECT="p") == [
      [*tpu, "create", "rir", "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base",
       "--spot", zone, "--project=p"]]
  assert run("delete") == [[*tpu, "delete", "rir", "--quiet", zone]]

  scp, ssh = run("install")
  assert (tmp_path / "rir-jax.tar.gz").stat().st_size > 0  # `git archive` of HEAD, for real
  assert scp[:4] == [*tpu, "scp"] and "--worker=all" in scp
  assert ssh[:6] == [*tpu, "ssh", "rir", "--worker=all"]
  for part in ("pip install -q --user 'uv>=0.4'", "uv venv -q --allow-existing --python 3.11",
               "uv pip install -q --python ~/rir-venv/bin/python -e ~/rir-jax'[tpu]'"):
    assert part in ssh[6]
  assert "gcsfuse" not in ssh[6]  # launch.py writes gs:// itself

  (prepare,) = run("prepare", "cifar10", "--manual_dir", "/data/cifar 10")
  assert prepare[5] == "--worker=0"
  assert (r"rir_jax.data.prepare cifar10 --manual_dir /data/cifar\ 10 "
          "--data_dir gs://my-bucket/exp/data") in prepare[6]

  # After a preemption: a new slice, installed again, then the very same train command.
  (train,) = run("train", "rir1", "configs/cifar.py:model=rir,smoke", "--config.seed=3")
  resume = run("resume", "rir1", "configs/cifar.py:model=rir,smoke", "--config.seed=3")
  assert [c[3] for c in resume] == ["delete", "create", "scp", "ssh", "ssh"]
  assert resume[-1] == train
  for remote in (ssh[6], prepare[6], train[6]):  # what the workers' shells will run
    syntax = subprocess.run(["bash", "-n", "-c", remote.removeprefix("--command=")],
                            capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr


@pytest.mark.parametrize("accelerator, image", [
    ("v4-32", "tpu-ubuntu2204-base"), ("v5litepod-16", "v2-alpha-tpuv5-lite"),
    ("v5p-8", "v2-alpha-tpuv5"), ("v6e-8", "v2-alpha-tpuv6e")])
def test_runtime_image_follows_the_generation_unless_set(accelerator, image, tmp_path,
                                                         fake_gcloud):
  for env, expected in (({}, image), ({"TPU_VERSION": "my-image"}, "my-image")):
    result = script("create", tmp_path=tmp_path, GCLOUD=str(fake_gcloud),
                    **{**SETTINGS, "ACCELERATOR": accelerator, **env})
    assert result.returncode == 0, result.stderr
    assert calls(tmp_path)[-1][4:7] == ["rir", f"--accelerator-type={accelerator}",
                                        f"--version={expected}"]


def test_queued_resource_create_waits_until_active_and_delete_takes_its_slice(
    tmp_path, fake_gcloud):
  env = dict(SETTINGS, QUEUED="1", SPOT="1", GCLOUD=str(fake_gcloud), POLL_SECONDS="0")
  assert script("create", tmp_path=tmp_path, **env).returncode == 0
  queued = ["compute", "tpus", "queued-resources"]
  assert calls(tmp_path) == [
      [*queued, "create", "rir", "--node-id=rir", "--accelerator-type=v4-32",
       "--runtime-version=tpu-ubuntu2204-base", "--spot", "--zone=us-central2-b"],
      [*queued, "describe", "rir", "--format=value(state.state)", "--zone=us-central2-b"]]
  (tmp_path / "calls.jsonl").unlink()
  assert script("delete", tmp_path=tmp_path, **env).returncode == 0
  assert calls(tmp_path) == [[*queued, "delete", "rir", "--force", "--quiet",
                              "--zone=us-central2-b"]]


def _unattended(tmp_path, fake_gcloud, plan, **env):
  (tmp_path / "plan.json").write_text(json.dumps(plan))
  result = script("run", "rir1", "configs/rir_cifar.py", tmp_path=tmp_path,
                  GCLOUD=str(fake_gcloud), POLL_SECONDS="0", **SETTINGS, **env)
  return result, [c[3] if c[2] == "tpu-vm" else f"queued-{c[3]}" for c in calls(tmp_path)]


def test_unattended_run_recreates_a_preempted_slice_and_resumes_until_done(tmp_path,
                                                                           fake_gcloud):
  result, verbs = _unattended(tmp_path, fake_gcloud, [255, 0], SPOT="1")
  assert result.returncode == 0, result.stderr
  assert "run rir1 completed" in result.stdout
  make = ["create", "scp", "ssh"]  # a new slice, installed
  # No slice: make one, train (preempted: ssh 255), see PREEMPTED, make it again, train.
  assert verbs == ["describe", *make, "ssh", "describe", "describe", "delete", *make, "ssh",
                   ], verbs
  trains = [c for c in calls(tmp_path) if c[3] == "ssh" and "launch.py" in c[6]]
  assert len(trains) == 2 and trains[0] == trains[1]  # the same command: launch.py resumes
  syntax = subprocess.run(["bash", "-n", "-c", trains[0][6].removeprefix("--command=")],
                          capture_output=True, text=True)
  assert syntax.returncode == 0, syntax.stderr


def test_unattended_run_on_queued_resources(tmp_path, fake_gcloud):
  result, verbs = _unattended(tmp_path, fake_gcloud, [255, 0], QUEUED="1")
  assert result.returncode == 0, result.stderr
  assert verbs == ["queued-describe", "queued-create", "queued-describe", "scp", "ssh", "ssh",
                   "queued-describe", "queued-describe", "queued-delete", "queued-create",
                   "queued-describe", "scp", "ssh", "ssh"], verbs


def test_unattended_run_stops_on_a_failure_of_launch_py_or_after_max_attempts(tmp_path,
                                                                            fake_gcloud):
  (tmp_path / "state").write_text("READY")
  failed, verbs = _unattended(tmp_path, fake_gcloud, [1])  # e.g. a non-finite loss
  assert failed.returncode == 1 and "failed (exit 1) on a healthy slice" in failed.stderr
  # Installed (this HEAD) and trained once: not retried, nothing recreated.
  assert verbs == ["describe", "scp", "ssh", "ssh", "describe"]
  (tmp_path / "calls.jsonl").unlink()
  gave_up, _ = _unattended(tmp_path, fake_gcloud, [255, 255, 255], MAX_ATTEMPTS="2")
  assert gave_up.returncode == 1 and "not completed after 2 attempts" in gave_up.stderr


@pytest.mark.slow
def test_recorded_commands_pass_gclouds_own_parser(tmp_path, fake_gcloud):
  gcloud = shutil.which("gcloud")
  if gcloud is None:
    pytest.skip("gcloud is not installed")
  for queued in ("0", "1"):
    for args in (["create"], ["install"], ["prepare", "mnist"],
                 ["train", "r", "configs/rir_cifar.py"], ["run", "r", "configs/rir_cifar.py"],
                 ["delete"]):
      # run: preempted once, then done (every command it has is recorded)
      (tmp_path / "plan.json").write_text("[255, 0]" if args[0] == "run" else "[]")
      assert script(*args, tmp_path=tmp_path, GCLOUD=str(fake_gcloud), SPOT="1", QUEUED=queued,
                    POLL_SECONDS="0", **SETTINGS).returncode == 0
  recorded = calls(tmp_path)
  # No account, no GCE metadata credentials, the TPU API on a dead port: parse, then fail.
  sandbox = {k: v for k, v in os.environ.items()
             if not k.startswith(("CLOUDSDK_", "GOOGLE_", "GCE_"))}
  sandbox.update(CLOUDSDK_CONFIG=str(tmp_path / "gcloud_config"),
                 CLOUDSDK_CORE_DISABLE_PROMPTS="1", CLOUDSDK_CORE_CHECK_GCE_METADATA="false",
                 CLOUDSDK_API_ENDPOINT_OVERRIDES_TPU="http://127.0.0.1:9/")
  for args in recorded:
    result = subprocess.run([gcloud, *args], capture_output=True, text=True, env=sandbox,
                            timeout=120)
    assert result.returncode != 2 and "unrecognized arguments" not in result.stderr, (
        args, result.stderr)


# Chips per slice from its name (JAX sees one device per chip): v4 and v5p count
# TensorCores, two per chip; v5e and v6e count chips.
CORES_PER_CHIP = {"v4": 2, "v5p": 2, "v5litepod": 1, "v6e": 1}


def test_readme_tpu_example_passes_the_checkss_on_its_slice():
  readme = (REPO / "README.md").read_text()
  block = readme.split("TPU VM slice, from your workstation")[1].split("```bash\n")[1]
  block = block.split("```")[0]
  generation, size = re.search(r"ACCELERATOR=(\w+)-(\d+)", block).groups()
  devices = int(size) // CORES_PER_CHIP[generation]
  configs = set(re.findall(r"tpu_vm\.sh (?:train|resume|run) \w+ (configs/\w+\.py)", block))
  assert configs
  for name in configs:
    config = runpy.run_path(str(REPO / name))["get_config"]()
    checks.validate(config, device_count=devices, process_count=max(1, devices // 4))
